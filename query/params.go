package query

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParamError is a bad request parameter: the answer is a 400 naming it.
type ParamError struct {
	Param   string // the query parameter (or path segment) at fault
	Message string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Message }

func badParam(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// params is the query string of a request, checked against the names an
// endpoint accepts: an unknown or repeated parameter is an error, so a typo
// never silently means a default.
type params struct {
	v url.Values
}

func parseParams(rawQuery string, allowed ...string) (*params, error) {
	v, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, badParam("query", "the query string is malformed: %v", err)
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	names := make([]string, 0, len(v))
	for name := range v {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "" {
			return nil, badParam("query", "a parameter has no name (%q)", "="+printable(v[name][0]))
		}
		if !ok[name] {
			if len(allowed) == 0 {
				return nil, badParam(printable(name), "unknown parameter (this endpoint takes none)")
			}
			return nil, badParam(printable(name), "unknown parameter (this endpoint takes %s)", strings.Join(allowed, ", "))
		}
		if len(v[name]) > 1 {
			return nil, badParam(name, "given %d times; give it once", len(v[name]))
		}
	}
	return &params{v: v}, nil
}

func (p *params) has(name string) bool { return p.v.Has(name) }
func (p *params) get(name string) string {
	return p.v.Get(name)
}

// printable makes a parameter name safe to echo: at most 64 characters,
// control characters replaced.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return '?'
		}
		return r
	}, s)
}

