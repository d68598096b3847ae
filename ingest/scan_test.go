package ingest

import (
	"math/rand"
	"strings"
	"testing"
)

// The word-at-a-time scans must agree with the byte-at-a-time definition
// for every byte value at every position.
func TestByteClasses(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 40; n++ {
		for trial := 0; trial < 300; trial++ {
			b := make([]byte, n)
			for i := range b {
				b[i] = "a<>\"\n\t "[rng.Intn(7)]
			}
			if n > 0 && trial > 0 {
				b[rng.Intn(n)] = byte(trial % 256)
			}
			for _, allowed := range []string{"", "\n\t"} {
				var wantHigh, wantCtrl bool
				for _, c := range b {
					wantHigh = wantHigh || c >= 0x7f
					wantCtrl = wantCtrl || (c < 0x20 && !strings.ContainsRune(allowed, rune(c)))
				}
				high, ctrl := byteClasses(b, allowed)
				if high != wantHigh || ctrl != wantCtrl {
					t.Fatalf("byteClasses(%q, %q) = %v, %v; want %v, %v", b, allowed, high, ctrl, wantHigh, wantCtrl)
				}
			}
			for j := 0; j <= n; j++ {
				want := j
				for want < n && !(b[want] == '"' || b[want] == '\\' || b[want] < 0x20 || b[want] >= 0x80) {
					want++
				}
				if got := scanString(b, j); got != want {
					t.Fatalf("scanString(%q, %d) = %d, want %d", b, j, got, want)
				}
			}
		}
	}
}
