package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/feedsim"
	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/schemas"
)

func init() {
	commands["demo"] = command{
		summary: "run the pipeline on embedded defaults: feedsim → ingest → Kafka → sink → ClickHouse → serve, checked against feedsim's truth",
		run:     runDemo,
	}
}

// demoCUF is the demo's mix of identity facts, far above what a real
// upstream does, so that each fact shows in every tenant of the default run
// (3 tenants, 7 days: about 3,800 usage entries, of which about 70
// republishes, 10 conflicting copies and 130 corrections, some early,
// chained, siblings or orphans) and in the tests' run of 2 tenants and 3
// days, while nine in ten of the events billed are the generated history's
// as it was.
const demoCUF = "republish=0.02,conflict=0.005,correct=0.03,chain=0.3,early=0.2,sibling=0.1,orphan=0.05,midnight=0.05,summary=0.02"

// runDemo starts feedsim (with faults) and an embedded Kafka in this
// process, ingests every tenant once, then reads the usage topic back and
// prints each tenant's totals beside feedsim's ground truth. Given a
// ClickHouse, it goes on (downstream): the sink, the query service's usage
// beside the truth, and the invoices.
func runDemo(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenants := fs.Int("tenants", 3, "feedsim tenants")
	days := fs.Int("days", 7, "days of history")
	faults := fs.String("faults", "429=0.05,503=0.02,500=0.01,drop=0.01,malformed=0.002,expire=0.01", "feedsim faults")
	cuf := fs.String("cuf", demoCUF, "feedsim's identity facts: shares of republished events, conflicting copies, corrections, … (feedmeter feedsim -h); none turns them off")
	format := fs.String("format", "xml", "xml or json")
	var down downstream
	fs.StringVar(&down.addr, "clickhouse", os.Getenv("FEEDMETER_CLICKHOUSE"),
		"ClickHouse native-protocol address: the sink writes the topic there and serve answers from it (default $FEEDMETER_CLICKHOUSE, which make run sets; empty: stop after Kafka)")
	fs.StringVar(&down.database, "database", "feedmeter_demo", "ClickHouse database of the demo: dropped and made anew at every run")
	ratesPath := fs.String("rates", "", "rate card YAML of the invoices (default: query/rates.example.yaml, embedded)")
	fs.StringVar(&down.listen, "listen", "127.0.0.1:0", "HTTP address of the query service and usage page")
	fs.BoolVar(&down.keep, "keep", false, "after the checks, keep serving the API and the usage page until interrupted")
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	if *days < 1 {
		fmt.Fprintf(stderr, "feedmeter demo: --days %d: the demo needs at least a day of history\n", *days)
		return 2
	}
	if down.addr != "" && !schemas.ValidDatabase(down.database) {
		fmt.Fprintf(stderr, "feedmeter demo: --database %q is not a plain name ([A-Za-z_][A-Za-z0-9_]*)\n", down.database)
		return 2
	}
	var err error
	if *ratesPath == "" {
		down.rates, err = query.ParseRateCard(query.ExampleRateCard)
	} else {
		down.rates, err = query.LoadRateCard(*ratesPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter demo: %v\n", err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "feedmeter demo: %v\n", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	cfg := feedsim.DefaultConfig()
	cfg.Tenants, cfg.Days, cfg.RetryAfter = *tenants, *days, 0
	f, err := feedsim.ParseFaults(*faults)
	if err != nil {
		return fail(err)
	}
	cfg.Faults = f
	if cfg.CUF, err = feedsim.ParseCUF(*cuf); err != nil {
		return fail(err)
	}
	down.from, down.to = cfg.Start, cfg.Start.AddDate(0, 0, cfg.Days)
	if down.addr != "" {
		// ClickHouse and the address first: a bad one fails before the
		// upstream half.
		if err := down.prepare(ctx); err != nil {
			return fail(err)
		}
		defer down.close()
	}
	sim, err := feedsim.New(cfg, log)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	brokers, stopKafka, err := kafkaBrokers("embedded", "")
	if err != nil {
		return fail(err)
	}
	defer stopKafka()
	pf, err := ingest.ParseFormat(*format)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "feedsim at %s (faults %s, cuf %s), Kafka (embedded) at %s\n\n", base, *faults, cfg.CUF, strings.Join(brokers, ","))
	r, err := ingest.NewRunner(ingest.Config{
		Feed: base + "/backup/events", Tenants: sim.TenantIDs(), Once: true,
		Client: ingest.ClientConfig{IdentityURL: base + "/v2.0/tokens", Username: "demo", APIKey: "demo", Format: pf,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second},
		Kafka:    ingest.KafkaConfig{Brokers: brokers},
		Log:      log,
		Progress: func(line string) { fmt.Fprintln(stdout, line) },
	})
	if err != nil {
		return fail(err)
	}
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	truth := sim.Truth() // once: what was served up to the end of ingest
	ku, err := readUsage(ctx, brokers)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "\nIn Kafka (%s), beside feedsim's ground truth (served: every entry, copies and replaced events too):\n\n", model.TopicUsage)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tkind\tevents\ttruth\tquantity\ttruth\t")
	ok := true
	for _, tt := range truth.Tenants {
		want := map[string]*[2]big.Int{}
		for _, d := range tt.Days {
			w := want[d.Kind]
			if w == nil {
				w = new([2]big.Int)
				want[d.Kind] = w
			}
			w[0].Add(&w[0], big.NewInt(int64(d.Entries)))
			for _, s := range []string{d.BandwidthBytes, d.StorageBytes} {
				if q, ok := new(big.Int).SetString(s, 10); ok {
					w[1].Add(&w[1], q)
				}
			}
		}
		kinds := make([]string, 0, len(want))
		for k := range want {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			g := ku.sums[tt.Tenant+"|"+k]
			if g == nil {
				g = new([2]big.Int)
			}
			w := want[k]
			qty, wq := g[1].String(), w[1].String()
			if k == string(model.KindLicense) || k == string(model.KindOther) {
				qty, wq = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", tt.Tenant, k, g[0].String(), w[0].String(), qty, wq)
			if g[0].Cmp(&w[0]) != 0 || qty != wq {
				ok = false
			}
		}
	}
	tw.Flush()
	malformed := 0
	for _, tt := range truth.Tenants {
		malformed += len(tt.Malformed)
	}
	fmt.Fprintf(stdout, "\ndead letters: %d (feedsim served %d entries malformed)\n", ku.deadLetters, malformed)
	if !ok || ku.deadLetters != malformed {
		fmt.Fprintln(stdout, "MISMATCH")
		return 1
	}
	fmt.Fprintln(stdout, "every entry counted once.")
	printFacts(stdout, truth, ku.corrections)
	if down.addr == "" {
		fmt.Fprintln(stdout, "\nNo ClickHouse (--clickhouse or $FEEDMETER_CLICKHOUSE; make run starts one): the sink and the query service were left out.")
		return 0
	}
	down.truth, down.brokers, down.ends, down.corrections, down.log, down.out = truth, brokers, ku.ends, ku.corrections, log, stdout
	if err := down.run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// facts sums the identity facts of a tenant's truth: entries that publish
// an event again (republished), or again with other content (conflicts),
// and events that a correction replaces.
func facts(tt feedsim.TenantTruth) (republished, conflicts, replaced int) {
	for _, d := range tt.Days {
		republished += d.Republished
		conflicts += d.Conflicts
		replaced += d.Replaced
	}
	return republished, conflicts, replaced
}

// printFacts shows per tenant the identity facts the run served: Kafka
// holds every copy, and the bill must count each event once, corrections
// applied.
func printFacts(w io.Writer, truth feedsim.Truth, corrections map[string]int) {
	fmt.Fprintf(w, "\nIdentity facts served (feedsim --cuf %s; corrections: usage events in Kafka with a referenceId):\n\n", truth.CUF)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\trepublished\tconflicts\tcorrections\treplaced\t")
	for _, tt := range truth.Tenants {
		republished, conflicts, replaced := facts(tt)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", tt.Tenant, republished, conflicts, corrections[tt.Tenant], replaced)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nA republished entry is an event published again under a new atom id (billed once); a conflict publishes")
	fmt.Fprintln(w, "an event id again with other content (rejected); a correction replaces the event it names (replaced).")
}

// topicPartition names a Kafka partition.
type topicPartition struct {
	topic     string
	partition int32
}

// kafkaUsage is what the usage and dead-letter topics hold, committed.
type kafkaUsage struct {
	sums        map[string]*[2]big.Int // by tenant|kind: events and quantity
	corrections map[string]int         // by tenant: usage events (identities) with a referenceId
	deadLetters int
	ends        map[topicPartition]int64 // offset after each partition's last record
}

// readUsage sums the committed usage records by tenant and kind (events
// and quantity), counts the corrections and the dead letters, and notes
// each partition's offset after its last record (where a sink that has
// read everything stands).
func readUsage(ctx context.Context, brokers []string) (*kafkaUsage, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(model.TopicUsage, model.TopicDeadLetter),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ku := &kafkaUsage{sums: map[string]*[2]big.Int{}, corrections: map[string]int{}, ends: map[topicPartition]int64{}}
	corrections := map[model.Identity]bool{}
	for idle := 0; idle < 2; {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		cancel()
		n := 0
		var decodeErr error
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			ku.ends[topicPartition{r.Topic, r.Partition}] = r.Offset + 1
			if r.Topic == model.TopicDeadLetter {
				ku.deadLetters++
				return
			}
			var e model.Event
			if err := json.Unmarshal(r.Value, &e); err != nil {
				decodeErr = err
				return
			}
			s := ku.sums[e.TenantID+"|"+string(e.Kind)]
			if s == nil {
				s = new([2]big.Int)
				ku.sums[e.TenantID+"|"+string(e.Kind)] = s
			}
			s[0].Add(&s[0], big.NewInt(1))
			s[1].Add(&s[1], new(big.Int).SetUint64(e.Quantity))
			if id := e.Identity(); e.ReferenceID != "" && !corrections[id] {
				corrections[id] = true
				ku.corrections[e.TenantID]++
			}
		})
		if decodeErr != nil {
			return nil, decodeErr
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	return ku, nil
}
