package query

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestByLocalOnClickHouse runs byLocal's SQL on ClickHouse beside the
// arrayCount bucketing it replaces (the reference: a comparison with every
// bucket start), for every hour (hourly rollup) or every UTC day (daily
// rollup) of random and chosen ranges in zones with unusual transitions.
func TestByLocalOnClickHouse(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 3))
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "America/Sao_Paulo", "Etc/GMT+12", "Pacific/Apia",
		"Pacific/Kiritimati", "Pacific/Pago_Pago", "America/Havana", "Asia/Gaza", "Europe/Dublin", "Africa/Casablanca",
		"America/Santiago", "Pacific/Kwajalein", "Antarctica/Casey", "Europe/London", "America/Godthab", "Asia/Tokyo", "Antarctica/Troll"}
	checked, fails := 0, 0
	for _, z := range zones {
		loc := zone(t, z)
		for n := -1; n < 12; n++ {
			var from time.Time
			var hours int
			switch {
			case n == -1:
				fixed := map[string][2]string{
					"Antarctica/Casey":  {"2010-03-01", "2010-03-10"},
					"Europe/London":     {"2026-11-01", "2027-03-30"},
					"Pacific/Apia":      {"2011-12-25", "2012-01-05"},
					"Pacific/Kwajalein": {"1993-08-15", "1993-08-25"},
					"America/Sao_Paulo": {"2018-11-01", "2019-02-20"},
					"America/Havana":    {"2026-03-01", "2026-03-15"},
				}[z]
				if fixed[0] == "" {
					continue
				}
				from = utc(fixed[0])
				hours = int(utc(fixed[1]).Sub(from) / time.Hour)
			}
			switch {
			case n == -1:
			case n%3 == 0: // 1970-2030
				from = time.Unix(3600*int64(r.IntN(24*365*60)), 0).UTC()
			case n%3 == 1: // near 1970
				from = time.Unix(3600*int64(r.IntN(24*40)), 0).UTC()
			default: // UTC midnights
				from = time.Unix(86400*int64(r.IntN(365*60)), 0).UTC()
			}
			if n >= 0 {
				hours = 1 + r.IntN(24*400)
			}
			if n%3 == 2 {
				hours = 24 * (1 + r.IntN(400))
			}
			to := from.Add(time.Duration(hours) * time.Hour)
			for _, g := range []Granularity{Day, Month} {
				bounds, err := splitBuckets(from, to, loc, g)
				if err != nil {
					continue
				}
				daily := daysAligned(bounds)
				ts := "toUInt32(hour)"
				src := "(SELECT toDateTime(toUInt32(toUInt32(?) + number * 3600)) AS hour FROM system.numbers LIMIT ?)"
				srcArgs := []any{uint32(from.Unix()), uint64(hours)}
				if daily {
					ts = "toUInt32(day) * 86400"
					src = "(SELECT toDate(toUInt32(toUInt32(?) + number * 86400)) AS day FROM system.numbers LIMIT ?)"
					srcArgs = []any{uint32(from.Unix()), uint64(hours / 24)}
				}
				bk, ok := byLocal(bounds, loc, ts)
				if !ok {
					continue
				}
				sql := "SELECT toUInt64(" + ts + "), toUInt32(" + bk.expr + "), toUInt32(arrayCount(x -> x <= " + ts + ", ?)) FROM " + src
				args := append(append(append([]any{}, bk.args...), starts(bounds)), srcArgs...)
				rows, err := db.Conn.Query(ctx, sql, args...)
				if err != nil {
					t.Errorf("%s %v %v..%v: %v\n%s %v", z, g, from, to, err, sql, args)
					fails++
					continue
				}
				for rows.Next() {
					var at uint64
					var v, old uint32
					if err := rows.Scan(&at, &v, &old); err != nil {
						t.Fatal(err)
					}
					checked++
					if got := bk.index(v); got != int(old)-1 {
						fails++
						if fails < 30 {
							t.Errorf("%s by %v %v..%v daily=%v: row %v: key %d, bucket %d, arrayCount says %d", z, g, from, to, daily,
								time.Unix(int64(at), 0).In(loc), v, got, old-1)
						}
						break
					}
				}
				if err := rows.Err(); err != nil {
					t.Error(err)
				}
				rows.Close()
			}
		}
	}
	if checked < 100000 {
		t.Errorf("only %d rows checked", checked)
	}
}
