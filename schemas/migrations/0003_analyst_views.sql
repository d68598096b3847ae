-- 0003: views for analysts (the read-only user `analyst` of the sample
-- config may SELECT from them). Every column has a comment; the rollup views
-- do the sum() and GROUP BY that SummingMergeTree tables need, so their
-- answers do not depend on whether parts have merged.

CREATE VIEW IF NOT EXISTS v_usage_hourly (
    hour         DateTime('UTC') COMMENT 'start of the UTC hour',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when the event had none',
    quantity     Decimal128(0) COMMENT 'bytes (bandwidth, storage level) or licenses in the hour; an event crossing hours is split by time, floor per hour and the remainder in its last hour',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the hour',
    events       UInt64 COMMENT 'distinct events whose interval ends in the hour',
    pieces       UInt64 COMMENT 'distinct events whose interval overlaps the hour'
) AS
SELECT hour, tenant_id, kind, region, data_center, resource_id, server,
    sum(quantity) AS quantity, sum(byte_seconds) AS byte_seconds,
    sum(events) AS events, sum(pieces) AS pieces
FROM usage_hourly
GROUP BY hour, tenant_id, kind, region, data_center, resource_id, server;

CREATE VIEW IF NOT EXISTS v_usage_daily (
    day          Date COMMENT 'the UTC day',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when the event had none',
    quantity     Decimal128(0) COMMENT 'bytes (bandwidth, storage level) or licenses in the day; equal to the sum of the day''s hours in v_usage_hourly',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the day',
    events       UInt64 COMMENT 'distinct events whose interval ends in the day',
    pieces       UInt64 COMMENT 'distinct events whose interval overlaps the day'
) AS
SELECT day, tenant_id, kind, region, data_center, resource_id, server,
    sum(quantity) AS quantity, sum(byte_seconds) AS byte_seconds,
    sum(events) AS events, sum(pieces) AS pieces
FROM usage_daily
GROUP BY day, tenant_id, kind, region, data_center, resource_id, server;

CREATE VIEW IF NOT EXISTS v_tenant_daily (
    day                  Date COMMENT 'the UTC day',
    tenant_id            String COMMENT 'tenant',
    bandwidth_in_bytes   Decimal128(0) COMMENT 'bandwidthIn bytes in the day',
    bandwidth_out_bytes  Decimal128(0) COMMENT 'bandwidthOut bytes in the day',
    storage_byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the day (divide by 86400 x 2^30 for GiB-days)',
    licensed_servers     UInt64 COMMENT 'distinct servers with a license event overlapping the day',
    events               UInt64 COMMENT 'distinct usage events ending in the day, all kinds'
) AS
SELECT day, tenant_id,
    sumIf(quantity, kind = 'bandwidthIn') AS bandwidth_in_bytes,
    sumIf(quantity, kind = 'bandwidthOut') AS bandwidth_out_bytes,
    sumIf(byte_seconds, kind = 'storage') AS storage_byte_seconds,
    uniqExactIf(server, kind = 'license') AS licensed_servers,
    sum(events) AS events
FROM usage_daily
GROUP BY day, tenant_id;

CREATE VIEW IF NOT EXISTS v_usage_events (
    tenant_id       String COMMENT 'tenant; with entry_id and kind the dedupe key',
    entry_id        String COMMENT 'atom:id of the feed entry',
    kind            String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    event_type      String COMMENT 'USAGE or USAGE_SNAPSHOT',
    region          String COMMENT 'region',
    data_center     String COMMENT 'data center',
    resource_id     String COMMENT 'resource (backup agent)',
    server_id       String COMMENT 'serverID as written',
    server_name     String COMMENT 'serverName (license snapshots)',
    external        UInt8 COMMENT '1 when the licensed server is outside Rackspace',
    start_time      Nullable(DateTime('UTC')) COMMENT 'start of the interval (USAGE), whole seconds',
    end_time        Nullable(DateTime('UTC')) COMMENT 'end of the interval (USAGE), exclusive, whole seconds',
    event_time      Nullable(DateTime('UTC')) COMMENT 'time of a snapshot, whole seconds',
    quantity        UInt64 COMMENT 'bytes, or 1 for a license',
    byte_seconds    Decimal128(0) COMMENT 'storage byte-seconds of the whole interval',
    kafka_partition Int32 COMMENT 'Kafka partition the event came from',
    kafka_offset    Int64 COMMENT 'Kafka offset the event came from',
    inserted_at     DateTime('UTC') COMMENT 'when the sink inserted it'
) AS
SELECT tenant_id, entry_id, kind, event_type, region, data_center, resource_id,
    server_id, server_name, ifNull(external, toUInt8(0)) AS external,
    start_time, end_time, event_time, quantity, byte_seconds,
    kafka_partition, kafka_offset, inserted_at
