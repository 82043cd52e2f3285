"""Behaviour evidence: how surely an entity shows the behaviours of extraction, on a fixed scale.

Novelty says how unusual a window is *among the windows seen*; when a campaign is a third of the
traffic, or was already running when the detector started, it is what the population looks like
and novelty stops seeing it. Behaviour evidence does not depend on the population. Each
`Behaviour` is a per-request indicator with two fixed levels:

- ``onset``: a share that ordinary use rarely reaches (a person asks for step-by-step reasoning now
  and then, not in most prompts);
- ``full``: a share that is the behaviour itself (most prompts, most requests).

Per entity the indicators are summed with exponential decay in event time (half-life
``half_life_ms``, resting on at most the latest ``max_requests`` requests), so a customer who sends
a request every few minutes builds up evidence over several windows instead of being judged on one
or two requests. The *strength* of a behaviour is where the one-sided 95% lower confidence bound
(Wilson) of the entity's decayed share falls between ``onset`` and ``full``: two requests prove
little, two hundred prove a lot. The entity's *evidence* is the weighted sum of strengths, in units
of "behaviours at full strength".

Account behaviours:

- reasoning elicitation: prompts the upstream classifier marks as asking for step-by-step
  reasoning (``cot_score >= 0.5``, or the deployment's ``reasoning_verdict``; counting them
  rather than averaging probabilities does not depend on how confident a given classifier is);
  for a request without a verdict, where ordinary customers rarely get long answers, an answer
  with the harvesting shape (`answers_tell_reasoning`);
- templated prompts: a prompt within `TEMPLATE_BITS` of one of the entity's recent prompts
  (identical prompts excluded: reruns of a benchmark are not harvesting). Weak on its own, because
  the turns of a conversation are near duplicates too; templates shared *across* accounts are
  `models.campaigns`' business;
- output harvesting: long answers (800+ tokens) to prompts a third their length or shorter;
- address rotation: a request from a network none of the account's last few requests used (the
  /24 of an IPv4 address, the /64 of an IPv6 one: `models.events.subnet`);
- new-model rush: requests to a model the population first saw recently;
- grading: the model as a reward model, verdicts (a score and a line of justification, 200 tokens
  or fewer) on prompts at least eight times longer;
- disposable account: ``exp(-age / 7 days)`` from ``account_created_at``.

IP blocks: the same per-request behaviours over the block's requests (templated prompts across its
accounts), and a crowd of new accounts.

Both kinds: output volume, the one behaviour read against ordinary entities rather than on a fixed
scale (tokens per minute differ by deployment), as a multiple of the 99th percentile of ordinary
entities' output per window. It carries no weight in the evidence sum: heavy ordinary customers sit
in that tail, and counting it would lift the scores every threshold is measured against. The
policy uses it on its own (`models.detector`): each doubling of an account's output past that
percentile stands for a quarter of a behaviour, so evidence of 1.5 at the percentile, 1.0 at four
times it or 0.5 at sixteen times it is flagged; an IP block needs 32 times it with some extraction
behaviour. The heaviest ordinary account stays within 10 times it in 23 of the 24 randomized
worlds of `bench/robustness.py` (38 times in one); the single-account extractors there send from
less than 1 to 97 times it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.sorting import lexsort
from models.templates import MATCH_BITS
from models.units import DAY_MS
from models.windows import ClosedWindow

__all__ = [
    "ACCOUNT_BEHAVIOURS",
    "ACCOUNT_COLUMN",
    "BLOCK_BEHAVIOURS",
    "RATES",
    "RECENT_PROMPTS",
    "RELATIVE",
    "TEMPLATE_BITS",
    "Behaviour",
    "EvidenceMemory",
    "WindowEvidence",
    "answers_tell_reasoning",
    "behaviours_for",
    "lower_bound",
    "stable_hash",
    "throttle_evidence",
    "upper_bound",
    "window_evidence",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
UNKNOWN_MS = np.iinfo(np.int64).max  # no creation time seen yet

# Two SimHash fingerprints of unrelated prompts differ in 32 +- 4 of 64 bits; the chance that they
# fall within 12 bits is about 2e-7, so a match within 12 bits is the same prompt with its slots
# filled differently, not a coincidence. The same scale as templates across accounts.
TEMPLATE_BITS = MATCH_BITS
# How many of an entity's latest fingerprints it remembers across windows (8 bytes each).
RECENT_PROMPTS = 8
# How many of its latest requests' networks (IPv4 /24, IPv6 /64) an account remembers. A phone
# moving between home Wi-Fi, office and a carrier stays within a handful; a proxy pool hands out a
# new one nearly every time, and an IPv6 proxy a new /64 of its /48 with every request.
RECENT_BLOCKS = 4
# One-sided 95% confidence for the lower bound of a share.
_Z = 1.6448536269514722


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One behaviour of extraction and the fixed scale its strength is read on.

    ``onset`` and ``full`` are shares of requests (or, for ``disposable_account``, the value of
    ``exp(-age / 7 days)``); ``weight`` is what full strength adds to an entity's evidence.
    ``cap`` is the largest strength: 1 (full) for a share, more for a scale that keeps meaning
    more past ``full`` (how many accounts act as one).
    """

    name: str
    meaning: str
    onset: float
    full: float
    weight: float = 1.0
    cap: float = 1.0

    def strength(self, lower: F64) -> F64:
        """Where a lower bound falls between ``onset`` (0) and ``full`` (1), clipped to
        ``[0, cap]``.

        Examples
        --------
        >>> import numpy as np
        >>> b = Behaviour("reasoning_elicitation", "mean cot_score", onset=0.35, full=0.7)
        >>> b.strength(np.array([0.1, 0.525, 0.9])).round(3).tolist()
        [0.0, 0.5, 1.0]
        >>> Behaviour("accounts", "log2 of accounts", 2.0, 5.0, cap=np.inf).strength(
        ...     np.log2([4.0, 32.0, 256.0])).tolist()
        [0.0, 1.0, 2.0]
        """
        s: F64 = np.clip((lower - self.onset) / (self.full - self.onset), 0.0, self.cap)
        return s


