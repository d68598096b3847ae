package schemas

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// CompactTables are the tables Compact merges: the day rollups, which every
// invoice and daily usage query reads. A query reads each part of the
// tenant's range, and 18.16 pays for every part: a tenant's month of daily
// usage from a year of 2000 tenants took 6.0-6.6 ms (p50) with the rollup in
// ten parts and 3.6-4.0 ms in one (interleaved queries, same data).
var CompactTables = []string{"usage_daily", "license_daily"}

// Compacted is one table Compact merged.
type Compacted struct {
	Table string
	Took  time.Duration
}

// Compact merges every partition of each of CompactTables into one part
// (OPTIMIZE … FINAL). It changes no sum: SummingMergeTree adds rows with
// equal keys, ReplacingMergeTree keeps one copy of a fact. Run it when the
// sink is quiet, for instance nightly; the cost grows with the tables
// (seconds for the 5.8 million rows of a year of 2000 tenants).
func Compact(ctx context.Context, conn driver.Conn) ([]Compacted, error) {
	var out []Compacted
	for _, t := range CompactTables {
		began := time.Now()
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+t+" FINAL"); err != nil {
			return out, fmt.Errorf("compact %s: %w", t, err)
		}
		out = append(out, Compacted{t, time.Since(began)})
	}
	return out, nil
}
