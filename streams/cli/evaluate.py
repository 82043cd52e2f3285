"""``distillguard evaluate``: recall, false positives and time to detection against labels."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from simulator.evaluation import evaluate, format_report
from simulator.report import write_report
from streams.replay import open_lines
from streams.settings import Settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("evaluate", help="recall, false positives and time to detection")
    p.add_argument("--labels", required=True, help="labels written by simulate")
    p.add_argument("--actions", required=True, help="enforcement events, JSONL(.gz)")
    p.add_argument("--scores", help="scored windows from score --scores (timeline plot)")
    p.add_argument("--report", help="directory for index.html and report.json")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.set_defaults(func=cmd_evaluate)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in open_lines(path):
        if line.strip():
            yield orjson.loads(line)


def cmd_evaluate(args: argparse.Namespace) -> int:
    labels = orjson.loads(Path(args.labels).read_bytes())
    actions = list(_read_jsonl(Path(args.actions)))
    report = evaluate(labels, actions)
    print(format_report(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.report:
        rows = _read_jsonl(Path(args.scores)) if args.scores else None
        inputs = {"labels": args.labels, "actions": args.actions}
        if args.scores:
            inputs["scores"] = args.scores
        min_requests = Settings.from_env().detector_config().policy.min_requests
        path = write_report(Path(args.report), labels, report, actions, rows, inputs, min_requests)
        print(f"report: {path}", file=sys.stderr)
    return 0
