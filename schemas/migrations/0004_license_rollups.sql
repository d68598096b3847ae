-- 0004: the servers licensed per tenant and UTC day, inside or outside
-- Rackspace: what an invoice's licence lines need, read from a small table
-- instead of the licence events in usage_events (the rollups of 0002 do not
-- keep the external flag). There is no hourly twin: every view costs each
-- INSERT into usage_events (on 18.16 about 0.4 us per row for this one,
-- whatever the kind of the row), and invoices whose days are not UTC days
-- (rare time zones) still read the licence events themselves.
--
-- A row is a fact: tenant T had server S licensed in bucket B by a licence
-- event whose external flag was X (NULL read as 0). Readers use only whether
-- rows exist: a server is licensed in a bucket when it has a row there, and
-- external when one of its rows there says 1. A fact written twice is still
-- one fact, so ReplacingMergeTree folds repeats when parts merge and every
-- reader groups by (bucket, server). That is also why this migration may
-- backfill from usage_events while a sink is writing: the view exists before
-- the backfill runs, so an event is written by the view, by the backfill, or
-- by both, and never by neither.

CREATE TABLE IF NOT EXISTS license_daily (
    day       Date COMMENT 'the UTC day the licence event overlaps',
    tenant_id String COMMENT 'tenant',
    server    String COMMENT 'server_id, or name:<server_name> when there is none (as in the rollups)',
    external  UInt8 COMMENT '1 when the licence event said the server is outside Rackspace, else 0 (NULL is 0)'
)
ENGINE = ReplacingMergeTree
-- Yearly, like usage_daily: a day rollup is small.
PARTITION BY toYear(day)
-- Tenant, then time: an invoice reads one tenant over one month. The whole
-- row is the key, so merges keep one row per fact.
ORDER BY (tenant_id, day, server, external);

CREATE MATERIALIZED VIEW IF NOT EXISTS license_daily_mv TO license_daily AS
SELECT ld_day AS day, tenant_id, server, ifNull(external, toUInt8(0)) AS external
FROM usage_events
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';

-- Backfill: the licence events written before the view existed (and,
-- harmlessly, those written since).
INSERT INTO license_daily (day, tenant_id, server, external)
SELECT ld_day, tenant_id, server, ifNull(external, toUInt8(0))
FROM usage_events
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';
