package query

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"slices"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/feedmeter/feedmeter/model"
)

// Item is a priced item of an invoice.
type Item string

// The items, in the order invoice lines list them.
const (
	ItemBandwidthIn     Item = "bandwidth_in"     // per GB of bandwidthIn
	ItemBandwidthOut    Item = "bandwidth_out"    // per GB of bandwidthOut
	ItemStorage         Item = "storage"          // per GB-month of storage
	ItemLicense         Item = "license"          // per server-month of licences, prorated by days
	ItemLicenseExternal Item = "license_external" // the same for servers outside Rackspace
)

// Items lists every item in invoice order.
var Items = []Item{ItemBandwidthIn, ItemBandwidthOut, ItemStorage, ItemLicense, ItemLicenseExternal}

// Unit is what an item's quantity counts.
func (it Item) Unit() string {
	switch it {
	case ItemBandwidthIn, ItemBandwidthOut:
		return "GB"
	case ItemStorage:
		return "GB-month"
	}
	return "server-month"
}

// Kind is the event kind an item is measured from.
func (it Item) Kind() string {
	switch it {
	case ItemBandwidthIn:
		return string(model.KindBandwidthIn)
	case ItemBandwidthOut:
		return string(model.KindBandwidthOut)
	case ItemStorage:
		return string(model.KindStorage)
	}
	return string(model.KindLicense)
}

// Tier is one step of a graduated price: units past the previous tier's
// UpTo and up to this one cost Price each.
type Tier struct {
	UpTo  *big.Rat // nil for the last tier (no limit)
	Price *big.Rat // per unit, in the card's currency
}

// Price is a graduated price: one or more tiers, each UpTo larger than the
// one before, the last without UpTo. A flat price is one tier.
type Price []Tier

// Equal reports whether p and q have the same tiers at the same prices.
func (p Price) Equal(q Price) bool {
	return slices.EqualFunc(p, q, func(a, b Tier) bool {
		return a.Price.Cmp(b.Price) == 0 && (a.UpTo == nil) == (b.UpTo == nil) && (a.UpTo == nil || a.UpTo.Cmp(b.UpTo) == 0)
	})
}

// Version is a set of prices that takes effect at an instant. Items it does
// not set keep their earlier price (see RateCard.PriceAt).
type Version struct {
	Effective time.Time // a whole UTC hour
	Prices    map[Item]Price
}

// RateCard is the price list: default versions by effective date and
// per-tenant overrides, in one currency.
//
// The price of an item for a tenant at instant t comes from the newest of the
// tenant's versions effective at t that sets the item, else from the newest
// default version effective at t that sets it. The first default version sets
// every item, so every instant from it on has a price.
type RateCard struct {
	Currency   string   // ISO 4217 code, e.g. USD
	MinorUnits int      // decimals of the currency's minor unit; default from ISO 4217 (2 for most)
	GBBytes    *big.Int // bytes in the card's GB; default 1,073,741,824
	Default    []Version
	Tenants    map[string][]Version
}

// DefaultGBBytes is the byte size of a GB unless the card says otherwise.
const DefaultGBBytes = 1 << 30

// ExampleRateCard is query/rates.example.yaml: a commented example of every
// field, and the card `feedmeter demo` bills with.
//
//go:embed rates.example.yaml
var ExampleRateCard []byte

// LoadRateCard reads a rate card from a YAML file.
func LoadRateCard(path string) (*RateCard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rate card: %w", err)
	}
	rc, err := ParseRateCard(b)
	if err != nil {
		return nil, fmt.Errorf("rate card %s: %w", path, err)
	}
	return rc, nil
}

// The YAML form. Prices are yaml.Nodes so that a number is read from its
// text, exactly, and never through a float.
type rawCard struct {
	Currency   yaml.Node               `yaml:"currency"`
	MinorUnits *int                    `yaml:"minor_units"`
	GBBytes    yaml.Node               `yaml:"gb_bytes"`
	Versions   []rawVersion            `yaml:"versions"`
	Tenants    map[string][]rawVersion `yaml:"tenants"`
}

type rawVersion struct {
	Effective       yaml.Node `yaml:"effective"`
	BandwidthIn     yaml.Node `yaml:"bandwidth_in"`
	BandwidthOut    yaml.Node `yaml:"bandwidth_out"`
	Storage         yaml.Node `yaml:"storage"`
	License         yaml.Node `yaml:"license"`
	LicenseExternal yaml.Node `yaml:"license_external"`
}

func (v *rawVersion) nodes() map[Item]*yaml.Node {
	return map[Item]*yaml.Node{
		ItemBandwidthIn: &v.BandwidthIn, ItemBandwidthOut: &v.BandwidthOut, ItemStorage: &v.Storage,
		ItemLicense: &v.License, ItemLicenseExternal: &v.LicenseExternal,
	}
}

