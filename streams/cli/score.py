"""``distillguard score``: replay a file of events through the detector."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from schemas.ddl import SCORES_KEPT_DAYS
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
    if sink is not None and sink.stats.expired:
        print(_expired(sink.stats.expired, args.scores), file=sys.stderr)
    if summary.rejected:
        by_field = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_field.most_common())
        where = args.dead_letter or "nowhere (pass --dead-letter FILE to keep them)"
        print(f"rejected lines by field: {by_field}; written to {where}", file=sys.stderr)
    return 0


def _expired(by_table: dict[str, int], scores: str | None) -> str:
    """One line: rows of windows ClickHouse's TTL dropped as they were written, where they are.

    >>> _expired({"entity_scores": 1200, "entity_links": 30}, None)  # doctest: +ELLIPSIS
    'score: note: ClickHouse did not keep 1,230 rows of windows older than 90 days (entity_lin...'
    """
    rows = sum(by_table.values())
    tables = ", ".join(f"{t} {n:,}" for t, n in sorted(by_table.items()))
    kept = scores or "nowhere else (pass --scores FILE to keep them)"
    return (
        f"score: note: ClickHouse did not keep {rows:,} rows of windows older than "
        f"{SCORES_KEPT_DAYS} days ({tables}): the TTL of its score tables drops them as they "
        f"are written; their scores are in {kept}, their actions in ClickHouse and the output"
    )
