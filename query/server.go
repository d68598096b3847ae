package query

import (
	"context"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server. The zero value of every optional field means
// its default, stated beside it.
type Config struct {
	Store  Store     // required: where usage is read (NewClickHouse)
	Rates  *RateCard // required: prices for invoices
	Tokens *Tokens   // required: who may read what (replace later with SetTokens)

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // where metrics are registered; default a registry of the Server's own (see Gatherer)
	// QueryTimeout bounds the store's work for one request; past it the
	// answer is 503. Default 10 s.
	QueryTimeout time.Duration
	// Now is the clock that picks the current month when a request names
	// no period; default time.Now.
	Now func() time.Time
}

// Validate reports every missing required field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("no store"))
	}
	if c.Rates == nil {
		errs = append(errs, errors.New("no rate card"))
	}
	if c.Tokens == nil {
		errs = append(errs, errors.New("no tokens"))
	}
	if c.QueryTimeout < 0 {
		errs = append(errs, errors.New("negative query timeout"))
	}
	return errors.Join(errs...)
}

// Server is the HTTP API and the usage page.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  Store
	rates  atomic.Pointer[RateCard]
	tokens atomic.Pointer[Tokens]
	mux    *http.ServeMux
	gath   prometheus.Gatherer
	m      *metrics
}

// Route is one endpoint of the API, as the OpenAPI document lists it.
type Route struct {
	Method, Path string   // Path in OpenAPI form: /v1/tenants/{tid}/usage
	Auth         string   // "none", "token" (any), "tenant" (the tenant's or an admin's) or "admin"
	Params       []string // the query parameters it takes; any other is a 400
}

// Routes lists the API's endpoints (not the usage page's assets).
var Routes = []Route{
	{"GET", "/v1/tenants/{tid}/usage", "tenant", []string{"from", "to", "period", "granularity", "kind", "group_by", "tz", "format"}},
	{"GET", "/v1/tenants/{tid}/invoice", "tenant", []string{"period", "from", "to", "tz", "format"}},
	{"GET", "/v1/tenants/{tid}/events", "tenant", []string{"from", "to", "period", "kind", "limit", "cursor", "tz", "format"}},
	{"GET", "/v1/usage/tenants", "admin", []string{"from", "to", "period", "kind", "limit", "format"}},
	{"GET", "/v1/whoami", "token", nil},
	{"GET", "/healthz", "none", nil},
	{"GET", "/readyz", "none", nil},
	{"GET", "/metrics", "none", nil},
	{"GET", "/openapi.yaml", "none", nil},
}

// routeParams returns the query parameters of the route at path.
func routeParams(path string) []string {
	for _, r := range Routes {
		if r.Path == path {
			return r.Params
		}
	}
	panic("no route " + path)
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("query config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, store: cfg.Store, mux: http.NewServeMux()}
	s.tokens.Store(cfg.Tokens)
	s.rates.Store(cfg.Rates)
	reg := cfg.Registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg, s.gath = r, r
	} else if g, ok := reg.(prometheus.Gatherer); ok {
		s.gath = g
	}
	s.m = newMetrics(reg)
	if col, ok := cfg.Store.(prometheus.Collector); ok {
		reg.MustRegister(col)
	}
	handlers := map[string]http.HandlerFunc{
		"/v1/tenants/{tid}/usage":   s.tenantRoute(s.usage),
		"/v1/tenants/{tid}/invoice": s.tenantRoute(s.invoice),
		"/v1/tenants/{tid}/events":  s.tenantRoute(s.events),
		"/v1/usage/tenants":         s.adminRoute(s.topTenants),
		"/v1/whoami":                s.whoami,
		"/healthz":                  s.healthz,
		"/readyz":                   s.readyz,
		"/metrics":                  s.metricsHandler(),
		"/openapi.yaml":             s.openapi,
	}
	for _, rt := range Routes {
		h, ok := handlers[rt.Path]
		if !ok {
			return nil, fmt.Errorf("route %s has no handler", rt.Path)
		}
		pattern := rt.Method + " " + rt.Path
		s.mux.Handle(pattern, s.instrument(pattern, h))
	}
	s.mux.Handle("GET /{$}", s.instrument("GET /", http.HandlerFunc(s.page)))
	s.mux.Handle("GET /ui/{file}", s.instrument("GET /ui/", http.HandlerFunc(s.asset)))
	s.mux.Handle("/", s.instrument("other", http.HandlerFunc(s.notFound)))
	return s, nil
}

// SetTokens replaces the tokens (after the file changed); requests that
// started before keep the old ones.
func (s *Server) SetTokens(t *Tokens) { s.tokens.Store(t) }

// SetRates replaces the rate card the same way.
func (s *Server) SetRates(rc *RateCard) { s.rates.Store(rc) }

