"""The analyst's web view: server-rendered HTML over `Investigation`, charts as inline SVG.

Pages (all under ``/ui``, no JavaScript, no external resource, so it works offline):

- ``/ui/?kind=account|ip-block|campaign&minutes=60&limit=25``: the top entities of the last
  minutes of event time, ranked as ``Investigation.top`` ranks them (windows over the flag
  threshold, then evidence), each linking to its page.
- ``/ui/account/{id}``, ``/ui/ip-block/{cidr}``: score over time (log scale, with the flag,
  throttle and suspend thresholds and the actions marked; for an account also the line a run of
  windows near the flag line stays over), evidence and novelty over time, each
  action with its reasons, the linked blocks or accounts, the recent windows.
- ``/ui/campaign/{id}``: members over time with the actions marked, the links that hold the
  campaign together, its score, its actions and its members.

Mounting: `register_ui` adds these routes to any aiohttp application: the standalone server
of ``distillguard ui`` (`create_ui`) or the worker's Faust web app (in ``on_webserver_init``).
Queries go through ``run(fn, *args)``, which must run the blocking call off the event loop; in
the worker pass the engine's ``clickhouse`` so the UI shares its one-at-a-time chDB lock. A
server whose own middleware checks bearer tokens lets `is_ui_path` paths through (the UI checks
them itself), or browsers can only use the header there, not the login cookie.

Safety: every value is escaped (`html.escape`) and every id in a link percent-encoded; pages
carry a Content-Security-Policy that allows no script at all. Bad parameters answer a 400 page,
an unknown entity or page 404, a failed query 503. With a token, every page needs either
``Authorization: Bearer <token>`` (the API's rule) or the cookie that ``POST /ui/login`` sets
after checking the token (both compared with `hmac.compare_digest`); the login form posts the
token, so it never sits in a URL, a browser history or an access log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from aiohttp import web

from models.policy import PolicyConfig
from streams.clickhouse import MAX_MINUTES, MAX_ROWS, ClickHouseError, Investigation, one_line
from streams.params import BadRequest, check_id, check_params, int_param

__all__ = [
    "PREFIX",
    "InvProvider",
    "Runner",
    "create_ui",
    "is_ui_path",
    "register_ui",
    "score_axis",
    "svg_chart",
]

#: Where the pages live, in a standalone server and in the worker alike.
PREFIX = "/ui"
#: Longest entity id a page accepts (the API's bound).
#: The cookie a browser gets from ``POST /ui/login``: a MAC of the token, never the token.
COOKIE = "distillguard_ui"
COOKIE_SECONDS = 12 * 3600

#: Returns the `Investigation` to query, or None while the store is not open yet (503 page).
InvProvider = Callable[[], Investigation | None]
#: ``run(fn, *args)``: awaits ``fn(*args)`` run off the event loop (blocking ClickHouse calls).
Runner = Callable[..., Awaitable[Any]]

KINDS = {"account": "account", "ip-block": "ip_block", "campaign": "campaign"}
NAMES = {"account": "account", "ip-block": "IP block", "campaign": "campaign"}
PLURALS = {"account": "accounts", "ip-block": "IP blocks", "campaign": "campaigns"}
LEVELS = ("none", "flagged", "throttled", "suspended")
ACTION_COLORS = {
    "flag": "#b8860b",
    "throttle": "#e06000",
    "suspend": "#c0392b",
    "release": "#2e8b57",
}
#: An action's mark in a legend: what was done ("flagged"), beside the thresholds ("flag >= x").
PAST = {"flag": "flagged", "throttle": "throttled", "suspend": "suspended", "release": "released"}
SCORE_COLOR, EVIDENCE_COLOR, NOVELTY_COLOR = "#1f5fa8", "#6a3d9a", "#1b9e77"
#: The line an account stays over, window after window, to be flagged for it (a paler flag).
SUSTAINED_COLOR = "#d9b85c"
MEMBERS_COLOR, JOINED_COLOR = "#1f5fa8", "#9ecae1"
# Security headers of every page: no script may run, nothing is loaded from elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_BadRequest = BadRequest  # a parameter a page cannot use: answered with a 400 page


class _NotFound(LookupError):
    """No such entity or page: answered with a 404 page carrying the message."""


# ---------------------------------------------------------------------------------------------
# formatting


def _e(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return escape(str(value), quote=True)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(value: Any) -> str:
    """A ClickHouse time as ``YYYY-MM-DD HH:MM`` (UTC)."""
    t = _utc(value)
    return t.strftime("%Y-%m-%d %H:%M") if t else ("-" if value is None else str(value))


def _seconds(value: Any) -> float:
    t = _utc(value)
    return t.timestamp() if t else float("nan")


def _window(row: Mapping[str, Any]) -> str:
    """A window as ``YYYY-MM-DD HH:MM-HH:MM``."""
    end = _utc(row.get("window_end"))
    return _when(row.get("window_start")) + (end.strftime("-%H:%M") if end else "")


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table: ``-`` for none, integers as they are, floats to ``digits``.

    Examples
    --------
    >>> _num(None), _num(3), _num(0.12345), _num(0.9999537, 6), _num(float("nan"))
    ('-', '3', '0.123', '0.999954', '-')
    """
    if value is None or isinstance(value, bool):
        return "-" if value is None else ("yes" if value else "")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _level(value: Any) -> str:
    return LEVELS[value] if isinstance(value, int) and 0 <= value < len(LEVELS) else str(value)


