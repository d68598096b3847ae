package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/feedmeter/feedmeter/feedsim"
)

func init() {
	commands["feedsim"] = command{
		summary: "run the Cloud Feeds emulator (feeds, Identity, Cloud Backup and Nova APIs, truth, faults)",
		run:     runFeedsim,
	}
}

// cufExample is the --cuf of feedsim and the demo in a help text.
const cufExample = "republish=0.01,conflict=0.002,correct=0.01,chain=0.3,early=0.2,sibling=0.1,orphan=0.05,midnight=0.05,summary=0.01"

// runFeedsim serves the emulator until the context ends (SIGINT/SIGTERM).
// Exit 0 after a clean shutdown, 2 on a bad command line or config, 1 when
// the server fails.
func runFeedsim(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	def := feedsim.DefaultConfig()
	fs := flag.NewFlagSet("feedsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8900", "address to listen on")
	tenants := fs.Int("tenants", def.Tenants, "number of tenants")
	start := fs.String("start", def.Start.Format("2006-01-02"), "first UTC day of generated history")
	days := fs.Int("days", def.Days, "days of history per tenant (0: live only)")
	seed := fs.Uint64("seed", def.Seed, "seed of everything generated and of the faults")
	agents := fs.Int("agents", def.Agents, "agents per tenant (0: 2 to 6, drawn per tenant)")
	headDelay := fs.Duration("head-delay", def.HeadDelay, "withhold entries published less than this long ago")
	rate := fs.Float64("rate", def.Rate, "live entries per second across tenants (0: off)")
	users := fs.String("users", "demo:demo", "accepted Identity users, name:apikey[,name:apikey…]")
	usersFile := fs.String("users-file", "", "file of name:apikey lines (adds to --users)")
	tokenTTL := fs.Duration("token-ttl", def.TokenTTL, "lifetime of an Identity token")
	noAuth := fs.Bool("no-auth", false, "serve without X-Auth-Token")
	faults := fs.String("faults", "none", "faults, e.g. 429=0.05,503=0.02,500=0.01,drop=0.01,slow=0.01,malformed=0.001,expire=0.01")
	cuf := fs.String("cuf", "none", "the upstream's identity facts in the history (shares), e.g. "+cufExample)
	retryAfter := fs.Duration("retry-after", def.RetryAfter, "Retry-After of a 429")
	slow := fs.Duration("slow-delay", def.SlowDelay, "delay of a slow response")
	backupTime := fs.Duration("backup-time", def.BackupTime, "how long a started backup runs")
	activeFor := fs.Duration("active-for", def.ActiveFor, "how long agent_activate lasts before agents fall back to idle")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter feedsim [flags]\n\nexample: feedmeter feedsim --listen 127.0.0.1:8900 --tenants 3 --days 7 --seed 1")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: %v\n", err)
		return 2
	}

	cfg := def
	cfg.Tenants, cfg.Days, cfg.Seed, cfg.Agents = *tenants, *days, *seed, *agents
	cfg.HeadDelay, cfg.Rate, cfg.TokenTTL, cfg.NoAuth = *headDelay, *rate, *tokenTTL, *noAuth
	cfg.RetryAfter, cfg.SlowDelay, cfg.BackupTime, cfg.ActiveFor = *retryAfter, *slow, *backupTime, *activeFor
	if cfg.Start, err = time.Parse("2006-01-02", *start); err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: --start %q is not a date (2026-10-01)\n", *start)
		return 2
	}
	if cfg.Faults, err = feedsim.ParseFaults(*faults); err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: --faults: %v\n", err)
		return 2
	}
	if cfg.CUF, err = feedsim.ParseCUF(*cuf); err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: --cuf: %v\n", err)
		return 2
	}
	spec := *users
	if *usersFile != "" {
		b, err := os.ReadFile(*usersFile)
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter feedsim: --users-file: %v\n", err)
			return 2
		}
		spec += "\n" + string(b)
	}
	if cfg.Users, err = feedsim.ParseUsers(spec); err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: --users: %v\n", err)
		return 2
	}

	sim, err := feedsim.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter feedsim: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go sim.Run(runCtx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	addr := ln.Addr().String()
	log.Info("feedsim listening", "addr", addr, "tenants", strings.Join(sim.TenantIDs(), ","),
		"faults", cfg.Faults.String(), "cuf", cfg.CUF.String(), "auth", !cfg.NoAuth)
	fmt.Fprintf(stdout, "feedsim: http://%s  tenants: %s\n", addr, strings.Join(sim.TenantIDs(), " "))

	select {
	case err := <-errc:
		log.Error("feedsim server failed", "err", err)
		return 1
	case <-ctx.Done():
	}
	cancel()
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("feedsim shutdown", "err", err)
	}
	log.Info("feedsim stopped")
	return 0
}
