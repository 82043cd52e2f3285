"""What the commands share: settings, ClickHouse and scenario options, table printing."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime
from typing import Any

from models.config import DetectorConfig
from simulator.traffic import SCENARIOS, Scenario
from streams.clickhouse import ClickHouseSink, connect, migrate
from streams.settings import Settings

__all__ = [
    "LEGEND",
    "SCORES",
    "bounded",
    "clickhouse_options",
    "detector_config_for",
    "detector_options",
    "fmt",
    "print_rows",
    "scenario_for",
    "scenario_options",
    "settings_for",
    "sink_for",
]


SCORES = {"score", "max_score", "threshold"}  # printed with 6 digits
LEGEND = (
    "evidence: extraction behaviours on fixed scales (0 none, 1 one behaviour in full, up to ~4); "
    "novelty: how rare the window is among ordinary ones (0-1);\nscore: calibrated, 0.999 = "
    "riskier than all but 0.1% of ordinary windows; level: 0 none, 1 flagged, 2 throttled, "
    "3 suspended"
)


def detector_config_for(settings: Settings) -> DetectorConfig:
    """The detector's configuration from ``settings``: a bad setting raises (said in one line by
    the command's handler); one that does less than it seems to is said on stderr, one line
    each, and the command goes on."""
    config = settings.detector_config()
    for note in settings.detector_notes():
        print(f"distillguard: note: {note}", file=sys.stderr)
    return config


def detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window-seconds", type=int, help="entity window length (default 60)")
    p.add_argument(
        "--lateness-seconds",
        type=int,
        dest="allowed_lateness_seconds",
        help="allowed lateness before a window closes (default 10)",
    )
    p.add_argument("--seed", type=int, help="model seed (default 42)")
    p.add_argument(
        "--allowlist",
        dest="allowlist_file",
        help="file of account ids / CIDR blocks never to enforce",
    )
    p.add_argument(
        "--reasoning-verdict",
        type=float,
        help="cot_score at which your classifier means 'asks for reasoning' (default 0.5)",
    )


def settings_for(args: argparse.Namespace) -> Settings:
    names = (
        "window_seconds",
        "allowed_lateness_seconds",
        "seed",
        "allowlist_file",
        "reasoning_verdict",
    )
    return Settings.from_env().with_overrides(**{n: getattr(args, n, None) for n in names})


def sink_for(url: str, settings: Settings) -> ClickHouseSink:
    client = connect(url)
    migrate(client, settings.clickhouse_database)
    return ClickHouseSink(client, settings.clickhouse_database)


def bounded(low: int, high: int) -> Any:
    """An argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def scenario_for(args: argparse.Namespace) -> Scenario:
    name = getattr(args, "scenario", None) or "default"
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    s = SCENARIOS[name]
    overrides: dict[str, Any] = {}
    for name in ("seed", "minutes", "benign_accounts", "intensity"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "campaigns", None):
        overrides["campaigns"] = tuple(args.campaigns.split(","))
    return replace(s, **overrides)


def fmt(value: Any, column: str = "") -> str:
    """One format per column: calibrated scores to 6 decimals (their meaning is in the last
    digits: 0.999000 is the top 0.1%), other numbers to 3."""
    if isinstance(value, float):
        return f"{value:.6f}" if column in SCORES else f"{value:.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def print_rows(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    print(f"\n{title} ({len(rows)})")
    if not rows:
        return
    table = [[fmt(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


def scenario_options(p: argparse.ArgumentParser) -> None:
    """The options that pick a named scenario and change it."""
    p.add_argument(
        "--scenario",
        help=f"named mix, one of: {', '.join(SCENARIOS)} (simulate and score: default; demo: demo)",
    )
    p.add_argument("--seed", type=int, help="traffic seed")
    p.add_argument("--minutes", type=int, help="simulated duration")
    p.add_argument("--benign-accounts", type=int, help="ordinary accounts")
    p.add_argument("--intensity", type=float, help="campaign size multiplier")
    p.add_argument("--campaigns", help="comma-separated campaign archetypes")


def clickhouse_options(p: argparse.ArgumentParser) -> None:
    """Where the store is (URL and database); the settings by default."""
    p.add_argument("--clickhouse", help="ClickHouse URL (default: settings)")
    p.add_argument("--database", help="database (default: distillguard)")


def clickhouse_settings(args: argparse.Namespace) -> Settings:
    """The settings with the store named by `clickhouse_options` (when given) in place."""
    return Settings.from_env().with_overrides(
        clickhouse_url=args.clickhouse, clickhouse_database=args.database
    )
