// Package sink moves usage events from Kafka into ClickHouse exactly once in
// effect: it consumes the usage topic (and the dead-letter topic) in a
// consumer group, buffers records, and flushes a batch by size or age —
// dedupe lookup, insert, progress, then offset commit, in that order. A
// record that cannot be decoded or validated becomes a reject (the rejects
// table and the dead-letter topic) and never blocks its partition.
//
// Why the ClickHouse tables stay exact through crashes, replays, rebalances
// and outages is argued in the schemas package.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
)

// Sink is a running Kafka-to-ClickHouse sink. Build it with New, run it
// with Run; serve Handler for /metrics and /healthz.
type Sink struct {
	cfg  Config
	log  *slog.Logger
	gath prometheus.Gatherer
	m    *metrics

	conn  driver.Conn
	st    *store
	kc    *kgo.Client
	cache *keyCache // nil when off; used by the writer, emptied on rebalances and failed writes
	// interners keep the repeating strings of the events across batches,
	// one for each half that decode decodes at once (only the loop decodes).
	interners [2]*model.Interner

	mu      sync.Mutex // guards pending, oldest, fetchIDs and suspect (the loop, the writer and the rebalance callbacks)
	pending []*kgo.Record
	oldest  time.Time
	// fetchIDs is the topic id (base64; "" when the fetch response had
	// none) each partition's records were fetched under, by partition
	// (offset 0): progress rows carry it. The client never changes a
	// topic's id while it runs (a topic made again stops the sink).
	fetchIDs map[source]string
	// suspect are the usage partitions (offset 0) that may hold events
	// whose insert failed in a view after usage_events was written (see
	// reconcile): those assigned (an owner before may have died so) and
	// those of a failed insert.
	suspect map[source]bool

	rebalanceWanted atomic.Bool
	// fatal is set when a topic was made again under the running sink (its
	// client fetches the old topic id for ever): it flushes what it holds
	// and stops.
	fatal atomic.Pointer[error]
	// unsettled is the query id of an INSERT whose outcome is unknown, ""
	// when there is none. The writer sets and clears it; the loop reads it
	// before an early lookup.
	unsettled atomic.Pointer[string]

	health struct {
		sync.Mutex
		running bool
		err     error // last ClickHouse error, nil after a success
	}
}

// New checks cfg and builds a Sink. It does not connect to anything.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink config: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &Sink{cfg: cfg, log: cfg.Logger, interners: [2]*model.Interner{model.NewInterner(), model.NewInterner()}}
	reg := cfg.Registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, s.gath = r, r
	} else if g, ok := reg.(prometheus.Gatherer); ok {
		s.gath = g
	}
	if cfg.KeyCacheKeys > 0 {
		s.cache = newKeyCache(cfg.KeyCacheKeys)
	}
	s.m = newMetrics(reg, s.cache.len)
	return s, nil
}

// Gatherer returns the registry the metrics are in (nil when Config.Registerer
// is not also a Gatherer).
func (s *Sink) Gatherer() prometheus.Gatherer { return s.gath }

// Handler serves /metrics (Prometheus) and /healthz: 200 "ok" while the sink
// runs and its last ClickHouse attempt succeeded, else 503 and the reason.
func (s *Sink) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.gath != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.gath, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		s.health.Lock()
		running, err := s.health.running, s.health.err
		s.health.Unlock()
		switch {
		case !running:
			http.Error(w, "not running", http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, "clickhouse: "+err.Error(), http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	})
	return mux
}

func (s *Sink) setHealth(err error) {
	s.health.Lock()
	s.health.err = err
	s.health.Unlock()
	if err != nil {
		s.m.up.Set(0)
		s.m.errors.Inc()
	} else {
		s.m.up.Set(1)
	}
}

// Run connects to ClickHouse (waiting for it with backoff), applies the
// migrations, joins the consumer group and sinks until ctx is cancelled.
//
// On cancellation Run flushes and commits what it buffered (trying for at
// most FlushTimeout; what it cannot flush is read again by the next owner),
// leaves the group and returns nil. It returns an error when it cannot
// start (bad configuration, a migration that fails), and when a topic was
// deleted and made again under it (the Kafka client cannot follow: see
// adjustOffsets); then it flushes what it holds first, and started again
// it reads the new topic from its start.
func (s *Sink) Run(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer s.conn.Close()
	kc, err := kgo.NewClient(s.kafkaOptions()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	s.kc = kc
	s.health.Lock()
	s.health.running = true
	s.health.Unlock()
	defer func() {
		s.health.Lock()
		s.health.running = false
		s.health.Unlock()
	}()
	s.log.Info("sink started", "brokers", s.cfg.Brokers, "topics", []string{s.cfg.Topic, s.cfg.DeadLetterTopic},
		"group", s.cfg.Group, "clickhouse", s.cfg.ClickHouse, "database", s.cfg.Database)
	// While idle, a ping every 5 s keeps /healthz and clickhouse_up true.
	pingDone := make(chan struct{})
	pingCtx, stopPing := context.WithCancel(ctx)
	defer stopPing()
	go func() {
		defer close(pingDone)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-pingCtx.Done():
				return
			case <-t.C:
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := s.conn.Ping(pctx)
				cancel()
				if ctx.Err() == nil {
					s.setHealth(err)
				}
			}
		}
	}()
	// The final flush may hold the partitions only until one FlushTimeout
	// after the cancellation (a write in flight then may already have used
	// it): rebalances wait for it.
	var stopped atomic.Pointer[time.Time]
	context.AfterFunc(ctx, func() { t := time.Now(); stopped.Store(&t) })
	s.loop(ctx)
	stopPing()
	<-pingDone
	// Hold the partitions through the final flush (the loop's last pass may
	// have allowed rebalances) until the client closes. Without it another
	// member could load a tenant's keys, then this flush insert more of them.
	s.holdPartitions()
	// Final flush with a context of its own: ctx is already cancelled.
	deadline := time.Now().Add(s.cfg.FlushTimeout)
	if t := stopped.Load(); t != nil {
		deadline = t.Add(s.cfg.FlushTimeout)
	}
	fctx, cancel := context.WithDeadline(context.Background(), deadline)
	if s.buffered() > 0 {
		s.flush(fctx, s.prepare(fctx, false))
	}
	cancel()
	kc.CloseAllowingRebalance()
	if errp := s.fatal.Load(); errp != nil {
		// What was buffered was written all the same, with the id it was
		// fetched under: the client never fetches a topic made again, so
		// it is all of the former life, whose records are gone from Kafka.
		s.log.Error("sink stopped", "err", *errp)
		return *errp
	}
	s.log.Info("sink stopped")
	return nil
}

