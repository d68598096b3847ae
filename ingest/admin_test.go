package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/internal/e2e"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return resp.StatusCode, e.Error.Message
	}
	return resp.StatusCode, string(b)
}

func agents(t *testing.T, url string) (int, []ingest.AgentReport) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Agents []ingest.AgentReport `json:"agents"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, body.Agents
}

// TestAdminModes drives the schedules through the HTTP API: a running
// ingest polls an idle tenant once, polls it often once activated, falls
// back to idle after the TTL, and reports all of it.
func TestAdminModes(t *testing.T) {
	sim, srv := e2e.Upstream(t, 2, 1, "none")
	brokers := e2e.KafkaCluster(t)
	tenants := sim.TenantIDs()
	cfg := e2e.IngestConfig(srv, brokers, tenants, ingest.FormatXML)
	cfg.Once = false
	cfg.IdleEvery, cfg.ActiveEvery, cfg.RealTimeEvery = time.Hour, 100*time.Millisecond, 50*time.Millisecond
	cfg.ActivateTTL = 1500 * time.Millisecond
	reg := prometheus.NewRegistry()
	cfg.Metrics = ingest.NewMetrics(reg)
	r, err := ingest.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(r.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	defer admin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	tenant := tenants[0]
	// Bad requests name what is wrong; nothing else changes.
	for _, c := range []struct {
		path, body string
		status     int
		says       string
	}{
		{"/v2/" + tenant + "/events", `{"event":"agent_activate","mode":"sometimes"}`, 400, `mode "sometimes"`},
		{"/v2/" + tenant + "/events", `{"event":"agent_activate"}`, 400, "mode is required"},
		{"/v2/" + tenant + "/events", `{"mode":"active"}`, 400, "event is required"},
		{"/v2/" + tenant + "/events", `{"event":"agent_sleep","mode":"active"}`, 400, `event "agent_sleep"`},
		{"/v2/" + tenant + "/events", `{"event":"agent_activate","mode":"active","extra":1}`, 400, "extra"},
		{"/v2/" + tenant + "/events", `not json`, 400, "not a JSON object"},
		{"/v2/nobody/events", `{"event":"agent_activate","mode":"active"}`, 404, `project "nobody"`},
	} {
		status, body := post(t, admin.URL+c.path, c.body)
		if status != c.status || !strings.Contains(body, c.says) {
			t.Errorf("POST %s %s: %d %s; want %d saying %q", c.path, c.body, status, body, c.status, c.says)
		}
	}
	if status, _ := agents(t, admin.URL+"/v2/nobody/agents"); status != 404 {
		t.Errorf("agents of an unknown project: %d", status)
	}

	// The first poll happens at start; then idle (1h) means no more.
	var first ingest.AgentReport
	waitFor(t, "the first poll", func() bool {
		_, a := agents(t, admin.URL+"/v2/"+tenant+"/agents")
		first = a[0]
		return len(a) == 1 && a[0].LastSuccess != nil
	})
	if first.Status != "online" || first.Mode != ingest.ModeIdle || !first.Owned || first.Entries == 0 {
		t.Fatalf("after the first poll: %+v", first)
	}
	time.Sleep(300 * time.Millisecond)
	if _, a := agents(t, admin.URL+"/v2/"+tenant+"/agents"); !a[0].LastPoll.Equal(*first.LastPoll) {
		t.Fatalf("an idle tenant was polled again within 300ms: %v then %v", first.LastPoll, a[0].LastPoll)
	}

	// Activated: polled every 100ms.
	if status, body := post(t, admin.URL+"/v2/"+tenant+"/events", `{"event":"agent_activate","mode":"active"}`); status != 202 {
		t.Fatalf("activate: %d %s", status, body)
	}
	_, a := agents(t, admin.URL+"/v2/"+tenant+"/agents")
	if a[0].Mode != ingest.ModeActive || a[0].ModeUntil == nil {
		t.Fatalf("after activation: %+v", a[0])
	}
	seen := map[time.Time]bool{}
	waitFor(t, "three polls in active mode", func() bool {
		_, a := agents(t, admin.URL+"/v2/"+tenant+"/agents")
		seen[*a[0].LastPoll] = true
		return len(seen) >= 4
	})
	// The other tenant stayed idle.
	_, other := agents(t, admin.URL+"/v2/"+tenants[1]+"/agents")
	if other[0].Mode != ingest.ModeIdle {
		t.Fatalf("the other tenant's mode changed: %+v", other[0])
	}
	// After the TTL: idle again, and the polls stop.
	waitFor(t, "the fall back to idle", func() bool {
		_, a := agents(t, admin.URL+"/v2/"+tenant+"/agents")
		return a[0].Mode == ingest.ModeIdle
	})
	time.Sleep(250 * time.Millisecond)
	_, a1 := agents(t, admin.URL+"/v2/"+tenant+"/agents")
	time.Sleep(400 * time.Millisecond)
	_, a2 := agents(t, admin.URL+"/v2/"+tenant+"/agents")
	if !a1[0].LastPoll.Equal(*a2[0].LastPoll) {
		t.Fatalf("still polled after falling back to idle: %v then %v", a1[0].LastPoll, a2[0].LastPoll)
	}
	// Metrics and health.
	resp, err := http.Get(admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{
		`feedmeter_ingest_entries_total{tenant="` + tenant + `"} ` + fmt.Sprint(first.Entries),
		`feedmeter_ingest_pages_total{tenant="` + tenant + `"}`,
		`feedmeter_ingest_lag_seconds{tenant="` + tenant + `"}`,
	} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	// The lag grows between polls: this idle tenant was last read to its
	// head at least 650 ms ago.
	var lag float64
	prefix := `feedmeter_ingest_lag_seconds{tenant="` + tenant + `"} `
	for _, line := range strings.Split(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			lag, _ = strconv.ParseFloat(v, 64)
		}
	}
	if since := time.Since(*a2[0].LastSuccess).Seconds(); lag < 0.6 || lag > since {
		t.Errorf("lag %v s, want at least 0.6 and at most the %v s since the last success", lag, since)
	}
	if resp, err := http.Get(admin.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	// All of this process's subscriptions.
	if status, all := agents(t, admin.URL+"/v2/agents"); status != 200 || len(all) != 2 {
		t.Fatalf("all agents: %d, %d", status, len(all))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGroupModeSwitch: with two processes sharing the tenants, an
// activation sent to the one that does not read the tenant reaches the one
// that does.
func TestGroupModeSwitch(t *testing.T) {
	sim, srv := e2e.Upstream(t, 6, 1, "none")
	brokers := e2e.KafkaCluster(t)
	tenants := sim.TenantIDs()
	var admins []*httptest.Server
	ctx, cancel := context.WithCancel(context.Background())
	var dones []chan error
	for i := range 2 {
		cfg := e2e.IngestConfig(srv, brokers, tenants, ingest.FormatJSON)
		cfg.Once, cfg.Group, cfg.Owner = false, "modes", fmt.Sprint("p", i)
		cfg.IdleEvery, cfg.ActiveEvery, cfg.SessionTimeout = time.Hour, 100*time.Millisecond, 2*time.Second
		r, err := ingest.NewRunner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		admin := httptest.NewServer(r.Handler(nil))
		admins = append(admins, admin)
		done := make(chan error, 1)
		dones = append(dones, done)
		go func() { done <- r.Run(ctx) }()
	}
	defer func() {
		cancel()
		for _, d := range dones {
			if err := <-d; err != nil {
				t.Errorf("run: %v", err)
			}
		}
		for _, a := range admins {
			a.Close()
		}
	}()
	// Wait until every tenant is read by exactly one of the two, and both
	// read some.
	owner := map[string]int{}
	waitFor(t, "every tenant owned once", func() bool {
		clear(owner)
		for i, a := range admins {
			_, all := agents(t, a.URL+"/v2/agents")
			for _, ag := range all {
				if ag.Owned && ag.LastSuccess != nil {
					if _, dup := owner[ag.Tenant]; dup {
						return false
					}
					owner[ag.Tenant] = i
				}
			}
		}
		per := map[int]int{}
		for _, i := range owner {
			per[i]++
		}
		return len(owner) == len(tenants) && per[0] > 0 && per[1] > 0 // both have joined
	})
	tenant := tenants[0]
	other := 1 - owner[tenant]
	if status, body := post(t, admins[other].URL+"/v2/"+tenant+"/events", `{"event":"agent_activate","mode":"real_time"}`); status != 202 {
		t.Fatalf("activate through the other process: %d %s", status, body)
	}
	waitFor(t, "the owner to switch", func() bool {
		_, a := agents(t, admins[owner[tenant]].URL+"/v2/"+tenant+"/agents")
		return a[0].Mode == ingest.ModeRealTime && a[0].Owned
	})
}
