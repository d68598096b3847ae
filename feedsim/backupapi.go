package feedsim

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The Cloud Backup v2 API of seeds 000 (agent_activate), 001 (log files)
// and 004 (start a backup), and an agent resource that shows whether the
// agent is online from its heartbeats.

// Heartbeat cadence by agent mode.
var heartbeatEvery = map[string]time.Duration{
	"idle":      10 * time.Minute,
	"active":    30 * time.Second,
	"real_time": 5 * time.Second,
}

// apiState is a tenant's Cloud Backup API state.
type apiState struct {
	mu        sync.Mutex
	mode      string    // "" is idle
	modeUntil time.Time // when a non-idle mode falls back to idle
	modeSince time.Time
	logs      map[uuid]*logFile
	backups   map[uuid]*backup
	running   map[uuid]uuid // configuration → running backup
	offline   map[int]time.Time
}

type logFile struct {
	id, agent uuid
	requested time.Time
}

type backup struct {
	id, agent, config    uuid
	tenant               *tenant
	state                string
	created              time.Time
	started, ended       time.Time
	snapshot             uuid
	bytes, searched      uint64
	files, filesSearched uint64
}

// apiGlobal is the API state shared by tenants.
type apiGlobal struct {
	mu      sync.Mutex
	rng     *rng
	began   time.Time
	backups map[uuid]*backup
	pending []*backup // not completed yet, in creation order
}

func (g *apiGlobal) init(seed uint64) {
	g.rng = newRNG(seed, streamAPI)
	g.backups = map[uuid]*backup{}
}

// initAPI sets up the API state once, on the first call of Handler: agents
// that stopped long before, and agents that stop a few minutes after.
func (s *Server) initAPI() {
	s.api.began = s.now()
	for _, t := range s.tenants {
		t.api.logs = map[uuid]*logFile{}
		t.api.backups = map[uuid]*backup{}
		t.api.running = map[uuid]uuid{}
		t.api.offline = map[int]time.Time{}
		// Some agents stopped long ago, some stop a while after start.
		for i, ag := range t.agents {
			switch h := ag.id.hash(0x6f66666c696e65) % 10; {
			case h == 0:
				t.api.offline[i] = s.api.began.Add(-36 * time.Hour)
			case h == 1:
				t.api.offline[i] = s.api.began.Add(time.Duration(1+ag.id.hash(1)%20) * time.Minute)
			}
		}
	}
}

func (s *Server) apiRoutes(mux *http.ServeMux) {
	s.apiOnce.Do(s.initAPI)
	mux.Handle("POST /v2/{project_id}/events", s.service(s.handleAgentEvents))
	mux.Handle("GET /v2/{project_id}/agents/{agent_id}", s.service(s.handleAgent))
	mux.Handle("POST /v2/{project_id}/agents/{agent_id}/logfiles", s.service(s.handleLogRequest))
	mux.Handle("GET /v2/{project_id}/agents/{agent_id}/logfiles/{id}", s.service(s.handleLogFile))
	mux.Handle("GET /v2/agents/{agent_id}/logfiles/{id}", s.service(s.handleLogFile))
	mux.Handle("POST /v2/{project_id}/backups", s.service(s.handleStartBackup))
	mux.Handle("GET /v2/{project_id}/backups/{id}", s.service(s.handleBackup))
	mux.Handle("GET /v2/backups/{id}", s.service(s.handleBackup))
	mux.Handle("POST /v2.1/{tenant_id}/os-server-external-events", s.service(s.handleExternalEvents))
}

// apiError writes the Cloud Backup API's error body.
func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "message": msg}})
}

// decodeBody decodes a JSON request body into v; the body must be one
// JSON object.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errBadJSON
	}
	return nil
}

var errBadJSON = jsonError("data after the JSON object")

type jsonError string

func (e jsonError) Error() string { return string(e) }

func (s *Server) project(w http.ResponseWriter, r *http.Request, param string) *tenant {
	t := s.byID[r.PathValue(param)]
	if t == nil {
		apiError(w, http.StatusNotFound, "project "+r.PathValue(param)+" not found")
	}
	return t
}