var (
	currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)
	tenantID     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
)

// ParseRateCard reads a rate card from YAML (see query/rates.example.yaml)
// and checks it, reporting every problem at once.
func ParseRateCard(data []byte) (*RateCard, error) {
	var raw rawCard
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	code := raw.Currency.Value
	rc := &RateCard{Currency: code, GBBytes: big.NewInt(DefaultGBBytes), Tenants: map[string][]Version{}}
	if raw.Currency.Kind != yaml.ScalarNode || !currencyCode.MatchString(code) {
		// (Not checked against a list: golang.org/x/text's, the one at
		// hand, lacks current codes such as MRU and VES and knows
		// withdrawn ones such as ITL.)
		bad("line %d: currency %q is not an ISO 4217 code (three capital letters)", max(raw.Currency.Line, 1), code)
	}
	rc.MinorUnits = currencyMinorUnits(code)
	if raw.MinorUnits != nil {
		if *raw.MinorUnits < 0 || *raw.MinorUnits > 8 {
			bad("minor_units %d is not between 0 and 8", *raw.MinorUnits)
		}
		rc.MinorUnits = *raw.MinorUnits
	}
	if raw.GBBytes.Kind != 0 {
		n, ok := new(big.Int).SetString(raw.GBBytes.Value, 10)
		if raw.GBBytes.Kind != yaml.ScalarNode || !ok || n.Sign() <= 0 {
			bad("line %d: gb_bytes %q is not a positive integer", raw.GBBytes.Line, raw.GBBytes.Value)
		} else {
			rc.GBBytes = n
		}
	}
	parseVersions := func(where string, rvs []rawVersion, first bool) []Version {
		var out []Version
		prevOK := false // the version before had a valid effective time
		for i := range rvs {
			rv := &rvs[i]
			v := Version{Prices: map[Item]Price{}}
			eff, effErr := parseEffective(&rv.Effective)
			if effErr != nil {
				bad("%s version %d: %v", where, i+1, effErr)
			}
			v.Effective = eff
			priced := 0 // items the version names, priced or not
			nodes := rv.nodes()
			for _, it := range Items {
				n := nodes[it]
				if n.Kind == 0 {
					if first && i == 0 {
						bad("%s version %d: %s has no price (the first version must price every item)", where, i+1, it)
					}
					continue
				}
				priced++
				p, err := parsePrice(n)
				if err != nil {
					bad("%s version %d: %s: %v", where, i+1, it, err)
					continue
				}
				v.Prices[it] = p
			}
			if !first && priced == 0 {
				bad("line %d: %s version %d sets no price", rv.Effective.Line, where, i+1)
			}
			// (A bad effective time was said once already.)
			if effErr == nil && prevOK && !v.Effective.After(out[i-1].Effective) {
				bad("line %d: %s version %d: effective %s is not after the version before it", rv.Effective.Line, where, i+1, v.Effective.Format(time.RFC3339))
			}
			out = append(out, v)
			prevOK = effErr == nil
		}
		return out
	}
	if len(raw.Versions) == 0 {
		bad("no versions")
	}
	rc.Default = parseVersions("default", raw.Versions, true)
	tenants := make([]string, 0, len(raw.Tenants))
	for t := range raw.Tenants {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		if !tenantID.MatchString(t) {
			bad("tenant %q is not a tenant id", t)
			continue
		}
		if len(raw.Tenants[t]) == 0 {
			bad("tenant %s has no versions", t)
			continue
		}
		rc.Tenants[t] = parseVersions("tenant "+t, raw.Tenants[t], false)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rc, nil
}

// parseEffective reads a date (00:00 UTC) or an RFC 3339 time on a whole
// UTC hour.
func parseEffective(n *yaml.Node) (time.Time, error) {
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		return time.Time{}, fmt.Errorf("line %d: effective is missing (a date like 2026-10-01, or an RFC 3339 time on a whole UTC hour)", n.Line)
	}
	if t, err := time.Parse(time.DateOnly, n.Value); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return time.Time{}, fmt.Errorf("line %d: effective %q is not a date (2026-10-01) or an RFC 3339 time", n.Line, n.Value)
	}
	if !onGrain(t) {
		return time.Time{}, fmt.Errorf("line %d: effective %q is not a whole UTC hour (the rollups are hourly)", n.Line, n.Value)
	}
	return t.UTC(), nil
}

