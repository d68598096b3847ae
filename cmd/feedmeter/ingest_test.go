package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/internal/e2e"
	"github.com/feedmeter/feedmeter/model"
)

// TestMain lets the test binary stand in for feedmeter: with
// FEEDMETER_TEST_MAIN=1 it runs the command line it is given, so that tests
// can start, and kill, real processes.
func TestMain(m *testing.M) {
	if os.Getenv("FEEDMETER_TEST_MAIN") == "1" {
		ctx, stop := signalContext()
		code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// feedmeterCmd is a feedmeter process (this test binary).
func feedmeterCmd(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "FEEDMETER_TEST_MAIN=1"), env...)
	return cmd
}

type outcome struct {
	code   int
	killed bool
	stderr string
}

func runProcess(t *testing.T, cmd *exec.Cmd, killAfter time.Duration) outcome {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	if killAfter > 0 {
		select {
		case err = <-done:
		case <-time.After(killAfter):
			cmd.Process.Kill() // SIGKILL
			err = <-done
		}
	} else {
		select {
		case err = <-done:
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("process did not finish: %s", stderr.String())
		}
	}
	o := outcome{stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			o.killed = true
		}
		o.code = ee.ExitCode()
	}
	return o
}

// TestIngestSurvivesSIGKILL kills real ingest processes at each point of a
// page's transaction, and at random moments, restarts them, and holds Kafka
// to feedsim's truth: every event once, none missing.
func TestIngestSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	sim, srv := e2e.Upstream(t, 12, 3, "429=0.02,503=0.02,500=0.01,drop=0.01,malformed=0.003,expire=0.01")
	brokers := e2e.KafkaCluster(t)
	args := []string{"ingest", "--once", "--feed", srv.URL + "/backup/events", "--tenants", strings.Join(sim.TenantIDs(), ","),
		"--identity-url", srv.URL + "/v2.0/tokens", "--kafka", strings.Join(brokers, ","), "--admin", "",
		"--limit", "100", "--slots", "4", "--workers", "2", "--log-level", "error"}
	creds := []string{"FEEDMETER_USERNAME=demo", "FEEDMETER_API_KEY=demo"}
	kills := 0
	for _, crash := range []string{"produced:3", "flushed:5", "committed:7", "flushed:1", "produced:20"} {
		o := runProcess(t, feedmeterCmd(t, append(creds, "FEEDMETER_CRASH="+crash), args...), 0)
		if !o.killed {
			t.Fatalf("FEEDMETER_CRASH=%s: the process was not killed (exit %d): %s", crash, o.code, o.stderr)
		}
		kills++
	}
	for _, after := range []time.Duration{300 * time.Millisecond, 700 * time.Millisecond, 1100 * time.Millisecond} {
		if o := runProcess(t, feedmeterCmd(t, creds, args...), after); o.killed {
			kills++
		}
	}
	o := runProcess(t, feedmeterCmd(t, creds, args...), 0)
	if o.code != 0 || o.killed {
		t.Fatalf("final run: exit %d: %s", o.code, o.stderr)
	}
	n := e2e.CheckAgainstTruth(t, sim, brokers)
	t.Logf("%d processes killed; %d events, each once", kills, n)
}

