-- Every scored entity window, every enforcement event, every rejected message, and which
-- accounts were seen behind which IP blocks. Redelivered rows carry the same sort key and collapse
-- under ReplacingMergeTree (read with FINAL, or let merges do it), so a replay after a restart
-- never counts twice.

CREATE TABLE IF NOT EXISTS {database}.entity_scores
(
    entity_kind      LowCardinality(String),
    entity_id        String,
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    requests         UInt32,
    features         Map(LowCardinality(String), Float64),
    novelty          Float64,
    score            Float64,
    level            UInt8,
    drift            Bool,
    detector_version LowCardinality(String),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (entity_kind, entity_id, window_start)
TTL toDateTime(window_start) + INTERVAL 90 DAY;

CREATE TABLE IF NOT EXISTS {database}.enforcement_actions
(
    enforcement_id       String,
    ts                   DateTime64(3, 'UTC'),
    entity_kind          LowCardinality(String),
    entity_id            String,
    action               LowCardinality(String),
    score                Float64,
    threshold            Float64,
    reason_features      Array(LowCardinality(String)),
    reason_contributions Array(Float64),
    reasons              String,
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    expires_at           Nullable(DateTime64(3, 'UTC')),
    members              Array(String),
    detector_version     LowCardinality(String),
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (entity_kind, entity_id, ts, enforcement_id);

CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    received_at      DateTime64(3, 'UTC'),
    source           LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    field            LowCardinality(String),
    reason           String,
    raw              String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source, source_partition, source_offset)
TTL toDateTime(received_at) + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS {database}.entity_links
(
    window_start DateTime64(3, 'UTC'),
    account_id   String,
    ip_block     String,
    requests     UInt32
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (account_id, ip_block, window_start)
TTL toDateTime(window_start) + INTERVAL 90 DAY;