// connect opens ClickHouse and applies the migrations, retrying while the
// server cannot be reached.
func (s *Sink) connect(ctx context.Context) error {
	b := s.backoff()
	for {
		conn, err := schemas.Connect(ctx, schemas.ConnOptions(s.cfg.ClickHouse, s.cfg.Database))
		if err == nil {
			if !s.cfg.SkipMigrate {
				var applied []schemas.Applied
				applied, err = schemas.Apply(ctx, conn)
				for _, a := range applied {
					s.log.Info("migration applied", "migration", a.Name, "statements", a.Statements)
				}
				if errors.Is(err, schemas.ErrChanged) {
					conn.Close()
					return err
				}
			}
			var st *store
			if err == nil {
				st, err = newStore(ctx, conn)
			}
			if err == nil {
				s.conn, s.st = conn, st
				s.setHealth(nil)
				return nil
			}
			conn.Close()
		}
		s.setHealth(err)
		s.log.Warn("clickhouse not ready; retrying", "err", err)
		if !b.wait(ctx) {
			return ctx.Err()
		}
	}
}

func (s *Sink) kafkaOptions() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topic, s.cfg.DeadLetterTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Only what a transaction committed is billed: an ingest killed
		// before its commit leaves records that its next run replaces
		// (with what the feed says then), and the dedupe keeps the first.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.RebalanceTimeout(s.cfg.RebalanceTimeout),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onRevoked),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { s.rebalanceWanted.Store(true) }),
		kgo.AdjustFetchOffsetsFn(s.adjustOffsets),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.WithLogger(kgoLogger{s.log}),
	}
	return append(opts, s.cfg.KafkaOptions...)
}

// onAssigned makes the usage partitions assigned suspect (reconcile): an
// owner before may have died after an insert that failed in a view.
func (s *Sink) onAssigned(_ context.Context, _ *kgo.Client, got map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range got[s.cfg.Topic] {
		if s.suspect == nil {
			s.suspect = map[source]bool{}
		}
		s.suspect[source{topic: s.cfg.Topic, partition: p}] = true
	}
}

// onRevoked drops the buffered records of partitions this member no longer
// owns. Nothing of theirs was committed, so the next owner reads them again.
// With BlockRebalanceOnPoll it never runs during a flush: the loop polls
// before it takes a batch, and allows rebalances only when no write is in
// flight.
func (s *Sink) onRevoked(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.rebalanceWanted.Store(false)
	s.forgetKeys()
	gone := map[string]map[int32]bool{}
	for t, ps := range lost {
		gone[t] = map[int32]bool{}
		for _, p := range ps {
			gone[t][p] = true
			s.m.lag.DeleteLabelValues(t, strconv.Itoa(int(p)))
		}
	}
	s.mu.Lock()
	kept := s.pending[:0]
	for _, r := range s.pending {
		if !gone[r.Topic][r.Partition] {
			kept = append(kept, r)
		}
	}
	dropped := len(s.pending) - len(kept)
	s.pending = kept
	if len(kept) == 0 {
		s.oldest = time.Time{}
	}
	s.m.buffered.Set(float64(len(kept)))
	s.mu.Unlock()
	s.log.Info("partitions revoked", "partitions", lost, "dropped_buffered", dropped)
}