_REASONING = "share of prompts with cot_score >= the verdict threshold (0.5 by default)"

ACCOUNT_BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("reasoning_elicitation", _REASONING, 0.3, 0.7, 1.0),
    Behaviour(
        "templated_prompts", "share of prompts near one of its recent prompts", 0.5, 0.9, 0.25
    ),
    Behaviour(
        "output_harvesting", "share of answers >= 800 tokens and >= 3x the prompt", 0.3, 0.7, 0.5
    ),
    Behaviour(
        "address_rotation",
        "share of requests from a network (IPv4 /24, IPv6 /64) none of its 4 latest used",
        0.3,
        0.7,
        1.0,
    ),
    Behaviour("new_model_rush", "share of requests to a newly released model", 0.25, 0.5, 0.5),
    Behaviour(
        "grading", "share of verdicts: answers <= 200 tokens to prompts >= 8x longer", 0.4, 0.8, 0.5
    ),
    Behaviour("disposable_account", "exp(-account age / 7 days)", 0.4, 0.85, 0.5),
    Behaviour(
        "output_volume",
        "output tokens in the window / 99th pct of ordinary accounts",
        4.0,
        16.0,
        0.0,
    ),
)

BLOCK_BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("reasoning_elicitation", _REASONING, 0.3, 0.7, 1.0),
    Behaviour(
        "templated_prompts", "share of prompts near a recent prompt of the block", 0.5, 0.9, 0.25
    ),
    Behaviour(
        "output_harvesting", "share of answers >= 800 tokens and >= 3x the prompt", 0.3, 0.7, 0.5
    ),
    Behaviour("new_model_rush", "share of requests to a newly released model", 0.25, 0.5, 0.5),
    Behaviour(
        "grading", "share of verdicts: answers <= 200 tokens to prompts >= 8x longer", 0.4, 0.8, 0.5
    ),
    Behaviour(
        "new_account_crowd", "share of its accounts created in the last 7 days", 0.3, 0.7, 1.0
    ),
    Behaviour(
        "output_volume", "output tokens in the window / 99th pct of ordinary blocks", 8.0, 32.0, 0.0
    ),
)

