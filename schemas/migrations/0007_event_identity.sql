-- 0007: the identity of a usage event is (tenant, CUF event id, kind), and
-- a correction (CUF referenceId) replaces the event it names.
--
-- Atom Hopper gives every POST a new atom id, so a publisher's retry puts one
-- usage event in the feed twice under two atom ids: the dedupe key of 0001,
-- (tenant, atom id, kind), billed both. The CUF event id is the event's own
-- identity; usage_ids indexes it. An event whose referenceId is R corrects
-- the event R: the rollups must hold the correction instead of R, whichever
-- arrives first. Rollups are written once per insert by views, so taking an
-- event back out is an insert too: usage_replaced holds a copy of each
-- usage_events row that no longer counts, and its views write that row's
-- pieces negated. An event counts when it is in usage_events and not in
-- usage_replaced (schemas/schemas.go argues why the rollups stay exact).
--
-- usage_events keeps its key (tenant_id, kind, entry_id): changing a table's
-- ORDER BY means moving its rows to a new table, and the views that read
-- usage_events follow a renamed table by name on 18.16 and by uuid on the
-- current release, so a rebuild of usage_events could not be made safe for
-- both. The lookups by event id go to usage_ids instead.

ALTER TABLE usage_events ADD COLUMN reference_id String DEFAULT '' AFTER event_id;

-- (18.16 ignores a COMMENT in ADD COLUMN.)
ALTER TABLE usage_events COMMENT COLUMN reference_id 'referenceId of the content event: the event id this event corrects (replaces); empty when it corrects none, and in rows written before 0007';

-- A reject is one per bad record (0001 kept one per fingerprint: identical
-- bad records at two offsets made one row): the sink looks rejects up by
-- fingerprint and record, and the record's topic life names it apart from
-- the same offset of another life of the topic.
ALTER TABLE rejects ADD COLUMN kafka_topic_id String DEFAULT '' AFTER kafka_topic;

ALTER TABLE rejects COMMENT COLUMN kafka_topic_id 'the id of kafka_topic''s life the record was read in (Kafka topic ids); empty in rows written before 0007 and where the cluster has no topic ids';

ALTER TABLE rejects COMMENT COLUMN fingerprint 'hex SHA-256 of stage, feed, tenant_id, entry_id, reason and raw: with the record (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset) the identity of a reject';

-- What follows changes what the views of usage_events write and rebuilds
-- tables from usage_events, while no insert into usage_events can run: GUARD gives usage_events a view
-- whose table is missing, so every INSERT into it fails (and the sink
-- retries it) until UNGUARD; the inserts running when it began are waited
-- out. A run stopped in between leaves the guard on and the next run does
-- it all again, so every statement here may run twice.
GUARD TABLE usage_events;

-- Rows of replaced events take their pieces back out of the rollups: events
-- and pieces go negative in those rows (the sums stay >= 0), so they become
-- signed. A bucket whose events were all replaced sums to 0 and may vanish
-- when parts merge. Readers that ask whether something is there (a licensed
-- server) test sum(pieces) > 0, never the existence of a row.
ALTER TABLE usage_hourly MODIFY COLUMN events Int64, MODIFY COLUMN pieces Int64;

ALTER TABLE usage_hourly COMMENT COLUMN events 'events whose interval ends in this hour (each counted event once; a replaced event adds -1 in its replacement row)', COMMENT COLUMN pieces 'events whose interval overlaps this hour (a replaced event adds -1); a server is in the hour when the sum over its rows is above 0';

ALTER TABLE usage_daily MODIFY COLUMN events Int64, MODIFY COLUMN pieces Int64;

ALTER TABLE usage_daily COMMENT COLUMN events 'events whose interval ends in this day (each counted event once; a replaced event adds -1 in its replacement row)', COMMENT COLUMN pieces 'events whose interval overlaps this day (a replaced event adds -1); a server is in the day when the sum over its rows is above 0';

-- The views that write the rollups, again: 18.16 wants a view's columns of
-- the target's types exactly (Int64 now).
DROP TABLE IF EXISTS usage_hourly_mv;
DROP TABLE IF EXISTS usage_daily_mv;

CREATE MATERIALIZED VIEW usage_hourly_mv TO usage_hourly AS
SELECT
    rh_start AS hour, tenant_id, kind, region, data_center, resource_id, server,
    toDecimal128(rh_quantity, 0) AS quantity,
    rh_byte_seconds AS byte_seconds,
    toInt64(rh_i = length(h_start)) AS events,
    toInt64(1) AS pieces
