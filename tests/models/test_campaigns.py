from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from models.calibration import TailCalibrator
from models.campaign_scoring import CampaignScorer, LinkInput
from models.campaigns import (
    CAMPAIGN_FEATURES,
    SYNCHRONIZED,
    AccountSummaries,
    CampaignConfig,
    CampaignLinker,
    CampaignWindows,
    _synchrony,
    summarize,
)
from models.detector import DetectorConfig
from models.events import UsageEvent
from models.evidence import RATES, EvidenceMemory, stable_hash, window_evidence
from models.policy import PolicyConfig
from models.windows import ClosedWindow, Windower

MIN = 60_000
DAY = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN + 30 * DAY


def u64(x: int) -> int:
    return x & (2**64 - 1)


def variant(base: int, rng: np.random.Generator, flips: int = 3) -> int:
    return base ^ sum(1 << int(b) for b in rng.choice(64, size=flips, replace=False))


class World:
    """Windows through evidence and summaries into a linker, as `models.detector` wires them."""

    def __init__(
        self, config: CampaignConfig | None = None, answers_for_reasoning: bool = False
    ) -> None:
        self.linker = CampaignLinker(config)
        self.memory = EvidenceMemory(capacity=16)
        self.rows: dict[str, int] = {}
        self.summaries: list[AccountSummaries] = []
        self.answers_for_reasoning = answers_for_reasoning  # the detector's gate, held fixed

    def step(self, events: Iterable[UsageEvent]) -> CampaignWindows:
        win = Windower(MIN, 0)
        for e in events:
            assert win.add(e)
        [w] = win.flush()
        return self.linker.update(self.summarize(w))

    def summarize(self, w: ClosedWindow) -> AccountSummaries:
        for a in w.accounts:
            self.rows.setdefault(a, len(self.rows))
        if len(self.rows) > self.memory.capacity:
            self.memory.grow(2 * len(self.rows))
        rows = np.array([self.rows[a] for a in w.accounts], dtype=np.intp)
        ev = window_evidence(
            "account",
            w,
            w.account,
            rows,
            self.memory,
            np.zeros(len(w.models), dtype=np.bool_),
            answers_for_reasoning=self.answers_for_reasoning,
        )
        s = summarize(
            w, ev.window_hits, ev.window_trials, np.zeros(len(w.accounts)), stable_hash(w.blocks)
        )
        self.summaries.append(s)
        return s


def request(
    account: str,
    minute: int,
    i: int,
    rng: np.random.Generator,
    block: str,
    *,
    cot: float | None,
    inp: int,
    out: int,
    fp: int,
    card: str | None,
    created: int,
    second: int | None = None,
) -> UsageEvent:
    ts = T0 + minute * MIN + (int(rng.integers(MIN)) if second is None else second * 1000)
    return UsageEvent(
        f"{account}-{minute}-{i}",
        ts,
        account,
        block.replace("0/24", "7"),
        block,
        "frontier-1",
        inp,
        out,
        prompt_fingerprint=fp,
        cot_score=cot,
        payment_fingerprint=card,
        account_created_ms=created,
    )


def extraction(
    minute: int,
    accounts: list[str],
    rng: np.random.Generator,
    templates: list[int],
    card: str | None = "card-campaign",
    blocks: list[str] | None = None,
    per_account: int = 6,
    created: int = T0 - 2 * DAY,
) -> list[UsageEvent]:
    """A distillation campaign: templated reasoning prompts, long answers, fresh accounts, one
    card, requests from a proxy pool."""
    pool = blocks or [f"45.{j}.3.0/24" for j in range(30)]
    return [
        request(
            a,
            minute,
            i,
            rng,
            pool[int(rng.integers(len(pool)))],
            cot=0.9,
            inp=150,
            out=1_500,
            fp=variant(templates[int(rng.integers(len(templates)))], rng),
            card=card,
            created=created,
        )
        for a in accounts
        for i in range(per_account)
    ]


def ordinary(
    minute: int,
    accounts: list[str],
    rng: np.random.Generator,
    *,
    block: str | None = None,
    card: str | None = None,
    created: int | None = None,
    framework: int | None = None,
) -> list[UsageEvent]:
    """People: a few requests, seldom reasoning, balanced answers, their own prompts; by default
    their own address and card and an old account."""
    out = []
    for k, a in enumerate(accounts):
        for i in range(int(rng.integers(1, 4))):
            fp = int(rng.integers(2**63))
            if framework is not None and k % 3 == 0:  # a popular framework's prompt
                fp = variant(framework, rng)
            out.append(
                request(
                    a,
                    minute,
                    i,
                    rng,
                    block or f"192.{k % 200}.{k // 200}.0/24",
                    cot=0.8 if rng.random() < 0.1 else float(rng.uniform(0.0, 0.4)),
                    inp=int(rng.integers(300, 3_000)),
                    out=int(rng.integers(100, 700)),
                    fp=fp,
                    card=card or f"card-{a}",
                    created=created
                    if created is not None
                    else T0 - int(rng.integers(60, 900)) * DAY,
                )
            )
    return out


