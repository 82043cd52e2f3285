"""What the detector produces: scored windows, enforcement events, links, the account summaries
a campaign stage links (`LinkInput`), and their containers.

Kept apart from `models.detector` so that the parts that score (the detector, the campaign
scorer) and the parts that write (sinks, the worker) share one definition without importing
each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from models.campaigns import CAMPAIGN_FEATURES, AccountSummaries, CampaignWindows
from models.explain import Reason
from models.features import EntityKind, features_for

__all__ = [
    "DetectorOutput",
    "EnforcementAction",
    "EntityLinks",
    "LinkInput",
    "ScoredWindows",
    "enforcement_id",
    "rfc3339",
]

F64 = npt.NDArray[np.float64]


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string.

    Examples
    --------
    >>> rfc3339(1795358487123)
    '2026-11-22T14:41:27.123Z'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class EnforcementAction:
    """One enforcement event, as published on ``enforcement-actions``."""

    enforcement_id: str
    ts_ms: int
    entity_kind: str
    entity_id: str
    action: str
    score: float
    threshold: float
    reasons: list[Reason]
    window_start_ms: int
    window_end_ms: int
    expires_ms: int | None
    members: list[str] | None
    detector_version: str

    @property
    def key(self) -> str:
        return f"{self.entity_kind}:{self.entity_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "enforcement_id": self.enforcement_id,
            "ts": rfc3339(self.ts_ms),
            "entity_kind": self.entity_kind,
            "entity_id": self.entity_id,
            "action": self.action,
            "score": self.score,
            "threshold": self.threshold,
            "reasons": self.reasons,
            "window_start": rfc3339(self.window_start_ms),
            "window_end": rfc3339(self.window_end_ms),
            "expires_at": None if self.expires_ms is None else rfc3339(self.expires_ms),
            "members": self.members,
            "detector_version": self.detector_version,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def enforcement_id(version: str, kind: str, entity: str, action: str, window_end_ms: int) -> str:
    """Deterministic id of a decision: the same decision on redelivered input has the same id."""
    key = f"{version}|{kind}|{entity}|{action}|{window_end_ms}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(slots=True)
class ScoredWindows:
    """Every entity of one kind scored in one window: the rows of ``entity_scores``."""

    kind: str
    start_ms: int
    end_ms: int
    ids: list[str]
    requests: npt.NDArray[np.int64]
    values: F64
    evidence: F64
    novelty: F64
    score: F64
    level: npt.NDArray[np.int8]
    drift: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)

    def feature_names(self) -> list[str]:
        """Names of the columns of ``values``."""
        if self.kind == "campaign":
            return list(CAMPAIGN_FEATURES)
        return [f.name for f in features_for(cast(EntityKind, self.kind))]

    def rows(self, version: str) -> Iterator[dict[str, Any]]:
        """One dict per entity window: the shape of ``entity_scores`` rows.

        Unknown feature values are left out of ``features`` rather than written as NaN.
        """
        names = self.feature_names()
        start, end = rfc3339(self.start_ms), rfc3339(self.end_ms)
        values = self.values.tolist()
        evidence, novelty, score = (
            self.evidence.tolist(),
            self.novelty.tolist(),
            self.score.tolist(),
        )
        level, drifted, requests = self.level.tolist(), self.drift.tolist(), self.requests.tolist()
        for i, entity in enumerate(self.ids):
            yield {
                "entity_kind": self.kind,
                "entity_id": entity,
                "window_start": start,
                "window_end": end,
                "requests": requests[i],
                "features": {n: v for n, v in zip(names, values[i], strict=True) if v == v},
                "evidence": round(evidence[i], 4),
                "novelty": round(novelty[i], 6),
                "score": round(score[i], 6),
                "level": level[i],
                "drift": drifted[i],
                "detector_version": version,
            }


@dataclass(slots=True)
class EntityLinks:
    """Which accounts were seen behind which IP blocks in one window, with request counts."""

    start_ms: int
    accounts: list[str]
    blocks: list[str]
    requests: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.accounts)


@dataclass(slots=True)
class LinkInput:
    """One window's accounts as the campaign scorer needs them: their summaries, their raw risk,
    whether each window was a reference window (what ordinary looks like, for calibration), and
    the population's typical behaviour shares (the baselines shown in reasons)."""

    summaries: AccountSummaries
    raw: F64
    reference: npt.NDArray[np.bool_]
    typical_share: F64


@dataclass(slots=True)
class DetectorOutput:
    scored: list[ScoredWindows] = field(default_factory=list)
    actions: list[EnforcementAction] = field(default_factory=list)
    links: list[EntityLinks] = field(default_factory=list)
    campaigns: list[CampaignWindows] = field(default_factory=list)
    # Account summaries for a campaign stage elsewhere (a detector that does not link itself).
    summaries: list[LinkInput] = field(default_factory=list)

    def extend(self, other: DetectorOutput) -> None:
        self.scored.extend(other.scored)
        self.actions.extend(other.actions)
        self.links.extend(other.links)
        self.campaigns.extend(other.campaigns)
        self.summaries.extend(other.summaries)


def round4(x: float) -> float | None:
    """4 decimals, None for NaN (reason baselines that are unknown)."""
    return None if x != x else round(x, 4)
