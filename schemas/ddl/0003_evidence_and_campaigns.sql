-- Behaviour evidence beside novelty on every scored window (a score is made of both), and which
-- accounts made up each campaign window, so an analyst can see how a campaign grew: members are
-- written every window the campaign is active; `joined` marks the window an account joined it.

ALTER TABLE {database}.entity_scores ADD COLUMN IF NOT EXISTS evidence Float64 DEFAULT 0 AFTER requests;

CREATE TABLE IF NOT EXISTS {database}.campaign_members
(
    campaign_id  String,
    window_end   DateTime64(3, 'UTC'),
    account_id   String,
    joined       Bool,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(window_end)
ORDER BY (campaign_id, window_end, account_id)
TTL toDateTime(window_end) + INTERVAL 90 DAY;
