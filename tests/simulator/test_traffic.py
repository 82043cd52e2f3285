from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from models.events import UsageEvent
from schemas.validation import validate_event
from simulator.traffic import ALL_CAMPAIGNS, SCENARIOS, Scenario, simulate
from tests.schemas.test_contracts import EVENT_SCHEMA

CONTRACT_FIELDS = set(EVENT_SCHEMA["properties"])
DAY_MS = 86_400_000


def test_events_carry_only_contract_fields_and_all_validate(small_traffic) -> None:
    labels = small_traffic.labels
    for e in small_traffic.events[::50]:
        assert set(e) <= CONTRACT_FIELDS  # nothing but the contract: no label can leak
        assert isinstance(validate_event(e), UsageEvent)
    # ids carry no hint of the label either
    campaign_accounts = {a for c in labels["campaigns"].values() for a in c["accounts"]}
    benign_accounts = set(labels["accounts"]) - campaign_accounts
    prefixes = {a.split("-")[0] for a in campaign_accounts} | {
        a.split("-")[0] for a in benign_accounts
    }
    assert prefixes == {"acct"}


def test_events_are_in_event_time_order_with_unique_ids(small_traffic) -> None:
    ts = [validate_event(e).ts_ms for e in small_traffic.events]  # type: ignore[union-attr]
    assert ts == sorted(ts)
    ids = [e["event_id"] for e in small_traffic.events]
    assert len(ids) == len(set(ids))


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    s = replace(SCENARIOS["small"], minutes=6, benign_accounts=200, campaign_start_minute=2)
    a, b, c = simulate(s), simulate(s), simulate(replace(s, seed=s.seed + 1))
    assert a.events == b.events and a.labels == b.labels
    assert a.events != c.events


def test_every_archetype_is_present_and_labelled(small_traffic) -> None:
    labels = small_traffic.labels
    archetypes = {v["archetype"] for v in labels["accounts"].values()}
    assert {
        "chat",
        "batch_job",
        "coding_agent",
        "eval_harness",
        "enterprise_nat",
        "mobile_cgnat",
        "new_account",
        "proxy_user",
    } <= archetypes
    assert {c["archetype"] for c in labels["campaigns"].values()} == set(ALL_CAMPAIGNS)
    for c in labels["campaigns"].values():
        assert c["start"] < c["end"] and c["accounts"]
    # IPv6 carrier traffic and corporate NAT blocks shared by many accounts are in there
    assert any(":" in e["ip"] for e in small_traffic.events)


def test_hydra_shares_proxy_blocks_with_ordinary_users(small_traffic) -> None:
    labels = small_traffic.labels["accounts"]
    blocks: dict[str, set[str]] = {}
    for e in small_traffic.events:
        ev = validate_event(e)
        assert isinstance(ev, UsageEvent)
        kind = labels[ev.account_id]["archetype"]
        if kind in ("hydra", "proxy_user"):
            blocks.setdefault(ev.ip_block, set()).add(kind)
    assert any(kinds == {"hydra", "proxy_user"} for kinds in blocks.values())


def test_ordinary_traffic_follows_the_clock() -> None:
    # 24 hours: customers sit in seven time zones and scripted ones ignore the clock, which
    # flattens the curve (one zone alone swings 4x), but the busiest hour still stands out.
    s = Scenario(minutes=24 * 60, benign_accounts=40, campaigns=())
    t = simulate(s)
    hours = np.array([(validate_event(e).ts_ms // 3_600_000) % 24 for e in t.events])  # type: ignore[union-attr]
    counts = np.bincount(hours, minlength=24)
    assert counts.max() > 1.3 * counts.min()


def test_unknown_campaign_archetype_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown campaign archetype"):
        simulate(Scenario(minutes=2, benign_accounts=10, campaigns=("nope",)))


def _times(events: list[dict[str, object]]) -> list[tuple[int, int | None]]:
    parsed = [validate_event(e) for e in events]
    return [(p.ts_ms, p.account_created_ms) for p in parsed if isinstance(p, UsageEvent)]


def test_traffic_is_dated_to_have_just_ended_whatever_the_day() -> None:
    """Fed to a worker, simulated traffic must be inside its skew bounds and ClickHouse's 90 days
    of scores on any day: a fixed date stopped the demo and the worker tests 89 days after it."""
    s = Scenario(minutes=5, benign_accounts=10, campaigns=("blatant",), campaign_start_minute=1)
    before = int(time.time() * 1000)
    dated = simulate(s)
    times = _times(dated.events)
    assert len(times) == len(dated.events)
    ts = [t for t, _ in times]
    assert before - DAY_MS - 5 * 60_000 <= min(ts) and max(ts) <= int(time.time() * 1000)
    start = dated.labels["scenario"]["start_ms"]
    assert start % DAY_MS == 0 and start == s.dated().start_ms  # the latest midnight that fits
    # pinned, it is the same traffic on whatever day: only the times move
    pinned = simulate(replace(s, start_ms=start - 3 * DAY_MS))
    later = 3 * DAY_MS
    assert [(t + later, c and c + later) for t, c in _times(pinned.events)] == times
    strip = ("ts", "account_created_at")
    assert [{k: v for k, v in e.items() if k not in strip} for e in pinned.events] == [
        {k: v for k, v in e.items() if k not in strip} for e in dated.events
    ]
    with pytest.raises(ValueError, match="date it"):
        _ = s.start
