package feedsim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

var (
	benchOnce sync.Once
	benchSim  *Server
)

// benchServer is one tenant with about 160,000 entries (30 agents, 90 days).
func benchServer(b *testing.B) *Server {
	benchOnce.Do(func() {
		cfg := DefaultConfig()
		cfg.Tenants, cfg.Agents, cfg.Days, cfg.NoAuth = 1, 30, 90, true
		began := time.Now()
		s, err := New(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("generated %d entries in %s", len(s.tenants[0].backup.entries), time.Since(began))
		s.now = func() time.Time { return testNow }
		benchSim = s
	})
	return benchSim
}

// BenchmarkServe serves limit=1000 pages over real HTTP on 127.0.0.1,
// walking the feed backward, and reports entries served a second.
func BenchmarkServe(b *testing.B) {
	s := benchServer(b)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	all := ids(s, 0)
	feed := ts.URL + "/backup/events/" + s.tenants[0].id
	for _, f := range formats {
		b.Run(f.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer client.CloseIdleConnections()
			var bytes int64
			pos := len(all) - 1
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if pos < 1000 {
					pos = len(all) - 1
				}
				req, _ := http.NewRequest("GET", feed+"?marker="+all[pos]+"&direction=backward&limit=1000", nil)
				req.Header.Set("Accept", f.accept)
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 {
					b.Fatalf("status %d, err %v", res.StatusCode, err)
				}
				bytes += n
				pos -= 1000
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)*1000/secs, "entries/s")
			b.ReportMetric(float64(bytes)/float64(b.N)/1000, "B/entry")
			b.SetBytes(bytes / int64(b.N))
		})
	}
}

// BenchmarkRender renders limit=1000 pages without HTTP: the cost of the
// renderer alone.
func BenchmarkRender(b *testing.B) {
	s := benchServer(b)
	f := s.tenants[0].backup
	for _, js := range []bool{false, true} {
		name := "xml"
		if js {
			name = "json"
		}
		b.Run(name, func(b *testing.B) {
			q := &pageQuery{limit: 1000}
			var buf []byte
			idx := make([]int, 0, 1000)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				rd := newRenderer(f, "http://127.0.0.1:8900", 0)
				f.mu.RLock()
				p, _ := f.compute(q, len(f.entries), idx[:0])
				l := f.pageLinks("http://127.0.0.1:8900/backup/events/1", q, p)
				if js {
					buf = rd.appendFeedJSON(buf[:0], l, p, 0)
				} else {
					buf = rd.appendFeedXML(buf[:0], l, p, 0)
				}
				f.mu.RUnlock()
			}
			b.SetBytes(int64(len(buf)))
			b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