// adjustOffsets starts each newly assigned partition from what ClickHouse
// holds when that is past the committed offset: an insert whose offset
// commit was lost is not read again. If ClickHouse cannot be asked, the
// committed offsets stand (records read again are found by the key lookup).
//
// Progress counts only for the topic's present life: a topic deleted and
// made again under its name starts its offsets again, so progress written
// under another topic id would skip its records. Such a partition is read
// from its start instead (the key lookup drops what ClickHouse holds), and
// a topic whose id changed under the running sink stops it.
func (s *Sink) adjustOffsets(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	topics := make([]string, 0, len(offs))
	for t := range offs {
		topics = append(topics, t)
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := s.topicIDsOf(qctx, topics)
	if err != nil {
		s.log.Warn("cannot read the topics' ids; resuming from committed offsets", "err", err)
		return offs, nil
	}
	prog, err := s.st.progress(qctx, topics)
	if err != nil {
		s.log.Warn("cannot read progress from clickhouse; resuming from committed offsets", "err", err)
		return offs, nil
	}
	for t, ps := range offs {
		for p, o := range ps {
			next, lives := prog.of(t, ids[t], p)
			switch {
			case next < 0 && lives > 0:
				s.log.Warn("clickhouse's progress is of an earlier life of this topic (another topic id): reading the partition from its start; the key lookup skips what clickhouse holds",
					"topic", t, "topic_id", ids[t], "partition", p, "committed", o.EpochOffset().Offset)
				ps[p] = kgo.NewOffset().AtStart()
			case next >= 0 && next > o.EpochOffset().Offset:
				s.log.Info("resuming past the committed offset from clickhouse progress",
					"topic", t, "partition", p, "committed", o.EpochOffset().Offset, "progress", next)
				ps[p] = kgo.NewOffset().At(next).WithEpoch(-1)
			case next >= 0 && next < o.EpochOffset().Offset && ids[t] != "":
				// Progress is written before every commit, so a committed
				// offset past the present life's progress is another
				// life's (a commit that named the topic only) or an older
				// release's: read again from progress (deduped) rather
				// than skip.
				s.log.Warn("committed offset past clickhouse progress of this topic's life: resuming from progress",
					"topic", t, "partition", p, "committed", o.EpochOffset().Offset, "progress", next)
				ps[p] = kgo.NewOffset().At(next).WithEpoch(-1)
			}
		}
	}
	return offs, nil
}

// topicIDsOf returns the present id of each topic, from the cluster's
// metadata ("" when the cluster has no topic ids).
func (s *Sink) topicIDsOf(ctx context.Context, topics []string) (map[string]string, error) {
	details, err := kadm.NewClient(s.kc).ListTopics(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(topics))
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			return nil, fmt.Errorf("metadata of topic %s: %v", t, d.Err)
		}
		out[t] = topicIDString(d.ID)
	}
	return out, nil
}

// topicIDString is a topic id as sink_progress holds it: base64, "" for
// none (all zero).
func topicIDString(id [16]byte) string {
	if id == ([16]byte{}) {
		return ""
	}
	return kadm.TopicID(id).String()
}

// doneCtx is a context that is already done.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// holdPartitions blocks rebalances until the next AllowRebalance (or the
// client's close), after waiting out one under way, whose revoke drops the
// buffered records of partitions lost: a poll with a done context returns
// no records but counts as a poll for kgo.BlockRebalanceOnPoll.
func (s *Sink) holdPartitions() { s.kc.PollRecords(doneCtx, 1) }

// forgetKeys empties the dedupe cache: when partitions are revoked or lost
// (another sink may write their tenants' keys from now on; a partition
// gained brings tenants this sink has not held since it last lost it) and
// after an insert into usage_events failed (it may have landed).
func (s *Sink) forgetKeys() {
	if s.cache != nil {
		s.cache.clear()
	}
}

// unsettledQuery returns the query id of an INSERT whose outcome is
// unknown, or "".
func (s *Sink) unsettledQuery() string {
	if q := s.unsettled.Load(); q != nil {
		return *q
	}
	return ""
}

func (s *Sink) buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// loop is the consumer loop: the only goroutine that polls. Flushes are
// pipelined one deep: while batch N is written to ClickHouse by a writer
// goroutine, the loop keeps fetching, then decodes batch N+1 and looks up
// its keys; batch N+1 is written only after batch N was committed (or
// abandoned, which discards N+1 too). Rebalances are allowed only while no
// batch is being written.
func (s *Sink) loop(ctx context.Context) {
	var inflight chan bool // result of the write in flight: committed or abandoned
	var cur *batch         // the batch in flight
	// settled ends the write in flight, which ended with ok; when it was
	// abandoned, next and everything buffered are dropped and their
	// partitions rewound too.
	settled := func(ok bool, next *batch) bool {
		inflight = nil
		if !ok {
			s.mu.Lock()
			rest := s.pending
			s.pending, s.oldest = nil, time.Time{}
			s.mu.Unlock()
			s.m.buffered.Set(0)
			more := rest
			if next != nil {
				more = append(next.recs, rest...)
			}
			s.rewind(cur, more)
		}
		cur = nil
		return ok
	}
	// finish waits for the write in flight and settles it.
	finish := func(next *batch) bool {
		if inflight == nil {
			return true
		}
		return settled(<-inflight, next)
	}
	defer finish(nil)
	// idChecked: when a topic whose fetches failed with UNKNOWN_TOPIC_ID
	// was last compared with its present id.
	idChecked := map[string]time.Time{}
	for ctx.Err() == nil && s.fatal.Load() == nil {
		s.mu.Lock()
		n, oldest := len(s.pending), s.oldest
		s.mu.Unlock()
		wait := s.cfg.BatchAge
		if n > 0 {
			wait = time.Until(oldest.Add(s.cfg.BatchAge))
		}
		if inflight != nil && s.rebalanceWanted.Load() {
			// A rebalance waits: stop fetching, let the write finish.
			finish(nil)
		} else if n < s.cfg.BatchRows && wait > 0 {
			pctx, cancel := context.WithTimeout(ctx, wait)
			fs := s.kc.PollRecords(pctx, s.cfg.BatchRows-n)
			cancel()
			if fs.IsClientClosed() {
				return
			}
			s.fetchErrors(ctx, fs, idChecked)
			s.add(fs)
		}
		if inflight != nil {
			// A write that ended while the partitions were quiet: an
			// abandoned batch is rewound now, not when the next comes.
			select {
			case ok := <-inflight:
				settled(ok, nil)
			default:
			}
		}
		s.mu.Lock()
		n, oldest = len(s.pending), s.oldest
		s.mu.Unlock()
		if n > 0 && (n >= s.cfg.BatchRows || time.Since(oldest) >= s.cfg.BatchAge) && !s.rebalanceWanted.Load() {
			// Hold the partitions before taking the batch: this pass may
			// not have polled since the last one allowed rebalances.
			s.holdPartitions()
			if s.buffered() > 0 {
				next := s.prepare(ctx, cur != nil)
				prev := cur
				if !finish(next) {
					continue
				}
				if prev != nil && next.pre != nil {
					next.pre.exclude(prev, next)
				}
				cur, inflight = next, make(chan bool, 1)
				// Not cancelled with ctx: a write in flight at shutdown
				// finishes (or is abandoned after FlushTimeout).
				go func(b *batch, done chan<- bool) { done <- s.flush(context.WithoutCancel(ctx), b) }(next, inflight)
			}
		}
		if inflight == nil {
			s.kc.AllowRebalance()
			s.rebalanceWanted.Store(false)
		}
	}
}

