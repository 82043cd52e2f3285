"""Kafka topic names of the contract (CONTRACTS.md) and their default partition counts."""

from __future__ import annotations

__all__ = [
    "BY_BLOCK",
    "DEAD_LETTERS",
    "ENFORCEMENT",
    "SUMMARIES",
    "SUSPECTS",
    "USAGE_EVENTS",
    "default_topics",
]

USAGE_EVENTS = "api-usage-events"
DEAD_LETTERS = "api-usage-events.dlq"
ENFORCEMENT = "enforcement-actions"
# Internal: accepted events re-keyed by IP block, and accounts over the member threshold.
BY_BLOCK = "distillguard.events-by-block"
SUSPECTS = "distillguard.suspects"
# Internal: every account window's summaries for campaign linking, and the account partitions'
# progress; one partition, so one campaign stage sees every account.
SUMMARIES = "distillguard.account-summaries"


def default_topics(partitions: int = 8) -> dict[str, int]:
    """Topic name -> partitions, for creating them on a development broker."""
    return {
        USAGE_EVENTS: partitions,
        DEAD_LETTERS: 1,
        ENFORCEMENT: partitions,
        BY_BLOCK: partitions,
        SUSPECTS: 1,
        SUMMARIES: 1,
    }
