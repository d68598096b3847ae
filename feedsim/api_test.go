package feedsim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/ingest"
)

func apiConfig() Config {
	cfg := testConfig()
	cfg.NoAuth = false
	cfg.Agents = 12
	return cfg
}

func TestAgentEvents(t *testing.T) {
	s, ts, c := start(t, apiConfig())
	tok := getToken(t, ts.URL, "demo", "demo")
	tid := s.tenants[0].id
	url := ts.URL + "/v2/" + tid + "/events"
	hdr := map[string]string{"X-Auth-Token": tok, "Content-Type": "application/json"}
	for _, tc := range []struct {
		name, url, body string
		hdr             map[string]string
		status          int
	}{
		{"active", url, `{"event":"agent_activate","mode":"active"}`, hdr, 202},
		{"idle", url, `{"event":"agent_activate","mode":"idle"}`, hdr, 202},
		{"real_time", url, `{"event":"agent_activate","mode":"real_time"}`, hdr, 202},
		{"no token", url, `{"event":"agent_activate","mode":"active"}`, nil, 401},
		{"not JSON", url, `{"event":`, hdr, 400},
		{"not an object", url, `[1]`, hdr, 400},
		{"no event", url, `{"mode":"active"}`, hdr, 400},
		{"other event", url, `{"event":"agent_deactivate","mode":"active"}`, hdr, 400},
		{"no mode", url, `{"event":"agent_activate"}`, hdr, 400},
		{"bad mode", url, `{"event":"agent_activate","mode":"busy"}`, hdr, 400},
		{"mode not a string", url, `{"event":"agent_activate","mode":1}`, hdr, 400},
		{"unknown project", ts.URL + "/v2/1/events", `{"event":"agent_activate","mode":"active"}`, hdr, 404},
	} {
		res := do(t, "POST", tc.url, tc.hdr, tc.body)
		if res.status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.name, res.status, tc.status, res.body)
		}
		if tc.status == 202 && len(res.body) != 0 {
			t.Errorf("%s: 202 with a body: %s", tc.name, res.body)
		}
	}
	if res := do(t, "GET", url, hdr, ""); res.status != http.StatusMethodNotAllowed {
		t.Errorf("GET events: %d, want 405", res.status)
	}

	// Mode and heartbeats show on the agents.
	agentURL := func(a int) string { return ts.URL + "/v2/" + tid + "/agents/" + s.tenants[0].agents[a].rid }
	type agentBody struct {
		Status, Mode  string
		Every         int    `json:"heartbeat_interval"`
		LastHeartbeat string `json:"last_heartbeat"`
	}
	getAgent := func(a int) agentBody {
		res := do(t, "GET", agentURL(a), hdr, "")
		if res.status != 200 {
			t.Fatalf("agent: %d %s", res.status, res.body)
		}
		var b agentBody
		if err := json.Unmarshal(res.body, &b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	do(t, "POST", url, hdr, `{"event":"agent_activate","mode":"active"}`)
	if b := getAgent(0); b.Mode != "active" || b.Every != 30 {
		t.Errorf("after activate: %+v", b)
	}
	c.add(s.cfg.ActiveFor + time.Second)
	if b := getAgent(0); b.Mode != "idle" || b.Every != 600 {
		t.Errorf("after the active period: %+v", b)
	}
	var online, offline int
	for a := range s.tenants[0].agents {
		switch getAgent(a).Status {
		case "online":
			online++
		case "offline":
			offline++
		default:
			t.Errorf("agent %d: status %q", a, getAgent(a).Status)
		}
	}
	if online == 0 {
		t.Errorf("%d online, %d offline", online, offline)
	}
	// An agent that stops shows offline after two cadences: soon in
	// real_time mode, only much later in idle mode.
	a := -1
	for i := range s.tenants[0].agents {
		if getAgent(i).Status == "online" {
			a = i
			break
		}
	}
	s.tenants[0].api.mu.Lock()
	s.tenants[0].api.offline[a] = c.now()
	s.tenants[0].api.mu.Unlock()
	do(t, "POST", url, hdr, `{"event":"agent_activate","mode":"real_time"}`)
	c.add(11 * time.Second)
	if b := getAgent(a); b.Status != "offline" {
		t.Errorf("stopped agent in real_time mode: %+v", b)
	}
	for _, bad := range []string{"/v2/" + tid + "/agents/00000000-0000-4000-8000-000000000000", "/v2/" + tid + "/agents/nope", "/v2/1/agents/" + s.tenants[0].agents[0].rid} {
		if res := do(t, "GET", ts.URL+bad, hdr, ""); res.status != 404 {
			t.Errorf("GET %s: %d, want 404", bad, res.status)
		}
	}
}

func TestLogFiles(t *testing.T) {
	s, ts, c := start(t, apiConfig())
	tok := getToken(t, ts.URL, "demo", "demo")
	hdr := map[string]string{"X-Auth-Token": tok}
	t0 := s.tenants[0]
	var on, off = -1, -1
	for a := range t0.agents {
		if _, _, _, online := s.agentStatus(t0, a, c.now()); online {
			on = a
		} else {
			off = a
		}
	}
	if on < 0 {
		t.Fatal("no online agent")
	}
	url := ts.URL + "/v2/" + t0.id + "/agents/" + t0.agents[on].rid + "/logfiles"
	res := do(t, "POST", url, hdr, "")
	if res.status != 202 {
		t.Fatalf("logfiles: %d %s", res.status, res.body)
	}
	var body struct {
		ID, Date, State string
		Links           []link
	}
	if err := json.Unmarshal(res.body, &body); err != nil {
		t.Fatal(err)
	}
	href := ts.URL + "/v2/agents/" + t0.agents[on].rid + "/logfiles/" + body.ID
	if body.State != "requested" || len(body.Links) != 1 || body.Links[0] != (link{href, "self"}) ||
		res.header.Get("Location") != href {
		t.Errorf("body %+v, Location %q", body, res.header.Get("Location"))
	}
	if _, err := time.Parse(time.RFC3339Nano, body.Date); err != nil {
		t.Errorf("date: %v", err)
	}
	if res := do(t, "GET", href, hdr, ""); res.status != 202 {
		t.Errorf("log before ready: %d", res.status)
	}
	c.add(s.cfg.LogReadyAfter)
	if res := do(t, "GET", href, hdr, ""); res.status != 200 || !strings.Contains(string(res.body), t0.agents[on].rid) {
		t.Errorf("log when ready: %d %.80s", res.status, res.body)
	}
	for _, tc := range []struct {
		url    string
		status int
	}{
		{ts.URL + "/v2/" + t0.id + "/agents/00000000-0000-4000-8000-000000000000/logfiles", 404},
		{ts.URL + "/v2/1/agents/" + t0.agents[on].rid + "/logfiles", 404},
	} {
		if res := do(t, "POST", tc.url, hdr, ""); res.status != tc.status {
			t.Errorf("POST %s: %d, want %d", tc.url, res.status, tc.status)
		}
	}
	if off >= 0 {
		u := ts.URL + "/v2/" + t0.id + "/agents/" + t0.agents[off].rid + "/logfiles"
		if res := do(t, "POST", u, hdr, ""); res.status != 409 {
			t.Errorf("offline agent: %d, want 409", res.status)
		}
	}
	if res := do(t, "POST", url, nil, ""); res.status != 401 {
		t.Errorf("no token: %d", res.status)
	}
}

func TestBackups(t *testing.T) {
	s, ts, c := start(t, apiConfig())
	tok := getToken(t, ts.URL, "demo", "demo")
	t0 := s.tenants[0]
	ag, other := t0.agents[0], t0.agents[1]
	url := ts.URL + "/v2/" + t0.id + "/backups"
	hdr := map[string]string{"X-Auth-Token": tok, "Content-Type": "application/json"}
	with := func(k, v string) map[string]string {
		h := map[string]string{k: v}
		for a, b := range hdr {
			h[a] = b
		}
		return h
	}
	body := func(cfg, state string) string {
		return `{"configuration_id":"` + cfg + `","state":"` + state + `"}`
	}
	for _, tc := range []struct {
		name, body string
		hdr        map[string]string
		status     int
	}{
		{"no configuration", `{"state":"start_requested"}`, hdr, 400},
		{"no state", `{"configuration_id":"` + ag.config.String() + `"}`, hdr, 400},
		{"bad state", body(ag.config.String(), "started"), hdr, 400},
		{"not JSON", `configuration_id=1`, hdr, 400},
		{"scheduled without X-Agent-Id", body(ag.config.String(), "start_scheduled"), hdr, 400},
		{"unknown configuration", body("7c8ee069-568f-4d5a-932f-fb2af86b5fd5", "start_requested"), hdr, 404},
		{"unknown agent", body(ag.config.String(), "start_scheduled"), with("X-Agent-Id", "8f135b4f-7a69-4b8a-947f-5e80d772fd97"), 404},
		{"another agent's configuration", body(ag.config.String(), "start_scheduled"), with("X-Agent-Id", other.rid), 400},
		{"no token", body(ag.config.String(), "start_requested"), map[string]string{}, 401},
	} {
		if res := do(t, "POST", url, tc.hdr, tc.body); res.status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.name, res.status, tc.status, res.body)
		}
	}
	if res := do(t, "POST", ts.URL+"/v2/1/backups", hdr, body(ag.config.String(), "start_requested")); res.status != 404 {
		t.Errorf("unknown project: %d", res.status)
	}

	res := do(t, "POST", url, with("X-Agent-Id", ag.rid), body(ag.config.String(), "start_scheduled"))
	if res.status != 201 {
		t.Fatalf("start: %d %s", res.status, res.body)
	}
	// The seed's fields, in the seed's order.
	order := []string{"project_id", "id", "agent", "configuration", "state", "started_time", "ended_time",
		"snapshot_id", "errors", "files_searched", "files_backed_up", "bytes_searched", "bytes_backed_up",
		"bytes_in_db", "bandwidth_avg_bps", "restorable", "links"}
	dec := json.NewDecoder(strings.NewReader(string(res.body)))
	dec.Token()
	for i := 0; dec.More(); i++ {
		k, _ := dec.Token()
		if i >= len(order) || k != order[i] {
			t.Fatalf("key %d is %v, want %v", i, k, order)
		}
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	var b backupJSON
	if err := json.Unmarshal(res.body, &b); err != nil {
		t.Fatal(err)
	}
	if b.ProjectID != t0.id || b.State != "start_scheduled" || b.Agent.ID != ag.rid || b.Configuration.ID != ag.config.String() ||
		b.StartedTime != nil || b.EndedTime != nil || b.SnapshotID != nil || b.Restorable ||
		res.header.Get("Location") != ts.URL+"/v2/backups/"+b.ID || len(b.Links) != 2 || b.Links[1].Rel != "events" {
		t.Errorf("backup body: %s", res.body)
	}
	if res := do(t, "POST", url, hdr, body(ag.config.String(), "start_requested")); res.status != 409 {
		t.Errorf("second backup while running: %d, want 409", res.status)
	}

	before := fetchTruth(t, ts.URL+"/_sim/truth?tenant="+t0.id).Tenants[0]
	s.Tick()
	c.add(s.cfg.BackupTime)
	s.Tick()
	res = do(t, "GET", ts.URL+"/v2/backups/"+b.ID, hdr, "")
	json.Unmarshal(res.body, &b)
	if b.State != "completed" || b.EndedTime == nil || b.BytesBackedUp == 0 || !b.Restorable {
		t.Errorf("after completion: %s", res.body)
	}
	c.add(s.cfg.HeadDelay)
	after := fetchTruth(t, ts.URL+"/_sim/truth?tenant="+t0.id).Tenants[0]
	if after.Entries != before.Entries+2 {
		t.Errorf("backup added %d entries, want 2", after.Entries-before.Entries)
	}
	p, _ := getPage(t, ts.URL+"/backup/events/"+t0.id+"?limit=2", formats[0], hdr)
	if len(p.Events) != 2 || p.Events[0].Kind != "storage" || p.Events[1].Kind != "bandwidthIn" ||
		p.Events[1].Quantity != b.BytesBackedUp || p.Events[1].ResourceID != ag.rid {
		t.Errorf("feed head after backup: %+v", p.Events)
	}
	events, rejects, ok := readAll(t, ts.URL+"/backup/events/"+t0.id, formats[1], 1000, hdr)
	if !ok {
		t.Fatal("unreadable")
	}
	compareTruth(t, after, events, rejects)
	if res := do(t, "POST", url, hdr, body(ag.config.String(), "start_requested")); res.status != 201 {
		t.Errorf("backup after completion: %d", res.status)
	}
	if res := do(t, "GET", ts.URL+"/v2/backups/00000000-0000-4000-8000-000000000000", hdr, ""); res.status != 404 {
		t.Errorf("unknown backup: %d", res.status)
	}
}

