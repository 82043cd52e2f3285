"""Coordinated campaigns as entities: accounts linked by what they share, scored as one customer.

Distillation campaigns spread their traffic over many accounts so that no account looks abnormal
on its own, and replace a banned account at once. What the accounts cannot hide is what they
share: prompt templates (`models.templates.TemplateIndex`), payment instruments, IP blocks. Each
of these is a *hub*: `CampaignLinker` keeps, per account, its most used templates and IP blocks and
its payment instrument, with decay, and per hub the pooled behaviour of the accounts on it.

Ordinary customers share hubs all the time: 90 employees pay with one company card behind one NAT
address, strangers send a popular framework's prompt or a public benchmark, a carrier NAT block
holds thousands of people, ordinary customers use the same proxy reseller as a hydra. So a hub links
accounts only when it is *risky*: the pooled requests of its accounts, read on the fixed behaviour
scales of `models.evidence`, show extraction (at least ``campaign_evidence``). The rule is
absolute on purpose: a threshold learned from the population would rise with every campaign in it,
until campaigns were what kept each other from being linked. Sharing a template or a card is
deliberate, sharing a proxy block or the minutes an account was created in can be circumstance, so
an account joins through one risky template or payment hub, or through two risky blocks or
creation cohorts; a hub's risk never counts the behaviour its sharing implies (hopping between a
proxy pool's blocks, repeating a template, being new in a creation cohort), and the accounts on it
must behave alike, not be a mixture (`_between_members`: on a template or a card, at most half of a
behaviour's variance may lie between the members, however many requests they sent; on a block or a
creation cohort, where a hydra's hundreds of accounts can surround a few ordinary people, no more
spread than binomial noise allows). Accounts joined through risky hubs form connected
components; an account stays in its component only if its own behaviour does not contradict the
campaign's (for every behaviour the campaign shows strongly, an account behaving like the campaign
would show as few hits as this one with a chance of at least 1%), which keeps an ordinary proxy
customer out of the hydra whose proxy block it shares. A component of at least ``min_members``
accounts is a campaign, with an id that stays with it from window to window (the component holding
most of the previous campaign's members inherits it, also after windows in which it was not
linked).

A campaign is judged as one customer: its members' requests are pooled, so 300 accounts that each
sent four requests weigh as one account that sent 1,200. Hubs fade with ``usage_half_life_ms`` and
accounts leave after ``horizon_ms`` without requests, so a link from last week does not hold a
campaign together today, and campaigns split as their links decay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.evidence import (
    ACCOUNT_BEHAVIOURS,
    ACCOUNT_COLUMN,
    RATES,
    Behaviour,
    lower_bound,
)
from models.graph import components
from models.keys import Keys
from models.sorting import lexsort
from models.templates import TemplateIndex
from models.units import DAY_MS, MINUTE_MS
from models.windows import ClosedWindow

__all__ = [
    "CAMPAIGN_FEATURES",
    "COORDINATION",
    "PROMPT_SET",
    "SYNCHRONIZED",
    "AccountSummaries",
    "CampaignConfig",
    "CampaignLinker",
    "CampaignWindows",
    "prompt_set_strength",
    "summarize",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
_WEIGHTS = np.array([b.weight for b in ACCOUNT_BEHAVIOURS])

# Coordination, read on fixed scales like the behaviours of one account: how many accounts act as
# one (log2 of the members: 0 at 4, 1 at 32, and on without a cap, each eightfold adding as much
# again), and how many of them pay with an instrument another member also uses. Coordination
# alone is never acted on (ordinary teams coordinate); it adds to the pooled extraction
# behaviours of a campaign. The size keeps counting past 32 because a campaign is scored against
# single customers, whose exposed evidence reaches 2 before they leave the reference: one
# customer behind 360 accounts, grading answers all day, is not less unusual than one behind 32,
# and with the size capped it scored under a customer asking a little too often for reasoning
# from new accounts (0.991-0.995 for 112 windows in one outside world, never flagged).
COORDINATION: tuple[Behaviour, ...] = (
    Behaviour("coordinated_accounts", "log2 of linked accounts", 2.0, 5.0, 1.0, cap=np.inf),
    Behaviour("shared_payment", "share of members paying with another member's instrument",
              0.3, 0.8, 0.5),
)  # fmt: skip

# What entity_scores records for a campaign window, in this order.
CAMPAIGN_FEATURES: tuple[str, ...] = (
    "members",
    "active_members",
    "new_members",
    "requests",
    "shared_templates",
    "shared_payments",
    "shared_blocks",
    "new_account_share",
    "shared_payment_share",
    "member_novelty",
    "synchronized_timing",
    *(b.name for b in ACCOUNT_BEHAVIOURS),
)

_TEMPLATE, _PAYMENT, _BLOCK, _COHORT = 0, 1, 2, 3
_SHOWN = 1e-9  # a strength above 0: the pooled share's lower bound is past the onset
# The linker's per-account arrays, one row per account in `CampaignLinker.keys`.
_ROW_STATE = (
    "last_ms", "created_ms", "payment", "tmpl", "tmpl_weight", "blocks", "block_weight", "hits",
    "trials", "requests", "novelty", "seconds", "campaign",
)  # fmt: skip

# Accounts active in the same seconds far more often than chance: the load balancer's signature.
# The value is the excess co-activity of a group's accounts in a window (`_synchrony`): 0 for
# independent accounts however busy, 1 for accounts in lockstep.
# Chance is held to about one group in ten thousand: every window tests thousands of hubs, most
# with a handful of active accounts, and a bound crossed by 1% of them links dozens by luck each
# hour. Below 5 active accounts no bound holds that: three accounts sending once each land in the
# same 3-second slot 1 time in 400.
_SYNC_Z = 3.72  # standard errors of chance, one-sided 1e-4
_SYNC_MIN_ACTIVE = 5
_SYNC_MIN_SECONDS = 10  # fewer seconds covered than this: too few to read synchrony from
_SECONDS = np.arange(60, dtype=np.uint64)
SYNCHRONIZED = Behaviour("synchronized_timing", "excess co-activity in the same seconds", 0.1, 0.4)

# A shared prompt set: many accounts drawing most of what they send from one large set of prompt
# templates that they, and hardly anyone else, use. That is how a distillation dataset is
# harvested by a swarm of accounts each too quiet to notice, and it is extraction, not only
# coordination: each of three scales must be met, and the strength is the least of the three.
# The set must be large (a class's exercises, an internal tool's system prompts or a benchmark
# family are a handful of templates; a dataset is dozens), the accounts many (a team running an
# eval suite is a handful of accounts), and the templates most of what they send (everyone sends
# a popular app's prompt now and then, ordinary customers a few percent of their requests).
PROMPT_SET: tuple[Behaviour, ...] = (
    Behaviour("shared_prompt_set", "log2 of prompt templates the accounts share", 4.0, 6.0, 1.0),
    Behaviour("prompt_set_accounts", "log2 of accounts drawing on them", 3.0, 5.0),
    Behaviour("prompt_set_share", "share of the accounts' requests sent from shared templates",
              0.2, 0.4),
)  # fmt: skip


def prompt_set_strength(templates: F64, accounts: F64, share: F64) -> F64:
    """Strength of a shared prompt set: the least of its three scales (`PROMPT_SET`).

    Examples
    --------
    >>> prompt_set_strength(np.array([150.0, 8.0, 150.0, 150.0]), np.array([500.0, 200.0, 6.0,
    ...     500.0]), np.array([0.35, 0.6, 0.9, 0.05])).round(2).tolist()
    [0.75, 0.0, 0.0, 0.0]
    """
    with np.errstate(divide="ignore"):
        parts = [
            PROMPT_SET[0].strength(np.log2(np.maximum(templates, 0.0))),
            PROMPT_SET[1].strength(np.log2(np.maximum(accounts, 0.0))),
            PROMPT_SET[2].strength(share),
        ]
    out: F64 = np.min(np.stack(parts), axis=0)
    return out


@dataclass(frozen=True)
class CampaignConfig:
    """How accounts are linked into campaigns and how long links last."""

    horizon_ms: int = 60 * MINUTE_MS
    usage_half_life_ms: float = 30 * MINUTE_MS
    # Quiet this long (12 half-lives): dropped, its links are gone.
    forget_ms: int = 6 * 60 * MINUTE_MS
    templates_per_account: int = 8
    blocks_per_account: int = 4
    prompts_per_summary: int = 16
    cohort_ms: int = 10 * MINUTE_MS
    cohort_max_age_ms: int = 30 * 24 * 60 * MINUTE_MS
    min_members: int = 3
    campaign_evidence: float = 0.5
    max_between_members: float = 0.5
    max_dispersion: float = 3.0
    inherit_share: float = 0.3


@dataclass(slots=True)
class AccountSummaries:
    """What one window says about each of its accounts, for linking: the accounts stage of a
    worker sends these to the campaign stage, ``score`` hands them over in process.

    Per account: requests, this window's behaviour counts (columns as `models.evidence.RATES`),
    its novelty, creation time (-1 unknown), the payment instrument it used most (stable hash, 0
    none), its IP blocks (stable hashes, most used first, at most four, with request counts) and up
    to ``prompts_per_summary`` prompt fingerprints with their request times, and which seconds of
    the window it sent requests in (bit ``s`` of ``seconds``). Ragged columns: account
    ``i`` owns ``prompts[prompt_start[i]:prompt_start[i + 1]]``, likewise for blocks.
    """

    end_ms: int
    ids: list[str]
    requests: I64
    hits: F64
    trials: F64
    novelty: F64
    created_ms: I64
    payment: I64
    block_start: I64
    blocks: I64
    block_requests: I64
    prompt_start: I64
    prompts: U64
    prompt_ms: I64
    seconds: U64

    def __len__(self) -> int:
        return len(self.ids)


def _top_per_group(
    g: I64, key: I64, weight: npt.NDArray[Any], k: int
) -> tuple[I64, I64, npt.NDArray[Any]]:
    """For each group, its ``k`` keys of largest weight (ties: the smaller key), sorted by group."""
    order = lexsort((key, -weight, g))
    gs = g[order]
    first = np.ones(gs.size, dtype=np.bool_)
    first[1:] = gs[1:] != gs[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(gs.size) - np.repeat(starts, np.diff(np.append(starts, gs.size)))
    keep = order[rank < k]
    return g[keep], key[keep], weight[keep]


def _pairs(a: I64, b: I64) -> tuple[I64, I64, npt.NDArray[np.intp]]:
    """Distinct (a, b) pairs sorted by a then b, and each input's pair index: what
    ``np.unique(np.stack([a, b]), axis=1, return_inverse=True)`` gives, several times faster."""
    order = lexsort((b, a))
    sa, sb = a[order], b[order]
    new = np.ones(order.size, dtype=np.bool_)
    new[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    group = np.cumsum(new) - 1
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = group
    return sa[new], sb[new], inverse


def _group_sum(group: npt.NDArray[np.intp], values: npt.NDArray[Any], n_groups: int) -> F64:
    """Per group, the column sums of ``values`` (rows belong to ``group``), summed in row order
    as one ``np.bincount`` per column would.

    Examples
    --------
    >>> _group_sum(np.array([1, 0, 1]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), 3).tolist()
    [[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]]
    """
    k = values.shape[1]
    cell = (group.astype(np.int64)[:, None] * k + np.arange(k)).ravel()
    sums = np.bincount(cell, values.ravel(), minlength=n_groups * k)
    out: F64 = sums.astype(np.float64, copy=False).reshape(n_groups, k)
    return out


def summarize(
    w: ClosedWindow,
    hits: F64,
    trials: F64,
    novelty: F64,
    block_hash: I64,
    prompts_per_account: int = 16,
    blocks_per_account: int = 4,
) -> AccountSummaries:
    """Account summaries of a closed window. ``hits``/``trials`` are the window's behaviour counts
    and ``novelty`` the accounts' novelty (rows as ``w.accounts``); ``block_hash`` holds a stable
    hash of each of ``w.blocks``.

    Examples
    --------
    >>> from models.events import UsageEvent
    >>> from models.evidence import stable_hash
    >>> from models.windows import Windower
    >>> win = Windower(60_000, 0)
    >>> for i in range(5):
    ...     block = "10.0.0.0/24" if i < 4 else "10.0.1.0/24"
    ...     _ = win.add(UsageEvent(f"e{i}", i * 1000, "a", "10.0.0.1", block, "m", 10, 10,
    ...                            prompt_fingerprint=100 + i, payment_fingerprint="card"))
    >>> [w] = win.flush()
    >>> zero = np.zeros((1, 6))
    >>> s = summarize(w, zero, zero, np.zeros(1), stable_hash(w.blocks), prompts_per_account=3)
    >>> s.ids, s.requests.tolist(), s.block_requests.tolist()   # blocks: most used first
    (['a'], [5], [4, 1])
    >>> s.prompts.tolist(), s.prompt_start.tolist()             # the latest prompts
    ([102, 103, 104], [0, 3])
    >>> bin(int(s.seconds[0])), bool(s.payment[0] != 0)         # active in seconds 0-4
    ('0b11111', True)
    """
    n = len(w.accounts)
    g = w.account.astype(np.int64)
    req = np.bincount(g, minlength=n).astype(np.int64)
    created = np.full(n, np.iinfo(np.int64).max)
    known = w.created_ms >= 0
    np.minimum.at(created, g[known], w.created_ms[known])
    created = np.where(created == np.iinfo(np.int64).max, -1, created)
    payment = np.zeros(n, dtype=np.int64)
    paid = w.payment_hash != 0
    if paid.any():
        p_acct, p_pay, inverse = _pairs(g[paid], w.payment_hash[paid])
        counts = np.bincount(inverse, minlength=p_acct.size).astype(np.int64)
        acct, pay, _ = _top_per_group(p_acct, p_pay, counts, 1)
        payment[acct] = pay
    p_acct, p_block, inverse = _pairs(g, w.block.astype(np.int64))
    counts = np.bincount(inverse, minlength=p_acct.size).astype(np.int64)
    b_acct, b_code, b_req = _top_per_group(p_acct, p_block, counts, blocks_per_account)
    hf = np.flatnonzero(w.has_fingerprint)
    order = hf[lexsort((-w.ts[hf], g[hf]))]  # per account, latest first
    ga = g[order]
    start = np.ones(ga.size, dtype=np.bool_)
    start[1:] = ga[1:] != ga[:-1]
    firsts = np.flatnonzero(start)
    rank = np.arange(ga.size) - np.repeat(firsts, np.diff(np.append(firsts, ga.size)))
    keep = order[rank < prompts_per_account]
    keep = keep[lexsort((w.ts[keep], g[keep]))]
    per_prompt = np.bincount(g[keep], minlength=n)
    per_block = np.bincount(b_acct, minlength=n)
    second = np.clip((w.ts - w.start_ms) // 1000, 0, 63).astype(np.uint64)
    seconds = np.zeros(n, dtype=np.uint64)
    np.bitwise_or.at(seconds, g, np.uint64(1) << second)
    return AccountSummaries(
        end_ms=w.end_ms,
        ids=list(w.accounts),
        requests=req,
        hits=hits,
        trials=trials,
        novelty=novelty,
        created_ms=created.astype(np.int64),
        payment=payment,
        block_start=np.concatenate([[0], np.cumsum(per_block)]).astype(np.int64),
        blocks=block_hash[b_code],
        block_requests=b_req,
        prompt_start=np.concatenate([[0], np.cumsum(per_prompt)]).astype(np.int64),
        prompts=w.fingerprint[keep],
        prompt_ms=w.ts[keep],
        seconds=seconds,
    )


@dataclass(slots=True)
class CampaignWindows:
    """Every campaign active in one window: ids, members, features and pooled evidence.

    ``members[i]`` lists campaign ``i``'s accounts, ``active[i]`` how many of them sent requests
    in this window, ``joined[i]`` the members that were in no campaign, or another one, before,
    ``circumstantial[i]`` the members outside its core (its largest group of members linked by
    templates or payment instruments), linked to it only by circumstance (shared IP blocks,
    creation times); all of them when it has no such group. ``unlike[i]`` are the members whose
    own requests are likelier from an ordinary customer than from the campaign (`_unlike`).
    ``prompt_set[i]`` is the strength of the prompt set its members share (`PROMPT_SET`), and
    ``prompt_share[i]`` the share of their requests sent from templates they share.
    """

    end_ms: int
    ids: list[str]
    members: list[list[str]]
    joined: list[list[str]]
    circumstantial: list[list[str]]
    unlike: list[list[str]]
    active: I64
    share: F64
    strength: F64
    evidence: F64
    synchrony: F64
    coordination: F64
    coordination_share: F64
    novelty: F64
    templates: I64
    payments: I64
    blocks: I64
    new_accounts: F64
    pooled_requests: F64
    prompt_set: F64
    prompt_share: F64

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def identity_evasion(self) -> F64:
        """The strongest sign that the accounts hide who they are: disposable accounts, rotating
        addresses, a payment instrument shared across the campaign, or requests in lockstep."""
        names = [b.name for b in ACCOUNT_BEHAVIOURS]
        parts = [
            self.strength[:, names.index("disposable_account")],
            self.strength[:, names.index("address_rotation")],
            COORDINATION[1].strength(self.coordination_share[:, 1]),
            SYNCHRONIZED.strength(self.synchrony),
        ]
        out: F64 = np.max(np.column_stack(parts), axis=1) if len(self.ids) else np.zeros(0)
        return out

    @property
    def beyond_newness(self) -> F64:
        """Pooled evidence apart from the members' accounts being new: what they *do* (a class
        or a hackathon signs up in one burst and shares its exercises, and is new, nothing else).
        """
        j = ACCOUNT_COLUMN["disposable_account"]
        acts = np.delete(self.strength, j, axis=1) @ np.delete(_WEIGHTS, j)
        out: F64 = (
            acts
            + SYNCHRONIZED.strength(self.synchrony) * SYNCHRONIZED.weight
            + self.prompt_set * PROMPT_SET[0].weight
        )
        return out

    @property
    def raw(self) -> F64:
        """Raw risk: pooled extraction behaviours + coordination + members' mean novelty."""
        out: F64 = self.evidence + self.coordination + self.novelty
        return out

    def values(self) -> F64:
        """Feature matrix in `CAMPAIGN_FEATURES` order (NaN = unknown)."""
        n = len(self.ids)
        out = np.full((n, len(CAMPAIGN_FEATURES)), np.nan)
        if n == 0:
            return out
        out[:, 0] = [len(m) for m in self.members]
        out[:, 1] = self.active
        out[:, 2] = [len(j) for j in self.joined]
        out[:, 3] = self.pooled_requests
        out[:, 4] = self.templates
        out[:, 5] = self.payments
        out[:, 6] = self.blocks
        out[:, 7] = self.new_accounts
        out[:, 8] = self.coordination_share[:, 1]
        out[:, 9] = self.novelty
        out[:, 10] = self.synchrony
        out[:, 11:] = self.share
        return out

    def reasons(self, i: int) -> list[dict[str, Any]]:
        """What holds campaign ``i`` together, in words an analyst can check."""
        size = len(self.members[i])

        def plural(n: int, word: str) -> str:
            return f"{n} {word}" + ("s" if n != 1 else "")

        out = []
        if self.templates[i]:
            line = f"{size} accounts share {plural(int(self.templates[i]), 'prompt template')}"
            if self.prompt_set[i] > 0:
                line += f", at least {self.prompt_share[i]:.0%} of their requests sent from them"
            out.append(line)
        if self.payments[i]:
            share = self.coordination_share[i, 1]
            out.append(
                f"{share:.0%} of them pay with "
                f"{plural(int(self.payments[i]), 'shared payment instrument')}"
            )
        if self.blocks[i]:
            out.append(f"they send from {plural(int(self.blocks[i]), 'shared IP block')}")
        if self.synchrony[i] >= SYNCHRONIZED.onset:
            out.append(
                "they send in the same seconds "
                f"({self.synchrony[i]:.2f} above chance this window, 1 = in lockstep)"
            )
        if self.new_accounts[i] == self.new_accounts[i] and self.new_accounts[i] >= 0.5:
            out.append(f"{self.new_accounts[i]:.0%} of the accounts are under a week old")
        return [{"detail": d} for d in out]


