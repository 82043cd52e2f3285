from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import UsageEvent, ip_block
from models.evidence import (
    ACCOUNT_BEHAVIOURS,
    BLOCK_BEHAVIOURS,
    RATES,
    RECENT_BLOCKS,
    RECENT_PROMPTS,
    TEMPLATE_BITS,
    Behaviour,
    EvidenceMemory,
    WindowEvidence,
    lower_bound,
    stable_hash,
    upper_bound,
    window_evidence,
)
from models.windows import ClosedWindow, Windower

MIN = 60_000
DAY = 86_400_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN  # a minute boundary
ACC = {b.name: j for j, b in enumerate(ACCOUNT_BEHAVIOURS)}
BLK = {b.name: j for j, b in enumerate(BLOCK_BEHAVIOURS)}


def event(
    i: int,
    ts: int,
    account: str = "a",
    block: str = "10.0.0.0/24",
    *,
    cot: float | None = None,
    inp: int = 400,
    out: int = 300,
    fp: int | None = None,
    created: int | None = None,
    model: str = "m",
) -> UsageEvent:
    ip = block.split("/")[0][:-1] + "1"
    return UsageEvent(
        f"{account}-{ts}-{i}",
        ts,
        account,
        ip,
        block,
        model,
        inp,
        out,
        prompt_fingerprint=fp,
        cot_score=cot,
        account_created_ms=created,
    )


def window(events: Iterable[UsageEvent]) -> ClosedWindow:
    win = Windower(MIN, 0)
    for e in events:
        assert win.add(e)
    [w] = win.flush()
    return w


class Accounts:
    """Evidence of accounts over successive windows, with table rows as a detector keeps them."""

    def __init__(self, kind: str = "account", **memory: float) -> None:
        self.kind = kind
        self.memory = EvidenceMemory(capacity=4, **memory)
        self.rows: dict[str, int] = {}
        self.answers_for_reasoning = False

    def window(
        self,
        events: Iterable[UsageEvent],
        new_models: tuple[str, ...] = (),
        reference: float = np.nan,
    ) -> tuple[ClosedWindow, WindowEvidence, list[str]]:
        w = window(events)
        names = w.accounts if self.kind == "account" else w.blocks
        g = w.account if self.kind == "account" else w.block
        for a in names:
            self.rows.setdefault(a, len(self.rows))
        if len(self.rows) > self.memory.capacity:
            self.memory.grow(2 * len(self.rows))
        rows = np.array([self.rows[a] for a in names], dtype=np.intp)
        is_new = np.array([m in new_models for m in w.models], dtype=np.bool_)
        ev = window_evidence(
            self.kind, w, g, rows, self.memory, is_new, reference, self.answers_for_reasoning
        )
        return w, ev, list(names)


def strength_of(ev: WindowEvidence, names: list[str], entity: str) -> dict[str, float]:
    behaviours = ACCOUNT_BEHAVIOURS if ev.strength.shape[1] == len(ACCOUNT_BEHAVIOURS) else None
    behaviours = behaviours or BLOCK_BEHAVIOURS
    row = ev.strength[names.index(entity)]
    return {b.name: float(row[j]) for j, b in enumerate(behaviours)}


# -- Wilson bounds -------------------------------------------------------------------------------


shares = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
counts = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(shares, counts)
def test_bounds_bracket_the_share(share: float, n: float) -> None:
    s, t = np.array([share]), np.array([n])
    lo, hi = float(lower_bound(s, t)[0]), float(upper_bound(s, t)[0])
    assert 0.0 <= lo <= share + 1e-12
    assert share - 1e-12 <= hi <= 1.0


@settings(max_examples=200, deadline=None)
@given(shares, st.floats(min_value=0.5, max_value=1e5))
def test_more_trials_tighten_both_bounds(share: float, n: float) -> None:
    s = np.full(2, share)
    t = np.array([n, 4 * n])
    lo, hi = lower_bound(s, t), upper_bound(s, t)
    assert lo[1] >= lo[0] - 1e-12
    assert hi[1] <= hi[0] + 1e-12


def test_lower_bound_grows_with_trials_at_a_fixed_share() -> None:
    n = np.array([1.0, 2, 5, 10, 20, 50, 100, 1_000, 100_000])
    lo = lower_bound(np.full(n.size, 0.8), n)
    assert np.all(np.diff(lo) > 0)
    assert lo[0] < 0.3 and lo[-1] == pytest.approx(0.8, abs=0.005)


