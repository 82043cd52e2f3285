-- Checkpoints of the streaming worker: per stage and Kafka partition, the detector state (open
-- windows, per-entity state) and the offset of the next message it has not yet seen; partition
-- -1 holds the stage's population models. Restoring a partition means loading its latest row and
-- seeking to next_offset: the worker resumes exactly where the checkpoint was taken.

CREATE TABLE IF NOT EXISTS {database}.detector_state
(
    stage            LowCardinality(String),
    partition        Int32,
    next_offset      Int64,
    taken_at         DateTime64(3, 'UTC'),
    detector_version LowCardinality(String),
    state            String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(taken_at)
ORDER BY (stage, partition);
