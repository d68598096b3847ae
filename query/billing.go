package query

import (
	"cmp"
	"fmt"
	"math/big"
	"slices"
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
	// Lead marks a part of the period's first month before the period (from
	// the month's start, or the rate card's if later): measured so that
	// graduated tiers continue as they would on the month's invoice, and
	// never billed (no prices).
	Lead bool
}

// MonthSeconds is the length of the segment's month in seconds (a month
// with a daylight-saving change is an hour shorter or longer).
func (s *Segment) MonthSeconds() int64 { return int64(s.MonthEnd.Sub(s.MonthStart) / time.Second) }

// Plan is how a period will be billed: its segments (lead ones first), and
// the local days whose licensed servers are counted (Days holds the n+1
// bounds of n days; none when no day ends in the plan). A day is billed,
// whole, by the period that holds its end: so adjacent periods cut inside a
// day bill it once, and an invoice never reads usage after its period. It
// is priced by the segment that holds its last instant (which a split of
// the period cannot move to another price).
type Plan struct {
	Tenant   string
	Period   Period
	Segments []Segment
	Days     []time.Time
}

// days returns the number of days of the plan.
func (p *Plan) days() int { return max(len(p.Days)-1, 0) }

// PeriodError says that a period cannot be billed as asked.
type PeriodError struct{ Reason string }

