from __future__ import annotations

from simulator.evaluation import evaluate, format_report

LABELS = {
    "accounts": {
        "c1": {"label": "camp-a", "archetype": "hydra"},
        "c2": {"label": "camp-a", "archetype": "hydra"},
        "c3": {"label": "camp-b", "archetype": "blatant"},
        "b1": {"label": "benign", "archetype": "chat"},
        "b2": {"label": "benign", "archetype": "eval_harness"},
        "b3": {"label": "benign", "archetype": "chat"},
    },
    "campaigns": {
        "camp-a": {"archetype": "hydra", "start": 60_000, "accounts": ["c1", "c2"]},
        "camp-b": {"archetype": "blatant", "start": 0, "accounts": ["c3"]},
    },
}


def act(kind, entity, action, ts, members=None):
    return {
        "entity_kind": kind,
        "entity_id": entity,
        "action": action,
        "ts": ts,
        "members": members,
    }


def test_members_count_as_hit_and_time_to_detection_is_from_campaign_start() -> None:
    actions = [
        act("ip_block", "10.0.0.0/24", "flag", 300_000, ["c1", "b1"]),
        act("account", "c2", "throttle", 180_000),
        act("account", "b2", "suspend", 240_000),
        act("account", "b2", "release", 600_000),
        act("account", "unknown", "flag", 1),
    ]
    r = evaluate(LABELS, actions)
    a = r["campaigns"]["camp-a"]
    assert a["accounts_caught"] == 2 and a["share_caught"] == 1.0
    assert a["minutes_to_first_action"] == 2.0
    assert r["campaigns"]["camp-b"] == {
        "archetype": "blatant",
        "accounts": 1,
        "accounts_caught": 0,
        "share_caught": 0.0,
        "caught": False,
        "minutes_to_first_action": None,
    }
    assert r["benign"]["hit"] == {"flag": 2, "throttle": 1, "suspend": 1}
    assert r["benign"]["by_archetype"]["chat"] == {"accounts": 2, "hit": 1}
    s = r["summary"]
    assert s["campaigns_caught"] == 1 and s["campaign_accounts_caught_share"] == 0.6667
    assert s["benign_throttled_or_suspended_share"] == round(1 / 3, 5)
    assert r["actions"]["account release"] == 1
    text = format_report(r)
    assert "camp-b" in text and "eval_harness 1/1" in text