func TestExternalEvents(t *testing.T) {
	s, ts, _ := start(t, apiConfig())
	tok := getToken(t, ts.URL, "demo", "demo")
	hdr := map[string]string{"X-Auth-Token": tok, "Content-Type": "application/json"}
	var t0 *tenant
	var hosted, unhosted string
	for _, t := range s.tenants {
		hosted, unhosted = "", ""
		for _, a := range t.byServer {
			if t.agents[a].host != "" {
				hosted = t.agents[a].serverID
			} else {
				unhosted = t.agents[a].serverID
			}
		}
		if hosted != "" && unhosted != "" {
			t0 = t
			break
		}
	}
	if t0 == nil {
		t.Fatal("no tenant with a hosted and an unhosted server")
	}
	url := ts.URL + "/v2.1/" + t0.id + "/os-server-external-events"
	ev := func(name, tag, status, server string) string {
		s := `{"name":"` + name + `","tag":"` + tag + `","server_uuid":"` + server + `"`
		if status != "" {
			s += `,"status":"` + status + `"`
		}
		return s + "}"
	}
	events := func(evs ...string) string { return `{"events":[` + strings.Join(evs, ",") + `]}` }
	const missing = "3df201cf-2451-44f2-8d25-a4ca826fc1f3"
	for _, tc := range []struct {
		name, body string
		status     int
		codes      []int
	}{
		{"dispatched", events(ev("network-changed", "foo", "", hosted)), 200, []int{200}},
		{"in-progress", events(ev("network-vif-plugged", "bar", "in-progress", hosted)), 200, []int{200}},
		{"mixed", events(ev("network-vif-unplugged", "a", "failed", hosted), ev("network-changed", "b", "", missing)), 207, []int{200, 404}},
		{"not on a host", events(ev("network-vif-deleted", "c", "", unhosted), ev("network-changed", "d", "", hosted)), 207, []int{422, 200}},
		{"none found", events(ev("network-changed", "foo", "", missing)), 404, nil},
		{"seed example name", events(ev("test-event", "foo", "completed", hosted)), 400, nil},
		{"no events", `{}`, 400, nil},
		{"empty events", `{"events":[]}`, 400, nil},
		{"events not a list", `{"events":{}}`, 400, nil},
		{"extra top-level", `{"events":[` + ev("network-changed", "foo", "", hosted) + `],"x":1}`, 400, nil},
		{"extra property", events(`{"name":"network-changed","tag":"t","server_uuid":"` + hosted + `","code":200}`), 400, nil},
		{"no tag", events(`{"name":"network-changed","server_uuid":"` + hosted + `"}`), 400, nil},
		{"no name", events(`{"tag":"t","server_uuid":"` + hosted + `"}`), 400, nil},
		{"no server", events(`{"name":"network-changed","tag":"t"}`), 400, nil},
		{"bad uuid", events(ev("network-changed", "foo", "", "not-a-uuid")), 400, nil},
		{"bad status", events(ev("network-changed", "foo", "done", hosted)), 400, nil},
		{"tag not a string", events(`{"name":"network-changed","tag":1,"server_uuid":"` + hosted + `"}`), 400, nil},
		{"not JSON", `{"events":`, 400, nil},
	} {
		res := do(t, "POST", url, hdr, tc.body)
		if res.status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.name, res.status, tc.status, res.body)
			continue
		}
		if tc.codes == nil {
			continue
		}
		var out struct {
			Events []struct {
				Code                          int
				Name, Tag, Status, ServerUUID string `json:"-"`
			}
		}
		json.Unmarshal(res.body, &out)
		for i, want := range tc.codes {
			if i >= len(out.Events) || out.Events[i].Code != want {
				t.Errorf("%s: codes %s, want %v", tc.name, res.body, tc.codes)
				break
			}
		}
	}
	if res := do(t, "POST", url, nil, events(ev("network-changed", "foo", "", hosted))); res.status != 401 {
		t.Errorf("no token: %d", res.status)
	}
	// The dispatched events are in the servers feed, newest first.
	feedHdr := map[string]string{"X-Auth-Token": tok}
	s.now = func() time.Time { return testNow.Add(time.Minute) }
	for _, f := range formats {
		p, _ := getPage(t, ts.URL+"/servers/events/"+t0.id, f, feedHdr)
		if len(p.Events) != 4 || len(p.Rejects) != 0 {
			t.Fatalf("%s: servers feed: %d events %v", f.name, len(p.Events), p.Rejects)
		}
		for _, e := range p.Events {
			if e.Kind != "other" || e.ResourceID != hosted || e.EventType != "UPDATE" || e.TenantID != t0.id {
				t.Errorf("%s: servers feed entry %+v", f.name, e)
			}
		}
		if p.Links.Current != ts.URL+"/servers/events/"+t0.id {
			t.Errorf("current %q", p.Links.Current)
		}
		one, _ := getPage(t, ts.URL+"/servers/events/entries/"+p.Events[0].EntryID, f, feedHdr)
		if !one.Entry || len(one.Events) != 1 || one.Events[0] != p.Events[0] {
			t.Errorf("%s: servers entry: %+v", f.name, one.Events)
		}
	}
	_ = ingest.FormatAuto
}
