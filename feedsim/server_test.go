package feedsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDeterminism(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.Malformed = 0.05
	s1, ts1, _ := start(t, cfg)
	s2, ts2, _ := start(t, cfg)
	cfg3 := cfg
	cfg3.Seed++
	s3, ts3, _ := start(t, cfg3)
	if !slicesEqual(s1.TenantIDs(), s2.TenantIDs()) || slicesEqual(s1.TenantIDs(), s3.TenantIDs()) {
		t.Fatalf("tenant ids %v %v %v", s1.TenantIDs(), s2.TenantIDs(), s3.TenantIDs())
	}
	all := ids(s1, 0)
	paths := []string{
		"", "?limit=1000", "?marker=last&limit=7", "?marker=" + all[20] + "&direction=forward&limit=13",
		"?marker=" + all[20] + "&direction=backward&limit=13", "/entries/" + all[5],
	}
	for _, f := range formats {
		for _, p := range paths {
			get := func(ts string, tid string) []byte {
				// The host differs between servers; links are built from it.
				res := do(t, "GET", ts+"/backup/events/"+tid+p, map[string]string{"Accept": f.accept}, "")
				if res.status != 200 {
					t.Fatalf("%s: %d", p, res.status)
				}
				return bytes.ReplaceAll(res.body, []byte(strings.TrimPrefix(ts, "http://")), []byte("HOST"))
			}
			a, b := get(ts1.URL, s1.tenants[0].id), get(ts2.URL, s2.tenants[0].id)
			if !bytes.Equal(a, b) {
				t.Errorf("%s %q: same seed, different bytes", f.name, p)
			}
			if strings.HasPrefix(p, "?marker=urn") || strings.HasPrefix(p, "/entries") {
				continue
			}
			if c := get(ts3.URL, s3.tenants[0].id); bytes.Equal(a, c) {
				t.Errorf("%s %q: different seeds, same bytes", f.name, p)
			}
		}
	}
	t1, t2 := fetchTruth(t, ts1.URL+"/_sim/truth"), fetchTruth(t, ts2.URL+"/_sim/truth")
	j1, _ := json.Marshal(t1.Tenants)
	j2, _ := json.Marshal(t2.Tenants)
	if !bytes.Equal(j1, j2) {
		t.Error("same seed, different truth")
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func tokenBody(user, key string) string {
	return `{"auth":{"RAX-KSKEY:apiKeyCredentials":{"username":"` + user + `","apiKey":"` + key + `"}}}`
}

func getToken(t *testing.T, base, user, key string) string {
	t.Helper()
	res := do(t, "POST", base+"/v2.0/tokens", map[string]string{"Content-Type": "application/json"}, tokenBody(user, key))
	if res.status != 200 {
		t.Fatalf("token: %d %s", res.status, res.body)
	}
	var r struct {
		Access struct {
			Token struct {
				ID      string `json:"id"`
				Expires string `json:"expires"`
			} `json:"token"`
		} `json:"access"`
	}
	if err := json.Unmarshal(res.body, &r); err != nil || r.Access.Token.ID == "" {
		t.Fatalf("token body %s: %v", res.body, err)
	}
	if _, err := time.Parse(time.RFC3339, r.Access.Token.Expires); err != nil {
		t.Fatalf("expires: %v", err)
	}
	return r.Access.Token.ID
}

func TestAuth(t *testing.T) {
	cfg := testConfig()
	cfg.NoAuth = false
	cfg.Users = map[string]string{"demo": "demo", "alice": "s3cret"}
	cfg.TokenTTL = time.Hour
	s, ts, c := start(t, cfg)
	tokens := ts.URL + "/v2.0/tokens"
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"demo", tokenBody("demo", "demo"), 200},
		{"alice", tokenBody("alice", "s3cret"), 200},
		{"password credentials", `{"auth":{"passwordCredentials":{"username":"alice","password":"s3cret"}}}`, 200},
		{"wrong key", tokenBody("demo", "nope"), 401},
		{"unknown user", tokenBody("bob", "demo"), 401},
		{"not JSON", `{"auth":`, 400},
		{"no credentials", `{"auth":{}}`, 400},
		{"empty user", tokenBody("", "demo"), 400},
	} {
		res := do(t, "POST", tokens, map[string]string{"Content-Type": "application/json"}, tc.body)
		if res.status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.name, res.status, tc.status, res.body)
		}
	}
	if res := do(t, "GET", tokens, nil, ""); res.status != http.StatusMethodNotAllowed {
		t.Errorf("GET tokens: %d", res.status)
	}
	tok := getToken(t, ts.URL, "demo", "demo")
	feed := ts.URL + "/backup/events/" + s.tenants[0].id
	entry := feed + "/entries/" + ids(s, 0)[0]
	for _, u := range []string{feed, entry, ts.URL + "/servers/events/" + s.tenants[0].id} {
		for _, f := range formats {
			for _, h := range []struct {
				token  string
				status int
			}{{"", 401}, {"bogus", 401}, {tok, 200}} {
				hdr := map[string]string{"Accept": f.accept}
				if h.token != "" {
					hdr["X-Auth-Token"] = h.token
				}
				res := do(t, "GET", u, hdr, "")
				if res.status != h.status {
					t.Errorf("%s %s token %q: %d, want %d", f.name, u, h.token, res.status, h.status)
				}
			}
		}
	}
	// The simulator's own endpoints need no token.
	if res := do(t, "GET", ts.URL+"/_sim/tenants", nil, ""); res.status != 200 {
		t.Errorf("/_sim/tenants: %d", res.status)
	}
	c.add(time.Hour)
	if res := do(t, "GET", feed, map[string]string{"X-Auth-Token": tok}, ""); res.status != 401 {
		t.Errorf("expired token: %d, want 401", res.status)
	}
	if tok2 := getToken(t, ts.URL, "demo", "demo"); tok2 == tok {
		t.Error("same token twice")
	} else if res := do(t, "GET", feed, map[string]string{"X-Auth-Token": tok2}, ""); res.status != 200 {
		t.Errorf("new token: %d", res.status)
	}
}

