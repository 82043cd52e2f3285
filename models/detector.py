"""The detector: usage events in, scored entity windows and explained enforcement actions out.

One `Detector` is everything a ``distillguard score`` replay knows; in a worker, each partition
of the accounts and blocks stages has its own, and the partitions of a stage share one
`Population` (the forests, calibrators and drift detectors below). Per entity kind (``account``,
``ip_block``) they keep:

- a `HalfSpaceForest` over the whole population of that kind, fed each window's features after
  a *one-sided* clamp (every feature below the population centre is raised to it), so only
  deviations in the risky direction can make a window novel;
- a `TailCalibrator` turning novelty into a calibrated score whose thresholds are
  false-positive budgets, and River's ``ADWIN`` on the population's median novelty, which makes
  the calibrator forget faster when the whole population shifts;
- an `EntityTable`: per entity its own baseline, a Page-Hinkley drift test on its novelty and
  its enforcement history, a few hundred bytes each.

Raw risk is behaviour evidence (fixed scales, `models.evidence`), weighed by the window's
*exposure*, plus the forest's novelty; calibration is conformal against reference windows
(`models.calibration`). Exposure is ``min(1, requests in the window / min_requests)`` (the
policy's, 3 by default: what a throttle needs in a window to start): evidence says how surely an
entity shows a behaviour over its recent history, exposure how much of it this window holds, so
one request a minute from a customer who always asks for reasoning through a rotating proxy is
one request's worth of risk, not a harvest. An entity already throttled or suspended keeps an
exposure of 1, as the throttle itself may be what keeps its windows thin. Score-then-learn: a
window is scored against what the models knew before it; windows of entities whose exposed
evidence reached ``reference_max_evidence`` stay out of the reference for an hour, so a
campaign, even one running before the detector started, does not become what ordinary looks
like. Campaigns are linked, scored and enforced by `models.campaign_scoring.CampaignScorer`.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from river import drift

from models.calibration import TailCalibrator
from models.campaign_scoring import CampaignScorer, LinkInput, merge
from models.campaigns import summarize
from models.columns import Chunk
from models.config import DetectorConfig
from models.events import UsageEvent
from models.evidence import (
    WindowEvidence,
    answers_tell_reasoning,
    behaviours_for,
    stable_hash,
    throttle_evidence,
    window_evidence,
)
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
from models.outputs import (
    DetectorOutput,
    EnforcementAction,
    EntityLinks,
    ScoredWindows,
    enforcement_id,
    rfc3339,
)
from models.policy import Decision, decide
from models.state import EntityTable
from models.units import DAY_MS, MINUTE_MS
from models.windows import ClosedWindow, Windower, WindowStats

__all__ = [
    "MEMBER_WINDOWS",
    "Detector",
    "DetectorConfig",
    "DetectorOutput",
    "EnforcementAction",
    "EntityLinks",
    "MemberScores",
    "Population",
    "ScoredWindows",
    "exposure",
    "member_scores",
    "rfc3339",
    "score_in_order",
]


F64 = npt.NDArray[np.float64]


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
        # How many entities a window holds, over every partition that shares these models: the
        # 99th percentile of fewer than 100 is the heaviest entity itself. Counted per window end
        # (partitions close the same windows at different times), the last few kept, older ones
        # folded into a moving average.
        self.volume_rows = 0.0
        self.window_rows: dict[int, int] = {}
        self.weight = 0.0

    def __setstate__(self, state: dict[str, object]) -> None:
        # Snapshots written before the window size was kept: not known yet.
        self.__dict__.update(state)
        self.__dict__.setdefault("volume_rows", 0.0)
        self.__dict__.setdefault("window_rows", {})

    @property
    def entities_per_window(self) -> float:
        """Entities a window holds across the partitions sharing these models (see above)."""
        return max([self.volume_rows, *map(float, self.window_rows.values())])

    @property
    def ready(self) -> bool:
        return self.calibrator.ready and self.forest.ready

    def population_update(
        self,
        X: F64,
        raw: F64,
        share: F64,
        half_life: float,
        count: bool = True,
        end_ms: int = -1,
        entities: int = 0,
    ) -> None:
        """Move the population centre (median of squashed features) and typical raw values.

        ``count=False`` sets the estimates without counting the window as seen (the first window
        is read once before scoring, for a centre to score it against, and learned after).
        ``entities`` is how many entities the window ending at ``end_ms`` held in this partition."""
        if count and entities:
            self.window_rows[end_ms] = self.window_rows.get(end_ms, 0) + entities
            while len(self.window_rows) > 8:
                oldest = min(self.window_rows)
                done = float(self.window_rows.pop(oldest))
                old = self.volume_rows
                self.volume_rows = done if old == 0.0 else old + 0.1 * (done - old)
        if X.shape[0] == 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            med_x = np.nanmedian(X, axis=0)
            med_raw = np.nanmedian(raw, axis=0)
            med_share = np.nanmedian(share, axis=0)
        # Each window moves the estimates by its share of what has been seen, then, once that share
        # is smaller than the decay's step (after ~1.44 half-lives of windows), by the decay: an
        # average of everything so far, then a moving one. A moving average from the start would
        # keep the first window (a partial minute, a few accounts) as most of the estimate for
        # hours.
        n = X.shape[0]
        a = max(n / (self.weight + n), 1.0 - 0.5 ** (n / half_life))
        self.centre = _ewma(self.centre, med_x, a)
        self.typical = _ewma(self.typical, med_raw, a)
        self.typical_share = _ewma(self.typical_share, med_share, a)
        out = raw[:, self.output_column]
        p99 = float(np.quantile(out, 0.99)) if out.size else float("nan")
        self.volume_p99 = float(_ewma(np.array([self.volume_p99]), np.array([p99]), a)[0])
        if count:
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
    evidence, the window's exposure and the evidence it weighs (``exposed``), model inputs,
    novelty, raw risk (exposed evidence + novelty) and calibrated score."""

    rows: npt.NDArray[np.intp]
    evidence: WindowEvidence
    X: F64
    Xo: F64
    novelty: F64
    raw: F64
    score: F64
    drifted: npt.NDArray[np.bool_]
    outright: npt.NDArray[np.bool_]
    exposure: F64
    exposed: F64