# Each account behaviour's column in a window's shares and strengths.
ACCOUNT_COLUMN = {b.name: j for j, b in enumerate(ACCOUNT_BEHAVIOURS)}

# Per-request indicators accumulated in EvidenceMemory, in this order (disposable_account and
# new_account_crowd are not per-request shares and are computed per window).
RATES = ("reasoning_elicitation", "templated_prompts", "output_harvesting", "address_rotation",
         "new_model_rush", "grading")  # fmt: skip


# Behaviours read on a scale relative to ordinary entities, logarithmically: onset and full are
# multiples of a reference the caller passes (the 99th percentile of ordinary output per window).
RELATIVE = ("output_volume",)


def behaviours_for(kind: str) -> tuple[Behaviour, ...]:
    """The behaviours read for an entity kind (``"account"``; anything else is an IP block).

    Examples
    --------
    >>> [b.name for b in behaviours_for("ip_block")][-2:]
    ['new_account_crowd', 'output_volume']
    >>> "address_rotation" in [b.name for b in behaviours_for("account")]
    True
    """
    return ACCOUNT_BEHAVIOURS if kind == "account" else BLOCK_BEHAVIOURS


def answers_tell_reasoning(kind: str, typical_share: F64) -> bool:
    """Whether, for requests without a ``cot_score``, the answer's shape may stand in for it.

    Some gateways send no classifier verdict. Harvested reasoning leaves a trace anyway: a long
    answer (800+ tokens, 3x the prompt or more) to a short prompt. That trace means something
    only where ordinary customers rarely get such answers: ``typical_share`` is the population's
    median share of each behaviour of ``kind`` (NaN: not measured yet), and the answer stands in
    for the classifier while the median share of long answers is below the onset of output
    harvesting. Where long answers are what ordinary customers get, a request without a verdict
    says nothing about reasoning.

    Examples
    --------
    >>> import numpy as np
    >>> names = [b.name for b in ACCOUNT_BEHAVIOURS]
    >>> typical = np.zeros(len(names))
    >>> answers_tell_reasoning("account", typical)
    True
    >>> typical[names.index("output_harvesting")] = 0.5     # most answers are long anyway
    >>> answers_tell_reasoning("account", typical)
    False
    >>> answers_tell_reasoning("account", np.full(len(names), np.nan))   # not measured yet
    False
    """
    behaviours = behaviours_for(kind)
    j = [b.name for b in behaviours].index("output_harvesting")
    return bool(typical_share[j] < behaviours[j].onset)  # NaN compares False


def lower_bound(share: F64, n: F64, z: float = _Z) -> F64:
    """One-sided Wilson lower bound of a share observed over ``n`` (possibly decayed) trials, at
    ``z`` standard errors (95% by default).

    Examples
    --------
    >>> import numpy as np
    >>> lower_bound(np.array([0.9, 0.9, 0.9, 0.0]), np.array([2.0, 20.0, 200.0, 0.0])).round(2)
    array([0.35, 0.74, 0.86, 0.  ])
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z2n = z * z / n
        centre = share + z2n / 2
        spread = z * np.sqrt(np.maximum(share * (1 - share) / n + z2n / (4 * n), 0.0))
        lb = (centre - spread) / (1 + z2n)
    out: F64 = np.where(n > 0, np.clip(lb, 0.0, 1.0), 0.0)
    return out


def upper_bound(share: F64, n: F64) -> F64:
    """One-sided 95% Wilson upper bound of a share over ``n`` trials (1 where ``n`` is 0).

    Examples
    --------
    >>> import numpy as np
    >>> upper_bound(np.array([0.0, 0.0, 0.1]), np.array([2.0, 50.0, 50.0])).round(2)
    array([0.57, 0.05, 0.19])
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z2n = _Z * _Z / n
        centre = share + z2n / 2
        spread = _Z * np.sqrt(np.maximum(share * (1 - share) / n + z2n / (4 * n), 0.0))
        ub = (centre + spread) / (1 + z2n)
    out: F64 = np.where(n > 0, np.clip(ub, 0.0, 1.0), 1.0)
    return out


