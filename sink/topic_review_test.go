package sink

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestTopicMadeAgainWritesBufferedDeadLetters: as
// TestTopicMadeAgainWritesWhatWasBuffered, but the sink had already produced
// dead letters (its client's producer holds the dead-letter topic's first
// id), and the records it holds when both topics are made again include one
// it rejects itself. kgo fails every record produced to a topic made again
// (UNKNOWN_TOPIC_ID, for ever), so the final flush cannot send the dead
// letter, is abandoned, and the first life's records it held are lost.
func TestTopicMadeAgainWritesBufferedDeadLetters(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, held, second := genWorkload(81, 300), genWorkload(82, 200), genWorkload(83, 1000)
	held.records = append(held.records, &kgo.Record{Topic: model.TopicUsage, Key: []byte("1003"), Value: []byte(`{"tenant_id":"1003","held`)})
	held.rejects++
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.BatchAge, cfg.BatchRows = time.Minute, len(first.records)
	s, done := startSink(t, cfg)
	time.Sleep(3 * time.Second)        // joined
	produce(t, brokers, first.records) // one full batch: flushed at once, its dead letters produced
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM sink_progress"); n[0] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first batch was not flushed")
		}
	}
	produce(t, brokers, held.records)
	for deadline := time.Now().Add(10 * time.Second); s.buffered() < len(held.records) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("buffered: %d (held %d)", s.buffered(), len(held.records))
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, second.records)
	if err := stopsWithin(t, done, 40*time.Second, "the sink did not stop"); err == nil || !strings.Contains(err.Error(), "deleted and made again") {
		t.Fatalf("Run: %v, want the topic made again", err)
	}
	_, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(first, held, second))
}

// newClusterV is newCluster with the API versions of an older Kafka.
func newClusterV(t testing.TB, v *kversion.Versions) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, model.TopicUsage, model.TopicDeadLetter),
		kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.MaxVersions(v))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestOldFetchTopicMadeAgain: TestTopicMadeAgain on Kafka 3.0 (metadata
// has topic ids, Fetch v12 has none: every progress row gets id "").
func TestOldFetchTopicMadeAgain(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newClusterV(t, kversion.V3_0_0()).ListenAddrs()
	first, second := genWorkload(11, 400), genWorkload(12, 3000)
	produce(t, brokers, first.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	t.Logf("ids: %v; progress: %q", topicIDs(t, brokers), chtest.QueryStrings(t, db.Conn, "SELECT DISTINCT concat(kafka_topic, '/', kafka_topic_id) FROM sink_progress"))
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, second.records)
	_, stop = runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(first, second))
}

// TestDeadLetterTopicMadeAgainUnderBusySink: only the dead-letter topic is
// made again (emptied), under a sink with a backlog whose batches each hold a
// record it rejects itself. Every flush then fails to produce its dead
// letters (kgo: UNKNOWN_TOPIC_ID for ever) until FlushTimeout (10 s, the
// default) and is abandoned; while the loop waits for it, it does not poll,
// so the UNKNOWN_TOPIC_ID errors of the dead-letter topic pause for more than
// 5 s and the 10 s rule starts again each time: the sink neither stops nor
// moves (README: "a topic made again under a running sink stops it").
func TestDeadLetterTopicMadeAgainUnderBusySink(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, backlog := genWorkload(91, 400), genWorkload(92, 6000)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.FlushTimeout, cfg.RebalanceTimeout, cfg.BatchRows = 10*time.Second, 30*time.Second, 300
	_, done := startSink(t, cfg)
	produce(t, brokers, first.records)
	waitDrained(t, db.Conn, brokers, time.Minute) // its dead letters were produced
	remakeTopics(t, brokers, testPartitions, model.TopicDeadLetter)
	produce(t, brokers, backlog.records)
	progress := func() string {
		return chtest.QueryStrings(t, db.Conn, "SELECT toString(sum(n)) FROM (SELECT max(next_offset) AS n FROM sink_progress WHERE kafka_topic = ? GROUP BY kafka_partition)", model.TopicUsage)[0]
	}
	at := progress()
	select {
	case err := <-done:
		t.Logf("Run: %v", err)
		return
	case <-time.After(60 * time.Second):
	}
	t.Fatalf("60 s after the dead-letter topic was made again the sink still runs; usage progress %s then, %s now (of %d)", at, progress(), len(first.records)+len(backlog.records))
}

// TestTopicMadeAgainUnderSlowSink: the usage topic is made again while the
// dead-letter topic stays busy and each flush takes 6 s (a slow ClickHouse).
// The loop waits in finish for the flush in flight, polls less than every
// 5 s, and the 10 s UNKNOWN_TOPIC_ID rule starts again at each poll: the
// sink never stops, though its usage partitions fetch nothing for ever.
func TestTopicMadeAgainUnderSlowSink(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first := genWorkload(95, 400)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.FlushTimeout, cfg.RebalanceTimeout, cfg.BatchRows = 10*time.Second, 30*time.Second, 50
	var slow atomic.Bool
	cfg.Hook = func(p string) {
		if p == "before-insert" && slow.Load() {
			time.Sleep(6 * time.Second)
		}
	}
	_, done := startSink(t, cfg)
	produce(t, brokers, first.records)
	waitDrained(t, db.Conn, brokers, time.Minute)
	remakeTopics(t, brokers, testPartitions, model.TopicUsage)
	slow.Store(true)
	// Ingest keeps writing dead letters.
	kc, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	pctx, stopProducing := context.WithCancel(t.Context())
	defer stopProducing()
	go func() {
		for i := 0; pctx.Err() == nil; i++ {
			var recs []*kgo.Record
			for j := 0; j < 100; j++ {
				dl := model.DeadLetter{Stage: model.StageIngest, Feed: "f", TenantID: "1000", Marker: "m", Index: i*100 + j,
					Reason: "bad", Raw: []byte("<x"), Time: time.Now().UTC()}
				v, _ := dl.MarshalJSON()
				recs = append(recs, &kgo.Record{Topic: model.TopicDeadLetter, Key: []byte("1000"), Value: v})
			}
			if err := kc.ProduceSync(pctx, recs...).FirstErr(); err != nil && pctx.Err() == nil {
				t.Logf("produce: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	stopsWithin(t, done, 60*time.Second, "60 s after the usage topic was made again the sink still runs")
}