// parsePrice reads a flat price (a decimal scalar) or a list of tiers
// ({up_to: decimal, price: decimal}, the last without up_to).
func parsePrice(n *yaml.Node) (Price, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		p, err := parseAmount(n)
		if err != nil {
			return nil, err
		}
		return Price{{Price: p}}, nil
	case yaml.SequenceNode:
		var out Price
		for i, tn := range n.Content {
			if tn.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: tier %d is not a mapping {up_to, price}", tn.Line, i+1)
			}
			// Read from the nodes themselves (not decoded again from a
			// copy), so that every error names the line in the file.
			var raw struct{ UpTo, Price yaml.Node }
			for k := 0; k+1 < len(tn.Content); k += 2 {
				key, val := tn.Content[k], tn.Content[k+1]
				var dst *yaml.Node
				switch key.Value {
				case "up_to":
					dst = &raw.UpTo
				case "price":
					dst = &raw.Price
				default:
					return nil, fmt.Errorf("line %d: tier %d: unknown field %q (a tier has up_to and price)", key.Line, i+1, key.Value)
				}
				if dst.Kind != 0 {
					return nil, fmt.Errorf("line %d: tier %d: %s given twice", key.Line, i+1, key.Value)
				}
				*dst = *val
			}
			if raw.Price.Kind == 0 {
				return nil, fmt.Errorf("line %d: tier %d has no price", tn.Line, i+1)
			}
			p, err := parseAmount(&raw.Price)
			if err != nil {
				return nil, fmt.Errorf("tier %d: %w", i+1, err)
			}
			t := Tier{Price: p}
			last := i == len(n.Content)-1
			switch {
			case raw.UpTo.Kind == 0 && !last:
				return nil, fmt.Errorf("line %d: tier %d has no up_to (only the last tier is unlimited)", tn.Line, i+1)
			case raw.UpTo.Kind != 0 && last:
				return nil, fmt.Errorf("line %d: the last tier has up_to %s (it must be unlimited)", tn.Line, raw.UpTo.Value)
			case raw.UpTo.Kind != 0:
				u, err := parseAmount(&raw.UpTo)
				if err != nil {
					return nil, fmt.Errorf("tier %d: up_to: %w", i+1, err)
				}
				if u.Sign() <= 0 || (i > 0 && u.Cmp(out[i-1].UpTo) <= 0) {
					return nil, fmt.Errorf("line %d: tier %d: up_to %s must be positive and above the tier before", tn.Line, i+1, raw.UpTo.Value)
				}
				t.UpTo = u
			}
			out = append(out, t)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("line %d: empty list of tiers", n.Line)
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: a price is a decimal or a list of tiers", n.Line)
}

// parseAmount reads a non-negative decimal scalar from its text.
func parseAmount(n *yaml.Node) (*big.Rat, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("line %d: want a decimal number", n.Line)
	}
	r, err := parseDecimal(n.Value)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	if r.Sign() < 0 {
		return nil, fmt.Errorf("line %d: %s is negative", n.Line, n.Value)
	}
	return r, nil
}

// PriceAt returns the price of item for tenant at instant t and the
// effective time of the version it comes from, or false when no version is
// in effect at t.
func (rc *RateCard) PriceAt(tenant string, item Item, t time.Time) (Price, time.Time, bool) {
	find := func(vs []Version) (Price, time.Time, bool) {
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].Effective.After(t) {
				continue
			}
			if p, ok := vs[i].Prices[item]; ok {
				return p, vs[i].Effective, true
			}
		}
		return nil, time.Time{}, false
	}
	if p, eff, ok := find(rc.Tenants[tenant]); ok {
		return p, eff, true
	}
	return find(rc.Default)
}

// Start returns the first instant at which the card prices every item for
// tenant: the default's first version, or earlier when the tenant's own
// versions price every item before it.
func (rc *RateCard) Start(tenant string) time.Time {
	start, vs := rc.Default[0].Effective, rc.Tenants[tenant]
	var latest time.Time // of the items' first tenant prices
	for i, it := range Items {
		j := slices.IndexFunc(vs, func(v Version) bool { _, ok := v.Prices[it]; return ok })
		if j < 0 || !vs[j].Effective.Before(start) {
			return start
		}
		if first := vs[j].Effective; i == 0 || first.After(latest) {
			latest = first
		}
	}
	return latest
}

// changes returns the effective times of tenant's versions and the default
// versions that fall in (from, to), ascending, without duplicates.
func (rc *RateCard) changes(tenant string, from, to time.Time) []time.Time {
	var out []time.Time
	for _, vs := range [][]Version{rc.Default, rc.Tenants[tenant]} {
		for _, v := range vs {
			if v.Effective.After(from) && v.Effective.Before(to) {
				out = append(out, v.Effective)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	uniq := out[:0]
	for i, t := range out {
		if i == 0 || !t.Equal(out[i-1]) {
			uniq = append(uniq, t)
		}
	}
	return uniq
}
