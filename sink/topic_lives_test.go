package sink

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestLegacyProgressAfterTopicMadeAgain: a database whose sink wrote
// progress before 0006 (rows without a topic id: a release before it wrote
// them, and 0006 copied them) sees its topics deleted and made again before
// any sink wrote a row with an id. Rows without an id cannot say their
// topic's life, so they must not count: a sink that took them for the new
// life would skip its first records.
func TestLegacyProgressAfterTopicMadeAgain(t *testing.T) {
	ctx := context.Background()
	db := chtest.NewDB(t, true)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, second := genWorkload(31, 400), genWorkload(32, 3000)
	produce(t, brokers, first.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	// The progress as a release before 0006 wrote it: without the id.
	for _, q := range []string{
		"CREATE TABLE legacy_progress ENGINE = Memory AS SELECT kafka_topic, kafka_partition, max(next_offset) AS next_offset, max(written_at) AS written_at FROM sink_progress GROUP BY kafka_topic, kafka_partition",
		"TRUNCATE TABLE sink_progress",
		"INSERT INTO sink_progress (kafka_topic, kafka_topic_id, kafka_partition, next_offset, written_at) SELECT kafka_topic, '', kafka_partition, next_offset, written_at FROM legacy_progress",
	} {
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("progress after 0006: %q", chtest.QueryStrings(t, db.Conn, "SELECT concat(kafka_topic, '/', kafka_topic_id, '/', toString(kafka_partition), '=', toString(max(next_offset))) FROM sink_progress GROUP BY kafka_topic, kafka_topic_id, kafka_partition ORDER BY 1"))
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, second.records)
	_, stop = runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(first, second))
}

// TestLegacyProgressBesideOtherLife: rows without an id count for no life,
// also on a partition that had no traffic since 0006.
func TestLegacyProgressBesideOtherLife(t *testing.T) {
	pr := progressRows{"t": {
		"":  {0: 5000, 1: 5000}, // before 0006 (life A)
		"A": {1: 5100},          // life A after 0006: partition 0 got nothing since
	}}
	if next, _ := pr.of("t", "B", 0); next >= 0 {
		t.Errorf("of(t, B, 0) = %d: life B resumes partition 0 at life A's offset; want -1 (read from the start)", next)
	}
}

// TestSpareSinkAfterTopicMadeAgain: three sinks share one partition of
// each topic, so one holds nothing (a spare). The topics are made again: the
// busy sinks stop, the spare takes their partitions, and its client fetches
// with the ids it loaded at start (kgo never adopts a topic's new id):
// UNKNOWN_TOPIC_ID for ever. It must stop too, not stall without a word.
func TestSpareSinkAfterTopicMadeAgain(t *testing.T) {
	db := chtest.NewDB(t, false)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, model.TopicUsage, model.TopicDeadLetter),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	first, second := genWorkload(41, 300), genWorkload(42, 300)
	produce(t, brokers, first.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	// Migrate first, so that three sinks do not race to migrate.
	if _, err := schemas.Apply(context.Background(), db.Conn); err != nil {
		t.Fatal(err)
	}
	type run struct {
		done   chan error
		cancel context.CancelFunc
	}
	var runs []run
	for i := 0; i < 3; i++ {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := run{make(chan error, 1), cancel}
		go func() { r.done <- s.Run(ctx) }()
		runs = append(runs, r)
		t.Cleanup(func() {
			cancel()
			select {
			case <-r.done:
			case <-time.After(20 * time.Second):
				t.Errorf("a sink did not stop within 20 s of its cancellation")
			}
		})
	}
	waitDrained(t, db.Conn, brokers, time.Minute)
	time.Sleep(2 * time.Second) // the group settled: two busy members, one spare
	remakeTopics(t, brokers, 1)
	ids := topicIDs(t, brokers)
	produce(t, brokers, second.records)
	stopped := map[int]error{}
	deadline := time.After(45 * time.Second)
wait:
	for len(stopped) < 3 {
		for i, r := range runs {
			if _, ok := stopped[i]; ok {
				continue
			}
			select {
			case err := <-r.done:
				stopped[i] = err
				r.done <- err // for the cleanup
				t.Logf("sink %d stopped: %v", i, err)
			default:
			}
		}
		select {
		case <-deadline:
			break wait
		case <-time.After(100 * time.Millisecond):
		}
	}
	newRows := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM sink_progress WHERE kafka_topic_id = ?", ids[model.TopicUsage].String())
	if len(stopped) < 3 && newRows[0] == "0" {
		t.Fatalf("45 s after the topics were made again: %d of 3 sinks stopped, the others still run and wrote no progress of the new life (stalled)", len(stopped))
	}
}

// TestTopicMadeAgainWritesWhatWasBuffered: records of the first life were
// fetched and buffered (not yet flushed) when the topics are made again.
// The first life is gone from Kafka, so the stopping sink must write them:
// no one can read them again.
func TestTopicMadeAgainWritesWhatWasBuffered(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, second := genWorkload(61, 400), genWorkload(62, 3000)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.BatchAge, cfg.BatchRows = 20*time.Second, 100000 // records stay buffered a while
	s, done := startSink(t, cfg)
	time.Sleep(3 * time.Second) // joined
	produce(t, brokers, first.records)
	for deadline := time.Now().Add(10 * time.Second); s.buffered() < len(first.records) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("buffered: %d of %d", s.buffered(), len(first.records))
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, second.records)
	stopsWithin(t, done, 30*time.Second, "the sink did not stop")
	_, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(first, second))
}

// TestStaleCommitAfterTopicMadeAgain: a committed offset of the first life
// stands on the new life's partition (with OffsetCommit before v10, before
// Kafka 4.1, commits name the topic only: the last commit of a sink stopping
// on a topic made again, or an older release's, lands on the new life). A
// sink reads the new life from its start and is killed between insert and
// commit. The next sink must resume from the new life's progress, below
// the committed offset, not skip to the committed one.
func TestStaleCommitAfterTopicMadeAgain(t *testing.T) {
	ctx := context.Background()
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	a, b1, b2 := genWorkload(71, 3000), genWorkload(72, 400), genWorkload(73, 3000)
	produce(t, brokers, a.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()

	kc, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)
	stale, err := adm.FetchOffsets(ctx, cfg.withDefaults().Group)
	if err != nil {
		t.Fatal(err)
	}
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, b1.records)
	// The first life's commit lands on the new life (name-only commit).
	kc2, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer kc2.Close()
	resp, err := kadm.NewClient(kc2).CommitOffsets(ctx, cfg.withDefaults().Group, stale.Offsets())
	if err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}
	killed := startChild(t, brokers, db.Addr, db.Name, "after-insert", 1)
	killed.wait(t, time.Minute)
	produce(t, brokers, b2.records)
	_, stop = runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(a, b1, b2))
}
