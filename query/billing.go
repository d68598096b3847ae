package query

import (
	"fmt"
	"math/big"
	"time"
)

// Period is what an invoice covers: [From, To), whole UTC hours, with its
// months and days taken in Loc.
type Period struct {
	From, To time.Time
	Loc      *time.Location
}

// Segment is a part of a period inside one local month with one price per
// item: the period is cut at month starts and at every effective time of a
// rate-card version (the tenant's or the default) that falls inside it.
type Segment struct {
	From, To   time.Time
	MonthStart time.Time // the local month the segment lies in
	MonthEnd   time.Time
	MonthDays  int // local days in that month
	Prices     map[Item]Price
	Effective  map[Item]time.Time // effective time of the version each price comes from
}

// MonthSeconds is the length of the segment's month in seconds (a month
// with a daylight-saving change is an hour shorter or longer).
func (s *Segment) MonthSeconds() int64 { return int64(s.MonthEnd.Sub(s.MonthStart) / time.Second) }

// Plan is how a period will be billed: its segments, and the local days
// whose licensed servers are counted (Days holds the n+1 bounds of n days,
// clipped to the period). Licences are counted per day and a day is priced
// by the segment its first instant in the period falls in.
type Plan struct {
	Tenant   string
	Period   Period
	Segments []Segment
	Days     []time.Time
}

// NoPriceError says that the rate card has no price in effect at an instant
// of the period (it starts before the first version).
type NoPriceError struct {
	Item Item
	At   time.Time
}

func (e *NoPriceError) Error() string {
	return fmt.Sprintf("the rate card has no %s price in effect at %s (its first version is later)", e.Item, e.At.UTC().Format(time.RFC3339))
}

// Plan splits p into segments. It fails with *InexactError when p's zone
// cannot be represented on the hourly grain, and with *NoPriceError when the
// period begins before the rate card does.
func (rc *RateCard) Plan(tenant string, p Period) (*Plan, error) {
	months, err := splitBuckets(p.From, p.To, p.Loc, Month)
	if err != nil {
		return nil, err
	}
	days, err := splitBuckets(p.From, p.To, p.Loc, Day)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Tenant: tenant, Period: p, Days: days}
	for i := 0; i+1 < len(months); i++ {
		mFrom, mTo := months[i], months[i+1]
		ms, me, err := enclosing(mFrom, p.Loc, Month)
		if err != nil {
			return nil, err
		}
		mdays, err := splitBuckets(ms, me, p.Loc, Day)
		if err != nil {
			return nil, err
		}
		cuts := append([]time.Time{mFrom}, rc.changes(tenant, mFrom, mTo)...)
		cuts = append(cuts, mTo)
		for j := 0; j+1 < len(cuts); j++ {
			s := Segment{From: cuts[j], To: cuts[j+1], MonthStart: ms, MonthEnd: me, MonthDays: len(mdays) - 1,
				Prices: map[Item]Price{}, Effective: map[Item]time.Time{}}
			for _, it := range Items {
				pr, eff, ok := rc.PriceAt(tenant, it, s.From)
				if !ok {
					return nil, &NoPriceError{Item: it, At: s.From}
				}
				s.Prices[it], s.Effective[it] = pr, eff
			}
			plan.Segments = append(plan.Segments, s)
		}
	}
	return plan, nil
}

// SegmentBounds returns the n+1 bounds of the plan's n segments.
func (p *Plan) SegmentBounds() []time.Time {
	out := make([]time.Time, 0, len(p.Segments)+1)
	for _, s := range p.Segments {
		out = append(out, s.From)
	}
	return append(out, p.Period.To)
}

// segmentAt returns the index of the segment holding t.
func (p *Plan) segmentAt(t time.Time) int {
	for i := range p.Segments {
		if !t.Before(p.Segments[i].From) && t.Before(p.Segments[i].To) {
			return i
		}
	}
	return -1
}

// Readings are the measurements a plan is priced from.
type Readings struct {
	// Per segment of the plan: bandwidthIn and bandwidthOut bytes and storage
	// byte-seconds in [From, To) of the segment.
	BandwidthIn, BandwidthOut, StorageByteSeconds []*big.Int
	// Per day of the plan: servers with a licence in that day, inside
	// Rackspace and outside it.
	Licensed, LicensedExternal []int64
}

// NewReadings returns zero readings shaped for p.
func NewReadings(p *Plan) *Readings {
	n, d := len(p.Segments), len(p.Days)-1
	r := &Readings{BandwidthIn: make([]*big.Int, n), BandwidthOut: make([]*big.Int, n), StorageByteSeconds: make([]*big.Int, n),
		Licensed: make([]int64, d), LicensedExternal: make([]int64, d)}
	for i := 0; i < n; i++ {
		r.BandwidthIn[i], r.BandwidthOut[i], r.StorageByteSeconds[i] = new(big.Int), new(big.Int), new(big.Int)
	}
	return r
}

// SegmentUsage is what one segment measured, for the invoice's record.
type SegmentUsage struct {
	From, To           time.Time
	MonthSeconds       int64
	MonthDays          int
	BandwidthInBytes   *big.Int
	BandwidthOutBytes  *big.Int
	StorageByteSeconds *big.Int
	ServerDays         int64 // licensed server-days inside Rackspace
	ExternalServerDays int64 // licensed server-days outside
}

