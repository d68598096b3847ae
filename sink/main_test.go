package sink

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a sink process: with FEEDMETER_SINK_CHILD set
// it runs a sink from the environment instead of the tests, and kills itself
// with SIGKILL at FEEDMETER_SINK_KILL_AT (a Hook point) on flush number
// FEEDMETER_SINK_KILL_AFTER.
func TestMain(m *testing.M) {
	if os.Getenv("FEEDMETER_SINK_CHILD") != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

func childMain() int {
	env := os.Getenv
	cfg := testConfig(nil, strings.Split(env("FEEDMETER_SINK_BROKERS"), ","), env("FEEDMETER_SINK_CLICKHOUSE"), env("FEEDMETER_SINK_DATABASE"))
	if point := env("FEEDMETER_SINK_KILL_AT"); point != "" {
		after, _ := strconv.Atoi(env("FEEDMETER_SINK_KILL_AFTER"))
		n := 0
		cfg.Hook = func(p string) {
			if p != point {
				return
			}
			if n++; n >= after {
				fmt.Fprintf(os.Stderr, "child: SIGKILL at %s (flush %d)\n", p, n)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Hour)
			}
		}
	}
	s, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
