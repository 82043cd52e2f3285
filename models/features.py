"""Per-entity window features, computed for every entity of a closed window in one numpy pass.

Two entity kinds: ``account`` (the billed account) and ``ip_block`` (/24 IPv4, /48 IPv6). Each has
a fixed, ordered feature list (`ACCOUNT_FEATURES`, `BLOCK_FEATURES`). Every feature has a *risk
direction* (which way is suspicious) and a squashing transform onto [0, 1] used by the half-space
forest; the raw value is what explanations show to an analyst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.sorting import lexsort
from models.units import DAY_MS
from models.windows import ClosedWindow

__all__ = [
    "ACCOUNT_FEATURES",
    "BLOCK_FEATURES",
    "NEAR_DUPLICATE_BITS",
    "NEW_ACCOUNT_DAYS",
    "EntityKind",
    "EntityWindows",
    "Feature",
    "account_windows",
    "block_windows",
    "features_for",
    "near_duplicate_mask",
    "scored_columns",
]

EntityKind = Literal["account", "ip_block"]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# SimHash fingerprints of near-identical prompts differ in a few of 64 bits; random ones in ~32.
NEAR_DUPLICATE_BITS = 4
NEW_ACCOUNT_DAYS = 7.0
MIN_BLOCK_ACCOUNTS = 3


@dataclass(frozen=True, slots=True)
class Feature:
    """One window feature.

    ``scale`` sets the squash ``x / (x + scale)`` for unbounded counts (``0`` = already in
    [0, 1]); ``neutral`` is the squashed value used when the feature is unknown (too few events,
    optional field absent), so a missing field never looks suspicious or innocent.
    ``scored`` is false for capacity features (volume, model count): heavy legitimate customers
    differ from the crowd on those, so they are recorded and shown but are not evidence of abuse
    and do not feed the half-space forest.
    """

    name: str
    unit: str
    scale: float = 0.0
    neutral: float = 0.0
    scored: bool = True

    def squash(self, x: F64) -> F64:
        """Map raw values onto [0, 1]; NaN becomes ``neutral``.

        Examples
        --------
        >>> import numpy as np
        >>> Feature("requests", "req", scale=30.0).squash(np.array([0.0, 30.0, np.nan]))
        array([0. , 0.5, 0. ])
        """
        y = x / (x + self.scale) if self.scale > 0 else np.clip(x, 0.0, 1.0)
        return np.where(np.isnan(y), self.neutral, y)


ACCOUNT_FEATURES: tuple[Feature, ...] = (
    Feature("requests", "requests/window", scale=30.0, scored=False),
    Feature("output_tokens", "tokens/window", scale=30_000.0),
    Feature("output_input_ratio", "output/input tokens", scale=4.0, neutral=0.2),
    Feature("distinct_models", "models", scale=2.0, neutral=0.33, scored=False),
    Feature("new_model_share", "share of requests"),
    Feature("prompt_repetition", "share of requests"),
    Feature("near_duplicate_rate", "share of requests"),
    Feature("cot_mean", "probability", neutral=0.1),
    Feature("cot_p90", "probability", neutral=0.1),
    Feature("distinct_ips", "addresses", scale=3.0, neutral=0.25),
    Feature("distinct_ip_blocks", "blocks", scale=2.0, neutral=0.33),
    Feature("error_rate", "share of requests"),
    Feature("timing_regularity", "1/(1+CV of gaps)", neutral=0.5),
    Feature("account_newness", "exp(-age/7d)", neutral=0.1),
)

BLOCK_FEATURES: tuple[Feature, ...] = (
    Feature("requests", "requests/window", scale=100.0, scored=False),
    Feature("output_tokens", "tokens/window", scale=100_000.0, scored=False),
    Feature("output_input_ratio", "output/input tokens", scale=4.0, neutral=0.2),
    Feature("distinct_models", "models", scale=2.0, neutral=0.33, scored=False),
    Feature("new_model_share", "share of requests"),
    Feature("prompt_repetition", "share of requests"),
    Feature("near_duplicate_rate", "share of requests"),
    Feature("cot_mean", "probability", neutral=0.1),
    Feature("cot_p90", "probability", neutral=0.1),
    Feature("distinct_accounts", "accounts", scale=5.0, neutral=0.17),
    Feature("new_account_share", "share of accounts", neutral=0.05),
    Feature("accounts_per_payment", "accounts/payment", scale=2.0, neutral=0.33),
    Feature("error_rate", "share of requests"),
    Feature("timing_regularity", "1/(1+CV of gaps)", neutral=0.5),
)


def features_for(kind: EntityKind) -> tuple[Feature, ...]:
    return ACCOUNT_FEATURES if kind == "account" else BLOCK_FEATURES


def scored_columns(kind: EntityKind) -> list[int]:
    """Indices of the features that feed the model (see `Feature.scored`)."""
    return [i for i, f in enumerate(features_for(kind)) if f.scored]


@dataclass(slots=True)
class EntityWindows:
    """The feature matrix of every entity of one kind in one closed window.

    ``values`` holds raw feature values (NaN = unknown), one row per entity in ``ids`` and one
    column per feature of `features_for(kind)`; ``group`` maps each event of the window to its
    row, so members and links can be derived later.
    """

    kind: EntityKind
    start_ms: int
    end_ms: int
    ids: list[str]
    values: F64
    requests: I64
    group: npt.NDArray[np.int32]

    def squashed(self) -> F64:
        """The model input: scored features squashed onto [0, 1]."""
        feats = features_for(self.kind)
        cols = scored_columns(self.kind)
        return np.column_stack([feats[i].squash(self.values[:, i]) for i in cols])


def _distinct(g: npt.NDArray[np.int32], key: npt.NDArray[np.int64], n_groups: int) -> I64:
    """Number of distinct ``key`` values per group."""
    if g.size == 0:
        return np.zeros(n_groups, dtype=np.int64)
    order = lexsort((key, g))
    gs, ks = g[order], key[order]
    first = np.ones(gs.size, dtype=np.bool_)
    first[1:] = (gs[1:] != gs[:-1]) | (ks[1:] != ks[:-1])
    return np.bincount(gs[first], minlength=n_groups).astype(np.int64)


def near_duplicate_mask(
    g: npt.NDArray[np.int32], fp: npt.NDArray[np.uint64], max_bits: int = NEAR_DUPLICATE_BITS
) -> npt.NDArray[np.bool_]:
    """Which fingerprints have another one in the same group within ``max_bits`` Hamming distance.

    Pigeonhole banding: two 64-bit fingerprints within 3 bits agree exactly on at least one of four
    16-bit bands, so candidates are found by sorting on each band; every candidate is then verified
    against the first fingerprint of its band run. Linear-logarithmic instead of quadratic; it can
    miss a pair at exactly 4 differing bits whose differences hit every band, never reports a false
    one.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([0, 0, 0, 1, 1], dtype=np.int32)
    >>> fp = np.array([0xFF00, 0xFF01, 0x123456789ABCDEF0, 0xFF00, 0xFFFFFFFF00000000],
    ...               dtype=np.uint64)
    >>> near_duplicate_mask(g, fp).tolist()
    [True, True, False, False, False]
    """
    n = fp.size
    hit = np.zeros(n, dtype=np.bool_)
    if n < 2:
        return hit
    for band in range(4):
        key = ((fp >> np.uint64(16 * band)) & np.uint64(0xFFFF)).astype(np.int64)
        order = lexsort((key, g))
        gs, ks = g[order], key[order]
        start = np.ones(n, dtype=np.bool_)
        start[1:] = (gs[1:] != gs[:-1]) | (ks[1:] != ks[:-1])
        run_id = np.cumsum(start) - 1
        run_first = order[np.flatnonzero(start)]
        head = run_first[run_id]
        dist = np.bitwise_count(fp[order] ^ fp[head])
        close = (dist <= max_bits) & (order != head)
        hit[order[close]] = True
        hit[head[close]] = True
    return hit


def _common(
    w: ClosedWindow, g: npt.NDArray[np.int32], n: int, is_new_model: npt.NDArray[np.bool_]
) -> dict[str, F64]:
    """Features both entity kinds share; ``g`` maps events to entity rows ``0..n-1``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        req = np.bincount(g, minlength=n).astype(np.float64)
        inp = np.bincount(g, w.input_tokens, minlength=n)
        out = np.bincount(g, w.output_tokens, minlength=n)
        new_model = np.bincount(g, is_new_model[w.model].astype(np.float64), minlength=n)

        hf = w.has_fingerprint
        gf, fp = g[hf], w.fingerprint[hf]
        n_fp = np.bincount(gf, minlength=n).astype(np.float64)
        distinct_fp = _distinct(gf, fp.view(np.int64), n)
        repetition = np.where(n_fp > 1, 1.0 - distinct_fp / n_fp, np.nan)
        near = np.bincount(gf, near_duplicate_mask(gf, fp).astype(np.float64), minlength=n)
        near_rate = np.where(n_fp > 1, near / n_fp, np.nan)

        has_cot = ~np.isnan(w.cot)
        gc, cot = g[has_cot], w.cot[has_cot]
        n_cot = np.bincount(gc, minlength=n)
        cot_mean = np.bincount(gc, cot, minlength=n) / n_cot
        cot_p90 = np.full(n, np.nan)
        if gc.size:
            order = lexsort((cot, gc))
            starts = np.concatenate(([0], np.cumsum(n_cot)[:-1]))
            present = n_cot > 0
            idx = starts[present] + np.floor(0.9 * (n_cot[present] - 1)).astype(np.int64)
            cot_p90[present] = cot[order][idx]

        # Timing regularity: 1 / (1 + coefficient of variation of inter-arrival gaps), from 4+
        # requests. Scripted clients hit ~1, human-driven and bursty traffic much less.
        order = lexsort((w.ts, g))
        gs, ts = g[order], w.ts[order].astype(np.float64)
        same = gs[1:] == gs[:-1]
        gaps, gg = (ts[1:] - ts[:-1])[same], gs[1:][same]
        n_gap = np.bincount(gg, minlength=n).astype(np.float64)
        mean_gap = np.bincount(gg, gaps, minlength=n) / n_gap
        var_gap = np.bincount(gg, gaps * gaps, minlength=n) / n_gap - mean_gap**2
        cv = np.sqrt(np.maximum(var_gap, 0.0)) / np.maximum(mean_gap, 1.0)
        regularity = np.where(n_gap >= 3, 1.0 / (1.0 + cv), np.nan)

        return {
            "requests": req,
            "output_tokens": out,
            "output_input_ratio": out / np.maximum(inp, 1.0),
            "distinct_models": _distinct(g, w.model.astype(np.int64), n).astype(np.float64),
            "new_model_share": new_model / req,
            "prompt_repetition": repetition,
            "near_duplicate_rate": near_rate,
            "cot_mean": cot_mean,
            "cot_p90": cot_p90,
            "error_rate": np.bincount(g, w.error.astype(np.float64), minlength=n) / req,
            "timing_regularity": regularity,
        }