func TestFaults(t *testing.T) {
	cfg := testConfig()
	cfg.NoAuth = false
	cfg.RetryAfter = 3 * time.Second
	cfg.SlowDelay = 100 * time.Millisecond
	s, ts, _ := start(t, cfg)
	feed := ts.URL + "/backup/events/" + s.tenants[0].id + "?limit=1000"
	put := func(spec string) {
		t.Helper()
		if res := do(t, "PUT", ts.URL+"/_sim/faults", nil, spec); res.status != 200 {
			t.Fatalf("PUT faults %q: %d %s", spec, res.status, res.body)
		}
	}
	tok := getToken(t, ts.URL, "demo", "demo")
	hdr := map[string]string{"X-Auth-Token": tok}
	for _, tc := range []struct {
		spec   string
		status int
	}{{"429=1", 429}, {`{"503":1}`, 503}, {"500=1", 500}} {
		put(tc.spec)
		for _, f := range formats {
			hdr["Accept"] = f.accept
			res := do(t, "GET", feed, hdr, "")
			if res.status != tc.status {
				t.Errorf("%s %s: %d, want %d", tc.spec, f.name, res.status, tc.status)
			}
			if tc.status == 429 && res.header.Get("Retry-After") != "3" {
				t.Errorf("Retry-After %q", res.header.Get("Retry-After"))
			}
		}
	}
	// Tokens are still issued while the feed fails.
	if res := do(t, "POST", ts.URL+"/v2.0/tokens", nil, tokenBody("demo", "demo")); res.status != 200 {
		t.Errorf("tokens during faults: %d", res.status)
	}

	put("drop=1")
	req, _ := http.NewRequest("GET", feed, nil)
	req.Header.Set("X-Auth-Token", tok)
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("drop: err %v, want unexpected EOF", err)
	}

	put("slow=1")
	began := time.Now()
	if res := do(t, "GET", feed, hdr, ""); res.status != 200 || time.Since(began) < cfg.SlowDelay {
		t.Errorf("slow: %d after %s", res.status, time.Since(began))
	}

	put("expire=1")
	if res := do(t, "GET", feed, hdr, ""); res.status != 401 {
		t.Errorf("expire: %d", res.status)
	}
	put("none")
	if res := do(t, "GET", feed, hdr, ""); res.status != 401 {
		t.Errorf("expired token accepted again: %d", res.status)
	}
	hdr["X-Auth-Token"] = getToken(t, ts.URL, "demo", "demo")
	if res := do(t, "GET", feed, hdr, ""); res.status != 200 {
		t.Errorf("after faults off: %d", res.status)
	}

	for _, bad := range []string{"429=2", "bogus=0.1", `{"429":-1}`, "429=0.6,500=0.6", "429"} {
		if res := do(t, "PUT", ts.URL+"/_sim/faults", nil, bad); res.status != 400 {
			t.Errorf("PUT faults %q: %d, want 400", bad, res.status)
		}
	}
	put("429=0.05,503=0.02,500=0.01,drop=0.01,slow=0.01,malformed=0.001,expire=0.01")
	var got struct {
		Spec string `json:"spec"`
	}
	json.Unmarshal(do(t, "GET", ts.URL+"/_sim/faults", nil, "").body, &got)
	if got.Spec != "429=0.05,503=0.02,500=0.01,drop=0.01,slow=0.01,malformed=0.001,expire=0.01" {
		t.Errorf("faults read back as %q", got.Spec)
	}
}

