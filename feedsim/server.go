package feedsim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server is the simulator. Create it with New, serve Handler, and call Run
// for live mode and the APIs' timed effects.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time // the clock; tests replace it
	tenants []*tenant
	byID    map[string]*tenant
	start   int64 // Unix s of the first generated day

	ident identity

	fmu     sync.Mutex
	faults  Faults
	frng    *rng
	thresh  uint64 // malformed hash threshold, read with fmu
	liveMu  sync.Mutex
	live    *rng
	carry   float64   // fractional live entries owed
	lastRun time.Time // last live tick

	api     apiGlobal
	apiOnce sync.Once

	bufs sync.Pool
}

// New generates the tenants of cfg and returns a Server that serves them.
// log may be nil (no logging).
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid feedsim config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:  cfg,
		log:  log,
		now:  time.Now,
		frng: newRNG(cfg.Seed, streamFaults),
		live: newRNG(cfg.Seed, streamLive),
	}
	if !cfg.Start.IsZero() {
		s.start = cfg.Start.UTC().Truncate(24 * time.Hour).Unix()
	}
	began := time.Now()
	s.tenants = generate(&s.cfg)
	s.byID = make(map[string]*tenant, len(s.tenants))
	n := 0
	for _, t := range s.tenants {
		s.byID[t.id] = t
		n += len(t.backup.entries)
	}
	s.setFaults(cfg.Faults)
	s.ident.init(cfg.Users, cfg.TokenTTL)
	s.api.init(cfg.Seed)
	log.Info("feedsim generated", "tenants", len(s.tenants), "entries", n,
		"days", cfg.Days, "seed", cfg.Seed, "took", time.Since(began).Round(time.Millisecond))
	if end := time.Unix(s.start+int64(cfg.Days)*86400, 0); cfg.Days > 0 && end.After(time.Now()) {
		log.Warn("feedsim history reaches into the future: entries appear as their publication time comes",
			"history_ends", end.UTC().Format(time.RFC3339))
	}
	return s, nil
}

// TenantIDs returns the tenant ids in generation order.
func (s *Server) TenantIDs() []string {
	ids := make([]string, len(s.tenants))
	for i, t := range s.tenants {
		ids[i] = t.id
	}
	return ids
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.faults
}

// SetFaults replaces the faults in force. Entries already served keep the
// shape they were served in.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.setFaults(f)
	s.log.Info("feedsim faults set", "faults", f.String())
	return nil
}

func (s *Server) setFaults(f Faults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f
	switch {
	case f.Malformed <= 0:
		s.thresh = 0
	case f.Malformed >= 1:
		s.thresh = math.MaxUint64
	default:
		s.thresh = uint64(f.Malformed * (1 << 64))
	}
}

func (s *Server) threshold() uint64 {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.thresh
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2.0/tokens", s.handleTokens)
	for _, name := range []string{"backup", "servers"} {
		mux.Handle("GET /"+name+"/events/{tid}", s.service(s.handleFeed))
		mux.Handle("GET /"+name+"/events/{tid}/entries/{id}", s.service(s.handleEntry))
		mux.Handle("GET /"+name+"/events/entries/{id}", s.service(s.handleEntry))
	}
	s.apiRoutes(mux)
	mux.HandleFunc("GET /_sim/tenants", s.handleTenants)
	mux.HandleFunc("GET /_sim/truth", s.handleTruth)
	mux.HandleFunc("GET /_sim/faults", s.handleGetFaults)
	mux.HandleFunc("PUT /_sim/faults", s.handlePutFaults)
	return s.logged(mux)
}

// logged logs every request at debug level.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), slog.LevelDebug) {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		began := time.Now()
		defer func() {
			s.log.Debug("request", "method", r.Method, "uri", r.RequestURI, "status", sw.status,
				"bytes", sw.n, "took", time.Since(began))
		}()
		h.ServeHTTP(sw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	n      int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += n
	return n, err
}
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// service wraps a route of the emulated services: it checks the token and
// injects the request faults.
func (s *Server) service(h func(w http.ResponseWriter, r *http.Request, drop bool)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js := wantsJSON(r) || !isFeedPath(r) // the APIs speak JSON only
		tok, ok := s.authorize(w, r, js)
		if !ok {
			return
		}
		drop, done := s.injectFault(w, r, tok, js)
		if done {
			return
		}
		h(w, r, drop)
	})
}

// wantsJSON reports whether the client asked for JSON.
func wantsJSON(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return strings.Contains(a, "application/vnd.rackspace.atom+json") || strings.Contains(a, "application/json")
}