def _synchrony(
    group: I64,
    seconds: U64,
    active: npt.NDArray[np.bool_],
    n_groups: int,
    covered: int = (1 << 60) - 1,
) -> F64:
    """Excess co-activity of each group's accounts active in the window: 0 for independent
    accounts, 1 for accounts in lockstep; 0 where fewer than 5 are active. Read only over the
    seconds the window ``covered`` (a 60-bit mask: from the first second anyone sent a request
    in to the last; 0 everywhere when it spans fewer than 10): a window closed early, like the
    last one of a replay, holds traffic in its first seconds only, and accounts crowded into
    them are not in step with each other.
    The larger of two estimates, each counted only from its lower confidence bound:

    - *shared seconds*: the share of the accounts' active seconds in which another account of
      the group was active too, above what independent accounts with as many active seconds
      would share (scaled so 1 means every second is shared). It sees a dispatcher that sends
      from a few accounts at each tick, but not a crowd busy every second, where chance alone
      shares every second (then it is 0).
    - *correlation*: the mean pairwise correlation of the accounts' activity over the seconds
      (each pair weighted by how much its two accounts vary, so busy accounts weigh more)
      (and over 3-second slots, where a dispatcher's jitter blurs single seconds). For account
      ``i`` (0/1 per second, variance ``v_i``), the variance of the group's count per second is
      ``sum v_i`` plus every pair's covariance, so the covariances are read off the count's
      variance at any rate: a crowd busy every second averages 0 as much as three accounts
      sending once a minute.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> def mask(secs):
    ...     return np.uint64(sum(1 << int(t) for t in set(secs)))
    >>> busy = [mask(rng.choice(60, 20, replace=False)) for _ in range(40)]   # independent
    >>> beat = rng.choice(60, 20, replace=False)
    >>> lock = [mask(beat) for _ in range(40)]                                 # in lockstep
    >>> turns = [mask([(7 * i) % 60]) for i in range(40)]   # each in a second of its own
    >>> s = np.array(busy + lock + turns, dtype=np.uint64)
    >>> g = np.repeat(np.array([0, 1, 2]), 40)
    >>> _synchrony(g, s, np.ones(120, dtype=np.bool_), 3).round(2).tolist()
    [0.0, 0.98, 0.0]

    Independent accounts in a window that ends after 12 seconds are independent too:

    >>> early = np.array([mask(rng.choice(12, 4, replace=False)) for _ in range(40)])
    >>> bool(_synchrony(np.zeros(40, np.int64), early, np.ones(40, np.bool_), 1)[0] > 0.2)
    True
    >>> _synchrony(np.zeros(40, np.int64), early, np.ones(40, np.bool_), 1, (1 << 12) - 1).tolist()
    [0.0]
    >>> busy = np.array([mask(rng.choice(10, 6, replace=False)) for _ in range(60)])
    >>> _synchrony(np.zeros(60, np.int64), busy, np.ones(60, np.bool_), 1, (1 << 10) - 1).tolist()
    [0.0]
    """
    # Only groups with enough active accounts are read (most hubs have a few): the rest read 0.
    count = np.bincount(group[active], minlength=n_groups)
    active = active & (count[group] >= _SYNC_MIN_ACTIVE)
    span = (np.uint64(covered) >> _SECONDS) & np.uint64(1) == 1
    if not active.any() or span.sum() < _SYNC_MIN_SECONDS:
        return np.zeros(n_groups)
    every = ((seconds[active, None] >> _SECONDS[None, :]) & np.uint64(1)).astype(np.float64)
    bits = every[:, span]
    seconds_read = bits.shape[1]
    # The groups read, numbered 0..n_read-1 (a hub of every window has a few rows, most none).
    read, g = np.unique(group[active], return_inverse=True)
    n_read = read.size
    a = bits.sum(axis=1)
    total = np.bincount(g, a, minlength=n_read).astype(np.float64)
    # Shared seconds, against independent accounts with as many active seconds each.
    per_second = _group_sum(g, bits, n_read)
    shared = (bits * (per_second[g] >= 2)).sum(axis=1)
    observed = np.bincount(g, shared, minlength=n_read)
    expected = np.bincount(g, a * (1 - np.exp(-(total[g] - a) / seconds_read)), minlength=n_read)
    with np.errstate(invalid="ignore", divide="ignore"):
        o = lower_bound(np.nan_to_num(observed / total), total, _SYNC_Z)
        e = expected / np.maximum(total, 1)
        excess = np.where((total > 0) & (e <= 0.5), (o - e) / (1 - e), 0.0)
    out: F64 = np.clip(np.nan_to_num(excess), 0.0, 1.0)
    # Correlation, per second and per 3-second slot.
    # Whole 3-second slots only: a slot cut by the span's end is shorter, every account is less
    # likely to be active in it, and that shared dip reads as covariance.
    slots = every.reshape(every.shape[0], 20, 3).max(axis=2)[:, span.reshape(20, 3).all(axis=1)]
    for b, counts in ((bits, per_second), (slots, _group_sum(g, slots, n_read))):
        p = b.mean(axis=1)
        var = p * (1 - p)
        s1 = np.bincount(g, var, minlength=n_read)
        s2 = np.bincount(g, var**2, minlength=n_read)
        s_half = np.bincount(g, np.sqrt(var), minlength=n_read)
        pairs = s_half**2 - s1
        # Chance alone: each pair's covariance over T slots has variance v_i v_j / T.
        chance = np.sqrt(np.maximum(2 * (s1**2 - s2) / b.shape[1], 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (counts.var(axis=1) - s1 - _SYNC_Z * chance) / pairs
        rho = np.where(pairs > 1e-12, rho, 0.0)
        out = np.maximum(out, np.clip(np.nan_to_num(rho), 0.0, 1.0))
    every_group: F64 = np.zeros(n_groups)
    every_group[read] = out
    return every_group


def _between_members(
    group: I64, hits: F64, trials: F64, rate: F64, n_groups: int
) -> tuple[F64, F64]:
    """How differently each group's members show a behaviour: the share of the behaviour's
    variance that lies between the members (the intraclass correlation, by moments), and the
    Pearson dispersion (chi-square over degrees of freedom, 1 for binomial noise alone).

    The first is about 0 when the members behave alike (binomial noise only), 1 when each member
    either always or never shows it. A proxy block that a hydra shares with ordinary customers
    is a mixture (0.8 for a fifth of hydra accounts at 90% among ordinary ones at 2%); a
    campaign whose accounts show a behaviour more or less often is not (0.1 for shares spread
    from 50% to 95%). It does not grow with the number of requests: more evidence that members
    differ a little is not evidence of a mixture. The dispersion does grow with them (about 1
    plus their mean count times the first), so it is the stricter test, kept where a few
    ordinary members among many others must still show. Members without trials are left out;
    groups of fewer than two members count as 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.repeat(np.array([0, 1]), 20)
    >>> n = np.full(40, 200.0)
    >>> shares = np.r_[np.linspace(0.5, 0.95, 20), np.r_[np.full(4, 0.9), np.full(16, 0.02)]]
    >>> x = np.round(shares * n)
    >>> rate = np.bincount(g, x) / np.bincount(g, n)
    >>> icc, phi = _between_members(g, x, n, rate, 2)
    >>> icc.round(1).tolist(), phi.round().tolist()
    ([0.1, 0.8], [20.0, 166.0])
    """
    n = trials.astype(np.float64)
    p = np.clip(rate[group], 1e-6, 1 - 1e-6)
    has = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        term = np.where(has, (hits - n * p) ** 2 / (n * p * (1 - p)), 0.0)
    chi2 = np.bincount(group, term, minlength=n_groups)
    k = np.bincount(group, has.astype(np.float64), minlength=n_groups)
    total = np.bincount(group, n, minlength=n_groups)
    squares = np.bincount(group, n * n, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        # chi2 / (k - 1) = 1 + (n0 - 1) * icc, n0 the ANOVA mean size for unequal members.
        n0 = (total - squares / total) / (k - 1)
        icc = (chi2 / (k - 1) - 1) / (n0 - 1)
    out: F64 = np.where((k >= 2) & (n0 > 1), np.clip(np.nan_to_num(icc), 0.0, 1.0), 0.0)
    phi = np.where(k >= 2, chi2 / np.maximum(k - 1, 1), 1.0)
    return out, phi


def _linked(n: int, acc: I64, hub: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Connected components of ``n`` account positions joined through shared hubs (``acc`` on
    ``hub``, one pair per link): a component label per position, and which positions are linked."""
    order = lexsort((acc, hub))
    acc, hub = acc[order], hub[order]
    first = np.ones(hub.size, dtype=np.bool_)
    first[1:] = hub[1:] != hub[:-1]
    head = acc[np.flatnonzero(first)[np.cumsum(first) - 1]]
    linked = np.zeros(n, dtype=np.bool_)
    linked[acc] = True
    return components(n, head, acc), linked


def _in_numbers(
    n: int,
    acc: I64,
    hub: I64,
    keep: npt.NDArray[np.bool_],
    deliberate: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """The links (``keep``, of ``acc`` on ``hub``) left when circumstance joins groups only in
    numbers: where a circumstantial hub (a block, a creation cohort) holds accounts of two or
    more groups linked by deliberate hubs (templates, cards) and one of the groups has two or
    more accounts on it, an account whose group has no second account on it does not link
    through it: it is a visitor. One of a class's students on a proxy block with two of a
    swarm's accounts does not join the class to the swarm; two hydra accounts on a block join
    their groups, and so does a block that three or more groups use one account each
    (infrastructure they share). Two groups that meet on a block one account each do not: two
    customers of one residential network is the likeliest reason. Accounts no deliberate hub
    links keep their links.

    Examples
    --------
    Accounts 0-2 share a template (hub 0), 3-5 another (hub 1); block 2 holds accounts 0, 3, 4:

    >>> acc = np.array([0, 1, 2, 3, 4, 5, 0, 3, 4])
    >>> hub = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> deliberate = hub < 2
    >>> _in_numbers(6, acc, hub, np.ones(9, dtype=np.bool_), deliberate).tolist()[6:]
    [False, True, True]

    With one account of each group on the block, it does not join them:

    >>> _in_numbers(6, acc[:8], hub[:8], np.ones(8, dtype=np.bool_), deliberate[:8]).tolist()[6:]
    [False, False]

    Accounts 6-8 share a third template (hub 3); one account of each group on block 2 joins the
    three:

    >>> acc = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 6])
    >>> hub = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3, 2, 2, 2])
    >>> deliberate = hub != 2
    >>> _in_numbers(9, acc, hub, np.ones(12, dtype=np.bool_), deliberate).tolist()[9:]
    [True, True, True]
    """
    circumstance = keep & ~deliberate
    chosen = keep & deliberate
    if not circumstance.any() or not chosen.any():
        return keep
    label, linked = _linked(n, acc[chosen], hub[chosen])
    at = np.flatnonzero(circumstance)
    grouped = linked[acc[at]]
    at = at[grouped]
    if at.size == 0:
        return keep
    h, _, inverse = _pairs(hub[at], label[acc[at]])
    count = np.bincount(inverse, minlength=h.size)
    groups = np.bincount(h.astype(np.intp), minlength=int(h.max()) + 1)  # groups per hub
    most = np.zeros(groups.size, dtype=np.int64)  # the most accounts one group has on a hub
    np.maximum.at(most, h.astype(np.intp), count)
    out = keep.copy()
    shared = (most[hub[at]] < 2) & (groups[hub[at]] >= 3)
    out[at] = (groups[hub[at]] < 2) | (count[inverse] >= 2) | shared
    return out


def _cautious_components(n: int, acc: I64, hub: I64, big: int) -> I64:
    """Components of ``n`` account positions joined through hubs (``acc`` on ``hub``), where a hub
    joins a group of ``big`` or more accounts to another only when at least two of its accounts
    are in each: one account that sends from two sets (a swarm's account that also sends a popular
    prompt a class sends) does not make them one. Smaller groups on such a hub join the largest.
    Hubs are taken largest first (ties: the smaller hub); a component label per position (the
    root of its group).

    Examples
    --------
    Two groups of eight, each held by its own hub, and a hub with one account of each:

    >>> acc = np.array([*range(8), *range(8, 16), 0, 8, 16])
    >>> hub = np.array([0] * 8 + [1] * 8 + [2] * 3)
    >>> label = _cautious_components(17, acc, hub, big=8)
    >>> len(set(label[:8].tolist())), len(set(label[8:16].tolist())), bool(label[0] != label[8])
    (1, 1, True)
    >>> bool(label[16] in (label[0], label[8]))       # the third account joins one of them
    True
    """
    parent = np.arange(n, dtype=np.int64)
    size = np.ones(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:
            parent[x], x = root, int(parent[x])
        return root

    order = lexsort((acc, hub))
    acc, hub = acc[order], hub[order]
    starts = np.flatnonzero(np.r_[True, hub[1:] != hub[:-1]])
    ends = np.r_[starts[1:], hub.size]
    for k in np.lexsort((hub[starts], -(ends - starts))).tolist():
        roots: dict[int, int] = {}
        for m in acc[starts[k] : ends[k]].tolist():
            r = find(m)
            roots[r] = roots.get(r, 0) + 1
        join = [r for r, c in roots.items() if size[r] < big or c >= 2]
        if not any(size[r] >= big for r in join):
            bigs = [r for r in roots if size[r] >= big]
            if bigs:
                join.append(min(bigs, key=lambda r: (-int(size[r]), r)))
        if len(join) < 2:
            continue
        head = min(join, key=lambda r: (-int(size[r]), r))
        for r in join:
            if r != head:
                parent[r] = head
                size[head] += size[r]
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _pooled(hits: F64, trials: F64, newness: F64, known: F64) -> tuple[F64, F64]:
    """Shares and strengths of `ACCOUNT_BEHAVIOURS` for pooled counts (rows = groups).

    ``newness`` is the sum of ``exp(-age / 7 days)`` over the group's ``known`` accounts with a
    creation time.
    """
    n = hits.shape[0]
    share = np.full((n, len(ACCOUNT_BEHAVIOURS)), np.nan)
    strength = np.zeros((n, len(ACCOUNT_BEHAVIOURS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(trials > 0, hits / trials, np.nan)
        mean_new = np.where(known > 0, newness / known, np.nan)
    low = lower_bound(np.nan_to_num(rate), trials)
    for j, b in enumerate(ACCOUNT_BEHAVIOURS):
        if b.name in RATES:
            r = RATES.index(b.name)
            share[:, j], strength[:, j] = rate[:, r], b.strength(low[:, r])
        elif b.name == "disposable_account":
            lo = lower_bound(np.nan_to_num(mean_new), known)
            share[:, j], strength[:, j] = mean_new, b.strength(lo)
    return share, strength


class CampaignLinker:
    """Links accounts into campaigns window by window (see the module docstring).

    Examples
    --------
    Twenty fresh accounts asking for reasoning with the same three templates, and twenty ordinary
    ones on the same IP block:

    >>> import numpy as np
    >>> from models.events import UsageEvent
    >>> from models.evidence import stable_hash
    >>> from models.windows import Windower
    >>> rng = np.random.default_rng(0)
    >>> templates = rng.integers(0, 2**63, size=3, dtype=np.int64).astype(np.uint64)
    >>> win = Windower(60_000, 0)
    >>> for i in range(400):
    ...     a, extraction = i % 40, i % 40 < 20
    ...     fp = int(templates[i % 3] ^ (np.uint64(1) << np.uint64(rng.integers(64))))
    ...     _ = win.add(UsageEvent(
    ...         f"e{i}", i * 100, f"acct-{a}", "10.0.0.1", "10.0.0.0/24", "m", 100, 900,
    ...         cot_score=0.9 if extraction else 0.05,
    ...         prompt_fingerprint=fp if extraction else int(rng.integers(2**62)),
    ...         account_created_ms=0 if extraction else -10**11))
    >>> [w] = win.flush()
    >>> hits, trials = np.zeros((40, 6)), np.zeros((40, 6))
    >>> hits[:20, 0], trials[:, 0] = 9.0, 10.0            # reasoning in 9 of 10 requests
    >>> summary = summarize(w, hits, trials, np.full(40, 0.5), stable_hash(w.blocks))
    >>> out = CampaignLinker().update(summary)
    >>> len(out), sorted(out.members[0]) == sorted(f"acct-{a}" for a in range(20))
    (1, True)
    >>> for reason in out.reasons(0):
    ...     print(reason["detail"])
    20 accounts share 3 prompt templates
    they send from 1 shared IP block
    they send in the same seconds (0.26 above chance this window, 1 = in lockstep)
    100% of the accounts are under a week old
    """

    def __init__(self, config: CampaignConfig | None = None, seed: int = 0) -> None:
        self.config = config or CampaignConfig()
        self.templates = TemplateIndex(seed=seed)
        k, b, r = self.config.templates_per_account, self.config.blocks_per_account, len(RATES)
        self.keys = Keys()  # account ids -> rows of the arrays below
        self.last_ms = np.zeros(0, dtype=np.int64)  # end of the account's latest window
        self.created_ms = np.zeros(0, dtype=np.int64)
        self.payment = np.zeros(0, dtype=np.int64)
        self.tmpl = np.zeros((0, k), dtype=np.int64)
        self.tmpl_weight = np.zeros((0, k), dtype=np.float32)
        self.blocks = np.zeros((0, b), dtype=np.int64)
        self.block_weight = np.zeros((0, b), dtype=np.float32)
        self.hits = np.zeros((0, r), dtype=np.float32)
        self.trials = np.zeros((0, r), dtype=np.float32)
        self.requests = np.zeros(0, dtype=np.float32)
        self.novelty = np.zeros(0, dtype=np.float32)
        self.seconds = np.zeros(0, dtype=np.uint64)  # active seconds in the latest window
        self.campaign = np.zeros(0, dtype=np.int64)  # code of the account's campaign, -1 none
        self._names: list[str] = []  # campaign code -> id
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "index" in state:  # a checkpoint from before `Keys`: a dict and a list of ids
            state["keys"] = Keys.from_rows(state.pop("ids"))
            del state["index"], state["updated_ms"]  # updated_ms was always last_ms
        self.__dict__.update(state)

    # -- per-account state ---------------------------------------------------------------------
    def _rows(self, ids: list[str]) -> npt.NDArray[np.intp]:
        rows = self.keys.rows(ids)
        m = self.keys.high - self.last_ms.size
        if m:
            for name in _ROW_STATE:
                col = getattr(self, name)
                fill = -1 if name in ("created_ms", "campaign") else 0  # unknown, no campaign
                new_rows = np.full((m, *col.shape[1:]), fill, dtype=col.dtype)
                setattr(self, name, np.concatenate([col, new_rows]))
        return rows

    def _observe(self, s: AccountSummaries) -> npt.NDArray[np.intp]:
        rows = self._rows(s.ids)
        cfg = self.config
        age = (s.end_ms - self.last_ms[rows]).astype(np.float64)
        keep = np.where(self.last_ms[rows] > 0, 0.5 ** (age / cfg.usage_half_life_ms), 0.0)
        self.hits[rows] = self.hits[rows] * keep[:, None] + s.hits
        self.trials[rows] = self.trials[rows] * keep[:, None] + s.trials
        self.requests[rows] = self.requests[rows] * keep + s.requests
        self.novelty[rows] = s.novelty
        self.seconds[rows] = s.seconds
        self.tmpl_weight[rows] *= keep[:, None].astype(np.float32)
        self.block_weight[rows] *= keep[:, None].astype(np.float32)
        self.last_ms[rows] = s.end_ms
        known = s.created_ms >= 0
        self.created_ms[rows[known]] = s.created_ms[known]
        paid = s.payment != 0
        self.payment[rows[paid]] = s.payment[paid]
        k = self.config.templates_per_account
        self.tmpl[rows] = self.templates.canonical(self.tmpl[rows].ravel()).reshape(-1, k)
        if s.prompts.size:
            ids = self.templates.assign(s.prompts, s.end_ms, salt=s.prompt_ms.view(np.uint64))
            owner = np.repeat(np.arange(len(s)), np.diff(s.prompt_start))
            used = ids > 0
            self._merge_top(self.tmpl, self.tmpl_weight, rows, owner[used], ids[used], None)
        owner = np.repeat(np.arange(len(s)), np.diff(s.block_start))
        self._merge_top(self.blocks, self.block_weight, rows, owner, s.blocks, s.block_requests)
        return rows

    @staticmethod
    def _merge_top(
        keys: I64,
        weights: npt.NDArray[np.float32],
        rows: npt.NDArray[np.intp],
        owner: I64,
        new_keys: I64,
        new_weights: I64 | None,
    ) -> None:
        """Add this window's (account, key, weight) use to each account's top-K keys."""
        if owner.size == 0:
            return
        k = keys.shape[1]
        acct = rows[owner].astype(np.int64)
        w_new = np.ones(acct.size) if new_weights is None else new_weights.astype(np.float64)
        touched = np.unique(acct)
        all_rows = np.concatenate([np.repeat(touched, k), acct])
        all_keys = np.concatenate([keys[touched].ravel(), new_keys])
        all_w = np.concatenate([weights[touched].ravel().astype(np.float64), w_new])
        live = all_keys != 0
        pair_rows, pair_keys, inv = _pairs(all_rows[live], all_keys[live])
        weight = np.bincount(inv, all_w[live], minlength=pair_rows.size)
        top_rows, top_keys, top_w = _top_per_group(pair_rows, pair_keys, weight, k)
        keys[touched] = 0
        weights[touched] = 0
        first = np.ones(top_rows.size, dtype=np.bool_)
        first[1:] = top_rows[1:] != top_rows[:-1]
        starts = np.flatnonzero(first)
        col = np.arange(top_rows.size) - np.repeat(
            starts, np.diff(np.append(starts, top_rows.size))
        )
        keys[top_rows, col] = top_keys
        weights[top_rows, col] = top_w

    def _forget(self, now_ms: int) -> None:
        """Drop the accounts quiet for ``forget_ms`` once they are half of all rows, so state
        and the per-window scan stay proportional to the accounts seen in the last one to two
        ``forget_ms``, however many a hydra burns through (each compaction is paid for by as
        many new rows)."""
        quiet = self.last_ms <= now_ms - self.config.forget_ms
        if 2 * int(quiet.sum()) <= len(self.keys):
            return
        keep = np.flatnonzero(~quiet)
        for name in _ROW_STATE:
            setattr(self, name, getattr(self, name)[keep])
        self.keys = self.keys.take(keep)

    # -- linking -------------------------------------------------------------------------------
    def _hubs(self, alive: npt.NDArray[np.intp], now_ms: int) -> tuple[I64, I64, I64, I64]:
        """Incidence of alive accounts on hubs: (account position, hub, hub kind per hub, hub key
        per hub); hubs are sorted by kind, then key."""
        n = alive.size
        parts = []
        for hub_kind, keys, weight in (
            (_TEMPLATE, self.tmpl[alive], self.tmpl_weight[alive]),
            (_BLOCK, self.blocks[alive], self.block_weight[alive]),
        ):
            at = np.repeat(np.arange(n), keys.shape[1])
            ok = (keys.ravel() != 0) & (weight.ravel() >= 0.5)
            parts.append((at[ok], keys.ravel()[ok], np.full(int(ok.sum()), hub_kind)))
        paid = self.payment[alive] != 0
        parts.append((np.flatnonzero(paid), self.payment[alive][paid], np.full(int(paid.sum()), 1)))
        # Creation cohorts: accounts created in the same few minutes, recently.
        created = self.created_ms[alive]
        fresh = (created >= 0) & (created > now_ms - self.config.cohort_max_age_ms)
        cohort = (created[fresh] // self.config.cohort_ms + 1).astype(np.int64)
        parts.append((np.flatnonzero(fresh), cohort, np.full(int(fresh.sum()), _COHORT)))
        acc = np.concatenate([p[0] for p in parts])
        key = np.concatenate([p[1] for p in parts])
        kind = np.concatenate([p[2] for p in parts])
        if acc.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        hub_kinds, hub_keys, hub = _pairs(kind.astype(np.int64), key.astype(np.int64))
        return acc.astype(np.int64), hub.astype(np.int64), hub_kinds, hub_keys

    def _shared_share(
        self, alive: npt.NDArray[np.intp], hub: I64, hub_kind: I64, hub_keys: I64
    ) -> F64:
        """Per alive account, its (decayed) requests sent from templates that at least two alive
        accounts use: the numerator of a prompt set's share (`PROMPT_SET`)."""
        members = np.bincount(hub, minlength=hub_kind.size)
        shared = np.sort(hub_keys[(hub_kind == _TEMPLATE) & (members >= 2)])
        keys = self.tmpl[alive]
        on_shared = np.zeros(keys.shape, dtype=np.bool_)
        if shared.size:
            at = np.minimum(np.searchsorted(shared, keys), shared.size - 1)
            on_shared = (shared[at] == keys) & (keys != 0)
        out: F64 = (self.tmpl_weight[alive].astype(np.float64) * on_shared).sum(axis=1)
        return out

    def _prompt_set_hubs(
        self,
        alive: npt.NDArray[np.intp],
        acc: I64,
        hub: I64,
        hub_kind: I64,
        shared_w: F64,
    ) -> I64:
        """Template hubs of a shared prompt set strong enough to link on its own: per hub, the
        set it belongs to (a label), or -1.

        Template hubs whose accounts send at least the onset share of their requests from shared
        templates, at least half of them from another such template too, join their accounts
        into communities; a community's templates, accounts and
        pooled share are read on the `PROMPT_SET` scales, and every hub of a community whose
        strength reaches ``campaign_evidence`` links.
        """
        n_hubs = hub_kind.size
        members = np.bincount(hub, minlength=n_hubs)
        requests = self.requests[alive].astype(np.float64)
        sent = np.bincount(hub, shared_w[acc], minlength=n_hubs)
        total = np.bincount(hub, requests[acc], minlength=n_hubs)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, sent / total, 0.0)
        dense = (hub_kind == _TEMPLATE) & (members >= 2) & (share >= PROMPT_SET[2].onset)
        # A popular prompt (a framework's, an app's) is one of many that ordinary people send now
        # and then: a few requests each, one of them that prompt, can pool to the onset share,
        # and such a hub would join whole groups that have nothing else in common (a sign-up
        # cohort to a swarm). A template belongs to a set when at least half of its accounts
        # also send another template of it.
        on = dense[hub]
        several = np.bincount(acc[on], minlength=alive.size) >= 2
        dense &= 2 * np.bincount(hub[on], several[acc[on]], minlength=n_hubs) >= members
        on = dense[hub]
        out = np.full(n_hubs, -1, dtype=np.int64)
        if not on.any():
            return out
        big = int(2 ** PROMPT_SET[1].onset)
        label = _cautious_components(alive.size, acc[on], hub[on], big)
        linked = np.zeros(alive.size, dtype=np.bool_)
        linked[acc[on]] = True
        comps, comp = np.unique(label[linked], return_inverse=True)
        pos = np.flatnonzero(linked)
        accounts = np.bincount(comp, minlength=comps.size).astype(np.float64)
        pooled = np.bincount(comp, shared_w[pos], minlength=comps.size) / np.maximum(
            np.bincount(comp, requests[pos], minlength=comps.size), 1e-12
        )
        # A hub's set: the one most of its accounts are in (ties: the smaller label).
        h_of, h_comp, inverse = _pairs(hub[on], np.searchsorted(comps, label[acc[on]]))
        count = np.bincount(inverse, minlength=h_of.size)
        top_hub, top_comp, _ = _top_per_group(h_of, h_comp, count, 1)
        templates = np.bincount(top_comp, minlength=comps.size).astype(np.float64)
        strength = prompt_set_strength(templates, accounts, pooled)
        strong = strength * PROMPT_SET[0].weight >= self.config.campaign_evidence
        out[top_hub] = np.where(strong[top_comp], top_comp, -1)
        return out

    def _risky_hubs(
        self,
        alive: npt.NDArray[np.intp],
        acc: I64,
        hub: I64,
        hub_kind: I64,
        now_ms: int,
        covered: int,
    ) -> npt.NDArray[np.bool_]:
        """Which hubs link: enough accounts whose pooled requests show extraction behaviour."""
        n_hubs = hub_kind.size
        members = np.bincount(hub, minlength=n_hubs).astype(np.float64)
        rows = alive[acc]
        r = len(RATES)
        hits = _group_sum(hub, self.hits[rows], n_hubs)
        trials = _group_sum(hub, self.trials[rows], n_hubs)
        created = self.created_ms[rows]
        known = created >= 0
        newness = np.where(known, np.exp(-np.maximum(now_ms - created, 0) / (7 * DAY_MS)), 0.0)
        new_sum = np.bincount(hub, newness, minlength=n_hubs).astype(np.float64)
        known_n = np.bincount(hub, known.astype(np.float64), minlength=n_hubs).astype(np.float64)
        share, strength = _pooled(hits, trials, new_sum, known_n)
        # A hub's risk must come from behaviours other than the one its sharing implies: everyone
        # on a proxy pool hops between its blocks, and everyone sending a template sends it again.
        inherent = np.zeros((hub_kind.size, len(ACCOUNT_BEHAVIOURS)), dtype=np.bool_)
        inherent[hub_kind == _BLOCK, ACCOUNT_COLUMN["address_rotation"]] = True
        inherent[hub_kind == _TEMPLATE, ACCOUNT_COLUMN["templated_prompts"]] = True
        # Newness is not extraction: a team onboarded today on one company card shares a card
        # and a creation hour; a hub is risky for what its accounts do, not for how new they are.
        inherent[hub_kind == _COHORT, ACCOUNT_COLUMN["disposable_account"]] = True
        inherent[hub_kind == _PAYMENT, ACCOUNT_COLUMN["disposable_account"]] = True
        strength = np.where(inherent, 0.0, strength)
        sync = SYNCHRONIZED.strength(
            _synchrony(hub, self.seconds[rows], self.last_ms[rows] == now_ms, n_hubs, covered)
        )
        evidence = strength @ _WEIGHTS + sync * SYNCHRONIZED.weight
        ok: npt.NDArray[np.bool_] = (members >= self.config.min_members) & (
            evidence >= self.config.campaign_evidence
        )
        # ... and be the behaviour of its accounts alike, not a mixture: a proxy block that a hydra
        # shares with ordinary customers pools to a middling share that nobody on it has.
        deliberate = (hub_kind == _TEMPLATE) | (hub_kind == _PAYMENT)
        for j, b in enumerate(ACCOUNT_BEHAVIOURS):
            if b.name not in RATES:
                continue
            r = RATES.index(b.name)
            bearing = ok & (strength[:, j] >= 0.5)
            if not bearing.any():
                continue
            icc, phi = _between_members(
                hub, self.hits[rows, r], self.trials[rows, r], share[:, j], n_hubs
            )
            # Binomial noise alone passes everywhere; on a template or a card, so do members that
            # differ by degree (the intraclass correlation needs many requests per member to be
            # measured, the dispersion test passes few).
            alike = (phi <= self.config.max_dispersion) | (
                deliberate & (icc <= self.config.max_between_members)
            )
            ok &= ~bearing | alike
        return ok

    def _cohort_blocks(
        self,
        alive: npt.NDArray[np.intp],
        acc: I64,
        hub: I64,
        hub_kind: I64,
        risky: npt.NDArray[np.bool_],
        free: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.bool_]:
        """Which incidences (``acc`` on ``hub``) link as a block shared by risky creation
        cohorts: an account ``free`` of deliberate links (no risky template or card) in a risky
        cohort, whose own requests are likelier from its cohort than from an ordinary customer
        (`_likelihood_ratio`), on a block from which at least ``min_members`` such accounts send.

        A hydra that replaces its accounts every few minutes, on a residential proxy pool its
        reseller's ordinary customers share, leaves a trail of creation cohorts whose accounts
        all extract alike (risky), and no block on which its accounts are alone (the customers
        make each block a mixture, not risky). Read among the accounts of risky cohorts that
        behave like them, the pool's blocks are what the second circumstance asks for, and the
        cohorts are joined through them. The customers on the same blocks are in no risky
        cohort; an ordinary sign-up of the same minutes is not like its cohort: neither is
        marked.
        Accounts that templates or cards link need no such block, and do not get one: given
        one, a crew linked by templates was joined to another crew on the same pool early on,
        and the larger campaign was throttled later than either would have been.

        Examples
        --------
        Accounts 0-2 share risky cohort 0 and 3-5 risky cohort 1 (hub 1); accounts 0, 3 and 4
        send from block 2, with account 6, a customer of no risky cohort. Each asked for
        reasoning in 9 of 10 requests:

        >>> linker = CampaignLinker()
        >>> linker.trials = np.full((7, len(RATES)), 10.0, dtype=np.float32)
        >>> linker.hits = np.zeros((7, len(RATES)), dtype=np.float32)
        >>> linker.hits[:, RATES.index("reasoning_elicitation")] = 9.0
        >>> alive, acc = np.arange(7), np.array([0, 1, 2, 3, 4, 5, 0, 3, 4, 6])
        >>> hub = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
        >>> kind = np.array([_COHORT, _COHORT, _BLOCK])
        >>> risky, free = np.array([True, True, False]), np.ones(7, dtype=np.bool_)
        >>> linker._cohort_blocks(alive, acc, hub, kind, risky, free).tolist()[6:]
        [True, True, True, False]

        Account 0 is linked by a template: two accounts of risky cohorts are left on the block.

        >>> free[0] = False
        >>> linker._cohort_blocks(alive, acc, hub, kind, risky, free).tolist()[6:]
        [False, False, False, False]
        """
        out = np.zeros(acc.size, dtype=np.bool_)
        on_cohort = risky[hub] & (hub_kind[hub] == _COHORT)
        if not on_cohort.any():
            return out
        # Each account is in one cohort: its cohort's pooled behaviour, per account.
        c_acc, c_hub = acc[on_cohort], hub[on_cohort]
        rows = alive[c_acc]
        none = np.zeros(hub_kind.size, dtype=np.float64)
        share, strength = _pooled(
            _group_sum(c_hub, self.hits[rows], hub_kind.size),
            _group_sum(c_hub, self.trials[rows], hub_kind.size),
            none,
            none,
        )
        like = np.zeros(alive.size, dtype=np.bool_)
        # Every behaviour the cohort shows past its onset (a cohort is risky by the sum), and
        # evidence for the cohort, not only none against it: an account with no requests on
        # those behaviours (no classifier verdicts, say) proves nothing and does not count.
        like[c_acc] = self._likelihood_ratio(rows, share[c_hub], strength[c_hub], _SHOWN) > 0
        sub = (hub_kind[hub] == _BLOCK) & like[acc] & free[acc] & ~risky[hub]
        if sub.sum() >= self.config.min_members:
            members = np.bincount(hub[sub], minlength=hub_kind.size)
            out[sub] = members[hub[sub]] >= self.config.min_members
        return out

    def _consistent(
        self, rows: npt.NDArray[np.intp], share: F64, strength: F64
    ) -> npt.NDArray[np.bool_]:
        """Members whose own behaviour is consistent with the campaign's strong behaviours: for
        each, the chance that an account behaving like the campaign shows as few hits as this one
        is at least 1% (Chernoff bound), so one request proves little either way."""
        ok = np.ones(rows.size, dtype=np.bool_)
        for j, b in enumerate(ACCOUNT_BEHAVIOURS):
            if b.name not in RATES or strength[j] < 0.5:
                continue
            r = RATES.index(b.name)
            n = self.trials[rows, r].astype(np.float64)
            x = self.hits[rows, r].astype(np.float64)
            p = float(np.clip(share[j], 1e-6, 1 - 1e-6))
            with np.errstate(invalid="ignore", divide="ignore"):
                q = np.clip(np.where(n > 0, x / n, p), 1e-12, 1 - 1e-12)
                kl = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
            ok &= ~((q < p) & (n * kl > np.log(100.0)))
        return ok

    def _unlike(
        self, rows: npt.NDArray[np.intp], share: F64, strength: F64
    ) -> npt.NDArray[np.bool_]:
        """Members (``rows``) whose own requests are likelier from an ordinary customer than from
        the campaign whose pooled behaviour shares and strengths are ``share`` and ``strength``
        (`_likelihood_ratio` below 0 over the behaviours the campaign shows strongly)."""
        unlike: npt.NDArray[np.bool_] = self._likelihood_ratio(rows, share, strength, 0.5) < 0
        return unlike

    def _likelihood_ratio(
        self, rows: npt.NDArray[np.intp], share: F64, strength: F64, least: float
    ) -> F64:
        """Per member (``rows``), the log-likelihood ratio of its own requests coming from the
        campaign whose pooled behaviour shares and strengths are ``share`` and ``strength`` (per
        behaviour; or per member and behaviour, each member against its own group) rather than
        from an ordinary customer.

        For each behaviour the campaign shows strongly (strength ``least`` or more), a member's
        hits are weighed as draws at the campaign's share (at most the behaviour's full share)
        against draws at the behaviour's onset, a share ordinary customers rarely reach (the
        log-likelihood ratio, summed over behaviours). Address rotation is left out: every
        customer of a proxy pool hops between its blocks. A member with no requests on those
        behaviours weighs nothing either way and is not unlike.
        """
        llr = np.zeros(rows.size)
        share = np.broadcast_to(share, (rows.size, len(ACCOUNT_BEHAVIOURS)))
        shown = np.broadcast_to(strength, share.shape) >= least
        for j, b in enumerate(ACCOUNT_BEHAVIOURS):
            if b.name not in RATES or b.name == "address_rotation" or not shown[:, j].any():
                continue
            r = RATES.index(b.name)
            # At most the behaviour's full share: a member that shows it in full is like the
            # campaign however much more of it the campaign shows (the cut between the two
            # hypotheses stays between onset and full). Where it is not shown, the onset: no
            # weight either way.
            p = np.where(shown[:, j], np.clip(np.nan_to_num(share[:, j]), 1e-6, b.full), b.onset)
            x = self.hits[rows, r].astype(np.float64)
            n = self.trials[rows, r].astype(np.float64)
            llr += x * np.log(p / b.onset) + (n - x) * np.log((1 - p) / (1 - b.onset))
        return llr

    def update(self, s: AccountSummaries) -> CampaignWindows:
        """Take one window's account summaries; return the campaigns active in it."""
        self._forget(s.end_ms)
        active_rows = self._observe(s)
        # The seconds this window holds traffic in, from the first request to the last: all of
        # them, but in a window closed early (the last of a replay) or opened late.
        sent = int(np.bitwise_or.reduce(s.seconds)) if len(s) else 0
        first = (sent & -sent).bit_length() - 1
        covered = ((1 << sent.bit_length()) - 1) ^ ((1 << first) - 1) if sent else 0
        now = s.end_ms
        cfg = self.config
        alive = np.flatnonzero(self.last_ms > now - cfg.horizon_ms)
        acc, hub, hub_kind, hub_keys = self._hubs(alive, now)
        shared_w = self._shared_share(alive, hub, hub_kind, hub_keys)
        clusters: list[npt.NDArray[np.intp]] = []
        # Components over template and card links alone: which members are tied to their
        # campaign by choice (in its largest such component), not only by circumstance.
        choice_label = np.arange(alive.size, dtype=np.int64)
        choice_linked = np.zeros(alive.size, dtype=np.bool_)
        if acc.size:
            risky = self._risky_hubs(alive, acc, hub, hub_kind, now, covered)
            # Sharing a template or a card is deliberate; sharing a proxy block or the minutes an
            # account was created in can be circumstance. An account joins through one deliberate
            # risky hub, or through two circumstantial ones; for the accounts no template or
            # card links, a block counts among the accounts of risky creation cohorts that
            # share it (`_cohort_blocks`).
            on = risky[hub]
            deliberate = (hub_kind[hub] == _TEMPLATE) | (hub_kind[hub] == _PAYMENT)
            n_deliberate = np.bincount(acc[on & deliberate], minlength=alive.size)
            n_plain = np.bincount(acc[on & ~deliberate], minlength=alive.size)
            on |= self._cohort_blocks(alive, acc, hub, hub_kind, risky, n_deliberate == 0)
            n_other = np.bincount(acc[on & ~deliberate], minlength=alive.size)
            eligible = (n_deliberate >= 1) | (n_other >= 2)
            keep = on & eligible[acc]
            # Accounts only those blocks made eligible add to what links them; through their
            # cohort they do not join groups that templates or cards link (a hydra's accounts
            # in the minutes two crews were created in would make the crews one).
            added = eligible & (n_deliberate == 0) & (n_plain < 2)
            on_cohort = keep & (hub_kind[hub] == _COHORT)
            chosen_on = np.bincount(
                hub[on_cohort & (n_deliberate[acc] > 0)], minlength=hub_kind.size
            )
            keep &= ~(on_cohort & added[acc] & (chosen_on[hub] > 0))
            # A shared prompt set adds the accounts that behaviour does not link, through its
            # templates alone: it never joins two groups (a swarm's accounts that share a proxy
            # block with a class's students do not bring the class into the swarm's campaign).
            prompt_set = np.where(
                risky, -1, self._prompt_set_hubs(alive, acc, hub, hub_kind, shared_w)
            )
            if (prompt_set >= 0).any():
                # ... and each account only through the set most of its templates are in (ties:
                # the first), so one account that draws on two sets does not make them one.
                on_set = np.flatnonzero((prompt_set[hub] >= 0) & ~eligible[acc])
                p_acc, p_set, inverse = _pairs(acc[on_set], prompt_set[hub[on_set]])
                count = np.bincount(inverse, minlength=p_acc.size)
                main_acc, main_set, _ = _top_per_group(p_acc, p_set, count, 1)
                main = np.full(alive.size, -1, dtype=np.int64)
                main[main_acc] = main_set
                keep[on_set] = prompt_set[hub[on_set]] == main[acc[on_set]]
            keep = _in_numbers(alive.size, acc, hub, keep, deliberate)
            a, h = acc[keep], hub[keep]
            # Members that contradict their campaign leave it, and with them the links they made:
            # what they alone held together falls apart. Judged once, against the campaign as it
            # was linked: judged again against what is left, whose pooled share rises with every
            # member that leaves, a campaign whose accounts differ by degree would peel away.
            if a.size:
                label, linked = _linked(alive.size, a, h)
                clusters, dropped = self._clusters(alive, label, linked, active_rows)
                if dropped.size:
                    stay = ~np.isin(a, dropped)
                    a, h = a[stay], h[stay]
                    label, linked = _linked(alive.size, a, h)
                    clusters, _ = self._clusters(alive, label, linked, active_rows, check=False)
                chosen = (hub_kind[h] == _TEMPLATE) | (hub_kind[h] == _PAYMENT)
                choice_label, choice_linked = _linked(alive.size, a[chosen], h[chosen])
        names = self._name(clusters, now)
        return self._describe(
            clusters, names, active_rows, acc, hub, hub_kind, alive, now,
            choice_label, choice_linked, covered, shared_w,
        )  # fmt: skip

    def _clusters(
        self,
        alive: npt.NDArray[np.intp],
        label: I64,
        linked: npt.NDArray[np.bool_],
        active_rows: npt.NDArray[np.intp],
        check: bool = True,
    ) -> tuple[list[npt.NDArray[np.intp]], npt.NDArray[np.intp]]:
        """Components with enough consistent members (all members, without ``check``), at least
        one of them active now; and the positions (in ``alive``) of the members left out."""
        is_active = np.zeros(len(self.keys), dtype=np.bool_)
        is_active[active_rows] = True
        keep = np.flatnonzero(linked)
        order = keep[np.argsort(label[keep], kind="stable")]
        lab = label[order]
        bounds = np.flatnonzero(np.diff(lab)) + 1
        out = []
        dropped = []
        for part in np.split(order, bounds):
            if part.size < self.config.min_members:
                continue
            rows = alive[part]
            ok = np.ones(rows.size, dtype=np.bool_)
            if check:
                none = np.zeros(1, dtype=np.float64)
                share, strength = _pooled(
                    self.hits[rows].sum(axis=0, keepdims=True).astype(np.float64),
                    self.trials[rows].sum(axis=0, keepdims=True).astype(np.float64),
                    none,
                    none,
                )
                ok = self._consistent(rows, share[0], strength[0])
            dropped.append(part[~ok])
            rows = rows[ok]
            if rows.size >= self.config.min_members and is_active[rows].any():
                out.append(np.sort(rows))
        left_out = np.concatenate(dropped) if dropped else np.zeros(0, dtype=np.intp)
        return out, left_out

    def _name(self, clusters: list[npt.NDArray[np.intp]], now_ms: int) -> list[str]:
        """Stable ids: a cluster inherits the previous campaign most of its members were in."""
        claims: list[tuple[int, int, str | None]] = []
        for c, members in enumerate(clusters):
            previous = self.campaign[members]
            previous = previous[previous >= 0]
            best, count = None, 0
            if previous.size:
                values, counts = np.unique(previous, return_counts=True)
                j = int(np.argmax(counts))  # ties: the older campaign (smaller code)
                best, count = self._names[int(values[j])], int(counts[j])
            if count < self.config.inherit_share * members.size:
                best = None
            claims.append((c, count, best))
        names: list[str | None] = [None] * len(clusters)
        taken: set[str] = set()
        for c, _count, best in sorted(claims, key=lambda x: (-x[1], x[0])):
            if best is not None and best not in taken:
                names[c] = best
                taken.add(best)
        out = []
        for c, members in enumerate(clusters):
            name = names[c]
            if name is None:
                seed = "|".join(sorted(self.keys.ids(members))[:5]) + f"|{now_ms}"
                name = "campaign-" + hashlib.sha256(seed.encode()).hexdigest()[:12]
            out.append(name)
        return out

    def _code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def _describe(
        self,
        clusters: list[npt.NDArray[np.intp]],
        names: list[str],
        active_rows: npt.NDArray[np.intp],
        acc: I64,
        hub: I64,
        hub_kind: I64,
        alive: npt.NDArray[np.intp],
        now_ms: int,
        choice_label: I64,
        choice_linked: npt.NDArray[np.bool_],
        covered: int,
        shared_w: F64,
    ) -> CampaignWindows:
        n = len(clusters)
        r = len(RATES)
        hits, trials = np.zeros((n, r)), np.zeros((n, r))
        new_sum, known_n = np.zeros(n), np.zeros(n)
        novelty, pooled_requests = np.zeros(n), np.zeros(n)
        active = np.zeros(n, dtype=np.int64)
        counts = np.zeros((n, 3), dtype=np.int64)  # shared templates, payments, blocks
        coord_share = np.zeros((n, len(COORDINATION)))
        new_accounts = np.full(n, np.nan)
        prompt_share = np.zeros(n)
        is_active = np.zeros(len(self.keys), dtype=np.bool_)
        is_active[active_rows] = True
        position = np.full(len(self.keys), -1, dtype=np.int64)
        position[alive] = np.arange(alive.size)
        codes = np.array([self._code(name) for name in names], dtype=np.int64)
        # An account keeps its campaign through windows in which the campaign is not linked (it
        # paused, or its hubs dipped under the bar): the campaign comes back under the same id,
        # with its strikes. It leaves when the campaign is linked without it, when it joins
        # another, or after ``horizon_ms`` without requests.
        new_campaign = self.campaign.copy()
        new_campaign[np.isin(new_campaign, codes)] = -1
        new_campaign[self.last_ms <= now_ms - self.config.horizon_ms] = -1  # gone quiet too long
        members_out: list[list[str]] = []
        joined_out: list[list[str]] = []
        circumstantial_out: list[list[str]] = []
        unlike_out: list[list[str]] = []
        for c, rows in enumerate(clusters):
            members_out.append(self.keys.ids(rows))
            moved = rows[self.campaign[rows] != codes[c]]
            joined_out.append(self.keys.ids(moved))
            # The campaign's core: its largest group of members linked by templates or cards
            # (ties: the smaller label). Members outside it share only blocks or creation times.
            pos = position[rows]
            tied = choice_linked[pos]
            core = np.zeros(rows.size, dtype=np.bool_)
            if tied.any():
                labels, sizes = np.unique(choice_label[pos[tied]], return_counts=True)
                core = tied & (choice_label[pos] == labels[int(np.argmax(sizes))])
            circumstantial_out.append(self.keys.ids(rows[~core]))
            new_campaign[rows] = codes[c]
            active[c] = int(is_active[rows].sum())
            hits[c] = self.hits[rows].sum(axis=0)
            trials[c] = self.trials[rows].sum(axis=0)
            pooled_requests[c] = float(self.requests[rows].sum())
            if pooled_requests[c] > 0:
                prompt_share[c] = float(shared_w[position[rows]].sum()) / pooled_requests[c]
            novelty[c] = float(self.novelty[rows].mean())
            created = self.created_ms[rows]
            known = created >= 0
            if known.any():
                age = np.maximum(now_ms - created[known], 0)
                new_sum[c] = float(np.exp(-age / (7 * DAY_MS)).sum())
                known_n[c] = float(known.sum())
                new_accounts[c] = float((age < 7 * DAY_MS).mean())
            coord_share[c, 0] = np.log2(rows.size)
            # Hubs at least two members share, by kind.
            mine = np.isin(acc, position[rows])
            h, per = np.unique(hub[mine], return_counts=True)
            shared = h[per >= 2]
            counts[c] = np.bincount(hub_kind[shared], minlength=3)[:3]
            pay = self.payment[rows]
            pay = pay[pay != 0]
            if pay.size:
                _, cnt = np.unique(pay, return_counts=True)
                coord_share[c, 1] = float(cnt[cnt >= 2].sum() / pay.size)
        self.campaign = new_campaign
        share, strength = _pooled(hits, trials, new_sum, known_n)
        for c, rows in enumerate(clusters):
            unlike = self._unlike(rows, share[c], strength[c])
            unlike_out.append(self.keys.ids(rows[unlike]))
        if n:
            group = np.concatenate([np.full(r.size, c) for c, r in enumerate(clusters)])
            rows_all = np.concatenate(clusters)
            synchrony = _synchrony(
                group, self.seconds[rows_all], self.last_ms[rows_all] == now_ms, n, covered
            )
        else:
            synchrony = np.zeros(0)
        coord_strength = (
            np.column_stack([b.strength(coord_share[:, j]) for j, b in enumerate(COORDINATION)])
            if n
            else np.zeros((0, len(COORDINATION)))
        )
        prompt_set = prompt_set_strength(
            counts[:, _TEMPLATE].astype(np.float64),
            np.array([r.size for r in clusters], dtype=np.float64),
            prompt_share,
        )
        return CampaignWindows(
            end_ms=now_ms,
            ids=names,
            members=members_out,
            joined=joined_out,
            circumstantial=circumstantial_out,
            unlike=unlike_out,
            active=active,
            share=share,
            strength=strength,
            evidence=strength @ _WEIGHTS
            + SYNCHRONIZED.strength(synchrony) * SYNCHRONIZED.weight
            + prompt_set * PROMPT_SET[0].weight,
            synchrony=synchrony,
            coordination=coord_strength @ np.array([b.weight for b in COORDINATION]),
            coordination_share=coord_share,
            novelty=novelty,
            templates=counts[:, _TEMPLATE],
            payments=counts[:, _PAYMENT],
            blocks=counts[:, _BLOCK],
            new_accounts=new_accounts,
            pooled_requests=pooled_requests,
            prompt_set=prompt_set,
            prompt_share=prompt_share,
        )
