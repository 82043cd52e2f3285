"""The enforcement policy, as a specification: each test is one rule of `models.policy`."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.policy import Decision, PolicyConfig, decide, impose
from models.state import EntityTable

MIN = 60_000
HIGH, ODD, LOW = 0.99999, 0.9995, 0.5
STRONG, WEAK = 3.0, 0.5  # behaviour evidence: extraction at full strength in three behaviours


def run(
    cfg: PolicyConfig,
    scores: list[float],
    requests: float = 50,
    evidence: float = STRONG,
    ids: tuple[str, ...] = ("x",),
    max_level: int = 3,
    window_requests: int | None = None,
    sustained: float | None = WEAK,
) -> list[tuple[int, str]]:
    t = EntityTable(n_features=1)
    rows = t.rows(list(ids))
    out = []
    for minute, s in enumerate(scores, start=1):
        for d in decide(
            t,
            rows,
            list(ids),
            np.array([s]),
            np.array([float(requests)]),
            np.array([evidence]),
            minute * MIN,
            cfg,
            max_level=max_level,
            window_requests=None if window_requests is None else np.array([window_requests]),
            sustained_evidence=sustained,
        ):
            out.append((minute, d.action))
    return out


def test_escalates_on_consecutive_striking_windows() -> None:
    # flag after 2 consecutive strikes, throttle after 3, suspend after 5 with a throttle in place
    assert run(PolicyConfig(), [HIGH] * 6) == [(2, "flag"), (3, "throttle"), (5, "suspend")]


def test_occasional_strikes_never_add_up() -> None:
    # crossing the line every other window is not sustained: the count starts again each time
    assert run(PolicyConfig(), [ODD, LOW] * 10) == []
    assert run(PolicyConfig(), [ODD, ODD, LOW]) == [(2, "flag")]


def test_a_steady_entity_just_under_the_flag_line_is_flagged_at_the_end_of_its_run() -> None:
    # in the top 0.3% every minute, never in the top 0.1% twice in a row: ordinary customers
    # outrank it now and then, and only its persistence sets it apart
    near = 0.997
    cfg = PolicyConfig()
    k = cfg.sustained_strikes
    assert 1 - cfg.sustained_budget < near < cfg.thresholds[1]
    assert run(cfg, [near, near, LOW] + [near] * k) == [(3 + k, "flag")]
    # a window over the flag line counts towards the run (it is near the line too)
    assert run(cfg, [near, ODD] + [near] * (k - 2)) == [(k, "flag")]
    # a flag only: throttles and suspensions keep their own thresholds
    assert run(cfg, [near] * 20) == [(k, "flag")]
    # interrupted, the run starts again; turned off, nothing
    assert run(cfg, ([near] * (k - 1) + [0.99]) * 5) == []
    assert run(PolicyConfig(sustained_budget=0.0), [near] * 20) == []
    assert run(cfg, [near] * 20, sustained=None) == []  # campaigns: the flag line only
    # its evidence under the bar the caller sets: never for being near the line
    assert run(cfg, [near] * 20, evidence=WEAK, sustained=1.0) == []


def test_a_sustained_flag_reports_the_threshold_it_crossed() -> None:
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    cfg = PolicyConfig()
    decisions = []
    for minute in range(1, cfg.sustained_strikes + 1):
        decisions += decide(
            t, rows, ["x"], np.array([0.997]), np.array([50.0]), np.array([WEAK]),
            minute * MIN, cfg, max_level=3, sustained_evidence=WEAK,
        )  # fmt: skip
    assert [(d.action, d.threshold, d.sustained) for d in decisions] == [
        ("flag", 1 - cfg.sustained_budget, True)
    ]
    # a flag over the flag line says it was not the run
    assert [d.sustained for d in _decisions(cfg, [HIGH, HIGH])] == [False]


def _decisions(cfg: PolicyConfig, scores: list[float]) -> list[Decision]:
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    return [
        d
        for minute, score in enumerate(scores, start=1)
        for d in decide(
            t, rows, ["x"], np.array([score]), np.array([50.0]), np.array([STRONG]),
            minute * MIN, cfg, max_level=1, sustained_evidence=WEAK,
        )
    ]  # fmt: skip


def _windows(
    cfg: PolicyConfig, windows: list[tuple[int, float, float]], table: EntityTable | None = None
) -> list[tuple[int, str, float]]:
    """(minute, score, evidence) windows of one entity; (minute, action, threshold) decided."""
    t = table or EntityTable(n_features=1)
    rows = t.rows(["x"])
    return [
        (minute, d.action, d.threshold)
        for minute, score, evidence in windows
        for d in decide(
            t, rows, ["x"], np.array([score]), np.array([50.0]), np.array([evidence]),
            minute * MIN, cfg, max_level=3, sustained_evidence=WEAK,
        )
    ]  # fmt: skip


def test_every_window_of_a_sustained_run_shows_extraction_behaviour() -> None:
    cfg = PolicyConfig()
    k = cfg.sustained_strikes
    rest = [(m, 0.997, WEAK) for m in range(2, k + 1)]
    # over the flag line once, with no behaviour: not part of the run that follows
    assert _windows(cfg, [(1, ODD, 0.0), *rest]) == []
    assert _windows(cfg, [(1, ODD, WEAK), *rest]) == [(k, "flag", 1 - cfg.sustained_budget)]


def test_a_lapsed_episode_leaves_no_run_behind() -> None:
    # flagged for a sustained run, gone past the flag's expiry and the cooldown: one window near
    # the line on its return is one window, not the fourth of a run
    cfg = PolicyConfig()
    back = (cfg.flag_ttl_ms + cfg.cooldown_ms) // MIN + 10
    k = cfg.sustained_strikes
    got = _windows(cfg, [(m, 0.997, WEAK) for m in range(1, k + 1)] + [(back, 0.997, WEAK)])
    assert got == [(k, "flag", 1 - cfg.sustained_budget)]
    # turned off, a return over the flag line is judged by the flag rule alone
    off = PolicyConfig(sustained_budget=0.0)
    got = _windows(off, [(1, HIGH, WEAK), (2, HIGH, WEAK), (back, HIGH, WEAK)])
    assert got == [(2, "flag", off.thresholds[1])]


def test_run_counts_are_capped_not_wrapped() -> None:
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    top = np.iinfo(np.int16).max
    t.near[rows], t.strikes[rows] = top, top
    _windows(PolicyConfig(), [(1, HIGH, STRONG)], t)
    assert int(t.near[rows][0]) == top and int(t.strikes[rows][0]) == top


def test_a_sustained_budget_over_the_release_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="DISTILLGUARD_SUSTAINED_BUDGET"):
        PolicyConfig(sustained_budget=0.05)
    with pytest.raises(ValueError, match="DISTILLGUARD_SUSTAINED_BUDGET"):
        PolicyConfig(sustained_budget=-0.001)


def test_an_entity_table_from_before_the_sustained_count_restores() -> None:
    t = EntityTable(n_features=1)
    t.rows(["x", "y"])
    old = t.__dict__.copy()
    del old["near"]
    restored = EntityTable.__new__(EntityTable)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert restored.near.shape == restored.strikes.shape and not restored.near.any()


def test_too_few_requests_do_nothing() -> None:
    assert run(PolicyConfig(), [HIGH] * 6, requests=2) == []


def test_throttle_and_suspend_need_behaviour_evidence() -> None:
    # an unusual customer showing no extraction behaviour is flagged for a look, nothing more
    assert run(PolicyConfig(), [HIGH] * 8, evidence=WEAK) == [(2, "flag")]
    # evidence enough for a throttle but not for a suspension
    assert run(PolicyConfig(), [HIGH] * 8, evidence=2.2) == [(2, "flag"), (3, "throttle")]


def test_a_request_or_two_a_minute_is_flagged_never_throttled() -> None:
    # A proxy customer asking for reasoning from a new address every time, one request a minute
    # for an hour: its history is full of evidence, but throttling it protects nothing.
    assert run(PolicyConfig(), [HIGH] * 8, requests=40, window_requests=2) == [(2, "flag")]
    assert run(PolicyConfig(), [HIGH] * 8, requests=40, window_requests=3) == [
        (2, "flag"),
        (3, "throttle"),
        (5, "suspend"),
    ]


def test_a_throttle_that_keeps_an_account_thin_is_renewed_and_escalated() -> None:
    # Twenty requests a minute until throttled, then the gateway holds it to two: it keeps
    # striking, so it is suspended and renewed, not left to lapse and throttled again each hour.
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    got = []
    for minute in range(1, 200):
        thin = int(t.level[rows][0]) >= 2
        for d in decide(
            t, rows, ["x"], np.array([HIGH]), np.array([50.0]), np.array([STRONG]),
            minute * MIN, PolicyConfig(), 3, window_requests=np.array([2 if thin else 20]),
        ):  # fmt: skip
            got.append((minute, d.action))
    assert [a for _, a in got[:3]] == ["flag", "throttle", "suspend"]
    assert "throttle" not in [a for _, a in got[3:]] and "release" not in [a for _, a in got]
    assert int(t.level[rows][0]) == 3


def test_outright_windows_strike_but_only_flag() -> None:
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    got = []
    for minute in range(1, 6):
        got += [
            (minute, d.action)
            for d in decide(
                t,
                rows,
                ["x"],
                np.array([LOW]),
                np.array([500.0]),
                np.array([STRONG]),
                minute * MIN,
                PolicyConfig(),
                3,
                outright=np.array([True]),
            )
        ]
    assert got == [(2, "flag")]


def test_an_entity_that_keeps_striking_outright_is_never_quiet() -> None:
    # Its score stays low (harvesting beyond every ordinary customer, read on the volume scale
    # alone, or a cold model's 0): half an hour of outright strikes keeps the flag; it is not
    # released as if the account had calmed down.
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    for minute in range(1, 31):
        decide(t, rows, ["x"], np.array([0.0]), np.array([500.0]), np.array([STRONG]),
               minute * MIN, PolicyConfig(), 3, outright=np.array([True]))  # fmt: skip
    assert int(t.level[rows][0]) == 1
    assert int(t.quiet[rows][0]) == 0


def test_release_needs_consecutive_quiet_windows_and_minimum_hold() -> None:
    cfg = PolicyConfig(release_windows=3, min_hold_ms=5 * MIN)
    # throttled at minute 3; quiet from minute 4; a relapse at minute 6 restarts the quiet count
    got = run(cfg, [HIGH, HIGH, HIGH, LOW, LOW, ODD, LOW, LOW, LOW, LOW])
    assert got == [(2, "flag"), (3, "throttle"), (9, "release")]


def test_expiry_lapses_without_renewal_and_renewal_extends() -> None:
    cfg = PolicyConfig(throttle_ttl_ms=4 * MIN, max_level_account=2)
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])

    def at(minute: int, score: float) -> list[tuple[str, int | None]]:
        return [
            (d.action, d.expires_ms)
            for d in decide(
                t,
                rows,
                ["x"],
                np.array([score]),
                np.array([50.0]),
                np.array([STRONG]),
                minute * MIN,
                cfg,
                2,
            )
        ]

    hits = [(m, *a) for m in range(1, 9) for a in at(m, HIGH)]
    assert hits[:2] == [(2, "flag", 2 * MIN + cfg.flag_ttl_ms), (3, "throttle", 7 * MIN)]
    assert (5, "throttle", 9 * MIN) in hits  # renewed once half its time had passed
    # silence past expiry: the level lapses; within the cooldown odd windows do not re-flag,
    # but renewed abuse goes straight back to throttle
    assert at(30, ODD) == [] and at(31, ODD) == [] and int(t.level[rows[0]]) == 0
    assert [a for a, _ in at(32, HIGH)] == ["throttle"]


def test_allowlisted_entities_are_never_enforced() -> None:
    cfg = PolicyConfig(allowlist=frozenset({"x"}))
    assert run(cfg, [HIGH] * 6) == []


def test_cooldown_blocks_reflagging_but_not_escalation() -> None:
    cfg = PolicyConfig(release_windows=2, min_hold_ms=0, cooldown_ms=30 * MIN)
    got = run(cfg, [ODD, ODD, LOW, LOW, ODD, ODD, LOW, HIGH, HIGH, HIGH])
    assert got[0] == (2, "flag")
    assert (6, "flag") not in got  # within the cooldown after the first episode ended quietly
    assert (10, "throttle") in got  # sustained abuse escalates regardless


def test_ip_blocks_are_capped_at_throttle() -> None:
    got = run(PolicyConfig(), [HIGH] * 9, requests=500, ids=("203.0.113.0/24",), max_level=2)
    assert [a for _, a in got] == ["flag", "throttle"]


def test_imposed_levels_raise_but_never_lower() -> None:
    t = EntityTable(n_features=1)
    rows = t.rows(["member", "suspended"])
    t.level[rows[1]], t.expires_ms[rows[1]] = 3, 10**13
    decisions = impose(t, rows, 2, MIN, PolicyConfig(), 0.9998)
    assert [(d.position, d.action) for d in decisions] == [(0, "throttle")]
    assert t.level[rows].tolist() == [2, 3]


def test_throttle_and_suspend_read_the_extraction_evidence_when_given() -> None:
    # A proxy customer's script: reasoning and rotation make 2.2, reasoning alone 1.2. The flag
    # reads the evidence, a throttle or a suspension only what the caller counts as extraction.
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    out = []
    for minute in range(1, 9):
        for d in decide(t, rows, ["x"], np.array([HIGH]), np.array([50.0]), np.array([2.2]),
                        minute * MIN, PolicyConfig(), 3, extraction=np.array([1.2])):  # fmt: skip
            out.append((minute, d.action))
    assert out == [(2, "flag")]
    assert run(PolicyConfig(), [HIGH] * 8, evidence=2.2) == [(2, "flag"), (3, "throttle")]
