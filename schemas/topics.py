"""Kafka topic names of the contract (CONTRACTS.md) and their default partition counts."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BY_BLOCK",
    "DEAD_LETTERS",
    "ENFORCEMENT",
    "SUMMARIES",
    "SUSPECTS",
    "USAGE_EVENTS",
    "Topics",
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
_LEGAL = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class Topics:
    """The topic names one deployment uses: the contract's by default, or the ones a gateway
    already writes (``DISTILLGUARD_TOPIC_*``); the internal ones share a prefix.

    Examples
    --------
    >>> t = Topics(usage="prod.gateway.usage", internal_prefix="dg-prod.")
    >>> t.usage, t.by_block, t.enforcement
    ('prod.gateway.usage', 'dg-prod.events-by-block', 'enforcement-actions')
    >>> Topics(usage="")
    Traceback (most recent call last):
    ...
    ValueError: topic names must be 1-249 of [a-zA-Z0-9._-]: ''
    """

    usage: str = USAGE_EVENTS
    dead_letters: str = DEAD_LETTERS
    enforcement: str = ENFORCEMENT
    internal_prefix: str = "distillguard."

    def __post_init__(self) -> None:
        for name in (self.usage, self.dead_letters, self.enforcement, self.by_block):
            if not _LEGAL.fullmatch(name) or name in (".", ".."):
                raise ValueError(f"topic names must be 1-249 of [a-zA-Z0-9._-]: {name!r}")
        names = [self.usage, self.dead_letters, self.enforcement, self.by_block]
        names += [self.suspects, self.summaries]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must differ: {', '.join(names)}")

    @property
    def by_block(self) -> str:
        return self.internal_prefix + BY_BLOCK.removeprefix("distillguard.")

    @property
    def suspects(self) -> str:
        return self.internal_prefix + SUSPECTS.removeprefix("distillguard.")

    @property
    def summaries(self) -> str:
        return self.internal_prefix + SUMMARIES.removeprefix("distillguard.")

    def with_partitions(self, partitions: int = 8) -> dict[str, int]:
        """Topic name -> partitions, for creating them on a development broker."""
        return {
            self.usage: partitions,
            self.dead_letters: 1,
            self.enforcement: partitions,
            self.by_block: partitions,
            self.suspects: 1,
            self.summaries: 1,
        }


def default_topics(partitions: int = 8) -> dict[str, int]:
    """The contract's topic names -> partitions, for creating them on a development broker."""
    return Topics().with_partitions(partitions)
