"""``distillguard worker``: the streaming worker (Faust) against Kafka."""

from __future__ import annotations

import argparse
from typing import Any

from infra.kafka_auth import check_reachable
from streams.cli._common import detector_config_for
from streams.settings import Settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("worker", help="run the streaming worker (Faust) against Kafka")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    p.add_argument("--clickhouse", help="ClickHouse URL (default: settings)")
    p.add_argument("--web-port", type=int, help="port of /health, /metrics (default 6066)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """The production worker (Faust): Kafka and ClickHouse from the settings."""
    import faust

    from streams.app import create_app
    from streams.logs import quiet_repeats

    settings = Settings.from_env().with_overrides(
        kafka_bootstrap=args.bootstrap, clickhouse_url=args.clickhouse, web_port=args.web_port
    )
    detector_config_for(settings)  # a bad detector setting in one line, before anything starts
    app = create_app(settings)
    quiet_repeats()  # the clients' loggers exist once the app is made
    # A broker that refuses us (wrong address, untrusted certificate, no client certificate)
    # said in one line, before the clients retry it for 30 s and report a traceback.
    check_reachable(settings.kafka_bootstrap, settings.kafka_auth())
    worker = faust.Worker(app, loglevel=args.loglevel)
    worker.execute_from_commandline()  # returns on SIGTERM/SIGINT after stopping the app
    return 0