func (t *tenant) agentByText(id string) (int, bool) {
	u, ok := parseUUID(id)
	if !ok {
		return 0, false
	}
	i, ok := t.byAgent[u]
	return i, ok
}

// handleAgentEvents is POST /v2/{project_id}/events (seed 000).
func (s *Server) handleAgentEvents(w http.ResponseWriter, r *http.Request, drop bool) {
	t := s.project(w, r, "project_id")
	if t == nil {
		return
	}
	var req struct {
		Event *string `json:"event"`
		Mode  *string `json:"mode"`
	}
	if err := decodeBody(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, "request body is not a JSON object: "+err.Error())
		return
	}
	switch {
	case req.Event == nil:
		apiError(w, http.StatusBadRequest, "event is required")
		return
	case *req.Event != "agent_activate":
		apiError(w, http.StatusBadRequest, "event "+quote(*req.Event)+" is not agent_activate")
		return
	case req.Mode == nil:
		apiError(w, http.StatusBadRequest, "mode is required")
		return
	}
	if _, ok := heartbeatEvery[*req.Mode]; !ok {
		apiError(w, http.StatusBadRequest, "mode "+quote(*req.Mode)+" is not one of idle, active, real_time")
		return
	}
	now := s.now()
	t.api.mu.Lock()
	t.api.mode, t.api.modeSince, t.api.modeUntil = *req.Mode, now, now.Add(s.cfg.ActiveFor)
	t.api.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func quote(s string) string { return string(appendJSONStr(nil, s)) }

// agentStatus returns an agent's mode, cadence, last heartbeat and whether
// it shows online: a heartbeat within two cadences. An agent that stopped
// keeps showing online until then, which is why idle mode makes the status
// unreliable.
func (s *Server) agentStatus(t *tenant, a int, now time.Time) (mode string, every time.Duration, last time.Time, online bool) {
	t.api.mu.Lock()
	mode = t.api.mode
	if mode == "" || now.After(t.api.modeUntil) {
		mode = "idle"
	}
	since := t.api.modeSince
	off, stopped := t.api.offline[a]
	t.api.mu.Unlock()
	every = heartbeatEvery[mode]
	// Heartbeats fall on multiples of the cadence from a per-agent phase,
	// or from the mode's start when it is not idle.
	phase := s.api.began.Add(-time.Duration(t.agents[a].id.hash(2) % uint64(every)))
	if mode != "idle" {
		phase = since
	}
	until := now
	if stopped && off.Before(now) {
		until = off
	}
	if until.Before(phase) {
		last = until
	} else {
		last = phase.Add(until.Sub(phase) / every * every)
	}
	return mode, every, last, now.Sub(last) <= 2*every
}

type link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

// handleAgent is GET /v2/{project_id}/agents/{agent_id}.
func (s *Server) handleAgent(w http.ResponseWriter, r *http.Request, drop bool) {
	t := s.project(w, r, "project_id")
	if t == nil {
		return
	}
	a, ok := t.agentByText(r.PathValue("agent_id"))
	if !ok {
		apiError(w, http.StatusNotFound, "agent "+r.PathValue("agent_id")+" not found")
		return
	}
	ag := t.agents[a]
	mode, every, last, online := s.agentStatus(t, a, s.now())
	status := "offline"
	if online {
		status = "online"
	}
	writeJSON(w, http.StatusOK, struct {
		ProjectID     string `json:"project_id"`
		ID            string `json:"id"`
		Name          string `json:"name"`
		ServerID      string `json:"server_id"`
		External      bool   `json:"external"`
		Status        string `json:"status"`
		Mode          string `json:"mode"`
		HeartbeatSecs int    `json:"heartbeat_interval"`
		LastHeartbeat string `json:"last_heartbeat"`
		Configuration string `json:"configuration_id"`
		Links         []link `json:"links"`
	}{t.id, ag.rid, ag.serverName, ag.serverID, ag.external, status, mode, int(every / time.Second),
		last.UTC().Format("2006-01-02T15:04:05.000Z"), ag.config.String(),
		[]link{{baseURL(r) + "/v2/agents/" + ag.rid, "self"}}})
}

