package query

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesRoutes holds the document to the routes: the same paths
// and methods, and for each operation the same query parameters the handler
// accepts (any other is a 400), and the tid path parameter where the path has it.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI    string `yaml:"openapi"`
		Paths      map[string]map[string]yaml.Node
		Components struct {
			Parameters map[string]struct {
				Name string `yaml:"name"`
				In   string `yaml:"in"`
			} `yaml:"parameters"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	var want, got []string
	for _, r := range Routes {
		want = append(want, strings.ToLower(r.Method)+" "+r.Path)
	}
	for path, ops := range doc.Paths {
		for method, node := range ops {
			got = append(got, method+" "+path)
			var op struct {
				Parameters []struct {
					Ref  string `yaml:"$ref"`
					Name string `yaml:"name"`
					In   string `yaml:"in"`
				} `yaml:"parameters"`
				Responses map[string]yaml.Node `yaml:"responses"`
			}
			if err := node.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			var query, pathParams []string
			for _, p := range op.Parameters {
				if p.Ref != "" {
					c, ok := doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
					if !ok {
						t.Errorf("%s %s: dangling %s", method, path, p.Ref)
					}
					p.Name, p.In = c.Name, c.In
				}
				if p.In == "query" {
					query = append(query, p.Name)
				} else {
					pathParams = append(pathParams, p.Name)
				}
			}
			for _, r := range Routes {
				if r.Path != path {
					continue
				}
				params := slices.Clone(r.Params)
				sort.Strings(params)
				sort.Strings(query)
				if strings.Join(params, ",") != strings.Join(query, ",") {
					t.Errorf("%s %s: document lists query parameters %v, the handler takes %v", method, path, query, params)
				}
				if strings.Contains(path, "{tid}") != slices.Contains(pathParams, "tid") {
					t.Errorf("%s %s: tid path parameter missing or extra", method, path)
				}
				if r.Auth != "none" {
					for _, code := range []string{"200", "401"} {
						if _, ok := op.Responses[code]; !ok {
							t.Errorf("%s %s: no %s response", method, path, code)
						}
					}
				}
				if len(r.Params) > 0 {
					if _, ok := op.Responses["400"]; !ok {
						t.Errorf("%s %s: no 400 response", method, path)
					}
				}
			}
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("routes:\n%s\nOpenAPI paths:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}
