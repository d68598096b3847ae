-- 0006: sink_progress names the life of its topic.
--
-- A topic deleted and made again under the same name starts its offsets
-- again at 0. The sink resumes each partition from the largest next_offset
-- in sink_progress, so progress written in the topic's earlier life made it
-- skip the new life's first records: events lost from every bill. Each row
-- now carries the topic's id (Kafka's topic ids, KIP-516: new with each
-- life of a topic), and the sink counts only the rows of the present life;
-- where only an earlier life's rows are there, it reads the partition from
-- its start and its key lookup skips what ClickHouse already holds.
--
-- The id joins the key: ReplacingMergeTree keeps one row per key, the one
-- with the largest next_offset, and would otherwise keep the earlier life's
-- row over the present one's. ClickHouse cannot change a table's key, so
-- REBUILD moves the rows (all of them, with an empty id: written before this
-- migration) into the new table (schemas/rebuild.go); the table holds a row
-- per partition and flush, so it takes no time.

REBUILD TABLE sink_progress WITH
CREATE TABLE sink_progress (
    kafka_topic     String COMMENT 'Kafka topic',
    kafka_topic_id  String DEFAULT '' COMMENT 'the topic''s id, base64 (Kafka topic ids: a topic made again under its name gets another); empty in rows written before 0006, and where the cluster has no topic ids',
    kafka_partition Int32 COMMENT 'Kafka partition',
    next_offset     UInt64 COMMENT 'every record below this offset is in ClickHouse (as an event, a duplicate skipped, or a reject)',
    written_at      DateTime('UTC') COMMENT 'when the sink wrote this row'
)
-- As in 0001: one row per flush and partition, collapsed to the latest by
-- merges; readers take max(next_offset) per topic life and partition.
ENGINE = ReplacingMergeTree(next_offset)
-- No partitions: the table is tiny. The topic's id before the partition: a
-- topic's lives stay apart.
ORDER BY (kafka_topic, kafka_topic_id, kafka_partition);
