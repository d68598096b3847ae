package ingest

// The Kafka glue. Tenants are spread over Partitions "slots" (hash of the
// tenant id). A process owns a slot through Kafka's group membership (the
// consumer group over the tenants topic, one partition per slot) and
// publishes its tenants' pages with the slot's transactional producer
// ("<prefix>-<slot>"). A new owner's first transaction fences the previous
// owner's producer, which aborts whatever it left open, and the checkpoints
// of the slot live in the same-numbered partition of the checkpoints topic:
// the owner reads them up to its own fencing record, so it always starts
// from the last committed page, never from a half-published one.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
)

// KafkaConfig says where and how ingest publishes.
type KafkaConfig struct {
	Brokers []string
	// Topics (defaults: model.TopicUsage, model.TopicCheckpoints,
	// model.TopicDeadLetter, "feedmeter.ingest.tenants").
	UsageTopic, CheckpointTopic, DeadLetterTopic, TenantsTopic string
	// Slots is the number of partitions of the tenants and checkpoints
	// topics: the unit of ownership (default 16). It must not change once
	// the topics exist.
	Slots int32
	// UsagePartitions for a usage topic that does not exist yet (default 8).
	UsagePartitions int32
	// TxnPrefix names the transactional producers (default
	// "feedmeter-ingest").
	TxnPrefix string
	// TransactionTimeout bounds how long a dead process's open transaction
	// can hold back readers (default 20s).
	TransactionTimeout time.Duration
	Log                *slog.Logger
	// Hook, when set, is called at the points of a page's transaction:
	// "produced" (records buffered), "flushed" (written, not committed) and
	// "committed". Tests kill the process there.
	Hook func(point string)
}

func (c *KafkaConfig) hook(point string) {
	if c.Hook != nil {
		c.Hook(point)
	}
}