def _href(kind: str, entity: str) -> str:
    """The page of an entity, its id percent-encoded (a ``/`` too), ready for an attribute.

    Examples
    --------
    >>> _href("account", '<a href="x">/')
    '/ui/account/%3Ca%20href%3D%22x%22%3E%2F'
    >>> _href("ip-block", "10.0.0.0/24")
    '/ui/ip-block/10.0.0.0%2F24'
    """
    return _e(f"{PREFIX}/{kind}/{quote(entity, safe='')}")


def _link(kind: str, entity: str) -> str:
    return f'<a href="{_href(kind, entity)}">{_e(entity)}</a>'


def _kind_of(entity: str) -> str:
    """The page kind of an entity named without its kind (the ``via`` of an action)."""
    try:
        ipaddress.ip_network(entity, strict=False)
    except ValueError:
        return "campaign"
    return "ip-block"


_CAMPAIGN_ID = re.compile(r"\bcampaign-[0-9a-f]{6,32}\b")


def _detail(text: str) -> str:
    """A reason's sentence, escaped, with the campaign ids in it linked to their pages."""
    return _CAMPAIGN_ID.sub(lambda m: _link("campaign", m.group(0)), _e(text))


# ---------------------------------------------------------------------------------------------
# charts: inline SVG, server-side


@dataclass(frozen=True)
class Line:
    """A series drawn as a line; ``points`` are (epoch seconds, value in axis units)."""

    label: str
    color: str
    points: Sequence[tuple[float, float]]
    step: bool = False


@dataclass(frozen=True)
class Bars:
    """A series drawn as bars one window wide."""

    label: str
    color: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Rule:
    """A horizontal line across the plot (a threshold)."""

    label: str
    color: str
    y: float


@dataclass(frozen=True)
class Mark:
    """A moment marked by a vertical line and a triangle; marks share a legend entry by label."""

    x: float
    label: str
    color: str
    title: str


def score_axis(score: float) -> float:
    """Where a calibrated score sits on the log axis: ``-log10(1 - score)``, so 0.9 is 1, 0.999
    is 3 and 0.99999 is 5 (a linear axis would put every threshold on one pixel).

    Examples
    --------
    >>> [round(score_axis(s), 2) for s in (0.0, 0.9, 0.999, 0.9998, 1.0)]
    [0.0, 1.0, 3.0, 3.7, 6.0]
    """
    return max(0.0, -math.log10(max(1.0 - score, 1e-6)))


def _score_ticks(top: float) -> list[tuple[float, str]]:
    return [(float(k), "0" if k == 0 else "0." + "9" * k) for k in range(int(top) + 1)]


def _linear_ticks(top: float) -> list[tuple[float, str]]:
    """About five round ticks from 0 to at least ``top``.

    Examples
    --------
    >>> [t for _, t in _linear_ticks(3.2)]
    ['0', '1', '2', '3', '4']
    >>> [t for _, t in _linear_ticks(0.8)]
    ['0', '0.2', '0.4', '0.6', '0.8']
    """
    top = max(top, 1e-9)
    steps = [b * 10.0**p for p in range(-2, 9) for b in (1.0, 2.0, 2.5, 5.0)]
    step = min(s for s in steps if top / s <= 5)
    n = math.ceil(top / step - 1e-9)
    return [(i * step, f"{i * step:g}") for i in range(n + 1)]


_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)


