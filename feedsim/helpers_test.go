package feedsim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/ingest"
)

// clock is a settable time for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testNow is after every generated test history.
var testNow = time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)

// testConfig is a small world without auth and faults.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Tenants = 2
	cfg.Days = 2
	cfg.Seed = 7
	cfg.NoAuth = true
	return cfg
}

// start builds a Server on a fake clock and serves it on 127.0.0.1; the
// test's cleanup stops it.
func start(t testing.TB, cfg Config) (*Server, *httptest.Server, *clock) {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: testNow}
	s.now = c.now
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts, c
}

// format is one of the feed's two encodings.
type format struct {
	name   string
	accept string
}

var formats = []format{
	{"xml", "application/atom+xml"},
	{"json", "application/vnd.rackspace.atom+json"},
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, url string, header map[string]string, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{res.StatusCode, res.Header, b}
}

// getPage fetches and parses a feed page; it fails the test unless the
// answer is 200 and a feed.
func getPage(t testing.TB, url string, f format, header map[string]string) (*ingest.Page, []byte) {
	t.Helper()
	h := map[string]string{"Accept": f.accept}
	for k, v := range header {
		h[k] = v
	}
	res := do(t, "GET", url, h, "")
	if res.status != http.StatusOK {
		t.Fatalf("GET %s (%s): status %d: %s", url, f.name, res.status, res.body)
	}
	p, err := ingest.ParsePage(res.body, ingest.FormatAuto)
	if err != nil {
		t.Fatalf("GET %s (%s): parse: %v", url, f.name, err)
	}
	return p, res.body
}

// ids returns the entry ids of a feed oldest first.
func ids(s *Server, tenant int) []string {
	f := s.tenants[tenant].backup
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]string, len(f.entries))
	for i := range f.entries {
		out[i] = "urn:uuid:" + f.entries[i].id.String()
	}
	return out
}
