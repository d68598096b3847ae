package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFeedsimCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"feedsim", "--listen", "127.0.0.1:0", "--tenants", "2", "--days", "1",
			"--seed", "3", "--log-level", "warn"}, nil, pw, &syncWriter{b: &stderr})
		pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no banner: %v", err)
	}
	go io.Copy(io.Discard, pr)
	// "feedsim: http://127.0.0.1:NNNN  tenants: A B"
	fields := strings.Fields(line)
	if len(fields) < 5 || !strings.HasPrefix(fields[1], "http://127.0.0.1:") {
		t.Fatalf("banner %q", line)
	}
	base, tenants := fields[1], fields[3:]
	res, err := http.Get(base + "/_sim/tenants")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Tenants []struct{ ID string }
	}
	err = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if err != nil || len(body.Tenants) != 2 || body.Tenants[0].ID != tenants[0] {
		t.Fatalf("tenants %+v, %v (banner %q)", body, err, line)
	}
	// Auth is on by default.
	res, err = http.Get(base + "/backup/events/" + tenants[0])
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("feed without token: %d", res.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("feedsim did not stop")
	}
}

func TestFeedsimCommandFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--tenants", "0"},
		{"--start", "October"},
		{"--faults", "429=2"},
		{"--faults", "teapot=0.1"},
		{"--cuf", "retry=0.1"},
		{"--cuf", "early=2"},
		{"--users", "nokey"},
		{"--log-level", "loud"},
		{"extra"},
	} {
		var out, errb strings.Builder
		if code := run(context.Background(), append([]string{"feedsim", "--listen", "127.0.0.1:0"}, args...), nil, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// syncWriter lets the command's logger and the test share a builder.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