def names(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{i}" for i in range(start, start + n)]


def templates(rng: np.random.Generator, n: int = 3) -> list[int]:
    return [int(x) for x in rng.integers(0, 2**63, size=n)]


# -- campaigns are linked ------------------------------------------------------------------------


def test_a_campaign_among_hard_negatives_is_one_campaign_with_a_stable_id() -> None:
    rng = np.random.default_rng(0)
    crew = names("crew", 20)
    people = names("person", 60)
    staff = names("staff", 30)  # one company: one card, one NAT address
    phones = names("phone", 150)  # a carrier NAT block
    tmpl = templates(rng)
    framework = templates(rng, 1)[0]
    world = World()
    ids = []
    for minute in range(6):
        out = world.step(
            extraction(minute, crew, rng, tmpl)
            + ordinary(minute, people, rng)
            + ordinary(minute, staff, rng, block="198.51.100.0/24", card="card-acme")
            + ordinary(minute, phones, rng, block="100.64.0.0/24", framework=framework)
        )
        assert len(out) == 1, (minute, out.members)
        assert sorted(out.members[0]) == sorted(crew)
        assert out.active.tolist() == [20]
        ids.append(out.ids[0])
        # what holds it together is what the crew shares, and it shows in the reasons
        assert out.templates[0] >= 1 and out.payments[0] == 1
        assert out.coordination_share[0, 1] == 1.0  # every member pays with the shared card
        assert out.new_accounts[0] == 1.0
        reasons = " / ".join(r["detail"] for r in out.reasons(0))
        assert "20 accounts share" in reasons and "shared payment instrument" in reasons
        strength = dict(zip(CAMPAIGN_FEATURES[11:], out.strength[0].tolist(), strict=True))
        assert strength["reasoning_elicitation"] == 1.0
        assert strength["output_harvesting"] == 1.0
        assert out.values().shape == (1, len(CAMPAIGN_FEATURES))
    assert len(set(ids)) == 1
    assert re.fullmatch(r"campaign-[0-9a-f]{12}", ids[0])
    # the members joined once, in the first window
    assert len(world.linker) == 20 + 60 + 30 + 150


def test_a_campaign_without_a_shared_card_is_linked_by_its_templates() -> None:
    rng = np.random.default_rng(1)
    crew = names("crew", 12)
    tmpl = templates(rng)
    world = World()
    for minute in range(4):
        events = extraction(minute, crew, rng, tmpl, card=None) + ordinary(
            minute, names("person", 40), rng
        )
        out = world.step(events)
    assert len(out) == 1 and sorted(out.members[0]) == sorted(crew)
    assert out.payments[0] == 0 and out.templates[0] >= 1


def test_replacing_banned_accounts_keeps_the_campaign_id() -> None:
    rng = np.random.default_rng(2)
    tmpl = templates(rng)
    world = World()
    seen = []
    for minute in range(8):
        crew = names("crew", 20, start=0 if minute < 4 else 8)  # 8 banned, 8 new ones
        out = world.step(
            extraction(minute, crew, rng, tmpl) + ordinary(minute, names("p", 30), rng)
        )
        assert len(out) == 1
        seen.append((out.ids[0], set(out.members[0]), set(out.joined[0])))
    assert len({name for name, _, _ in seen}) == 1
    assert seen[0][2] == set(names("crew", 20))  # everyone joined in the first window
    assert seen[1][2] == set()
    # the replacements join; the banned accounts stay members until their links fade
    assert seen[4][2] == set(names("crew", 8, start=20))
    assert set(names("crew", 28)) >= seen[-1][1] >= set(names("crew", 20, start=8))


def test_a_linker_checkpointed_before_keys_links_on_as_if_never_stopped() -> None:
    """Checkpoints written before `Keys` kept the linker's ids in a dict and a list, and a copy
    of ``last_ms`` as ``updated_ms``: one restored from that form goes on like the original."""
    rng = np.random.default_rng(2)
    tmpl = templates(rng)
    world = World()
    batches = [
        extraction(minute, names("crew", 20), rng, tmpl) + ordinary(minute, names("p", 30), rng)
        for minute in range(6)
    ]
    for events in batches[:3]:
        world.step(events)
    state = dict(world.linker.__dict__)
    keys = state.pop("keys")
    ids = keys.ids(range(keys.high))
    state.update(index={a: r for r, a in enumerate(ids)}, ids=ids, updated_ms=state["last_ms"])
    restored = copy.deepcopy(world)
    restored.linker = type(world.linker).__new__(type(world.linker))
    restored.linker.__setstate__(pickle.loads(pickle.dumps(state)))
    for events in batches[3:]:
        a, b = world.step(events), restored.step(events)
        assert (a.ids, a.members, a.joined) == (b.ids, b.members, b.joined) and len(a) == 1


def test_a_silent_campaign_is_not_reported() -> None:
    rng = np.random.default_rng(3)
    tmpl = templates(rng)
    people = names("p", 30)
    world = World()
    for minute in range(3):
        assert len(world.step(extraction(minute, names("crew", 10), rng, tmpl))) == 1
    for minute in range(3, 6):
        assert len(world.step(ordinary(minute, people, rng))) == 0


def test_a_campaign_that_pauses_comes_back_under_its_id() -> None:
    """A crew silent for two minutes is the same campaign when it resumes: same id, nobody joins
    anew, so its strikes and level carry over."""
    rng = np.random.default_rng(3)
    tmpl = templates(rng)
    people = names("p", 30)
    world = World()
    ids = []
    for minute in range(8):
        crew = extraction(minute, names("crew", 10), rng, tmpl) if minute not in (3, 4) else []
        out = world.step(crew + ordinary(minute, people, rng))
        if minute in (3, 4):
            assert len(out) == 0
            continue
        assert len(out) == 1
        ids.append(out.ids[0])
        if minute == 5:
            assert out.joined[0] == []
    assert len(set(ids)) == 1


def test_a_campaign_quiet_past_the_horizon_comes_back_new() -> None:
    """Its accounts left the linker's horizon: what they do now is judged afresh, under a new id,
    with no strikes carried from before."""
    rng = np.random.default_rng(3)
    tmpl = templates(rng)
    people = names("p", 30)
    world = World(CampaignConfig(horizon_ms=3 * 60_000))
    ids = []
    for minute in range(10):
        crew = extraction(minute, names("crew", 10), rng, tmpl) if minute in (0, 1, 8, 9) else []
        out = world.step(crew + ordinary(minute, people, rng))
        if crew:
            ids.append(out.ids[0])
    assert ids[0] == ids[1] != ids[2] == ids[3]


def test_accounts_quiet_past_forget_ms_are_forgotten_and_state_stays_bounded() -> None:
    """A hydra burning through fresh accounts: ten new ones every minute for four hours, each
    used for one minute. With a one-hour memory the linker holds at most two hours of accounts
    (it compacts once half its rows are quiet), every per-account array keeps one row per
    account, and the campaign keeps its id across compactions."""
    rng = np.random.default_rng(5)
    tmpl = templates(rng)
    world = World(CampaignConfig(forget_ms=60 * 60_000))
    linker = world.linker
    ids, sizes = set(), []
    for minute in range(240):
        crew = names("crew", 10, start=10 * minute)
        out = world.step(extraction(minute, crew, rng, tmpl))
        ids.update(out.ids)
        sizes.append(len(linker))
        rows = {name: len(getattr(linker, name)) for name in vars(linker)
                if isinstance(getattr(linker, name), np.ndarray)}  # fmt: skip
        assert set(rows.values()) == {len(linker.keys)} == {linker.keys.high}, rows
        held = linker.keys.ids(range(linker.keys.high))
        assert linker.keys.find(held).tolist() == list(range(len(held)))
    assert max(sizes) <= 2 * 10 * 61 + 10
    assert min(sizes[150:]) >= 10 * 60  # what the last hour holds is never forgotten
    assert len(ids) == 1


def test_same_input_same_campaigns() -> None:
    def run() -> list[tuple[list[str], list[list[str]]]]:
        rng = np.random.default_rng(4)
        tmpl_a, tmpl_b = templates(rng), templates(rng)
        world = World()
        got = []
        for minute in range(4):
            out = world.step(
                extraction(minute, names("a", 8), rng, tmpl_a, card="card-a")
                # another crew: its own templates, card, proxy pool and creation day
                + extraction(
                    minute,
                    names("b", 8),
                    rng,
                    tmpl_b,
                    card="card-b",
                    blocks=[f"77.{j}.5.0/24" for j in range(30)],
                    created=T0 - 5 * DAY,
                )
                + ordinary(minute, names("p", 30), rng)
            )
            got.append((out.ids, out.members))
        return got

    first = run()
    assert first == run()
    assert all(len(ids) == 2 for ids, _ in first)  # two crews, two campaigns
    assert all(
        sorted(map(sorted, members)) == [names("a", 8), names("b", 8)] for _, members in first
    )
    assert len({tuple(ids) for ids, _ in first}) == 1


# -- hard negatives --------------------------------------------------------------------------------


@pytest.mark.parametrize("age_days", [400, 30])
def test_company_staff_on_one_card_behind_one_nat_are_not_a_campaign(age_days: int) -> None:
    rng = np.random.default_rng(5)
    staff = names("staff", 90)
    world = World()
    for minute in range(6):
        out = world.step(
            ordinary(
                minute,
                staff,
                rng,
                block="198.51.100.0/24",
                card="card-acme",
                created=T0 - age_days * DAY,  # the whole team onboarded the same minute
            )
        )
        assert len(out) == 0


def test_company_staff_onboarded_today_on_one_card_are_not_a_campaign() -> None:
    rng = np.random.default_rng(5)
    staff = names("staff", 90)
    world = World()
    for minute in range(6):
        out = world.step(
            ordinary(
                minute,
                staff,
                rng,
                block="198.51.100.0/24",
                card="card-acme",
                created=T0 - 3_600_000,
            )
        )
        assert len(out) == 0, [r["detail"] for r in out.reasons(0)]


def test_one_circumstantial_hub_does_not_link_two_do() -> None:
    """Sharing a proxy block can be chance: an account joins through two risky blocks (or
    cohorts), never through one."""

    def crew(minute: int, rng: np.random.Generator, n_blocks: int) -> list[UsageEvent]:
        return [
            request(
                a,
                minute,
                i,
                rng,
                f"45.1.{i % n_blocks}.0/24",
                cot=0.9,
                inp=150,
                out=1_500,
                fp=int(rng.integers(2**63)),  # no templates
                card=None,  # no card
                created=T0 - (100 + 37 * k) * DAY,  # no creation cohort
            )
            for k, a in enumerate(names("c", 10))
            for i in range(6)
        ]

    for n_blocks, expected in ((1, 0), (2, 1)):
        rng = np.random.default_rng(11)
        world = World()
        for minute in range(4):
            out = world.step(crew(minute, rng, n_blocks) + ordinary(minute, names("p", 30), rng))
            assert len(out) == expected, n_blocks
    assert sorted(out.members[0]) == names("c", 10)
    assert out.blocks[0] == 2 and out.templates[0] == 0 and out.payments[0] == 0


def test_a_carrier_nat_block_is_not_a_campaign() -> None:
    rng = np.random.default_rng(6)
    phones = names("phone", 300)
    framework = templates(rng, 1)[0]
    world = World()
    for minute in range(6):
        events = ordinary(minute, phones, rng, block="100.64.0.0/24", framework=framework)
        # a quarter of the subscribers signed up this week
        events = [
            e._replace(account_created_ms=T0 - 3 * DAY) if int(e.account_id[6:]) % 4 == 0 else e
            for e in events
        ]
        assert len(world.step(events)) == 0


def test_ordinary_proxy_customers_stay_out_of_the_hydra_on_their_blocks() -> None:
    rng = np.random.default_rng(7)
    pool = [f"45.{j}.3.0/24" for j in range(6)]
    crew = names("crew", 20)
    proxied = names("vpn", 6)
    tmpl = templates(rng)
    world = World()
    for minute in range(5):
        events = extraction(minute, crew, rng, tmpl, card=None, blocks=pool)
        for k, a in enumerate(proxied):  # ordinary people hopping over the same proxy blocks
            events += ordinary(minute, [a], rng, block=pool[(k + minute) % len(pool)])
        out = world.step(events + ordinary(minute, names("p", 30), rng))
        assert len(out) == 1
        assert sorted(out.members[0]) == sorted(crew)


def test_ordinary_users_of_a_popular_template_are_not_linked() -> None:
    rng = np.random.default_rng(8)
    framework = templates(rng, 1)[0]
    world = World()
    for minute in range(5):
        assert len(world.step(ordinary(minute, names("dev", 80), rng, framework=framework))) == 0
    # the template is known and shared: it is not linking them because it is not risky
    tmpl = world.linker.tmpl[world.linker.tmpl != 0]
    assert np.unique(tmpl, return_counts=True)[1].max() >= 10


# -- summarize -----------------------------------------------------------------------------------


def test_summarize_keeps_what_linking_needs_per_account() -> None:
    rng = np.random.default_rng(9)
    events = []
    for i in range(20):  # acct-a: 20 requests over 6 blocks (most from 10.0.0.0/24), one card
        block = "10.0.0.0/24" if i < 10 else f"10.0.{i % 5 + 1}.0/24"
        events.append(
            request(
                "acct-a",
                0,
                i,
                rng,
                block,
                cot=0.9,
                inp=10,
                out=10,
                fp=1000 + i,
                card="card-1" if i else "card-2",
                created=T0 - DAY,
                second=i,
            )
        )
    events.append(
        request(
            "acct-b",
            0,
            0,
            rng,
            "10.9.9.0/24",
            cot=0.1,
            inp=10,
            out=10,
            fp=7,
            card=None,
            created=T0 - 5 * DAY,
            second=59,
        )
    )
    win = Windower(MIN, 0)
    for e in events:
        win.add(e)
    [w] = win.flush()
    world = World()
    s = world.summarize(w)
    a, b = s.ids.index("acct-a"), s.ids.index("acct-b")
    assert s.requests[[a, b]].tolist() == [20, 1]
    assert s.created_ms[[a, b]].tolist() == [T0 - DAY, T0 - 5 * DAY]
    # the payment instrument it used most; none is 0
    assert s.payment[b] == 0 and s.payment[a] == w.payment_hash[1] != 0
    # at most four blocks, most used first
    blocks = s.blocks[s.block_start[a] : s.block_start[a + 1]]
    counts = s.block_requests[s.block_start[a] : s.block_start[a + 1]]
    assert blocks.size == 4 and counts[0] == 10 and (np.diff(counts) <= 0).all()
    assert blocks[0] == stable_hash(["10.0.0.0/24"])[0]
    assert s.blocks[s.block_start[b] : s.block_start[b + 1]].tolist() == [
        int(stable_hash(["10.9.9.0/24"])[0])
    ]
    # the latest 16 prompts, in time order, with their times
    prompts = s.prompts[s.prompt_start[a] : s.prompt_start[a + 1]]
    assert prompts.tolist() == list(range(1004, 1020))
    times = s.prompt_ms[s.prompt_start[a] : s.prompt_start[a + 1]]
    assert (np.diff(times) > 0).all()
    assert s.prompts[s.prompt_start[b] : s.prompt_start[b + 1]].tolist() == [7]
    # which seconds of the window it was active in
    assert int(s.seconds[a]) == (1 << 20) - 1 and int(s.seconds[b]) == 1 << 59
    # this window's behaviour counts, columns as RATES
    r = RATES.index("reasoning_elicitation")
    assert s.hits[a, r] == 20 and s.trials[b, r] == 1 and s.hits[b, r] == 0
    assert len(s) == 2


def test_summarize_prompt_limit() -> None:
    rng = np.random.default_rng(10)
    events = [
        request(
            "a",
            0,
            i,
            rng,
            "10.0.0.0/24",
            cot=0.0,
            inp=1,
            out=1,
            fp=i + 1,
            card=None,
            created=T0,
            second=i,
        )
        for i in range(10)
    ]
    win = Windower(MIN, 0)
    for e in events:
        win.add(e)
    [w] = win.flush()
    z = np.zeros((1, len(RATES)))
    s = summarize(w, z, z, np.zeros(1), stable_hash(w.blocks), prompts_per_account=3)
    assert s.prompts.tolist() == [8, 9, 10]
    assert s.prompt_start.tolist() == [0, 3]


def test_the_detector_summarizes_accounts_as_its_campaign_config_says() -> None:
    """``prompts_per_summary`` and ``blocks_per_account`` reach the summaries the accounts of a
    worker partition send to the campaign stage (they are part of the detector's version)."""
    from dataclasses import replace

    from models.detector import Detector

    rng = np.random.default_rng(11)
    blocks = ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
    events = [
        request("a", 0, i, rng, blocks[i % 3], cot=0.0, inp=1, out=1, fp=i + 1, card=None,
                created=T0, second=i)
        for i in range(10)
    ]  # fmt: skip
    config = DetectorConfig(allowed_lateness_ms=0)
    narrow = replace(
        config, campaigns=replace(config.campaigns, prompts_per_summary=2, blocks_per_account=1)
    )
    for cfg, prompts, n_blocks in ((config, 10, 3), (narrow, 2, 1)):
        det = Detector(cfg, kinds=("account", "campaign"), link_campaigns=False)
        out = det.process(events)
        out.extend(det.flush())
        [x] = out.summaries
        assert x.summaries.prompt_start.tolist() == [0, prompts]
        assert x.summaries.block_start.tolist() == [0, n_blocks]


# -- synchronized timing -------------------------------------------------------------------------


def _masks(seconds: Iterable[Iterable[int]]) -> np.ndarray:
    return np.array([sum(1 << int(t) for t in set(s)) for s in seconds], dtype=np.uint64)


def _sync(seconds: list[list[int]]) -> float:
    n = len(seconds)
    return float(_synchrony(np.zeros(n, dtype=np.int64), _masks(seconds), np.ones(n, bool), 1)[0])


@pytest.mark.parametrize("n", [3, 5, 10, 30, 100])
@pytest.mark.parametrize("active", [(1, 4), (1, 12), (5, 45)])
def test_independent_accounts_are_not_synchronized_however_busy(
    n: int, active: tuple[int, int]
) -> None:
    """Chance alone, from three accounts sending once a minute to a hundred busy every other
    second, tested as often as a deployment tests its hubs: no group reaches a quarter of the
    behaviour's strength in a thousand (groups under 5 active accounts are not read at all:
    three accounts sending once each share a 3-second slot 1 time in 400)."""
    rng = np.random.default_rng(n * 100 + active[1])
    values = np.array(
        [
            _sync(
                [list(rng.choice(60, int(rng.integers(*active)), replace=False)) for _ in range(n)]
            )
            for _ in range(1000)
        ]
    )
    assert SYNCHRONIZED.strength(values).max() < 0.25
    if n < 5:
        assert values.max() == 0.0


def test_a_window_closed_early_does_not_put_a_crowd_in_step() -> None:
    """Sixty ordinary customers of a carrier NAT (two shared blocks, each customer's own card and
    prompts, independent times) for five minutes, then the last window of a replay: it closes
    after 10 seconds, so everyone's requests crowd into its first seconds. Read over 60 seconds
    that is a crowd in step (it linked 256 carrier-NAT customers of one outside world to a
    campaign at the end of the replay); read over the 10 seconds the window holds, it is not."""
    rng = np.random.default_rng(4)
    world, accounts = World(), names("nat", 60)
    blocks = ["100.64.1.0/24", "100.64.2.0/24"]

    def minute_of(minute: int, span: int) -> list[UsageEvent]:
        return [
            request(
                a, minute, i, rng, blocks[int(rng.integers(2))], cot=0.1, inp=300, out=400,
                fp=int(rng.integers(2**63)), card=f"card-{a}", created=T0 - 300 * DAY,
                second=int(rng.integers(span)),
            )
            for a in accounts
            for i in range(int(rng.integers(1, 4)))
        ]  # fmt: skip

    for minute in range(5):
        assert len(world.step(minute_of(minute, 60))) == 0
    last = world.step(minute_of(5, 10))
    assert len(last) == 0


def test_a_busy_dispatcher_with_jitter_is_synchronized() -> None:
    """Forty accounts fired on every tick of a dispatcher (a tick every 2.5 s, each account a fixed
    lag of up to 1.2 s after it): busy every other second, so every second is shared by chance
    too and only the correlation of their activity shows the clock: a quarter of the way to
    lockstep, from 3.72 standard errors of chance up."""
    rng = np.random.default_rng(3)
    lag = rng.uniform(0, 1.2, 40)
    ticks = np.arange(0, 60, 2.5) + rng.uniform(0, 2.5)
    seconds = [[int(t + lag[i] + abs(rng.normal(0, 0.3))) % 60 for t in ticks] for i in range(40)]
    assert _sync(seconds) >= 0.24
    shuffled = [list(rng.choice(60, len(set(s)), replace=False)) for s in seconds]
    assert _sync(shuffled) == 0.0


def test_a_round_robin_dispatcher_is_synchronized() -> None:
    """Forty accounts sending once a minute in turns of ten at four ticks: each tick is shared by
    ten accounts, although most pairs never send together."""
    seconds = [[7 + 15 * (i % 4)] for i in range(40)]
    assert SYNCHRONIZED.strength(np.array([_sync(seconds)]))[0] == 1.0


def test_load_balanced_accounts_on_a_few_cards_are_linked_by_their_clock() -> None:
    """Thirty established accounts behind a dispatcher (a tick every 3 s, each account up to half
    a second after it), ten to a card, asking for nothing risky: their cards link them once the
    requests keep time; the same traffic at random times does not."""

    def run(clocked: bool) -> CampaignWindows:
        rng = np.random.default_rng(11)
        world, accounts = World(), names("lb", 30)
        lag = rng.uniform(0, 0.5, 30)
        out = CampaignWindows.__new__(CampaignWindows)
        for minute in range(6):
            events = []
            for k, a in enumerate(accounts):
                for i, t in enumerate(np.arange(0.3, 60, 3.0)):
                    second = int(t + lag[k]) % 60 if clocked else int(rng.integers(60))
                    events.append(
                        request(
                            a, minute, i, rng, f"34.{k % 5}.0.0/24", cot=0.05, inp=900,
                            out=700, fp=int(rng.integers(2**63)), card=f"card-{k % 3}",
                            created=T0 - 200 * DAY, second=second,
                        )
                    )  # fmt: skip
            out = world.step(events)
        return out

    linked = run(clocked=True)
    assert sorted(a for m in linked.members for a in m) == sorted(names("lb", 30))
    for i in range(len(linked)):
        assert any("same seconds" in r["detail"] for r in linked.reasons(i))
    assert len(run(clocked=False)) == 0


def test_a_busy_hydra_whose_accounts_differ_stays_linked() -> None:
    """Forty fresh accounts send the same templates from a proxy pool, 20 requests a minute each
    for 20 minutes, harvesting long answers in 50% to 95% of their requests (each account its
    own share). The more they send, the surer it is that their shares differ; that must not
    unlink their templates (a dispersion test did, from the second minute on). Members far below
    the campaign's share with many requests still leave it one by one (`_consistent`), and
    the links they made go with them."""
    rng = np.random.default_rng(5)
    world, accounts, tmpl = World(), names("hy", 40), templates(rng, 10)
    harvest = np.linspace(0.5, 0.95, 40)
    pool = [f"45.{j}.3.0/24" for j in range(30)]
    sizes = []
    for minute in range(20):
        events = [
            request(
                a, minute, i, rng, pool[int(rng.integers(30))], cot=0.1, inp=150,
                out=1_500 if rng.random() < harvest[k] else 300,
                fp=variant(tmpl[int(rng.integers(10))], rng), card=f"card-{a}",
                created=T0 - DAY,
            )
            for k, a in enumerate(accounts)
            for i in range(20)
        ]  # fmt: skip
        out = world.step(events)
        sizes.append(max((len(m) for m in out.members), default=0))
    assert sizes[0] >= 35 and min(sizes) >= 15, sizes


def _proxy_crew_and_loners(
    minute: int, rng: np.random.Generator, tmpl: list[int], pool: list[str], loners: int = 4
) -> list[UsageEvent]:
    """A campaign on a proxy pool's blocks paying with one card, and accounts that extract alike
    from the same blocks with cards and creation times of their own."""
    events = extraction(minute, names("crew", 12), rng, tmpl, card="card-crew", blocks=pool)
    for k, a in enumerate(names("loner", loners)):
        own = templates(rng, 6)  # prompts of its own: a fresh template for every request
        created = T0 - (200 + 41 * k) * DAY
        events += extraction(minute, [a], rng, own, card=f"card-{a}", blocks=pool, created=created)
    return events + ordinary(minute, names("p", 30), rng)


def test_members_linked_only_by_shared_blocks_are_told_apart() -> None:
    rng = np.random.default_rng(21)
    pool = [f"45.{j}.3.0/24" for j in range(12)]
    tmpl = templates(rng, 10_000)  # prompts of their own
    world = World()
    for minute in range(4):
        out = world.step(_proxy_crew_and_loners(minute, rng, tmpl, pool))
    assert len(out) == 1
    assert sorted(out.members[0]) == sorted(names("crew", 12) + names("loner", 4))
    assert sorted(out.circumstantial[0]) == names("loner", 4)


def scored_run(
    minutes: int,
    events: Callable[[int], list[UsageEvent]],
    covered: dict[str, list[str]] | None = None,
    world: World | None = None,
    config: DetectorConfig | None = None,
    reference: np.ndarray | None = None,
    linked: list[CampaignWindows] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Minutes of events through a linker and a `CampaignScorer` whose account calibrator has
    seen ordinary raw risk ``reference`` (by default between 0 and 1), as `models.detector`
    wires them once warmed up: per entity, its actions with their first reason; ``covered``
    collects, per campaign action, the members it names, ``linked`` the campaigns of each
    window."""
    rng = np.random.default_rng(0)
    world = world or World()
    calibrator = TailCalibrator(min_count=100)
    calibrator.update(rng.uniform(0.0, 1.0, 5_000) if reference is None else reference, T0)
    scorer = CampaignScorer(config or DetectorConfig())
    actions: dict[str, list[tuple[str, str]]] = {}
    for minute in range(minutes):
        win = Windower(MIN, 0)
        for e in events(minute):
            assert win.add(e)
        [w] = win.flush()
        s = world.summarize(w)
        x = LinkInput(s, np.zeros(len(s)), np.zeros(len(s), dtype=np.bool_), np.zeros(8))
        result = scorer.update(x, "test", calibrator=calibrator, ready=True)
        if linked is not None:
            linked.extend(result.out.campaigns)
        for a in result.out.actions:
            reason = a.reasons[0].get("detail") or a.reasons[0]["feature"]
            actions.setdefault(a.entity_id, []).append((a.action, reason))
            if covered is not None and a.entity_kind == "campaign":
                covered[a.action] = list(a.members or [])
    return actions


def test_an_enforced_campaign_throttles_its_templated_members_and_flags_the_loose_ones() -> None:
    """A customer of the same proxy reseller can share two of a hydra's blocks: linked by that
    alone, a member is flagged for a look, never throttled as a member."""
    rng = np.random.default_rng(21)
    pool = [f"45.{j}.3.0/24" for j in range(12)]
    tmpl = templates(rng, 10_000)
    # a fifth loner shows up once the campaign is throttled
    actions = scored_run(
        8, lambda m: _proxy_crew_and_loners(m, rng, tmpl, pool, loners=4 if m < 6 else 5)
    )
    assert {actions[a][-1][0] for a in names("crew", 12)} == {"throttle"}
    assert {act for a in names("loner", 5) for act, _ in actions[a]} == {"flag"}
    [(_, late)] = actions["loner-4"]
    assert "under throttle; linked to it only by shared IP blocks" in late, late
    assert not any(a.startswith("p-") for a in actions)


def test_a_group_with_a_template_of_its_own_behind_the_proxy_is_still_loose() -> None:
    """Four accounts share a benchmark template among themselves, not the campaign's: what ties
    them to the campaign is still only the proxy blocks."""
    rng = np.random.default_rng(21)
    pool = [f"45.{j}.3.0/24" for j in range(12)]
    tmpl, bench = templates(rng, 10_000), templates(rng, 2)

    def events(minute: int) -> list[UsageEvent]:
        out = extraction(minute, names("crew", 12), rng, tmpl, card="card-crew", blocks=pool)
        for k, a in enumerate(names("team", 4)):
            out += [
                request(a, minute, i, rng, pool[int(rng.integers(len(pool)))], cot=0.9,
                        inp=150, out=1_500, fp=variant(bench[int(rng.integers(2))], rng),
                        card=f"card-{a}", created=T0 - (200 + 41 * k) * DAY)
                for i in range(6)
            ]  # fmt: skip
        return out + ordinary(minute, names("p", 30), rng)

    actions = scored_run(8, events)
    assert {actions[a][-1][0] for a in names("crew", 12)} == {"throttle"}
    assert {act for a in names("team", 4) for act, _ in actions[a]} == {"flag"}


def test_a_campaign_held_together_by_circumstance_alone_carries_its_level_to_its_kind() -> None:
    """Twelve accounts a day old, created in the same minutes, each with its own card and its
    own prompts, hopping over one proxy pool: there is no core of template or card links, and
    every member sends what the campaign sends, so the campaign's throttle reaches all of
    them."""
    rng = np.random.default_rng(5)
    pool = [f"45.{j}.3.0/24" for j in range(12)]

    def events(minute: int) -> list[UsageEvent]:
        out = [
            request(a, minute, i, rng, pool[int(rng.integers(len(pool)))], cot=0.9, inp=150,
                    out=1_500, fp=int(rng.integers(2**63)), card=f"card-{a}",
                    created=T0 - 2 * DAY + k * 1_000)
            for k, a in enumerate(names("hydra", 12))
            for i in range(6)
        ]  # fmt: skip
        return out + ordinary(minute, names("p", 30), rng)

    actions = scored_run(10, events)
    assert {actions[a][-1][0] for a in names("hydra", 12)} == {"throttle"}


def test_bystanders_of_a_campaign_held_together_by_circumstance_are_only_flagged() -> None:
    """A hydra as above, through a gateway without a cot_score (long answers stand in for it, as
    the detector reads them where ordinary customers rarely get them), harvesting in about four
    requests of five; fresh accounts joining it with one or two requests; and ordinary customers
    of its proxy reseller who sent two ordinary requests each from its blocks, before it was
    throttled or while it was. Two requests do not contradict the hydra, so some of them are
    linked into it, but their requests are likelier from an ordinary customer than from the
    hydra. The throttle reaches the hydra's accounts, the newcomers too; the bystanders are
    flagged for a look, and the campaign's throttle does not name them."""
    rng = np.random.default_rng(5)
    pool = [f"45.{j}.3.0/24" for j in range(12)]
    bystanders = names("by", 9)
    thin = names("thin", 6)

    def events(minute: int) -> list[UsageEvent]:
        out = [
            request(a, minute, i, rng, pool[int(rng.integers(len(pool)))], cot=None, inp=150,
                    out=1_500 if rng.random() < 0.8 else 300, fp=int(rng.integers(2**63)),
                    card=f"card-{a}", created=T0 - 2 * DAY + k * 1_000)
            for k, a in enumerate(names("hydra", 12))
            for i in range(6)
        ]  # fmt: skip
        for k, a in enumerate(thin):  # replacements: fresh accounts, one or two requests
            if minute == 7:
                out += [
                    request(a, minute, i, rng, pool[(k + i) % len(pool)], cot=None, inp=150,
                            out=1_500, fp=int(rng.integers(2**63)), card=f"card-{a}",
                            created=T0 - 2 * DAY + 13_000 + k * 1_000)
                    for i in range(1 + k % 2)
                ]  # fmt: skip
        for k, a in enumerate(bystanders):
            if minute in ((k % 3, k % 3 + 1) if k < 5 else (6, 7)):  # before it, under it
                out.append(
                    request(a, minute, 0, rng, pool[(k + minute) % len(pool)], cot=None,
                            inp=400, out=300, fp=int(rng.integers(2**63)), card=f"card-{a}",
                            created=T0 - 300 * DAY)
                )  # fmt: skip
        return out + ordinary(minute, names("p", 30), rng)

    covered: dict[str, list[str]] = {}
    actions = scored_run(10, events, covered, World(answers_for_reasoning=True))
    assert {actions[a][-1][0] for a in names("hydra", 12)} == {"throttle"}
    joined = [a for a in thin if a in actions]  # linked in the window of their first request
    assert "thin-0" in joined and len(joined) >= 3, joined  # thin-0 sent a single request
    assert {actions[a][-1][0] for a in joined} == {"throttle"}
    linked = [a for a in bystanders if a in actions]
    assert len(linked) >= 3, actions.keys()
    for a in linked:
        assert {act for act, _ in actions[a]} == {"flag"}
    late = [a for a in linked if a in bystanders[5:]]
    assert late, linked
    for a in late:  # joined while it was throttled
        assert "look more like an ordinary customer's" in actions[a][-1][1]
    assert not set(bystanders) & set(covered["throttle"])
    assert set(names("hydra", 12)) <= set(covered["throttle"])


def test_an_allowlisted_member_is_neither_acted_on_nor_named_by_the_campaign() -> None:
    """The circumstance-only hydra above with one of its accounts on the allowlist: the
    campaign is throttled, the allowlisted account gets no action of its own, and the
    campaign's throttle, which names the accounts it covers, does not name it."""
    rng = np.random.default_rng(5)
    pool = [f"45.{j}.3.0/24" for j in range(12)]

    def events(minute: int) -> list[UsageEvent]:
        return [
            request(a, minute, i, rng, pool[int(rng.integers(len(pool)))], cot=0.9, inp=150,
                    out=1_500, fp=int(rng.integers(2**63)), card=f"card-{a}",
                    created=T0 - 2 * DAY + k * 1_000)
            for k, a in enumerate(names("hydra", 12))
            for i in range(6)
        ] + ordinary(minute, names("p", 30), rng)  # fmt: skip

    config = DetectorConfig(policy=PolicyConfig(allowlist=frozenset({"hydra-0"})))
    covered: dict[str, list[str]] = {}
    actions = scored_run(10, events, covered, config=config)
    assert "hydra-0" not in actions
    assert set(covered["throttle"]) == set(names("hydra", 12)[1:])


def _graders(
    minute: int,
    accounts: list[str],
    rng: np.random.Generator,
    suite: list[int],
    cards: list[str],
    blocks: list[str],
) -> list[UsageEvent]:
    """The model as a reward model: long prompts (an answer and a rubric), short verdicts."""
    return [
        request(a, minute, i, rng, blocks[k % len(blocks)], cot=0.05, inp=2_400, out=80,
                fp=variant(suite[int(rng.integers(len(suite)))], rng),
                card=cards[k % len(cards)], created=T0 - (300 + k % 50) * DAY)
        for k, a in enumerate(accounts)
        for i in range(2)
    ]  # fmt: skip


def test_a_crew_of_hundreds_with_one_behaviour_outranks_the_heaviest_single_customers() -> None:
    """The heaviest ordinary customers (1% of windows) show two behaviours at once, a raw risk of
    1.5-2.7. A crew of 200 accounts on 20 cards does one thing, grading, and nothing else: as one
    customer it is no riskier than they are unless its size keeps counting past 32 accounts. An
    eval team of eight on one card, grading the same way, is not lifted over them."""
    rng = np.random.default_rng(3)
    heavy = np.concatenate([rng.uniform(0.0, 1.0, 5_000), rng.uniform(1.5, 2.7, 50)])
    crew, team = names("crew", 200), names("team", 8)
    crew_suite, team_suite = templates(rng, 6), templates(rng, 6)
    cloud = [f"34.{j}.8.0/24" for j in range(4)]

    def events(minute: int) -> list[UsageEvent]:
        cards = [f"card-lb-{k}" for k in range(20)]
        return (
            _graders(minute, crew, rng, crew_suite, cards, cloud)
            + _graders(minute, team, rng, team_suite, ["card-evals"], ["198.51.100.0/24"])
            + ordinary(minute, names("p", 30), rng)
        )

    actions = scored_run(6, events, reference=heavy)
    assert {actions.get(a, [("none", "")])[-1][0] for a in crew} == {"flag"}, sorted(actions)[:5]
    assert not set(team) & set(actions)


@pytest.mark.parametrize("resend", [1, 3])
def test_a_sign_up_burst_sharing_its_exercises_is_linked_but_not_a_campaign(resend: int) -> None:
    """Sixty students sign up in the same ten minutes behind the venue's address and work
    through the same exercises, one a minute, in between prompts of their own: linked by the
    exercises, but being new is (nearly) all the evidence they have, even when they resend the
    exercise in three prompts of four, a trace of templated prompts. The same burst harvesting
    reasoning is a campaign."""
    rng = np.random.default_rng(8)
    students = names("student", 60)
    exercises = templates(rng, 6)

    def events(minute: int, harvest: bool = False) -> list[UsageEvent]:
        return [
            request(a, minute, i, rng, "203.0.113.0/24", cot=0.9 if harvest else 0.1,
                    inp=150 if harvest else 400, out=1_500 if harvest else 350,
                    fp=variant(exercises[minute], rng) if i < resend else int(rng.integers(2**63)),
                    card=None, created=T0 - 3_600_000 + k * 10_000)
            for k, a in enumerate(students)
            for i in range(resend + 1)
        ] + ordinary(minute, names("p", 30), rng)  # fmt: skip

    linked: list[CampaignWindows] = []
    assert not scored_run(5, events, linked=linked)
    assert max(len(m) for cw in linked for m in cw.members) >= 50
    beyond = np.concatenate([cw.beyond_newness for cw in linked])
    assert (beyond < 0.25).all()
    assert (beyond > 0.0).any() == (resend > 1), beyond  # the trace is there when they resend
    harvested = scored_run(5, lambda minute: events(minute, harvest=True))
    assert set(students) <= set(harvested)


# -- shared prompt sets ----------------------------------------------------------------------------


def _swarm(
    minute: int,
    accounts: list[str],
    rng: np.random.Generator,
    prompt_set: list[int],
    share: float = 0.8,
    created: int | None = None,
) -> list[UsageEvent]:
    """Quiet accounts, each on its own address and card, long established, no reasoning, answers
    of ordinary length; one request a minute from a third of them, mostly from the prompt set."""
    return [
        request(a, minute, 0, rng, f"81.{k % 250}.{k // 250}.0/24", cot=0.1, inp=400, out=350,
                fp=(variant(prompt_set[int(rng.integers(len(prompt_set)))], rng)
                    if rng.random() < share else int(rng.integers(2**63))),
                card=f"card-{a}",
                created=T0 - (60 + k % 300) * DAY if created is None else created + k * 1_000)
        for k, a in enumerate(accounts)
        if (k + minute) % 3 == 0
    ]  # fmt: skip


def test_a_quiet_swarm_drawing_on_one_large_prompt_set_is_a_campaign() -> None:
    """Three hundred accounts, each unremarkable (a request every three minutes, no reasoning,
    its own address and card), send most of their prompts from one set of 120 templates that
    nobody else uses: a dataset harvested by a swarm. They share nothing else to link them by."""
    rng = np.random.default_rng(11)
    swarm, prompt_set = names("swarm", 300), templates(rng, 120)
    linked: list[CampaignWindows] = []
    actions = scored_run(
        12, lambda m: _swarm(m, swarm, rng, prompt_set) + ordinary(m, names("p", 60), rng),
        linked=linked,
    )  # fmt: skip
    last = linked[-1]
    [i] = [j for j, m in enumerate(last.members) if set(m) & set(swarm)]
    assert len(last.members[i]) >= 200 and set(last.members[i]) <= set(swarm)
    assert last.prompt_set[i] >= 0.5 and last.prompt_share[i] >= 0.4
    assert "of their requests sent from them" in last.reasons(i)[0]["detail"]
    acted = [a for a in swarm if a in actions]
    assert len(acted) >= 200, len(acted)
    # the prompt set is evidence of extraction, not only of coordination
    assert last.evidence[i] >= 0.5 and last.beyond_newness[i] >= 0.5
    assert any(k.startswith("campaign-") for k in actions)
    assert not [a for a in actions if a.startswith("p-")]


@pytest.mark.parametrize(
    ("what", "accounts", "set_size", "share"),
    [
        ("an eval team running a large suite", 8, 400, 1.0),
        ("a class on a handful of exercises", 200, 8, 0.8),
        ("the users of popular prompts", 300, 120, 0.1),
    ],
)
def test_groups_sharing_prompts_are_not_a_prompt_set(
    what: str, accounts: int, set_size: int, share: float
) -> None:
    """Each scale of a prompt set has a group that meets the other two: a team of eight running
    a suite of 400 prompts, a class of 200 new accounts on eight exercises, three hundred people
    who send popular prompts now and then."""
    rng = np.random.default_rng(12)
    group, prompt_set = names("g", accounts), templates(rng, set_size)
    created = T0 - 3_600_000 if what.startswith("a class") else None
    linked: list[CampaignWindows] = []
    actions = scored_run(
        12,
        lambda m: (
            _swarm(m, group, rng, prompt_set, share=share, created=created)
            + ordinary(m, names("p", 60), rng)
        ),
        linked=linked,
    )
    assert not actions, (what, sorted(actions)[:5])
    assert all(cw.prompt_set.max(initial=0.0) < 0.5 for cw in linked), what


def test_a_popular_prompt_does_not_join_a_class_to_a_swarm() -> None:
    """Thirty people send a popular framework's prompt, and so do ten of a swarm's accounts and
    ten students of a class on eight exercises: the popular prompt is no template of either set,
    so the class stays out of the swarm's campaign."""
    rng = np.random.default_rng(13)
    swarm, prompt_set = names("swarm", 300), templates(rng, 120)
    students, exercises = names("student", 200), templates(rng, 8)
    framework = templates(rng, 1)[0]

    def events(minute: int) -> list[UsageEvent]:
        popular = [
            request(a, minute, 1, rng, f"82.0.{k}.0/24", cot=0.1, inp=400, out=350,
                    fp=variant(framework, rng), card=None, created=T0 - 90 * DAY)
            for k, a in enumerate(swarm[:10] + students[:10])
        ]  # fmt: skip
        return (
            _swarm(minute, swarm, rng, prompt_set)
            + _swarm(minute, students, rng, exercises, created=T0 - 3_600_000)
            + popular
            + ordinary(minute, names("p", 90), rng, framework=framework)
        )

    actions = scored_run(12, events)
    assert len([a for a in swarm if a in actions]) >= 200
    assert not [a for a in students if a in actions], sorted(actions)[:5]
    assert not [a for a in actions if a.startswith("p-")]


def test_a_swarm_sharing_a_venue_block_with_a_class_does_not_bring_the_class_in() -> None:
    """Sixty students signed up in the last hour behind the venue's address are linked by their
    exercises and their block (new, and nothing else: never enforced). Two of a swarm's accounts
    send from the same block: the prompt set adds them to the swarm, and joins nothing else."""
    rng = np.random.default_rng(14)
    swarm, prompt_set = names("swarm", 300), templates(rng, 120)
    students, exercises = names("student", 60), templates(rng, 6)
    venue = "203.0.113.0/24"

    def events(minute: int) -> list[UsageEvent]:
        class_ = [
            request(
                a,
                minute,
                i,
                rng,
                venue,
                cot=0.1,
                inp=400,
                out=350,
                fp=variant(exercises[(minute + i) % 6], rng),
                card=None,
                created=T0 - 3_600_000 + k * 10_000,
            )
            for k, a in enumerate(students)
            for i in range(2)
        ]
        guests = [
            request(a, minute, 1, rng, venue, cot=0.1, inp=400, out=350,
                    fp=variant(prompt_set[int(rng.integers(120))], rng), card=f"card-{a}",
                    created=T0 - 90 * DAY)
            for a in swarm[:2]
        ]  # fmt: skip
        return _swarm(minute, swarm, rng, prompt_set) + class_ + guests

    linked: list[CampaignWindows] = []
    actions = scored_run(12, events, linked=linked)
    assert len([a for a in swarm if a in actions]) >= 200
    assert not [a for a in students if a in actions], sorted(actions)[:5]
    swarms = [m for cw in linked for m in cw.members if len(set(m) & set(swarm)) >= 100]
    assert swarms and not [m for m in swarms if set(m) & set(students)]


@pytest.mark.parametrize("crew_on_block", [4, 1])
def test_one_student_on_a_crews_block_does_not_join_the_class_to_the_crew(
    crew_on_block: int,
) -> None:
    """A class asking for reasoning on its exercises and a crew asking for it on its templates,
    each linked by its own, alike in what they send. One student sends from a block four of the
    crew also use, or one of the crew and a neighbour in no group who asks for reasoning too (the
    neighbour makes three accounts on the block, so that it can be risky; the groups meet on it
    one account each). Circumstance joins groups only in numbers: the block holds one of the
    class, so the class and the crew stay two campaigns."""
    rng = np.random.default_rng(15)
    crew, crew_set = names("crew", 40), templates(rng, 5)
    students, exercises = names("student", 60), templates(rng, 6)
    shared = "198.18.7.0/24"

    def events(minute: int) -> list[UsageEvent]:
        class_ = [
            request(
                a,
                minute,
                0,
                rng,
                "203.0.113.0/24" if k else shared,
                cot=0.9,
                inp=400,
                out=350,
                fp=variant(exercises[minute % 6], rng),
                card=None,
                created=T0 - 3_600_000 + k * 10_000,
            )
            for k, a in enumerate(students)
        ]
        crew_ = [
            request(a, minute, i, rng, shared if k < crew_on_block and i % 2 else f"45.{k}.3.0/24",
                    cot=0.9, inp=400, out=350, fp=variant(crew_set[int(rng.integers(5))], rng),
                    card=None, created=T0 - 2 * DAY)
            for k, a in enumerate(crew)
            for i in range(6)
        ]  # fmt: skip
        neighbour = [
            request("neighbour", minute, i, rng, shared, cot=0.9, inp=400, out=350,
                    fp=int(rng.integers(1, 2**63)), card=None, created=T0 - 90 * DAY)
            for i in range(3)
        ]  # fmt: skip
        return crew_ + class_ + neighbour

    linked: list[CampaignWindows] = []
    scored_run(4, events, linked=linked)
    crews = [m for cw in linked for m in cw.members if set(m) & set(crew)]
    assert crews and not [m for m in crews if set(m) & set(students)]


def test_an_account_drawing_on_two_prompt_sets_does_not_make_them_one() -> None:
    """Two swarms, each on a set of 120 templates of its own, and one account that sends a
    request from each set every minute: still two campaigns."""
    rng = np.random.default_rng(21)
    first, second = names("a", 300), names("b", 300)
    set_a, set_b = templates(rng, 120), templates(rng, 120)
    world = World()
    for minute in range(12):
        both = [
            request("x", minute, i, rng, "198.51.100.0/24", cot=0.1, inp=400, out=350,
                    fp=variant((set_a, set_b)[i][int(rng.integers(120))], rng), card="card-x",
                    created=T0 - 90 * DAY)
            for i in range(2)
        ]  # fmt: skip
        out = world.step(
            _swarm(minute, first, rng, set_a) + _swarm(minute, second, rng, set_b) + both
        )
    assert len(out) == 2, [len(m) for m in out.members]
    for members in out.members:  # each is one swarm, give or take a few early strays
        mine = max(len(set(members) & set(first)), len(set(members) & set(second)))
        assert mine >= 0.9 * len(members), (mine, len(members))


def test_a_crew_linked_by_behaviour_is_not_joined_to_a_prompt_set_it_also_draws_on() -> None:
    """A crew harvesting reasoning is linked by its templates; two of its accounts also send
    from a swarm's prompt set. A prompt set links only accounts behaviour does not, so the crew
    and the swarm stay two campaigns (joined, the swarm is judged by the crew's reasoning and
    falls apart)."""
    rng = np.random.default_rng(16)
    crew, crew_set = names("crew", 40), templates(rng, 5)
    swarm, prompt_set = names("swarm", 300), templates(rng, 120)

    def events(minute: int) -> list[UsageEvent]:
        borrowed = [
            request(a, minute, 9 + i, rng, "45.0.3.0/24", cot=0.1, inp=400, out=350,
                    fp=variant(prompt_set[int(rng.integers(120))], rng), card=None,
                    created=T0 - 2 * DAY)
            for a in crew[:2]
            for i in range(3)
        ]  # fmt: skip
        return (
            extraction(minute, crew, rng, crew_set, card=None)
            + borrowed
            + _swarm(minute, swarm, rng, prompt_set)
        )

    linked: list[CampaignWindows] = []
    scored_run(12, events, linked=linked)
    assert any(len(set(m) & set(swarm)) >= 100 for cw in linked for m in cw.members)
    mixed = [m for cw in linked for m in cw.members if set(m) & set(crew) and set(m) & set(swarm)]
    assert not mixed, [(len(set(m) & set(crew)), len(set(m) & set(swarm))) for m in mixed][:3]


# -- a hydra that leaves only creation cohorts and shared blocks -----------------------------------


def _churning_hydra(
    minute: int, rng: np.random.Generator, pool: list[str], customers: list[str]
) -> list[UsageEvent]:
    """A hydra with no templates and no cards: every minute it signs up four accounts (created
    that minute, so each ten minutes make a creation cohort), each harvesting reasoning for three
    minutes from the reseller's proxy pool; the reseller's ordinary customers, old accounts,
    hop over the same blocks."""
    events = []
    for born in range(max(0, minute - 2), minute + 1):
        for j in range(4):
            a = f"hydra-{born}-{j}"
            created = T0 + born * MIN
            events += [
                request(a, minute, i, rng, pool[int(rng.integers(len(pool)))], cot=0.9, inp=150,
                        out=1_500, fp=int(rng.integers(2**63)), card=None, created=created)
                for i in range(3)
            ]  # fmt: skip
    for k, a in enumerate(customers):
        events += ordinary(minute, [a], rng, block=pool[(k + minute) % len(pool)])
    return events + ordinary(minute, names("p", 30), rng)


def test_a_hydra_known_only_by_its_creation_cohorts_is_linked_through_their_blocks() -> None:
    """Each ten minutes of its sign-ups make a risky creation cohort; no block is risky, as the
    customers make each a mixture. Read among the accounts of risky cohorts, the blocks join the
    cohorts into one campaign, and none of the customers."""
    rng = np.random.default_rng(31)
    pool = [f"45.{j}.3.0/24" for j in range(6)]
    customers = names("vpn", 120)  # twenty a block: without the cohorts, no campaign at all
    world = World()
    for minute in range(25):
        out = world.step(_churning_hydra(minute, rng, pool, customers))
    assert len(out) == 1
    members = set(out.members[0])
    assert not members & set(customers)
    assert all(m.startswith("hydra-") for m in members)
    born = {int(m.split("-")[1]) for m in members}
    assert min(born) < 10 <= max(born)  # accounts of two creation cohorts, one campaign
    assert len(members) >= 20
    assert out.blocks[0] >= 3 and out.templates[0] == 0 and out.payments[0] == 0


@pytest.mark.parametrize("verdicts", [True, False], ids=["verdicts", "no-verdicts"])
def test_ordinary_sign_ups_of_the_hydras_minutes_on_its_pool_stay_out(verdicts: bool) -> None:
    """Twenty ordinary people sign up in the hydra's first ten minutes and use the same proxy
    pool. Their creation cohort is risky (the hydra's accounts are most of it), and three or
    more of them share each block, but the blocks do not link them: with classifier verdicts
    their requests are likelier from ordinary customers than from the cohort; through a gateway
    that sends none, nothing they send speaks for the cohort, and proving nothing, they do not
    count."""
    rng = np.random.default_rng(31)
    pool = [f"45.{j}.3.0/24" for j in range(6)]
    customers, newcomers = names("vpn", 120), names("newcomer", 20)
    world = World()
    hydra_linked = False
    for minute in range(25):
        events = _churning_hydra(minute, rng, pool, customers)
        for k, a in enumerate(newcomers):
            block, created = pool[(k + minute) % len(pool)], T0 + (k % 10) * MIN
            people = ordinary(minute, [a], rng, block=block, created=created)
            events += people if verdicts else [e._replace(cot_score=None) for e in people]
        out = world.step(events)
        for members in out.members:
            assert not set(members) & set(newcomers), minute
            hydra_linked |= sum(m.startswith("hydra-") for m in members) >= 20
    assert hydra_linked


def test_a_hydra_linked_by_its_cohorts_does_not_join_crews_created_in_its_minutes() -> None:
    """Two crews, each with its own templates, card and blocks, created in the hydra's first
    and second ten minutes: three campaigns, not one the hydra's accounts bridge."""
    rng = np.random.default_rng(31)
    pool = [f"45.{j}.3.0/24" for j in range(6)]
    customers = names("vpn", 120)
    crew_a, crew_b = names("crewA", 5), names("crewB", 5)
    tmpl_a, tmpl_b = templates(rng), templates(rng)
    world = World()
    for minute in range(25):
        events = _churning_hydra(minute, rng, pool, customers)
        for crew, tmpl, net, born in ((crew_a, tmpl_a, 60, 2), (crew_b, tmpl_b, 61, 12)):
            blocks = [f"{net}.1.1.0/24", f"{net}.1.2.0/24"]
            card = f"card-{crew[0]}"
            events += extraction(minute, crew, rng, tmpl, card, blocks, created=T0 + born * MIN)
        out = world.step(events)
        groups = [{m.split("-")[0] for m in ms if not m.startswith("hydra")} for ms in out.members]
        assert all(len(g) <= 1 for g in groups), (minute, groups)
    assert sorted(map(sorted, out.members))[0] == sorted(crew_a)
    assert len(out) == 3
