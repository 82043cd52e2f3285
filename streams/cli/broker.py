"""``distillguard broker``: the embedded Kafka-API broker (Tansu) alone."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from streams.settings import Settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("broker", help="start the embedded Kafka-API broker (Tansu) alone")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--partitions", type=int, default=8, help="partitions of the main topics")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    p.set_defaults(func=cmd_broker)


def cmd_broker(args: argparse.Namespace) -> int:
    """The embedded broker alone, for development: runs until Ctrl-C, SIGTERM or --seconds, and
    always stops the broker process it started."""
    import signal

    from infra.broker import EmbeddedBroker, ensure_topics

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill PID` stops it like Ctrl-C, Tansu included
    with EmbeddedBroker(port=args.port) as broker:
        topics = Settings.from_env().topics().with_partitions(args.partitions)
        ensure_topics(broker.bootstrap, topics)
        print(
            f"broker: Tansu (in-memory) listening on {broker.bootstrap}; topics: "
            f"{', '.join(topics)}",
            flush=True,
        )
        print(f"export DISTILLGUARD_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        try:
            while broker.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        if not broker.running:
            print(f"broker: exited on its own; see {broker.log_path}", file=sys.stderr)
            return 1
    print("broker: stopped", flush=True)
    return 0