func (c *KafkaConfig) defaults() {
	if c.UsageTopic == "" {
		c.UsageTopic = model.TopicUsage
	}
	if c.CheckpointTopic == "" {
		c.CheckpointTopic = model.TopicCheckpoints
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = model.TopicDeadLetter
	}
	if c.TenantsTopic == "" {
		c.TenantsTopic = "feedmeter.ingest.tenants"
	}
	if c.Slots == 0 {
		c.Slots = 16
	}
	if c.UsagePartitions == 0 {
		c.UsagePartitions = 8
	}
	if c.TxnPrefix == "" {
		c.TxnPrefix = "feedmeter-ingest"
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 20 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Slot returns the slot of a tenant.
func (c *KafkaConfig) Slot(tenant string) int32 {
	h := fnv.New32a()
	h.Write([]byte(tenant))
	return int32(h.Sum32() % uint32(c.Slots))
}

// EnsureTopics creates the topics that do not exist yet.
func EnsureTopics(ctx context.Context, cfg KafkaConfig) error {
	cfg.defaults()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	for _, t := range []struct {
		name  string
		parts int32
		conf  map[string]*string
	}{
		{cfg.UsageTopic, cfg.UsagePartitions, nil},
		{cfg.DeadLetterTopic, 1, nil},
		{cfg.CheckpointTopic, cfg.Slots, map[string]*string{"cleanup.policy": &compact}},
		{cfg.TenantsTopic, cfg.Slots, nil},
	} {
		_, err := adm.CreateTopic(ctx, t.parts, -1, t.conf, t.name)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
	}
	return nil
}

// slotPartitioner puts checkpoint records in the partition they name and
// hashes the others by key (so a tenant's events stay in order).
type slotPartitioner struct {
	checkpoints string
	hashed      kgo.Partitioner
}

func (p slotPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == p.checkpoints {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return p.hashed.ForTopic(t)
}

// SlotProducer publishes one slot's batches in transactions.
type SlotProducer struct {
	cfg  KafkaConfig
	slot int32
	cl   *kgo.Client
}

const claimKey = "claim"

// OpenSlot takes a slot over: it fences any previous owner, then reads the
// slot's checkpoints (keyed by Checkpoint.Key) as of that moment.
func OpenSlot(ctx context.Context, cfg KafkaConfig, slot int32, owner string) (*SlotProducer, map[string]Checkpoint, error) {
	cfg.defaults()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.TransactionalID(cfg.TxnPrefix+"-"+strconv.Itoa(int(slot))),
		kgo.TransactionTimeout(cfg.TransactionTimeout),
		kgo.RecordPartitioner(slotPartitioner{cfg.CheckpointTopic, kgo.StickyKeyPartitioner(nil)}),
		kgo.ProducerLinger(0),
		// A record batch over a broker's max.message.bytes (about 1 MB by
		// default) fails its page on every try: franz-go's own default,
		// not more. A transaction spans as many batches as it needs.
		kgo.ProducerBatchMaxBytes(1_000_000),
		kgo.MaxBufferedRecords(1<<20),
	)
	if err != nil {
		return nil, nil, err
	}
	sp := &SlotProducer{cfg: cfg, slot: slot, cl: cl}
	// The claim: the first transaction of this producer id fences the
	// last owner's, and marks how far the checkpoints must be read.
	claim, _ := json.Marshal(map[string]any{"owner": owner, "slot": slot, "time": time.Now().UTC()})
	var offset int64
	err = sp.inTxn(ctx, func() error {
		r := &kgo.Record{Topic: cfg.CheckpointTopic, Partition: slot, Key: []byte(claimKey), Value: claim}
		res := cl.ProduceSync(ctx, r)
		if err := res.FirstErr(); err != nil {
			return err
		}
		offset = res[0].Record.Offset
		return nil
	})
	if err != nil {
		cl.Close()
		return nil, nil, fmt.Errorf("claim slot %d: %w", slot, err)
	}
	cps, err := readCheckpoints(ctx, cfg, slot, offset)
	if err != nil {
		cl.Close()
		return nil, nil, fmt.Errorf("read checkpoints of slot %d: %w", slot, err)
	}
	return sp, cps, nil
}

// readCheckpoints reads a slot's checkpoint partition (committed records
// only) up to offset.
func readCheckpoints(ctx context.Context, cfg KafkaConfig, slot int32, upTo int64) (map[string]Checkpoint, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.CheckpointTopic: {slot: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	cps := map[string]Checkpoint{}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, e := range fs.Errors() {
			return nil, fmt.Errorf("partition %d: %w", e.Partition, e.Err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= upTo {
				done = true
			}
			if r.Offset > upTo || string(r.Key) == claimKey {
				return
			}
			var cp Checkpoint
			if err := json.Unmarshal(r.Value, &cp); err != nil {
				cfg.Log.Error("unreadable checkpoint record skipped", "slot", slot, "offset", r.Offset, "err", err)
				return
			}
			cps[string(r.Key)] = cp
		})
		if done {
			return cps, nil
		}
	}
}

// inTxn runs fn in a transaction and commits it, or aborts it on error.
func (sp *SlotProducer) inTxn(ctx context.Context, fn func() error) error {
	if err := sp.cl.BeginTransaction(); err != nil {
		return err
	}
	err := fn()
	if err == nil {
		err = sp.cl.Flush(ctx)
	}
	if err != nil {
		// Aborting needs a context that is still alive.
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if aerr := sp.cl.AbortBufferedRecords(actx); aerr != nil {
			err = errors.Join(err, aerr)
		}
		if aerr := sp.cl.EndTransaction(actx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return err
	}
	return sp.cl.EndTransaction(ctx, kgo.TryCommit)
}

// maxDeadLetterRaw bounds the entry bytes a dead letter carries, and
// maxDeadLetterText each of its texts: base64 and JSON escapes included,
// a dead letter stays well under a broker's default max.message.bytes
// (1 MB). maxEventBytes bounds a usage record; a larger event (a field of a
// megabyte) is dead-lettered instead (batchOf).
const (
	maxDeadLetterRaw  = 256 << 10
	maxDeadLetterText = 4 << 10
	maxEventBytes     = 900 << 10
)

// cut shortens s to maxDeadLetterText bytes, saying so.
func cut(s string) string {
	if len(s) <= maxDeadLetterText {
		return s
	}
	n := maxDeadLetterText
	for n > 0 && !utf8.RuneStart(s[n]) { // not inside a character
		n--
	}
	return s[:n] + fmt.Sprintf("… (%d bytes in all)", len(s))
}

// Publish commits a batch: its events, its dead letters and its checkpoint
// in one transaction.
func (sp *SlotProducer) Publish(ctx context.Context, b *Batch) error {
	err := sp.inTxn(ctx, func() error {
		var firstErr error
		promise := func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}
		key := []byte(b.Tenant)
		buf := make([]byte, 0, len(b.Events)*700)
		for i := range b.Events { // each within maxEventBytes (batchOf)
			e := &b.Events[i]
			start := len(buf)
			buf = e.AppendJSON(buf)
			sp.cl.Produce(ctx, &kgo.Record{
				Topic: sp.cfg.UsageTopic, Key: key, Value: buf[start:len(buf):len(buf)],
				Headers: []kgo.RecordHeader{
					{Key: model.HeaderKind, Value: []byte(e.Kind)},
					{Key: model.HeaderEntryID, Value: []byte(e.EntryID)},
				},
			}, promise)
		}
		now := time.Now().UTC()
		for _, r := range b.Rejects {
			// A record over the broker's max.message.bytes (1 MB by
			// default) would fail the page's transaction every time: the
			// raw bytes and every text are cut (the reason quotes a bad
			// value, which may be long).
			raw, reason := r.Raw, cut(r.Reason)
			if len(raw) > maxDeadLetterRaw {
				raw = raw[:maxDeadLetterRaw]
				reason += fmt.Sprintf(" (raw: the first %d of %d bytes)", maxDeadLetterRaw, len(r.Raw))
			}
			v, err := json.Marshal(model.DeadLetter{
				Stage: model.StageIngest, Feed: cut(b.Feed), TenantID: cut(b.Tenant), Marker: cut(b.Request),
				EntryID: cut(r.EntryID), Index: r.Index, Reason: reason, Raw: raw, Time: now,
			})
			if err != nil {
				return err
			}
			sp.cl.Produce(ctx, &kgo.Record{Topic: sp.cfg.DeadLetterTopic, Key: key, Value: v}, promise)
		}
		cp, err := json.Marshal(b.Next)
		if err != nil {
			return err
		}
		sp.cl.Produce(ctx, &kgo.Record{Topic: sp.cfg.CheckpointTopic, Partition: sp.slot, Key: []byte(b.Next.Key()), Value: cp}, promise)
		sp.cfg.hook("produced")
		if err := sp.cl.Flush(ctx); err != nil {
			return err
		}
		sp.cfg.hook("flushed")
		return firstErr
	})
	if err == nil {
		sp.cfg.hook("committed")
	}
	return err
}

// Close ends the producer; an open transaction is aborted by the broker
// (or by the next owner's claim).
func (sp *SlotProducer) Close() { sp.cl.Close() }
