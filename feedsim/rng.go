package feedsim

import "math/bits"

// The simulator's own pseudo-random generator. math/rand/v2 does not promise
// that its bounded helpers (IntN, Float64…) keep their outputs across Go
// releases; "same flags, same bytes" needs a generator whose every step is
// written here.

// rng is SplitMix64 (Steele, Lea and Flood, 2014): small, fast and good
// enough for synthetic data. It is not safe for concurrent use.
type rng struct{ s uint64 }

func newRNG(seed uint64, stream uint64) *rng {
	r := &rng{s: seed ^ mix64(stream+0x9e3779b97f4a7c15)}
	r.next()
	return r
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

// mix64 is SplitMix64's finalizer, also used as a hash of a uint64.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n) (n > 0) by multiply-high; the bias is at
// most n/2^64, irrelevant here.
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// between returns a number in [lo, hi].
func (r *rng) between(lo, hi int) int { return lo + r.intn(hi-lo+1) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// chance reports true with probability p.
func (r *rng) chance(p float64) bool { return r.float() < p }

// logUniform returns a number between lo and hi (lo ≥ 1) whose bit length
// is uniform, roughly the shape of sizes and byte counts. Integers only.
func (r *rng) logUniform(lo, hi uint64) uint64 {
	if hi <= lo {
		return lo
	}
	lb, hb := bits.Len64(lo), bits.Len64(hi)
	for {
		b := lb + r.intn(hb-lb+1)
		var v uint64
		if b == 64 {
			v = r.next() | 1<<63
		} else {
			v = r.next()&(1<<b-1) | 1<<(b-1)
		}
		if v >= lo && v <= hi {
			return v
		}
	}
}

// uuid is a UUID's 16 bytes.
type uuid [16]byte

// newUUID draws a version 4 UUID.
func (r *rng) uuid() uuid {
	var u uuid
	putUint64(u[:8], r.next())
	putUint64(u[8:], r.next())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func getUint64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// hash is a 64-bit hash of the UUID mixed with key.
func (u uuid) hash(key uint64) uint64 {
	return mix64(getUint64(u[:8]) ^ mix64(getUint64(u[8:])^key))
}

// derive returns another version 4 UUID computed from u: the event id of an
// entry, which need not be stored.
func (u uuid) derive(key uint64) uuid {
	var d uuid
	putUint64(d[:8], u.hash(key))
	putUint64(d[8:], u.hash(key+1))
	d[6] = d[6]&0x0f | 0x40
	d[8] = d[8]&0x3f | 0x80
	return d
}

const hexDigits = "0123456789abcdef"

func (u uuid) appendTo(b []byte) []byte {
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

func (u uuid) String() string { return string(u.appendTo(make([]byte, 0, 36))) }

// parseUUID reads the 36-character text form.
func parseUUID(s string) (uuid, bool) {
	var u uuid
	if len(s) != 36 {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return u, false
			}
			i++
			continue
		}
		h, ok1 := unhex(s[i])
		l, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = h<<4 | l
		j++
		i += 2
	}
	return u, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
