"""The detector on simulated traffic: catches the obvious, spares the ordinary, explains itself."""

from __future__ import annotations

import pickle
from collections import defaultdict

import numpy as np
import pytest

from models.detector import Detector, DetectorConfig
from models.events import UsageEvent
from models.outputs import EnforcementAction
from models.policy import PolicyConfig
from schemas.validation import validate_event
from tests.conftest import run_detector

_T0 = 1_800_000_000_000


def _hits(traffic, actions):
    labels = traffic.labels["accounts"]
    hit: dict[str, set[str]] = defaultdict(set)
    for a in actions:
        if a.action == "release":
            continue
        named = [a.entity_id] if a.entity_kind == "account" else (a.members or [])
        for acct in named:
            hit[labels[acct]["label"]].add(acct)
    return hit, labels


def test_campaigns_are_caught_and_ordinary_accounts_left_alone(small_traffic, small_run) -> None:
    hit, labels = _hits(small_traffic, small_run.actions)
    campaigns = small_traffic.labels["campaigns"]
    for cid, c in campaigns.items():
        if c["archetype"] == "rubric_grading":
            continue  # the known gap: verdicts on long prompts barely stand out in this simulator
        assert hit[cid], f"campaign {cid} not caught at all"
        if c["archetype"] in ("blatant", "hydra", "load_balanced", "low_and_slow", "model_pivot"):
            assert len(hit[cid]) / len(c["accounts"]) >= 0.95, cid
    caught = sum(len(hit[cid]) for cid in campaigns)
    assert caught / sum(len(c["accounts"]) for c in campaigns.values()) >= 0.9  # 95.7% measured
    benign = [a for a, lab in labels.items() if lab["label"] == "benign"]
    assert len(hit["benign"]) / len(benign) <= 0.005
    throttled = {
        a.entity_id
        for a in small_run.actions
        if a.entity_kind == "account" and a.action in ("throttle", "suspend")
    }
    assert not throttled & set(benign)


def test_every_action_is_explained_largest_contribution_first(small_run) -> None:
    for a in small_run.actions:
        if a.action == "release":
            continue
        assert a.reasons, a
        contrib = [r["contribution"] for r in a.reasons if r["feature"] != "behaviour_shift"]
        assert contrib == sorted(contrib, reverse=True)
        assert 0.5 <= sum(contrib) <= 1.001  # shares of the total, rounded to 4 places
        assert a.score >= a.threshold
        assert a.window_end_ms - a.window_start_ms == 60_000
        if a.action in ("throttle", "suspend"):
            assert a.expires_ms and a.expires_ms > a.ts_ms


def test_replay_is_deterministic_including_enforcement_ids(small_traffic, small_run) -> None:
    again = run_detector(small_traffic)
    assert [a.to_dict() for a in again.actions] == [a.to_dict() for a in small_run.actions]
    assert len({a.enforcement_id for a in small_run.actions}) == len(small_run.actions)


def test_snapshot_restore_mid_stream_continues_exactly(small_traffic, small_run) -> None:
    events = [validate_event(e) for e in small_traffic.events]
    half = len(events) // 2
    det = Detector()
    actions = []
    for i in range(0, half, 10_000):
        actions += det.process(events[i : min(i + 10_000, half)]).actions
    det = Detector.restore(det.snapshot())  # a worker restart
    for i in range(half, len(events), 10_000):
        actions += det.process(events[i : i + 10_000]).actions
    actions += det.flush().actions
    assert [a.enforcement_id for a in actions] == [a.enforcement_id for a in small_run.actions]


