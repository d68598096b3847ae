package feedsim

import (
	"math/big"
	"math/bits"
)

// Fast formatting of the feed's timestamps, which are always UTC: usage
// times to the second ("2026-10-01T10:00:00Z") and atom:updated /
// atom:published to the millisecond ("2026-10-01T10:00:03.758Z").

// civil converts days since 1970-01-01 to a proleptic Gregorian date
// (Howard Hinnant's civil_from_days).
func civil(days int64) (y int64, m, d int) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		y++
	}
	return
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

func appendDateTime(b []byte, sec int64) []byte {
	days := floorDiv(sec, 86400)
	s := int(sec - days*86400)
	y, m, d := civil(days)
	b = append(b, byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append2(b, m)
	b = append(b, '-')
	b = append2(b, d)
	b = append(b, 'T')
	b = append2(b, s/3600)
	b = append(b, ':')
	b = append2(b, s/60%60)
	b = append(b, ':')
	return append2(b, s%60)
}

// appendSec appends a time given in Unix seconds, to the second.
func appendSec(b []byte, sec int64) []byte { return append(appendDateTime(b, sec), 'Z') }

// appendMilli appends a time given in Unix milliseconds, to the millisecond.
func appendMilli(b []byte, ms int64) []byte {
	sec := floorDiv(ms, 1000)
	f := int(ms - sec*1000)
	b = appendDateTime(b, sec)
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10), 'Z')
}

// appendDay appends the UTC date of a Unix day number.
func appendDay(b []byte, day int64) []byte {
	y, m, d := civil(day)
	b = append(b, byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append2(b, m)
	b = append(b, '-')
	return append2(b, d)
}

// u128 is an unsigned 128-bit integer for exact sums: storage byte-seconds
// (bytes × seconds) overflow uint64.
type u128 struct{ hi, lo uint64 }

func (a *u128) add64(v uint64) {
	var c uint64
	a.lo, c = bits.Add64(a.lo, v, 0)
	a.hi += c
}

func (a *u128) addMul(x, y uint64) {
	hi, lo := bits.Mul64(x, y)
	var c uint64
	a.lo, c = bits.Add64(a.lo, lo, 0)
	a.hi += hi + c
}

func (a u128) String() string {
	if a.hi == 0 {
		var buf [20]byte
		return string(appendUint(buf[:0], a.lo))
	}
	var v big.Int
	v.SetUint64(a.hi)
	v.Lsh(&v, 64)
	v.Or(&v, new(big.Int).SetUint64(a.lo))
	return v.String()
}

func appendUint(b []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for v >= 10 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	i--
	buf[i] = byte('0' + v)
	return append(b, buf[i:]...)
}
