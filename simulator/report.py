"""An evaluation report an analyst can read at a glance: one self-contained HTML file.

Three plots (matplotlib, rendered to PNG and embedded) next to the tables of `evaluate`:
time to first action per campaign, benign accounts hit per archetype and level, and, when the
scored windows are given, score timelines of caught and missed campaign accounts against the
highest-scoring ordinary accounts of each archetype, and the membership of the largest campaigns
over time.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import orjson

from schemas.validation import parse_timestamp

__all__ = ["account_timelines", "campaign_growth", "write_report"]

BUDGETS = {"flag": 1e-3, "throttle": 2e-4, "suspend": 5e-5}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def account_timelines(score_rows: Iterable[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per account, its (window end in ms, calibrated score) points in time order."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in score_rows:
        if row["entity_kind"] == "account":
            series[row["entity_id"]].append((parse_timestamp(row["window_end"]), row["score"]))
    for points in series.values():
        points.sort()
    return dict(series)


def _surprise(score: float) -> float:
    """-log10(1 - score): 3 = top 0.1%, 4 = top 0.01%."""
    return -math.log10(max(1.0 - score, 1e-10))


def _ttd_plot(report: dict[str, Any]) -> str:
    camps = report["campaigns"]
    names = list(camps)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    for i, cid in enumerate(names):
        c = camps[cid]
        ttd = c["minutes_to_first_action"]
        if ttd is None:
            ax.text(0.1, i, "missed", va="center", color="#b00020", fontweight="bold")
            continue
        ax.barh(i, max(ttd, 0.05), color="#1f77b4")
        ax.text(
            max(ttd, 0.05) + 0.05,
            i,
            f"{ttd:.1f} min, {c['share_caught']:.0%} of accounts",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("minutes from campaign start to first action (event time)")
    ax.set_title("Time to detection per campaign")
    return _png(fig)


def _benign_plot(report: dict[str, Any]) -> str:
    by_arch = report["benign"]["by_archetype"]
    names = sorted(by_arch)
    shares = [100.0 * by_arch[n]["hit"] / max(by_arch[n]["accounts"], 1) for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2))
    ax.barh(range(len(names)), shares, color="#d62728")
    for i, n in enumerate(names):
        ax.text(
            shares[i] + 0.01,
            i,
            f"{by_arch[n]['hit']}/{by_arch[n]['accounts']}",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% of the archetype's accounts hit by any action (flag or worse)")
    ax.set_title("False positives per benign archetype")
    ax.set_xlim(0, max([*shares, 1.0]) * 1.3)
    return _png(fig)


def _timeline_plot(
    labels: dict[str, Any],
    report: dict[str, Any],
    series: dict[str, list[tuple[int, float]]],
    hit: set[str],
    per_group: int = 3,
) -> str:
    accounts = labels["accounts"]
    start = min((p[0][0] for p in series.values() if p), default=0)
    fig, ax = plt.subplots(figsize=(10, 5))

    def draw(acct: str, color: str, style: str, label: str | None) -> None:
        pts = series.get(acct)
        if not pts:
            return
        ax.plot(
            [(t - start) / 60_000 for t, _ in pts],
            [_surprise(s) for _, s in pts],
            color=color,
            linestyle=style,
            linewidth=1.0,
            alpha=0.85,
            label=label,
        )

    shown: set[str] = set()
    for c in labels["campaigns"].values():
        members = [m for m in c["accounts"] if m in series]
        caught = [m for m in members if m in hit][:per_group]
        missed = [m for m in members if m not in hit][:per_group]
        for m in caught:
            draw(m, "#d62728", "-", None if "caught" in shown else "campaign account, caught")
            shown.add("caught")
        for m in missed:
            draw(m, "#ff7f0e", "--", None if "missed" in shown else "campaign account, missed")
            shown.add("missed")
    # The hardest ordinary accounts: the highest peak score of each archetype.
    best: dict[str, tuple[float, str]] = {}
    for acct, pts in series.items():
        lab = accounts.get(acct)
        if lab is None or lab["label"] != "benign" or not pts:
            continue
        peak = max(s for _, s in pts)
        if peak > best.get(lab["archetype"], (-1.0, ""))[0]:
            best[lab["archetype"]] = (peak, acct)
    for _, acct in best.values():
        draw(
            acct,
            "#7f7f7f",
            "-",
            None if "benign" in shown else "highest-scoring ordinary account of each archetype",
        )
        shown.add("benign")
    for name, budget in BUDGETS.items():
        ax.axhline(-math.log10(budget), color="black", linewidth=0.6, linestyle=":")
        ax.text(0, -math.log10(budget) + 0.05, f"{name} threshold", fontsize=7)
    ax.set_xlabel("minutes (event time)")
    ax.set_ylabel("calibrated score as -log10(1 - score)")
    ax.set_title("Score timelines: campaign accounts against the hardest ordinary ones")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def campaign_growth(score_rows: Iterable[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Per campaign, its (window end in ms, members) points in time order."""
    series: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in score_rows:
        if row["entity_kind"] == "campaign":
            members = int(row["features"].get("members", 0))
            series[row["entity_id"]].append((parse_timestamp(row["window_end"]), members))
    for points in series.values():
        points.sort()
    return dict(series)