// fetchErrors logs the fetch errors of fs. A fetch that failed with
// UNKNOWN_TOPIC_ID names the id it was made under (the client never adopts
// a topic's new id): when the topic's present id differs (asked at most
// once a second a topic; checked holds when), the topic was made again and
// s.fatal stops the sink.
func (s *Sink) fetchErrors(ctx context.Context, fs kgo.Fetches, checked map[string]time.Time) {
	fs.EachTopic(func(ft kgo.FetchTopic) {
		unknown := false
		for _, p := range ft.Partitions {
			if p.Err == nil || errors.Is(p.Err, context.DeadlineExceeded) || errors.Is(p.Err, context.Canceled) {
				continue
			}
			s.log.Warn("fetch error", "topic", ft.Topic, "partition", p.Partition, "err", p.Err)
			unknown = unknown || errors.Is(p.Err, kerr.UnknownTopicID)
		}
		if !unknown || time.Since(checked[ft.Topic]) < time.Second {
			return
		}
		checked[ft.Topic] = time.Now()
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ids, err := s.topicIDsOf(mctx, []string{ft.Topic})
		cancel()
		if old := topicIDString(ft.TopicID); err == nil && old != "" && ids[ft.Topic] != "" && ids[ft.Topic] != old {
			err := fmt.Errorf("topic %s was deleted and made again while the sink ran (fetched under id %s, now %s), "+
				"and its Kafka client cannot follow a topic to a new id; stopping (started again, the sink reads the new topic from its start)", ft.Topic, old, ids[ft.Topic])
			s.fatal.CompareAndSwap(nil, &err)
		}
	})
}

// add buffers the records of fs and updates the lag gauges.
func (s *Sink) add(fs kgo.Fetches) {
	now := time.Now()
	s.mu.Lock()
	fs.EachTopic(func(t kgo.FetchTopic) {
		id := topicIDString(t.TopicID)
		for _, p := range t.Partitions {
			if len(p.Records) == 0 {
				continue
			}
			if len(s.pending) == 0 {
				s.oldest = now
			}
			s.pending = append(s.pending, p.Records...)
			if s.fetchIDs == nil {
				s.fetchIDs = map[source]string{}
			}
			s.fetchIDs[source{topic: t.Topic, partition: p.Partition}] = id

			s.m.records.WithLabelValues(t.Topic).Add(float64(len(p.Records)))
			last := p.Records[len(p.Records)-1].Offset
			s.m.lag.WithLabelValues(t.Topic, strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - last - 1))
		}
	})
	s.m.buffered.Set(float64(len(s.pending)))
	s.mu.Unlock()
}

func (s *Sink) hook(point string) {
	if s.cfg.Hook != nil {
		s.cfg.Hook(point)
	}
}

// batch is a set of records on its way to ClickHouse.
type batch struct {
	recs        []*kgo.Record
	d           *decoded
	first, last map[source]*kgo.Record // first and last record per partition (offset 0 in the key)
	ids         map[source]string      // the topic id each partition's records were fetched under (fetchIDs)
	start, now  time.Time
	usageCols   []any    // the usage_events columns of all of d.usage, built early; used when all are new
	keys        *lookups // every key and fingerprint of the batch
	pre         *lookups // keys found by a lookup made while the previous batch was written; first attempt only
	// planSent is set once the dead letters of a usage plan (conflicts)
	// were produced: every attempt plans again, and finds the same ones.
	planSent bool
	// counted is set once the plan's figures went to the metrics (the
	// plan of the attempt that inserted; later attempts find its rows).
	counted bool
	// refusedReps are the rows of a replace that the server refused with
	// an error: some may have landed all the same (ClickHouse writes a
	// table, then its views one by one, and a view may fail), and then the
	// rollups may be wrong for them.
	refusedReps []replacement
}

// lookups are dedupe keys found in (or belonging to) the tables of other
// events and rejects (usage events are planned by the writer: planUsage).
type lookups struct {
	other   map[key]bool
	rejects map[rejectKey]bool
}

