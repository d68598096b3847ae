package feedsim

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config is what a Server simulates. DefaultConfig gives the defaults that
// the comments name; the zero value of a field means what its comment says.
type Config struct {
	// Tenants is the number of tenants generated (DefaultConfig: 3).
	Tenants int
	// Start is the first UTC day of generated history (DefaultConfig:
	// 2026-10-01); it is truncated to a day.
	Start time.Time
	// Days of history generated per tenant (DefaultConfig: 7); 0 means a
	// feed that only live mode and the APIs fill.
	Days int
	// Seed makes everything generated, and the faults' choices, repeatable
	// (DefaultConfig: 1).
	Seed uint64
	// Agents per tenant; 0 (DefaultConfig) draws 2 to 6 per tenant.
	Agents int
	// HeadDelay withholds entries published less than this long ago, as
	// Cloud Feeds holds back its newest entries (DefaultConfig: 2s).
	HeadDelay time.Duration
	// Rate is how many live entries a second Run appends across tenants,
	// with current timestamps; 0 (DefaultConfig) is no live mode.
	Rate float64
	// Users are the accepted Identity users, name → API key (DefaultConfig:
	// demo → demo). Empty with NoAuth unset accepts nobody.
	Users map[string]string
	// TokenTTL is how long an Identity token lives (DefaultConfig: 24h).
	TokenTTL time.Duration
	// NoAuth serves the feeds and APIs without X-Auth-Token
	// (DefaultConfig: false).
	NoAuth bool
	// Faults are the injected failures (DefaultConfig: none).
	Faults Faults
	// CUF are the upstream's identity facts in the generated history:
	// republished and conflicting events, corrections, 24:00:00 end times,
	// usage summaries (DefaultConfig: none).
	CUF CUF
	// RetryAfter is the Retry-After of a 429, rounded up to seconds
	// (DefaultConfig: 1s).
	RetryAfter time.Duration
	// SlowDelay is how long a slow response waits before its first byte
	// (DefaultConfig: 3s).
	SlowDelay time.Duration
	// ActiveFor is how long agent_activate keeps a non-idle mode before the
	// agents fall back to idle (DefaultConfig: 10m).
	ActiveFor time.Duration
	// BackupTime is how long a started backup runs before it completes and
	// adds its usage to the feed (DefaultConfig: 5s).
	BackupTime time.Duration
	// LogReadyAfter is how long a requested log file takes to be ready
	// (DefaultConfig: 2s).
	LogReadyAfter time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Tenants:       3,
		Start:         time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC),
		Days:          7,
		Seed:          1,
		HeadDelay:     2 * time.Second,
		Users:         map[string]string{"demo": "demo"},
		TokenTTL:      24 * time.Hour,
		RetryAfter:    time.Second,
		SlowDelay:     3 * time.Second,
		ActiveFor:     10 * time.Minute,
		BackupTime:    5 * time.Second,
		LogReadyAfter: 2 * time.Second,
	}
}

// maxEntriesPerFeed bounds a feed (entry indexes are int32 and the id index
// must fit in memory).
const maxEntriesPerFeed = 50_000_000

// Validate reports every field that is out of range.
func (c *Config) Validate() error {
	var errs []error
	if c.Tenants < 1 || c.Tenants > 100_000 {
		errs = append(errs, fmt.Errorf("tenants %d is not within 1..100000", c.Tenants))
	}
	if c.Days < 0 || c.Days > 3660 {
		errs = append(errs, fmt.Errorf("days %d is not within 0..3660", c.Days))
	}
	if c.Start.IsZero() && c.Days > 0 {
		errs = append(errs, errors.New("start is not set"))
	}
	if c.Agents < 0 || c.Agents > 10_000 {
		errs = append(errs, fmt.Errorf("agents %d is not within 0..10000", c.Agents))
	}
	// An hourly agent writes at most about 80 entries a day, before the CUF
	// facts.
	if a := max(c.Agents, 6); float64(a)*float64(c.Days)*80*c.CUF.growth() > maxEntriesPerFeed {
		errs = append(errs, fmt.Errorf("%d agents over %d days (cuf %s) is more than %d entries per tenant", a, c.Days, c.CUF, maxEntriesPerFeed))
	}
	if c.HeadDelay < 0 {
		errs = append(errs, fmt.Errorf("head delay %s is negative", c.HeadDelay))
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate > 1e6 {
		errs = append(errs, fmt.Errorf("rate %v is not within 0..1000000", c.Rate))
	}
	if c.TokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("token TTL %s is not positive", c.TokenTTL))
	}
	for u, k := range c.Users {
		if u == "" || k == "" {
			errs = append(errs, fmt.Errorf("user %q has an empty name or API key", u))
		}
	}
	if err := c.Faults.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.CUF.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retry after", c.RetryAfter}, {"slow delay", c.SlowDelay}, {"active for", c.ActiveFor},
		{"backup time", c.BackupTime}, {"log ready after", c.LogReadyAfter}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// ParseUsers reads "name:key,name:key" (as the --users flag does).
