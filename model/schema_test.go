package model

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestSchema holds schemas/event.schema.json to the encoding: every golden
// event validates against it, and so do edge cases.
func TestSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	schema, err := c.Compile("../schemas/event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	check := func(where string, line []byte) {
		t.Helper()
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if err := schema.Validate(v); err != nil {
			t.Errorf("%s: %s does not validate: %v", where, line, err)
		}
	}
	goldens, err := filepath.Glob("../testdata/*/*.golden.ndjson")
	if err != nil || len(goldens) < 10 {
		t.Fatalf("goldens: %v (%d)", err, len(goldens))
	}
	n := 0
	for _, g := range goldens {
		f, err := os.Open(g)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			check(g, sc.Bytes())
			n++
		}
		f.Close()
	}
	if n < 20 {
		t.Fatalf("only %d golden events", n)
	}
	e := usage(KindStorage, math.MaxUint64)
	check("max quantity", e.AppendJSON(nil))

	// And it rejects what is not an event.
	bad := usage(KindStorage, 5)
	bad.Kind = "disk"
	if v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(bad.AppendJSON(nil))); schema.Validate(v) == nil {
		t.Error("schema accepts kind disk")
	}
	other := Event{EntryID: "x", Kind: KindOther, Quantity: 3}
	if v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(other.AppendJSON(nil))); schema.Validate(v) == nil {
		t.Error("schema accepts other with a quantity")
	}
}