// Gatherer returns the registry the metrics are in (nil when
// Config.Registerer is not also a Gatherer).
func (s *Server) Gatherer() prometheus.Gatherer { return s.gath }

// ServeHTTP serves the API and the page. A panic in a handler is logged
// with its stack and answered 500 without details.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeError(w, http.StatusInternalServerError, "internal", "", "internal error")
		}
	}()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

// tenantRoute checks the token (401), the tenant id (400) and that the
// token may read that tenant (403) before h runs.
func (s *Server) tenantRoute(h func(w http.ResponseWriter, r *http.Request, tenant string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		tenant := r.PathValue("tid")
		if !tenantID.MatchString(tenant) {
			writeError(w, http.StatusBadRequest, "bad_parameter", "tid", fmt.Sprintf("%q is not a tenant id (letters, digits, . _ : -, at most 64)", printable(tenant)))
			return
		}
		if !p.mayRead(tenant) {
			writeError(w, http.StatusForbidden, "forbidden", "", "this token may not read tenant "+tenant)
			return
		}
		h(w, r, tenant)
	}
}

func (s *Server) adminRoute(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if !p.Admin {
			writeError(w, http.StatusForbidden, "forbidden", "", "this endpoint needs an admin token")
			return
		}
		h(w, r)
	}
}

// authenticate returns the principal of the request's bearer token, or
// answers 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	tok, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="feedmeter"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "", "missing bearer token (Authorization: Bearer <token>)")
		return Principal{}, false
	}
	p, ok := s.tokens.Load().Lookup(tok)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="feedmeter", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "", "unknown token")
		return Principal{}, false
	}
	return p, true
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if _, err := parseParams(r.URL.RawQuery, routeParams("/v1/whoami")...); err != nil {
		s.fail(w, r, err)
		return
	}
	out := map[string]any{"admin": p.Admin}
	if !p.Admin {
		out["tenant_id"] = p.Tenant
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when ClickHouse answers within 2 s and the database
// holds the tables the service reads.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		msg := "clickhouse does not answer"
		var nr *NotReadyError
		if ex := (*clickhouse.Exception)(nil); errors.As(err, &ex) && ex.Code == 81 {
			msg = "the database does not exist yet (" + ex.Message + "): feedmeter migrate, or the sink when it starts, makes it"
		} else if errors.As(err, &nr) {
			msg = nr.Reason
		}
		s.log.Warn("readyz: "+msg, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) metricsHandler() http.HandlerFunc {
	if s.gath == nil {
		return func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "", "metrics are registered elsewhere")
		}
	}
	return promhttp.HandlerFor(s.gath, promhttp.HandlerOpts{}).ServeHTTP
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openAPIDoc)
}

// notFound answers every request no route takes: 405 when the path exists
// for GET, else 404.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		probe := r.Clone(r.Context())
		probe.Method = http.MethodGet
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "", r.Method+" is not allowed here; use GET")
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found", "", "no such route")
}

// fail answers an error: 400 for a bad parameter, 503 when the store is
// unreachable, busy or too slow, 500 for anything else (logged; the body
// says nothing more).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var pe *ParamError
	switch {
	case errors.As(err, &pe):
		writeError(w, http.StatusBadRequest, "bad_parameter", pe.Param, pe.Error())
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	case unavailable(err):
		s.m.storeErrors.Inc()
		s.log.Warn("store unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", "usage store unavailable; try again")
	default:
		s.m.storeErrors.Inc()
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "", "internal error")
	}
}

// unavailable reports whether err means ClickHouse cannot answer now
// (down, unreachable, overloaded, too slow) rather than a broken query.
func unavailable(err error) bool {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case 60, // UNKNOWN_TABLE: a rollup being rebuilt (schemas 0005), or no migrations yet
			81,  // UNKNOWN_DATABASE: serve started before the sink or migrate made it
			159, // TIMEOUT_EXCEEDED
			160, // TOO_SLOW
			202, // TOO_MANY_SIMULTANEOUS_QUERIES
			209, // SOCKET_TIMEOUT
			210, // NETWORK_ERROR
			241, // MEMORY_LIMIT_EXCEEDED
			242, // TABLE_IS_READ_ONLY
			394: // QUERY_WAS_CANCELLED
			return true
		}
		return false
	}
	// Reaching the server: refused or reset connections, timeouts, a full
	// pool, a connection closed under the query.
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, clickhouse.ErrAcquireConnTimeout) || errors.Is(err, clickhouse.ErrAcquireConnNoAddress) ||
		errors.Is(err, sqldriver.ErrBadConn)
}

// ---- metrics

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	storeErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_query_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "feedmeter_query_request_duration_seconds", Help: "Time to answer an HTTP request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "feedmeter_query_store_errors_total", Help: "Requests that failed in ClickHouse (503 and 500).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.storeErrors)
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}
