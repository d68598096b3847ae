package model

import (
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func usageEvent(kind Kind, start, end time.Time, q uint64) *Event {
	return &Event{TenantID: "t", EntryID: "e", EventID: "x", Kind: kind, EventType: TypeUsage,
		StartTime: start, EndTime: end, Quantity: q, ServerID: "1"}
}

func TestSplitExamples(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 23, 30, 0, 0, time.UTC)
	f := func(name string, e *Event, hours []uint64, days []uint64, bs string) {
		t.Helper()
		s := SplitEvent(e)
		var gh, gd []uint64
		for _, p := range s.Hours {
			gh = append(gh, p.Quantity)
		}
		for _, p := range s.Days {
			gd = append(gd, p.Quantity)
		}
		if !equal(gh, hours) || !equal(gd, days) || s.ByteSeconds.String() != bs {
			t.Errorf("%s: hours %v days %v byte-seconds %s, want %v %v %s", name, gh, gd, s.ByteSeconds, hours, days, bs)
		}
	}
	// 90 minutes from 23:30: 30 min in hour 23 (a third), 60 in hour 0 of the next day.
	f("bandwidth across midnight", usageEvent(KindBandwidthIn, t0, t0.Add(90*time.Minute), 100), []uint64{33, 67}, []uint64{33, 67}, "0")
	f("within an hour", usageEvent(KindBandwidthOut, t0, t0.Add(10*time.Minute), 7), []uint64{7}, []uint64{7}, "0")
	f("storage", usageEvent(KindStorage, t0, t0.Add(90*time.Minute), 10), []uint64{3, 7}, []uint64{3, 7}, "54000")
	max := ^uint64(0)
	f("max quantity over a day", usageEvent(KindStorage, t0, t0.Add(24*time.Hour), max),
		nil, nil, new(big.Int).Mul(new(big.Int).SetUint64(max), big.NewInt(86400)).String())
	snap := &Event{Kind: KindLicense, EventType: TypeUsageSnapshot, EventTime: t0.Add(5 * time.Minute), Quantity: 1}
	s := SplitEvent(snap)
	if len(s.Hours) != 1 || !s.Hours[0].Start.Equal(time.Date(2024, 3, 1, 23, 0, 0, 0, time.UTC)) || s.Hours[0].Quantity != 1 {
		t.Errorf("snapshot: %+v", s)
	}
}

func equal(a, b []uint64) bool {
	if b == nil {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSplitSums checks on random events that the pieces add up exactly, in
// hours and in days, and that every piece is in its bucket.
func TestSplitSums(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 20000; i++ {
		start := base.Add(time.Duration(r.Int64N(int64(60 * 24 * time.Hour))))
		if r.IntN(2) == 0 {
			start = start.Truncate(time.Second)
		}
		dur := time.Duration(1 + r.Int64N(int64(24*time.Hour)))
		q := r.Uint64()
		if r.IntN(3) == 0 {
			q = r.Uint64N(1000)
		}
		e := usageEvent(KindStorage, start, start.Add(dur), q)
		s := SplitEvent(e)
		wantBS := new(big.Int).Mul(new(big.Int).SetUint64(q), big.NewInt(int64(dur)))
		wantBS.Div(wantBS, big.NewInt(1e9))
		if s.ByteSeconds.Big().Cmp(wantBS) != 0 {
			t.Fatalf("event %v+%v q=%d: byte-seconds %s, want %s", start, dur, q, s.ByteSeconds, wantBS)
		}
		for _, pieces := range [][]Piece{s.Hours, s.Days} {
			qs := new(big.Int)
			var bs Uint128
			for _, p := range pieces {
				qs.Add(qs, new(big.Int).SetUint64(p.Quantity))
				bs = bs.Add(p.ByteSeconds)
			}
			if qs.Cmp(new(big.Int).SetUint64(q)) != 0 || bs != s.ByteSeconds {
				t.Fatalf("event %v+%v q=%d: pieces add up to %s and %s", start, dur, q, qs, bs)
			}
		}
		if !s.Hours[0].Start.Equal(start.Truncate(time.Hour)) || !s.Hours[len(s.Hours)-1].Start.Before(start.Add(dur)) {
			t.Fatalf("event %v+%v: hours from %v to %v", start, dur, s.Hours[0].Start, s.Hours[len(s.Hours)-1].Start)
		}
		// Proportional: every hour but the last is within 1 of its share.
		for j, p := range s.Hours[:len(s.Hours)-1] {
			lo, hi := p.Start, p.Start.Add(time.Hour)
			if j == 0 {
				lo = start
			}
			share := new(big.Int).Mul(new(big.Int).SetUint64(q), big.NewInt(int64(hi.Sub(lo))))
			share.Div(share, big.NewInt(int64(dur)))
			if share.Cmp(new(big.Int).SetUint64(p.Quantity)) != 0 {
				t.Fatalf("event %v+%v q=%d: hour %d has %d, want floor share %s", start, dur, q, j, p.Quantity, share)
			}
		}
	}
}

// TestAppendSplitShares: splits cut from one shared buffer equal those cut
// from none (SplitEvent; the shares themselves are TestSplitSums's), and
// none reaches into another's pieces (appending to one leaves the next be).
func TestAppendSplitShares(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 10, 30, 0, 0, time.UTC)
	events := []*Event{
		usageEvent(KindStorage, t0, t0.Add(3*time.Hour), 90),                        // 4 hours, 1 day
		usageEvent(KindBandwidthIn, t0.Add(12*time.Hour), t0.Add(15*time.Hour), 50), // across midnight
		{Kind: KindLicense, EventType: TypeUsageSnapshot, EventTime: t0, Quantity: 1},
		usageEvent(KindBandwidthOut, t0, t0.Add(time.Hour), 5),
	}
	var buf []Piece
	var splits []Split
	for range 300 { // past a few buffer renewals
		for _, e := range events {
			var s Split
			s, buf = AppendSplit(buf, e)
			splits = append(splits, s)
		}
	}
	for i, s := range splits {
		if cap(s.Hours) != len(s.Hours) || cap(s.Days) != len(s.Days) {
			t.Fatalf("split %d: hours %d/%d, days %d/%d (length/capacity): an append would overwrite a neighbour",
				i, len(s.Hours), cap(s.Hours), len(s.Days), cap(s.Days))
		}
		_ = append(s.Days, Piece{Quantity: 999})
		_ = append(s.Hours, Piece{Quantity: 999})
	}
	for i, s := range splits {
		if want := SplitEvent(events[i%len(events)]); !reflect.DeepEqual(s, want) {
			t.Fatalf("split %d: %+v, want %+v", i, s, want)
		}
	}
}
