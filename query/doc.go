// Package query is `feedmeter serve`: per-tenant usage rollups, raw events
// and invoices over HTTP, read from the rollups the sink keeps in ClickHouse,
// with a usage page for people.
//
// The parts, each in a file of its own:
//
//   - money.go, ratecard.go, billing.go: exact decimal arithmetic (math/big,
//     never float), the YAML rate card with versions, per-tenant overrides and
//     graduated tiers, and the pricing of a period (Plan, then Price).
//   - buckets.go: local hours, days and months of any IANA zone cut on the
//     hourly UTC grain of the rollups, or an *InexactError when the zone's
//     offset puts a boundary between two UTC hours.
//   - auth.go: bearer tokens stored as SHA-256 hashes; a tenant token reads
//     its own tenant, an admin token all.
//   - store.go: the ClickHouse queries, all parameterised.
//   - server.go, handlers.go, params.go, output.go: routes, handlers,
//     parameters (every bad one is a 400 naming it), JSON and CSV, errors,
//     /healthz, /readyz, /metrics and /openapi.yaml.
//   - ui/: the usage page, embedded; it uses nothing outside the binary.
//   - querybench/: `feedmeter bench query`, the latency benchmark.
package query
