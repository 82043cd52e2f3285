"""``distillguard sql``: a read-only query against the store, as a table."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from streams.cli._common import clickhouse_options, clickhouse_settings, print_rows
from streams.clickhouse import MAX_ROWS, QUERY_SECONDS, connect

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("sql", help="a read-only SQL query against the store, as a table")
    p.add_argument("query", help='e.g. "SELECT count() FROM distillguard.entity_scores"')
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clickhouse_options(p)
    p.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    """A read-only query against the store, printed as a table (or JSON): the store's SQL without
    a ClickHouse client, e.g. for an embedded chDB store."""
    settings = clickhouse_settings(args)
    client = connect(settings.clickhouse_url)
    result = client.query(
        args.query,
        settings={
            "readonly": 2,  # reads only; 2 still lets the query carry its own limits
            "max_execution_time": QUERY_SECONDS,
            "max_result_rows": MAX_ROWS,
            "result_overflow_mode": "break",
        },
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    if args.json:
        print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        print_rows("rows", rows, list(result.column_names))
    return 0
