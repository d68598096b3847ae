package model

import (
	"math/big"
	"math/bits"
	"time"
)

// Uint128 is an unsigned 128-bit integer: byte-seconds of a storage event
// reach 2^64 bytes x 86,400 s, past 64 bits.
type Uint128 struct{ Hi, Lo uint64 }

// Add returns u+v (wrapping past 2^128, which no sum of a day's pieces reaches).
func (u Uint128) Add(v Uint128) Uint128 {
	lo, c := bits.Add64(u.Lo, v.Lo, 0)
	hi, _ := bits.Add64(u.Hi, v.Hi, c)
	return Uint128{hi, lo}
}

// Sub returns u-v; v must not exceed u.
func (u Uint128) Sub(v Uint128) Uint128 {
	lo, b := bits.Sub64(u.Lo, v.Lo, 0)
	hi, _ := bits.Sub64(u.Hi, v.Hi, b)
	return Uint128{hi, lo}
}

// IsZero reports whether u is 0.
func (u Uint128) IsZero() bool { return u.Hi == 0 && u.Lo == 0 }

// Big returns u as a big.Int.
func (u Uint128) Big() *big.Int {
	b := new(big.Int).SetUint64(u.Hi)
	b.Lsh(b, 64)
	return b.Or(b, new(big.Int).SetUint64(u.Lo))
}

// String formats u in decimal.
func (u Uint128) String() string { return u.Big().String() }

// mulDiv returns floor(a*b/d) as a Uint128; d > 0.
func mulDiv(a, b, d uint64) Uint128 {
	hi, lo := bits.Mul64(a, b)
	qhi := hi / d
	r := hi % d
	qlo, _ := bits.Div64(r, lo, d)
	return Uint128{qhi, qlo}
}

// Piece is the part of one event in one bucket (an hour or a UTC day).
type Piece struct {
	Start       time.Time // start of the bucket, UTC
	Quantity    uint64
	ByteSeconds Uint128
}

// Split is an event cut into hourly and daily pieces.
type Split struct {
	ByteSeconds Uint128 // the whole event's byte-seconds (storage; else 0)
	Hours       []Piece // ascending, at least one
	Days        []Piece // ascending, at least one
}

// nsPerSecond converts the interval's nanoseconds into seconds.
const nsPerSecond = uint64(time.Second)

// SplitEvent cuts a valid usage event (kind bandwidthIn, bandwidthOut, storage
// or license) into the UTC hours and days it overlaps. The rule, exact in
// integers:
//
//   - A USAGE event covers [start, end). Hour i of the hours it overlaps gets
//     floor(q x overlap_i / (end - start)) of its quantity q, with overlaps in
//     nanoseconds; the last hour gets q minus the others, so the hours add up
//     to q. A snapshot (USAGE_SNAPSHOT) is one piece, in the hour of its
//     event_time.
//   - Storage byte-seconds: the event has floor(q x (end - start) / 1 s); hour
//     i gets floor(q x overlap_i / 1 s) and the last hour the rest, which is
//     the same proportional floor with the remainder in the last hour.
//   - A day's piece is the sum of the event's hourly pieces in that UTC day,
//     so daily and hourly rollups agree.
//
// Every piece is at most the event's own total, so quantities fit in 64 bits
// and byte-seconds in 128.
func SplitEvent(e *Event) Split {
	s, _ := AppendSplit(nil, e)
	return s
}

// AppendSplit is SplitEvent with the pieces taken from buf's spare capacity
// (a decoder cuts a batch's pieces from a few large slices instead of two
// small ones per event). When buf has too little, it starts a new one, twice
// as large up to 4,096 pieces, and at least large enough; the pieces of
// earlier events stay where they are. It returns buf with the pieces
// appended.
func AppendSplit(buf []Piece, e *Event) (Split, []Piece) {
	var s Split
	start, end := e.StartTime.UTC(), e.EndTime.UTC()
	first := start.Truncate(time.Hour)
	n := 1
	if e.EventType == TypeUsage {
		n = int(end.Sub(first)+time.Hour-1) / int(time.Hour)
	}
	if cap(buf)-len(buf) < 2*n { // n hours and at most n days
		buf = make([]Piece, 0, max(2*n, min(2*cap(buf), 1<<12)))
	}
	l := len(buf)
	s.Hours = buf[l : l+n : l+n]
	s.Days = buf[l+n : l+n : l+2*n]
	if e.EventType != TypeUsage {
		t := e.EventTime.UTC()
		s.Hours[0] = Piece{Start: t.Truncate(time.Hour), Quantity: e.Quantity}
		s.Days = append(s.Days, Piece{Start: day(t), Quantity: e.Quantity})
		return s, buf[:l+n+1]
	}
	dur := uint64(end.Sub(start))
	storage := e.Kind == KindStorage
	if storage {
		s.ByteSeconds = mulDiv(e.Quantity, dur, nsPerSecond)
	}
	var qsum uint64
	var bsum Uint128
	for i := range n {
		hs := first.Add(time.Duration(i) * time.Hour)
		p := Piece{Start: hs}
		if i == n-1 {
			p.Quantity = e.Quantity - qsum
			if storage {
				p.ByteSeconds = s.ByteSeconds.Sub(bsum)
			}
		} else {
			lo, hi := start, hs.Add(time.Hour)
			if hs.After(lo) {
				lo = hs
			}
			ov := uint64(hi.Sub(lo))
			p.Quantity = mulDiv(e.Quantity, ov, dur).Lo // < q, so it fits
			qsum += p.Quantity
			if storage {
				p.ByteSeconds = mulDiv(e.Quantity, ov, nsPerSecond)
				bsum = bsum.Add(p.ByteSeconds)
			}
		}
		s.Hours[i] = p
	}
	for _, h := range s.Hours {
		d := day(h.Start)
		if k := len(s.Days) - 1; k >= 0 && s.Days[k].Start.Equal(d) {
			s.Days[k].Quantity += h.Quantity
			s.Days[k].ByteSeconds = s.Days[k].ByteSeconds.Add(h.ByteSeconds)
			continue
		}
		s.Days = append(s.Days, Piece{Start: d, Quantity: h.Quantity, ByteSeconds: h.ByteSeconds})
	}
	// Capped at its length: an append must not run into the next event's
	// pieces.
	s.Days = s.Days[:len(s.Days):len(s.Days)]
	return s, buf[:l+n+len(s.Days)]
}

func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}
