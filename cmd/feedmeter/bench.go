package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

func init() {
	commands["bench"] = command{
		summary: "measure the pipeline: bench ingest (feedsim over HTTP into Kafka), bench query (invoices and usage from ClickHouse)",
		run:     runBench,
	}
}

func runBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch {
	case len(args) > 0 && args[0] == "ingest":
		return benchIngest(ctx, args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "query":
		return runBenchQuery(ctx, args[1:], stdin, stdout, stderr)
	}
	fmt.Fprintln(stderr, "usage: feedmeter bench ingest|query [flags]")
	return 2
}

// freeAddr returns a free 127.0.0.1 port.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// benchIngest runs feedsim, an embedded Kafka and ingest as three processes
// (this binary), backfills every tenant once, and reports entries/s and the
// ingest process's peak RSS.
func benchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "json", "xml or json")
	tenants := fs.Int("tenants", 40, "feedsim tenants")
	days := fs.Int("days", 120, "days of history per tenant")
	start := fs.String("start", "2026-01-01", "first day of history (it must end before today)")
	workers := fs.Int("workers", 4, "ingest slots read at once")
	limit := fs.Int("limit", 1000, "page size")
	profile := fs.String("cpuprofile", "", "write the ingest process's CPU profile here")
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	simAddr, err := freeAddr()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	kafkaAddr, err := freeAddr()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
			p.Wait()
		}
	}()
	startBg := func(args ...string) (*bufio.Scanner, error) {
		cmd := exec.CommandContext(ctx, self, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
		return bufio.NewScanner(out), nil
	}
	sim, err := startBg("feedsim", "--listen", simAddr, "--tenants", fmt.Sprint(*tenants), "--days", fmt.Sprint(*days),
		"--start", *start, "--seed", "1", "--log-level", "error")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !sim.Scan() {
		fmt.Fprintln(stderr, "feedsim did not start")
		return 1
	}
	if _, err := startBg("kafka", "--listen", kafkaAddr); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The tenants and how many entries their feeds hold.
	resp, err := http.Get("http://" + simAddr + "/_sim/truth")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var truth struct {
		Tenants []struct {
			Tenant  string `json:"tenant"`
			Entries int    `json:"entries"`
		} `json:"tenants"`
	}
	err = json.NewDecoder(resp.Body).Decode(&truth)
	resp.Body.Close()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var ids []string
	total := 0
	for _, t := range truth.Tenants {
		ids = append(ids, t.Tenant)
		total += t.Entries
	}
	ing := exec.CommandContext(ctx, self, "ingest", "--once", "--feed", "http://"+simAddr+"/backup/events",
		"--tenants", strings.Join(ids, ","), "--identity-url", "http://"+simAddr+"/v2.0/tokens",
		"--kafka", kafkaAddr, "--admin", "", "--format", *format, "--limit", fmt.Sprint(*limit),
		"--workers", fmt.Sprint(*workers), "--log-level", "warn", "--cpuprofile", *profile)
	ing.Env = append(os.Environ(), "FEEDMETER_USERNAME=demo", "FEEDMETER_API_KEY=demo")
	ing.Stderr = stderr
	t0 := time.Now()
	if err := ing.Run(); err != nil {
		fmt.Fprintf(stderr, "ingest: %v\n", err)
		return 1
	}
	secs := time.Since(t0).Seconds()
	ru, _ := ing.ProcessState.SysUsage().(*syscall.Rusage)
	var rssMB float64
	if ru != nil {
		rssMB = float64(ru.Maxrss) / 1024
	}
	fmt.Fprintf(stdout, "bench ingest: format=%s tenants=%d entries=%d limit=%d workers=%d: %.1f s, %.0f entries/s, peak RSS %.0f MB, CPU %.1f s user %.1f s sys\n",
		*format, len(ids), total, *limit, *workers, secs, float64(total)/secs, rssMB,
		ing.ProcessState.UserTime().Seconds(), ing.ProcessState.SystemTime().Seconds())
	return 0
}