FROM usage_events
ARRAY JOIN h_start AS rh_start, h_quantity AS rh_quantity, h_byte_seconds AS rh_byte_seconds,
    arrayEnumerate(h_start) AS rh_i;

CREATE MATERIALIZED VIEW usage_daily_mv TO usage_daily AS
SELECT
    rd_start AS day, tenant_id, kind, region, data_center, resource_id, server,
    toDecimal128(rd_quantity, 0) AS quantity,
    rd_byte_seconds AS byte_seconds,
    toInt64(rd_i = length(d_start)) AS events,
    toInt64(1) AS pieces
FROM usage_events
ARRAY JOIN d_start AS rd_start, d_quantity AS rd_quantity, d_byte_seconds AS rd_byte_seconds,
    arrayEnumerate(d_start) AS rd_i;

CREATE TABLE IF NOT EXISTS usage_replaced (
    tenant_id       String COMMENT 'tenant of the replaced event',
    kind            String COMMENT 'its kind',
    event_id        String COMMENT 'its CUF event id',
    entry_id        String COMMENT 'atom id of the usage_events row this copies',
    reference_id    String COMMENT 'referenceId of the replaced event',
    replaced_by     String COMMENT 'the event id that counted instead when it was replaced (the correction; or, for an event that arrived already corrected, the event counted then)',
    event_type      String COMMENT 'USAGE or USAGE_SNAPSHOT',
    region          String COMMENT 'region',
    data_center     String COMMENT 'data center',
    resource_id     String COMMENT 'resource (backup agent)',
    server          String COMMENT 'server dimension, as in usage_events',
    external        Nullable(UInt8) COMMENT 'as in usage_events',
    time            DateTime('UTC') COMMENT 'the time the event is filed under, as in usage_events',
    quantity        UInt64 COMMENT 'its quantity',
    byte_seconds    Decimal128(0) COMMENT 'its byte-seconds (storage)',
    h_start         Array(DateTime('UTC')) COMMENT 'its hourly pieces, copied from usage_events',
    h_quantity      Array(UInt64) COMMENT 'as in usage_events',
    h_byte_seconds  Array(Decimal128(0)) COMMENT 'as in usage_events',
    d_start         Array(Date) COMMENT 'its daily pieces, copied from usage_events',
    d_quantity      Array(UInt64) COMMENT 'as in usage_events',
    d_byte_seconds  Array(Decimal128(0)) COMMENT 'as in usage_events',
    kafka_topic     String COMMENT 'Kafka topic of the record whose arrival replaced it',
    kafka_partition Int32 COMMENT 'its partition',
    kafka_offset    Int64 COMMENT 'its offset',
    inserted_at     DateTime('UTC') COMMENT 'when the sink replaced it'
)
ENGINE = MergeTree
-- As usage_events: a month is dropped from both together.
PARTITION BY toYYYYMM(time)
-- The row it copies: the sink looks up which rows of an event are replaced.
ORDER BY (tenant_id, kind, event_id, entry_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_replaced_mv TO usage_hourly AS
SELECT
    rh_start AS hour, tenant_id, kind, region, data_center, resource_id, server,
    -toDecimal128(rh_quantity, 0) AS quantity,
    -rh_byte_seconds AS byte_seconds,
    -toInt64(rh_i = length(h_start)) AS events,
    toInt64(-1) AS pieces
FROM usage_replaced
ARRAY JOIN h_start AS rh_start, h_quantity AS rh_quantity, h_byte_seconds AS rh_byte_seconds,
    arrayEnumerate(h_start) AS rh_i;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_replaced_mv TO usage_daily AS
SELECT
    rd_start AS day, tenant_id, kind, region, data_center, resource_id, server,
    -toDecimal128(rd_quantity, 0) AS quantity,
    -rd_byte_seconds AS byte_seconds,
    -toInt64(rd_i = length(d_start)) AS events,
    toInt64(-1) AS pieces
FROM usage_replaced
ARRAY JOIN d_start AS rd_start, d_quantity AS rd_quantity, d_byte_seconds AS rd_byte_seconds,
    arrayEnumerate(d_start) AS rd_i;

CREATE TABLE IF NOT EXISTS usage_copies (
    tenant_id       String COMMENT 'tenant',
    kind            String COMMENT 'kind',
    event_id        String COMMENT 'the CUF event id the copy repeats',
    entry_id        String COMMENT 'atom id of the copy',
    kept_entry_id   String COMMENT 'atom id of the copy that is kept (the first the sink saw)',
    conflict        UInt8 COMMENT '0: the same event published again (a publisher''s retry: not counted again); 1: the same event id saying something else (rejected, also in rejects)',
    kafka_topic     String COMMENT 'Kafka topic of the copy''s record',
    kafka_partition Int32 COMMENT 'its partition',
    kafka_offset    Int64 COMMENT 'its offset',
    inserted_at     DateTime('UTC') COMMENT 'when the sink saw it'
)
-- A record read twice (a replay) is one copy: merges fold the repeats, and
-- v_event_copies reads with GROUP BY.
ENGINE = ReplacingMergeTree
-- Copies are few: no partitions.
ORDER BY (tenant_id, kind, event_id, entry_id, kafka_topic, kafka_partition, kafka_offset);

-- license_daily becomes a count, so that a replaced licence event can be
-- taken back out: a server is licensed on a day when its rows sum to more
-- than 0. Its rows (facts, some written twice by 0004's backfill) cannot be
-- turned into counts, so it is counted again from usage_events.
DROP TABLE IF EXISTS license_daily_mv;
DROP TABLE IF EXISTS license_daily_replaced_mv;
DROP TABLE IF EXISTS license_daily;

CREATE TABLE license_daily (
    day       Date COMMENT 'the UTC day the licence event overlaps',
    tenant_id String COMMENT 'tenant',
    server    String COMMENT 'server_id, or name:<server_name> when there is none (as in the rollups)',
    external  UInt8 COMMENT '1 when the licence event said the server is outside Rackspace, else 0 (NULL is 0)',
    pieces    Int64 COMMENT 'licence events (1 each, -1 for a replaced one) behind this fact: the server is licensed on the day when the sum over its rows is above 0, and external when the sum over its rows with external = 1 is'
)
ENGINE = SummingMergeTree(pieces)
-- As in 0004 and 0005.
PARTITION BY toYear(day)
ORDER BY (tenant_id, day, server, external)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW license_daily_mv TO license_daily AS
SELECT ld_day AS day, tenant_id, server, ifNull(external, toUInt8(0)) AS external, toInt64(1) AS pieces
FROM usage_events
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';

CREATE MATERIALIZED VIEW license_daily_replaced_mv TO license_daily AS
SELECT ld_day AS day, tenant_id, server, ifNull(external, toUInt8(0)) AS external, toInt64(-1) AS pieces
FROM usage_replaced
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';

INSERT INTO license_daily (day, tenant_id, server, external, pieces)
SELECT ld_day, tenant_id, server, ifNull(external, toUInt8(0)), toInt64(1)
FROM usage_events
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';

INSERT INTO license_daily (day, tenant_id, server, external, pieces)
SELECT ld_day, tenant_id, server, ifNull(external, toUInt8(0)), toInt64(-1)
FROM usage_replaced
ARRAY JOIN d_start AS ld_day
WHERE kind = 'license';

-- usage_ids: every usage event by its id (role 0), and every correction by
-- the id it corrects (role 1), so that one lookup by id finds an event and
-- the events that replace it. Written by views of usage_events, in the same
-- INSERT; a view that fails before them can leave usage_events holding rows
-- this index lacks, which the sink then finds (it reads usage_events for the
-- batches that may follow such a failure) and mends. Facts: a row written
-- twice means what it meant once.
DROP TABLE IF EXISTS usage_ids_mv;
DROP TABLE IF EXISTS usage_ids_ref_mv;
DROP TABLE IF EXISTS usage_ids;

CREATE TABLE usage_ids (
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'kind: an identity is (tenant, event id, kind)',
    id           String COMMENT 'an event id',
    role         UInt8 COMMENT '0: event_id is id (the event itself); 1: event_id corrects id (its referenceId is id)',
    event_id     String COMMENT 'the event of this row',
    entry_id     String COMMENT 'atom id of its usage_events row',
    reference_id String COMMENT 'its referenceId',
    published    Nullable(DateTime('UTC')) COMMENT 'its atom:published, whole seconds (usage_events keeps no more): of two corrections of one event the later published counts, to the second',
    time         DateTime('UTC') COMMENT 'the time its usage_events row is filed under'
)
ENGINE = ReplacingMergeTree
-- As usage_events, so that a month is dropped from both.
PARTITION BY toYYYYMM(time)
-- By id: the sink's lookups name ids of a tenant and kind.
ORDER BY (tenant_id, kind, id, role, event_id, entry_id);

CREATE MATERIALIZED VIEW usage_ids_mv TO usage_ids AS
SELECT tenant_id, kind, event_id AS id, toUInt8(0) AS role, event_id, entry_id, reference_id,
    published, time
FROM usage_events;

CREATE MATERIALIZED VIEW usage_ids_ref_mv TO usage_ids AS
SELECT tenant_id, kind, reference_id AS id, toUInt8(1) AS role, event_id, entry_id, reference_id,
    published, time
FROM usage_events
WHERE reference_id != '';

INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time)
SELECT tenant_id, kind, event_id, toUInt8(0), event_id, entry_id, reference_id, published, time
FROM usage_events;

INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time)
SELECT tenant_id, kind, reference_id, toUInt8(1), event_id, entry_id, reference_id, published, time
FROM usage_events
WHERE reference_id != '';