def stable_hash(values: list[str]) -> I64:
    """64-bit hashes that are the same in every process (``hash()`` of a str is salted).

    Examples
    --------
    >>> h = stable_hash(["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/24"])
    >>> h.dtype.name, bool(h[0] == h[2]), bool(h[0] != h[1])
    ('int64', True, True)
    >>> int(stable_hash(["10.0.0.0/24"])[0]) == int(h[0])   # no state: the same every call
    True
    """
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(v.encode(), digest_size=8).digest(), "little", signed=True
            )
            for v in values
        ),
        dtype=np.int64,
        count=len(values),
    )


class EvidenceMemory:
    """What an entity table remembers between windows to build evidence: decayed sums, the last
    IP blocks, the latest prompt fingerprints and the account's creation time (a producer may send
    ``account_created_at`` on some events only; once seen, it is known). About 140 bytes per
    entity.

    Rows are the rows of the owning `models.state.EntityTable`.

    Examples
    --------
    >>> mem = EvidenceMemory(capacity=2)
    >>> mem.requests[1] = 5.0
    >>> mem.grow(4)                       # more rows; what is remembered stays
    >>> mem.capacity, mem.requests.tolist()
    (4, [0.0, 5.0, 0.0, 0.0])
    >>> mem.reset(np.array([1]))          # the row is reused for another entity
    >>> float(mem.requests[1]), mem.hits.shape
    (0.0, (4, 6))
    """

    def __init__(
        self, capacity: int = 1024, half_life_ms: float = 20 * 60_000.0, max_requests: float = 100.0
    ) -> None:
        self.half_life_ms = half_life_ms
        self.max_requests = max_requests
        k = len(RATES)
        self.hits = np.zeros((capacity, k), dtype=np.float32)
        self.trials = np.zeros((capacity, k), dtype=np.float32)
        self.requests = np.zeros(capacity, dtype=np.float32)
        self.updated_ms = np.zeros(capacity, dtype=np.int64)
        self.blocks = np.zeros((capacity, RECENT_BLOCKS), dtype=np.uint64)
        self.n_blocks = np.zeros(capacity, dtype=np.uint8)
        self.prompts = np.zeros((capacity, RECENT_PROMPTS), dtype=np.uint64)
        self.n_prompts = np.zeros(capacity, dtype=np.uint8)
        self.created_ms = np.full(capacity, UNKNOWN_MS, dtype=np.int64)

    def __setstate__(self, state: dict[str, object]) -> None:
        # Snapshots written before the creation time was remembered: nothing known yet.
        self.__dict__.update(state)
        if "created_ms" not in state:
            self.created_ms = np.full(self.requests.size, UNKNOWN_MS, dtype=np.int64)

    @property
    def capacity(self) -> int:
        return int(self.requests.size)

    def grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        for name in ("hits", "trials", "requests", "updated_ms", "blocks", "prompts"):
            col = getattr(self, name)
            pad = np.zeros((extra, *col.shape[1:]), dtype=col.dtype)
            setattr(self, name, np.concatenate([col, pad]))
        self.n_prompts = np.concatenate([self.n_prompts, np.zeros(extra, dtype=np.uint8)])
        self.n_blocks = np.concatenate([self.n_blocks, np.zeros(extra, dtype=np.uint8)])
        self.created_ms = np.concatenate(
            [self.created_ms, np.full(extra, UNKNOWN_MS, dtype=np.int64)]
        )

    def reset(self, rows: npt.NDArray[np.intp]) -> None:
        for name in ("hits", "trials", "requests", "updated_ms", "blocks", "prompts"):
            getattr(self, name)[rows] = 0
        self.n_prompts[rows] = 0
        self.n_blocks[rows] = 0
        self.created_ms[rows] = UNKNOWN_MS

    def nbytes_per_entity(self) -> int:
        return int(
            self.hits.itemsize * self.hits.shape[1] * 2
            + self.requests.itemsize
            + self.updated_ms.itemsize
            + self.blocks.itemsize * RECENT_BLOCKS
            + self.prompts.itemsize * RECENT_PROMPTS
            + self.n_prompts.itemsize
            + self.n_blocks.itemsize
            + self.created_ms.itemsize
        )


