"""Enforcement actions scored against simulator labels: what was caught, how fast, who was hurt.

An account counts as hit by an action when the action names it as ``entity_id`` or in
``members``; ``release`` hits nobody. Time to detection is the event time of a campaign's first
action minus the campaign's start.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from schemas.validation import parse_timestamp

__all__ = ["evaluate", "format_report"]

LEVELS = {"flag": 1, "throttle": 2, "suspend": 3}


def evaluate(labels: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-campaign recall and time to first action; benign accounts hit per level and archetype.

    Examples
    --------
    >>> labels = {"accounts": {"a": {"label": "c-1", "archetype": "hydra"},
    ...                        "b": {"label": "benign", "archetype": "chat"}},
    ...           "campaigns": {"c-1": {"archetype": "hydra", "start": 0, "accounts": ["a"]}}}
    >>> acts = [{"entity_kind": "account", "entity_id": "a", "action": "throttle",
    ...          "ts": 120_000, "members": None}]
    >>> r = evaluate(labels, acts)
    >>> r["campaigns"]["c-1"]["caught"], r["campaigns"]["c-1"]["minutes_to_first_action"]
    (True, 2.0)
    >>> r["benign"]["hit"]
    {'flag': 0, 'throttle': 0, 'suspend': 0}
    """
    accounts: dict[str, dict[str, str]] = labels["accounts"]
    first_hit: dict[str, int] = {}
    max_level: dict[str, int] = defaultdict(int)
    volume: Counter[str] = Counter()
    for a in actions:
        volume[f"{a['entity_kind']} {a['action']}"] += 1
        level = LEVELS.get(a["action"], 0)
        if level == 0:
            continue
        ts = a["ts"] if isinstance(a["ts"], int) else parse_timestamp(a["ts"])
        named = [a["entity_id"]] if a["entity_kind"] == "account" else list(a.get("members") or [])
        for acct in named:
            if acct not in accounts:
                continue
            first_hit[acct] = min(first_hit.get(acct, ts), ts)
            max_level[acct] = max(max_level[acct], level)

    campaigns = {}
    for cid, c in labels["campaigns"].items():
        members = c["accounts"]
        caught = [m for m in members if m in first_hit]
        first = min((first_hit[m] for m in caught), default=None)
        campaigns[cid] = {
            "archetype": c["archetype"],
            "accounts": len(members),
            "accounts_caught": len(caught),
            "share_caught": round(len(caught) / len(members), 4) if members else 0.0,
            "caught": bool(caught),
            "minutes_to_first_action": None
            if first is None
            else round((first - int(c["start"])) / 60_000, 2),
        }

    benign = [a for a, lab in accounts.items() if lab["label"] == "benign"]
    hit = {name: 0 for name in LEVELS}
    by_archetype: dict[str, dict[str, int]] = defaultdict(lambda: {"accounts": 0, "hit": 0})
    for acct in benign:
        arch = accounts[acct]["archetype"]
        by_archetype[arch]["accounts"] += 1
        level = max_level.get(acct, 0)
        if level:
            by_archetype[arch]["hit"] += 1
            for name, lv in LEVELS.items():
                if level >= lv:
                    hit[name] += 1
    n_benign = max(len(benign), 1)
    total_campaign = sum(c["accounts"] for c in campaigns.values())
    total_caught = sum(c["accounts_caught"] for c in campaigns.values())
    ttd = sorted(
        c["minutes_to_first_action"]
        for c in campaigns.values()
        if c["minutes_to_first_action"] is not None
    )
    return {
        "campaigns": campaigns,
        "summary": {
            "campaigns_caught": sum(c["caught"] for c in campaigns.values()),
            "campaigns": len(campaigns),
            "campaign_accounts_caught_share": round(total_caught / max(total_campaign, 1), 4),
            "median_minutes_to_first_action": ttd[len(ttd) // 2] if ttd else None,
            "benign_flagged_share": round(hit["flag"] / n_benign, 5),
            "benign_throttled_or_suspended_share": round(hit["throttle"] / n_benign, 5),
        },
        "benign": {"accounts": len(benign), "hit": hit, "by_archetype": dict(by_archetype)},
        "actions": dict(volume),
    }


def format_report(report: dict[str, Any]) -> str:
    """A terminal table of `evaluate`'s result."""
    lines = [f"{'campaign':24s} {'archetype':16s} {'caught':>14s} {'first action':>13s}"]
    for cid, c in report["campaigns"].items():
        ttd = c["minutes_to_first_action"]
        lines.append(
            f"{cid:24s} {c['archetype']:16s} "
            f"{c['accounts_caught']:>5d}/{c['accounts']:<5d}{c['share_caught']:>4.0%} "
            f"{'-' if ttd is None else f'{ttd:.1f} min':>13s}"
        )
    b = report["benign"]
    s = report["summary"]
    lines.append(
        f"benign accounts: {b['accounts']}; hit: flag {b['hit']['flag']}, throttle "
        f"{b['hit']['throttle']}, suspend {b['hit']['suspend']} "
        f"(flagged {s['benign_flagged_share']:.3%}, throttled or suspended "
        f"{s['benign_throttled_or_suspended_share']:.3%})"
    )
    hurt = {k: v for k, v in b["by_archetype"].items() if v["hit"]}
    if hurt:
        lines.append(
            "benign hit by archetype: "
            + ", ".join(f"{k} {v['hit']}/{v['accounts']}" for k, v in sorted(hurt.items()))
        )
    lines.append(
        f"campaigns caught {s['campaigns_caught']}/{s['campaigns']}, campaign accounts caught "
        f"{s['campaign_accounts_caught_share']:.1%}, median time to first action "
        f"{s['median_minutes_to_first_action']} min"
    )
    return "\n".join(lines)
