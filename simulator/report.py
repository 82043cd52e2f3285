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
from datetime import UTC, datetime
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


def account_timelines(
    score_rows: Iterable[dict[str, Any]],
) -> dict[str, list[tuple[int, float, int]]]:
    """Per account, its (window end in ms, calibrated score, requests) points in time order."""
    series: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    for row in score_rows:
        if row["entity_kind"] == "account":
            end = parse_timestamp(row["window_end"])
            series[row["entity_id"]].append((end, row["score"], int(row.get("requests", 0))))
    for points in series.values():
        points.sort()
    return dict(series)


def _surprise(score: float) -> float:
    """-log10(1 - score): 3 = top 0.1%, 4 = top 0.01%."""
    return -math.log10(max(1.0 - score, 1e-10))


def _ttd_plot(report: dict[str, Any]) -> str | None:
    camps = report["campaigns"]
    names = list(camps)
    if not names:
        return None
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


def _benign_plot(report: dict[str, Any]) -> str | None:
    """Benign accounts hit per archetype; None when none was hit (no empty frame)."""
    by_arch = report["benign"]["by_archetype"]
    if not any(v["hit"] for v in by_arch.values()):
        return None
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
    series: dict[str, list[tuple[int, float, int]]],
    min_requests: int,
) -> str:
    """One line per campaign (the median of its accounts' scores per window, the band between the
    lowest and highest) against the highest-scoring ordinary account of each archetype. Windows
    with fewer than ``min_requests`` requests are never enforced whatever their score: they are
    drawn as hollow markers so a line over a threshold without an action does not read as a
    contradiction."""
    accounts = labels["accounts"]
    start = min((p[0][0] for p in series.values() if p), default=0)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.get_cmap("tab10")
    for k, (cid, c) in enumerate(labels["campaigns"].items()):
        per_window: dict[int, list[float]] = defaultdict(list)
        for m in c["accounts"]:
            for t, sc, _ in series.get(m, []):
                per_window[t].append(_surprise(sc))
        if not per_window:
            continue
        ts = sorted(per_window)
        xs = [(t - start) / 60_000 for t in ts]
        vals = [sorted(per_window[t]) for t in ts]
        color = colors(k % 10)
        ax.plot(
            xs,
            [v[len(v) // 2] for v in vals],
            color=color,
            linewidth=1.6,
            label=f"{cid} ({len(c['accounts'])} accounts, median and range)",
        )
        if len(c["accounts"]) > 1:
            ax.fill_between(
                xs, [v[0] for v in vals], [v[-1] for v in vals], color=color, alpha=0.12
            )
    # The hardest ordinary accounts: the highest peak score of each archetype.
    best: dict[str, tuple[float, str]] = {}
    for acct, pts in series.items():
        lab = accounts.get(acct)
        if lab is None or lab["label"] != "benign" or not pts:
            continue
        peak = (
            max(sc for _, sc, n in pts if n >= min_requests)
            if any(n >= min_requests for _, _, n in pts)
            else 0.0
        )
        if peak > best.get(lab["archetype"], (-1.0, ""))[0]:
            best[lab["archetype"]] = (peak, acct)
    shown = marked = False
    for _, acct in best.values():
        pts = series[acct]
        ax.plot(
            [(t - start) / 60_000 for t, _, _ in pts],
            [_surprise(sc) for _, sc, _ in pts],
            color="#7f7f7f",
            linewidth=0.8,
            alpha=0.8,
            label=None if shown else "highest-scoring ordinary account of each archetype",
        )
        low = [(t, sc) for t, sc, n in pts if n < min_requests]
        if low:
            ax.scatter(
                [(t - start) / 60_000 for t, _ in low],
                [_surprise(sc) for _, sc in low],
                facecolors="none",
                edgecolors="#7f7f7f",
                s=18,
                label=None if marked else f"window under {min_requests} requests: never enforced",
            )
            marked = True
        shown = True
    for name, budget in BUDGETS.items():
        ax.axhline(-math.log10(budget), color="black", linewidth=0.6, linestyle=":")
        ax.annotate(
            f"{name} threshold",
            xy=(1.0, -math.log10(budget)),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel("minutes (event time)")
    ax.set_ylabel("calibrated score as -log10(1 - score)")
    ax.set_title("Score timelines: each campaign against the hardest ordinary accounts")
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize=7, frameon=False)
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
    inputs: dict[str, str] | None = None,
    min_requests: int = 3,
) -> Path:
    """Write ``index.html`` (plots embedded) and ``report.json`` into ``out_dir``.

    ``inputs``: what the report was made from (file names), shown at the top with the scenario,
    its seed, the detector version(s) of the actions and when the report was written.
    """
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
    optional = [_ttd_plot(report), _benign_plot(report)]
    if score_rows is not None:
        rows = list(score_rows)
        optional.append(_timeline_plot(labels, account_timelines(rows), min_requests))
        growth = campaign_growth(rows)
        if growth:
            optional.append(_campaign_plot(growth, actions))
    plots = [p for p in optional if p is not None]
    imgs = "".join(f'<p><img alt="plot" src="data:image/png;base64,{p}"></p>' for p in plots)
    if report["benign"]["hit"]["flag"] == 0:
        imgs = "<p>No benign account was hit by any action.</p>" + imgs
    missed_rows = []
    for cid, c in labels["campaigns"].items():
        missed = sorted(a for a in c["accounts"] if a not in hit)
        if missed:
            more = f" and {len(missed) - 20} more" if len(missed) > 20 else ""
            missed_rows.append([cid, len(missed), ", ".join(missed[:20]) + more])
    scenario = labels.get("scenario", {})
    versions = sorted({str(a.get("detector_version")) for a in actions}) or ["(no actions)"]
    if scenario.get("randomized"):
        world = "randomized world"
    elif scenario:
        world = (
            f"{scenario.get('name', 'simulated')}: {scenario.get('minutes', '?')} minutes, "
            f"{scenario.get('benign_accounts', '?')} ordinary accounts, campaigns "
            f"{', '.join(scenario.get('campaigns', ())) or 'none'}"
        )
    else:
        world = "-"
    made = [
        ["traffic", world],
        ["seed", str(scenario.get("seed", "-"))],
        ["detector version", ", ".join(versions)],
        ["report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
        *[[k, v] for k, v in (inputs or {}).items()],
    ]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>distillguard evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}}th{{background:#f3f3f3}}.k{{font-size:15px}}</style></head>
<body><h1>distillguard evaluation</h1>
{_table(["made from", ""], made)}
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
<h2>Campaign accounts missed</h2>
{_table(["campaign", "missed", "accounts"], missed_rows) if missed_rows else "<p>None.</p>"}
<h2>Ordinary accounts hit, by archetype</h2>
{_table(["archetype", "accounts", "hit", "share"], arch_rows)}
<h2>Actions</h2>
{_table(["entity and action", "count"], sorted(report["actions"].items()))}
<h2>Plots</h2>{imgs}
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path