def _campaign_plot(
    growth: dict[str, list[tuple[int, int]]], actions: list[dict[str, Any]], top: int = 8
) -> str:
    """Members over time of the largest campaigns, with their first action marked."""
    start = min((p[0][0] for p in growth.values() if p), default=0)
    biggest = sorted(growth, key=lambda c: -max(m for _, m in growth[c]))[:top]
    first: dict[str, tuple[int, str]] = {}
    for a in actions:
        if a["entity_kind"] == "campaign" and a["action"] != "release":
            ts = a["ts"] if isinstance(a["ts"], int) else parse_timestamp(a["ts"])
            if a["entity_id"] not in first or ts < first[a["entity_id"]][0]:
                first[a["entity_id"]] = (ts, a["action"])
    fig, ax = plt.subplots(figsize=(10, 4))
    for cid in biggest:
        pts = growth[cid]
        (line,) = ax.plot(
            [(t - start) / 60_000 for t, _ in pts],
            [m for _, m in pts],
            linewidth=1.2,
            label=f"{cid} (max {max(m for _, m in pts)})",
        )
        if cid in first:
            ts = first[cid][0]
            at = min(pts, key=lambda p: abs(p[0] - ts))
            ax.plot([(at[0] - start) / 60_000], [at[1]], marker="o", color=line.get_color(), ms=6)
    ax.set_xlabel("minutes (event time)")
    ax.set_ylabel("members")
    ax.set_title("Campaign membership over time (dot: first action on the campaign)")
    if biggest:
        ax.legend(loc="upper left", fontsize=7)
    return _png(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    out_dir: Path,
    labels: dict[str, Any],
    report: dict[str, Any],
    actions: list[dict[str, Any]],
    score_rows: Iterable[dict[str, Any]] | None = None,
) -> Path:
    """Write ``index.html`` (plots embedded) and ``report.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    hit: set[str] = set()
    for a in actions:
        if a["action"] != "release":
            hit.update([a["entity_id"]] if a["entity_kind"] == "account" else a["members"] or [])
    s = report["summary"]
    camp_rows = [
        [
            cid,
            c["archetype"],
            f"{c['accounts_caught']}/{c['accounts']}",
            f"{c['share_caught']:.1%}",
            "missed" if c["minutes_to_first_action"] is None else f"{c['minutes_to_first_action']}",
        ]
        for cid, c in report["campaigns"].items()
    ]
    arch_rows = [
        [k, v["accounts"], v["hit"], f"{v['hit'] / max(v['accounts'], 1):.2%}"]
        for k, v in sorted(report["benign"]["by_archetype"].items())
    ]
    plots = [_ttd_plot(report), _benign_plot(report)]
    if score_rows is not None:
        rows = list(score_rows)
        plots.append(_timeline_plot(labels, report, account_timelines(rows), hit))
        growth = campaign_growth(rows)
        if growth:
            plots.append(_campaign_plot(growth, actions))
    imgs = "".join(f'<p><img alt="plot" src="data:image/png;base64,{p}"></p>' for p in plots)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>distillguard evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}}th{{background:#f3f3f3}}.k{{font-size:15px}}</style></head>
<body><h1>distillguard evaluation</h1>
<p class="k">Campaigns caught <b>{s["campaigns_caught"]}/{s["campaigns"]}</b>;
campaign accounts caught <b>{s["campaign_accounts_caught_share"]:.1%}</b>;
median time to first action <b>{s["median_minutes_to_first_action"]} min</b>;
benign accounts flagged <b>{s["benign_flagged_share"]:.3%}</b>,
throttled or suspended <b>{s["benign_throttled_or_suspended_share"]:.3%}</b>.</p>
<h2>Campaigns</h2>
{
        _table(
            ["campaign", "archetype", "accounts caught", "share", "minutes to first action"],
            camp_rows,
        )
    }
<h2>Ordinary accounts hit, by archetype</h2>
{_table(["archetype", "accounts", "hit", "share"], arch_rows)}
<h2>Actions</h2>
{_table(["entity and action", "count"], sorted(report["actions"].items()))}
<h2>Plots</h2>{imgs}
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path