def test_duplicated_deliveries_change_nothing(small_traffic, small_run) -> None:
    events = [validate_event(e) for e in small_traffic.events]
    det = Detector()
    actions = []
    for i in range(0, len(events), 10_000):
        batch = events[i : i + 10_000]
        actions += det.process(batch + batch[: len(batch) // 3]).actions  # redelivered part
    actions += det.flush().actions
    assert [a.enforcement_id for a in actions] == [a.enforcement_id for a in small_run.actions]
    assert det.stats.duplicates > 0


def test_allowlist_spares_an_abusive_account(small_traffic, small_run) -> None:
    blatant = small_traffic.labels["campaigns"]["blatant-6"]["accounts"][0]
    assert any(a.entity_id == blatant for a in small_run.actions)
    cfg = DetectorConfig()
    from dataclasses import replace

    cfg = replace(cfg, policy=replace(cfg.policy, allowlist=frozenset({blatant})))
    out = run_detector(small_traffic, Detector(cfg))
    assert not any(a.entity_id == blatant for a in out.actions)


def test_entity_state_is_small() -> None:
    det = Detector()
    table = det.tables["account"]
    rows = table.rows([f"acct-{i:07d}" for i in range(100_000)])
    assert rows.max() == 99_999
    assert table.bytes_per_entity() < 2048


def test_a_table_checkpointed_before_keys_loads_with_the_same_rows() -> None:
    """Checkpoints written before `Keys` kept ids in a dict, a list and a free list."""
    det = Detector()
    table = det.tables["account"]
    table.rows([f"acct-{i}" for i in range(10)])
    table.last_seen_ms[:10] = 0
    table.last_seen_ms[[2, 5]] = -(10**9)
    assert table.evict_idle(now_ms=1, retention_ms=1000) == 2
    state = dict(table.__dict__)
    keys = state.pop("keys")
    ids = [keys[r] for r in range(keys.high)]
    state.update(index={a: r for r, a in enumerate(ids) if a}, ids=ids, _free=[2, 5])
    old = type(table).__new__(type(table))
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert len(old) == 8 and old.lookup("acct-2") is None and old.lookup("acct-9") == 9
    assert old.rows(["acct-new", "acct-newer", "acct-3"]).tolist() == [5, 2, 3]


def test_split_detectors_sharing_a_population_match_the_combined_one(small_traffic) -> None:
    """Accounts in one detector and blocks in another (as in the worker) give the same scores."""
    events = [validate_event(e) for e in small_traffic.events]
    combined = Detector(kinds=("account", "ip_block"))
    from models.detector import Population

    pop = Population(combined.config)
    acc_det = Detector(kinds=("account",), population=pop)
    latest: dict[str, tuple[int, float]] = {}  # every account's latest score, as data
    blk_det = Detector(kinds=("ip_block",), population=pop)
    a_comb, a_split = [], []
    for i in range(0, len(events), 10_000):
        batch = events[i : i + 10_000]
        a_comb += combined.process(batch).actions
        out = acc_det.process(batch)
        for sw in out.scored:
            for a, x in zip(sw.ids, sw.score.tolist(), strict=True):
                latest[a] = (sw.end_ms, x)
        a_split += out.actions
        a_split += blk_det.process(batch, members=latest).actions
    key = sorted((a.entity_kind, a.entity_id, a.action, a.ts_ms) for a in a_comb)
    assert key == sorted((a.entity_kind, a.entity_id, a.action, a.ts_ms) for a in a_split)


def test_partition_state_round_trip_keeps_windows_and_entities(small_traffic) -> None:
    events = [validate_event(e) for e in small_traffic.events[:50_000]]
    det = Detector()
    det.process(events[:30_000])
    from models.detector import Population

    clone = Detector(population=Population.restore(det.population.snapshot()))
    clone.load_partition_state(det.partition_state())
    assert clone.windower.buffered_events() == det.windower.buffered_events() > 0
    assert len(clone.tables["account"]) == len(det.tables["account"])
    a = det.process(events[30_000:])
    b = clone.process(events[30_000:])
    assert [x.enforcement_id for x in a.actions] == [x.enforcement_id for x in b.actions]


def test_the_output_reference_is_what_ordinary_accounts_send_not_the_first_minute() -> None:
    # The first minute of a deployment is a partial one: two light accounts. Every minute after
    # it, 200 accounts send 1,000 to 200,000 tokens. Within half an hour the reference for
    # "heavy" (the 99th percentile of output per account window) must be the later minutes', or
    # every ordinary heavy customer reads as many times the heaviest one.
    t0 = 1_800_000_000_000
    det = Detector(DetectorConfig())

    def minute(m: int, outputs: list[int]) -> list[UsageEvent]:
        return [
            UsageEvent(f"e{m}-{i}", t0 + m * 60_000 + i, f"acct-{i}", "10.0.0.1",
                       "10.0.0.0/24", "m", 500, out)
            for i, out in enumerate(outputs)
        ]  # fmt: skip

    det.process(minute(0, [100, 200]))
    outputs = [1_000 * (1 + i) for i in range(200)]
    for m in range(1, 31):
        det.process(minute(m, outputs))
    det.flush()
    p99 = float(np.quantile(outputs, 0.99))
    reference = det.population.kinds["account"].volume_p99
    assert 0.8 * p99 <= reference <= 1.2 * p99, (reference, p99)


def _twenty_users(m: int, start: int, cot: float) -> list[UsageEvent]:
    """Minute ``m`` of twenty ordinary accounts behind one /24, a request each."""
    return [
        UsageEvent(f"o{m}-{i}", start + i, f"user-{i}", f"192.0.2.{i + 1}", "192.0.2.0/24",
                   "m", 400, 300, cot_score=cot)
        for i in range(20)
    ]  # fmt: skip


def test_extraction_running_at_start_up_is_flagged_before_the_models_warm_up() -> None:
    # The detector starts on traffic where an extractor is already at full speed: reasoning
    # prompts from a new /24 every request, long answers to short prompts, a day-old account.
    # The forest and the calibrator need ~1,000 ordinary windows before a score means anything;
    # behaviour evidence is on a fixed scale and needs none, so the flag comes in the second
    # window, as it would for a warm detector.
    t0 = 1_800_000_000_000
    det = Detector(DetectorConfig())

    def minute(m: int) -> list[UsageEvent]:
        start = t0 + m * 60_000
        ordinary = _twenty_users(m, start, cot=0.1)
        extractor = [
            UsageEvent(f"x{m}-{i}", start + 1_000 * i, "extractor", f"10.{m}.{i}.7",
                       f"10.{m}.{i}.0/24", "m", 100, 2_000, cot_score=0.9,
                       account_created_ms=t0 - 86_400_000)
            for i in range(30)
        ]  # fmt: skip
        return ordinary + extractor

    flagged_at = None
    for m in range(5):
        out = det.process(minute(m))
        for a in out.actions:
            if a.entity_id == "extractor" and flagged_at is None:
                flagged_at = m
                assert a.action == "flag"
                assert a.reasons[0]["feature"] in ("reasoning_elicitation", "address_rotation")
        assert not [a for a in out.actions if a.entity_id.startswith("user-")]
    kind = det.population.kinds["account"]
    assert not kind.ready
    assert flagged_at is not None and flagged_at <= 3
    # ... and what ordinary output looks like was not learned from the extractor
    assert kind.volume_p99 == 300.0


def test_a_single_account_harvesting_reasoning_at_volume_is_flagged_within_minutes() -> None:
    # 300 ordinary accounts send up to 30,000 output tokens a minute. An extractor asks for
    # step-by-step reasoning in nine prompts of ten from one address and harvests four times what
    # the heaviest ordinary accounts send: its behaviour evidence (1.5) is below what strikes on
    # its own (2.0), its volume below what strikes with little evidence (16 times), and before the
    # models warm up no score counts. Each doubling of output past the 99th percentile is worth a
    # quarter of a behaviour: it is flagged in the second window. A customer sending 8 times the
    # percentile with no extraction behaviour, and a tutoring app eliciting reasoning at ordinary
    # volume, are not.
    t0 = 1_800_000_000_000
    det = Detector(DetectorConfig())

    def event(m: int, who: str, i: int, inp: int, out: int, cot: float) -> UsageEvent:
        return UsageEvent(f"{who}-{m}-{i}", t0 + m * 60_000 + 100 * i, who, "10.0.0.1",
                          f"10.{hash(who) % 200}.0.0/24", "m", inp, out, cot_score=cot)  # fmt: skip

    def minute(m: int) -> list[UsageEvent]:
        events = [event(m, f"user-{i}", 0, 400, (i + 1) * 100, 0.1) for i in range(300)]
        events += [event(m, "extractor", i, 100, 3_000, 0.9 if i % 10 else 0.1) for i in range(40)]
        events += [event(m, "heavy", i, 20_000, 30_000, 0.1) for i in range(8)]
        events += [event(m, "tutor", i, 100, 2_500, 0.9) for i in range(10)]
        return events

    acted: dict[str, int] = {}  # entity -> the window (0 = the first) of its first action
    for m in range(6):
        for a in det.process(minute(m)).actions:
            acted.setdefault(a.entity_id, (a.window_start_ms - t0) // 60_000)
            if a.entity_id == "extractor":
                assert a.action == "flag"
    assert not det.population.kinds["account"].ready
    assert acted == {"extractor": 1}, acted


def test_in_a_small_deployment_the_heaviest_account_is_not_past_the_percentile_of_itself() -> None:
    # 40 customers and a tutoring app asking for reasoning in nine prompts of ten, with long
    # answers, at three times the heaviest customer: with 41 accounts a window, the "99th
    # percentile" of output is the app itself, so the sliding volume scale is not read; the
    # app's evidence (1.5) stays under what strikes on its own.
    t0 = 1_800_000_000_000
    det = Detector(DetectorConfig())
    rng = np.random.default_rng(0)

    def minute(m: int) -> list[UsageEvent]:
        events = [
            UsageEvent(f"u{i}-{m}-{k}", t0 + m * 60_000 + 50 * i + k, f"user-{i}", "10.0.0.1",
                       f"10.{i}.0.0/24", "m", 400, int(rng.integers(200, 800)), cot_score=0.1)
            for i in range(40)
            for k in range(3)
        ]  # fmt: skip
        events += [
            UsageEvent(f"t{i}-{m}", t0 + m * 60_000 + 100 * i, "tutor", "10.99.0.1",
                       "10.99.0.0/24", "m", 100, 1_000, cot_score=0.9 if i % 10 else 0.1)
            for i in range(12)
        ]  # fmt: skip
        return events

    for m in range(8):
        assert not det.process(minute(m)).actions


def test_population_models_from_a_snapshot_without_the_window_size_restore() -> None:
    kind = Detector(DetectorConfig()).population.kinds["account"]
    for name in ("volume_rows", "window_rows"):
        delattr(kind, name)  # what a snapshot written before they were kept holds
    restored = pickle.loads(pickle.dumps(kind))
    assert restored.entities_per_window == 0.0


def _ordinary_minute(m: int, rng: np.random.Generator) -> list[UsageEvent]:
    """One minute of 400 ordinary accounts, each on its own /24, a request each."""
    start = _T0 + m * 60_000
    return [
        UsageEvent(f"o{m}-{i}", start + 100 * i, f"user-{i}", f"192.0.{i % 200}.{i // 200 + 1}",
                   f"192.0.{i % 200}.0/24", "m", int(rng.integers(100, 800)),
                   int(rng.integers(50, 900)), cot_score=float(rng.uniform(0, 0.4)))
        for i in range(400)
    ]  # fmt: skip


def _rotating(
    m: int, who: str, n: int, net: int = 10, offset: int = 1, output: int = 2_000
) -> list[UsageEvent]:
    """``n`` requests of ``who`` in minute ``m``, each asking for step-by-step reasoning from a
    new /24 (``net``.x.y.0/24) and, by default, harvesting a long answer to a short prompt."""
    start = _T0 + m * 60_000 + offset
    return [
        UsageEvent(f"{who}{m}-{i}", start + 2_000 * i, who, f"{net}.{(m + offset) % 250}.{i}.7",
                   f"{net}.{(m + offset) % 250}.{i}.0/24", "m", 100, output, cot_score=0.9)
        for i in range(n)
    ]  # fmt: skip


def test_a_proxy_customers_script_is_flagged_and_a_harvester_on_the_same_pool_throttled() -> None:
    # A customer of a rotating proxy runs a script asking for step-by-step reasoning, four short
    # answers a minute, each from another /24 of the pool: reasoning and rotation, evidence 2.0,
    # the throttle's bar. Every customer of such a pool hops between networks, so rotation
    # carries a throttle only past the output of the heaviest ordinary customers: the script is
    # flagged (throttled before), an account harvesting long answers through the pool throttled.
    det = Detector(DetectorConfig())
    rng = np.random.default_rng(7)
    levels: dict[str, set[str]] = defaultdict(set)
    for m in range(40):
        events = _ordinary_minute(m, rng) + _rotating(m, "script", 4, net=30, offset=3, output=150)
        for a in det.process(events + _rotating(m, "harvester", 20)).actions:
            levels[a.entity_id].add(a.action)
    assert levels["script"] == {"flag"}
    assert "throttle" in levels["harvester"]


def test_an_account_sending_a_request_or_two_a_minute_is_flagged_not_throttled() -> None:
    # Two accounts ask for step-by-step reasoning from a new /24 every request, for half an hour
    # after the models are warm: one sends 20 requests a minute, the other 2. Both show the
    # same behaviour; only the one at volume is worth a throttle.
    det = Detector(DetectorConfig())
    rng = np.random.default_rng(7)

    def minute(m: int) -> list[UsageEvent]:
        return _ordinary_minute(m, rng) + _rotating(m, "thick", 20) + _rotating(m, "thin", 2)

    levels: dict[str, set[str]] = defaultdict(set)
    for m in range(40):
        for a in det.process(minute(m)).actions:
            levels[a.entity_id].add(a.action)
    assert det.population.kinds["account"].ready
    assert "throttle" in levels["thick"]
    assert levels["thin"] == {"flag"}


def test_a_behaviour_ordinary_customers_show_a_request_a_minute_joins_the_reference() -> None:
    # Twenty customers of a proxy reseller ask for step-by-step reasoning from a new /24 with
    # every request, one request a minute each (evidence 2.5: what strikes on its own at volume).
    # One request is one request's worth of risk: such windows weigh a third of their evidence,
    # stay in the reference, and once the reference holds them they no longer score as the
    # riskiest windows of the population. The same behaviour at ten requests a minute keeps
    # striking and is throttled.
    det = Detector(DetectorConfig())
    rng = np.random.default_rng(7)

    def minute(m: int) -> list[UsageEvent]:
        events = _ordinary_minute(m, rng) + _rotating(m, "extractor", 10, net=11)
        for k in range(20):
            events += _rotating(m, f"proxy-{k}", 1, net=12 + k, offset=50 * k + 7)
        return events

    striking: list[float] = []
    extractor: set[str] = set()
    for m in range(40):
        out = det.process(minute(m))
        extractor |= {a.action for a in out.actions if a.entity_id == "extractor"}
        for s in out.scored:
            proxies = [i for i, a in enumerate(s.ids) if a.startswith("proxy-")]
            if s.kind == "account" and m >= 20:
                assert s.evidence[proxies].min() >= 2.0
                striking.append(float((s.score[proxies] >= 0.999).mean()))
    assert np.mean(striking) <= 0.2, striking
    assert "throttle" in extractor


def test_a_thin_window_weighs_a_part_of_its_evidence_in_the_score_and_in_outright_strikes() -> None:
    # A customer asking for reasoning from a new /24 with every request, one request a minute
    # (evidence 2.5 over its history), and eight tutoring apps asking for reasoning in every
    # prompt at six a minute from their own address (evidence 1.0, all of it in each window).
    # Weighed by what its windows hold, the thin customer ranks under the apps; and before the
    # models warm up, when only outright strikes act, the same customer at ten requests a minute
    # is flagged and at one is not.
    def minute(m: int, rng: np.random.Generator, thick: int) -> list[UsageEvent]:
        start = _T0 + m * 60_000
        events = _ordinary_minute(m, rng)
        events += [
            UsageEvent(f"t{m}-{k}-{i}", start + 3_000 * i + k, f"tutor-{k}", f"10.200.{k}.1",
                       f"10.200.{k}.0/24", "m", 300, 600, cot_score=0.9)
            for k in range(8)
            for i in range(6)
        ]  # fmt: skip
        return events + _rotating(m, "thin", 1, net=11) + _rotating(m, "thick", thick, net=12)

    det = Detector(DetectorConfig())
    rng = np.random.default_rng(3)
    thin: list[float] = []
    tutors: list[float] = []
    for m in range(40):
        for s in det.process(minute(m, rng, 0)).scored:
            if s.kind == "account" and m >= 20:
                i = s.ids.index("thin")
                assert s.evidence[i] >= 2.0
                thin.append(float(s.score[i]))
                tutors += [float(s.score[s.ids.index(f"tutor-{k}")]) for k in range(8)]
    assert np.median(thin) < np.median(tutors), (np.median(thin), np.median(tutors))

    cold = Detector(DetectorConfig(calibration_warmup=10**9))  # no score ever counts
    rng = np.random.default_rng(3)
    acted: set[str] = set()
    for m in range(15):
        acted |= {a.entity_id for a in cold.process(minute(m, rng, 10)).actions}
    assert acted == {"thick"}, acted


def test_a_throttle_that_keeps_an_account_to_a_request_a_minute_is_renewed() -> None:
    # An extractor at ten requests a minute is throttled; the gateway holds it to one a minute.
    # Its thin windows are what the throttle does, not a change of heart: they keep their full
    # weight, so the throttle is renewed for as long as the behaviour lasts.
    det = Detector(DetectorConfig())
    rng = np.random.default_rng(7)
    rate = 10
    throttles: list[int] = []
    for m in range(200):
        events = _ordinary_minute(m, rng) + _rotating(m, "extractor", rate, net=11)
        for a in det.process(events).actions:
            assert a.entity_id != "extractor" or a.action != "release"
            if a.entity_id == "extractor" and a.action == "throttle":
                throttles.append(m)
                rate = 1
    assert throttles and max(throttles) >= 170, throttles


def test_without_cot_scores_long_answers_count_as_reasoning_unless_everyone_gets_them() -> None:
    # A gateway that sends no cot_score. An extractor gets long answers to short prompts: read
    # from its answers, it asks for reasoning (a behaviour worth 1.0) besides harvesting (0.5).
    # Where every ordinary customer gets long answers too, an answer says nothing about
    # reasoning, and nobody's evidence is read from answers.
    t0 = 1_800_000_000_000

    def run(ordinary_out: int) -> dict[str, float]:
        det = Detector(DetectorConfig())

        def event(m: int, who: str, i: int, inp: int, out: int) -> UsageEvent:
            return UsageEvent(f"{who}-{m}-{i}", t0 + m * 60_000 + 100 * i, who, "10.0.0.1",
                              f"10.{hash(who) % 200}.0.0/24", "m", inp, out)  # fmt: skip

        evidence: dict[str, float] = {}
        for m in range(6):
            events = [event(m, f"user-{i}", j, 200, ordinary_out) for i in range(300)
                      for j in range(3)]  # fmt: skip
            events += [event(m, "extractor", i, 100, 3_000) for i in range(40)]
            for s in det.process(events).scored:
                if s.kind == "account":
                    evidence.update(zip(s.ids, s.evidence.tolist(), strict=True))
        return evidence

    evidence = run(ordinary_out=300)
    assert evidence["extractor"] == 1.5
    assert max(v for a, v in evidence.items() if a.startswith("user-")) == 0.0
    evidence = run(ordinary_out=2_000)  # everyone's answers are long, harvest-shaped
    assert evidence["extractor"] == 0.5  # harvesting, read as ever; not reasoning
    assert max(v for a, v in evidence.items() if a.startswith("user-")) == 0.5


def test_a_deployment_sets_its_classifiers_operating_point() -> None:
    # A classifier calibrated low: it scores reasoning prompts around 0.35. An account asks for
    # reasoning in every prompt, from a new /24 each time, harvesting long answers to short
    # prompts. At the default verdict of 0.5 its prompts are not reasoning: rotation and
    # harvesting (1.5) strike nothing before the models warm up. Told that this classifier
    # means "reasoning" from 0.3, the same traffic is reasoning elicitation too (2.5), and the
    # account is flagged in its second window with that among its reasons. The setting is part
    # of the detector's version, so its decisions carry other enforcement ids.
    t0 = 1_800_000_000_000

    def minute(m: int) -> list[UsageEvent]:
        start = t0 + m * 60_000
        ordinary = _twenty_users(m, start, cot=0.05)
        asker = [
            UsageEvent(f"x{m}-{i}", start + 1_000 * i, "asker", f"10.{m}.{i}.7",
                       f"10.{m}.{i}.0/24", "m", 100, 2_000, cot_score=0.35)
            for i in range(30)
        ]  # fmt: skip
        return ordinary + asker

    results = {}
    for verdict in (0.5, 0.3):
        det = Detector(DetectorConfig(reasoning_verdict=verdict))
        evidence, actions = 0.0, []
        for m in range(6):
            out = det.process(minute(m))
            for sw in out.scored:
                if sw.kind == "account" and "asker" in sw.ids:
                    evidence = float(sw.evidence[sw.ids.index("asker")])
            actions += [a for a in out.actions if a.entity_id == "asker"]
        results[verdict] = (evidence, actions, det.config.version)
    assert results[0.5][0] == pytest.approx(1.5) and not results[0.5][1]
    assert results[0.3][0] == pytest.approx(2.5)
    first = results[0.3][1][0]
    assert first.action == "flag" and first.window_end_ms <= t0 + 2 * 60_000
    assert "reasoning_elicitation" in [r["feature"] for r in first.reasons]
    assert results[0.5][2] != results[0.3][2]


def test_a_verdict_threshold_outside_0_1_is_refused() -> None:
    for bad in (0.0, 1.0, 1.5, -0.1):
        try:
            DetectorConfig(reasoning_verdict=bad)
        except ValueError as exc:
            assert "DISTILLGUARD_REASONING_VERDICT" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_an_account_that_stays_near_the_flag_line_is_flagged_for_it() -> None:
    # An account asking for reasoning in every prompt, at a modest volume, ranks above the
    # twenty ordinary ones every minute, never above a flag line set out of reach: a run of
    # windows within the sustained budget flags it, and a reason says so. An account as unusual
    # that shows no extraction behaviour is never flagged for it.
    t0 = 1_800_000_000_000

    def minute(m: int, cot: float) -> list[UsageEvent]:
        start = t0 + m * 60_000
        odd = [
            UsageEvent(f"u{m}-{i}", start + 2_000 * i, "odd", "198.51.100.7", "198.51.100.0/24",
                       "m", 900, 200, cot_score=cot)
            for i in range(5)
        ]  # fmt: skip
        # The twenty ordinary accounts each behind a /24 of its own: blocks are scored too.
        users = [
            UsageEvent(f"o{m}-{k}", start + k, f"user-{k}", f"192.0.{k}.1", f"192.0.{k}.0/24",
                       "m", 400, 300, cot_score=0.1)
            for k in range(20)
        ]  # fmt: skip
        return users + odd

    def flags(
        sustained_budget: float, cot: float = 0.9, kind: str = "account"
    ) -> list[EnforcementAction]:
        policy = PolicyConfig(
            flag_budget=1e-9, sustained_budget=sustained_budget, release_budget=0.5
        )
        det = Detector(DetectorConfig(calibration_warmup=100, forest_window=100, policy=policy))
        out = []
        for m in range(20):
            out += [a for a in det.process(minute(m, cot)).actions if a.entity_kind == kind]
        return out

    flagged = flags(0.2)
    assert [(a.entity_id, a.action) for a in flagged] == [("odd", "flag")]
    # The account's block is as near the line for as long, and the rule is for accounts only:
    # a block holds many accounts, and one near the line is flagged on its own.
    assert flags(0.2, kind="ip_block") == []
    assert flagged[0].threshold == pytest.approx(0.8)
    assert "reasoning_elicitation" in [r["feature"] for r in flagged[0].reasons]
    assert flagged[0].reasons[-1]["feature"] == "sustained"
    detail = (
        f"{PolicyConfig().sustained_strikes} windows in a row in the top 20.0% of ordinary windows"
    )
    assert flagged[0].reasons[-1]["detail"] == detail
    assert flags(0.0) == []
    assert flags(0.2, cot=0.1) == []


def test_an_extractor_running_at_start_up_is_ranked_among_its_peers_from_the_first_minute() -> None:
    # The detector starts while an account asks for step-by-step reasoning in every prompt, five
    # times a minute from one address: evidence worth about one behaviour, short of an outright
    # strike, the top of 401 accounts every minute. Before the forest and the calibrator have
    # warmed up (~1,000 reference windows), its windows are read against the other accounts of
    # the same window, so the sustained run that flags it starts in the first minute, not after
    # the warm-up.
    rng = np.random.default_rng(7)
    det = Detector(DetectorConfig())

    def steady(m: int) -> list[UsageEvent]:
        start = _T0 + m * 60_000
        return [
            UsageEvent(f"s{m}-{i}", start + 9_000 * i, "steady", "198.51.100.7",
                       "198.51.100.0/24", "m", 900, 200, cot_score=0.9)
            for i in range(5)
        ]  # fmt: skip

    flagged_at, scores = None, []
    for m in range(10):
        out = det.process(_ordinary_minute(m, rng) + steady(m))
        assert not [a for a in out.actions if a.entity_id.startswith("user-")]
        scores += [
            float(sw.score[sw.ids.index("steady")])
            for sw in out.scored
            if sw.kind == "account" and "steady" in sw.ids
        ]
        hits = [a for a in out.actions if a.entity_id == "steady"]
        if hits and flagged_at is None:
            flagged_at = m
            assert hits[0].action == "flag"
            assert hits[0].reasons[-1]["feature"] == "sustained"
    # flagged after a run of windows in the top half percent that began while the models were
    # cold (scored 0 until they warmed up, the run would only start now)
    assert flagged_at is not None and flagged_at <= PolicyConfig().sustained_strikes, scores
    # the first windows' scores: the top of 401 accounts, each read against the other 400
    assert scores[0] == pytest.approx(1 - 1 / 401)


def test_traffic_replayed_whole_days_later_is_scored_exactly_as_it_was() -> None:
    # Same events, dated 3 days apart: the same scores and actions (what the forest learns in
    # which order is seeded by the window's time of day, not its date), so a replay of last
    # week's traffic, or a benchmark run on another day, decides as the first run did.
    rng = np.random.default_rng(5)
    shift = 3 * 86_400_000
    minutes = [
        _ordinary_minute(m, rng) + _rotating(m, "thick", 20) + _rotating(m, "thin", 2)
        for m in range(12)
    ]

    def run(later: int) -> tuple[list[list[float]], list[tuple[str, str, int]]]:
        det = Detector(DetectorConfig(calibration_warmup=500, forest_window=300))
        scores, acts = [], []
        for events in minutes:
            moved = [e._replace(ts_ms=e.ts_ms + later) for e in events]
            out = det.process(moved)
            scores += [s.score.tolist() + s.novelty.tolist() for s in out.scored]
            acts += [(a.entity_id, a.action, a.window_end_ms - later) for a in out.actions]
        assert det.population.kinds["account"].forest.ready
        return scores, acts

    assert run(0) == run(shift)