def exposure(requests: npt.ArrayLike, level: npt.ArrayLike, min_requests: int) -> F64:
    """How much of its evidence a window weighs: ``min(1, requests / min_requests)``, and all of
    it for an entity already throttled or suspended (level 2 or more), whose windows the throttle
    itself may keep thin.

    >>> exposure([1, 2, 3, 30, 1], [0, 0, 0, 0, 2], 3).round(3).tolist()
    [0.333, 0.667, 1.0, 1.0, 1.0]
    """
    thin = np.minimum(1.0, np.asarray(requests, dtype=np.float64) / min_requests)
    out: F64 = np.where(np.asarray(level) >= 2, 1.0, thin)
    return out


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


#: What a block detector knows of the accounts behind its blocks when accounts are scored
#: elsewhere (the worker's account stage): per account, the end of its latest window that
#: scored over ``member_score``, and that score. Passed to `Detector.advance` as data.
MemberScores = Mapping[str, tuple[int, float]]
#: A suspect account counts as a block's member in block windows ending up to this many windows
#: after its own (its score comes from another stage, and may arrive a window or two late).
MEMBER_WINDOWS = 3


def member_scores(
    members: MemberScores | None, accounts: list[str], end_ms: int, window_ms: int
) -> F64:
    """Scores of ``accounts`` in a window ending at ``end_ms``, from what ``members`` says: an
    account's latest suspect score if that window ended at most `MEMBER_WINDOWS` windows
    before, else 0.

    Examples
    --------
    >>> members = {"a": (120_000, 0.999), "b": (60_000, 0.9)}
    >>> member_scores(members, ["a", "b", "c"], 240_000, 60_000).tolist()
    [0.999, 0.9, 0.0]
    >>> member_scores(members, ["a", "b"], 300_000, 60_000).tolist()   # b: 4 windows back
    [0.999, 0.0]
    """
    out = np.zeros(len(accounts))
    if not members:
        return out
    horizon = end_ms - MEMBER_WINDOWS * window_ms
    for i, a in enumerate(accounts):
        seen = members.get(a)
        if seen is not None and seen[0] >= horizon:
            out[i] = seen[1]
    return out


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
        external_watermark: bool = False,
        link_campaigns: bool = True,
    ) -> None:
        self.config = config or DetectorConfig()
        self.version = self.config.version
        self.kinds = kinds
        self.population = population or Population(self.config)
        self.windower = Windower(
            self.config.window_ms, self.config.allowed_lateness_ms, external_watermark
        )
        self.tables = {
            k: EntityTable(n_features=len(features_for(cast(EntityKind, k))))
            for k in kinds
            if k != "campaign"
        }
        # With campaigns among the kinds, accounts are linked into campaigns: here, by a
        # `CampaignScorer` sharing this detector's account table and calibrator; or, with
        # ``link_campaigns=False`` (a worker's account partition, which sees only some accounts),
        # by a campaign stage elsewhere, to which `DetectorOutput.summaries` are handed.
        self.emit_summaries = "campaign" in kinds and "account" in kinds
        self.campaigns: CampaignScorer | None = None
        if self.emit_summaries and link_campaigns:
            self.campaigns = CampaignScorer(self.config)
        self.actions_by_level: dict[str, int] = {}
        self._last_evict_ms = 0

    def partition_state(self) -> bytes:
        """This detector's own state (open windows, entities), without the shared population."""
        state = (
            self.windower,
            self.tables,
            self.actions_by_level,
            self._last_evict_ms,
            self.campaigns,
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_partition_state(self, blob: bytes) -> None:
        (self.windower, self.tables, self.actions_by_level, self._last_evict_ms, self.campaigns) = (
            pickle.loads(blob)
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("member_lookup", None)  # snapshots before block members were passed as data
        self.__dict__.update(state)

    @property
    def stats(self) -> WindowStats:
        return self.windower.stats

    def add(self, event: UsageEvent) -> bool:
        """Buffer an event; False if it was a duplicate or arrived after its window closed."""
        return self.windower.add(event)

    def collect_added(self) -> None:
        """Keep the columns of the events added from now on, for `take_added`."""
        self.windower.collect_added()

    def take_added(self) -> list[Chunk]:
        """The events added since `collect_added`, in order, as the chunks the windows hold
        (`models.windows.Windower.take_added`)."""
        return self.windower.take_added()

    def add_chunk(self, chunk: Chunk) -> int:
        """Buffer a chunk of deduplicated events (a detector closed by an external watermark:
        `models.windows.Windower.add_chunk`); how many were on time."""
        return self.windower.add_chunk(chunk)

    def process(self, events: Any, members: MemberScores | None = None) -> DetectorOutput:
        """Add a batch of events, then close and score every window the watermark passed
        (``members``: see `advance`)."""
        add = self.windower.add
        for e in events:
            add(e)
        return self.advance(members=members)

    def advance(
        self, through_ms: int | None = None, members: MemberScores | None = None
    ) -> DetectorOutput:
        """Score the windows the watermark has closed: all of them, or those ending at or before
        ``through_ms`` (the others stay closed and unscored, see `pending_end_ms`).

        Partitions sharing one `Population` are scored reproducibly by taking the window end
        every partition has closed, and calling this for it partition by partition in a fixed
        order: the shared models then learn the same windows in the same order on every run.

        ``members``: for a detector of IP blocks without accounts, the accounts found suspect
        elsewhere (`MemberScores`); a block's action names those behind it as members.
        """
        out = DetectorOutput()
        for w in self.windower.advance(through_ms):
            out.extend(self._score_window(w, members))
        return out

    # -- progress, for an owner that drives several partitions ----------------------------------
    @property
    def max_event_ms(self) -> int:
        """The latest event time seen (-1 before the first event)."""
        return self.windower.max_event_ms

    @property
    def closed_before_ms(self) -> int:
        """Every window ending at or before this time is closed (scored or not)."""
        return self.windower.closed_before_ms

    @property
    def has_open_windows(self) -> bool:
        """Whether some window still takes events."""
        return bool(self.windower.open_windows())

    @property
    def pending_end_ms(self) -> int | None:
        """End of the oldest window closed but not yet scored (None: every closed one is)."""
        return self.windower.next_ready_end_ms

    @property
    def scored_through_ms(self) -> int:
        """Every window ending at or before this time is closed and scored.

        Examples
        --------
        >>> from models.events import UsageEvent
        >>> det = Detector(DetectorConfig(window_ms=60_000, allowed_lateness_ms=0))
        >>> for i, t in enumerate([1_000, 61_000, 121_000]):
        ...     det.add(UsageEvent(f"e{i}", t, "a", "10.0.0.1", "10.0.0.0/24", "m", 10, 20))
        True
        True
        True
        >>> det.closed_before_ms, det.pending_end_ms, det.scored_through_ms
        (120000, 60000, 0)
        >>> _ = det.advance(through_ms=60_000)
        >>> det.pending_end_ms, det.scored_through_ms
        (120000, 60000)
        """
        pending = self.windower.next_ready_end_ms
        if pending is None:
            return self.windower.closed_before_ms
        return pending - self.config.window_ms

    def close_through(self, watermark_ms: int) -> None:
        """Close (not score) every window ending at or before ``watermark_ms``: for a detector
        made with ``external_watermark``, whose events never close windows themselves."""
        self.windower.close_through(watermark_ms)

    def close_open(self) -> None:
        """Close (not score) every open window: a partition gone quiet."""
        self.windower.close_open()

    def flush(self, members: MemberScores | None = None) -> DetectorOutput:
        """Close and score every window, open ones included (the input has ended)."""
        out = DetectorOutput()
        for w in self.windower.flush():
            out.extend(self._score_window(w, members))
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

    def _score_window(self, w: ClosedWindow, members: MemberScores | None) -> DetectorOutput:
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
            if self.emit_summaries:
                self._link(w, accounts, measured, out)
        if "ip_block" in self.kinds:
            if account_score is None:
                account_score = member_scores(members, w.accounts, w.end_ms, self.config.window_ms)
            blocks = block_windows(w, is_new_model)
            scored, actions, _ = self._score_kind(
                "ip_block", blocks, w, is_new_model, account_score
            )
            out.scored.append(scored)
            out.actions.extend(actions)
        for a in out.actions:
            self.actions_by_level[a.action] = self.actions_by_level.get(a.action, 0) + 1
        if w.end_ms - self._last_evict_ms >= 60 * MINUTE_MS:
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
            # Before the models have warmed up, scores are read against the window's own
            # entities too (`TailCalibrator.calibrate_among`); outright windows strike from the
            # first minute, so a campaign already running at start-up is flagged as it starts.
            enabled=True,
            outright=m.outright,
            window_requests=ew.requests,
            # Accounts near the flag line for several windows, each with some extraction
            # behaviour (the bar of the volume rule, here on the window's evidence as throttles
            # read it): merely unusual customers stay in the tail too. Not IP blocks: a busy
            # shared address near the line for a while is many ordinary customers at once.
            sustained_evidence=self.config.outright_evidence if kind == "account" else None,
            extraction=throttle_evidence(m.evidence, km.volume_p99) if kind == "account" else None,
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
        """Evidence, exposure, novelty, raw risk and calibrated score of every entity in the
        window."""
        rows = table.rows(ew.ids)
        ev = window_evidence(
            km.kind,
            w,
            ew.group,
            rows,
            table.evidence,
            is_new_model,
            km.volume_p99,
            answers_tell_reasoning(km.kind, km.typical_share),
            self.config.reasoning_verdict,
        )
        weight = exposure(ew.requests, table.level[rows], self.config.policy.min_requests)
        exposed = ev.absolute * weight
        X = ew.squashed()
        if km.weight == 0:
            # What ordinary looks like before anything is learned: this window's entities that do
            # not show extraction (a campaign running at start-up must not set the reference).
            ok = exposed < self.config.reference_max_evidence
            km.population_update(
                X[ok], ew.values[ok], ev.share[ok], self.config.centre_half_life, count=False
            )
        Xo = np.maximum(X, km.centre)
        novelty = km.forest.score_many(Xo)
        raw = ev.evidence * weight + novelty
        if km.ready:
            score = km.calibrator.calibrate(raw)
        else:
            # Until the forest and the calibrator have warmed up, each window is read against
            # the reference so far and the entities of the same window that count as ordinary
            # (what the calibrator learns once the forest is warm).
            reference = (exposed < self.config.reference_max_evidence) & (
                table.excluded_until_ms[rows] <= ew.end_ms
            )
            score = km.calibrator.calibrate_among(raw, reference)
        drifted = table.drift.update(rows, novelty)
        outright = self._outright(km, ev, exposed)
        return _Measured(rows, ev, X, Xo, novelty, raw, score, drifted, outright, weight, exposed)

    def _outright(self, km: _KindModel, ev: WindowEvidence, evidence: F64) -> npt.NDArray[np.bool_]:
        """Windows that strike whatever their score, also before the models have warmed up.

        ``evidence`` is the window's exposed evidence (fixed scales only).

        - Extraction behaviour worth ``reference_max_evidence`` (ordinary traffic reaches it
          rarely in our randomized worlds: 34 of 717,550 ordinary account windows; but 2,788 of
          2,208,357 of a second generator's, over the flag budget of 1e-3).
        - Harvesting at volume: an account's evidence, plus ``volume_doubling_evidence`` for each
          doubling of its output past the 99th percentile of ordinary accounts, reaches what
          ``outright_evidence`` needs at the volume behaviour's full strength (16 times that
          percentile): 0.5 of evidence there, 1.5 at the percentile itself, never less than 0.5.
          A single account harvesting reasoning at several times what the heaviest ordinary
          customers send is acted on within minutes, however the population is calibrated. The
          scale slides only where the percentile is one (a window holds 100 accounts or more,
          over every partition sharing the population; in fewer, it is the heaviest account
          itself); otherwise, and for IP blocks, whose output is many customers' sum, the volume
          behaviour needs its full strength.
        """
        cfg = self.config
        out = evidence >= cfg.reference_max_evidence
        column = self._volume_column(km.kind)
        some = evidence >= cfg.outright_evidence
        resolved = max(km.entities_per_window, float(evidence.size)) >= 100
        if km.kind != "account" or not resolved:
            out |= some & (ev.strength[:, column] >= 1.0)
            return out
        full = behaviours_for(km.kind)[column].full
        with np.errstate(invalid="ignore", divide="ignore"):
            doublings = np.log2(ev.share[:, column] / km.volume_p99)  # NaN: no reference yet
        past = np.nan_to_num(doublings, nan=-np.inf) >= 0.0
        need = cfg.outright_evidence + cfg.volume_doubling_evidence * (np.log2(full) - doublings)
        out |= some & past & (evidence >= need)
        return out

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
        policy = self.config.policy
        if d.sustained:
            # Flagged for staying near the line (`models.policy`): said last, as it adds nothing
            # to the score (reasons come largest contribution first).
            run = int(table.near[m.rows[i]])
            reasons.append(
                Reason(
                    feature="sustained",
                    value=float(run),
                    baseline=float(policy.sustained_strikes),
                    population_baseline=None,
                    contribution=0.0,
                    detail=f"{run} windows in a row in the top {policy.sustained_budget:.1%} "
                    "of ordinary windows",
                ),
            )
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
            part = float(m.evidence.strength[i, j] * weights[j] * m.exposure[i])
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
        seeing the top of ordinary traffic and its thresholds keep their budgets, as long as
        ordinary entities rarely reach the level (``bench/calibration.py``: 34 of 717,550
        ordinary account windows of 20 randomized worlds reach the default of 2.0, 2,788 of
        2,208,357 of the second generator's 24, whose excluded hours then take the flag
        threshold to 2.6x its budget).
        """
        cfg = self.config
        shows = m.exposed >= cfg.reference_max_evidence
        table.excluded_until_ms[m.rows[shows]] = ew.end_ms + cfg.reference_exclusion_ms
        ref = table.excluded_until_ms[m.rows] <= ew.end_ms
        if km.forest.ready:  # raw risk scored by a cold forest lacks its novelty part
            km.calibrator.update(m.raw[ref], ew.end_ms)
        # The forest's reference mass is the last `forest_window` windows it learned; within a
        # batch the entities come in order of first request (heavy users first), so they are
        # learned in a random order, seeded by the window's time of day, to make that mass a
        # fair sample: traffic replayed whole days later is scored exactly as it was.
        learn = np.flatnonzero(ref)
        np.random.default_rng((self.config.seed, ew.end_ms % DAY_MS)).shuffle(learn)
        km.forest.learn_many(m.Xo[learn])
        km.population_update(
            m.X[ref],
            ew.values[ref],
            m.evidence.share[ref],
            cfg.centre_half_life,
            end_ms=ew.end_ms,
            entities=len(ew.ids),
        )
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

    def _link(
        self, w: ClosedWindow, accounts: EntityWindows, m: _Measured, out: DetectorOutput
    ) -> None:
        """Hand this window's accounts to campaign linking: in process, or out for a stage."""
        km = self.population.kinds["account"]
        table = self.tables["account"]
        ev = m.evidence
        linking = self.config.campaigns
        x = LinkInput(
            summaries=summarize(
                w,
                ev.window_hits,
                ev.window_trials,
                m.novelty,
                stable_hash(w.blocks),
                prompts_per_account=linking.prompts_per_summary,
                blocks_per_account=linking.blocks_per_account,
            ),
            raw=m.raw,
            # what the account calibrator learned from this window (see _learn)
            reference=(table.excluded_until_ms[m.rows] <= accounts.end_ms) & km.forest.ready,
            typical_share=km.typical_share.copy(),
        )
        if self.campaigns is None:
            out.summaries.append(x)
            return
        result = self.campaigns.update(
            merge([x]), self.version, calibrator=km.calibrator, ready=km.ready, members=table
        )
        out.extend(result.out)
        if result.excluded:
            table.excluded_until_ms[table.rows(result.excluded)] = result.excluded_until_ms

    def _members(self, blocks: EntityWindows, i: int, w: ClosedWindow, acct: F64) -> list[str]:
        """Accounts in block ``i`` of this window whose own score marks them as involved."""
        codes = np.unique(w.account[blocks.group == i])
        involved = codes[acct[codes] >= self.config.member_score]
        involved = involved[np.argsort(-acct[involved], kind="stable")]
        return [w.accounts[c] for c in involved[: self.config.max_members].tolist()]


def score_in_order(
    parts: Mapping[int, Detector], through_ms: int | None, members: MemberScores | None = None
) -> Iterator[tuple[int, DetectorOutput]]:
    """Score the closed windows of partitions that share one `Population`, in one order: by
    window end, then by partition (ascending), up to ``through_ms`` (None: all of them).

    The shared models learn every window after scoring it, so the order decides the scores.
    ``through_ms`` is the end every partition that can still close a window has closed; with it,
    the order depends only on each partition's events, not on how their reading interleaved.

    Examples
    --------
    Two partitions whose events arrive in batches of different sizes score the same windows:

    >>> from models.events import UsageEvent
    >>> def ev(p, i):
    ...     return UsageEvent(f"{p}-{i}", 1_000 * i, f"acct-{p}-{i % 7}", "10.0.0.1",
    ...                       "10.0.0.0/24", "m", 10 + i % 13, 200)
    >>> def run(sizes):
    ...     pop = Population(DetectorConfig())
    ...     parts = {p: Detector(DetectorConfig(), kinds=("account",), population=pop)
    ...              for p in (0, 1)}
    ...     scored = []
    ...     for p, size in sizes:
    ...         for i in range(size * 100, size * 100 + 100):
    ...             parts[p].add(ev(p, i))
    ...         bound = min(d.closed_before_ms for d in parts.values())
    ...         for q, out in score_in_order(parts, bound):
    ...             scored += [(q, s.end_ms, s.ids, s.score.tolist()) for s in out.scored]
    ...     for q, out in score_in_order(parts, None):
    ...         scored += [(q, s.end_ms, s.ids, s.score.tolist()) for s in out.scored]
    ...     return scored
    >>> run([(0, 0), (0, 1), (1, 0), (1, 1)]) == run([(1, 0), (0, 0), (1, 1), (0, 1)])
    True
    """
    while True:
        ends = [e for det in parts.values() if (e := det.pending_end_ms) is not None]
        if not ends:
            return
        end = min(ends)
        if through_ms is not None and end > through_ms:
            return
        for p in sorted(parts):
            det = parts[p]
            if det.pending_end_ms == end:
                yield p, det.advance(through_ms=end, members=members)
