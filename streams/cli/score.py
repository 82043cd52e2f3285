"""``distillguard score``: replay a file of events through the detector."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from streams.cli._common import detector_config_for, detector_options, settings_for, sink_for
from streams.replay import open_output, replay
from streams.settings import Settings, redact

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("score", help="replay a JSONL(.gz) file of events through the detector")
    p.add_argument("--input", required=True, help="events, JSONL or JSONL.gz ('-' for stdin)")
    p.add_argument("--output", required=True, help="enforcement events, JSONL")
    p.add_argument("--dead-letter", help="rejected lines with their reasons, JSONL")
    p.add_argument("--scores", help="every scored entity window, JSONL(.gz) (for evaluate)")
    p.add_argument(
        "--clickhouse", help="also write to ClickHouse at this URL (chdb:///path, http://host:8123)"
    )
    detector_options(p)
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    config = detector_config_for(settings)  # a bad setting fails before any output is touched
    if args.input != "-":
        # Fail on a missing or unreadable input before any output file is created or emptied.
        with open(args.input, "rb"):
            pass
    # --clickhouse, else DISTILLGUARD_CLICKHOUSE_URL when it is set; never the embedded default.
    url = args.clickhouse or (
        settings.clickhouse_url if "clickhouse_url" in Settings.given() else None
    )
    sink = sink_for(url, settings) if url else None
    if url:
        print(
            f"score: also writing to ClickHouse at {redact(url)}, "
            f"database {settings.clickhouse_database}",
            file=sys.stderr,
        )
    with ExitStack() as stack:
        out = stack.enter_context(open_output(Path(args.output)))
        dead = (
            stack.enter_context(open_output(Path(args.dead_letter))) if args.dead_letter else None
        )
        scores = stack.enter_context(open_output(Path(args.scores))) if args.scores else None
        summary = replay(Path(args.input), out, config, dead, scores=scores, sink=sink)
    print(summary.line(), file=sys.stderr)
    if summary.rejected:
        by_field = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_field.most_common())
        where = args.dead_letter or "nowhere (pass --dead-letter FILE to keep them)"
        print(f"rejected lines by field: {by_field}; written to {where}", file=sys.stderr)
    return 0
