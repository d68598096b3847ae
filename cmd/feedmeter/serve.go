package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"
	_ "time/tzdata" // any IANA zone, even where the system has no tz database

	"github.com/feedmeter/feedmeter/internal/cputime"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/query/querybench"
	"github.com/feedmeter/feedmeter/schemas"
)

func init() {
	commands["serve"] = command{
		summary: "serve per-tenant usage, invoices and the usage page over HTTP from ClickHouse",
		run:     runServe,
	}
}

// runServe serves until SIGINT or SIGTERM, then lets requests in flight
// finish (at most --shutdown-timeout). SIGHUP reloads the tokens and the
// rate card; a file that no longer parses is logged and the old one kept.
// Exit 0 after a clean shutdown, 1 when it cannot start, 2 on a bad command
// line.
func runServe(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chAddr := fs.String("clickhouse", "127.0.0.1:9000", "ClickHouse native-protocol address")
	database := fs.String("database", "feedmeter", "ClickHouse database the sink writes")
	chUser := fs.String("clickhouse-user", "default", "ClickHouse user (a read-only one will do; password from $FEEDMETER_CLICKHOUSE_PASSWORD)")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address")
	ratesPath := fs.String("rates", "", "rate card YAML (required; see query/rates.example.yaml)")
	tokensPath := fs.String("tokens", "", "tokens file: SHA-256 hashes from feedmeter token new (required)")
	queryTimeout := fs.Duration("query-timeout", 10*time.Second, "answer 503 when ClickHouse takes longer than this")
	slots := fs.Int("clickhouse-slots", 0, "per-tenant ClickHouse queries running at once, the rest queued (0: no bound); about the cores of the ClickHouse server")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long requests in flight may take at shutdown")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter serve --rates rates.yaml --tokens tokens.yaml [flags]\n\n"+
			"example: feedmeter serve --clickhouse 127.0.0.1:9000 --database feedmeter --listen 127.0.0.1:8080 --rates rates.yaml --tokens tokens.yaml")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	tuneGC()
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
		return 2
	}
	if *slots < 0 {
		fmt.Fprintf(stderr, "feedmeter serve: --clickhouse-slots %d is negative\n", *slots)
		return 2
	}
	if *ratesPath == "" || *tokensPath == "" {
		fmt.Fprintln(stderr, "feedmeter serve: --rates and --tokens are required")
		return 2
	}

	// Configuration first: a bad file stops the start.
	rates, err := query.LoadRateCard(*ratesPath)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
		return 1
	}
	tokens, err := query.LoadTokens(*tokensPath)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
		return 1
	}
	if tokens.Len() == 0 {
		log.Warn("the tokens file holds no tokens: every API request will be 401", "file", *tokensPath)
	}

	// Then the store and the server. ClickHouse may be down: /readyz says
	// so and data requests answer 503 until it is up.
	conn, err := query.OpenClickHouse(*chAddr, *database, *chUser, os.Getenv("FEEDMETER_CLICKHOUSE_PASSWORD"))
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
		return 1
	}
	defer conn.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := conn.Ping(pctx); err != nil {
		log.Warn("clickhouse does not answer yet; serving 503 until it does", "clickhouse", *chAddr, "err", err)
	}
	cancel()
	store := query.NewClickHouse(conn)
	store.SetConcurrency(*slots)
	srv, err := query.New(query.Config{Store: store, Rates: rates, Tokens: tokens,
		Logger: log, QueryTimeout: *queryTimeout})
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter serve: --listen: %v\n", err)
		return 1
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: *queryTimeout + 30*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "clickhouse", *chAddr, "database", *database,
		"tokens", tokens.Len(), "currency", rates.Currency)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			if t, err := query.LoadTokens(*tokensPath); err != nil {
				log.Error("reload tokens; keeping the old ones", "err", err)
			} else {
				srv.SetTokens(t)
				log.Info("tokens reloaded", "tokens", t.Len())
			}
			if rc, err := query.LoadRateCard(*ratesPath); err != nil {
				log.Error("reload rate card; keeping the old one", "err", err)
			} else {
				srv.SetRates(rc)
				log.Info("rate card reloaded")
			}
			continue
		case err := <-served:
			fmt.Fprintf(stderr, "feedmeter serve: %v\n", err)
			return 1
		case <-ctx.Done():
		}
		break
	}
	// Shut down in reverse: stop taking requests, let those in flight
	// finish, then close ClickHouse (deferred).
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// runBenchQuery loads the benchmark's events (unless they are there) and
// prints p50 and p99 latency of a tenant's month invoice and daily usage
// for each number of concurrent clients.
func runBenchQuery(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c querybench.Config
	fs.StringVar(&c.ClickHouse, "clickhouse", "127.0.0.1:9000", "ClickHouse native-protocol address")
	fs.StringVar(&c.Database, "database", "feedmeter_bench", "database to load and query (created and migrated)")
	fs.IntVar(&c.Tenants, "tenants", 2000, "tenants")
	fs.IntVar(&c.Agents, "agents", 2, "backup agents per tenant")
	fs.IntVar(&c.Months, "months", 12, "months of hourly usage from 2026-01")
	clients := fs.String("clients", "1,4,16", "concurrent clients of each closed-loop round, comma-separated (empty: none)")
	rates := fs.String("rates", "", "requests a second of each open-loop round, comma-separated: requests due at random times whatever the answers take, timed from when each was due")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "length of each round")
	fs.BoolVar(&c.Reload, "reload", false, "load the events again even when they are there")
	check := fs.Int("check", 1000, "events to read back and compare with model.SplitEvent (0: none)")
	settle := fs.Duration("settle", 15*time.Minute, "wait at most this long for ClickHouse's merges to finish before measuring")
	compact := fs.Bool("compact", false, "compact the day rollups before measuring, as feedmeter migrate --compact does")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured rounds (server and clients) to this file")
	fs.IntVar(&c.Slots, "clickhouse-slots", 0, "per-tenant ClickHouse queries the server runs at once, as serve --clickhouse-slots (0: no bound)")
	fs.IntVar(&c.ClickHousePID, "clickhouse-pid", cputime.ScriptServer(), "process id of ClickHouse on this machine, to report its CPU per request (default: the server scripts/clickhouse.sh started, from $CLICKHOUSE_DIR/pid; 0: none)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter bench query [flags]\n\nDefaults load 106,580,000 events (2000 tenants x 2 agents x 12 months).")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	tuneGC()
	for _, s := range splitList(*clients) {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter bench query: --clients: %q is not a number\n", s)
			return 2
		}
		c.Clients = append(c.Clients, n)
	}
	for _, s := range splitList(*rates) {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter bench query: --rates: %q is not a number\n", s)
			return 2
		}
		c.Rates = append(c.Rates, r)
	}
	if len(c.Clients) == 0 && len(c.Rates) == 0 {
		fmt.Fprintln(stderr, "feedmeter bench query: no rounds: give --clients or --rates")
		return 2
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 2
	}
	c.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	conn, err := schemas.Connect(ctx, schemas.ConnOptions(c.ClickHouse, c.Database))
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 1
	}
	defer conn.Close()
	took, err := querybench.Load(ctx, conn, c)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: load: %v\n", err)
		return 1
	}
	if *check > 0 {
		if err := querybench.CheckSplit(ctx, conn, *check); err != nil {
			fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
			return 1
		}
	}
	if _, err := querybench.SettleMerges(ctx, conn, c.Database, *settle, c.Logger); err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 1
	}
	if *compact {
		done, err := schemas.Compact(ctx, conn)
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
			return 1
		}
		for _, d := range done {
			c.Logger.Info("compacted", "table", d.Table, "took", d.Took)
		}
	}
	// The query service's own pool, as `feedmeter serve` opens it.
	qconn, err := query.OpenClickHouse(c.ClickHouse, c.Database, "default", "")
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 1
	}
	defer qconn.Close()
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 2
	}
	results, err := querybench.Measure(ctx, qconn, c)
	stopProfile()
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter bench query: %v\n", err)
		return 1
	}
	ver := "?"
	if sv, err := conn.ServerVersion(); err == nil {
		ver = sv.String()
	}
	querybench.Report(stdout, c, ver, c.Events(), took, results)
	return 0
}

// serveGCPercent is the collector's target for serve (and bench query, which
// runs the server in its process) unless GOGC is set. The server's live heap
// is 2-3 MB, so at Go's default (100 %, a 4 MB goal) the collector ran every
// 30 ms under 16 clients, with stop-the-world pauses of up to 6 ms on two
// cores; at 400 % it runs a fifth as often for a 16 MB heap goal, and
// daily usage needed 10-25 % less Go CPU per request (BENCHMARKS.md).
const serveGCPercent = 400

// tuneGC sets serveGCPercent unless the environment sets GOGC.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}