// TestMalformedSticky checks that entries served malformed stay malformed
// (and good ones good) when the rate changes, and that the truth follows.
func TestMalformedSticky(t *testing.T) {
	cfg := testConfig()
	cfg.Faults.Malformed = 0.2
	s, ts, _ := start(t, cfg)
	tid := s.tenants[0].id
	first := ts.URL + "/backup/events/" + tid + "?marker=last&limit=100"
	p1, _ := getPage(t, first, formats[1], nil)
	if len(p1.Rejects) == 0 {
		t.Fatal("no malformed entries at rate 0.2")
	}
	if err := s.SetFaults(Faults{Malformed: 1}); err != nil {
		t.Fatal(err)
	}
	p2, _ := getPage(t, first, formats[1], nil)
	if len(p2.Rejects) != len(p1.Rejects) || len(p2.Events) != len(p1.Events) {
		t.Errorf("served page changed with the rate: %d/%d rejects", len(p1.Rejects), len(p2.Rejects))
	}
	tr := fetchTruth(t, ts.URL+"/_sim/truth?tenant="+tid)
	if got, want := len(tr.Tenants[0].Malformed), len(ids(s, 0))-len(p1.Events); got != want {
		t.Errorf("truth lists %d malformed, want %d (all but the %d served good)", got, want, len(p1.Events))
	}
	// Every variant parses as a reject in both formats.
	for _, f := range formats {
		for _, id := range ids(s, 0)[:100] {
			p, _ := getPage(t, ts.URL+"/backup/events/"+tid+"/entries/"+id, f, nil)
			if p.Entries != 1 {
				t.Fatalf("%s %s: %d entries", f.name, id, p.Entries)
			}
		}
	}
}

func TestLive(t *testing.T) {
	cfg := testConfig()
	cfg.Rate = 50
	s, ts, c := start(t, cfg)
	before := fetchTruth(t, ts.URL+"/_sim/truth")
	n0 := 0
	for _, tt := range before.Tenants {
		n0 += tt.Entries
	}
	s.Tick()
	for i := 0; i < 20; i++ {
		c.add(100 * time.Millisecond)
		s.Tick()
	}
	total := 0
	for i := range s.tenants {
		total += len(ids(s, i))
	}
	if total-n0 != 100 {
		t.Fatalf("live mode appended %d entries in 2s at 50/s, want 100", total-n0)
	}
	c.add(cfg.HeadDelay)
	after := fetchTruth(t, ts.URL+"/_sim/truth")
	n1 := 0
	for k, tt := range after.Tenants {
		n1 += tt.Entries
		events, rejects, ok := readAll(t, ts.URL+"/backup/events/"+tt.Tenant, formats[1], 1000, nil)
		if !ok {
			t.Fatal("unreadable page")
		}
		compareTruth(t, tt, events, rejects)
		if newest := events[len(events)-1]; newest.Published.Before(testNow) {
			t.Errorf("tenant %d: newest entry published %s, not live", k, newest.Published)
		}
	}
	if n1 != total {
		t.Errorf("truth covers %d entries, feed holds %d", n1, total)
	}
}
