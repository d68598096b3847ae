package ingest

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCutKeepsCharacters: a dead letter's text cut to 4 KiB ends on a
// character boundary and says how long it was; a short one is kept.
func TestCutKeepsCharacters(t *testing.T) {
	long := strings.Repeat("€", 2000) // 3 bytes each: 4096 is inside one
	c := cut(long)
	if !utf8.ValidString(c) || !strings.HasSuffix(c, "… (6000 bytes in all)") || len(c) > maxDeadLetterText+30 {
		t.Errorf("cut to %d bytes, valid %v, ending %q", len(c), utf8.ValidString(c), c[len(c)-30:])
	}
	if s := "short reason"; cut(s) != s {
		t.Errorf("a short text was cut")
	}
}
