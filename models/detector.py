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
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
from river import drift

from models.calibration import TailCalibrator
from models.campaigns import (
    CAMPAIGN_FEATURES,
    COORDINATION,
    SYNCHRONIZED,
    CampaignConfig,
    CampaignLinker,
    CampaignWindows,
    summarize,
)
from models.events import UsageEvent
from models.evidence import WindowEvidence, behaviours_for, stable_hash, window_evidence
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
from models.policy import ACTIONS, Decision, PolicyConfig, decide, impose
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
    forest_window: int = 500
    seed: int = 42
    calibration_warmup: int = 1_000
    calibration_half_life_ms: float = 30 * _MIN
    reference_max_evidence: float = 2.0
    outright_evidence: float = 0.5
    reference_exclusion_ms: int = 60 * _MIN
    centre_half_life: float = 50_000.0
    baseline_alpha: float = 0.1
    own_baseline_windows: int = 5
    new_model_ms: int = 48 * 60 * _MIN
    model_grace_ms: int = 15 * _MIN
    member_score: float = 0.995
    max_members: int = 200
    max_campaign_members: int = 1000
    retention_ms: int = 7 * 24 * 60 * _MIN
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    campaigns: CampaignConfig = field(default_factory=CampaignConfig)

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
class DetectorOutput:
    scored: list[ScoredWindows] = field(default_factory=list)
    actions: list[EnforcementAction] = field(default_factory=list)
    links: list[EntityLinks] = field(default_factory=list)
    campaigns: list[CampaignWindows] = field(default_factory=list)

    def extend(self, other: DetectorOutput) -> None:
        self.scored.extend(other.scored)
        self.actions.extend(other.actions)
        self.links.extend(other.links)
        self.campaigns.extend(other.campaigns)


class _KindModel:
    """Population models and entity state for one entity kind."""

    def __init__(self, kind: EntityKind, cfg: DetectorConfig) -> None:
        self.kind: EntityKind = kind
        self.features = features_for(kind)
        self.columns = scored_columns(kind)
        self.output_column = [f.name for f in self.features].index("output_tokens")
        self.model_features = tuple(self.features[i] for i in self.columns)
        n = len(self.features)
        self.forest = HalfSpaceForest(
            n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.forest_window, seed=cfg.seed
        )
        self.forest.build([f"{i:02d}_{f.name}" for i, f in enumerate(self.model_features)])
        self.calibrator = TailCalibrator(
            half_life_ms=cfg.calibration_half_life_ms, min_count=cfg.calibration_warmup
        )
        self.adwin = drift.ADWIN()  # type: ignore[no-untyped-call]
        self.centre = np.full(len(self.columns), np.nan)  # population centre of model inputs
        self.typical = np.full(n, np.nan)  # population median of the raw features
        self.typical_share = np.full(len(behaviours_for(kind)), np.nan)  # ... of behaviour shares
        self.volume_p99 = float("nan")  # 99th percentile of ordinary output tokens per window
        self.weight = 0.0

    @property
    def ready(self) -> bool:
        return self.calibrator.ready and self.forest.ready

    def population_update(self, X: F64, raw: F64, share: F64, half_life: float) -> None:
        """Move the population centre (median of squashed features) and typical raw values."""
        if X.shape[0] == 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            med_x = np.nanmedian(X, axis=0)
            med_raw = np.nanmedian(raw, axis=0)
            med_share = np.nanmedian(share, axis=0)
        a = 1.0 if self.weight == 0 else 1.0 - 0.5 ** (X.shape[0] / half_life)
        self.centre = _ewma(self.centre, med_x, a)
        self.typical = _ewma(self.typical, med_raw, a)
        self.typical_share = _ewma(self.typical_share, med_share, a)
        out = raw[:, self.output_column]
        p99 = float(np.quantile(out, 0.99)) if out.size else float("nan")
        self.volume_p99 = float(_ewma(np.array([self.volume_p99]), np.array([p99]), a)[0])
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


@dataclass(slots=True)
class _Measured:
    """One kind's window as measured, before decisions: per entity its table row, behaviour
    evidence, model inputs, novelty, raw risk (evidence + novelty) and calibrated score."""

    rows: npt.NDArray[np.intp]
    evidence: WindowEvidence
    X: F64
    Xo: F64
    novelty: F64
    raw: F64
    score: F64
    drifted: npt.NDArray[np.bool_]
    outright: npt.NDArray[np.bool_]