// TestIngestGroupSharesTenants runs three ingest processes in one group;
// one is killed mid-run, and the other two take its tenants over.
func TestIngestGroupSharesTenants(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	sim, srv := e2e.Upstream(t, 24, 3, "429=0.02,500=0.01,drop=0.01,malformed=0.003")
	brokers := e2e.KafkaCluster(t)
	args := []string{"ingest", "--group", "ingest-test", "--feed", srv.URL + "/backup/events",
		"--tenants", strings.Join(sim.TenantIDs(), ","),
		"--identity-url", srv.URL + "/v2.0/tokens", "--kafka", strings.Join(brokers, ","), "--admin", "",
		"--limit", "50", "--slots", "8", "--workers", "8", "--idle-every", "500ms", "--session-timeout", "2s",
		"--log-level", "error"}
	creds := []string{"FEEDMETER_USERNAME=demo", "FEEDMETER_API_KEY=demo"}
	var procs []*exec.Cmd
	for i := range 3 {
		cmd := feedmeterCmd(t, creds, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("process %d stderr:\n%s", i, stderr.String())
			}
		})
	}
	// Let the group form and the work start, then kill one member.
	time.Sleep(1500 * time.Millisecond)
	procs[1].Process.Kill()

	want := 0
	for _, tt := range sim.Truth().Tenants {
		for _, d := range tt.Days {
			want += d.Entries
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := len(e2e.TopicRecords(t, brokers, model.TopicUsage))
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events after 2 minutes", n, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, i := range []int{0, 2} {
		procs[i].Process.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, i := range []int{0, 2} {
		done := make(chan error, 1)
		go func() { done <- procs[i].Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("process %d ended with %v", i, err)
			}
		case <-ctx.Done():
			t.Errorf("process %d did not stop on SIGTERM", i)
		}
	}
	n := e2e.CheckAgainstTruth(t, sim, brokers)
	fmt.Fprintf(os.Stderr, "group: %d events, each once, one member killed\n", n)
}

func TestIngestFlags(t *testing.T) {
	dir := t.TempDir()
	badYAML := dir + "/subs.yaml"
	os.WriteFile(badYAML, []byte("tenants: [1, 2\n"), 0o644)
	cases := []struct {
		args []string
		says string
	}{
		{[]string{"ingest", "--tenants", "1"}, `feed "" is not an http(s) URL`},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/backup/events"}, "no tenants"},
		{[]string{"ingest", "--feed", "ftp://x", "--tenants", "1"}, `feed "ftp://x"`},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "1", "--format", "csv"}, `--format "csv"`},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "1", "--limit", "5000"}, "limit 5000 is not in 1..1000"},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "1", "--start-at", "yesterday"}, `--start-at "yesterday"`},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "a/b"}, `tenant "a/b"`},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "1", "--identity-url", "http://127.0.0.1:1/v2.0/tokens"}, "needs a username and an API key"},
		{[]string{"ingest", "--subscriptions", badYAML}, "--subscriptions " + badYAML},
		{[]string{"ingest", "--feed", "http://127.0.0.1:1/e", "--tenants", "1", "--kafka", " , "}, "--kafka names no broker"},
	}
	for _, c := range cases {
		_, stderr, code := runCmd(t, "", c.args...)
		if code != 2 || !strings.Contains(stderr, c.says) {
			t.Errorf("%v: exit %d, stderr %q; want 2 saying %q", c.args, code, stderr, c.says)
		}
	}
}

// TestIngestSubscriptionsFileAndSecrets: tenants from a YAML file,
// credentials from a file, and the API key never in the output, even at
// debug level.
func TestIngestSubscriptionsFileAndSecrets(t *testing.T) {
	sim, srv := e2e.Upstream(t, 2, 1, "expire=0.2")
	brokers := e2e.KafkaCluster(t)
	dir := t.TempDir()
	subs := fmt.Sprintf("feed: %s/backup/events\ntenants:\n  - %s\n  - %s\n", srv.URL, sim.TenantIDs()[0], sim.TenantIDs()[1])
	os.WriteFile(dir+"/subs.yaml", []byte(subs), 0o644)
	os.WriteFile(dir+"/creds.yaml", []byte("username: demo\napi_key: demo\n"), 0o600)
	stdout, stderr, code := runCmd(t, "", "ingest", "--once", "--subscriptions", dir+"/subs.yaml",
		"--credentials", dir+"/creds.yaml", "--identity-url", srv.URL+"/v2.0/tokens",
		"--kafka", strings.Join(brokers, ","), "--admin", "", "--log-level", "debug")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Count(stdout, "caught up to urn:uuid:") != 2 {
		t.Fatalf("want a progress line per tenant:\n%s", stdout)
	}
	for _, s := range []string{stdout, stderr} {
		if strings.Contains(s, `"apiKey"`) || strings.Contains(s, "api_key") || strings.Contains(s, "apiKey=") {
			t.Fatalf("credentials in the output:\n%s", s)
		}
	}
	e2e.CheckAgainstTruth(t, sim, brokers)
}
