"""The numbered ClickHouse DDL, applied in order by ``distillguard migrate``.

What code must agree with in it is defined here once, and a test reads it back from the files.
"""

#: Days ClickHouse keeps scores: the TTL of ``entity_scores``, ``entity_links`` and
#: ``campaign_members`` (by their window's start, start and end). Rows of older windows are
#: dropped as they are written.
SCORES_KEPT_DAYS = 90

#: The column each of those tables' TTL counts from.
KEPT_BY = {
    "entity_scores": "window_start",
    "entity_links": "window_start",
    "campaign_members": "window_end",
}
