package feedsim

import (
	"fmt"
	"strings"
)

// matcher reports whether an entry matches a search; nil matches all.
type matcher func(f *feed, e *entry) bool

// parseSearch reads the Atom Hopper search syntax: "(cat=term)",
// "(AND(…)(…))", "(OR(…)(…))" and "(NOT(…))". Terms match an entry's
// categories (tid:, rgn:, dc:, rid:, the product term and type:<term>)
// without regard to case. "" matches every entry.
func parseSearch(s string) (matcher, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	p := &searchParser{s: s}
	m, err := p.filter()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("search %q: unexpected %q at %d", s, p.s[p.i:], p.i)
	}
	return m, nil
}

type searchParser struct {
	s string
	i int
}

func (p *searchParser) errorf(format string, args ...any) error {
	return fmt.Errorf("search %q at %d: %s", p.s, p.i, fmt.Sprintf(format, args...))
}

func (p *searchParser) filter() (matcher, error) {
	if p.i >= len(p.s) || p.s[p.i] != '(' {
		return nil, p.errorf("want (")
	}
	p.i++
	rest := p.s[p.i:]
	var m matcher
	switch {
	case hasPrefixFold(rest, "cat="):
		p.i += 4
		end := strings.IndexByte(p.s[p.i:], ')')
		if end < 0 {
			return nil, p.errorf("unterminated cat=")
		}
		term := p.s[p.i : p.i+end]
		if term == "" || strings.ContainsAny(term, "(") {
			return nil, p.errorf("bad term %q", term)
		}
		p.i += end
		m = catMatcher(term)
	case hasPrefixFold(rest, "AND("), hasPrefixFold(rest, "OR("):
		and := hasPrefixFold(rest, "AND(")
		if and {
			p.i += 3
		} else {
			p.i += 2
		}
		var subs []matcher
		for p.i < len(p.s) && p.s[p.i] == '(' {
			sub, err := p.filter()
			if err != nil {
				return nil, err
			}
			subs = append(subs, sub)
		}
		if len(subs) == 0 {
			return nil, p.errorf("empty AND/OR")
		}
		if and {
			m = func(f *feed, e *entry) bool {
				for _, s := range subs {
					if !s(f, e) {
						return false
					}
				}
				return true
			}
		} else {
			m = func(f *feed, e *entry) bool {
				for _, s := range subs {
					if s(f, e) {
						return true
					}
				}
				return false
			}
		}
	case hasPrefixFold(rest, "NOT("):
		p.i += 3
		sub, err := p.filter()
		if err != nil {
			return nil, err
		}
		m = func(f *feed, e *entry) bool { return !sub(f, e) }
	default:
		return nil, p.errorf("want cat=, AND, OR or NOT")
	}
	if p.i >= len(p.s) || p.s[p.i] != ')' {
		return nil, p.errorf("want )")
	}
	p.i++
	return m, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// catMatcher matches one category term.
func catMatcher(term string) matcher {
	prefix, value, ok := strings.Cut(term, ":")
	if ok {
		switch strings.ToLower(prefix) {
		case "tid":
			return func(f *feed, e *entry) bool { return strings.EqualFold(f.tenant.id, value) }
		case "rgn":
			return func(f *feed, e *entry) bool { return strings.EqualFold(f.tenant.region, value) }
		case "dc":
			return func(f *feed, e *entry) bool { return strings.EqualFold(f.tenant.dc, value) }
		case "rid":
			return func(f *feed, e *entry) bool {
				return strings.EqualFold(rid(e, f.tenant.agents[e.agent]), value)
			}
		case "type":
			return func(f *feed, e *entry) bool { return strings.EqualFold(e.term(), value) }
		}
	}
	return func(f *feed, e *entry) bool { return strings.EqualFold(e.term(), term) }
}