// Line is one priced quantity: one item, in one segment, in one tier.
type Line struct {
	Item      Item
	Segment   int // index into Invoice.Segments
	Tier      int // 1-based
	TierFrom  *big.Rat
	TierTo    *big.Rat // nil: no limit
	Quantity  *big.Rat // exact, in Item.Unit()
	UnitPrice *big.Rat
	Amount    *big.Int // in minor units, rounded half to even
}

// Invoice is a priced plan. Total is the sum of the lines' rounded amounts.
type Invoice struct {
	Plan       *Plan
	Currency   string
	MinorUnits int
	Segments   []SegmentUsage
	Lines      []Line
	Total      *big.Int // minor units
}

// Price prices the readings of plan p. Quantities are exact rationals:
// GB = bytes / GBBytes; GB-month = byte-seconds / (GBBytes x seconds in the
// local month); server-month = server-days / days in the local month. Tiers
// are graduated over each local month: a segment's quantity continues from
// where the month's earlier segments left off, priced with the segment's
// tiers. Each line's amount is rounded half to even to the minor unit; the
// total adds the rounded lines.
func (rc *RateCard) Price(p *Plan, r *Readings) (*Invoice, error) {
	if len(r.BandwidthIn) != len(p.Segments) || len(r.BandwidthOut) != len(p.Segments) ||
		len(r.StorageByteSeconds) != len(p.Segments) || len(r.Licensed) != len(p.Days)-1 || len(r.LicensedExternal) != len(p.Days)-1 {
		return nil, fmt.Errorf("readings do not match the plan (%d segments, %d days)", len(p.Segments), len(p.Days)-1)
	}
	inv := &Invoice{Plan: p, Currency: rc.Currency, MinorUnits: rc.MinorUnits, Total: new(big.Int)}
	for i, s := range p.Segments {
		inv.Segments = append(inv.Segments, SegmentUsage{From: s.From, To: s.To, MonthSeconds: s.MonthSeconds(), MonthDays: s.MonthDays,
			BandwidthInBytes: new(big.Int).Set(r.BandwidthIn[i]), BandwidthOutBytes: new(big.Int).Set(r.BandwidthOut[i]),
			StorageByteSeconds: new(big.Int).Set(r.StorageByteSeconds[i])})
	}
	for d := 0; d+1 < len(p.Days); d++ {
		si := p.segmentAt(p.Days[d])
		if si < 0 {
			return nil, fmt.Errorf("day %s lies in no segment", p.Days[d].Format(time.RFC3339))
		}
		inv.Segments[si].ServerDays += r.Licensed[d]
		inv.Segments[si].ExternalServerDays += r.LicensedExternal[d]
	}
	gb := new(big.Rat).SetInt(rc.GBBytes)
	pos := map[Item]*big.Rat{}
	for i, s := range p.Segments {
		if i == 0 || !s.MonthStart.Equal(p.Segments[i-1].MonthStart) {
			for _, it := range Items {
				pos[it] = new(big.Rat) // graduated tiers start again each month
			}
		}
		u := &inv.Segments[i]
		qty := map[Item]*big.Rat{
			ItemBandwidthIn:     new(big.Rat).Quo(new(big.Rat).SetInt(u.BandwidthInBytes), gb),
			ItemBandwidthOut:    new(big.Rat).Quo(new(big.Rat).SetInt(u.BandwidthOutBytes), gb),
			ItemStorage:         new(big.Rat).Quo(new(big.Rat).SetInt(u.StorageByteSeconds), new(big.Rat).Mul(gb, new(big.Rat).SetInt64(u.MonthSeconds))),
			ItemLicense:         big.NewRat(u.ServerDays, int64(u.MonthDays)),
			ItemLicenseExternal: big.NewRat(u.ExternalServerDays, int64(u.MonthDays)),
		}
		for _, it := range Items {
			q := qty[it]
			if q.Sign() == 0 {
				continue
			}
			start := pos[it]
			end := new(big.Rat).Add(start, q)
			lo := new(big.Rat)
			for ti, tier := range s.Prices[it] {
				hi := tier.UpTo
				// The part of [start, end) inside [lo, hi).
				a := maxRat(start, lo)
				b := end
				if hi != nil && hi.Cmp(b) < 0 {
					b = hi
				}
				if b.Cmp(a) > 0 {
					part := new(big.Rat).Sub(b, a)
					amount := roundHalfEven(new(big.Rat).Mul(part, tier.Price), rc.MinorUnits)
					inv.Lines = append(inv.Lines, Line{Item: it, Segment: i, Tier: ti + 1, TierFrom: new(big.Rat).Set(lo), TierTo: hi,
						Quantity: part, UnitPrice: tier.Price, Amount: amount})
					inv.Total.Add(inv.Total, amount)
				}
				if hi == nil || hi.Cmp(end) >= 0 {
					break
				}
				lo = hi
			}
			pos[it] = end
		}
	}
	return inv, nil
}

func maxRat(a, b *big.Rat) *big.Rat {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}
