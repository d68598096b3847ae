package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/feedmeter/feedmeter/ingest"
)

func init() {
	commands["ingest"] = command{
		summary: "read tenants' Cloud Feeds into Kafka, exactly once",
		run:     runIngest,
	}
}

// subscriptionsFile is the YAML of --subscriptions.
type subscriptionsFile struct {
	Feed    string   `yaml:"feed"`
	Tenants []string `yaml:"tenants"`
}

// crashHook reads point:n and returns a hook that SIGKILLs this process the
// n-th time point is reached.
func crashHook(v string) (func(string), error) {
	point, nStr, ok := strings.Cut(v, ":")
	n, err := strconv.Atoi(nStr)
	if !ok || err != nil || n < 1 {
		return nil, fmt.Errorf("%q is not point:n", v)
	}
	var count atomic.Int64
	return func(p string) {
		if p == point && count.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}, nil
}

// credentials come from FEEDMETER_USERNAME and FEEDMETER_API_KEY, or from
// a YAML file with username and api_key; never from a flag.
func credentials(file string) (user, key string, err error) {
	user, key = os.Getenv("FEEDMETER_USERNAME"), os.Getenv("FEEDMETER_API_KEY")
	if file == "" {
		return user, key, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", err
	}
	var c struct {
		Username string `yaml:"username"`
		APIKey   string `yaml:"api_key"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", "", fmt.Errorf("%s: %w", file, err)
	}
	return c.Username, c.APIKey, nil
}

func runIngest(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		feed       = fs.String("feed", "", "feeds base URL; a tenant's feed is <feed>/<tenant> (e.g. http://127.0.0.1:8900/backup/events)")
		tenants    = fs.String("tenants", "", "comma-separated tenant ids")
		subsFile   = fs.String("subscriptions", "", "YAML file with feed: and tenants: (for many tenants)")
		identity   = fs.String("identity-url", "", "Identity v2.0 tokens URL (credentials from FEEDMETER_USERNAME and FEEDMETER_API_KEY, or --credentials)")
		credsFile  = fs.String("credentials", "", "YAML file with username: and api_key:")
		kafka      = fs.String("kafka", "embedded", "Kafka brokers, comma-separated, or embedded (an in-process kfake)")
		kafkaDir   = fs.String("kafka-data-dir", "", "with --kafka embedded: persist it here")
		format     = fs.String("format", "xml", "page format to ask for: xml or json")
		limit      = fs.Int("limit", 1000, "page size, 1..1000")
		once       = fs.Bool("once", false, "read every tenant up to its head, then exit (non-zero if a tenant failed)")
		startAt    = fs.String("start-at", "", "RFC 3339 time where tenants without a checkpoint start (default: the whole feed)")
		group      = fs.String("group", "", "share the tenants with the other processes of this Kafka group")
		admin      = fs.String("admin", "127.0.0.1:8091", "admin listen address (/v2/{project}/events, /v2/{project}/agents, /metrics, /healthz); empty: none")
		rps        = fs.Float64("rps", 0, "requests per second to the feeds, across tenants (0: no cap)")
		workers    = fs.Int("workers", 4, "slots read at once")
		slots      = fs.Int("slots", 16, "partitions of the tenants and checkpoints topics (fixed once created)")
		idle       = fs.Duration("idle-every", 15*time.Minute, "poll interval in mode idle")
		active     = fs.Duration("active-every", time.Minute, "poll interval in mode active")
		realTime   = fs.Duration("real-time-every", 5*time.Second, "poll interval in mode real_time")
		ttl        = fs.Duration("activate-ttl", 10*time.Minute, "how long agent_activate lasts before the mode falls back to idle")
		session    = fs.Duration("session-timeout", 10*time.Second, "group session timeout: how soon a dead process's tenants move")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		usageTopic = fs.String("topic", "", "usage topic (default feedmeter.usage.v1)")
		cpuProfile = fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	)
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "feedmeter ingest: "+format+"\n", a...)
		return 2
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return fail("%v", err)
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return fail("%v", err)
	}
	defer stopProfile()
	var tenantList []string
	for _, t := range strings.Split(*tenants, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tenantList = append(tenantList, t)
		}
	}
	if *subsFile != "" {
		b, err := os.ReadFile(*subsFile)
		if err != nil {
			return fail("--subscriptions: %v", err)
		}
		var sf subscriptionsFile
		if err := yaml.Unmarshal(b, &sf); err != nil {
			return fail("--subscriptions %s: %v", *subsFile, err)
		}
		if sf.Feed != "" && *feed == "" {
			*feed = sf.Feed
		}
		tenantList = append(tenantList, sf.Tenants...)
	}
	f, err := ingest.ParseFormat(*format)
	if err != nil || f == ingest.FormatAuto {
		return fail("--format %q is not xml or json", *format)
	}
	var start time.Time
	if *startAt != "" {
		if start, err = time.Parse(time.RFC3339, *startAt); err != nil {
			return fail("--start-at %q is not an RFC 3339 time", *startAt)
		}
	}
	user, key, err := credentials(*credsFile)
	if err != nil {
		return fail("--credentials: %v", err)
	}
	brokers, stopKafka, err := kafkaBrokers(*kafka, *kafkaDir)
	if err != nil {
		return fail("%v", err)
	}
	defer stopKafka()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := ingest.Config{
		Feed: *feed, Tenants: tenantList, StartAt: start, Once: *once, Group: *group, Workers: *workers,
		IdleEvery: *idle, ActiveEvery: *active, RealTimeEvery: *realTime, ActivateTTL: *ttl, SessionTimeout: *session,
		Client: ingest.ClientConfig{IdentityURL: *identity, Username: user, APIKey: key, Format: f, Limit: *limit, RequestsPerSecond: *rps},
		Kafka:  ingest.KafkaConfig{Brokers: brokers, Slots: int32(*slots), UsageTopic: *usageTopic},
		Log:    log, Metrics: ingest.NewMetrics(reg),
	}
	if *once {
		cfg.Progress = func(line string) { fmt.Fprintln(stdout, line) }
	}
	if v := os.Getenv("FEEDMETER_CRASH"); v != "" {
		// Tests: FEEDMETER_CRASH=point:n kills the process (SIGKILL) the
		// n-th time a page's transaction reaches point.
		hook, err := crashHook(v)
		if err != nil {
			return fail("FEEDMETER_CRASH: %v", err)
		}
		cfg.Kafka.Hook = hook
	}
	r, err := ingest.NewRunner(cfg)
	if err != nil {
		return fail("%v", err)
	}
	if *admin != "" {
		ln, err := net.Listen("tcp", *admin)
		if err != nil {
			return fail("--admin: %v", err)
		}
		srv := &http.Server{Handler: r.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("admin listening", "addr", ln.Addr().String())
	}
	log.Info("ingest starting", "feed", cfg.Feed, "tenants", len(tenantList), "kafka", strings.Join(brokers, ","), "once", *once, "group", *group)
	if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "feedmeter ingest: %v\n", err)
		return 1
	}
	return 0
}

// startCPUProfile writes a CPU profile to path until the returned function
// is called; with an empty path it does nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
