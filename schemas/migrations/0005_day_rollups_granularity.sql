-- 0005: the day rollups with index marks every 256 rows instead of 8192.
--
-- Every invoice and daily usage request reads one tenant's month from
-- usage_daily (about 250 rows in the benchmark: 31 days x 4 kinds x 2
-- servers) and license_daily (about 60). ClickHouse reads whole granules, so
-- with 8192-row granules each such query decompressed and filtered 8,000 to
-- 16,000 rows a column to keep 250. With 256-row granules, on the benchmark's
-- 106,580,000 events, ClickHouse 18.16 spent about 9 % less CPU on one
-- tenant's month of daily usage, 23 % less on a batch of four, and 6-17 %
-- less per request of the query benchmark (BENCHMARKS.md, session 5). The
-- primary index grows to one entry per 256 rows: 23,000 entries for the
-- 5,840,000 rows of that year, kept in memory.
--
-- ClickHouse cannot change index_granularity of a table, so REBUILD moves the
-- rows into a new table of the same name (schemas/rebuild.go): the table is
-- renamed away, inserts that began before are waited out, its rows are copied,
-- the new table takes the name. Meanwhile the sink's inserts fail and are
-- retried, and the query service answers 503; no row is counted twice or
-- lost. It takes seconds for a year of 2000 tenants. The materialized views
-- and the analyst views name their tables and read the new ones.

REBUILD TABLE usage_daily WITH
CREATE TABLE usage_daily (
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
-- As in 0002.
PARTITION BY toYear(day)
ORDER BY (tenant_id, day, kind, region, data_center, resource_id, server)
-- A tenant's month is a few hundred rows.
SETTINGS index_granularity = 256;

REBUILD TABLE license_daily WITH
CREATE TABLE license_daily (
    day       Date COMMENT 'the UTC day the licence event overlaps',
    tenant_id String COMMENT 'tenant',
    server    String COMMENT 'server_id, or name:<server_name> when there is none (as in the rollups)',
    external  UInt8 COMMENT '1 when the licence event said the server is outside Rackspace, else 0 (NULL is 0)'
)
ENGINE = ReplacingMergeTree
-- As in 0004.
PARTITION BY toYear(day)
ORDER BY (tenant_id, day, server, external)
SETTINGS index_granularity = 256;
