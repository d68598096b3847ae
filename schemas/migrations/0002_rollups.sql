-- 0002: hourly and daily rollups, written by materialized views in the same
-- INSERT as the usage_events rows they sum (see 0001 and schemas/doc.go).
--
-- A rollup row is one bucket of one (tenant, kind, region, data center,
-- resource, server). SummingMergeTree adds rows with equal ORDER BY keys when
-- parts merge, which may be never: always read with sum() and GROUP BY (the
-- views in 0003 do). Every summed column is nonzero in every row (pieces >= 1),
-- so a merge never deletes a row. The materialized views write one row per
-- piece without a GROUP BY: the merges add them up, and grouping seven string
-- keys in every INSERT cost more than it saved (about 20% of insert time).
--
-- Columns:
--   quantity      the event quantity split by time in whole units: an event
--                 over [s, e) puts floor(q x overlap / (e - s)) in each bucket
--                 it overlaps, the remainder in its last bucket, so the buckets
--                 of an event add up to q exactly. Bytes for bandwidth; for
--                 storage, the bytes-in-use level split the same way; licenses
--                 (quantity 1) count in their last bucket.
--   byte_seconds  storage: floor(q x (e - s) in ns / 1e9), split the same way.
--   events        events whose last bucket this is: each event counts once.
--   pieces        events that overlap this bucket: an event over N buckets
--                 counts in each of them. For a license, the servers of the
--                 rows with pieces > 0 are the servers licensed in the bucket.
-- A daily piece is the sum of the event's hourly pieces of that UTC day, so
-- hourly and daily rollups agree to the byte.

CREATE TABLE IF NOT EXISTS usage_hourly (
    hour         DateTime('UTC') COMMENT 'start of the UTC hour',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when there is none',
    quantity     Decimal128(0) COMMENT 'the events'' quantity in this hour, split by time in whole units',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in this hour',
    events       UInt64 COMMENT 'events whose interval ends in this hour (each event counts once)',
    pieces       UInt64 COMMENT 'events whose interval overlaps this hour'
)
ENGINE = SummingMergeTree((quantity, byte_seconds, events, pieces))
-- Monthly partitions, as bills are monthly.
PARTITION BY toYYYYMM(hour)
-- Tenant, then time: the query service reads one tenant over a time range;
-- the remaining dimensions complete the key that SummingMergeTree adds up by.
ORDER BY (tenant_id, hour, kind, region, data_center, resource_id, server);

CREATE TABLE IF NOT EXISTS usage_daily (
    day          Date COMMENT 'the UTC day',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when there is none',
    quantity     Decimal128(0) COMMENT 'the events'' quantity in this day, split by time in whole units',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in this day',
    events       UInt64 COMMENT 'events whose interval ends in this day (each event counts once)',
    pieces       UInt64 COMMENT 'events whose interval overlaps this day'
)
ENGINE = SummingMergeTree((quantity, byte_seconds, events, pieces))
-- Yearly partitions: a day rollup is small, and monthly parts would be tiny.
PARTITION BY toYear(day)
-- As usage_hourly: tenant, then time, then the dimensions.
ORDER BY (tenant_id, day, kind, region, data_center, resource_id, server);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    rh_start AS hour, tenant_id, kind, region, data_center, resource_id, server,
    toDecimal128(rh_quantity, 0) AS quantity,
    rh_byte_seconds AS byte_seconds,
    toUInt64(rh_i = length(h_start)) AS events,
    toUInt64(1) AS pieces
FROM usage_events
ARRAY JOIN h_start AS rh_start, h_quantity AS rh_quantity, h_byte_seconds AS rh_byte_seconds,
    arrayEnumerate(h_start) AS rh_i;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    rd_start AS day, tenant_id, kind, region, data_center, resource_id, server,
    toDecimal128(rd_quantity, 0) AS quantity,
    rd_byte_seconds AS byte_seconds,
    toUInt64(rd_i = length(d_start)) AS events,
    toUInt64(1) AS pieces
FROM usage_events
ARRAY JOIN d_start AS rd_start, d_quantity AS rd_quantity, d_byte_seconds AS rd_byte_seconds,
    arrayEnumerate(d_start) AS rd_i;