// exclude adds the keys of b that prev, written and committed after l was
// looked up, holds to l: they are in ClickHouse now.
func (l *lookups) exclude(prev, b *batch) {
	// Only the keys of b matter: look them up in prev rather than copy
	// all of prev (a copy of 50,000 keys grew the map, slowly).
	both(l.other, b.keys.other, prev.keys.other)
	both(l.rejects, b.keys.rejects, prev.keys.rejects)
}

// both adds to dst the keys of a that are also in b.
func both[K comparable](dst, a, b map[K]bool) {
	for k := range a {
		if b[k] {
			dst[k] = true
		}
	}
}

// prepare takes the buffered records and decodes them. With early set (a
// batch is being written) it also looks the keys up now, to overlap with
// that write; a failed early lookup is simply redone by the write.
func (s *Sink) prepare(ctx context.Context, early bool) *batch {
	s.mu.Lock()
	recs := s.pending
	s.pending, s.oldest = nil, time.Time{}
	ids := maps.Clone(s.fetchIDs)
	s.mu.Unlock()
	s.m.buffered.Set(0)
	b := &batch{recs: recs, ids: ids, start: time.Now(), first: map[source]*kgo.Record{}, last: map[source]*kgo.Record{}}
	b.now = b.start.UTC().Truncate(time.Second)
	b.d = s.decode(recs, b.now)
	setTopicIDs(b.d.rejects, ids)
	if n := b.d.misrouted; n > 0 {
		// Still counted once: the dedupe key holds whatever the key. But
		// two sinks may then write one tenant at once (schemas: what the
		// argument assumes).
		s.m.misrouted.Add(float64(n))
		s.log.Warn("usage records not keyed by their tenant; exactly-once needs the producer to key them by tenant",
			"records", n, "first", b.d.first.String())
	}
	for i := range b.d.usage {
		b.d.usage[i].seq = i // Kafka order, which decides the copy that counts
	}
	b.d.usage, b.d.other = sortRows(b.d.usage), sortRows(b.d.other)
	for _, r := range recs {
		k := source{topic: r.Topic, partition: r.Partition}
		if b.first[k] == nil {
			b.first[k] = r
		}
		b.last[k] = r
	}
	b.keys = &lookups{other: make(map[key]bool, len(b.d.other)), rejects: make(map[rejectKey]bool, len(b.d.rejects))}
	for _, r := range b.d.other {
		b.keys.other[r.ev.Key()] = true
	}
	for _, r := range b.d.rejects {
		b.keys.rejects[r.key()] = true
	}
	if early {
		// Build the insert now, while the previous batch is written: it is
		// used as is when the lookup finds no duplicate (the usual case).
		b.usageCols = usageCols(b.d.usage, b.now)
		// No early lookup while an INSERT of unknown outcome may still be
		// running (the writer settles it first): rows of an abandoned
		// batch, read again into this one, could land after the lookup.
		if s.unsettledQuery() == "" {
			if pre, err := s.lookup(ctx, b); err == nil {
				b.pre = pre
			}
		}
	}
	return b
}

// lookup returns which of b's other-event keys and rejects the tables hold.
func (s *Sink) lookup(ctx context.Context, b *batch) (*lookups, error) {
	var l lookups
	var err error
	if l.other, err = s.st.existingKeys(ctx, "other_events", mapKeys(b.keys.other)); err != nil {
		return nil, err
	}
	if l.rejects, err = s.st.existingRejects(ctx, b.d.rejects); err != nil {
		return nil, err
	}
	return &l, nil
}

func mapKeys[K comparable](m map[K]bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// flush writes a batch: dead letters to Kafka, rejects, events and
// progress to ClickHouse, then commits the offsets. It retries failures
// with backoff; after FlushTimeout, or when a rebalance is waiting and a
// retry failed, it abandons the batch and returns false: nothing is
// committed, and the caller rewinds the partitions.
func (s *Sink) flush(ctx context.Context, b *batch) bool {
	s.hook("before-insert")
	bo := s.backoff()
	dlSent := false
	for {
		err := s.produceDeadLetters(ctx, b.d.deadLetters, &dlSent)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, s.cfg.FlushTimeout)
			err = s.write(actx, b)
			cancel()
		}
		if err == nil {
			break
		}
		s.setHealth(err)
		s.log.Warn("flush failed; retrying", "records", len(b.recs), "err", err)
		if ctx.Err() != nil || time.Since(b.start) > s.cfg.FlushTimeout || s.rebalanceWanted.Load() || !bo.wait(ctx) {
			if q := s.unsettledQuery(); q != "" {
				// Make sure the last INSERT is over before another sink may
				// take these partitions; unreachable means the server is down
				// and runs nothing.
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				if s.st.settle(sctx, q) == nil {
					s.unsettled.Store(nil)
				}
				cancel()
			}
			s.m.batches.WithLabelValues("abandoned").Inc()
			s.log.Warn("flush abandoned; records will be read again", "records", len(b.recs), "err", err)
			return false
		}
	}
	s.setHealth(nil)
	s.m.insertSecs.Observe(time.Since(b.start).Seconds())
	s.hook("after-insert")

	commit := make([]*kgo.Record, 0, len(b.last))
	for _, r := range b.last {
		commit = append(commit, r)
	}
	if err := s.kc.CommitRecords(ctx, commit...); err != nil {
		// The rows are in ClickHouse: whoever reads these records again
		// skips them (progress and key lookup).
		s.m.commitErrs.Inc()
		s.log.Warn("offset commit failed after insert", "err", err)
	}
	s.hook("after-commit")
	s.m.batches.WithLabelValues("ok").Inc()
	s.m.flushSecs.Observe(time.Since(b.start).Seconds())
	return true
}