def test_no_trials_prove_nothing() -> None:
    zero = np.zeros(3)
    assert lower_bound(np.array([0.0, 0.5, 1.0]), zero).tolist() == [0.0, 0.0, 0.0]
    assert upper_bound(np.array([0.0, 0.5, 1.0]), zero).tolist() == [1.0, 1.0, 1.0]


def test_bounds_match_the_wilson_formula() -> None:
    z = 1.6448536269514722
    share, n = 0.3, 40.0
    centre = share + z * z / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    assert lower_bound(np.array([share]), np.array([n]))[0] == pytest.approx(
        (centre - spread) / (1 + z * z / n)
    )
    assert upper_bound(np.array([share]), np.array([n]))[0] == pytest.approx(
        (centre + spread) / (1 + z * z / n)
    )


@pytest.mark.parametrize(("p", "n"), [(0.3, 50), (0.1, 200), (0.5, 20), (0.8, 100)])
def test_one_sided_bounds_miss_the_true_share_about_5_percent_of_the_time(p: float, n: int) -> None:
    rng = np.random.default_rng(1)
    k = rng.binomial(n, p, size=20_000)
    trials = np.full(k.size, float(n))
    assert 0.02 < float((lower_bound(k / n, trials) > p).mean()) < 0.09
    assert 0.02 < float((upper_bound(k / n, trials) < p).mean()) < 0.09


def test_strength_is_linear_between_onset_and_full_and_clipped() -> None:
    b = Behaviour("x", "x", onset=0.2, full=0.6)
    got = b.strength(np.array([-1.0, 0.0, 0.2, 0.3, 0.4, 0.6, 0.9, 2.0]))
    assert got.tolist() == pytest.approx([0, 0, 0, 0.25, 0.5, 1, 1, 1])


# -- behaviours over windows ----------------------------------------------------------------------