UNGUARD TABLE usage_events;

-- The analyst views, again: the rollups are read by sum(pieces) > 0 (a
-- replaced event's row cancels its twin), and v_usage_events says which
-- events count.
DROP TABLE IF EXISTS v_usage_hourly;

CREATE VIEW v_usage_hourly (
    hour         DateTime('UTC') COMMENT 'start of the UTC hour',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when the event had none',
    quantity     Decimal128(0) COMMENT 'bytes (bandwidth, storage level) or licenses in the hour, of the events that count (a replaced event counts no more); an event crossing hours is split by time, floor per hour and the remainder in its last hour',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the hour',
    events       Int64 COMMENT 'counted events whose interval ends in the hour',
    pieces       Int64 COMMENT 'counted events whose interval overlaps the hour'
) AS
SELECT hour, tenant_id, kind, region, data_center, resource_id, server,
    sum(quantity) AS quantity, sum(byte_seconds) AS byte_seconds,
    sum(events) AS events, sum(pieces) AS pieces
FROM usage_hourly
GROUP BY hour, tenant_id, kind, region, data_center, resource_id, server
HAVING pieces > 0;

DROP TABLE IF EXISTS v_usage_daily;

CREATE VIEW v_usage_daily (
    day          Date COMMENT 'the UTC day',
    tenant_id    String COMMENT 'tenant',
    kind         String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    region       String COMMENT 'region',
    data_center  String COMMENT 'data center',
    resource_id  String COMMENT 'resource (backup agent)',
    server       String COMMENT 'server_id, or name:<server_name> when the event had none',
    quantity     Decimal128(0) COMMENT 'bytes (bandwidth, storage level) or licenses in the day, of the events that count; equal to the sum of the day''s hours in v_usage_hourly',
    byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the day',
    events       Int64 COMMENT 'counted events whose interval ends in the day',
    pieces       Int64 COMMENT 'counted events whose interval overlaps the day'
) AS
SELECT day, tenant_id, kind, region, data_center, resource_id, server,
    sum(quantity) AS quantity, sum(byte_seconds) AS byte_seconds,
    sum(events) AS events, sum(pieces) AS pieces
FROM usage_daily
GROUP BY day, tenant_id, kind, region, data_center, resource_id, server
HAVING pieces > 0;

DROP TABLE IF EXISTS v_tenant_daily;

CREATE VIEW v_tenant_daily (
    day                  Date COMMENT 'the UTC day',
    tenant_id            String COMMENT 'tenant',
    bandwidth_in_bytes   Decimal128(0) COMMENT 'bandwidthIn bytes in the day',
    bandwidth_out_bytes  Decimal128(0) COMMENT 'bandwidthOut bytes in the day',
    storage_byte_seconds Decimal128(0) COMMENT 'storage byte-seconds in the day (divide by 86400 x 2^30 for GiB-days)',
    licensed_servers     UInt64 COMMENT 'distinct servers with a counted license event overlapping the day',
    events               Int64 COMMENT 'counted usage events ending in the day, all kinds'
) AS
SELECT day, tenant_id,
    sumIf(q, kind = 'bandwidthIn') AS bandwidth_in_bytes,
    sumIf(q, kind = 'bandwidthOut') AS bandwidth_out_bytes,
    sumIf(bs, kind = 'storage') AS storage_byte_seconds,
    countIf(kind = 'license' AND p > 0) AS licensed_servers,
    sum(ev) AS events
FROM (
    SELECT day, tenant_id, kind, server, sum(quantity) AS q, sum(byte_seconds) AS bs, sum(pieces) AS p, sum(events) AS ev
    FROM usage_daily
    GROUP BY day, tenant_id, kind, server
)
GROUP BY day, tenant_id;

DROP TABLE IF EXISTS v_usage_events;

CREATE VIEW v_usage_events (
    tenant_id       String COMMENT 'tenant; with event_id and kind the event''s identity',
    event_id        String COMMENT 'CUF event id',
    kind            String COMMENT 'bandwidthIn, bandwidthOut, storage or license',
    entry_id        String COMMENT 'atom:id of the feed entry (a republished event keeps its event id under a new atom id: v_event_copies)',
    reference_id    String COMMENT 'the event id this event corrects (replaces); empty when none',
    counted         UInt8 COMMENT '1 when the event counts in the rollups and invoices; 0 when a correction replaced it',
    replaced_by     String COMMENT 'the event id that counted instead when it was replaced; empty when counted',
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
SELECT tenant_id, event_id, kind, entry_id, reference_id,
    toUInt8(replaced_by = '') AS counted, replaced_by,
    event_type, region, data_center, resource_id,
    server_id, server_name, ifNull(external, toUInt8(0)) AS external,
    start_time, end_time, event_time, quantity, byte_seconds,
    kafka_partition, kafka_offset, inserted_at
FROM usage_events
ANY LEFT JOIN (SELECT tenant_id, kind, event_id, entry_id, replaced_by FROM usage_replaced) AS r
USING (tenant_id, kind, event_id, entry_id);

CREATE VIEW IF NOT EXISTS v_event_copies (
    tenant_id     String COMMENT 'tenant',
    kind          String COMMENT 'kind',
    event_id      String COMMENT 'the CUF event id published more than once',
    entry_id      String COMMENT 'atom id of a copy the sink did not count',
    kept_entry_id String COMMENT 'atom id of the copy that counts (the first one seen)',
    conflict      UInt8 COMMENT '0: a republish (the same event again, counted once); 1: the same event id saying something else (rejected: also in v_rejects)',
    records       UInt64 COMMENT 'Kafka records of this copy (more than 1 when it was published to Kafka more than once)',
    first_seen    DateTime('UTC') COMMENT 'when the sink first saw it'
) AS
SELECT tenant_id, kind, event_id, entry_id, any(kept_entry_id) AS kept_entry_id, max(conflict) AS conflict,
    uniqExact(kafka_topic, kafka_partition, kafka_offset) AS records, min(inserted_at) AS first_seen
FROM usage_copies
GROUP BY tenant_id, kind, event_id, entry_id;

DROP TABLE IF EXISTS v_rollup_check;

CREATE VIEW v_rollup_check (
    tenant_id        String COMMENT 'tenant',
    kind             String COMMENT 'kind',
    event_quantity   Decimal128(0) COMMENT 'sum of quantity over the counted events (usage_events less usage_replaced)',
    hourly_quantity  Decimal128(0) COMMENT 'sum of quantity over usage_hourly: equal to event_quantity',
    daily_quantity   Decimal128(0) COMMENT 'sum of quantity over usage_daily: equal to event_quantity',
    event_count      Int64 COMMENT 'counted events (usage_events less usage_replaced)',
    hourly_events    Int64 COMMENT 'sum of events over usage_hourly: equal to event_count',
    daily_events     Int64 COMMENT 'sum of events over usage_daily: equal to event_count'
) AS
SELECT tenant_id, kind,
    sum(eq) AS event_quantity, sum(hq) AS hourly_quantity, sum(dq) AS daily_quantity,
    sum(ec) AS event_count, sum(he) AS hourly_events, sum(de) AS daily_events
FROM (
    SELECT tenant_id, kind, toDecimal128(quantity, 0) AS eq, toDecimal128(0, 0) AS hq, toDecimal128(0, 0) AS dq,
        toInt64(1) AS ec, toInt64(0) AS he, toInt64(0) AS de
    FROM usage_events
    UNION ALL
    SELECT tenant_id, kind, -toDecimal128(quantity, 0), toDecimal128(0, 0), toDecimal128(0, 0), toInt64(-1), toInt64(0), toInt64(0)
    FROM usage_replaced
    UNION ALL
    SELECT tenant_id, kind, toDecimal128(0, 0), quantity, toDecimal128(0, 0), toInt64(0), events, toInt64(0)
    FROM usage_hourly
    UNION ALL
    SELECT tenant_id, kind, toDecimal128(0, 0), toDecimal128(0, 0), quantity, toInt64(0), toInt64(0), events
    FROM usage_daily
)
GROUP BY tenant_id, kind;