// handleLogRequest is POST /v2/{project_id}/agents/{agent_id}/logfiles
// (seed 001): 202 with the log file resource and its Location.
func (s *Server) handleLogRequest(w http.ResponseWriter, r *http.Request, drop bool) {
	t := s.project(w, r, "project_id")
	if t == nil {
		return
	}
	a, ok := t.agentByText(r.PathValue("agent_id"))
	if !ok {
		apiError(w, http.StatusNotFound, "agent "+r.PathValue("agent_id")+" not found")
		return
	}
	now := s.now()
	if _, _, _, online := s.agentStatus(t, a, now); !online {
		apiError(w, http.StatusConflict, "agent "+t.agents[a].rid+" is offline")
		return
	}
	s.api.mu.Lock()
	lf := &logFile{id: s.api.rng.uuid(), agent: t.agents[a].id, requested: now}
	s.api.mu.Unlock()
	t.api.mu.Lock()
	t.api.logs[lf.id] = lf
	t.api.mu.Unlock()
	href := baseURL(r) + "/v2/agents/" + t.agents[a].rid + "/logfiles/" + lf.id.String()
	w.Header().Set("Location", href)
	writeJSON(w, http.StatusAccepted, logBody(lf, "requested", href))
}

func logBody(lf *logFile, state, href string) any {
	return struct {
		ID    string `json:"id"`
		Date  string `json:"date"`
		State string `json:"state"`
		Links []link `json:"links"`
	}{lf.id.String(), lf.requested.UTC().Format("2006-01-02T15:04:05.000000Z"), state, []link{{href, "self"}}}
}

// handleLogFile serves a requested log: 202 with the resource while it is
// being uploaded, then the log itself as text.
func (s *Server) handleLogFile(w http.ResponseWriter, r *http.Request, drop bool) {
	id, ok := parseUUID(r.PathValue("id"))
	var lf *logFile
	var t *tenant
	if ok {
		for _, tt := range s.tenants {
			if p := r.PathValue("project_id"); p != "" && p != tt.id {
				continue
			}
			tt.api.mu.Lock()
			lf = tt.api.logs[id]
			tt.api.mu.Unlock()
			if lf != nil {
				t = tt
				break
			}
		}
	}
	if lf == nil || lf.agent.String() != strings.ToLower(r.PathValue("agent_id")) {
		apiError(w, http.StatusNotFound, "log file "+r.PathValue("id")+" not found")
		return
	}
	now := s.now()
	href := baseURL(r) + "/v2/agents/" + lf.agent.String() + "/logfiles/" + lf.id.String()
	if now.Sub(lf.requested) < s.cfg.LogReadyAfter {
		writeJSON(w, http.StatusAccepted, logBody(lf, "requested", href))
		return
	}
	ag := t.agents[t.byAgent[lf.agent]]
	var b []byte
	for k := 0; k < 20; k++ {
		at := lf.requested.Add(time.Duration(k-20) * time.Minute).UTC()
		b = append(b, at.Format("2006-01-02 15:04:05,000")...)
		b = append(b, " INFO  [agent "+ag.rid+"] "...)
		b = append(b, []string{"heartbeat sent", "checking for events", "backup schedule evaluated", "vault synchronized"}[k%4]...)
		b = append(b, '\n')
	}
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", b, drop)
}