func (e *PeriodError) Error() string { return e.Reason }

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
	// The lead, which graduated tiers count from: the month before the
	// period, from the month's start or from the rate card's start for the
	// tenant if later (usage from before the card priced it counts toward
	// no tier).
	start, _, err := enclosing(p.From, p.Loc, Month, time.Hour)
	if err != nil {
		return nil, err
	}
	if cs := rc.Start(tenant); start.Before(cs) && !cs.After(p.From) {
		start = cs
	}
	months, err := splitBuckets(start, p.To, p.Loc, Month)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Tenant: tenant, Period: p}
	// The days that end after start and by To.
	first, _, err := enclosing(start, p.Loc, Day, time.Hour)
	if err != nil {
		return nil, err
	}
	if first.Before(minInstant) {
		return nil, &PeriodError{Reason: fmt.Sprintf("the period's month begins before 1970 in %s, where the rollups cannot reach", p.Loc)}
	}
	last, _, err := enclosing(p.To, p.Loc, Day, time.Hour)
	if err != nil {
		return nil, err
	}
	if last.After(first) {
		if plan.Days, err = splitBuckets(first, last, p.Loc, Day); err != nil {
			return nil, err
		}
	}
	for i := 0; i+1 < len(months); i++ {
		mFrom, mTo := months[i], months[i+1]
		ms, me, err := enclosing(mFrom, p.Loc, Month, time.Hour)
		if err != nil {
			return nil, err
		}
		mdays, err := splitBuckets(ms, me, p.Loc, Day)
		if err != nil {
			return nil, err
		}
		// Cut at the period's start (after the lead) and at the versions
		// that take effect after it (the lead has no prices).
		cuts, billed := []time.Time{mFrom}, mFrom
		if p.From.After(mFrom) && p.From.Before(mTo) {
			cuts, billed = append(cuts, p.From), p.From
		}
		cuts = append(append(cuts, rc.changes(tenant, billed, mTo)...), mTo)
		for j := 0; j+1 < len(cuts); j++ {
			s := Segment{From: cuts[j], To: cuts[j+1], MonthStart: ms, MonthEnd: me, MonthDays: len(mdays) - 1,
				Prices: map[Item]Price{}, Effective: map[Item]time.Time{}, Lead: cuts[j].Before(p.From)}
			for _, it := range Items {
				if s.Lead {
					break // not priced
				}
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
	n, d := len(p.Segments), p.days()
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

// Line is one priced quantity: one item, in one tier, over one run of
// consecutive segments of a month in which the item's price does not change
// (a version that changes only other items does not cut an item's lines).
type Line struct {
	Item      Item
	Segment   int // index into Invoice.Segments of the first segment of the run
	Segments  int // how many segments the run covers
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
// are graduated over each local month: a run of segments continues from
// where the month's earlier segments (lead ones included) left off, priced
// with the run's tiers. Each line's amount is rounded half to even to the
// minor unit; the total adds the rounded lines.
func (rc *RateCard) Price(p *Plan, r *Readings) (*Invoice, error) {
	if len(r.BandwidthIn) != len(p.Segments) || len(r.BandwidthOut) != len(p.Segments) ||
		len(r.StorageByteSeconds) != len(p.Segments) || len(r.Licensed) != p.days() || len(r.LicensedExternal) != p.days() {
		return nil, fmt.Errorf("readings do not match the plan (%d segments, %d days)", len(p.Segments), p.days())
	}
	inv := &Invoice{Plan: p, Currency: rc.Currency, MinorUnits: rc.MinorUnits, Total: new(big.Int)}
	for i, s := range p.Segments {
		inv.Segments = append(inv.Segments, SegmentUsage{From: s.From, To: s.To, MonthSeconds: s.MonthSeconds(), MonthDays: s.MonthDays,
			BandwidthInBytes: new(big.Int).Set(r.BandwidthIn[i]), BandwidthOutBytes: new(big.Int).Set(r.BandwidthOut[i]),
			StorageByteSeconds: new(big.Int).Set(r.StorageByteSeconds[i])})
	}
	for d := 0; d < p.days(); d++ {
		// Priced by the segment of its last instant: it lies in the period
		// that bills the day (or in the lead), the same in any split.
		si := p.segmentAt(p.Days[d+1].Add(-time.Nanosecond))
		if si < 0 {
			return nil, fmt.Errorf("day %s lies in no segment", p.Days[d].Format(time.RFC3339))
		}
		inv.Segments[si].ServerDays += r.Licensed[d]
		inv.Segments[si].ExternalServerDays += r.LicensedExternal[d]
	}
	gb := new(big.Rat).SetInt(rc.GBBytes)
	quantity := func(it Item, u *SegmentUsage) *big.Rat {
		switch it {
		case ItemBandwidthIn:
			return new(big.Rat).Quo(new(big.Rat).SetInt(u.BandwidthInBytes), gb)
		case ItemBandwidthOut:
			return new(big.Rat).Quo(new(big.Rat).SetInt(u.BandwidthOutBytes), gb)
		case ItemStorage:
			return new(big.Rat).Quo(new(big.Rat).SetInt(u.StorageByteSeconds), new(big.Rat).Mul(gb, new(big.Rat).SetInt64(u.MonthSeconds)))
		case ItemLicense:
			return big.NewRat(u.ServerDays, int64(u.MonthDays))
		default: // ItemLicenseExternal
			return big.NewRat(u.ExternalServerDays, int64(u.MonthDays))
		}
	}
	for _, it := range Items {
		var pos *big.Rat
		for i := 0; i < len(p.Segments); {
			s := &p.Segments[i]
			if i == 0 || !s.MonthStart.Equal(p.Segments[i-1].MonthStart) {
				pos = new(big.Rat) // graduated tiers start again each month
			}
			// The run: the segments from i on in the same month at the
			// same price of it (lead segments have none: each is a run).
			j := i + 1
			for !s.Lead && j < len(p.Segments) && p.Segments[j].MonthStart.Equal(s.MonthStart) &&
				!p.Segments[j].Lead && p.Segments[j].Prices[it].Equal(s.Prices[it]) {
				j++
			}
			q := new(big.Rat)
			for k := i; k < j; k++ {
				q.Add(q, quantity(it, &inv.Segments[k]))
			}
			start := pos
			end := new(big.Rat).Add(start, q)
			pos = end
			if s.Lead || q.Sign() == 0 {
				i = j
				continue
			}
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
					inv.Lines = append(inv.Lines, Line{Item: it, Segment: i, Segments: j - i, Tier: ti + 1, TierFrom: new(big.Rat).Set(lo),
						TierTo: hi, Quantity: part, UnitPrice: tier.Price, Amount: amount})
					inv.Total.Add(inv.Total, amount)
				}
				if hi == nil || hi.Cmp(end) >= 0 {
					break
				}
				lo = hi
			}
			i = j
		}
	}
	// In time, then in the order of Items (each item's lines are in time
	// order already, then by tier).
	slices.SortStableFunc(inv.Lines, func(a, b Line) int { return cmp.Compare(a.Segment, b.Segment) })
	return inv, nil
}

func maxRat(a, b *big.Rat) *big.Rat {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}
