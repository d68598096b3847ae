package sink

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// child is a sink running in a subprocess (the test binary, see TestMain).
type child struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startChild(t *testing.T, brokers []string, chAddr, db, killAt string, killAfter int) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(),
		"FEEDMETER_SINK_CHILD=1",
		"FEEDMETER_SINK_BROKERS="+strings.Join(brokers, ","),
		"FEEDMETER_SINK_CLICKHOUSE="+chAddr,
		"FEEDMETER_SINK_DATABASE="+db,
		"FEEDMETER_SINK_KILL_AT="+killAt,
		"FEEDMETER_SINK_KILL_AFTER="+strconv.Itoa(killAfter))
	c := &child{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("child output:\n%s", c.out.String())
		}
	})
	return c
}

// wait waits for the child to exit and returns its error.
func (c *child) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(within):
		t.Fatalf("child did not exit within %v", within)
		return nil
	}
}

// TestSinkKilled kills a sink process with SIGKILL before the insert,
// between the insert of new events and that of the rows corrections
// replace, between the inserts and the offset commit, and after the
// commit; a new sink process then finishes, and the rollups are exact.
func TestSinkKilled(t *testing.T) {
	for i, point := range []string{"before-insert", "before-replace", "after-insert", "after-commit"} {
		t.Run(point, func(t *testing.T) {
			db := chtest.NewDB(t, false)
			c := newCluster(t)
			brokers := c.ListenAddrs()
			w := genWorkload(uint64(10+i), 5000)
			half := len(w.records) / 2
			produce(t, brokers, w.records[:half])

			first := startChild(t, brokers, db.Addr, db.Name, point, 3)
			err := first.wait(t, 2*time.Minute)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("first sink: %v, want killed by SIGKILL\n%s", err, first.out.String())
			}
			produce(t, brokers, w.records[half:])
			produce(t, brokers, w.again(w.records[:half/2])) // and a partial replay

			second := startChild(t, brokers, db.Addr, db.Name, "", 0)
			waitDrained(t, db.Conn, brokers, 2*time.Minute)
			second.cmd.Process.Signal(syscall.SIGTERM)
			if err := second.wait(t, time.Minute); err != nil {
				t.Fatalf("second sink: %v\n%s", err, second.out.String())
			}
			verify(t, db.Conn, w)
			if point == "after-insert" && !strings.Contains(second.out.String(), "resuming past the committed offset") {
				t.Errorf("after a kill between insert and commit, the second sink did not resume from ClickHouse progress:\n%s", second.out.String())
			}
		})
	}
}

// TestSinkClickHouseOutage stops ClickHouse while the sink runs and records
// keep coming, then starts it again: nothing is lost or counted twice.
func TestSinkClickHouseOutage(t *testing.T) {
	chtest.Addr(t) // skip or fail like the other ClickHouse tests
	srv := chtest.StartServer(t)
	name := chtest.NewDatabaseName("fmtest")
	conn := srv.Open(name)
	defer conn.Close()
	c := newCluster(t)
	brokers := c.ListenAddrs()
	w := genWorkload(20, 6000)
	third := len(w.records) / 3
	produce(t, brokers, w.records[:third])
	s, stop := runSink(t, testConfig(t, brokers, srv.Addr, name))
	h := httptest.NewServer(s.Handler())
	defer h.Close()
	waitFor(t, 30*time.Second, "first rows", func() bool {
		return testutil.ToFloat64(s.m.rows.WithLabelValues("usage_events")) > 0
	})
	srv.Stop()
	produce(t, brokers, w.records[third:])
	waitFor(t, 30*time.Second, "healthz to fail", func() bool { return healthz(h.URL) == http.StatusServiceUnavailable })
	time.Sleep(4 * time.Second) // longer than FlushTimeout: a batch is abandoned and read again
	srv.Start()
	conn2 := srv.Open(name)
	defer conn2.Close()
	waitDrained(t, conn2, brokers, 2*time.Minute)
	waitFor(t, 10*time.Second, "healthz to recover", func() bool { return healthz(h.URL) == http.StatusOK })
	produce(t, brokers, w.again(w.records[:third])) // a replay after the outage
	waitDrained(t, conn2, brokers, time.Minute)
	stop()
	verify(t, conn2, w)
	if n := testutil.ToFloat64(s.m.errors); n == 0 {
		t.Errorf("no ClickHouse errors were counted during the outage")
	}
	if err := conn2.Exec(context.Background(), "DROP DATABASE "+name); err != nil {
		t.Error(err)
	}
}

// TestSinkRebalance runs two sinks in one group: the second joins mid-run
// and the first leaves mid-run; both do part of the work.
func TestSinkRebalance(t *testing.T) {
	db := chtest.NewDB(t, false)
	c := newCluster(t)
	brokers := c.ListenAddrs()
	w := genWorkload(30, 9000)
	n := len(w.records)
	produce(t, brokers, w.records[:n/3])
	a, stopA := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	waitFor(t, 30*time.Second, "sink A to insert", func() bool {
		return testutil.ToFloat64(a.m.rows.WithLabelValues("usage_events")) > 0
	})
	b, stopB := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	produce(t, brokers, w.records[n/3:2*n/3])
	waitFor(t, 30*time.Second, "sink B to insert", func() bool {
		return testutil.ToFloat64(b.m.rows.WithLabelValues("usage_events")) > 0
	})
	stopA()
	produce(t, brokers, w.records[2*n/3:])
	produce(t, brokers, w.again(w.records[:n/2])) // replay
	waitDrained(t, db.Conn, brokers, 2*time.Minute)
	stopB()
	verify(t, db.Conn, w)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func healthz(base string) int {
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestFinalFlushHoldsPartitions: a sink that is stopping keeps its
// partitions until its last flush is in ClickHouse. Sink A buffers every
// record, is cancelled, and its final flush is held before its insert while
// sink B joins the group; B may take A's partitions (and load their tenants'
// keys) only after A inserted, so nothing A writes is inserted again by B.
func TestFinalFlushHoldsPartitions(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	w := genWorkload(1, 1500)
	produce(t, brokers, w.records)

	reached, release := make(chan struct{}), make(chan struct{})
	var final atomic.Bool
	cfgA := testConfig(t, brokers, db.Addr, db.Name)
	cfgA.BatchAge, cfgA.BatchRows, cfgA.FlushTimeout, cfgA.RebalanceTimeout = 30*time.Second, 1_000_000, 8*time.Second, 25*time.Second
	cfgA.Hook = func(p string) {
		if p == "before-insert" && final.Load() {
			close(reached)
			<-release
		}
	}
	a, err := New(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancelA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- a.Run(actx) }()
	waitFor(t, 30*time.Second, "sink A to buffer every record", func() bool { return a.buffered() >= len(w.records) })
	final.Store(true)
	cancelA()
	<-reached // A's final flush holds every record

	cfgB := testConfig(t, brokers, db.Addr, db.Name)
	cfgB.BatchRows = 100
	b, stopB := runSink(t, cfgB)
	time.Sleep(4 * time.Second) // B joins, and would take partitions if A let go
	bEarly := testutil.ToFloat64(b.m.rows.WithLabelValues("usage_events"))
	close(release)
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, w.again(w.records[:len(w.records)/2])) // and a replay for B
	waitDrained(t, db.Conn, brokers, time.Minute)
	stopB()
	if bEarly != 0 {
		t.Errorf("sink B inserted %v rows while A's final flush held the partitions", bEarly)
	}
	verify(t, db.Conn, w)
}
