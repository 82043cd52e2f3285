"""``distillguard investigate``: why an entity or a campaign was scored as it was."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from streams.cli._common import (
    LEGEND,
    bounded,
    clickhouse_options,
    clickhouse_settings,
    fmt,
    print_rows,
)
from streams.clickhouse import MAX_MINUTES, MAX_ROWS, Investigation, connect

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("investigate", help="why an entity was scored as it was (ClickHouse)")
    p.add_argument("target", choices=["account", "ip-block", "campaign", "top"])
    p.add_argument("entity", nargs="?", help="account id, CIDR block or campaign id")
    p.add_argument(
        "--kind",
        choices=["account", "ip-block", "campaign"],
        default="account",
        help="for top: which entities",
    )
    p.add_argument(
        "--since-minutes",
        type=bounded(1, MAX_MINUTES),
        default=60,
        help=f"for top: event-time range (1..{MAX_MINUTES})",
    )
    p.add_argument(
        "--limit", type=bounded(1, MAX_ROWS), default=20, help=f"rows per list (1..{MAX_ROWS})"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    clickhouse_options(p)
    p.set_defaults(func=cmd_investigate)


def cmd_investigate(args: argparse.Namespace) -> int:
    settings = clickhouse_settings(args)
    inv = Investigation(connect(settings.clickhouse_url), settings.clickhouse_database)
    if args.target == "top":
        kind = args.kind.replace("-", "_")
        rows = inv.top(kind, args.since_minutes, args.limit)
        if args.json:
            print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
        else:
            print_rows(
                f"top {kind}s, last {args.since_minutes} min of event time",
                rows,
                [
                    "entity_id",
                    "windows_over",
                    "max_evidence",
                    "max_novelty",
                    "max_level",
                    "requests",
                    "at",
                ],
            )
        return 0
    if args.target == "campaign":
        return _investigate_campaign(inv, args)
    kind = "account" if args.target == "account" else "ip_block"
    view = {
        "entity_kind": kind,
        "entity_id": args.entity,
        "windows": inv.windows(kind, args.entity, args.limit),
        "actions": inv.actions(kind, args.entity, args.limit),
        "linked": inv.linked(kind, args.entity, args.limit),
    }
    view["actions"].sort(key=lambda a: a["ts"], reverse=True)  # own and via blocks, one timeline
    if args.json:
        print(orjson.dumps(view, default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not (view["windows"] or view["actions"] or view["linked"]):
        print(f"no {kind} {args.entity!r} in ClickHouse; list them with: investigate top")
        return 1
    print(f"{kind} {args.entity}")
    print(LEGEND)
    print_rows(
        "recent windows",
        view["windows"],
        ["window_start", "requests", "evidence", "novelty", "score", "level", "drift"],
    )
    print(f"\nactions, newest first ({len(view['actions'])})")
    for a in view["actions"]:
        via = f" (as member of {a['via']})" if a.get("via") else ""
        print(
            f"  {fmt(a['ts'])}  {a['action']:8s} score {a['score']:.6f} >= "
            f"{a['threshold']:.6f}{via}"
        )
        for r in a["reasons"]:
            if r.get("detail"):
                print(f"      {r['detail']}")
                continue
            base = "-" if r.get("baseline") is None else f"{r['baseline']:g}"
            print(
                f"      {r['feature']:22s} {r['value']:>10g} vs baseline {base:>8s}  "
                f"contribution {r['contribution']:.0%}"
            )
    print_rows(
        "linked " + ("IP blocks" if kind == "account" else "accounts"),
        view["linked"],
        ["entity", "requests", "first_seen", "last_seen"],
    )
    return 0


def _investigate_campaign(inv: Investigation, args: argparse.Namespace) -> int:
    """One screen answering "why is this a campaign": what holds it together, how it grew,
    what was done about it, and who is in it."""
    cid = args.entity
    view = {
        "entity_kind": "campaign",
        "entity_id": cid,
        "windows": inv.windows("campaign", cid, args.limit),
        "actions": inv.actions("campaign", cid, args.limit),
        "growth": inv.campaign_growth(cid, args.limit),
        "members": inv.campaign_members(cid, args.limit),
    }
    if args.json:
        print(orjson.dumps(view, default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not (view["windows"] or view["growth"]):
        print(f"no campaign {cid!r} in ClickHouse; list them with: investigate top --kind campaign")
        return 1
    print(f"campaign {cid}")
    latest = view["actions"][0] if view["actions"] else None
    if latest is not None:
        when, score = fmt(latest["ts"]), fmt(latest["score"], "score")
        print(f"\nwhy ({when}, {latest['action']}, score {score}):")
        for r in latest["reasons"]:
            if r.get("detail"):  # what holds the accounts together
                print(f"        {r['detail']}")
            else:
                print(f"  {r['contribution']:4.0%}  {r['feature']} {r['value']:g}")
    growth = view["growth"]
    if growth:
        peak = max(g["members"] for g in growth)
        print("\nmembers over time (window end, members, joined that window)")
        for g in growth:
            bar = "#" * max(1, round(40 * g["members"] / peak))
            print(f"  {fmt(g['window_end'])}  {g['members']:6d}  +{g['joined']:<5d} {bar}")
    print(f"\nactions ({len(view['actions'])})")
    for a in view["actions"]:
        n = len(a.get("members") or [])
        score = fmt(a["score"], "score")
        print(f"  {fmt(a['ts'])}  {a['action']:8s} score {score}  {n} members named")
    print_rows(
        "recent windows",
        view["windows"],
        ["window_start", "requests", "evidence", "score", "level"],
    )
    print_rows(
        "members (first seen first)",
        view["members"],
        ["account_id", "first_window", "last_window", "windows"],
    )
    return 0