FROM usage_events;

CREATE VIEW IF NOT EXISTS v_other_events (
    tenant_id   String COMMENT 'tenant, may be empty for a system event',
    entry_id    String COMMENT 'atom:id of the feed entry',
    event_type  String COMMENT 'CREATE, UPDATE, DELETE, UP, DOWN, INFO, USAGE_SUMMARY, ... (never billed)',
    product_namespace String COMMENT 'namespace URI of the product, empty when none',
    product_version   String COMMENT 'product version',
    region      String COMMENT 'region',
    resource_id String COMMENT 'resource',
    time        DateTime('UTC') COMMENT 'the event''s first known time',
    inserted_at DateTime('UTC') COMMENT 'when the sink inserted it'
) AS
SELECT tenant_id, entry_id, event_type, product_namespace, product_version,
    region, resource_id, time, inserted_at
FROM other_events;

CREATE VIEW IF NOT EXISTS v_rejects (
    stage       String COMMENT 'ingest (entry did not parse or validate) or sink (record could not be decoded or inserted)',
    tenant_id   String COMMENT 'tenant of the feed or the record',
    feed        String COMMENT 'feed URL (ingest)',
    marker      String COMMENT 'marker of the page request (ingest)',
    entry_id    String COMMENT 'atom:id when known',
    position    Int64 COMMENT 'position on the page (ingest) or Kafka offset of the record (sink)',
    reason      String COMMENT 'why it could not be counted',
    raw         String COMMENT 'the bytes as received',
    raw_bytes   UInt64 COMMENT 'length of raw',
    time        DateTime('UTC') COMMENT 'when the dead letter was made',
    source      String COMMENT 'topic/partition/offset of the usage record (sink)'
) AS
SELECT stage, tenant_id, feed, marker, entry_id, position, reason, raw,
    length(raw) AS raw_bytes, time, source
FROM rejects;

CREATE VIEW IF NOT EXISTS v_rollup_check (
    tenant_id        String COMMENT 'tenant',
    kind             String COMMENT 'kind',
    event_quantity   Decimal128(0) COMMENT 'sum of quantity over the distinct events in usage_events',
    hourly_quantity  Decimal128(0) COMMENT 'sum of quantity over usage_hourly: equal to event_quantity',
    daily_quantity   Decimal128(0) COMMENT 'sum of quantity over usage_daily: equal to event_quantity',
    event_count      UInt64 COMMENT 'distinct events in usage_events',
    hourly_events    UInt64 COMMENT 'sum of events over usage_hourly: equal to event_count',
    daily_events     UInt64 COMMENT 'sum of events over usage_daily: equal to event_count'
) AS
SELECT tenant_id, kind,
    sum(eq) AS event_quantity, sum(hq) AS hourly_quantity, sum(dq) AS daily_quantity,
    sum(ec) AS event_count, sum(he) AS hourly_events, sum(de) AS daily_events
FROM (
    SELECT tenant_id, kind, toDecimal128(quantity, 0) AS eq, toDecimal128(0, 0) AS hq, toDecimal128(0, 0) AS dq,
        toUInt64(1) AS ec, toUInt64(0) AS he, toUInt64(0) AS de
    FROM usage_events
    UNION ALL
    SELECT tenant_id, kind, toDecimal128(0, 0), quantity, toDecimal128(0, 0), toUInt64(0), events, toUInt64(0)
    FROM usage_hourly
    UNION ALL
    SELECT tenant_id, kind, toDecimal128(0, 0), toDecimal128(0, 0), quantity, toUInt64(0), toUInt64(0), events
    FROM usage_daily
)
GROUP BY tenant_id, kind;