// handleStartBackup is POST /v2/{project_id}/backups (seed 004).
func (s *Server) handleStartBackup(w http.ResponseWriter, r *http.Request, drop bool) {
	t := s.project(w, r, "project_id")
	if t == nil {
		return
	}
	var req struct {
		ConfigurationID *string `json:"configuration_id"`
		State           *string `json:"state"`
	}
	if err := decodeBody(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, "request body is not a JSON object: "+err.Error())
		return
	}
	switch {
	case req.ConfigurationID == nil || *req.ConfigurationID == "":
		apiError(w, http.StatusBadRequest, "configuration_id is required")
		return
	case req.State == nil:
		apiError(w, http.StatusBadRequest, "state is required")
		return
	case *req.State != "start_requested" && *req.State != "start_scheduled":
		apiError(w, http.StatusBadRequest, "state "+quote(*req.State)+" is not one of start_requested, start_scheduled")
		return
	}
	agentHdr := r.Header.Get("X-Agent-Id")
	if *req.State == "start_scheduled" && agentHdr == "" {
		apiError(w, http.StatusBadRequest, "start_scheduled requires the X-Agent-Id header")
		return
	}
	cfgID, ok := parseUUID(*req.ConfigurationID)
	a := -1
	if ok {
		for i, ag := range t.agents {
			if ag.config == cfgID {
				a = i
			}
		}
	}
	if a < 0 {
		apiError(w, http.StatusNotFound, "configuration "+*req.ConfigurationID+" not found")
		return
	}
	if agentHdr != "" {
		h, ok := t.agentByText(agentHdr)
		if !ok {
			apiError(w, http.StatusNotFound, "agent "+agentHdr+" not found")
			return
		}
		if h != a {
			apiError(w, http.StatusBadRequest, "configuration "+*req.ConfigurationID+" does not belong to agent "+agentHdr)
			return
		}
	}
	now := s.now()
	ag := t.agents[a]
	s.api.mu.Lock()
	b := &backup{id: s.api.rng.uuid(), agent: ag.id, config: cfgID, tenant: t, state: *req.State, created: now}
	b.bytes = s.api.rng.logUniform(1<<20, 20<<30)
	b.searched = b.bytes + s.api.rng.logUniform(1<<20, 200<<30)
	b.files = s.api.rng.logUniform(1, 100_000)
	b.filesSearched = b.files + s.api.rng.logUniform(1, 1_000_000)
	b.snapshot = s.api.rng.uuid()
	t.api.mu.Lock()
	if running, busy := t.api.running[cfgID]; busy {
		t.api.mu.Unlock()
		s.api.mu.Unlock()
		apiError(w, http.StatusConflict, "backup "+running.String()+" of configuration "+cfgID.String()+" is running")
		return
	}
	t.api.running[cfgID] = b.id
	t.api.backups[b.id] = b
	t.api.mu.Unlock()
	s.api.backups[b.id] = b
	s.api.pending = append(s.api.pending, b)
	s.api.mu.Unlock()
	base := baseURL(r)
	w.Header().Set("Location", base+"/v2/backups/"+b.id.String())
	writeJSONIndent4(w, http.StatusCreated, backupBody(base, b))
}

// backupJSON is the seed's backup body, its fields in the seed's order.
type backupJSON struct {
	ProjectID string `json:"project_id"`
	ID        string `json:"id"`
	Agent     struct {
		ID    string `json:"id"`
		Links []link `json:"links"`
	} `json:"agent"`
	Configuration struct {
		ID    string `json:"id"`
		Links []link `json:"links"`
	} `json:"configuration"`
	State       string  `json:"state"`
	StartedTime *string `json:"started_time"`
	EndedTime   *string `json:"ended_time"`
	SnapshotID  *string `json:"snapshot_id"`
	Errors      struct {
		Count       int    `json:"count"`
		Reason      string `json:"reason"`
		Diagnostics string `json:"diagnostics"`
		Links       []link `json:"links"`
	} `json:"errors"`
	FilesSearched   uint64 `json:"files_searched"`
	FilesBackedUp   uint64 `json:"files_backed_up"`
	BytesSearched   uint64 `json:"bytes_searched"`
	BytesBackedUp   uint64 `json:"bytes_backed_up"`
	BytesInDB       uint64 `json:"bytes_in_db"`
	BandwidthAvgBps uint64 `json:"bandwidth_avg_bps"`
	Restorable      bool   `json:"restorable"`
	Links           []link `json:"links"`
}

