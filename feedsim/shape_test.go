package feedsim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
)

// xmlShape lists an element tree as lines "depth {ns}name attr,attr,…"
// (attributes sorted, namespace declarations left out).
func xmlShape(t *testing.T, data []byte) []string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var out []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("xml: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			var attrs []string
			for _, a := range e.Attr {
				if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
					continue
				}
				attrs = append(attrs, a.Name.Local)
			}
			sort.Strings(attrs)
			out = append(out, fmt.Sprintf("%d {%s}%s %s", depth, e.Name.Space, e.Name.Local, strings.Join(attrs, ",")))
			depth++
		case xml.EndElement:
			depth--
		}
	}
}

// jsonShape lists the paths of a JSON document with the type of each
// scalar ("entry.content.event.product.bandwidthIn number").
func jsonShape(t *testing.T, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("json: %v", err)
	}
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		case json.Number:
			out = append(out, path+" number")
		case string:
			out = append(out, path+" string")
		case bool:
			out = append(out, path+" bool")
		default:
			out = append(out, path+fmt.Sprintf(" %T", v))
		}
	}
	walk("", v)
	sort.Strings(out)
	return slices.Compact(out)
}

// TestShapesMatchSeeds renders one entry of each Cloud Backup kind and
// compares its structure (elements, namespaces, attribute names; JSON paths
// and scalar types) with the seed samples in testdata/seed.
func TestShapesMatchSeeds(t *testing.T) {
	cfg := testConfig()
	cfg.Agents = 12
	s, ts, _ := start(t, cfg)
	f := s.tenants[0].backup
	for _, c := range []struct {
		seed string
		kind kind
	}{
		{"bandwidthIn", kBandwidthIn}, {"bandwidthOut", kBandwidthOut}, {"storage", kStorage},
		{"license-v1", kLicense}, {"license-snapshot", kSnapshot},
	} {
		// An entry showing every optional attribute the seed shows.
		i := slices.IndexFunc(f.entries, func(e entry) bool {
			ag := f.tenant.agents[e.agent]
			return e.kind == c.kind && !ag.noServerID && (e.kind != kSnapshot || externalShown(f.linkOf(&e), ag))
		})
		if i < 0 {
			t.Fatalf("no %s entry", c.seed)
		}
		id := "urn:uuid:" + f.entries[i].id.String()
		for _, fm := range formats {
			t.Run(c.seed+"/"+fm.name, func(t *testing.T) {
				seed, err := os.ReadFile("../testdata/seed/" + c.seed + "." + fm.name)
				if err != nil {
					t.Fatal(err)
				}
				// The storage sample's product tag lacks its ">".
				seed = bytes.Replace(seed, []byte("version=\"1\"/\n</event>"), []byte("version=\"1\"/>\n</event>"), 1)
				res := do(t, "GET", ts.URL+"/backup/events/"+f.tenant.id+"/entries/"+id, map[string]string{"Accept": fm.accept}, "")
				var got, want []string
				if fm.name == "xml" {
					got, want = xmlShape(t, res.body), xmlShape(t, seed)
				} else {
					got, want = jsonShape(t, res.body), jsonShape(t, seed)
				}
				if !slices.Equal(got, want) {
					t.Errorf("shape differs from the seed:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
				}
			})
		}
	}
}
