// Package cputime reads the CPU time of this process and of another one
// (ClickHouse on the same machine), for benchmarks that report CPU per
// request or per row beside their rates.
package cputime

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Self is the user and system CPU time this process has used.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Process is the user and system CPU time of process pid (Linux /proc,
// clock ticks of 10 ms); false when it cannot be read.
func Process(pid int) (time.Duration, bool) {
	if pid <= 0 {
		return 0, false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command (which may hold spaces): utime and stime
	// are the 12th and 13th.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * 10 * time.Millisecond, true
}

// ScriptServer is the pid of the ClickHouse server that
// scripts/clickhouse.sh started (its pid file in $CLICKHOUSE_DIR, by default
// /tmp/feedmeter-clickhouse), or 0.
func ScriptServer() int {
	dir := os.Getenv("CLICKHOUSE_DIR")
	if dir == "" {
		dir = "/tmp/feedmeter-clickhouse"
	}
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// Meter measures the CPU time process pid uses from Start on.
type Meter struct {
	pid int
	at  time.Duration
	ok  bool
}

// Start begins measuring process pid (see Process).
func Start(pid int) Meter {
	at, ok := Process(pid)
	return Meter{pid, at, ok}
}

// Used returns the CPU time the process used since Start; false when it
// could not be read at either end.
func (m Meter) Used() (time.Duration, bool) {
	now, ok := Process(m.pid)
	return now - m.at, ok && m.ok
}
