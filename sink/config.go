package sink

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
)

// Config configures a Sink. The zero value of every optional field means
// its default, stated beside it.
type Config struct {
	Brokers    []string // Kafka seed brokers; required
	ClickHouse string   // ClickHouse native-protocol address; default 127.0.0.1:9000
	Database   string   // ClickHouse database; default feedmeter

	Topic           string // usage topic; default model.TopicUsage
	DeadLetterTopic string // dead-letter topic, consumed and produced; default model.TopicDeadLetter
	Group           string // consumer group; default feedmeter-sink

	BatchRows int           // flush when this many records are buffered; default 50,000
	BatchAge  time.Duration // flush when the oldest buffered record is this old; default 1 s

	// FlushTimeout bounds how long one flush retries through ClickHouse
	// errors while rebalances wait for it; then the batch is abandoned
	// (nothing committed, the partitions rewound) and read again. Default 10 s;
	// RebalanceTimeout must be at least 2 x FlushTimeout + 5 s: a flush
	// holds its partitions up to about twice FlushTimeout (a retry started
	// just before the timeout runs its course, then the last INSERT is
	// settled), and a stopping sink's final flush ends one FlushTimeout
	// after the stop.
	FlushTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between retries of a failing
	// flush, doubling from min to max. Defaults 100 ms and 2 s.
	BackoffMin, BackoffMax time.Duration
	// RebalanceTimeout is the group's rebalance timeout; default 60 s.
	RebalanceTimeout time.Duration
	// SessionTimeout is the group's session timeout; default 45 s (kgo's).
	SessionTimeout time.Duration

	// KeyCacheKeys bounds the dedupe cache: fingerprints of the event ids
	// (and of the ids corrections name) of usage_ids it may hold (see
	// keyCache). About 20 bytes a fingerprint; past the bound the tenants
	// used longest ago are dropped and loaded again when they come back.
	// Default 20,000,000; negative turns the cache off (every batch looks
	// its event ids and referenceIds up in usage_ids, by the table's key).
	KeyCacheKeys int

	// Migrate applies the embedded migrations when the sink starts; default
	// true (set SkipMigrate to turn it off).
	SkipMigrate bool

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // where metrics are registered; default a registry of the Sink's own (see Sink.Gatherer)

	// KafkaOptions are extra kgo options (SASL, TLS, client id); applied last.
	KafkaOptions []kgo.Opt

	// Hook, when set, is called at the named points of every flush:
	// "before-insert", "before-replace" (new events are in usage_events, the
	// rows corrections replace not yet in usage_replaced; only in flushes
	// that replace some), "after-insert" (rows and progress are in
	// ClickHouse, offsets not yet committed) and "after-commit". Tests use it
	// to kill the process at those points.
	Hook func(point string)
}

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ClickHouse, "127.0.0.1:9000")
	def(&c.Database, "feedmeter")
	def(&c.Topic, model.TopicUsage)
	def(&c.DeadLetterTopic, model.TopicDeadLetter)
	def(&c.Group, "feedmeter-sink")
	if c.BatchRows == 0 {
		c.BatchRows = 50000
	}
	if c.KeyCacheKeys == 0 {
		c.KeyCacheKeys = 20_000_000
	}
	defDur(&c.BatchAge, time.Second)
	defDur(&c.FlushTimeout, 10*time.Second)
	defDur(&c.BackoffMin, 100*time.Millisecond)
	defDur(&c.BackoffMax, 2*time.Second)
	defDur(&c.RebalanceTimeout, 60*time.Second)
	defDur(&c.SessionTimeout, 45*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no Kafka brokers"))
	}
	if !schemas.ValidDatabase(c.Database) {
		errs = append(errs, fmt.Errorf("database %q is not a plain identifier", c.Database))
	}
	if c.Topic == c.DeadLetterTopic {
		errs = append(errs, fmt.Errorf("usage topic and dead-letter topic are both %q", c.Topic))
	}
	if c.BatchRows < 1 {
		errs = append(errs, fmt.Errorf("batch rows %d is not positive", c.BatchRows))
	}
	if c.BatchAge < 0 || c.FlushTimeout < 0 || c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, errors.New("durations must be positive, with BackoffMax >= BackoffMin"))
	}
	if 2*c.FlushTimeout+5*time.Second > c.RebalanceTimeout {
		errs = append(errs, fmt.Errorf("flush timeout %v: a flush may hold its partitions about twice that (a retry started late, then the settle), so the rebalance timeout %v must be at least twice the flush timeout plus 5 s",
			c.FlushTimeout, c.RebalanceTimeout))
	}
	return errors.Join(errs...)
}
