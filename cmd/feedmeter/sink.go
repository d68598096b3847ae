package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/sink"
)

func init() {
	commands["sink"] = command{
		summary: "consume the usage topic into ClickHouse exactly once (events, rollups, rejects)",
		run:     runSink,
	}
}

// runSink runs the sink until the context ends (SIGINT/SIGTERM), then
// flushes, commits and leaves the group. Exit 0 after a clean shutdown, 2 on
// a bad command line, 1 when the sink cannot start.
func runSink(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("kafka", "127.0.0.1:9092", "Kafka seed brokers, comma-separated")
	chAddr := fs.String("clickhouse", "127.0.0.1:9000", "ClickHouse native-protocol address")
	database := fs.String("database", "feedmeter", "ClickHouse database (created and migrated when missing)")
	topic := fs.String("topic", model.TopicUsage, "usage topic")
	dlTopic := fs.String("dead-letter-topic", model.TopicDeadLetter, "dead-letter topic (read into the rejects table, and written)")
	group := fs.String("group", "feedmeter-sink", "consumer group")
	batchRows := fs.Int("batch-rows", 50000, "flush when this many records are buffered")
	batchAge := fs.Duration("batch-age", time.Second, "flush when the oldest buffered record is this old")
	flushTimeout := fs.Duration("flush-timeout", 10*time.Second, "retry a failing flush this long, then read its records again")
	rebalanceTimeout := fs.Duration("rebalance-timeout", time.Minute, "how long the group waits for members in a rebalance; at least 2 x --flush-timeout + 5s")
	cacheKeys := fs.Int("key-cache", 20_000_000, "dedupe cache: key fingerprints kept in memory, about 20 bytes each (negative: off, every lookup asks ClickHouse)")
	listen := fs.String("listen", "127.0.0.1:9465", "address of /metrics and /healthz (empty: none)")
	noMigrate := fs.Bool("no-migrate", false, "do not apply migrations at start")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter sink [flags]\n\nexample: feedmeter sink --kafka 127.0.0.1:9092 --clickhouse 127.0.0.1:9000 --database feedmeter")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter sink: %v\n", err)
		return 2
	}

	cfg := sink.Config{
		Brokers: splitList(*brokers), ClickHouse: *chAddr, Database: *database,
		Topic: *topic, DeadLetterTopic: *dlTopic, Group: *group,
		BatchRows: *batchRows, BatchAge: *batchAge, FlushTimeout: *flushTimeout, RebalanceTimeout: *rebalanceTimeout,
		SkipMigrate: *noMigrate, Logger: log, KeyCacheKeys: *cacheKeys,
	}
	s, err := sink.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter sink: %v\n", err)
		return 2
	}
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter sink: --listen: %v\n", err)
			return 1
		}
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "feedmeter sink: %v\n", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
