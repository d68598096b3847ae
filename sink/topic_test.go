package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestTopicMadeAgain: the topics are deleted and made again under their
// names (their offsets start again at 0) and filled with more records than
// before. A sink started again on the same database must not take the
// progress of the topics' first life for the second: every event of both
// lives is counted once. Before sink_progress named the topic's id (0006),
// the sink skipped the second life's first records.
func TestTopicMadeAgain(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, second := genWorkload(11, 400), genWorkload(12, 3000)

	produce(t, brokers, first.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, first)

	before := topicIDs(t, brokers)
	remakeTopics(t, brokers, testPartitions)
	if after := topicIDs(t, brokers); after[model.TopicUsage] == before[model.TopicUsage] {
		t.Fatalf("the usage topic kept its id %v", after[model.TopicUsage])
	}
	produce(t, brokers, second.records)
	_, stop = runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	both := joined(first, second)
	verify(t, db.Conn, both)
}

// TestTopicMadeAgainUnderSink: the topics are made again while a sink
// runs. Its client would fetch the old topic ids for ever; the sink stops
// with an error that says why, and started again it counts every event of
// both lives once.
func TestTopicMadeAgainUnderSink(t *testing.T) {
	db := chtest.NewDB(t, false)
	cl := newCluster(t)
	brokers := cl.ListenAddrs()
	first, second := genWorkload(21, 400), genWorkload(22, 3000)
	produce(t, brokers, first.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	_, done := startSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	remakeTopics(t, brokers, testPartitions)
	produce(t, brokers, second.records)
	if err := stopsWithin(t, done, 30*time.Second, "the sink still runs 30 s after its topics were made again"); err == nil || !strings.Contains(err.Error(), "deleted and made again") {
		t.Fatalf("Run: %v, want the topic made again", err)
	}
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, joined(first, second))
}

// joined is what the workloads ws, produced one after another, leave in
// ClickHouse: their distinct events (their keys differ), and one reject
// per fingerprint of all their records.
func joined(ws ...*workload) *workload {
	j := &workload{}
	for _, w := range ws {
		j.events = append(j.events, w.events...)
		j.other += w.other
		j.rejects += w.rejects
	}
	return j
}

// TestProgressOfTopicLives holds the choice of a partition's progress.
func TestProgressOfTopicLives(t *testing.T) {
	pr := progressRows{"t": {
		"":  {0: 50, 1: 70},  // written before 0006
		"A": {0: 900, 2: 30}, // the first life
		"B": {0: 10, 3: 40},  // the present life
	}}
	for _, c := range []struct {
		id        string
		partition int32
		next      int64
		others    int
	}{
		{"B", 0, 10, 1}, // the present life's own row, whatever the first life's and the old rows hold
		{"B", 1, -1, 0}, // only a row from before 0006: it cannot say its life, so none (the committed offset stands)
		{"B", 2, -1, 1}, // only the first life's row: none (read from the start)
		{"B", 3, 40, 0}, // only the present life's
		{"C", 1, -1, 0}, // the same for a life with no row at all
		{"", 0, 900, 0}, // a cluster without topic ids: every row counts
		{"B", 9, -1, 0}, // nothing
	} {
		next, others := pr.of("t", c.id, c.partition)
		if next != c.next || others != c.others {
			t.Errorf("of(t, %q, %d) = %d, %d; want %d, %d", c.id, c.partition, next, others, c.next, c.others)
		}
	}
}

func topicIDs(t *testing.T, brokers []string) map[string]kadm.TopicID {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	d, err := kadm.NewClient(cl).ListTopics(context.Background(), model.TopicUsage, model.TopicDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kadm.TopicID{}
	for name, td := range d {
		out[name] = td.ID
	}
	return out
}

// remakeTopics deletes topics (none: the usage and dead-letter topics) and
// makes them again, empty, with n partitions.
func remakeTopics(t *testing.T, brokers []string, n int32, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if len(topics) == 0 {
		topics = []string{model.TopicUsage, model.TopicDeadLetter}
	}
	if _, err := adm.DeleteTopics(ctx, topics...); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopics(ctx, n, 1, nil, topics...); err != nil {
		t.Fatal(err)
	}
}

// startSink runs a sink whose end the test awaits itself (runSink fails
// the test when Run returns an error); it is cancelled when the test ends.
func startSink(t *testing.T, cfg Config) (*Sink, <-chan error) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, done
}

// stopsWithin returns Run's error once the sink in done stops, failing the
// test with stillRuns when it runs on for within.
func stopsWithin(t *testing.T, done <-chan error, within time.Duration, stillRuns string) error {
	t.Helper()
	select {
	case err := <-done:
		t.Logf("Run: %v", err)
		return err
	case <-time.After(within):
		t.Fatal(stillRuns)
		return nil
	}
}