var zoneName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,3}$`)

// notZone reports the names of a system's tz database that are files but
// not zones: the host's own zone under other names (Local, localtime,
// posixrules), a placeholder (Factory), and right/…, whose leap-second
// tables Go reads as a zone with wrong offsets (right/Europe/Berlin is
// +02:00 in December).
func notZone(name string) bool {
	switch strings.TrimPrefix(name, "posix/") { // posix/… are copies of the zones
	case "Local", "localtime", "posixrules", "Factory":
		return true
	}
	return strings.HasPrefix(name, "right/")
}

// parseZone reads tz: an IANA zone name; default UTC.
func parseZone(p *params) (*time.Location, error) {
	if !p.has("tz") {
		return time.UTC, nil
	}
	name := p.get("tz")
	if len(name) > 64 || !zoneName.MatchString(name) || notZone(name) {
		return nil, badParam("tz", "%q is not an IANA time zone name (e.g. Europe/Berlin, UTC)", printable(name))
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, badParam("tz", "unknown time zone %q", name)
	}
	return loc, nil
}

// The range of instants the tables can hold (DateTime is UInt32 seconds).
var (
	minInstant = time.Unix(0, 0).UTC()
	maxInstant = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC)
)

// span is a checked time range: [From, To), whole UTC hours.
type span struct {
	From, To time.Time
	Loc      *time.Location
	// By names the parameter that set the range ("period" or "from"), for
	// errors about the range as a whole.
	By string
}

// parseSpan reads period=YYYY-MM or from= and to= (a date, the start of
// that local day in loc, or an RFC 3339 time); neither means the current
// local month. Every bound is a whole multiple of grain: an hour for what
// the hourly rollups answer (a zone whose days or months begin inside an
// hour is an error), a second for the events. maxDays bounds the length.
func parseSpan(p *params, loc *time.Location, now time.Time, maxDays int, grain time.Duration) (span, error) {
	s := span{Loc: loc}
	hasPeriod, hasFrom, hasTo := p.has("period"), p.has("from"), p.has("to")
	zoneErr := func(err error) error {
		var ie *InexactError
		if errors.As(err, &ie) {
			return badParam("tz", "%v", ie)
		}
		return err
	}
	switch {
	case hasPeriod && (hasFrom || hasTo):
		return s, badParam("period", "give period or from and to, not both")
	case hasPeriod || (!hasFrom && !hasTo):
		y, m := now.In(loc).Year(), now.In(loc).Month()
		s.By = "period"
		if hasPeriod {
			t, err := time.Parse("2006-01", p.get("period"))
			if err != nil || len(p.get("period")) != 7 {
				return s, badParam("period", "%q is not a month like 2026-10", printable(p.get("period")))
			}
			y, m = t.Year(), t.Month()
		}
		if y < 1970 || y > 2105 {
			return s, badParam("period", "%04d-%02d is outside 1970-01 to 2105-12", y, m)
		}
		from, to, err := localMonth(y, m, loc, grain)
		if err != nil {
			return s, zoneErr(err)
		}
		s.From, s.To = from, to
	case !hasFrom:
		return s, badParam("from", "missing (to is given)")
	case !hasTo:
		return s, badParam("to", "missing (from is given)")
	default:
		s.By = "from"
		var err error
		if s.From, err = parseInstant(p, "from", loc, grain); err != nil {
			return s, zoneErr(err)
		}
		if s.To, err = parseInstant(p, "to", loc, grain); err != nil {
			return s, zoneErr(err)
		}
	}
	if s.From.Before(minInstant) || s.To.After(maxInstant) {
		return s, badParam(s.By, "the range must lie between 1970-01-01 and 2106-01-01")
	}
	if !s.To.After(s.From) {
		return s, badParam("to", "%s is not after from %s", s.To.Format(time.RFC3339), s.From.Format(time.RFC3339))
	}
	if s.To.Sub(s.From) > time.Duration(maxDays)*24*time.Hour {
		return s, badParam(s.By, "the range is longer than %d days", maxDays)
	}
	return s, nil
}

// parseInstant reads a date (the start of that local day) or an RFC 3339
// time that is a whole multiple of grain (an hour or a second).
func parseInstant(p *params, name string, loc *time.Location, grain time.Duration) (time.Time, error) {
	v := p.get(name)
	if d, err := time.Parse(time.DateOnly, v); err == nil && len(v) == 10 {
		if d.Year() < 1970 || d.Year() > 2105 {
			return time.Time{}, badParam(name, "%s is outside 1970 to 2105", v)
		}
		return localDate(d.Year(), d.Month(), d.Day(), loc, grain)
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, badParam(name, "%q is not a date (2026-10-01) or an RFC 3339 time (2026-10-01T00:00:00Z)", printable(v))
	}
	if t.Before(minInstant) || t.After(maxInstant) {
		return time.Time{}, badParam(name, "%s is outside 1970 to 2106", v)
	}
	if t.Truncate(grain) != t {
		if grain == time.Hour {
			return time.Time{}, badParam(name, "%s is not on a whole UTC hour: usage is stored by the hour", v)
		}
		return time.Time{}, badParam(name, "%s has a fraction of a second: events are filed by the second", v)
	}
	return t.UTC(), nil
}

// parseKinds reads a comma-separated list of usage kinds; default all.
func parseKinds(p *params) ([]string, error) {
	if !p.has("kind") {
		return UsageKinds, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range strings.Split(p.get("kind"), ",") {
		if !slices.Contains(UsageKinds, k) {
			return nil, badParam("kind", "%q is not one of %s", printable(k), strings.Join(UsageKinds, ", "))
		}
		if seen[k] {
			return nil, badParam("kind", "%s is listed twice", k)
		}
		seen[k] = true
	}
	// In the canonical order.
	for _, k := range UsageKinds {
		if seen[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// groupOrder is the order of group_by columns in answers.
var groupOrder = []string{"region", "data_center", "resource_id", "server"}

func parseGroupBy(p *params) ([]string, error) {
	if !p.has("group_by") || p.get("group_by") == "" {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, g := range strings.Split(p.get("group_by"), ",") {
		if _, ok := dimensions[g]; !ok {
			return nil, badParam("group_by", "%q is not one of %s", printable(g), strings.Join(groupOrder, ", "))
		}
		if seen[g] {
			return nil, badParam("group_by", "%s is listed twice", g)
		}
		seen[g] = true
	}
	var out []string
	for _, g := range groupOrder {
		if seen[g] {
			out = append(out, g)
		}
	}
	return out, nil
}

func parseLimit(p *params, def, max int) (int, error) {
	if !p.has("limit") {
		return def, nil
	}
	n, err := strconv.Atoi(p.get("limit"))
	if err != nil || n < 1 || n > max {
		return 0, badParam("limit", "%q is not a whole number from 1 to %d", printable(p.get("limit")), max)
	}
	return n, nil
}

// encodeCursor writes c as base64 of its JSON, without json.Marshal's
// HTML escapes (which made a cursor of an entry id full of '&' six times
// as long).
func encodeCursor(c EventCursor) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(c) // of strings and an int: cannot fail
	return base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// maxCursor bounds a cursor's JSON. A cursor holds an entry id, which no
// rule bounds, so it is serve's request header limit (64 KiB) that binds:
// the cursor of an entry id up to about 40 KB of printable text (fewer of
// control characters, which JSON writes in six) pages on.
const maxCursor = 64 << 10

func parseCursor(p *params) (*EventCursor, error) {
	if !p.has("cursor") {
		return nil, nil
	}
	bad := badParam("cursor", "not a cursor from this API (pass next_cursor back unchanged)")
	b, err := base64.RawURLEncoding.DecodeString(p.get("cursor"))
	if err != nil || len(b) > maxCursor {
		return nil, bad
	}
	var c EventCursor
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return nil, bad
	}
	if c.Time < 0 || c.Time > maxInstant.Unix() || !slices.Contains(UsageKinds, c.Kind) || c.EntryID == "" {
		return nil, bad
	}
	return &c, nil
}

// format is the representation of an answer.
type format int

const (
	formatJSON format = iota
	formatCSV
)

// parseFormat reads format=json|csv, else the Accept header: text/csv
// (when it does not prefer JSON) means CSV.
func parseFormat(p *params, accept string) (format, error) {
	if p.has("format") {
		switch p.get("format") {
		case "json":
			return formatJSON, nil
		case "csv":
			return formatCSV, nil
		}
		return 0, badParam("format", "%q is not json or csv", printable(p.get("format")))
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/csv":
			return formatCSV, nil
		case "application/json":
			return formatJSON, nil
		}
	}
	return formatJSON, nil
}
