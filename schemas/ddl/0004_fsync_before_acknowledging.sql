-- An insert is acknowledged once its part is on disk, not in the page cache. The worker commits
-- Kafka offsets after ClickHouse acknowledges what they produced; without these settings a
-- power loss or a filesystem error right after (ext4 remounting read-only) could lose parts
-- whose offsets were committed already, and nothing would read them again. Measured on this
-- project's machine: no difference in the time of an insert of 2,000 rows.

ALTER TABLE {database}.entity_scores MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE {database}.enforcement_actions MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE {database}.dead_letters MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE {database}.entity_links MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE {database}.detector_state MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
ALTER TABLE {database}.campaign_members MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1;
