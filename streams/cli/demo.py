"""``distillguard demo``: simulated campaigns through the whole pipeline."""

from __future__ import annotations

import argparse
from typing import Any

from streams.cli._common import detector_config_for, scenario_for, scenario_options
from streams.demo import run_demo, run_replay_demo
from streams.settings import Settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("demo", help="simulated campaigns through the whole pipeline, summarised")
    p.add_argument(
        "--replay",
        action="store_true",
        help="skip Kafka and ClickHouse: replay a simulated file through the detector",
    )
    scenario_options(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated campaigns through Kafka, the worker's engine and ClickHouse (or, with
    --replay, through the detector directly from a file)."""
    settings = Settings.from_env()
    detector_config_for(settings)  # a bad detector setting in one line, before the broker starts
    if not args.replay:
        if not getattr(args, "scenario", None):
            args.scenario = "demo"
        return run_demo(scenario_for(args), settings)
    return run_replay_demo(scenario_for(args), settings)
