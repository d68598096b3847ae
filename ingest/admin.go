package ingest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// modeRecord is an activation sent through the tenants topic to the
// process that owns the tenant.
type modeRecord struct {
	Tenant string    `json:"tenant"`
	Mode   string    `json:"mode"`
	Until  time.Time `json:"until"`
}

// setMode switches a tenant's poll mode until a time, and wakes its slot.
func (r *Runner) setMode(tenant, mode string, until time.Time) bool {
	r.mu.Lock()
	s, ok := r.subs[tenant]
	if ok {
		s.mode, s.modeUntil = mode, until
		if next := time.Now().Add(r.interval(mode)); next.Before(s.next) {
			s.next = next
		}
	}
	r.mu.Unlock()
	if ok {
		r.wakeSlot(s.slot)
	}
	return ok
}

func (r *Runner) applyModeRecord(v []byte) {
	var m modeRecord
	if err := json.Unmarshal(v, &m); err != nil {
		r.cfg.Log.Warn("unreadable mode record", "err", err)
		return
	}
	r.setMode(m.Tenant, m.Mode, m.Until)
}

// Handler serves the admin API: POST /v2/{project_id}/events (seed 000's
// agent_activate switches a tenant's mode), GET /v2/{project_id}/agents (the
// subscription's report), GET /v2/agents (all of this process's), /healthz.
// metrics is mounted at /metrics when not nil.
func (r *Runner) Handler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/{project_id}/events", r.handleEvents)
	mux.HandleFunc("GET /v2/{project_id}/agents", r.handleAgents)
	mux.HandleFunc("GET /v2/agents", r.handleAgents)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

func writeJSONError(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": status, "message": fmt.Sprintf(format, args...)}})
}

func (r *Runner) handleEvents(w http.ResponseWriter, req *http.Request) {
	tenant := req.PathValue("project_id")
	var body struct {
		Event *string `json:"event"`
		Mode  *string `json:"mode"`
	}
	dec := json.NewDecoder(io.LimitReader(req.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeJSONError(w, http.StatusBadRequest, "the body is not a JSON object with event and mode: %v", err)
		return
	}
	switch {
	case body.Event == nil:
		writeJSONError(w, http.StatusBadRequest, "event is required")
		return
	case *body.Event != "agent_activate":
		writeJSONError(w, http.StatusBadRequest, "event %q is not supported: the only event is agent_activate", *body.Event)
		return
	case body.Mode == nil:
		writeJSONError(w, http.StatusBadRequest, "mode is required")
		return
	case !slices.Contains([]string{ModeIdle, ModeActive, ModeRealTime}, *body.Mode):
		writeJSONError(w, http.StatusBadRequest, "mode %q is not one of idle, active, real_time", *body.Mode)
		return
	}
	r.mu.Lock()
	s, ok := r.subs[tenant]
	r.mu.Unlock()
	if !ok {
		writeJSONError(w, http.StatusNotFound, "project %q has no subscription", tenant)
		return
	}
	until := time.Now().Add(r.cfg.ActivateTTL)
	if r.cfg.Group != "" && r.tenantsProducer != nil {
		// The owner may be another process: tell it through the slot's
		// partition of the tenants topic, which only the owner reads.
		v, _ := json.Marshal(modeRecord{Tenant: tenant, Mode: *body.Mode, Until: until})
		rec := &kgo.Record{Topic: r.cfg.Kafka.TenantsTopic, Partition: s.slot, Key: []byte(tenant), Value: v}
		if err := r.tenantsProducer.ProduceSync(req.Context(), rec).FirstErr(); err != nil {
			writeJSONError(w, http.StatusServiceUnavailable, "cannot reach Kafka to switch the mode: %v", err)
			return
		}
	}
	r.setMode(tenant, *body.Mode, until)
	w.WriteHeader(http.StatusAccepted)
}

// AgentReport is one subscription as GET /v2/{project_id}/agents shows it.
type AgentReport struct {
	Tenant      string     `json:"project_id"`
	Feed        string     `json:"feed"`
	Status      string     `json:"status"` // online or offline
	Owned       bool       `json:"owned"`  // read by this process
	Mode        string     `json:"mode"`
	ModeUntil   *time.Time `json:"mode_until,omitempty"`
	LastPoll    *time.Time `json:"last_poll,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LagSeconds  float64    `json:"lag_seconds"`
	Marker      string     `json:"marker,omitempty"`
	Entries     int64      `json:"entries"`
	Rejects     int64      `json:"rejects"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Agents reports the subscriptions (all, or one tenant's). A subscription
// is online while its last successful poll is within two poll intervals
// (its heartbeat).
func (r *Runner) Agents(tenant string) []AgentReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []AgentReport
	for _, s := range r.subs {
		if tenant != "" && s.tenant != tenant {
			continue
		}
		mode := s.mode
		if mode != ModeIdle && now.After(s.modeUntil) {
			mode = ModeIdle
		}
		a := AgentReport{
			Tenant: s.tenant, Feed: r.feedOf(s.tenant), Status: "offline", Owned: s.owned, Mode: mode,
			LastPoll: timePtr(s.lastPoll), LastSuccess: timePtr(s.lastSuccess), LastError: s.lastErr,
			Marker: s.cp.Marker, Entries: s.cp.Entries, Rejects: s.cp.Rejects,
		}
		if mode != ModeIdle {
			a.ModeUntil = timePtr(s.modeUntil)
		}
		if !s.lastSuccess.IsZero() {
			a.LagSeconds = now.Sub(s.lastSuccess).Seconds()
			if s.owned && now.Sub(s.lastSuccess) <= 2*r.interval(mode) {
				a.Status = "online"
			}
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b AgentReport) int { return strings.Compare(a.Tenant, b.Tenant) })
	return out
}

func (r *Runner) handleAgents(w http.ResponseWriter, req *http.Request) {
	tenant := req.PathValue("project_id")
	agents := r.Agents(tenant)
	if tenant != "" && len(agents) == 0 {
		writeJSONError(w, http.StatusNotFound, "project %q has no subscription", tenant)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"agents": agents})
}
