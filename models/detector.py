"""The detector: usage events in, scored entity windows and explained enforcement actions out.

One `Detector` is everything one worker (or one ``distillguard score`` replay) knows. Per entity
kind (``account``, ``ip_block``) it keeps:

- a `HalfSpaceForest` over the whole population of that kind, fed each window's features after
  a *one-sided* clamp (every feature below the population centre is raised to it), so only
  deviations in the risky direction can make a window novel;
- a `TailCalibrator` turning novelty into a calibrated score whose thresholds are
  false-positive budgets, and River's ``ADWIN`` on the population's median novelty, which makes
  the calibrator forget faster when the whole population shifts;
- an `EntityTable`: per entity its own baseline, a Page-Hinkley drift test on its novelty and
  its enforcement history, a few hundred bytes each.

Score-then-learn: a window is scored against what the models knew before it; windows that struck
the flag threshold are learned neither by the forest nor by the calibrator, so a campaign cannot
teach the models it is normal, nor move the thresholds it is measured against. (The flip side,
shared by every unsupervised detector: a campaign already running at full scale when the detector
first starts is part of what it learns as ordinary. Start it on traffic you trust, or restore a
snapshot.)
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from river import drift

from models.calibration import TailCalibrator
from models.events import UsageEvent
from models.explain import Reason, explain
from models.features import (
    EntityKind,
    EntityWindows,
    account_windows,
    block_windows,
    features_for,
    scored_columns,
)
from models.hst import HalfSpaceForest
from models.policy import PolicyConfig, decide
from models.state import EntityTable
from models.windows import ClosedWindow, Windower, WindowStats

__all__ = [
    "Detector",
    "DetectorConfig",
    "DetectorOutput",
    "EnforcementAction",
    "EntityLinks",
    "Population",
    "ScoredWindows",
    "rfc3339",
]

F64 = npt.NDArray[np.float64]
_MIN = 60_000
DETECTOR_NAME = "distillguard-0.1"


@dataclass(frozen=True)
class DetectorConfig:
    """Every knob of the detector; its hash is the ``detector_version`` on each action."""

    window_ms: int = _MIN
    allowed_lateness_ms: int = 10_000
    n_trees: int = 25
    height: int = 8
    forest_window: int = 2_000
    seed: int = 42
    calibration_warmup: int = 10_000
    max_unlearned_share: float = 0.3
    calibration_half_life: float = 500_000.0
    calibration_anchors: tuple[float, float] = (0.1, 0.01)
    centre_half_life: float = 50_000.0
    baseline_alpha: float = 0.1
    own_baseline_windows: int = 5
    new_model_ms: int = 48 * 60 * _MIN
    model_grace_ms: int = 15 * _MIN
    member_score: float = 0.995
    max_members: int = 200
    retention_ms: int = 7 * 24 * 60 * _MIN
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    @property
    def version(self) -> str:
        params = asdict(self)
        params["policy"]["allowlist"] = sorted(self.policy.allowlist)
        digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"{DETECTOR_NAME}+{digest[:10]}"


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

    kind: EntityKind
    start_ms: int
    end_ms: int
    ids: list[str]
    requests: npt.NDArray[np.int64]
    values: F64
    novelty: F64
    score: F64
    level: npt.NDArray[np.int8]
    drift: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, version: str) -> Iterator[dict[str, Any]]:
        """One dict per entity window: the shape of ``entity_scores`` rows.

        Unknown feature values are left out of ``features`` rather than written as NaN.
        """
        names = [f.name for f in features_for(self.kind)]
        start, end = rfc3339(self.start_ms), rfc3339(self.end_ms)
        values = self.values.tolist()
        novelty, score = self.novelty.tolist(), self.score.tolist()
        level, drifted, requests = self.level.tolist(), self.drift.tolist(), self.requests.tolist()
        for i, entity in enumerate(self.ids):
            yield {
                "entity_kind": self.kind,
                "entity_id": entity,
                "window_start": start,
                "window_end": end,
                "requests": requests[i],
                "features": {n: v for n, v in zip(names, values[i], strict=True) if v == v},
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
class DetectorOutput:
    scored: list[ScoredWindows] = field(default_factory=list)
    actions: list[EnforcementAction] = field(default_factory=list)
    links: list[EntityLinks] = field(default_factory=list)

    def extend(self, other: DetectorOutput) -> None:
        self.scored.extend(other.scored)
        self.actions.extend(other.actions)
        self.links.extend(other.links)


class _KindModel:
    """Population models and entity state for one entity kind."""

    def __init__(self, kind: EntityKind, cfg: DetectorConfig) -> None:
        self.kind: EntityKind = kind
        self.features = features_for(kind)
        self.columns = scored_columns(kind)
        self.model_features = tuple(self.features[i] for i in self.columns)
        n = len(self.features)
        self.forest = HalfSpaceForest(
            n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.forest_window, seed=cfg.seed
        )
        self.forest.build([f"{i:02d}_{f.name}" for i, f in enumerate(self.model_features)])
        self.calibrator = TailCalibrator(
            half_life=cfg.calibration_half_life,
            anchors=cfg.calibration_anchors,
            min_count=cfg.calibration_warmup,
        )
        self.adwin = drift.ADWIN()  # type: ignore[no-untyped-call]
        self.centre = np.full(len(self.columns), np.nan)  # population centre of model inputs
        self.typical = np.full(n, np.nan)  # population median of the raw features
        self.weight = 0.0

    @property
    def ready(self) -> bool:
        return self.calibrator.ready and not self.forest._first_window

    def _population_update(self, X: F64, raw: F64, half_life: float) -> None:
        """Move the population centre (median of squashed features) and typical raw values."""
        if X.shape[0] == 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            med_x = np.nanmedian(X, axis=0)
            med_raw = np.nanmedian(raw, axis=0)
        a = 1.0 if self.weight == 0 else 1.0 - 0.5 ** (X.shape[0] / half_life)
        self.centre = _ewma(self.centre, med_x, a)
        self.typical = _ewma(self.typical, med_raw, a)
        self.weight += X.shape[0]


def _ewma(old: F64, new: F64, a: float) -> F64:
    """NaN-aware exponential moving average: a NaN on either side keeps the other."""
    out: F64 = np.where(np.isnan(old), new, np.where(np.isnan(new), old, old + a * (new - old)))
    return out


def _links(w: ClosedWindow) -> EntityLinks:
    n_blocks = max(len(w.blocks), 1)
    pairs, counts = np.unique(w.account.astype(np.int64) * n_blocks + w.block, return_counts=True)
    acct, block = np.divmod(pairs, n_blocks)
    return EntityLinks(
        start_ms=w.start_ms,
        accounts=[w.accounts[a] for a in acct.tolist()],
        blocks=[w.blocks[b] for b in block.tolist()],
        requests=counts.astype(np.int64),
    )


class Population:
    """What the detector knows about everybody: the population models of each entity kind.

    One `Population` may be shared by several `Detector` s (one per Kafka partition in a worker),
    so every partition is scored against, and teaches, the same models.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.kinds = {k: _KindModel(k, config) for k in ("account", "ip_block")}
        self.model_first_seen: dict[str, int] = {}
        self.started_ms: int | None = None
        self.shifts = 0

    def new_models(self, w: ClosedWindow) -> npt.NDArray[np.bool_]:
        """Which of the window's models the population first saw recently (the pivot signal)."""
        if self.started_ms is None:
            self.started_ms = w.start_ms
        grace_end = self.started_ms + self.config.model_grace_ms
        flags = []
        for m in w.models:
            first = self.model_first_seen.setdefault(m, w.start_ms)
            flags.append(first >= grace_end and w.end_ms - first < self.config.new_model_ms)
        return np.array(flags, dtype=np.bool_)

    def snapshot(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def restore(blob: bytes) -> Population:
        pop = pickle.loads(blob)
        if not isinstance(pop, Population):
            raise TypeError("snapshot does not hold a Population")
        return pop


MemberLookup = Callable[[list[str], int], F64]


class Detector:
    """Windows, scores and enforces; the same object behind ``score``, the worker and the demo.

    Examples
    --------
    >>> from models.events import UsageEvent
    >>> det = Detector(DetectorConfig(window_ms=60_000, allowed_lateness_ms=0))
    >>> out = det.process([UsageEvent(f"e{i}", 60_000 * i, "acct-1", "10.0.0.1",
    ...                               "10.0.0.0/24", "m", 100, 300) for i in range(3)])
    >>> for s in out.scored:
    ...     print(s.kind, s.start_ms, s.ids)
    account 0 ['acct-1']
    ip_block 0 ['10.0.0.0/24']
    account 60000 ['acct-1']
    ip_block 60000 ['10.0.0.0/24']
    >>> out.actions     # a cold detector never enforces
    []
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        kinds: tuple[EntityKind, ...] = ("account", "ip_block"),
        population: Population | None = None,
        member_lookup: MemberLookup | None = None,
        external_watermark: bool = False,
    ) -> None:
        self.config = config or DetectorConfig()
        self.version = self.config.version
        self.kinds = kinds
        self.population = population or Population(self.config)
        self.member_lookup = member_lookup
        self.windower = Windower(
            self.config.window_ms, self.config.allowed_lateness_ms, external_watermark
        )
        self.tables = {k: EntityTable(n_features=len(features_for(k))) for k in kinds}
        self.actions_by_level: dict[str, int] = {}
        self._last_evict_ms = 0

    def partition_state(self) -> bytes:
        """This detector's own state (open windows, entities), without the shared population."""
        state = (self.windower, self.tables, self.actions_by_level, self._last_evict_ms)
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_partition_state(self, blob: bytes) -> None:
        self.windower, self.tables, self.actions_by_level, self._last_evict_ms = pickle.loads(blob)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["member_lookup"] = None  # a callback into a worker: not part of a snapshot
        return state

    @property
    def stats(self) -> WindowStats:
        return self.windower.stats

    def add(self, event: UsageEvent) -> bool:
        """Buffer an event; False if it was a duplicate or arrived after its window closed."""
        return self.windower.add(event)

    def process(self, events: Any) -> DetectorOutput:
        """Add a batch of events, then close and score every window the watermark passed."""
        add = self.windower.add
        for e in events:
            add(e)
        return self.advance()

    def advance(self) -> DetectorOutput:
        out = DetectorOutput()
        for w in self.windower.advance():
            out.extend(self._score_window(w))
        return out

    def flush(self) -> DetectorOutput:
        out = DetectorOutput()
        for w in self.windower.flush():
            out.extend(self._score_window(w))
        return out

    def snapshot(self) -> bytes:
        """Everything needed to resume without a cold start (models, entities, open windows)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def restore(blob: bytes) -> Detector:
        det = pickle.loads(blob)
        if not isinstance(det, Detector):
            raise TypeError("snapshot does not hold a Detector")
        return det

    def tracked_entities(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def _score_window(self, w: ClosedWindow) -> DetectorOutput:
        out = DetectorOutput()
        if w.n_events == 0:
            return out
        pop = self.population
        is_new_model = pop.new_models(w)
        account_score: F64 | None = None
        if "account" in self.kinds:
            out.links.append(_links(w))
            accounts = account_windows(w, is_new_model)
            scored, actions = self._score_kind("account", accounts, None)
            out.scored.append(scored)
            out.actions.extend(actions)
            account_score = scored.score  # rows are w.accounts, in code order
        if "ip_block" in self.kinds:
            if account_score is None:
                lookup = self.member_lookup
                account_score = (
                    lookup(w.accounts, w.end_ms) if lookup else np.zeros(len(w.accounts))
                )
            blocks = block_windows(w, is_new_model)
            scored, actions = self._score_kind("ip_block", blocks, (w, account_score))
            out.scored.append(scored)
            out.actions.extend(actions)
        for a in out.actions:
            self.actions_by_level[a.action] = self.actions_by_level.get(a.action, 0) + 1
        if w.end_ms - self._last_evict_ms >= 60 * _MIN:
            self._last_evict_ms = w.end_ms
            for table in self.tables.values():
                table.evict_idle(w.end_ms, self.config.retention_ms)
        return out

    def _score_kind(
        self,
        kind: EntityKind,
        ew: EntityWindows,
        account_context: tuple[ClosedWindow, F64] | None,
    ) -> tuple[ScoredWindows, list[EnforcementAction]]:
        cfg = self.config
        km = self.population.kinds[kind]
        table = self.tables[kind]
        X = ew.squashed()
        if km.weight == 0:
            km._population_update(X, ew.values, cfg.centre_half_life)
        Xo = np.maximum(X, km.centre)
        novelty = km.forest.score_many(Xo)
        # Until the forest and calibrator have warmed up a score means nothing: report 0.
        score = km.calibrator.calibrate(novelty) if km.ready else np.zeros(len(ew.ids))
        rows = table.rows(ew.ids)
        drifted = table.drift.update(rows, novelty)
        decisions = decide(
            table,
            rows,
            ew.ids,
            score,
            ew.requests,
            ew.end_ms,
            cfg.policy,
            cfg.policy.max_level_account if km.kind == "account" else cfg.policy.max_level_ip_block,
            enabled=km.ready,
        )

        actions = []
        for d in decisions:
            i = d.position
            r = int(rows[i])
            own = table.baseline[r].astype(np.float64)
            if table.windows[r] < cfg.own_baseline_windows:
                own = np.full_like(own, np.nan)
            cols = km.columns
            reasons = explain(
                km.forest,
                km.model_features,
                Xo[i],
                km.centre,
                ew.values[i, cols],
                own[cols],
                km.typical[cols],
            )
            if drifted[i]:
                reasons.append(
                    Reason(
                        feature="behaviour_shift",
                        value=round(float(novelty[i]), 4),
                        baseline=round(float(table.drift.mean[r]), 4),
                        population_baseline=None,
                        contribution=0.0,
                    )
                )
            members = None
            if account_context is not None:
                members = self._members(ew, i, *account_context)
            actions.append(
                EnforcementAction(
                    enforcement_id=enforcement_id(
                        self.version, km.kind, ew.ids[i], d.action, ew.end_ms
                    ),
                    ts_ms=ew.end_ms,
                    entity_kind=km.kind,
                    entity_id=ew.ids[i],
                    action=d.action,
                    score=round(float(score[i]), 6),
                    threshold=round(d.threshold, 6),
                    reasons=reasons,
                    window_start_ms=ew.start_ms,
                    window_end_ms=ew.end_ms,
                    expires_ms=d.expires_ms,
                    members=members,
                    detector_version=self.version,
                )
            )

        # Learn from what did not strike, after scoring. At most the top `max_unlearned_share`
        # of a window is held back: if far more than the budget strikes at once, the models
        # are what is off (cold start, population shift), and refusing to learn would freeze them.
        ordinary = np.ones(len(ew.ids), dtype=np.bool_)
        if km.ready:
            striking = score >= cfg.policy.thresholds[1]
            cap = int(np.ceil(cfg.max_unlearned_share * len(ew.ids)))
            if striking.sum() > cap:
                striking[:] = False
                striking[np.argsort(-novelty, kind="stable")[:cap]] = True
            ordinary = ~striking
        km.forest.learn_many(Xo[ordinary])
        if not km.forest._first_window:
            km.calibrator.update(novelty[ordinary])
        km._population_update(X[ordinary], ew.values[ordinary], cfg.centre_half_life)
        km.adwin.update(float(np.median(novelty)))  # type: ignore[no-untyped-call]
        if km.adwin.drift_detected and km.calibrator.ready:
            km.calibrator.forget(0.25)
            self.population.shifts += 1
        learn_rows = rows[ordinary]
        b = table.baseline[learn_rows]
        v = ew.values[ordinary].astype(np.float32)
        a = np.float32(cfg.baseline_alpha)
        table.baseline[learn_rows] = np.where(
            np.isnan(b), v, np.where(np.isnan(v), b, b + a * (v - b))
        )
        table.windows[rows] += 1
        table.last_seen_ms[rows] = ew.end_ms
        table.last_score[rows] = score.astype(np.float32)

        scored = ScoredWindows(
            kind=km.kind,
            start_ms=ew.start_ms,
            end_ms=ew.end_ms,
            ids=ew.ids,
            requests=ew.requests,
            values=ew.values,
            novelty=novelty,
            score=score,
            level=table.level[rows].copy(),
            drift=drifted,
        )
        return scored, actions

    def _members(self, blocks: EntityWindows, i: int, w: ClosedWindow, acct: F64) -> list[str]:
        """Accounts in block ``i`` of this window whose own score marks them as involved."""
        codes = np.unique(w.account[blocks.group == i])
        involved = codes[acct[codes] >= self.config.member_score]
        involved = involved[np.argsort(-acct[involved], kind="stable")]
        return [w.accounts[c] for c in involved[: self.config.max_members].tolist()]