def extraction_window(minute: int, account: str = "x", n: int = 30) -> list[UsageEvent]:
    """Reasoning prompts, long answers to short prompts, a new /24 per request, a fresh account."""
    start = T0 + minute * MIN
    return [
        event(
            i,
            start + i * (MIN // n),
            account,
            f"100.{minute % 250}.{i}.0/24",
            cot=0.9,
            inp=120,
            out=2_000,
            created=T0 - 3_600_000,
        )
        for i in range(n)
    ]


def ordinary_window(
    minute: int, rng: np.random.Generator, account: str = "o", n: int = 6
) -> list[UsageEvent]:
    """A person's use: little reasoning, balanced answers, one address, new prompts, old account."""
    start = T0 + minute * MIN
    return [
        event(
            i,
            start + int(rng.integers(MIN)),
            account,
            "192.0.2.0/24",
            cot=float(rng.uniform(0.0, 0.3)),
            inp=int(rng.integers(200, 2_000)),
            out=int(rng.integers(100, 700)),
            fp=int(rng.integers(2**63)),
            created=T0 - 400 * DAY,
        )
        for i in range(n)
    ]


def test_sustained_extraction_reaches_full_strength() -> None:
    acc = Accounts()
    strengths = []
    for minute in range(5):
        _, ev, names = acc.window(extraction_window(minute))
        strengths.append(strength_of(ev, names, "x"))
    last = strengths[-1]
    for name in ("reasoning_elicitation", "output_harvesting", "address_rotation"):
        assert last[name] == pytest.approx(1.0, abs=1e-6), name
        # evidence builds up: never weaker than in the first window
        assert strengths[0][name] <= last[name]
    assert last["disposable_account"] == pytest.approx(1.0)
    assert last["grading"] == 0.0 and last["templated_prompts"] == 0.0
    assert float(ev.evidence[0]) == pytest.approx(1.0 + 0.5 + 1.0 + 0.5)
    assert float(ev.absolute[0]) == pytest.approx(float(ev.evidence[0]))


def test_ordinary_use_has_no_evidence() -> None:
    rng = np.random.default_rng(2)
    acc = Accounts()
    for minute in range(10):
        _, ev, names = acc.window(ordinary_window(minute, rng))
        assert strength_of(ev, names, "o") == dict.fromkeys(strength_of(ev, names, "o"), 0.0)
        assert float(ev.evidence[0]) == 0.0


def test_without_a_classifier_verdict_the_answer_stands_in_only_when_told() -> None:
    """A gateway that sends no cot_score: twenty requests, fifteen of them long answers to short
    prompts. Read for reasoning from the answers, they are reasoning in 15 of 20; told not to,
    nothing is known of reasoning. A request that carries a verdict is read from it either way."""

    def requests(minute: int) -> list[UsageEvent]:
        t = T0 + minute * MIN
        out = [event(i, t + i, "a", out=2_000 if i % 4 else 100, inp=100) for i in range(20)]
        out += [event(i, t + 100 + i, "b", cot=0.1, out=2_000, inp=100) for i in range(20)]
        return out

    for told, reasoning_a in ((True, 15.0), (False, 0.0)):
        acc = Accounts()
        acc.answers_for_reasoning = told
        _, ev, names = acc.window(requests(0))
        a, b = names.index("a"), names.index("b")
        assert ev.window_hits[a, 0] == reasoning_a
        assert ev.window_trials[a, 0] == (20.0 if told else 0.0)
        assert (ev.window_hits[b, 0], ev.window_trials[b, 0]) == (0.0, 20.0)  # its verdicts
        assert (ev.window_hits[a, 2], ev.window_hits[b, 2]) == (15.0, 20.0)  # as ever
        assert (strength_of(ev, names, "a")["reasoning_elicitation"] > 0.5) == told


def test_the_verdict_threshold_is_the_classifiers_operating_point() -> None:
    """A classifier calibrated low scores reasoning prompts around 0.35: at the default 0.5 they
    are not reasoning, at the deployment's own operating point of 0.3 they are; ordinary prompts
    (0.05) are not reasoning at either, and a verdict exactly at the threshold counts."""
    t = T0
    events = [event(i, t + i, "a", cot=0.35) for i in range(30)]
    events += [event(i, t + 100 + i, "b", cot=0.05) for i in range(30)]
    events += [event(i, t + 200 + i, "c", cot=0.3) for i in range(30)]
    for verdict, hits_a, hits_c in ((0.5, 0.0, 0.0), (0.3, 30.0, 30.0), (0.36, 0.0, 0.0)):
        w = window(events)
        rows = np.arange(len(w.accounts), dtype=np.intp)
        mem = EvidenceMemory(capacity=4)
        ev = window_evidence(
            "account", w, w.account, rows, mem, np.zeros(len(w.models), bool),
            reasoning_verdict=verdict,
        )  # fmt: skip
        a, b, c = (list(w.accounts).index(x) for x in "abc")
        assert ev.window_hits[a, 0] == hits_a and ev.window_trials[a, 0] == 30.0
        assert ev.window_hits[b, 0] == 0.0
        assert ev.window_hits[c, 0] == hits_c
        assert (ev.strength[a, ACC["reasoning_elicitation"]] > 0.5) == (hits_a > 0)


def test_two_requests_prove_little_two_hundred_prove_a_lot() -> None:
    few, many = Accounts(), Accounts()
    _, ev_few, names = few.window(extraction_window(0, n=2))
    s_few = strength_of(ev_few, names, "x")["reasoning_elicitation"]
    _, ev_many, names = many.window(extraction_window(0, n=200))
    s_many = strength_of(ev_many, names, "x")["reasoning_elicitation"]
    # the same share (every prompt) in both
    assert ev_few.share[0, ACC["reasoning_elicitation"]] == 1.0
    assert ev_many.share[0, ACC["reasoning_elicitation"]] == 1.0
    assert s_few < 0.5 and s_many == 1.0


def test_counts_fade_with_the_half_life() -> None:
    half_life = 20 * MIN
    acc = Accounts(half_life_ms=half_life)
    acc.window(extraction_window(0, n=40))  # window [T0, T0 + 1 min)
    assert acc.memory.requests[0] == pytest.approx(40)
    rng = np.random.default_rng(3)
    # one ordinary request exactly one half-life after the first window's end
    _, ev, _ = acc.window(ordinary_window(20, rng, account="x", n=1))
    assert float(ev.requests[0]) == pytest.approx(40 * 0.5 + 1, rel=1e-5)
    r = RATES.index("reasoning_elicitation")
    assert float(acc.memory.hits[0, r]) == pytest.approx(20.0, rel=1e-5)
    assert float(acc.memory.trials[0, r]) == pytest.approx(21.0, rel=1e-5)
    # five half-lives later, the old behaviour weighs 1/32 of what it did
    _, ev, _ = acc.window(ordinary_window(120, rng, account="x", n=1))
    assert float(acc.memory.hits[0, r]) == pytest.approx(20.0 / 32, rel=1e-4)


def test_old_evidence_fades_under_ordinary_use() -> None:
    rng = np.random.default_rng(4)
    acc = Accounts()
    for minute in range(3):
        _, ev, names = acc.window(extraction_window(minute, account="x"))
    assert strength_of(ev, names, "x")["reasoning_elicitation"] == 1.0
    for minute in range(3, 120):
        _, ev, names = acc.window(ordinary_window(minute, rng, account="x", n=4))
    after = strength_of(ev, names, "x")
    assert after["reasoning_elicitation"] == 0.0
    assert after["output_harvesting"] == 0.0


def test_evidence_rests_on_at_most_max_requests() -> None:
    acc = Accounts(max_requests=100.0)
    for minute in range(3):
        _, ev, _ = acc.window(extraction_window(minute, n=500))
        assert float(ev.requests[0]) == pytest.approx(100.0, rel=1e-5)
        assert float(acc.memory.trials[0].max()) <= 100.0 + 1e-3
    assert ev.share[0, ACC["reasoning_elicitation"]] == pytest.approx(1.0)


def test_each_entity_of_a_window_gets_its_own_evidence() -> None:
    rng = np.random.default_rng(5)
    acc = Accounts()
    # rows in the memory deliberately not in window order
    acc.rows.update({"pad0": 0, "o": 1, "pad1": 2, "x": 3})
    for minute in range(4):
        _, ev, names = acc.window(
            extraction_window(minute, account="x") + ordinary_window(minute, rng, account="o")
        )
    assert strength_of(ev, names, "x")["reasoning_elicitation"] == 1.0
    assert strength_of(ev, names, "x")["address_rotation"] == 1.0
    assert sum(strength_of(ev, names, "o").values()) == 0.0
    assert acc.memory.requests[[0, 2]].tolist() == [0.0, 0.0]  # untouched rows


# -- address rotation: the ring of recent blocks ---------------------------------------------------


def cycling(minute: int, n_blocks: int, n: int = 40, account: str = "p") -> list[UsageEvent]:
    start = T0 + minute * MIN
    return [
        event(i, start + i * 1000, account, f"172.16.{i % n_blocks}.0/24", created=T0 - DAY * 90)
        for i in range(n)
    ]


def rotation_counts(ev: WindowEvidence) -> tuple[float, float]:
    r = RATES.index("address_rotation")
    return float(ev.window_hits[0, r]), float(ev.window_trials[0, r])


def test_one_block_is_not_rotation() -> None:
    acc = Accounts()
    _, ev, _ = acc.window(cycling(0, n_blocks=1))
    # the first request has nothing to compare with
    assert rotation_counts(ev) == (0.0, 39.0)
    assert ev.strength[0, ACC["address_rotation"]] == 0.0


def test_a_handful_of_blocks_is_remembered_a_pool_is_not() -> None:
    # Home, office, carrier, cafe: RECENT_BLOCKS blocks in turn are only new the first time.
    acc = Accounts()
    _, ev, _ = acc.window(cycling(0, n_blocks=RECENT_BLOCKS))
    assert rotation_counts(ev) == (RECENT_BLOCKS - 1, 39.0)
    # ... and the ring carries over to the next window: nothing new there.
    _, ev, _ = acc.window(cycling(1, n_blocks=RECENT_BLOCKS))
    assert rotation_counts(ev) == (0.0, 40.0)
    assert ev.strength[0, ACC["address_rotation"]] == 0.0

    # One block more than the ring holds: every request comes from a block not among the last four.
    pool = Accounts()
    _, ev, _ = pool.window(cycling(0, n_blocks=RECENT_BLOCKS + 1))
    assert rotation_counts(ev) == (39.0, 39.0)
    _, ev, _ = pool.window(cycling(1, n_blocks=RECENT_BLOCKS + 1))
    assert rotation_counts(ev) == (40.0, 40.0)
    assert ev.strength[0, ACC["address_rotation"]] == 1.0


def ipv6_requests(minute: int, addresses: list[str], account: str = "v6") -> list[UsageEvent]:
    start = T0 + minute * MIN
    return [
        UsageEvent(f"{account}-{minute}-{i}", start + i * 1000, account, ip, ip_block(ip), "m",
                   400, 300, account_created_ms=T0 - DAY * 90)
        for i, ip in enumerate(addresses)
    ]  # fmt: skip


def test_ipv6_rotation_is_counted_per_64_inside_one_48() -> None:
    # A proxy that hands out a fresh address from its /48 with every request stays in one IP
    # block, but moves to another /64 (another subnet) every time: rotation.
    rng = np.random.default_rng(7)
    proxy = [
        f"2001:db8:7:{rng.integers(0, 1 << 16):x}:{rng.integers(1, 1 << 16):x}::1"
        for _ in range(40)
    ]
    assert len({ip_block(ip) for ip in proxy}) == 1
    acc = Accounts()
    acc.window(ipv6_requests(0, proxy))
    _, ev, _ = acc.window(ipv6_requests(1, proxy[::-1]))
    assert rotation_counts(ev)[0] >= 36.0
    assert ev.strength[0, ACC["address_rotation"]] == 1.0

    # A laptop on home IPv6: privacy addresses change, the /64 of the home network does not.
    home = [f"2001:db8:9:1:{rng.integers(1, 1 << 16):x}::{i + 1:x}" for i in range(40)]
    acc = Accounts()
    acc.window(ipv6_requests(0, home))
    _, ev, _ = acc.window(ipv6_requests(1, home))
    assert rotation_counts(ev) == (0.0, 40.0)
    assert ev.strength[0, ACC["address_rotation"]] == 0.0


@pytest.mark.parametrize("per_window", [1, 2, 3, 7])
@pytest.mark.parametrize("n_blocks", [1, 2, RECENT_BLOCKS, RECENT_BLOCKS + 1, 9])
def test_rotation_does_not_depend_on_how_requests_fall_into_windows(
    per_window: int, n_blocks: int
) -> None:
    # The same sequence of blocks, cut into windows of a few requests: the ring, partly filled
    # or not, must count exactly what one long window counts.
    sequence = [f"172.16.{i % n_blocks}.0/24" for i in range(42)]
    acc = Accounts()
    hits = trials = 0.0
    for start in range(0, len(sequence), per_window):
        chunk = sequence[start : start + per_window]
        minute = start // per_window
        events = [event(i, T0 + minute * MIN + i, "p", b) for i, b in enumerate(chunk)]
        _, ev, _ = acc.window(events)
        h, t = rotation_counts(ev)
        hits, trials = hits + h, trials + t
    _, whole, _ = Accounts().window([event(i, T0 + i, "p", b) for i, b in enumerate(sequence)])
    assert (hits, trials) == rotation_counts(whole)
    expected_hits = n_blocks - 1 if n_blocks <= RECENT_BLOCKS else len(sequence) - 1
    assert (hits, trials) == (expected_hits, len(sequence) - 1)


def test_ring_remembers_the_latest_blocks_across_windows() -> None:
    acc = Accounts()
    acc.window(cycling(0, n_blocks=1))  # block 172.16.0.0/24
    _, ev, _ = acc.window(cycling(1, n_blocks=1, n=3))  # the same block again
    assert rotation_counts(ev) == (0.0, 3.0)
    assert acc.memory.n_blocks[0] == RECENT_BLOCKS
    expected = stable_hash(["172.16.0.0/24"]).view(np.uint64)[0]
    assert set(acc.memory.blocks[0].tolist()) == {int(expected)}


def test_reset_forgets_an_entity() -> None:
    acc = Accounts()
    for minute in range(3):
        acc.window(extraction_window(minute))
    acc.memory.reset(np.array([0]))
    assert acc.memory.requests[0] == 0 and acc.memory.n_blocks[0] == 0
    assert not acc.memory.hits[0].any() and not acc.memory.prompts[0].any()
    _, ev, _ = acc.window(cycling(10, n_blocks=1, n=5, account="x"))
    assert float(ev.requests[0]) == 5.0
    assert rotation_counts(ev) == (0.0, 4.0)  # the first request again has nothing to compare


def test_grow_keeps_what_is_remembered() -> None:
    mem = EvidenceMemory(capacity=2)
    mem.hits[1] = 3.0
    mem.blocks[1, 0] = 7
    mem.n_blocks[1] = 1
    mem.grow(5)
    assert mem.capacity == 5
    assert mem.hits.shape == (5, len(RATES)) and mem.prompts.shape[0] == 5
    assert mem.n_prompts.shape == (5,) and mem.n_blocks.shape == (5,)
    assert mem.hits[1].tolist() == [3.0] * len(RATES) and mem.blocks[1, 0] == 7
    assert not mem.hits[2:].any()
    mem.grow(3)  # never shrinks
    assert mem.capacity == 5
    assert mem.nbytes_per_entity() < 200


# -- the other behaviours --------------------------------------------------------------------------


def test_templated_prompts_are_near_duplicates_not_reruns() -> None:
    rng = np.random.default_rng(6)
    base = int(rng.integers(2**63))

    def prompts(kind: str) -> list[UsageEvent]:
        out = []
        for i in range(40):
            if kind == "template":  # the same prompt, slots filled differently
                flips = rng.choice(64, size=4, replace=False)
                fp = base ^ sum(1 << int(b) for b in flips)
            elif kind == "rerun":  # a benchmark run twice, verbatim
                fp = base
            else:
                fp = int(rng.integers(2**63))
            out.append(event(i, T0 + i * 1000, kind, fp=fp, created=T0 - 90 * DAY))
        return out

    acc = Accounts()
    _, ev, names = acc.window(prompts("template") + prompts("rerun") + prompts("fresh"))
    j = ACC["templated_prompts"]
    share = {n: float(ev.share[names.index(n), j]) for n in names}
    assert share["template"] == 1.0
    assert share["rerun"] == 0.0
    assert share["fresh"] == 0.0
    assert strength_of(ev, names, "template")["templated_prompts"] == 1.0
    assert TEMPLATE_BITS < 16


@pytest.mark.parametrize("per_window", [1, 3, 8, 13])
def test_templated_prompts_do_not_depend_on_how_requests_fall_into_windows(
    per_window: int,
) -> None:
    rng = np.random.default_rng(7)
    bases = [int(b) for b in rng.integers(0, 2**63, size=6)]
    fps = []
    for _ in range(60):
        if rng.random() < 0.3:
            fps.append(int(rng.integers(2**63)))
        else:  # a variant of one of six templates: some within the last 8 prompts, some not
            flips = rng.choice(64, size=3, replace=False)
            fps.append(bases[int(rng.integers(6))] ^ sum(1 << int(b) for b in flips))
    r = RATES.index("templated_prompts")
    acc = Accounts()
    hits = trials = 0.0
    for start in range(0, len(fps), per_window):
        minute = start // per_window
        chunk = fps[start : start + per_window]
        _, ev, _ = acc.window([event(i, T0 + minute * MIN + i, fp=f) for i, f in enumerate(chunk)])
        hits += float(ev.window_hits[0, r])
        trials += float(ev.window_trials[0, r])
    _, whole, _ = Accounts().window([event(i, T0 + i, fp=f) for i, f in enumerate(fps)])
    assert (hits, trials) == (float(whole.window_hits[0, r]), float(whole.window_trials[0, r]))
    assert trials == len(fps) - 1 and 0 < hits < trials
    # ... and exactly what comparing each prompt with the 8 before it by hand gives
    near = [
        any(
            0 < bin(fps[i] ^ fps[j]).count("1") <= TEMPLATE_BITS
            for j in range(max(i - RECENT_PROMPTS, 0), i)
        )
        for i in range(len(fps))
    ]
    assert hits == sum(near)


def test_grading_and_new_model_rush() -> None:
    events = [
        event(i, T0 + i * 1000, "grader", inp=4_000, out=60, model="old", created=T0 - 90 * DAY)
        for i in range(40)
    ] + [event(i, T0 + i * 1000, "rusher", model="new-1", created=T0 - 90 * DAY) for i in range(40)]
    acc = Accounts()
    _, ev, names = acc.window(events, new_models=("new-1",))
    grader, rusher = strength_of(ev, names, "grader"), strength_of(ev, names, "rusher")
    assert grader["grading"] == 1.0 and grader["new_model_rush"] == 0.0
    assert rusher["new_model_rush"] == 1.0 and rusher["grading"] == 0.0


@pytest.mark.parametrize(("age_ms", "expected"), [(3_600_000, 1.0), (60 * DAY, 0.0), (None, 0.0)])
def test_disposable_account(age_ms: int | None, expected: float) -> None:
    created = None if age_ms is None else T0 - age_ms
    events = [event(i, T0 + i * 1000, created=created) for i in range(5)]
    _, ev, names = Accounts().window(events)
    assert strength_of(ev, names, "a")["disposable_account"] == pytest.approx(expected, abs=1e-3)
    share = ev.share[0, ACC["disposable_account"]]
    assert (
        np.isnan(share)
        if age_ms is None
        else share == pytest.approx(np.exp(-age_ms / 7 / DAY), rel=1e-3)
    )


def test_a_creation_time_sent_once_is_remembered_in_later_windows() -> None:
    """A producer that sends ``account_created_at`` on some events only (one gateway of several
    does) must not make a fresh account's evidence flap from window to window; a reused row
    forgets it."""
    acc = Accounts()
    first = [event(i, T0 + i * 1000, created=T0 - 3_600_000 if i == 0 else None) for i in range(5)]
    later = [event(i, T0 + MIN + i * 1000) for i in range(5)]
    _, ev1, names = acc.window(first)
    _, ev2, _ = acc.window(later)
    assert strength_of(ev1, names, "a")["disposable_account"] == pytest.approx(1.0, abs=1e-3)
    assert strength_of(ev2, names, "a")["disposable_account"] == pytest.approx(1.0, abs=1e-3)
    acc.memory.reset(np.array([acc.rows["a"]]))
    _, ev3, _ = acc.window([event(i, T0 + 2 * MIN + i * 1000) for i in range(5)])
    assert strength_of(ev3, names, "a")["disposable_account"] == 0.0


def test_memory_from_before_the_creation_time_was_kept_restores_as_unknown() -> None:
    import pickle

    mem = EvidenceMemory(capacity=3)
    state = dict(mem.__dict__)
    del state["created_ms"]
    old = EvidenceMemory.__new__(EvidenceMemory)
    old.__setstate__(state)
    assert pickle.loads(pickle.dumps(old)).created_ms.tolist() == [np.iinfo(np.int64).max] * 3


def test_output_volume_is_relative_and_outside_the_evidence_sum() -> None:
    events = [event(i, T0 + i * 1000, out=1_000) for i in range(32)]  # 32,000 output tokens
    acc = Accounts()
    _, unknown, names = acc.window(events)  # no reference yet
    assert strength_of(unknown, names, "a")["output_volume"] == 0.0
    for reference, expected in ((2_000.0, 1.0), (8_000.0, 0.0), (4_000.0, 0.5)):
        _, ev, names = Accounts().window(events, reference=reference)
        assert strength_of(ev, names, "a")["output_volume"] == pytest.approx(expected)
        # weight 0: the evidence does not move with it
        assert float(ev.evidence[0]) == pytest.approx(float(unknown.evidence[0]))
        assert float(ev.absolute[0]) == pytest.approx(float(ev.evidence[0]))


def test_block_behaviours_and_new_account_crowd() -> None:
    events = [
        event(
            i,
            T0 + i * 500,
            f"acct-{i % 20}",
            "203.0.113.0/24",
            created=T0 - (DAY if i % 20 < 16 else 400 * DAY),
        )
        for i in range(100)
    ]
    acc = Accounts(kind="ip_block")
    _, ev, names = acc.window(events)
    assert names == ["203.0.113.0/24"]
    assert ev.strength.shape == (1, len(BLOCK_BEHAVIOURS))
    j = BLK["new_account_crowd"]
    assert ev.share[0, j] == pytest.approx(16 / 20)  # counted per account, not per request
    expected = lower_bound(np.array([0.8]), np.array([20.0]))[0]
    assert ev.strength[0, j] == pytest.approx(BLOCK_BEHAVIOURS[j].strength(np.array([expected]))[0])
    assert 0.0 < ev.strength[0, j] < 1.0


# -- stable_hash -----------------------------------------------------------------------------------


def test_stable_hash_is_blake2b_and_independent_of_the_process() -> None:
    values = ["10.0.0.0/24", "2001:db8::/48", "", "card-1"]
    got = stable_hash(values)
    assert got.dtype == np.int64 and got.shape == (4,)
    expected = [
        int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little", signed=True)
        for v in values
    ]
    assert got.tolist() == expected
    assert len(set(got.tolist())) == 4
    assert stable_hash([]).shape == (0,)
    code = f"from models.evidence import stable_hash; print(stable_hash({values!r}).tolist())"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {str(expected)}
