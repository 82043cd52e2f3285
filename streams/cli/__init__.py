"""The ``distillguard`` command line: one entry point, one subcommand per job, one module each."""

from __future__ import annotations

import argparse
import logging
import sys

from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.errors import KafkaError

from streams.cli import (
    broker,
    demo,
    evaluate,
    investigate,
    migrate,
    score,
    simulate,
    sql,
    ui,
    worker,
)
from streams.clickhouse import ClickHouseError, MigrationEdited, one_line
from streams.settings import redact

__all__ = ["build_parser", "main"]

COMMANDS = (score, simulate, evaluate, migrate, sql, investigate, ui, worker, broker, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillguard",
        description="Streaming detector for model-distillation and API-abuse campaigns.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "investigate" and args.target != "top" and not args.entity:
        parser.error(f"investigate {args.target} needs the entity id")
    # A ClickHouse failure reaches the person as one line below, not as the driver's warnings.
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)
    try:
        code: int = args.func(args)
    except (OSError, ValueError, MigrationEdited) as exc:
        print(f"distillguard {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except ClickHouseError as exc:  # after a connection was made: a query or insert failed
        print(f"distillguard {args.command}: error: ClickHouse: {one_line(exc)}", file=sys.stderr)
        return 2
    except (KafkaError, AIOKafkaError) as exc:  # e.g. SASL credentials the broker refused
        print(
            f"distillguard {args.command}: error: Kafka: {redact(one_line(exc))}; check "
            "DISTILLGUARD_KAFKA_BOOTSTRAP and the DISTILLGUARD_KAFKA_SASL_* / _SSL_* settings",
            file=sys.stderr,
        )
        return 2
    return code