// decode decodes recs in order, in two halves at once when there are many
// (decoding is most of the sink's own CPU time). The halves write their
// usage rows into one slice, so that joining them copies nothing in the
// usual batch (all usage events).
func (s *Sink) decode(recs []*kgo.Record, now time.Time) *decoded {
	rows := make([]eventRow, 0, len(recs))
	one := func(recs []*kgo.Record, usage []eventRow, in *model.Interner) *decoded {
		d := &decoded{usage: usage, in: in}
		for _, r := range recs {
			if r.Topic == s.cfg.DeadLetterTopic {
				d.decodeDeadLetter(r, now)
			} else {
				d.decodeUsage(r, now)
			}
		}
		return d
	}
	if len(recs) < 2000 {
		return one(recs, rows, s.interners[0])
	}
	half := len(recs) / 2
	var b *decoded
	done := make(chan struct{})
	go func() {
		b = one(recs[half:], rows[half:half:len(recs)], s.interners[1])
		close(done)
	}()
	a := one(recs[:half], rows[:0:half], s.interners[0])
	<-done
	// b's rows begin at rows[half]: move them down to follow a's.
	if n := len(a.usage); n < half {
		copy(rows[n:n+len(b.usage)], b.usage)
	}
	a.usage = rows[:len(a.usage)+len(b.usage)]
	a.other = append(a.other, b.other...)
	a.rejects = append(a.rejects, b.rejects...)
	a.deadLetters = append(a.deadLetters, b.deadLetters...)
	if a.misrouted == 0 {
		a.first = b.first
	}
	a.misrouted += b.misrouted
	return a
}

// rewind sets every partition of b and of more back to its first record
// there: they are read again.
func (s *Sink) rewind(b *batch, more []*kgo.Record) {
	to := map[string]map[int32]kgo.EpochOffset{}
	set := func(r *kgo.Record) {
		if to[r.Topic] == nil {
			to[r.Topic] = map[int32]kgo.EpochOffset{}
		}
		if at, ok := to[r.Topic][r.Partition]; !ok || r.Offset < at.Offset {
			to[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	for _, r := range b.first {
		set(r)
	}
	for _, r := range more {
		set(r)
	}
	s.kc.SetOffsets(to)
}

// produceDeadLetters sends the sink's own dead letters to the dead-letter
// topic, once per flush (sent).
func (s *Sink) produceDeadLetters(ctx context.Context, dls []rejectRow, sent *bool) error {
	if *sent || len(dls) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(dls))
	for _, r := range dls {
		v, err := r.dl.MarshalJSON()
		if err != nil {
			return fmt.Errorf("encode dead letter for %s: %w", r.src, err)
		}
		recs = append(recs, &kgo.Record{Topic: s.cfg.DeadLetterTopic, Key: []byte(r.dl.TenantID), Value: v})
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.FlushTimeout)
	defer cancel()
	if err := s.kc.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		if errors.Is(err, kerr.UnknownTopicID) {
			// The dead-letter topic was made again: kgo fails every record
			// produced to it for ever unless the topic is purged from
			// producing (consuming it is not touched); the retry loads
			// its new id.
			s.kc.PurgeTopicsFromProducing(s.cfg.DeadLetterTopic)
		}
		return fmt.Errorf("produce %d dead letters: %w", len(recs), err)
	}
	*sent = true
	return nil
}

// write does one attempt at the ClickHouse part of a flush. Every step is
// safe to repeat: the usage plan is made again from what ClickHouse holds,
// and the lookups skip what an earlier attempt inserted. Only the first
// attempt may use the early lookup (b.pre).
func (s *Sink) write(ctx context.Context, b *batch) error {
	pre := b.pre
	b.pre = nil
	d, now := b.d, b.now
	if q := s.unsettledQuery(); q != "" {
		pre = nil
		if err := s.st.settle(ctx, q); err != nil {
			return err
		}
		s.unsettled.Store(nil)
	}
	track := func(err error) error {
		var ie *insertError
		if errors.As(err, &ie) {
			s.unsettled.Store(&ie.queryID)
		}
		return err
	}
	// Usage events: what is new, what is a copy, what a correction
	// replaces, from what ClickHouse holds now.
	var plan *usagePlan
	if err := s.partialWrites(ctx, b); err != nil {
		return err
	}
	if err := s.reconcile(ctx, b); err != nil {
		return err
	}
	if len(d.usage) > 0 {
		look, err := s.lookupIDs(ctx, d.usage)
		if err != nil {
			return err
		}
		if plan, err = planUsage(ctx, s.st, d.usage, look, now); err != nil {
			return err
		}
		for _, a := range plan.anomalies {
			s.log.Error("correction tree without a counted row", "tree", a)
		}
		if err := s.produceDeadLetters(ctx, plan.rejects, &b.planSent); err != nil {
			return err
		}
	}
	// Rejects: each (fingerprint, record) once; the decoder's are done
	// after their first insert, the plan's are looked up every attempt.
	rejects := d.rejects
	if plan != nil && len(plan.rejects) > 0 {
		setTopicIDs(plan.rejects, b.ids)
		rejects = append(slices.Clip(rejects), plan.rejects...)
		pre = nil
	}
	if len(rejects) > 0 {
		var found map[rejectKey]bool
		if pre != nil {
			found = pre.rejects
		} else {
			var err error
			if found, err = s.st.existingRejects(ctx, rejects); err != nil {
				return err
			}
		}
		var rows []rejectRow
		for _, r := range rejects {
			if k := r.key(); !has(found, k) {
				found[k] = true
				rows = append(rows, r)
			}
		}
		if len(rows) > 0 {
			if err := s.st.insert(ctx, newQueryID(), "rejects", rejectColumns, fillRejects(rows, now)); err != nil {
				return track(err)
			}
			for _, r := range rows {
				s.m.rejects.WithLabelValues(r.dl.Stage).Inc()
			}
			s.m.rows.WithLabelValues("rejects").Add(float64(len(rows)))
		}
		d.rejects = nil
	}
	if plan != nil {
		if err := s.writeUsage(ctx, b, plan, track); err != nil {
			return err
		}
	}
	if len(d.other) > 0 {
		existing := func(ctx context.Context, rows []eventRow) (map[key]bool, error) {
			return s.st.existingKeys(ctx, "other_events", rowKeys(rows))
		}
		var found map[key]bool
		if pre != nil {
			found = pre.other
		}
		rows, err := s.fresh(ctx, d.other, b.keys.other, found, existing)
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			if err := s.st.insert(ctx, newQueryID(), "other_events", otherColumns, fillOther(rows, now)); err != nil {
				return track(err)
			}
		}
		s.m.rows.WithLabelValues("other_events").Add(float64(len(rows)))
		s.m.duplicates.WithLabelValues("other_events").Add(float64(len(d.other) - len(rows)))
		d.other = nil
	}
	next := make(map[source]bool, len(b.last))
	for k, r := range b.last {
		next[source{k.topic, k.partition, r.Offset + 1}] = true
	}
	cols, fill := s.st.progressInsert(next, b.ids, now)
	if err := s.st.insert(ctx, newQueryID(), "sink_progress", cols, fill); err != nil {
		return track(err)
	}
	return nil
}