// baseURL is the scheme and host the request reached, for absolute links.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

func (s *Server) getBuf() *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

func (s *Server) putBuf(b *[]byte) {
	if cap(*b) > 8<<20 {
		return
	}
	*b = (*b)[:0]
	s.bufs.Put(b)
}

// writeBody writes a complete response; with drop it writes about half of
// the body and then aborts the connection, as a proxy that dies mid-body
// would.
func writeBody(w http.ResponseWriter, status int, ctype string, body []byte, drop bool) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if !drop {
		w.Write(body)
		return
	}
	w.Write(body[:len(body)/2])
	http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// writeJSON writes v as an indented JSON document.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeBody(w, status, "application/json", append(b, '\n'), false)
}

// writeFeedError writes an error the way Atom Hopper does, in the format
// the client asked for.
func writeFeedError(w http.ResponseWriter, status int, msg string, js bool) {
	if js {
		b := []byte(`{"error":{"code":`)
		b = appendUint(b, uint64(status))
		b = append(b, `,"message":`...)
		b = appendJSONStr(b, msg)
		b = append(b, "}}\n"...)
		writeBody(w, status, "application/json", b, false)
		return
	}
	b := []byte(xmlHeader + `<error xmlns="http://abdera.apache.org"><code>`)
	b = appendUint(b, uint64(status))
	b = append(b, "</code><message>"...)
	b = appendXMLAttr(b, msg)
	b = append(b, "</message></error>\n"...)
	writeBody(w, status, "application/xml", b, false)
}

// Run drives live mode and the APIs' timed effects (completing backups)
// until ctx is done. It returns nil then.
func (s *Server) Run(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	s.liveMu.Lock()
	s.lastRun = s.now()
	s.liveMu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.Tick()
		}
	}
}

// Tick does what is due at the current time: live entries owed since the
// last tick and backups that have completed. Run calls it ten times a
// second; tests call it directly.
func (s *Server) Tick() {
	now := s.now()
	s.tickLive(now)
	s.completeBackups(now)
}

// handleTenants is GET /_sim/tenants: the tenants, with their agents (the
// ids the Cloud Backup and Nova APIs take).
func (s *Server) handleTenants(w http.ResponseWriter, r *http.Request) {
	type agentInfo struct {
		ID            string `json:"id"`
		ServerID      string `json:"server_id"`
		ServerName    string `json:"server_name"`
		External      bool   `json:"external"`
		Hourly        bool   `json:"hourly"`
		Configuration string `json:"configuration_id"`
		Host          string `json:"host,omitempty"` // Nova host; servers without one get 422
	}
	type tenantInfo struct {
		ID      string      `json:"id"`
		Region  string      `json:"region"`
		Entries int         `json:"entries"`
		Agents  []agentInfo `json:"agents"`
	}
	out := struct {
		Tenants []tenantInfo `json:"tenants"`
	}{Tenants: []tenantInfo{}}
	for _, t := range s.tenants {
		t.backup.mu.RLock()
		n := len(t.backup.entries)
		t.backup.mu.RUnlock()
		ti := tenantInfo{ID: t.id, Region: t.region, Entries: n}
		for _, a := range t.agents {
			ti.Agents = append(ti.Agents, agentInfo{a.rid, a.serverID, a.serverName, a.external, a.hourly, a.config.String(), a.host})
		}
		out.Tenants = append(out.Tenants, ti)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetFaults(w http.ResponseWriter, r *http.Request) {
	f := s.Faults()
	writeJSON(w, http.StatusOK, map[string]any{"faults": f.Map(), "spec": f.String()})
}

// handlePutFaults replaces the faults from a JSON object
// ({"429":0.05,"malformed":0.001}) or the flag syntax (429=0.05,…); faults
// not named are turned off.
func (s *Server) handlePutFaults(w http.ResponseWriter, r *http.Request) {
	var body [4096]byte
	n, _ := readAtMost(r, body[:])
	text := strings.TrimSpace(string(body[:n]))
	var f Faults
	var err error
	if strings.HasPrefix(text, "{") {
		var m map[string]float64
		if err = json.Unmarshal([]byte(text), &m); err == nil {
			f, err = faultsFromMap(m)
		}
	} else {
		f, err = ParseFaults(text)
	}
	if err == nil {
		err = s.SetFaults(f)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	s.handleGetFaults(w, r)
}

func readAtMost(r *http.Request, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Body.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