@dataclass(slots=True)
class WindowEvidence:
    """Evidence of every entity of one kind in one window (rows as in the window's entities).

    ``share`` holds each behaviour's decayed share (what explanations show), ``strength`` its
    strength in [0, 1], ``evidence`` the weighted sum, ``absolute`` the part of it read on fixed
    scales (without `RELATIVE` behaviours, which depend on the population), ``requests`` the
    decayed request count the evidence rests on. ``window_hits`` and ``window_trials`` are this
    window's own counts of the per-request behaviours (columns as `RATES`), for pooling over a
    campaign's members.
    """

    share: F64
    strength: F64
    evidence: F64
    absolute: F64
    requests: F64
    window_hits: F64
    window_trials: F64


def _against_recent(
    g: npt.NDArray[np.int32],
    ts: I64,
    values: npt.NDArray[np.uint64],
    ring: npt.NDArray[np.uint64],
    ring_len: npt.NDArray[np.uint8],
    table_rows: npt.NDArray[np.intp],
    near: bool,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
    """Compare each event's value with the entity's ``K`` previous values (earlier events of the
    window, then the remembered ones), in time order; remember the latest ``K`` per entity.

    Returns, per event in (entity, time) order, whether a previous value matched (within
    `TEMPLATE_BITS` but not identical if ``near``, else equal), whether there was any previous
    value, and the event's entity.
    """
    k = ring.shape[1]
    n_ent = table_rows.size
    order = lexsort((ts, g))
    gs, vs = g[order], values[order]
    if gs.size == 0:
        return np.zeros(0, np.bool_), np.zeros(0, np.bool_), gs
    first = np.ones(gs.size, dtype=np.bool_)
    first[1:] = gs[1:] != gs[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(gs.size) - np.repeat(starts, np.diff(np.append(starts, gs.size)))
    rows = table_rows[gs]
    old = ring[rows]  # (events, K), most recent last
    old_len = ring_len[rows].astype(np.int64)
    matched = np.zeros(gs.size, dtype=np.bool_)
    compared = np.zeros(gs.size, dtype=np.bool_)
    idx = np.arange(gs.size)
    for lag in range(1, k + 1):
        in_window = rank >= lag
        other = np.where(in_window, vs[np.maximum(idx - lag, 0)], old[idx, (k - lag + rank) % k])
        valid = in_window | (lag - rank <= old_len)
        if near:
            dist = np.bitwise_count(vs ^ other)
            hit = (dist > 0) & (dist <= TEMPLATE_BITS)
        else:
            hit = vs == other
        matched |= valid & hit
        compared |= valid

    # Remember each entity's latest K values: the old ring shifted left by the new count.
    count = np.bincount(gs, minlength=n_ent)
    m = np.minimum(count, k)
    last = rank >= (count[gs] - k)
    buf = np.zeros((n_ent, 2 * k), dtype=ring.dtype)
    buf[:, :k] = ring[table_rows]
    pos = k + rank[last] - np.maximum(count[gs[last]] - k, 0)
    buf[gs[last], pos] = vs[last]
    ring[table_rows] = np.take_along_axis(buf, m[:, None] + np.arange(k)[None, :], axis=1)
    ring_len[table_rows] = np.minimum(ring_len[table_rows].astype(np.int64) + m, k).astype(np.uint8)
    return matched, compared, gs


def window_evidence(
    kind: str,
    w: ClosedWindow,
    g: npt.NDArray[np.int32],
    table_rows: npt.NDArray[np.intp],
    memory: EvidenceMemory,
    is_new_model: npt.NDArray[np.bool_],
    volume_reference: float = float("nan"),
    answers_for_reasoning: bool = False,
    reasoning_verdict: float = 0.5,
) -> WindowEvidence:
    """Update the memory of the window's entities and return their evidence.

    ``g`` maps each event of the window to its entity (``0..n-1``), ``table_rows`` each entity to
    its row in the memory; ``volume_reference`` is the 99th percentile of ordinary entities'
    output tokens per window (NaN: not known yet, no volume evidence). With
    ``answers_for_reasoning``, a request without a ``cot_score`` counts as asking for reasoning
    when its answer has the harvesting shape (see `answers_tell_reasoning`). A prompt asks for
    reasoning when its ``cot_score`` is at least ``reasoning_verdict``, the classifier's
    operating point.

    Examples
    --------
    An account asking for step-by-step reasoning in every prompt, from a new IP block every time:

    >>> import numpy as np
    >>> from models.events import UsageEvent
    >>> from models.windows import Windower
    >>> win = Windower(60_000, 0)
    >>> for i in range(40):
    ...     _ = win.add(UsageEvent(f"e{i}", i * 1000, "a", f"10.0.{i}.1", f"10.0.{i}.0/24",
    ...                            "m", 100, 2000, cot_score=0.9))
    >>> [w] = win.flush()
    >>> mem = EvidenceMemory()
    >>> ev = window_evidence("account", w, w.account, np.array([0]), mem, np.zeros(1, bool))
    >>> dict(zip([b.name for b in ACCOUNT_BEHAVIOURS], ev.strength[0].round(2).tolist()))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'reasoning_elicitation': 1.0, 'templated_prompts': 0.0, 'output_harvesting': 1.0,
     'address_rotation': 1.0, 'new_model_rush': 0.0, 'grading': 0.0, 'disposable_account': 0.0,
     'output_volume': 0.0}
    >>> round(float(ev.evidence[0]), 2)
    2.5
    """
    n = table_rows.size
    n_rates = len(RATES)
    hits = np.zeros((n, n_rates))
    trials = np.zeros((n, n_rates))
    req = np.bincount(g, minlength=n).astype(np.float64)

    # A prompt asks for reasoning when the classifier says so at its operating point (more
    # likely than not, 0.5, for a calibrated one): counting those, rather than averaging
    # probabilities, does not depend on how confident a given classifier is about the prompts it
    # recognises.
    harvest = (w.output_tokens >= 800) & (w.output_tokens >= 3 * w.input_tokens)
    has_cot = ~np.isnan(w.cot)
    asks = w.cot >= reasoning_verdict
    if answers_for_reasoning:
        # No classifier verdict: a long answer to a short prompt is the trace of the reasoning
        # the prompt asked for (see `answers_tell_reasoning` for when it is not).
        asks = np.where(has_cot, asks, harvest)
        hits[:, 0] = np.bincount(g, asks.astype(np.float64), minlength=n)
        trials[:, 0] = req
    else:
        hits[:, 0] = np.bincount(g[has_cot], asks[has_cot].astype(np.float64), minlength=n)
        trials[:, 0] = np.bincount(g[has_cot], minlength=n)

    hf = w.has_fingerprint
    near, compared, ge = _against_recent(
        g[hf], w.ts[hf], w.fingerprint[hf], memory.prompts, memory.n_prompts, table_rows, True
    )
    hits[:, 1] = np.bincount(ge, near.astype(np.float64), minlength=n)
    trials[:, 1] = np.bincount(ge, compared.astype(np.float64), minlength=n)

    hits[:, 2] = np.bincount(g, harvest.astype(np.float64), minlength=n)
    trials[:, 2] = req

    if kind == "account":
        block_hash = stable_hash(w.subnets)[w.subnet].view(np.uint64)
        seen, compared, ge = _against_recent(
            g, w.ts, block_hash, memory.blocks, memory.n_blocks, table_rows, False
        )
        hits[:, 3] = np.bincount(ge, (compared & ~seen).astype(np.float64), minlength=n)
        trials[:, 3] = np.bincount(ge, compared.astype(np.float64), minlength=n)

    hits[:, 4] = np.bincount(g, is_new_model[w.model].astype(np.float64), minlength=n)
    trials[:, 4] = req

    # The model as a grader or reward model: a verdict (a score, a label, a line of reasoning) on
    # a long prompt. A coding agent also sends long prompts, but usually answers with code.
    verdict = (w.output_tokens <= 200) & (w.input_tokens >= 8 * w.output_tokens)
    hits[:, 5] = np.bincount(g, verdict.astype(np.float64), minlength=n)
    trials[:, 5] = req

    # Decay what the memory holds to this window's end, then add the window.
    age = (w.end_ms - memory.updated_ms[table_rows]).astype(np.float64)
    keep = np.where(memory.updated_ms[table_rows] > 0, 0.5 ** (age / memory.half_life_ms), 0.0)
    acc_hits = memory.hits[table_rows] * keep[:, None] + hits
    acc_trials = memory.trials[table_rows] * keep[:, None] + trials
    acc_req = memory.requests[table_rows] * keep + req
    # Evidence rests on at most the latest ~max_requests requests: a heavy customer's strengths
    # settle within minutes instead of creeping up for an hour as its request count grows.
    cap = np.minimum(1.0, memory.max_requests / np.maximum(acc_req, 1.0))
    acc_hits *= cap[:, None]
    acc_trials *= cap[:, None]
    acc_req *= cap
    memory.hits[table_rows] = acc_hits
    memory.trials[table_rows] = acc_trials
    memory.requests[table_rows] = acc_req
    memory.updated_ms[table_rows] = w.end_ms

    behaviours = behaviours_for(kind)
    share = np.zeros((n, len(behaviours)))
    lower = np.zeros((n, len(behaviours)))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_share = np.where(acc_trials > 0, acc_hits / acc_trials, np.nan)
    rate_lower = lower_bound(np.nan_to_num(rate_share), acc_trials)
    for j, b in enumerate(behaviours):
        if b.name in RATES:
            r = RATES.index(b.name)
            share[:, j], lower[:, j] = rate_share[:, r], rate_lower[:, r]
        elif b.name == "disposable_account":
            # The earliest creation time any event of the account has carried, in this window
            # or before: a producer that sends it on some events only does not make it flap.
            created = memory.created_ms[table_rows].copy()
            known = w.created_ms >= 0
            np.minimum.at(created, g[known], w.created_ms[known])
            memory.created_ms[table_rows] = created
            age_days = (w.end_ms - created.astype(np.float64)) / DAY_MS
            with np.errstate(over="ignore"):
                newness = np.exp(-np.maximum(age_days, 0.0) / 7.0)
            newness = np.where(created == UNKNOWN_MS, np.nan, newness)
            share[:, j], lower[:, j] = newness, np.nan_to_num(newness)
        elif b.name == "new_account_crowd":
            share[:, j], lower[:, j] = _new_account_crowd(w, g, n)
        elif b.name == "output_volume":
            out = np.bincount(g, w.output_tokens, minlength=n)
            share[:, j] = out
            with np.errstate(invalid="ignore", divide="ignore"):
                lower[:, j] = np.nan_to_num(np.log2(out / volume_reference), nan=-np.inf)
    strength = np.column_stack(
        [
            _relative(b, lower[:, j]) if b.name in RELATIVE else b.strength(lower[:, j])
            for j, b in enumerate(behaviours)
        ]
    )
    weights = np.array([b.weight for b in behaviours])
    fixed = np.array([b.name not in RELATIVE for b in behaviours])
    return WindowEvidence(
        share=share,
        strength=strength,
        evidence=strength @ weights,
        absolute=strength @ (weights * fixed),
        requests=acc_req,
        window_hits=hits,
        window_trials=trials,
    )


def throttle_evidence(ev: WindowEvidence, volume_p99: float) -> F64:
    """The evidence an account's throttle or suspension needs (`models.policy.decide`): its
    fixed-scale evidence without address rotation, unless its output this window is past the
    99th percentile of ordinary accounts' (``volume_p99``; NaN before there is one: not past it).

    Hopping between networks is what every customer of a rotating proxy does (the linker never
    counts it either, `models.campaigns`): a script sending one reasoning prompt a few times a
    minute through a reseller's pool showed reasoning and rotation, 2.0 and more, and was
    throttled and suspended (23 of the 38 hard negatives of the outside worlds). Spread over a
    pool's addresses at a volume past ordinary customers', rotation is a harvester hiding where
    it sends from, and counts in full. It counts in the score and for flags in any case.

    Examples
    --------
    >>> names = [b.name for b in ACCOUNT_BEHAVIOURS]
    >>> strength, share = np.zeros((2, len(names))), np.zeros((2, len(names)))
    >>> strength[:, [names.index("reasoning_elicitation"), names.index("address_rotation")]] = 1
    >>> share[:, names.index("output_volume")] = [900.0, 50_000.0]  # under, past 10,000
    >>> none = np.zeros(2)
    >>> ev = WindowEvidence(share, strength, none, strength @ [b.weight for b in
    ...                     ACCOUNT_BEHAVIOURS], none, none, none)
    >>> throttle_evidence(ev, 10_000.0).tolist(), throttle_evidence(ev, float("nan")).tolist()
    ([1.0, 2.0], [1.0, 1.0])
    """
    j = ACCOUNT_COLUMN["address_rotation"]
    with np.errstate(invalid="ignore"):
        past = ev.share[:, ACCOUNT_COLUMN["output_volume"]] > volume_p99
    rotation = ev.strength[:, j] * ACCOUNT_BEHAVIOURS[j].weight
    out: F64 = ev.absolute - np.where(past, 0.0, rotation)
    return out


def _relative(b: Behaviour, log2_ratio: F64) -> F64:
    """Strength of a relative behaviour from log2(value / reference): 0 at ``onset`` times the
    reference, 1 at ``full`` times it."""
    lo, hi = np.log2(b.onset), np.log2(b.full)
    out: F64 = np.clip((log2_ratio - lo) / (hi - lo), 0.0, 1.0)
    return out


def _new_account_crowd(w: ClosedWindow, g: npt.NDArray[np.int32], n: int) -> tuple[F64, F64]:
    """Share of a block's accounts (with a known creation time) created in the last 7 days, and its
    lower bound over the number of such accounts."""
    acct = w.account.astype(np.int64)
    known = w.created_ms >= 0
    fresh = known & (w.end_ms - w.created_ms < 7 * DAY_MS)
    key = g.astype(np.int64) * max(len(w.accounts), 1) + acct
    _, first = np.unique(key[known], return_index=True)
    idx = np.flatnonzero(known)[first]
    n_known = np.bincount(g[idx], minlength=n).astype(np.float64)
    n_new = np.bincount(g[idx], fresh[idx].astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_known > 0, n_new / n_known, np.nan)
    return share, lower_bound(np.nan_to_num(share), n_known)