def _time_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Round times between ``lo`` and ``hi`` (epoch seconds), at most about eight."""
    span = max(hi - lo, 60.0)
    step = next((s for s in _TIME_STEPS if span / s <= 8), 7 * 86400)
    fmt = "%m-%d" if step >= 86400 else ("%m-%d %H:%M" if span > 86400 else "%H:%M")
    first = math.ceil(lo / step) * step
    out = []
    t = float(first)
    while t <= hi:
        out.append((t, datetime.fromtimestamp(t, tz=UTC).strftime(fmt)))
        t += step
    return out


def _legend_width(label: str) -> float:
    """Room for a legend entry: swatch, text (generously 7 px a character at 12 px), gap."""
    return 44 + 7.0 * len(label)


def svg_chart(
    *,
    label: str,
    y_label: str,
    y_ticks: Sequence[tuple[float, str]],
    lines: Sequence[Line] = (),
    bars: Sequence[Bars] = (),
    rules: Sequence[Rule] = (),
    marks: Sequence[Mark] = (),
    x_label: str = "window end",
    width: int = 880,
    height: int = 240,
) -> str:
    """One time chart as an inline SVG element: y from 0 to the last tick, x over the times of
    the points and marks. The legend has its own band above the plot, so it never covers a line.
    Every text is escaped; each mark has a tooltip (``<title>``)."""
    xs = [x for ln in lines for x, _ in ln.points] + [x for b in bars for x, _ in b.points]
    xs = [x for x in [*xs, *(m.x for m in marks)] if not math.isnan(x)]
    if not xs:
        return '<p class="empty">nothing to chart</p>'
    lo, hi = min(xs), max(xs)
    pad = max(30.0, (hi - lo) * 0.02)
    lo, hi = lo - pad, hi + pad
    y_top = max(t for t, _ in y_ticks) if y_ticks else 1.0

    # legend entries in reading order, wrapped into rows that fit the width
    entries: list[tuple[str, str, str]] = []  # (kind, color, label)
    entries += [("line", s.color, s.label) for s in lines]
    entries += [("bar", s.color, s.label) for s in bars]
    entries += [("rule", r.color, r.label) for r in rules]
    seen: set[str] = set()
    for m in marks:
        if m.label not in seen:
            seen.add(m.label)
            entries.append(("mark", m.color, m.label))
    left, right, bottom = 64, 16, 44
    rows: list[list[tuple[str, str, str]]] = [[]]
    used = 0.0
    for entry in entries:
        w = _legend_width(entry[2])
        if rows[-1] and used + w > width - left - right:
            rows.append([])
            used = 0.0
        rows[-1].append(entry)
        used += w
    top = 10 + 18 * len(rows) + 8
    plot_w, plot_h = width - left - right, height - top - bottom
    total_h = height

    def px(x: float) -> float:
        return left + (x - lo) / (hi - lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - min(max(y, 0.0), y_top) / y_top * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{_e(label)}" viewBox="0 0 {width} {total_h}" width="{width}" '
        f'height="{total_h}">',
        f"<title>{_e(label)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#bbb"/>',
    ]
    # legend
    for i, row in enumerate(rows):
        x, y = float(left), 10.0 + 18 * i + 9
        for kind, color, text in row:
            if kind == "line":
                out.append(
                    f'<path d="M{x:.1f} {y:.1f}h22" stroke="{color}" stroke-width="2.5" '
                    'fill="none"/>'
                )
            elif kind == "bar":
                out.append(
                    f'<rect x="{x + 5:.1f}" y="{y - 6:.1f}" width="12" height="12" fill="{color}"/>'
                )
            elif kind == "rule":
                out.append(
                    f'<path d="M{x:.1f} {y:.1f}h22" stroke="{color}" stroke-width="1.5" '
                    'stroke-dasharray="5 3" fill="none"/>'
                )
            else:
                out.append(
                    f'<path d="M{x + 5:.1f} {y - 6:.1f}h12l-6 11z" fill="{color}" stroke="none"/>'
                )
            out.append(f'<text x="{x + 28:.1f}" y="{y + 4:.1f}" class="lg">{_e(text)}</text>')
            x += _legend_width(text)
    # y grid and ticks
    for value, text in y_ticks:
        y = py(value)
        out.append(f'<path d="M{left} {y:.1f}h{plot_w}" stroke="#eee" fill="none"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tk" text-anchor="end">{_e(text)}</text>'
        )
    # x ticks
    for value, text in _time_ticks(lo, hi):
        x = px(value)
        out.append(f'<path d="M{x:.1f} {top + plot_h}v5" stroke="#888" fill="none"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" class="tk" text-anchor="middle">'
            f"{_e(text)}</text>"
        )
    # axis labels
    days = sorted({datetime.fromtimestamp(x, tz=UTC).strftime("%Y-%m-%d") for x in xs})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{total_h - 6}" class="ax" text-anchor="middle">'
        f"{_e(x_label)}, UTC ({_e(when)})</text>"
    )
    out.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" class="ax" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    # bars, then rules, then lines, then marks on top
    for bar in bars:
        gap = _spacing([x for x, _ in bar.points])
        w = max(1.5, gap / (hi - lo) * plot_w * 0.7)
        for x, v in bar.points:
            y = py(v)
            out.append(
                f'<rect x="{px(x) - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{top + plot_h - y:.1f}" fill="{bar.color}"/>'
            )
    for rule in rules:
        y = py(rule.y)
        out.append(
            f'<path d="M{left} {y:.1f}h{plot_w}" stroke="{rule.color}" stroke-width="1.5" '
            f'stroke-dasharray="5 3" fill="none"><title>{_e(rule.label)}</title></path>'
        )
    for line in lines:
        d = _path([(px(x), py(v)) for x, v in line.points], line.step)
        if d:
            out.append(
                f'<path d="{d}" stroke="{line.color}" stroke-width="2" fill="none" '
                'stroke-linejoin="round"/>'
            )
        if len(line.points) <= 90:
            out += [
                f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="2.5" fill="{line.color}"/>'
                for x, v in line.points
            ]
    for m in marks:
        x = px(m.x)
        out.append(
            f'<g class="mark"><title>{_e(m.title)}</title>'
            f'<path d="M{x:.1f} {top}v{plot_h}" stroke="{m.color}" stroke-opacity="0.55" '
            'fill="none"/>'
            f'<path d="M{x - 5:.1f} {top - 1}h10l-5 9z" fill="{m.color}"/></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _spacing(xs: Sequence[float]) -> float:
    """The usual distance between consecutive points (a window), 60 s when it cannot tell."""
    diffs = sorted(b - a for a, b in itertools.pairwise(xs) if b > a)
    return diffs[len(diffs) // 2] if diffs else 60.0


def _path(points: Sequence[tuple[float, float]], step: bool) -> str:
    """An SVG path through ``points`` (pixels) that breaks where windows are missing (more than
    two and a half windows apart), so a quiet stretch is not drawn as a trend."""
    if len(points) < 2:
        return ""
    parts = [f"M{points[0][0]:.1f} {points[0][1]:.1f}"]
    gap = _spacing([x for x, _ in points])
    for (x0, _), (x1, y1) in itertools.pairwise(points):
        if x1 - x0 > 2.5 * gap:
            parts.append(f"M{x1:.1f} {y1:.1f}")
        elif step:
            parts.append(f"H{x1:.1f}V{y1:.1f}")
        else:
            parts.append(f"L{x1:.1f} {y1:.1f}")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# page parts


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:10px 24px;display:flex;gap:22px;align-items:baseline}
header a{color:#cfe3ff;text-decoration:none}
header a.brand{color:#fff;font-weight:600;font-size:16px}
main{padding:14px 24px 40px;max-width:1100px}
h1{font-size:20px;margin:8px 0 4px;word-break:break-all}h2{font-size:16px;margin:22px 0 6px}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px}
th,td{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}
.lead{color:#555;margin:2px 0 10px}.empty{color:#777;font-style:italic}
.pill{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px}
.l0{background:#8a949e}.l1{background:#b8860b}.l2{background:#e06000}.l3{background:#c0392b}
.a-flag{color:#b8860b}.a-throttle{color:#e06000}.a-suspend{color:#c0392b}.a-release{color:#2e8b57}
.action{background:#fff;border:1px solid #e3e6ea;border-left:4px solid #8a949e;padding:6px 10px;
margin:8px 0}.action.flag{border-left-color:#b8860b}.action.throttle{border-left-color:#e06000}
.action.suspend{border-left-color:#c0392b}.action.release{border-left-color:#2e8b57}
.action table{margin:4px 0 2px}figure{margin:6px 0 12px}figcaption{font-weight:600;margin:2px 0}
svg.chart{background:#fafbfc;max-width:100%;height:auto}
svg .lg{font-size:12px;fill:#333}svg .tk{font-size:11px;fill:#555}svg .ax{font-size:12px;fill:#333}
form.inline{display:flex;gap:10px;align-items:center;margin:6px 0 12px}
.err{background:#fff;border:1px solid #e3c0c0;border-left:4px solid #c0392b;padding:10px 14px;
word-break:break-all}
ul.links{columns:3;margin:4px 0}code{background:#eef1f5;padding:0 3px}
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    nav = "".join(
        f'<a href="{PREFIX}/?kind={k}">top {label}</a>'
        for k, label in (
            ("account", "accounts"),
            ("ip-block", "IP blocks"),
            ("campaign", "campaigns"),
        )
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{_e(title)} · distillguard</title><style>{_STYLE}</style></head><body>"
        f'<header><a class="brand" href="{PREFIX}/">distillguard</a>{nav}</header>'
        f"<main>{body}</main></body></html>"
    )
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )


def _error_page(status: int, title: str, message: str) -> web.Response:
    body = (
        f"<h1>{_e(title)}</h1><p class=err>{_e(message)}</p>"
        f'<p><a href="{PREFIX}/">back to the top entities</a></p>'
    )
    return _page(title, body, status)


def _table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, Callable[[Mapping[str, Any]], str]]],
    empty: str = "none",
) -> str:
    """A table of ``rows``; each column is (header, css class, cell as HTML already escaped)."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f'<th class="{c}">{_e(h)}</th>' for h, c, _ in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{cell(r)}</td>' for _, c, cell in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pill(level: Any) -> str:
    cls = f"l{level}" if isinstance(level, int) and 0 <= level <= 3 else "l0"
    return f'<span class="pill {cls}">{_e(_level(level))}</span>'


