-- 0001: the event tables, the rejects table and the sink's progress ledger.
--
-- How the rollups stay exact (the argument, in full, is in schemas/doc.go):
--   * usage_events holds one row per distinct event (tenant_id, entry_id, kind).
--     The sink is its only writer. Before each insert it looks up the batch's
--     keys in usage_events and inserts only the keys that are not there yet, so
--     a duplicate, a replay, or a batch re-read after a crash adds no row.
--   * Each row carries its own split into hourly and daily pieces (the h_* and
--     d_* arrays, computed by the sink in exact integer arithmetic). The rollups
--     (0002) are materialized views over usage_events, so they are written by
--     the same INSERT statement, and ClickHouse acknowledges that statement only
--     after the views were written. A rollup therefore receives each distinct
--     event exactly once, and its buckets add up to the event's quantity.
--
-- Types: every time is DateTime('UTC') (18.16 has no DateTime64) plus a
-- *_ns UInt32 column for the sub-second part; absent times are NULL. Quantities
-- are UInt64 as in the event; sums and byte-seconds are Decimal128(0) (38
-- digits), since 2^64-1 bytes x 86,400 s does not fit in 64 bits and 18.16 has
-- no UInt128. Strings are String: LowCardinality needs an experimental setting
-- on 18.16.

CREATE TABLE IF NOT EXISTS usage_events (
    tenant_id         String COMMENT 'tenantId of the event; part of the dedupe key',
    entry_id          String COMMENT 'atom:id of the feed entry, trimmed (urn:uuid:...); part of the dedupe key',
    kind              String COMMENT 'bandwidthIn, bandwidthOut, storage or license; part of the dedupe key',
    event_id          String COMMENT 'id attribute of the content event',
    event_type        String COMMENT 'USAGE or USAGE_SNAPSHOT',
    event_version     String COMMENT 'version attribute of the core event',
    product_namespace String COMMENT 'namespace URI of the product element',
    product_version   String COMMENT 'version attribute of the product',
    region            String COMMENT 'region of the event',
    data_center       String COMMENT 'dataCenter of the event',
    environment       String COMMENT 'environment of the event',
    resource_id       String COMMENT 'resourceId (the backup agent)',
    resource_type     String COMMENT 'resourceType (AGENT)',
    server_id         String COMMENT 'serverID as written: an integer or a UUID; may be empty for an external licensed server',
    server_name       String COMMENT 'serverName of a license snapshot',
    server            String COMMENT 'the server dimension of the rollups: server_id, or name:<server_name> when there is no server_id',
    external          Nullable(UInt8) COMMENT '1 when the licensed server is outside Rackspace, 0 when not, NULL when the entry did not say (means 0)',
    start_time        Nullable(DateTime('UTC')) COMMENT 'start of a USAGE interval (inclusive), whole seconds',
    start_time_ns     UInt32 COMMENT 'nanoseconds after start_time',
    end_time          Nullable(DateTime('UTC')) COMMENT 'end of a USAGE interval (exclusive), whole seconds',
    end_time_ns       UInt32 COMMENT 'nanoseconds after end_time',
    event_time        Nullable(DateTime('UTC')) COMMENT 'time of a USAGE_SNAPSHOT, whole seconds',
    event_time_ns     UInt32 COMMENT 'nanoseconds after event_time',
    time              DateTime('UTC') COMMENT 'start_time, or event_time for a snapshot: the time the event is filed under',
    quantity          UInt64 COMMENT 'bytes for bandwidthIn, bandwidthOut and storage (bytes in use over the interval); 1 for license',
    byte_seconds      Decimal128(0) COMMENT 'storage only: floor(quantity x interval in ns / 1e9); 0 for other kinds',
    updated           Nullable(DateTime('UTC')) COMMENT 'atom:updated',
    published         Nullable(DateTime('UTC')) COMMENT 'atom:published',
    h_start           Array(DateTime('UTC')) COMMENT 'start of each UTC hour the event overlaps, ascending',
    h_quantity        Array(UInt64) COMMENT 'the part of quantity in each hour: floor(quantity x overlap / interval), the remainder in the last hour',
    h_byte_seconds    Array(Decimal128(0)) COMMENT 'the part of byte_seconds in each hour, split like h_quantity',
    d_start           Array(Date) COMMENT 'each UTC day the event overlaps, ascending',
    d_quantity        Array(UInt64) COMMENT 'the part of quantity in each day: the sum of its hours',
    d_byte_seconds    Array(Decimal128(0)) COMMENT 'the part of byte_seconds in each day: the sum of its hours',
    kafka_topic       String COMMENT 'Kafka topic the record came from',
    kafka_partition   Int32 COMMENT 'Kafka partition the record came from',
    kafka_offset      Int64 COMMENT 'Kafka offset of the record',
    inserted_at       DateTime('UTC') COMMENT 'when the sink inserted the row'
)
ENGINE = MergeTree
-- Monthly partitions: bills are monthly, and a month can be dropped or
-- re-loaded alone.
PARTITION BY toYYYYMM(time)
-- The dedupe key, tenant first: the sink's per-batch key lookup and every
-- per-tenant query read only the granules of the tenants they name.
ORDER BY (tenant_id, kind, entry_id);

