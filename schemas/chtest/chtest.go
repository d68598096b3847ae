// Package chtest gives tests a throwaway ClickHouse database on the server
// that `make test` starts (scripts/clickhouse.sh run exports its address as
// FEEDMETER_CLICKHOUSE), and private servers for tests that stop them.
//
// Without a server a test skips, unless CI=true: there it fails, so CI never
// passes by skipping.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/schemas"
)

// EnvAddr names the variable holding the address of the shared test server.
const EnvAddr = "FEEDMETER_CLICKHOUSE"

// unavailable skips the test, or fails it when CI=true.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("ClickHouse is required in CI: %s", msg)
	}
	t.Skipf("no ClickHouse (%s); run the tests with `make test` or scripts/clickhouse.sh run -- go test ...", msg)
}

// Addr returns the address of the shared test server, skipping (or failing
// in CI) when there is none or it does not answer.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		unavailable(t, "%s is not set", EnvAddr)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, "%s=%s does not answer: %v", EnvAddr, addr, err)
	}
	c.Close()
	return addr
}

// NewDatabaseName returns a fresh database name with the given prefix.
func NewDatabaseName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// DB is a database of its own for one test, dropped when the test ends.
type DB struct {
	Addr string
	Name string
	Conn driver.Conn
}

// NewDB creates an empty database on the shared server, returns a connection
// whose default database it is, and drops it in t.Cleanup. migrate applies the
// embedded migrations first.
func NewDB(t testing.TB, migrate bool) *DB {
	t.Helper()
	return NewDBOn(t, Addr(t), migrate)
}

// NewDBOn is NewDB on the server at addr.
func NewDBOn(t testing.TB, addr string, migrate bool) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := NewDatabaseName("fmtest")
	conn, err := schemas.Connect(ctx, schemas.ConnOptions(addr, name))
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	db := &DB{Addr: addr, Name: name, Conn: conn}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
		conn.Close()
	})
	if migrate {
		if _, err := schemas.Apply(ctx, conn); err != nil {
			t.Fatalf("apply migrations to %s: %v", name, err)
		}
	}
	return db
}

// RepoRoot returns the directory holding go.mod, found upwards from the
// working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Server is a private ClickHouse server started with scripts/clickhouse.sh,
// for tests that stop and restart it. Its data survive Stop and Start.
type Server struct {
	t       testing.TB
	script  string
	dir     string
	tcp, hp int
	Addr    string
	running bool
}

// StartServer starts a private server on free loopback ports with its data in
// a temporary directory, and stops it in t.Cleanup. It skips (or fails in CI)
// when clickhouse-server is not installed.
func StartServer(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if _, err := os.Stat("/usr/sbin/clickhouse-server"); err != nil {
			unavailable(t, "clickhouse-server is not installed")
		}
	}
	s := &Server{t: t, script: filepath.Join(RepoRoot(t), "scripts", "clickhouse.sh"), dir: t.TempDir()}
	s.tcp, s.hp = freePort(t), freePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.tcp)
	t.Cleanup(func() {
		if s.running {
			s.Stop()
		}
	})
	s.Start()
	return s
}

func (s *Server) run(verb string) {
	s.t.Helper()
	cmd := exec.Command("bash", s.script, verb)
	cmd.Env = append(os.Environ(),
		"CLICKHOUSE_DIR="+s.dir,
		fmt.Sprintf("CLICKHOUSE_TCP_PORT=%d", s.tcp),
		fmt.Sprintf("CLICKHOUSE_HTTP_PORT=%d", s.hp))
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("scripts/clickhouse.sh %s: %v\n%s", verb, err, out)
	}
}

// Start starts (or restarts) the server and waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	s.run("start")
	s.running = true
}

// Stop stops the server (SIGTERM, then SIGKILL after 30 s) and waits for it
// to exit.
func (s *Server) Stop() {
	s.t.Helper()
	s.run("stop")
	s.running = false
}

// Open returns a connection to database name on s (created when missing).
func (s *Server) Open(name string) driver.Conn {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := schemas.Connect(ctx, schemas.ConnOptions(s.Addr, name))
	if err != nil {
		s.t.Fatalf("connect to private server: %v", err)
	}
	return conn
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options returns the options of a connection to database on addr.
func Options(addr, database string) *clickhouse.Options {
	return schemas.ConnOptions(addr, database)
}

// QueryStrings runs q and returns each row's columns formatted with %v and
// joined by tabs: a compact way to compare results.
func QueryStrings(t testing.TB, conn driver.Conn, q string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]any, len(rows.ColumnTypes()))
		for i, ct := range rows.ColumnTypes() {
			vals[i] = newScanDest(ct)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatalf("scan %q: %v", q, err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(deref(v))
		}
		out = append(out, strings.Join(parts, "\t"))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	return out
}

func newScanDest(ct driver.ColumnType) any { return reflect.New(ct.ScanType()).Interface() }

func deref(v any) any {
	rv := reflect.ValueOf(v).Elem()
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "NULL"
		}
		return rv.Elem().Interface()
	}
	return rv.Interface()
}

// CompareRows fails t unless got and want hold the same keys with the same
// values; it names at most eight differing rows, in key order, then counts
// them all. The rows are typically a query's, keyed by their first column.
func CompareRows(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	bad := 0
	report := func(format string, args ...any) {
		if bad < 8 {
			t.Errorf(format, args...)
		}
		bad++
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			report("%s %s:\n got %q\nwant %q", what, k, got[k], want[k])
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			report("%s %s: got %q, want no row", what, k, v)
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d rows differ", what, bad, len(want))
	}
}