func ParseUsers(s string) (map[string]string, error) {
	users := map[string]string{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		f = strings.TrimSpace(f)
		if f == "" || strings.HasPrefix(f, "#") {
			continue
		}
		name, key, ok := strings.Cut(f, ":")
		if !ok || name == "" || key == "" {
			return nil, fmt.Errorf("user %q is not name:apikey", f)
		}
		users[name] = key
	}
	return users, nil
}

// Faults are the shares of requests (and, for Malformed, of entries) that
// fail. Each is a probability in [0, 1]; the request faults together must
// not exceed 1.
type Faults struct {
	RateLimited float64 // "429": answered 429 Too Many Requests with Retry-After
	Unavailable float64 // "503": answered 503 Service Unavailable
	Internal    float64 // "500": answered 500 Internal Server Error
	Drop        float64 // "drop": the connection is closed mid-body
	Slow        float64 // "slow": the response waits Config.SlowDelay first
	Malformed   float64 // "malformed": share of entries served malformed, picked by id
	Expire      float64 // "expire": the request's token expires early (401)
}

func (f *Faults) shares() shares {
	return shares{"fault", []share{{"429", &f.RateLimited}, {"503", &f.Unavailable}, {"500", &f.Internal},
		{"drop", &f.Drop}, {"slow", &f.Slow}, {"malformed", &f.Malformed}, {"expire", &f.Expire}}}
}

// ParseFaults reads "429=0.05,503=0.02,500=0.01,drop=0.01,slow=0.01,
// malformed=0.001,expire=0.01"; faults not named are 0. "" and "none" are no
// faults.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	if err := f.shares().parse(s); err != nil {
		return Faults{}, err
	}
	return f, f.Validate()
}

// Validate checks that every share is a probability and that the request
// faults fit in one.
func (f Faults) Validate() error {
	errs := f.shares().validate()
	if s := f.RateLimited + f.Unavailable + f.Internal + f.Drop + f.Slow + f.Expire; s > 1+1e-9 {
		errs = append(errs, fmt.Errorf("request faults add up to %v, more than 1", s))
	}
	return errors.Join(errs...)
}

// String writes the faults in the --faults syntax, "none" when off.
func (f Faults) String() string { return f.shares().String() }

// Map returns the faults by name, every name present.
func (f Faults) Map() map[string]float64 { return f.shares().toMap() }

// faultsFromMap is the inverse of Map; names not given are 0.
func faultsFromMap(m map[string]float64) (Faults, error) {
	var f Faults
	if err := f.shares().fromMap(m); err != nil {
		return Faults{}, err
	}
	return f, f.Validate()
}

// CUF are the identity facts of the real upstream that the generated history
// shows (DefaultConfig: none), each a probability in [0, 1]. design.md
// ("Identity of a usage event", "CUF rules") describes them; Truth counts
// what a bill should make of them (TenantTruth, DayTruth.Billed). They are
// drawn from their own seeded generator, after the rest of the history: with
// all of them 0 the feed is what it was without them, byte for byte.
type CUF struct {
	// Republish is the share of usage events published a second time, the
	// same event (CUF id and content) under a new atom id, up to two hours
	// later: a publisher's retry.
	Republish float64 // "republish"
	// Conflict is the share of usage events published a second time with
	// the same CUF id and another quantity (or, for licenses and one in four
	// others, other times), up to two hours later.
	Conflict float64 // "conflict"
	// Correct is the share of bandwidth and storage events that a correction
	// follows: a new event whose referenceId is the event's id, with another
	// quantity, published up to six hours later.
	Correct float64 // "correct"
	// Chain is the share of corrections corrected in turn (chains are cut at
	// five corrections).
	Chain float64 // "chain"
	// Early is the share of corrections published before the event they
	// correct: the two swap their publication times (the original is late).
	Early float64 // "early"
	// Sibling is the share of corrections that a second correction of the
	// same event follows.
	Sibling float64 // "sibling"
	// Orphan is the share of corrections whose original is never published.
	Orphan float64 // "orphan"
	// Midnight is the share of USAGE (and USAGE_SUMMARY) events ending at a
	// midnight that write their endTime as 24:00:00 of their last day.
	Midnight float64 // "midnight"
	// Summary is the share of an agent's days and kinds (bandwidthIn,
	// bandwidthOut, storage) that a USAGE_SUMMARY entry restates: the day's
	// total bandwidth or peak storage, published after the day's last
	// interval. Summaries are never billed (the parser makes them kind other).
	Summary float64 // "summary"
}