// writeUsage carries out a usage plan: the new events into usage_events
// (views write their pieces into the rollups), then the rows that stop
// counting into usage_replaced (views take their pieces back out), then the
// copies. In that order: an attempt cut short after the insert leaves the
// replaced rows counted until the next attempt (or the next owner of the
// partition, reading the batch again) plans the same batch again and finds
// them still counted; the other order could leave a correction's original
// taken out and the correction never counted.
func (s *Sink) writeUsage(ctx context.Context, b *batch, plan *usagePlan, track func(error) error) error {
	d, now := b.d, b.now
	if plan.inserts > 0 {
		rows := d.usage
		fill := func(bt driver.Batch) error { return appendColumns(bt, b.usageCols...) }
		if plan.inserts < len(d.usage) {
			rows = make([]eventRow, 0, plan.inserts)
			for i := range d.usage {
				if plan.insert[i] {
					rows = append(rows, d.usage[i])
				}
			}
		}
		if plan.inserts < len(d.usage) || b.usageCols == nil {
			fill = fillUsage(rows, now)
		}
		err := s.st.insert(ctx, newQueryID(), "usage_events", usageColumns, fill)
		s.usageInserted(rows, err)
		if err != nil {
			// Its views may have failed after the table was written.
			s.suspectOf(b)
			return track(err)
		}
		s.m.rows.WithLabelValues("usage_events").Add(float64(len(rows)))
	}
	if !b.counted {
		// The figures of the plan that inserted: a later attempt finds
		// its rows and would call them duplicates.
		b.counted = true
		s.m.duplicates.WithLabelValues("usage_events").Add(float64(plan.dups))
		s.m.republished.Add(float64(plan.republished))
		for _, c := range plan.copies {
			if c.conflict {
				s.m.conflicts.Inc()
			}
		}
		for i := range d.usage {
			if plan.insert[i] && d.usage[i].ev.ReferenceID != "" {
				s.m.corrections.Inc()
			}
		}
	}
	if len(plan.replace) > 0 {
		s.hook("before-replace")
		if err := s.st.replace(ctx, newQueryID(), plan.replace, now); err != nil {
			if ie := (*insertError)(nil); !errors.As(err, &ie) {
				b.refusedReps = plan.replace
			}
			return track(err)
		}
		s.m.replaced.Add(float64(len(plan.replace)))
		s.m.rows.WithLabelValues("usage_replaced").Add(float64(len(plan.replace)))
	}
	if len(plan.copies) > 0 {
		// A copy recorded twice (a replay) is folded by the table.
		if err := s.st.insert(ctx, newQueryID(), "usage_copies", copyColumns, fillCopies(plan.copies, now)); err != nil {
			return track(err)
		}
		s.m.rows.WithLabelValues("usage_copies").Add(float64(len(plan.copies)))
	}
	d.usage = nil
	return nil
}

