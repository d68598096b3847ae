package ingest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/internal/e2e"
)

// TestBackfillWithFaults: 50 tenants through every upstream fault, in XML
// and JSON, land in Kafka exactly as feedsim's truth says; a second run
// publishes nothing more.
func TestBackfillWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("a full backfill")
	}
	for _, format := range []ingest.Format{ingest.FormatXML, ingest.FormatJSON} {
		t.Run(format.String(), func(t *testing.T) {
			sim, srv := e2e.Upstream(t, 50, 3, "429=0.05,503=0.02,500=0.01,drop=0.01,slow=0.01,malformed=0.003,expire=0.01")
			brokers := e2e.KafkaCluster(t)
			cfg := e2e.IngestConfig(srv, brokers, sim.TenantIDs(), format)
			cfg.Client.Limit = 200 // more pages, more faults
			r, err := ingest.NewRunner(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := r.Run(ctx); err != nil {
				t.Fatalf("backfill: %v", err)
			}
			n := e2e.CheckAgainstTruth(t, sim, brokers)
			if n < 10000 {
				t.Fatalf("only %d events: the test is too small to mean much", n)
			}
			// Again: the checkpoints are read back; nothing is published twice.
			r2, err := ingest.NewRunner(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := r2.Run(ctx); err != nil {
				t.Fatalf("second run: %v", err)
			}
			if n2 := e2e.CheckAgainstTruth(t, sim, brokers); n2 != n {
				t.Fatalf("second run published %d more events", n2-n)
			}
			fmt.Fprintf(os.Stderr, "%s: %d events\n", format, n)
		})
	}
}
