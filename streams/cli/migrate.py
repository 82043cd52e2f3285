"""``distillguard migrate``: apply the ClickHouse DDL."""

from __future__ import annotations

import argparse
from typing import Any

from streams.cli._common import clickhouse_options, clickhouse_settings
from streams.clickhouse import connect, migrate
from streams.settings import redact

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("migrate", help="apply the ClickHouse DDL (schemas/ddl)")
    clickhouse_options(p)
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = clickhouse_settings(args)
    applied = migrate(connect(settings.clickhouse_url), settings.clickhouse_database)
    print(
        f"migrate: {settings.clickhouse_database} at {redact(settings.clickhouse_url)}: "
        + (f"applied {', '.join(applied)}" if applied else "up to date")
    )
    return 0