// reconcile mends what an INSERT into usage_events that failed may have
// left: ClickHouse writes an INSERT's block into the table, then into its
// views one by one, so a view that fails (TOO_MANY_PARTS, a memory limit on
// its table) leaves the table written and the views before it. A row of
// usage_events without its usage_ids rows is one of those: the plan would
// take it for new and insert it again. Such rows can only be of records the
// partition's progress has not passed (progress is written after the
// inserts), so for each suspect partition (a failed insert, an assignment)
// of b, reconcile reads the usage_events rows at or past its progress, once, and
// writes the usage_ids rows they lack. It reads the table's offsets of every
// event, so it runs only then, not for every batch.
func (s *Sink) reconcile(ctx context.Context, b *batch) error {
	s.mu.Lock()
	var parts []source // the suspect partitions of b
	for k := range b.first {
		if s.suspect[k] {
			parts = append(parts, k)
		}
	}
	s.mu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	prog, err := s.st.progress(ctx, []string{s.cfg.Topic})
	if err != nil {
		return err
	}
	from := make(map[int32]int64, len(parts))
	for _, k := range parts {
		next, _ := prog.of(k.topic, b.ids[k], k.partition)
		from[k.partition] = max(next, 0)
	}
	landed, err := s.st.eventsPast(ctx, s.cfg.Topic, from)
	if err != nil {
		return err
	}
	if len(landed) > 0 {
		ids := make([]idKey, 0, len(landed))
		for k, ref := range landed {
			ids = append(ids, idKey{k.tenant, k.kind, k.eventID})
			if ref != "" {
				ids = append(ids, idKey{k.tenant, k.kind, ref})
			}
		}
		indexed, err := s.st.ids(ctx, ids)
		if err != nil {
			return err
		}
		// Each row by its id, and a correction by the id it names too.
		have := map[rowKey]uint8{}
		for _, r := range indexed {
			have[r.row()] |= 1 << r.role
		}
		var missing []rowKey
		for k, ref := range landed {
			want := uint8(1)
			if ref != "" {
				want |= 2
			}
			if have[k]&want != want {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			if err := s.st.repairIDs(ctx, missing); err != nil {
				return err
			}
			s.forgetKeys()
			s.m.partial.Add(float64(len(missing)))
			s.log.Error("usage_events holds events whose insert failed in a view (their usage_ids rows were missing, now written): the rollups may miss them; see v_rollup_check",
				"rows", len(missing))
		}
	}
	s.mu.Lock()
	for _, k := range parts {
		delete(s.suspect, k)
	}
	s.mu.Unlock()
	return nil
}

// suspectOf makes the usage partitions of b suspect (reconcile).
func (s *Sink) suspectOf(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range b.first {
		if k.topic == s.cfg.Topic {
			if s.suspect == nil {
				s.suspect = map[source]bool{}
			}
			s.suspect[k] = true
		}
	}
}

// partialWrites says so when a replace the server refused with an error
// wrote rows of usage_replaced all the same (a view of it failed after the
// table was written): the rollups may still count them. The plan reads
// usage_replaced itself, so it does not replace them again.
func (s *Sink) partialWrites(ctx context.Context, b *batch) error {
	if len(b.refusedReps) == 0 {
		return nil
	}
	ids := make([]idKey, len(b.refusedReps))
	for i, r := range b.refusedReps {
		ids[i] = idKey{r.row.tenant, r.row.kind, r.row.eventID}
	}
	landed, err := s.st.replacedRows(ctx, ids)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range b.refusedReps {
		if landed[r.row] {
			n++
		}
	}
	if n > 0 {
		s.m.partial.Add(float64(n))
		s.log.Error("a replace the server refused wrote rows all the same (a view failed after usage_replaced was written): the rollups may still count them; see v_rollup_check",
			"rows", n)
	}
	b.refusedReps = nil
	return nil
}

// usageInserted keeps the key cache complete after an insert into
// usage_events: the rows are added when it was acknowledged, and the cache
// is emptied when it failed (the rows may have landed).
func (s *Sink) usageInserted(rows []eventRow, err error) {
	switch {
	case err != nil:
		s.forgetKeys()
	case s.cache != nil:
		s.cache.add(rows)
	}
}

// fresh returns the rows whose keys are neither in the table nor earlier
// in rows. keys are the distinct keys of rows; found, when not nil, is what
// a lookup already found in the table, else existing looks the distinct
// rows up.
func (s *Sink) fresh(ctx context.Context, rows []eventRow, keys, found map[key]bool,
	existing func(context.Context, []eventRow) (map[key]bool, error)) ([]eventRow, error) {
	uniq := rows
	if len(keys) < len(rows) {
		// A key twice in rows: keep the first.
		seen := make(map[key]bool, len(keys))
		uniq = make([]eventRow, 0, len(keys))
		for _, r := range rows {
			if k := r.ev.Key(); !seen[k] {
				seen[k] = true
				uniq = append(uniq, r)
			}
		}
	}
	if found == nil {
		var err error
		if found, err = existing(ctx, uniq); err != nil {
			return nil, err
		}
	}
	drop := 0
	for i := range uniq {
		if found[uniq[i].ev.Key()] {
			drop++
		}
	}
	if drop == 0 {
		return uniq, nil // the usual case
	}
	out := make([]eventRow, 0, len(uniq)-drop)
	for _, r := range uniq {
		if !found[r.ev.Key()] {
			out = append(out, r)
		}
	}
	return out, nil
}

func newQueryID() string { return "feedmeter-sink-" + uuid.NewString() }

// backoff doubles a wait from BackoffMin to BackoffMax.
type backoff struct{ next, max time.Duration }

func (s *Sink) backoff() *backoff { return &backoff{s.cfg.BackoffMin, s.cfg.BackoffMax} }

// wait sleeps for the next interval; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// kgoLogger sends kgo's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }
func (k kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	if level == kgo.LogLevelError {
		k.l.Error("kafka: "+msg, kv...)
	} else {
		k.l.Warn("kafka: "+msg, kv...)
	}
}