def _reasons(reasons: Sequence[Mapping[str, Any]]) -> str:
    """An action's reasons: a feature with its value, the entity's own baseline, the
    population's and its share of the raw risk; or the sentence of a reason that is not one
    number (what holds a campaign together, which campaign an account joined)."""
    if not reasons:
        return '<p class="empty">no reasons recorded</p>'
    rows = []
    for r in reasons:
        feature = _e(r.get("feature", ""))
        if r.get("detail"):
            rows.append(
                f'<tr class="detail"><td>{feature}</td><td colspan="4">'
                f"{_detail(str(r['detail']))}</td></tr>"
            )
            continue
        contribution = r.get("contribution")
        share = f"{contribution:.0%}" if isinstance(contribution, (int, float)) else "-"
        rows.append(
            f"<tr><td>{feature}</td><td class=n>{_e(_fmt_g(r.get('value')))}</td>"
            f"<td class=n>{_e(_fmt_g(r.get('baseline')))}</td>"
            f"<td class=n>{_e(_fmt_g(r.get('population_baseline')))}</td>"
            f"<td class=n>{_e(share)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>feature</th><th class=n>value</th><th class=n>own baseline</th>"
        "<th class=n>population baseline</th><th class=n>contribution</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _fmt_g(value: Any) -> str:
    """A reason's number as ``:g`` (``-`` for none).

    Examples
    --------
    >>> _fmt_g(0.9867), _fmt_g(432.0), _fmt_g(None)
    ('0.9867', '432', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def _members(members: Sequence[str], shown: int = 200) -> str:
    if not members:
        return ""
    links = "".join(f"<li>{_link('account', m)}</li>" for m in members[:shown])
    more = f"<p>and {len(members) - shown} more</p>" if len(members) > shown else ""
    return (
        f"<details><summary>{len(members)} member account{'s' if len(members) != 1 else ''}"
        f'</summary><ul class="links">{links}</ul>{more}</details>'
    )


def _actions(actions: Sequence[Mapping[str, Any]]) -> str:
    """Each action, newest first, with its reasons and the accounts it covers."""
    if not actions:
        return '<p class="empty">no action recorded</p>'
    out = []
    for a in actions:
        name = str(a.get("action", ""))
        cls = name if name in ACTION_COLORS else ""
        via = ""
        if a.get("via"):
            via_id = str(a["via"])
            via_kind = _kind_of(via_id)
            via = f" as a member of {NAMES[via_kind]} {_link(via_kind, via_id)}"
        expires = f", expires {_e(_when(a.get('expires_at')))}" if a.get("expires_at") else ""
        out.append(
            f'<div class="action {_e(cls)}"><div><b class="a-{_e(cls)}">{_e(name)}</b> at '
            f"{_e(_when(a.get('ts')))}, score {_e(_num(a.get('score'), 6))} &ge; "
            f"{_e(_num(a.get('threshold'), 6))}{expires}{via}</div>"
            f"{_reasons(a.get('reasons') or [])}{_members(list(a.get('members') or []))}</div>"
        )
    return "".join(out)


def _action_marks(actions: Sequence[Mapping[str, Any]]) -> list[Mark]:
    marks = []
    for a in sorted(actions, key=lambda a: _seconds(a.get("ts"))):
        name = str(a.get("action", ""))
        via = f" (as member of {a['via']})" if a.get("via") else ""
        marks.append(
            Mark(
                _seconds(a.get("ts")),
                PAST.get(name, name),
                ACTION_COLORS.get(name, "#555"),
                f"{name} at {_when(a.get('ts'))}, score {_num(a.get('score'), 6)}{via}",
            )
        )
    return [m for m in marks if not math.isnan(m.x)]


def _score_chart(
    windows: Sequence[Mapping[str, Any]],
    actions: Sequence[Mapping[str, Any]],
    policy: PolicyConfig,
    sustained: bool = False,
) -> str:
    """The score over time with the thresholds; with ``sustained`` (accounts), also the line an
    account flagged for staying near the flag line stayed over, when the policy has one."""
    _, flag, throttle, suspend = policy.thresholds
    points = [(_seconds(w["window_end"]), score_axis(float(w["score"]))) for w in windows]
    highest = max([y for _, y in points] + [score_axis(suspend)])
    top = min(6, max(5, math.ceil(highest)))
    near = 1.0 - policy.sustained_budget
    rules = [
        Rule(f"flag ≥ {flag:g}", ACTION_COLORS["flag"], score_axis(flag)),
        Rule(f"throttle ≥ {throttle:g}", ACTION_COLORS["throttle"], score_axis(throttle)),
        Rule(f"suspend ≥ {suspend:g}", ACTION_COLORS["suspend"], score_axis(suspend)),
    ]
    if sustained and near < flag:
        label = f"flag: {policy.sustained_strikes} in a row ≥ {near:g}"
        rules.insert(0, Rule(label, SUSTAINED_COLOR, score_axis(near)))
    return svg_chart(
        label="score over time",
        y_label="score (log scale)",
        y_ticks=_score_ticks(top),
        lines=[Line("score", SCORE_COLOR, points)],
        rules=rules,
        marks=_action_marks(actions),
    )


def _behaviour_chart(windows: Sequence[Mapping[str, Any]], policy: PolicyConfig) -> str:
    evidence = [(_seconds(w["window_end"]), float(w["evidence"])) for w in windows]
    novelty = [(_seconds(w["window_end"]), float(w["novelty"])) for w in windows]
    top = max([v for _, v in evidence + novelty] + [policy.suspend_evidence, 1.0])
    return svg_chart(
        label="evidence and novelty over time",
        y_label="evidence / novelty",
        y_ticks=_linear_ticks(top * 1.08),  # headroom: no rule on the plot's edge
        lines=[
            Line("evidence", EVIDENCE_COLOR, evidence),
            Line("novelty", NOVELTY_COLOR, novelty),
        ],
        rules=[
            Rule(
                f"evidence a throttle needs ({policy.throttle_evidence:g})",
                ACTION_COLORS["throttle"],
                policy.throttle_evidence,
            ),
            Rule(
                f"evidence a suspension needs ({policy.suspend_evidence:g})",
                ACTION_COLORS["suspend"],
                policy.suspend_evidence,
            ),
        ],
    )


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{svg}</figure>"


_WINDOW_COLUMNS: list[tuple[str, str, Callable[[Mapping[str, Any]], str]]] = [
    ("window (UTC)", "", lambda r: _e(_window(r))),
    ("requests", "n", lambda r: _e(_num(r.get("requests")))),
    ("evidence", "n", lambda r: _e(_num(r.get("evidence")))),
    ("novelty", "n", lambda r: _e(_num(r.get("novelty")))),
    ("score", "n", lambda r: _e(_num(r.get("score"), 6))),
    ("level", "", lambda r: _pill(r.get("level"))),
    ("drift", "", lambda r: _e(_num(r.get("drift")))),
]

LEGEND = (
    "evidence: extraction behaviours on fixed scales (0 none, 1 one behaviour in full, up to "
    "about 4); novelty: how rare the window is among ordinary ones (0 to 1; for a campaign, its "
    "coordination, 0 upwards); score: calibrated, "
    "0.999 = riskier than all but 0.1% of ordinary windows; level: the entity's enforcement "
    "level after the window."
)


# ---------------------------------------------------------------------------------------------
# parameters


def _params(query: Mapping[str, str], allowed: set[str]) -> None:
    check_params(query, allowed, noun="page")


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return int_param(query, name, default, low, high, empty_is_default=True)


def _entity(raw: str, kind: str) -> str:
    if not raw:
        raise _BadRequest(f"give the {kind} in the path: {PREFIX}/{kind}/ID")
    return check_id(raw, cidr=kind == "ip-block", what="an id")


# ---------------------------------------------------------------------------------------------
# the pages


def _token_mac(token: str) -> str:
    return hmac.new(token.encode(), b"distillguard-ui-session", hashlib.sha256).hexdigest()


class _UI:
    def __init__(
        self, inv_provider: InvProvider, token: str | None, run: Runner, policy: PolicyConfig
    ) -> None:
        self.inv_provider = inv_provider
        self.token = token or None
        self.run = run
        self.policy = policy

    # -- access ------------------------------------------------------------------------------

    def allowed(self, request: web.Request) -> bool:
        """The API's rule (``Authorization: Bearer <token>``), or the cookie of the login form."""
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), _token_mac(self.token).encode())

    def _login_form(self, next_path: str, message: str = "") -> str:
        note = f'<p class="err">{_e(message)}</p>' if message else ""
        return (
            f"{note}<p>This view needs the web token (<code>DISTILLGUARD_WEB_TOKEN</code>): send "
            "<code>Authorization: Bearer &lt;token&gt;</code>, or enter it here once; the browser "
            f"then keeps a cookie for {COOKIE_SECONDS // 3600} hours.</p>"
            f'<form class="inline" method="post" action="{PREFIX}/login">'
            f'<input type="hidden" name="next" value="{_e(next_path)}">'
            '<label>token <input type="password" name="token" autocomplete="current-password" '
            'autofocus required></label><button type="submit">open</button></form>'
        )

    def _login_page(self, next_path: str, message: str = "", status: int = 401) -> web.Response:
        body = "<h1>token needed</h1>" + self._login_form(next_path, message)
        resp = _page("token needed", body, status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.token is None:
            raise web.HTTPSeeOther(f"{PREFIX}/", headers=HEADERS)
        if request.method == "GET":
            if set(request.query) - {"next"}:
                return _error_page(
                    400,
                    "bad request",
                    "send the token with the form (POST), not in the URL: a URL stays in the "
                    "browser's history and in access logs",
                )
            return self._login_page(_next(request.query.get("next")), status=200)
        form = await request.post()
        given = str(form.get("token", ""))
        target = _next(str(form.get("next", "")))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self._login_page(target, "wrong token")
        resp = _see_other(target)
        resp.set_cookie(
            COOKIE,
            _token_mac(self.token),
            max_age=COOKIE_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        resp = _see_other(f"{PREFIX}/")
        resp.del_cookie(COOKIE, path=PREFIX)
        return resp

    def page(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Token check, then the page; its errors as pages (400, 404, 503)."""

        async def guarded(request: web.Request) -> web.Response:
            if not self.allowed(request):
                return self._login_page(_next(request.path_qs))
            try:
                return await handler(request)
            except _BadRequest as exc:
                return _error_page(400, "bad request", str(exc))
            except _NotFound as exc:
                return _error_page(404, "not found", str(exc))
            except ClickHouseError as exc:
                return _error_page(503, "store unavailable", f"ClickHouse: {one_line(exc)}")

        return guarded

    def inv(self) -> Investigation:
        inv = self.inv_provider()
        if inv is None:
            raise ClickHouseError("the store is not open yet (the worker is starting)")
        return inv

    # -- pages -------------------------------------------------------------------------------

    async def top(self, request: web.Request) -> web.Response:
        q = request.query
        _params(q, {"kind", "minutes", "limit"})
        kind = q.get("kind") or "account"
        if kind not in KINDS:
            raise _BadRequest("kind must be account, ip-block or campaign")
        minutes = _int(q, "minutes", 60, 1, MAX_MINUTES)
        limit = _int(q, "limit", 25, 1, MAX_ROWS)
        inv = self.inv()
        found = await self.run(inv.top, KINDS[kind], minutes, limit, self.policy.thresholds[1])
        rows = [{**r, "rank": i} for i, r in enumerate(found, 1)]
        options = "".join(
            f'<option value="{k}"{" selected" if k == kind else ""}>{NAMES[k]}</option>'
            for k in KINDS
        )
        form = (
            f'<form class="inline" method="get" action="{PREFIX}/">'
            f'<label>kind <select name="kind">{options}</select></label>'
            f'<label>last <input type="number" name="minutes" min="1" max="{MAX_MINUTES}" '
            f'value="{minutes}" style="width:6em"> minutes of event time</label>'
            f'<label>rows <input type="number" name="limit" min="1" max="{MAX_ROWS}" '
            f'value="{limit}" style="width:5em"></label><button type="submit">show</button></form>'
        )
        columns: list[tuple[str, str, Callable[[Mapping[str, Any]], str]]] = [
            ("#", "n", lambda r: str(r["rank"])),
            (NAMES[kind], "", lambda r: _link(kind, str(r["entity_id"]))),
            ("windows over flag", "n", lambda r: _e(_num(r.get("windows_over")))),
            ("max evidence", "n", lambda r: _e(_num(r.get("max_evidence")))),
            ("max novelty", "n", lambda r: _e(_num(r.get("max_novelty")))),
            ("max score", "n", lambda r: _e(_num(r.get("max_score"), 6))),
            ("max level", "", lambda r: _pill(r.get("max_level"))),
            ("requests", "n", lambda r: _e(_num(r.get("requests")))),
            ("max score at", "", lambda r: _e(_when(r.get("at")))),
        ]
        body = (
            f"<h1>top {PLURALS[kind]}</h1>"
            f'<p class="lead">The last {minutes} minutes of event time (up to the newest window '
            "in the store), ranked by windows at or over the flag threshold "
            f"({self.policy.thresholds[1]:g}), then by the strongest evidence, then novelty: a "
            "calibrated score ties at its ceiling for every clear case, these do not.</p>"
            f"{form}"
            + _table(rows, columns, f"no {NAMES[kind]} window in the last {minutes} minutes")
            + f'<p class="lead">{_e(LEGEND)}</p>'
        )
        return _page(f"top {PLURALS[kind]}", body)

    async def entity(self, request: web.Request) -> web.Response:
        kind = "account" if request.path.startswith(f"{PREFIX}/account/") else "ip-block"
        entity = _entity(request.match_info["id"], kind)
        q = request.query
        _params(q, {"limit"})
        limit = _int(q, "limit", 120, 1, MAX_ROWS)
        store_kind = KINDS[kind]
        inv = self.inv()
        windows = await self.run(inv.windows, store_kind, entity, limit)
        actions = await self.run(inv.actions, store_kind, entity)
        linked = await self.run(inv.linked, store_kind, entity)
        if not (windows or actions or linked):
            raise _NotFound(f"no {NAMES[kind]} {entity!r} in ClickHouse; find one on the top page")
        actions.sort(key=lambda a: _seconds(a.get("ts")), reverse=True)
        windows = windows[::-1]  # oldest first for the charts
        latest = windows[-1] if windows else None
        other = "ip-block" if kind == "account" else "account"
        summary = (f"level now {_pill(latest.get('level'))}, " if latest else "") + (
            f"{len(windows)} window{'s' if len(windows) != 1 else ''}"
            + (
                f" from {_e(_when(windows[0]['window_start']))} to "
                f"{_e(_when(windows[-1]['window_end']))}"
                if windows
                else ""
            )
            + f", {len(actions)} action{'s' if len(actions) != 1 else ''}, "
            f"{len(linked)} linked {NAMES[other] if len(linked) == 1 else PLURALS[other]}"
        )
        charts = (
            _figure(
                "score over time: thresholds dashed, actions marked (hover for details)",
                _score_chart(windows, actions, self.policy, sustained=kind == "account"),
            )
            + _figure("evidence and novelty over time", _behaviour_chart(windows, self.policy))
            if windows
            else '<p class="empty">no scored window</p>'
        )
        linked_columns: list[tuple[str, str, Callable[[Mapping[str, Any]], str]]] = [
            (NAMES[other], "", lambda r: _link(other, str(r["entity"]))),
            ("requests", "n", lambda r: _e(_num(r.get("requests")))),
            ("first seen", "", lambda r: _e(_when(r.get("first_seen")))),
            ("last seen", "", lambda r: _e(_when(r.get("last_seen")))),
        ]
        features = latest.get("features") if latest else None
        feature_table = ""
        if isinstance(features, Mapping) and features:
            feature_table = "<h2>features of the newest window</h2>" + _table(
                [{"k": k, "v": v} for k, v in features.items()],
                [
                    ("feature", "", lambda r: _e(r["k"])),
                    ("value", "n", lambda r: _e(_fmt_g(r["v"]))),
                ],
            )
        recent = windows[::-1][:30]
        body = (
            f"<h1>{NAMES[kind]} {_e(entity)}</h1><p class=lead>{summary}</p>{charts}"
            f"<h2>actions, newest first ({len(actions)})</h2>{_actions(actions)}"
            f"<h2>linked {PLURALS[other]} ({len(linked)})</h2>"
            + _table(linked, linked_columns)
            + f"<h2>recent windows (newest {len(recent)} of {len(windows)} charted)</h2>"
            + _table(recent, _WINDOW_COLUMNS, "no scored window")
            + f'<p class="lead">{_e(LEGEND)}</p>{feature_table}'
        )
        return _page(f"{NAMES[kind]} {entity}", body)

    async def campaign(self, request: web.Request) -> web.Response:
        entity = _entity(request.match_info["id"], "campaign")
        q = request.query
        _params(q, {"limit"})
        limit = _int(q, "limit", 120, 1, MAX_ROWS)
        inv = self.inv()
        windows = await self.run(inv.windows, "campaign", entity, limit)
        growth = await self.run(inv.campaign_growth, entity, limit)
        if not (windows or growth):
            raise _NotFound(f"no campaign {entity!r} in ClickHouse; find one on the top page")
        actions = await self.run(inv.actions, "campaign", entity)
        members = await self.run(inv.campaign_members, entity, 500)
        actions.sort(key=lambda a: _seconds(a.get("ts")), reverse=True)
        windows = windows[::-1]
        now = growth[-1]["members"] if growth else 0
        peak = max((g["members"] for g in growth), default=0)
        latest = actions[0] if actions else None
        if latest is not None:
            held = [r for r in latest.get("reasons") or [] if r.get("detail")]
            numbers = [r for r in latest.get("reasons") or [] if not r.get("detail")]
            why = (
                f"<p>At {_e(_when(latest.get('ts')))} ({_e(latest.get('action'))}, score "
                f"{_e(_num(latest.get('score'), 6))}):</p>"
                + (
                    "<ul>"
                    + "".join(f"<li>{_detail(str(r['detail']))}</li>" for r in held)
                    + "</ul>"
                    if held
                    else '<p class="empty">no link recorded with this action</p>'
                )
                + "<p>and the behaviour it shows:</p>"
                + _reasons(numbers)
            )
        else:
            why = '<p class="empty">no action recorded for this campaign yet</p>'
        growth_chart = _figure(
            "members over time: accounts in the campaign per window, and how many joined; "
            "actions marked",
            svg_chart(
                label="members over time",
                y_label="accounts",
                y_ticks=_linear_ticks(max(peak, 1)),
                lines=[
                    Line(
                        "members",
                        MEMBERS_COLOR,
                        [(_seconds(g["window_end"]), float(g["members"])) for g in growth],
                        step=True,
                    )
                ],
                bars=[
                    Bars(
                        "joined in the window",
                        JOINED_COLOR,
                        [(_seconds(g["window_end"]), float(g["joined"])) for g in growth],
                    )
                ],
                marks=_action_marks(actions),
            ),
        )
        score_chart = (
            _figure(
                "the campaign's score over time: thresholds dashed, actions marked",
                _score_chart(windows, actions, self.policy),
            )
            if windows
            else ""
        )
        member_columns: list[tuple[str, str, Callable[[Mapping[str, Any]], str]]] = [
            ("account", "", lambda r: _link("account", str(r["account_id"]))),
            ("first window", "", lambda r: _e(_when(r.get("first_window")))),
            ("last window", "", lambda r: _e(_when(r.get("last_window")))),
            ("windows", "n", lambda r: _e(_num(r.get("windows")))),
        ]
        more = " (the first 500)" if len(members) >= 500 else ""
        body = (
            f"<h1>campaign {_e(entity)}</h1>"
            f'<p class="lead">{now} members in its newest window, {peak} at its peak, '
            f"{len(members)} accounts in all{more}; {len(actions)} "
            f"action{'s' if len(actions) != 1 else ''}</p>"
            f"<h2>why it is a campaign: the links that hold it</h2>{why}"
            f"{growth_chart}{score_chart}"
            f"<h2>actions, newest first ({len(actions)})</h2>{_actions(actions)}"
            f"<h2>members, first seen first ({len(members)}{more})</h2>"
            + _table(members, member_columns)
            + f"<h2>recent windows ({min(len(windows), 30)} of {len(windows)})</h2>"
            + _table(windows[::-1][:30], _WINDOW_COLUMNS, "no scored window")
        )
        return _page(f"campaign {entity}", body)

    async def not_found(self, request: web.Request) -> web.Response:
        raise _NotFound(
            f"no page {request.path[:80]!r}; pages: {PREFIX}/, {PREFIX}/account/ID, "
            f"{PREFIX}/ip-block/CIDR, {PREFIX}/campaign/ID"
        )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _next(raw: str | None) -> str:
    """Where to go after the login: a page of the UI, never another site.

    Examples
    --------
    >>> _next("/ui/account/a?limit=5"), _next("//evil.example/ui/"), _next(None)
    ('/ui/account/a?limit=5', '/ui/', '/ui/')
    """
    if (
        raw
        and raw.startswith(f"{PREFIX}/")
        and not raw.startswith(f"{PREFIX}/login")
        and "\\" not in raw
    ):
        return raw
    return f"{PREFIX}/"


def is_ui_path(path: str) -> bool:
    """True for the paths the UI serves and guards itself (header or login cookie): a server
    that checks bearer tokens for its other routes lets these through to the UI.

    Examples
    --------
    >>> [is_ui_path(p) for p in ("/ui", "/ui/account/a", "/uix", "/investigate/top")]
    [True, True, False, False]
    """
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def _default_runner() -> Runner:
    """One query at a time, in a thread (chDB is one engine per process)."""
    lock = asyncio.Lock()

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        async with lock:
            return await asyncio.to_thread(fn, *args)

    return run


def register_ui(
    app: web.Application,
    inv_provider: InvProvider,
    token: str | None,
    *,
    run: Runner | None = None,
    policy: PolicyConfig | None = None,
) -> None:
    """Add the ``/ui`` pages to ``app`` (a standalone server's or the worker's).

    ``inv_provider()`` gives the `Investigation` (None: a 503 page, the store is not open yet);
    ``token`` (None or empty: no token) guards every page as the API does; ``run(fn, *args)``
    runs a blocking query off the event loop (default: one at a time in a thread; the worker
    passes its engine's ``clickhouse``); ``policy`` gives the thresholds drawn on the charts
    (default: the default budgets).
    """
    ui = _UI(inv_provider, token, run or _default_runner(), policy or PolicyConfig())

    async def to_index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{PREFIX}/")

    app.router.add_get(PREFIX, to_index)
    app.router.add_get(f"{PREFIX}/", ui.page(ui.top))
    app.router.add_route("GET", f"{PREFIX}/login", ui.login)
    app.router.add_route("POST", f"{PREFIX}/login", ui.login)
    app.router.add_get(f"{PREFIX}/logout", ui.logout)
    # {id:.+}: an id may hold a "/" (a CIDR block does), percent-encoded or not
    app.router.add_get(f"{PREFIX}/account/{{id:.+}}", ui.page(ui.entity))
    app.router.add_get(f"{PREFIX}/ip-block/{{id:.+}}", ui.page(ui.entity))
    app.router.add_get(f"{PREFIX}/campaign/{{id:.+}}", ui.page(ui.campaign))
    app.router.add_get(f"{PREFIX}/{{tail:.*}}", ui.page(ui.not_found))


def create_ui(
    inv_provider: InvProvider,
    token: str | None,
    *,
    run: Runner | None = None,
    policy: PolicyConfig | None = None,
) -> web.Application:
    """A standalone application serving the pages (``/`` leads to ``/ui/``)."""
    app = web.Application()
    register_ui(app, inv_provider, token, run=run, policy=policy)

    async def to_index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{PREFIX}/")

    app.router.add_get("/", to_index)
    return app