def account_windows(w: ClosedWindow, is_new_model: npt.NDArray[np.bool_]) -> EntityWindows:
    """Features of every account active in the window.

    ``is_new_model[code]`` says whether model ``w.models[code]`` was first seen recently by the
    population (the model-pivot signal).
    """
    g, n = w.account, len(w.accounts)
    cols = _common(w, g, n, is_new_model)
    cols["distinct_ips"] = _distinct(g, w.ip_hash, n).astype(np.float64)
    cols["distinct_ip_blocks"] = _distinct(g, w.block.astype(np.int64), n).astype(np.float64)
    created = np.full(n, np.iinfo(np.int64).max)
    known = w.created_ms >= 0
    np.minimum.at(created, g[known], w.created_ms[known])
    age_days = (w.end_ms - created.astype(np.float64)) / DAY_MS
    with np.errstate(over="ignore"):
        newness = np.exp(-np.maximum(age_days, 0.0) / NEW_ACCOUNT_DAYS)
    cols["account_newness"] = np.where(created == np.iinfo(np.int64).max, np.nan, newness)
    return _assemble("account", w, w.accounts, g, cols)


def block_windows(w: ClosedWindow, is_new_model: npt.NDArray[np.bool_]) -> EntityWindows:
    """Features of every IP block active in the window."""
    g, n = w.block, len(w.blocks)
    cols = _common(w, g, n, is_new_model)
    acct = w.account.astype(np.int64)
    n_accounts = _distinct(g, acct, n).astype(np.float64)
    cols["distinct_accounts"] = n_accounts

    # An account is new if any of its events says it was created within NEW_ACCOUNT_DAYS.
    new_acct = np.zeros(len(w.accounts), dtype=np.bool_)
    fresh = (w.created_ms >= 0) & (w.end_ms - w.created_ms < NEW_ACCOUNT_DAYS * DAY_MS)
    new_acct[w.account[fresh]] = True
    known_acct = np.zeros(len(w.accounts), dtype=np.bool_)
    known_acct[w.account[w.created_ms >= 0]] = True
    pair_first = _first_of_pairs(g, acct)
    gk = g[pair_first]
    n_new = np.bincount(gk, new_acct[w.account[pair_first]].astype(np.float64), minlength=n)
    n_known = np.bincount(gk, known_acct[w.account[pair_first]].astype(np.float64), minlength=n)
    # Shares of accounts say nothing about a block with one or two accounts in it (that is just
    # an account, scored as such), so they stay unknown below MIN_BLOCK_ACCOUNTS.
    crowd = n_accounts >= MIN_BLOCK_ACCOUNTS
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["new_account_share"] = np.where(crowd & (n_known > 0), n_new / n_known, np.nan)
        paid = w.payment_hash != 0
        n_pay = _distinct(g[paid], w.payment_hash[paid], n).astype(np.float64)
        n_acct_paid = _distinct(g[paid], acct[paid], n).astype(np.float64)
        cols["accounts_per_payment"] = np.where(crowd & (n_pay > 0), n_acct_paid / n_pay, np.nan)
    return _assemble("ip_block", w, w.blocks, g, cols)


def _first_of_pairs(g: npt.NDArray[np.int32], key: I64) -> npt.NDArray[np.intp]:
    """Indices of one event per distinct (group, key) pair."""
    order = lexsort((key, g))
    gs, ks = g[order], key[order]
    first = np.ones(gs.size, dtype=np.bool_)
    first[1:] = (gs[1:] != gs[:-1]) | (ks[1:] != ks[:-1])
    return order[first]


def _assemble(
    kind: EntityKind,
    w: ClosedWindow,
    ids: list[str],
    g: npt.NDArray[np.int32],
    cols: dict[str, F64],
) -> EntityWindows:
    feats = features_for(kind)
    values = np.column_stack([cols[f.name] for f in feats]).astype(np.float64)
    return EntityWindows(
        kind=kind,
        start_ms=w.start_ms,
        end_ms=w.end_ms,
        ids=ids,
        values=values,
        requests=cols["requests"].astype(np.int64),
        group=g,
    )