func (c *CUF) shares() shares {
	return shares{"cuf fact", []share{{"republish", &c.Republish}, {"conflict", &c.Conflict}, {"correct", &c.Correct},
		{"chain", &c.Chain}, {"early", &c.Early}, {"sibling", &c.Sibling}, {"orphan", &c.Orphan},
		{"midnight", &c.Midnight}, {"summary", &c.Summary}}}
}

// ParseCUF reads "republish=0.01,conflict=0.002,correct=0.01,chain=0.3,
// early=0.2,sibling=0.1,orphan=0.05,midnight=0.05,summary=0.01"; facts not
// named are 0. "" and "none" are none.
func ParseCUF(s string) (CUF, error) {
	var c CUF
	if err := c.shares().parse(s); err != nil {
		return CUF{}, err
	}
	return c, c.Validate()
}

// Validate checks that every share is a probability.
func (c CUF) Validate() error { return errors.Join(c.shares().validate()...) }

// String writes the facts in the --cuf syntax, "none" when off.
func (c CUF) String() string { return c.shares().String() }

// growth is about how many entries the facts make of one generated entry,
// on average: 1 without them.
func (c CUF) growth() float64 {
	chain := 0.0
	for k, p := 0, 1.0; k < maxChain; k++ {
		chain += p
		p *= c.Chain
	}
	return (1+c.Correct*(1+c.Sibling)*chain)*(1+c.Republish+c.Conflict) + c.Summary
}

// on reports whether any fact is emulated.
func (c CUF) on() bool { return c != CUF{} }

// shares is a set of named probabilities, the syntax of --faults and --cuf:
// "name=p,name=p", names not given 0, "" and "none" all 0.
type shares struct {
	what string  // what a name is, for errors ("fault")
	list []share // in the order String writes them
}

type share struct {
	name string
	p    *float64
}

func (s shares) field(name string) *float64 {
	for _, x := range s.list {
		if x.name == name {
			return x.p
		}
	}
	return nil
}

func (s shares) names() string {
	names := make([]string, len(s.list))
	for i, x := range s.list {
		names[i] = x.name
	}
	return strings.Join(names, ", ")
}

func (s shares) parse(text string) error {
	text = strings.TrimSpace(text)
	if text == "" || text == "none" {
		return nil
	}
	for _, kv := range strings.Split(text, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("%s %q is not name=probability", s.what, kv)
		}
		p := s.field(strings.TrimSpace(k))
		if p == nil {
			return fmt.Errorf("%s %q is not one of %s", s.what, k, s.names())
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("%s %s: %q is not a number", s.what, k, v)
		}
		*p = x
	}
	return nil
}

func (s shares) fromMap(m map[string]float64) error {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.field(n)
		if p == nil {
			return fmt.Errorf("%s %q is not one of %s", s.what, n, s.names())
		}
		*p = m[n]
	}
	return nil
}

// validate reports every share that is not a probability.
func (s shares) validate() []error {
	var errs []error
	for _, x := range s.list {
		if v := *x.p; !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s %s=%v is not within 0..1", s.what, x.name, v))
		}
	}
	return errs
}

func (s shares) String() string {
	var parts []string
	for _, x := range s.list {
		if *x.p != 0 {
			parts = append(parts, x.name+"="+strconv.FormatFloat(*x.p, 'g', -1, 64))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

func (s shares) toMap() map[string]float64 {
	m := make(map[string]float64, len(s.list))
	for _, x := range s.list {
		m[x.name] = *x.p
	}
	return m
}