CREATE TABLE IF NOT EXISTS other_events (
    tenant_id         String COMMENT 'tenantId of the event, may be empty for a system event',
    entry_id          String COMMENT 'atom:id of the feed entry, trimmed; with tenant_id and kind the dedupe key',
    kind              String COMMENT 'always other',
    event_id          String COMMENT 'id attribute of the content event',
    event_type        String COMMENT 'CREATE, UPDATE, DELETE, SUSPEND, UNSUSPEND, UP, DOWN, INFO, EXTENDED, ERROR, USAGE_SUMMARY, or a usage type of an unknown product',
    event_version     String COMMENT 'version attribute of the core event',
    product_namespace String COMMENT 'namespace URI of the product element, empty when there is none',
    product_version   String COMMENT 'version attribute of the product',
    region            String COMMENT 'region of the event',
    data_center       String COMMENT 'dataCenter of the event',
    environment       String COMMENT 'environment of the event',
    resource_id       String COMMENT 'resourceId',
    resource_type     String COMMENT 'resourceType',
    server_id         String COMMENT 'serverID as written',
    server_name       String COMMENT 'serverName',
    external          Nullable(UInt8) COMMENT '1, 0, or NULL when the entry did not say',
    start_time        Nullable(DateTime('UTC')) COMMENT 'startTime, whole seconds',
    start_time_ns     UInt32 COMMENT 'nanoseconds after start_time',
    end_time          Nullable(DateTime('UTC')) COMMENT 'endTime, whole seconds',
    end_time_ns       UInt32 COMMENT 'nanoseconds after end_time',
    event_time        Nullable(DateTime('UTC')) COMMENT 'eventTime, whole seconds',
    event_time_ns     UInt32 COMMENT 'nanoseconds after event_time',
    time              DateTime('UTC') COMMENT 'the first of start_time, event_time, updated, published that is present (else inserted_at)',
    quantity          UInt64 COMMENT 'always 0: other events are kept, never billed',
    updated           Nullable(DateTime('UTC')) COMMENT 'atom:updated',
    published         Nullable(DateTime('UTC')) COMMENT 'atom:published',
    kafka_topic       String COMMENT 'Kafka topic the record came from',
    kafka_partition   Int32 COMMENT 'Kafka partition the record came from',
    kafka_offset      Int64 COMMENT 'Kafka offset of the record',
    inserted_at       DateTime('UTC') COMMENT 'when the sink inserted the row'
)
ENGINE = MergeTree
-- Monthly, like usage_events, so both age out together.
PARTITION BY toYYYYMM(time)
-- The dedupe key, as in usage_events: the sink looks keys up per batch.
ORDER BY (tenant_id, kind, entry_id);

CREATE TABLE IF NOT EXISTS rejects (
    fingerprint     String COMMENT 'hex SHA-256 of stage, feed, tenant_id, entry_id, reason and raw: the dedupe key of a reject',
    stage           String COMMENT 'ingest: an entry that did not parse or validate; sink: a record that could not be decoded or inserted',
    feed            String COMMENT 'feed URL without query (ingest)',
    tenant_id       String COMMENT 'tenant of the subscription, or the record key (sink)',
    marker          String COMMENT 'marker of the page request (ingest)',
    entry_id        String COMMENT 'atom:id when it could be read',
    position        Int64 COMMENT 'position on the page (ingest) or Kafka offset of the usage record (sink)',
    reason          String COMMENT 'why it could not be counted',
    raw             String COMMENT 'the entry or record value as received, byte for byte',
    time            DateTime('UTC') COMMENT 'when the dead letter was made',
    source          String COMMENT 'topic/partition/offset of the usage record (sink)',
    kafka_topic     String COMMENT 'topic of the first record this reject came from (the dead-letter topic, or the usage topic for sink rejects)',
    kafka_partition Int32 COMMENT 'partition of that record',
    kafka_offset    Int64 COMMENT 'offset of that record',
    inserted_at     DateTime('UTC') COMMENT 'when the sink inserted the row'
)
ENGINE = MergeTree
-- Monthly by when the reject was made: rejects are read recent-first and
-- dropped by age.
PARTITION BY toYYYYMM(time)
-- Tenant, then the dedupe key: the sink looks up a batch's fingerprints
-- before inserting, so the same bad bytes (a re-read record, a replayed
-- page) make one reject; analysts read a tenant's rejects.
ORDER BY (tenant_id, fingerprint);

CREATE TABLE IF NOT EXISTS sink_progress (
    kafka_topic     String COMMENT 'Kafka topic',
    kafka_partition Int32 COMMENT 'Kafka partition',
    next_offset     UInt64 COMMENT 'every record below this offset is in ClickHouse (as an event, a duplicate skipped, or a reject)',
    written_at      DateTime('UTC') COMMENT 'when the sink wrote this row'
)
-- One row per flush and partition, collapsed to the latest by merges; readers
-- take max(next_offset), which is right before and after a merge.
ENGINE = ReplacingMergeTree(next_offset)
-- No partitions: the table is tiny.
ORDER BY (kafka_topic, kafka_partition);