def _round(x: float) -> float | None:
    return None if x != x else round(x, 4)


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
        kinds: tuple[str, ...] = ("account", "ip_block", "campaign"),
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
        self.tables = {
            k: EntityTable(n_features=len(features_for(cast(EntityKind, k))))
            for k in kinds
            if k != "campaign"
        }
        self.linker: CampaignLinker | None = None
        if "campaign" in kinds and "account" in kinds:
            self.linker = CampaignLinker(self.config.campaigns, seed=self.config.seed)
            self.tables["campaign"] = EntityTable(n_features=len(CAMPAIGN_FEATURES))
        self.actions_by_level: dict[str, int] = {}
        self._last_evict_ms = 0

    def partition_state(self) -> bytes:
        """This detector's own state (open windows, entities), without the shared population."""
        state = (
            self.windower,
            self.tables,
            self.actions_by_level,
            self._last_evict_ms,
            self.linker,
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_partition_state(self, blob: bytes) -> None:
        (self.windower, self.tables, self.actions_by_level, self._last_evict_ms, self.linker) = (
            pickle.loads(blob)
        )

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
            scored, actions, measured = self._score_kind("account", accounts, w, is_new_model, None)
            out.scored.append(scored)
            out.actions.extend(actions)
            account_score = scored.score  # rows are w.accounts, in code order
            if self.linker is not None:
                ev = measured.evidence
                summaries = summarize(
                    w, ev.window_hits, ev.window_trials, measured.novelty, stable_hash(w.blocks)
                )
                self._score_campaigns(self.linker.update(summaries), out)
        if "ip_block" in self.kinds:
            if account_score is None:
                lookup = self.member_lookup
                account_score = (
                    lookup(w.accounts, w.end_ms) if lookup else np.zeros(len(w.accounts))
                )
            blocks = block_windows(w, is_new_model)
            scored, actions, _ = self._score_kind(
                "ip_block", blocks, w, is_new_model, account_score
            )
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
        w: ClosedWindow,
        is_new_model: npt.NDArray[np.bool_],
        account_context: F64 | None,
    ) -> tuple[ScoredWindows, list[EnforcementAction], _Measured]:
        km = self.population.kinds[kind]
        table = self.tables[kind]
        m = self._measure(km, table, ew, w, is_new_model)
        decisions = decide(
            table,
            m.rows,
            ew.ids,
            m.score,
            m.evidence.requests,
            m.evidence.absolute,
            ew.end_ms,
            self.config.policy,
            self.config.policy.max_level_account
            if kind == "account"
            else self.config.policy.max_level_ip_block,
            enabled=km.ready,
            outright=m.outright,
        )
        actions = [self._action(km, table, ew, m, d, w, account_context) for d in decisions]
        self._learn(km, table, ew, m)
        scored = ScoredWindows(
            kind=km.kind,
            start_ms=ew.start_ms,
            end_ms=ew.end_ms,
            ids=ew.ids,
            requests=ew.requests,
            values=ew.values,
            evidence=m.evidence.evidence,
            novelty=m.novelty,
            score=m.score,
            level=table.level[m.rows].copy(),
            drift=m.drifted,
        )
        return scored, actions, m

    def _measure(
        self,
        km: _KindModel,
        table: EntityTable,
        ew: EntityWindows,
        w: ClosedWindow,
        is_new_model: npt.NDArray[np.bool_],
    ) -> _Measured:
        """Evidence, novelty, raw risk and calibrated score of every entity in the window."""
        rows = table.rows(ew.ids)
        ev = window_evidence(
            km.kind, w, ew.group, rows, table.evidence, is_new_model, km.volume_p99
        )
        X = ew.squashed()
        if km.weight == 0:
            km.population_update(X, ew.values, ev.share, self.config.centre_half_life)
        Xo = np.maximum(X, km.centre)
        novelty = km.forest.score_many(Xo)
        raw = ev.evidence + novelty
        # Until the forest and calibrator have warmed up a score means nothing: report 0.
        score = km.calibrator.calibrate(raw) if km.ready else np.zeros(len(ew.ids))
        drifted = table.drift.update(rows, novelty)
        volume = ev.strength[:, self._volume_column(km.kind)]
        outright = (volume >= 1.0) & (ev.absolute >= self.config.outright_evidence)
        return _Measured(rows, ev, X, Xo, novelty, raw, score, drifted, outright)

    @staticmethod
    def _volume_column(kind: str) -> int:
        return [b.name for b in behaviours_for(kind)].index("output_volume")

    def _action(
        self,
        km: _KindModel,
        table: EntityTable,
        ew: EntityWindows,
        m: _Measured,
        d: Decision,
        w: ClosedWindow,
        account_score: F64 | None,
    ) -> EnforcementAction:
        i = d.position
        reasons = self._reasons(km, table, ew, m, i)
        members = None
        if account_score is not None:
            members = self._members(ew, i, w, account_score)
        return EnforcementAction(
            enforcement_id=enforcement_id(self.version, km.kind, ew.ids[i], d.action, ew.end_ms),
            ts_ms=ew.end_ms,
            entity_kind=km.kind,
            entity_id=ew.ids[i],
            action=d.action,
            score=round(float(m.score[i]), 6),
            threshold=round(d.threshold, 6),
            reasons=reasons,
            window_start_ms=ew.start_ms,
            window_end_ms=ew.end_ms,
            expires_ms=d.expires_ms,
            members=members,
            detector_version=self.version,
        )

    def _reasons(
        self, km: _KindModel, table: EntityTable, ew: EntityWindows, m: _Measured, i: int
    ) -> list[Reason]:
        """Behaviours first by weight of evidence, novelty split over the features that made it;
        each reason's contribution is its share of the window's raw risk."""
        raw = float(m.raw[i])
        behaviours = behaviours_for(km.kind)
        weights = np.array([b.weight for b in behaviours])
        reasons: list[Reason] = []
        for j, b in enumerate(behaviours):
            part = float(m.evidence.strength[i, j] * weights[j])
            if part <= 0:
                continue
            reasons.append(
                Reason(
                    feature=b.name,
                    value=_round(float(m.evidence.share[i, j])) or 0.0,
                    baseline=_round(b.onset),
                    population_baseline=_round(float(km.typical_share[j])),
                    contribution=round(part / raw, 4) if raw > 0 else 0.0,
                )
            )
        r = int(m.rows[i])
        own = table.baseline[r].astype(np.float64)
        if table.windows[r] < self.config.own_baseline_windows:
            own = np.full_like(own, np.nan)
        cols = km.columns
        novelty_share = float(m.novelty[i]) / raw if raw > 0 else 0.0
        for reason in explain(
            km.forest,
            km.model_features,
            m.Xo[i],
            km.centre,
            ew.values[i, cols],
            own[cols],
            km.typical[cols],
        ):
            reason["contribution"] = round(reason["contribution"] * novelty_share, 4)
            reasons.append(reason)
        reasons.sort(key=lambda x: -x["contribution"])
        if m.drifted[i]:
            reasons.append(
                Reason(
                    feature="behaviour_shift",
                    value=round(float(m.novelty[i]), 4),
                    baseline=round(float(table.drift.mean[r]), 4),
                    population_baseline=None,
                    contribution=0.0,
                )
            )
        return reasons

    def _learn(self, km: _KindModel, table: EntityTable, ew: EntityWindows, m: _Measured) -> None:
        """Teach the population models the reference windows, after scoring.

        The reference is what the detector treats as ordinary: every window except those of
        entities that showed extraction behaviours worth ``reference_max_evidence`` in the last
        ``reference_exclusion_ms``. The rule is absolute, so a campaign that is a third of the
        traffic, or was running before the detector started, stays out of the reference from the
        window it shows itself; windows that merely score high stay in, so the calibrator keeps
        seeing the top of ordinary traffic and its thresholds keep their budgets. (23 of 717,550
        ordinary account windows of 20 randomized worlds reached the default level of 2.0:
        ``bench/calibration.py``.)
        """
        cfg = self.config
        shows = m.evidence.absolute >= cfg.reference_max_evidence
        table.excluded_until_ms[m.rows[shows]] = ew.end_ms + cfg.reference_exclusion_ms
        ref = table.excluded_until_ms[m.rows] <= ew.end_ms
        if km.forest.ready:  # raw risk scored by a cold forest lacks its novelty part
            km.calibrator.update(m.raw[ref], ew.end_ms)
        # The forest's reference mass is the last `forest_window` windows it learned; within a
        # batch the entities come in order of first request (heavy users first), so they are
        # learned in a random order, seeded by the window, to make that mass a fair sample.
        learn = np.flatnonzero(ref)
        np.random.default_rng((self.config.seed, ew.end_ms)).shuffle(learn)
        km.forest.learn_many(m.Xo[learn])
        km.population_update(m.X[ref], ew.values[ref], m.evidence.share[ref], cfg.centre_half_life)
        km.adwin.update(float(np.median(m.novelty)))  # type: ignore[no-untyped-call]
        if km.adwin.drift_detected and km.calibrator.ready:
            km.calibrator.forget(0.25)
            self.population.shifts += 1
        rows = m.rows
        learn_rows = rows[ref]
        b = table.baseline[learn_rows]
        v = ew.values[ref].astype(np.float32)
        a = np.float32(cfg.baseline_alpha)
        table.baseline[learn_rows] = np.where(
            np.isnan(b), v, np.where(np.isnan(v), b, b + a * (v - b))
        )
        table.windows[rows] += 1
        table.last_seen_ms[rows] = ew.end_ms
        table.last_score[rows] = m.score.astype(np.float32)

    def _score_campaigns(self, cw: CampaignWindows, out: DetectorOutput) -> None:
        """Score each campaign as one customer, enforce on it, and on accounts that join one.

        A campaign's raw risk is its pooled behaviour evidence plus its coordination (0 to 1: how
        many accounts act as one), and it is calibrated against ordinary *account* windows: "taken
        as one customer, this campaign is riskier than all but a share p of ordinary customers".
        Campaigns are too few for a reference of their own to resolve a budget within the first
        hour of a deployment; accounts are plenty.
        """
        if not len(cw) or self.linker is None:
            return
        out.campaigns.append(cw)
        cfg = self.config
        accounts = self.population.kinds["account"]
        table = self.tables["campaign"]
        raw = cw.raw
        ready = accounts.ready
        score = accounts.calibrator.calibrate(raw) if ready else np.zeros(len(cw))
        rows = table.rows(cw.ids)
        big = np.array([len(m) for m in cw.members]) >= cfg.policy.min_campaign_members
        # Coordination alone is never acted on: a campaign needs extraction behaviours of its own.
        eligible = big & (cw.evidence >= cfg.campaigns.campaign_evidence)
        decisions = decide(
            table,
            rows,
            cw.ids,
            np.where(eligible, score, 0.0),
            cw.pooled_requests,
            cw.evidence,
            cw.end_ms,
            cfg.policy,
            3,
            enabled=ready,
        )
        values = cw.values()
        for d in decisions:
            i = d.position
            reasons = self._campaign_reasons(cw, i, float(raw[i]), accounts)
            out.actions.append(
                EnforcementAction(
                    enforcement_id=enforcement_id(
                        self.version, "campaign", cw.ids[i], d.action, cw.end_ms
                    ),
                    ts_ms=cw.end_ms,
                    entity_kind="campaign",
                    entity_id=cw.ids[i],
                    action=d.action,
                    score=round(float(score[i]), 6),
                    threshold=round(d.threshold, 6),
                    reasons=reasons,
                    window_start_ms=cw.end_ms - cfg.window_ms,
                    window_end_ms=cw.end_ms,
                    expires_ms=d.expires_ms,
                    members=sorted(cw.members[i])[: cfg.max_campaign_members],
                    detector_version=self.version,
                )
            )
        # Every member of an enforced campaign carries the campaign's level on its own account,
        # including accounts that join it later (a banned account's replacement): they are acted
        # on in the window they join, with the campaign in their reasons.
        account_table = self.tables["account"]
        level = table.level[rows]
        for i in np.flatnonzero(level >= 1).tolist():
            members = [a for a in cw.members[i] if a not in cfg.policy.allowlist]
            if not members:
                continue
            member_rows = account_table.rows(members)
            threshold = cfg.policy.thresholds[int(level[i])]
            for d in impose(
                account_table, member_rows, int(level[i]), cw.end_ms, cfg.policy, threshold
            ):
                out.actions.append(self._member_action(cw, i, members[d.position], d))
        # Members of an enforced campaign leave the reference, like an account showing extraction
        # would, whatever each member shows alone: once it is throttled, or once it is flagged and
        # hides who it is (disposable accounts, rotating addresses, cards shared across it,
        # requests in lockstep). A flagged team running one eval suite does none of that, and its
        # members stay part of what ordinary looks like.
        evading = cw.identity_evasion >= 0.5
        level = table.level[rows]
        for i in np.flatnonzero(big & ((level >= 2) | ((level >= 1) & evading))).tolist():
            member_rows = account_table.rows(cw.members[i])
            account_table.excluded_until_ms[member_rows] = cw.end_ms + cfg.reference_exclusion_ms
        table.windows[rows] += 1
        table.last_seen_ms[rows] = cw.end_ms
        table.last_score[rows] = score.astype(np.float32)
        out.scored.append(
            ScoredWindows(
                kind="campaign",
                start_ms=cw.end_ms - cfg.window_ms,
                end_ms=cw.end_ms,
                ids=cw.ids,
                requests=np.round(cw.pooled_requests).astype(np.int64),
                values=values,
                evidence=cw.evidence,
                novelty=cw.coordination,
                score=score,
                level=table.level[rows].copy(),
                drift=np.zeros(len(cw), dtype=np.bool_),
            )
        )

    def _campaign_reasons(
        self, cw: CampaignWindows, i: int, raw: float, accounts: _KindModel
    ) -> list[Reason]:
        reasons: list[Reason] = []
        behaviours = behaviours_for("account")
        for j, b in enumerate(behaviours):
            part = float(cw.strength[i, j] * b.weight)
            if part <= 0:
                continue
            reasons.append(
                Reason(
                    feature=b.name,
                    value=_round(float(cw.share[i, j])) or 0.0,
                    baseline=_round(b.onset),
                    population_baseline=_round(float(accounts.typical_share[j])),
                    contribution=round(part / raw, 4) if raw > 0 else 0.0,
                )
            )
        for j, b in enumerate(COORDINATION):
            part = float(b.strength(cw.coordination_share[i : i + 1, j])[0] * b.weight)
            if part <= 0:
                continue
            value = float(cw.coordination_share[i, j])
            reasons.append(
                Reason(
                    feature=b.name,
                    value=round(2**value if j == 0 else value, 4),
                    baseline=round(2**b.onset if j == 0 else b.onset, 4),
                    population_baseline=None,
                    contribution=round(part / raw, 4) if raw > 0 else 0.0,
                )
            )
        if cw.novelty[i] > 0:
            reasons.append(
                Reason(
                    feature="member_novelty",
                    value=round(float(cw.novelty[i]), 4),
                    baseline=None,
                    population_baseline=None,
                    contribution=round(float(cw.novelty[i]) / raw, 4) if raw > 0 else 0.0,
                )
            )
        sync = float(SYNCHRONIZED.strength(cw.synchrony[i : i + 1])[0] * SYNCHRONIZED.weight)
        if sync > 0:
            reasons.append(
                Reason(
                    feature=SYNCHRONIZED.name,
                    value=round(float(cw.synchrony[i]), 4),
                    baseline=SYNCHRONIZED.onset,
                    population_baseline=None,
                    contribution=round(sync / raw, 4) if raw > 0 else 0.0,
                )
            )
        reasons.sort(key=lambda x: -x["contribution"])
        for detail in cw.reasons(i):
            reasons.append(
                Reason(
                    feature="link",
                    value=0.0,
                    baseline=None,
                    population_baseline=None,
                    contribution=0.0,
                    detail=detail["detail"],
                )
            )
        return reasons

    def _member_action(
        self, cw: CampaignWindows, i: int, account: str, d: Decision
    ) -> EnforcementAction:
        reason = Reason(
            feature="campaign_member",
            value=float(len(cw.members[i])),
            baseline=None,
            population_baseline=None,
            contribution=1.0,
            detail=f"joined campaign {cw.ids[i]} ({len(cw.members[i])} accounts), "
            f"which is under {ACTIONS[d.level]}",
        )
        return EnforcementAction(
            enforcement_id=enforcement_id(self.version, "account", account, d.action, cw.end_ms),
            ts_ms=cw.end_ms,
            entity_kind="account",
            entity_id=account,
            action=d.action,
            score=1.0,
            threshold=round(d.threshold, 6),
            reasons=[reason],
            window_start_ms=cw.end_ms - self.config.window_ms,
            window_end_ms=cw.end_ms,
            expires_ms=d.expires_ms,
            members=None,
            detector_version=self.version,
        )

    def _members(self, blocks: EntityWindows, i: int, w: ClosedWindow, acct: F64) -> list[str]:
        """Accounts in block ``i`` of this window whose own score marks them as involved."""
        codes = np.unique(w.account[blocks.group == i])
        involved = codes[acct[codes] >= self.config.member_score]
        involved = involved[np.argsort(-acct[involved], kind="stable")]
        return [w.accounts[c] for c in involved[: self.config.max_members].tolist()]
