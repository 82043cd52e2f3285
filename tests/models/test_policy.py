from __future__ import annotations

import numpy as np

from models.policy import PolicyConfig, decide
from models.state import EntityTable

MIN = 60_000
HIGH, ODD, LOW = 0.99999, 0.9995, 0.5


def run(cfg: PolicyConfig, scores: list[float], requests: int = 50, ids=("x",)):
    t = EntityTable(n_features=1)
    rows = t.rows(list(ids))
    out = []
    for minute, s in enumerate(scores, start=1):
        for d in decide(
            t, rows, list(ids), np.array([s]), np.array([requests]), minute * MIN, cfg, max_level=3
        ):
            out.append((minute, d.action))
    return out


def test_escalates_step_by_step_with_minimum_evidence() -> None:
    assert run(PolicyConfig(), [HIGH] * 6) == [(1, "flag"), (2, "throttle"), (4, "suspend")]


def test_one_odd_window_only_flags_and_too_few_requests_do_nothing() -> None:
    assert run(PolicyConfig(), [ODD] + [LOW] * 5) == [(1, "flag")]
    assert run(PolicyConfig(), [HIGH] * 5, requests=2) == []


def test_release_needs_consecutive_quiet_windows_and_minimum_hold() -> None:
    cfg = PolicyConfig(release_windows=3, min_hold_ms=5 * MIN)
    # throttled at minute 2; quiet from minute 3; a relapse at minute 5 restarts the quiet count
    got = run(cfg, [HIGH, HIGH, LOW, LOW, ODD, LOW, LOW, LOW, LOW])
    assert got == [(1, "flag"), (2, "throttle"), (8, "release")]


def test_expiry_lapses_without_renewal_and_renewal_extends() -> None:
    cfg = PolicyConfig(throttle_ttl_ms=4 * MIN, max_level_account=2)
    t = EntityTable(n_features=1)
    rows = t.rows(["x"])
    hits = []
    for minute in range(1, 8):
        for d in decide(t, rows, ["x"], np.array([HIGH]), np.array([50]), minute * MIN, cfg, 2):
            hits.append((minute, d.action, d.expires_ms))
    assert hits[:2] == [(1, "flag", 1 * MIN + cfg.flag_ttl_ms), (2, "throttle", 6 * MIN)]
    assert (4, "throttle", 8 * MIN) in hits  # renewed once half its time had passed

    # silence past expiry: the level lapses; within the cooldown a lone odd window is not
    # re-flagged, but renewed abuse goes straight back to throttle
    def at(minute: int, score: float) -> list[str]:
        return [
            d.action
            for d in decide(t, rows, ["x"], np.array([score]), np.array([50]), minute * MIN, cfg, 2)
        ]

    assert at(30, ODD) == [] and int(t.level[rows[0]]) == 0
    assert at(31, HIGH) == ["throttle"]
    # after the cooldown a new episode starts at flag again
    t.level[rows[0]] = 0
    t.changed_ms[rows[0]] = 0
    t.strikes[rows[0]] = 0
    assert at(300, ODD) == ["flag"]


def test_allowlisted_entities_are_never_enforced() -> None:
    cfg = PolicyConfig(allowlist=frozenset({"x"}))
    assert run(cfg, [HIGH] * 6) == []


def test_cooldown_blocks_reflagging_but_not_escalation() -> None:
    cfg = PolicyConfig(release_windows=2, min_hold_ms=0, cooldown_ms=30 * MIN)
    got = run(cfg, [ODD, LOW, LOW, ODD, LOW, HIGH, HIGH])
    assert got[0] == (1, "flag")
    assert (4, "flag") not in got  # within cooldown after the quiet end of the first episode
    assert (6, "throttle") in got  # the suppressed strike at minute 4 still counts as evidence


def test_ip_blocks_are_capped_at_throttle() -> None:
    t = EntityTable(n_features=1)
    rows = t.rows(["203.0.113.0/24"])
    actions = []
    for m in range(1, 10):
        actions += [
            d.action
            for d in decide(
                t,
                rows,
                ["203.0.113.0/24"],
                np.array([HIGH]),
                np.array([500]),
                m * MIN,
                PolicyConfig(),
                2,
            )
        ]
    assert "suspend" not in actions and "throttle" in actions