func backupBody(base string, b *backup) backupJSON {
	var j backupJSON
	j.ProjectID = b.tenant.id
	j.ID = b.id.String()
	j.Agent.ID = b.agent.String()
	j.Agent.Links = []link{{base + "/v2/agents/" + j.Agent.ID, "full"}}
	j.Configuration.ID = b.config.String()
	j.Configuration.Links = []link{{base + "/v2/configurations/" + j.Configuration.ID, "full"}}
	j.State = b.state
	j.Errors.Links = []link{{base + "/v2/backups/" + j.ID + "/errors", "full"}}
	j.Links = []link{{base + "/v2/backups/" + j.ID, "self"}, {base + "/v2/backups/" + j.ID + "/events", "events"}}
	if !b.started.IsZero() {
		st := b.started.UTC().Format(time.RFC3339)
		j.StartedTime = &st
	}
	if !b.ended.IsZero() {
		et := b.ended.UTC().Format(time.RFC3339)
		snap := b.snapshot.String()
		j.EndedTime, j.SnapshotID = &et, &snap
		j.FilesSearched, j.FilesBackedUp = b.filesSearched, b.files
		j.BytesSearched, j.BytesBackedUp, j.BytesInDB = b.searched, b.bytes, b.bytes
		if secs := uint64(b.ended.Sub(b.started) / time.Second); secs > 0 {
			j.BandwidthAvgBps = b.bytes / secs
		}
		j.Restorable = true
	}
	return j
}

func writeJSONIndent4(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBody(w, status, "application/json", append(b, '\n'), false)
}

// handleBackup is GET /v2/backups/{id}: the backup as it is now.
func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request, drop bool) {
	id, ok := parseUUID(r.PathValue("id"))
	s.api.mu.Lock()
	b := s.api.backups[id]
	s.api.mu.Unlock()
	if !ok || b == nil || (r.PathValue("project_id") != "" && r.PathValue("project_id") != b.tenant.id) {
		apiError(w, http.StatusNotFound, "backup "+r.PathValue("id")+" not found")
		return
	}
	b.tenant.api.mu.Lock()
	body := backupBody(baseURL(r), b)
	b.tenant.api.mu.Unlock()
	writeJSONIndent4(w, http.StatusOK, body)
}

// completeBackups moves backups along: a requested backup starts at once
// and completes BackupTime later, adding its bandwidthIn and storage usage
// to the tenant's feed.
func (s *Server) completeBackups(now time.Time) {
	s.api.mu.Lock()
	defer s.api.mu.Unlock()
	pending := s.api.pending[:0]
	for _, b := range s.api.pending {
		t := b.tenant
		t.api.mu.Lock()
		if b.started.IsZero() {
			b.started = b.created
			b.state = "in_progress"
		}
		done := !now.Before(b.started.Add(s.cfg.BackupTime))
		if done {
			b.ended = now
			if !b.ended.After(b.started) {
				b.ended = b.started.Add(time.Second)
			}
			b.state = "completed"
			delete(t.api.running, b.config)
		}
		t.api.mu.Unlock()
		if !done {
			pending = append(pending, b)
			continue
		}
		a := t.byAgent[b.agent]
		ag := t.agents[a]
		start, end := b.started.Unix(), b.ended.Unix()
		if end <= start {
			end = start + 1
		}
		t.backup.add(s.api.rng, entry{kind: kBandwidthIn, agent: uint16(a), start: start, dur: uint32(end - start), value: b.bytes}, now)
		// Only Tick's goroutine changes an agent's storage after generation.
		ag.storage += b.bytes
		t.backup.add(s.api.rng, entry{kind: kStorage, agent: uint16(a), start: start, dur: uint32(end - start), value: ag.storage}, now)
		s.log.Info("feedsim backup completed", "tenant", t.id, "backup", b.id.String(), "bytes", b.bytes)
	}
	clear(s.api.pending[len(pending):])
	s.api.pending = pending
}
