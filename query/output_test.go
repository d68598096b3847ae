package query

import "testing"

// TestCell holds the CSV guard: every value a spreadsheet could take for a
// formula gets its apostrophe, and ordinary values (negative numbers are not
// passed through cell) are left as they are.
func TestCell(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"srv-01", "srv-01"},
		{"a=b", "a=b"},
		{" srv", " srv"},
		{"   ", "   "},
		{"urn:uuid:8d8a4b8e", "urn:uuid:8d8a4b8e"},
		{"=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"},
		{"+1", "'+1"},
		{"-1", "'-1"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\tx", "'\tx"},
		{"\rx", "'\rx"},
		{"\nx", "'\nx"},
		{" =1+1", "' =1+1"},
		{"\u00a0\u3000=1", "'\u00a0\u3000=1"}, // no-break and ideographic spaces
		{"＝1+1", "'＝1+1"},
		{"＋1", "'＋1"},
		{"－1", "'－1"},
		{"＠x", "'＠x"},
		{"\xff=", "\xff="}, // not UTF-8: its first character is not a formula's
	} {
		if got := cell(c.in); got != c.want {
			t.Errorf("cell(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
