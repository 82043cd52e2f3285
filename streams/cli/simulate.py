"""``distillguard simulate``: labelled traffic to a file or a Kafka topic."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.kafka_auth import check_reachable
from simulator.traffic import latest_start, simulate, traffic_lines, write_labels, write_traffic
from streams.cli._common import scenario_for, scenario_options
from streams.produce import produce
from streams.settings import Settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("simulate", help="generate labelled traffic to a file or a Kafka topic")
    p.add_argument("--output", help="events file (.jsonl or .jsonl.gz)")
    p.add_argument("--topic", help="Kafka topic to write to instead (e.g. api-usage-events)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s to a topic (0 = max)")
    p.add_argument("--labels", help="labels file (JSON)")
    p.add_argument("--bad-lines", type=float, default=0.0, help="share of malformed lines")
    p.add_argument(
        "--randomize",
        type=int,
        metavar="SEED",
        help="draw a whole world from wide ranges (campaign share 1-40%%, start, rates, IP and "
        "payment strategies, benign mix, disorder) instead of a named scenario",
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="with --randomize: size multiplier (default 1)"
    )
    scenario_options(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    if bool(args.output) == bool(args.topic):
        raise ValueError("give exactly one of --output FILE or --topic NAME")
    if args.randomize is not None:
        if args.scenario:
            raise ValueError("give --scenario or --randomize, not both")
        from simulator.worlds import describe, draw_world, generate

        spec = draw_world(args.randomize, args.scale)
        # the drawn time of day, on the latest day the world has ended by now: a worker's skew
        # bounds accept it and ClickHouse keeps its scores
        now_ms = int(time.time() * 1000)
        spec = replace(spec, start_ms=latest_start(spec.start_ms, spec.minutes, now_ms))
        print(f"simulate: {describe(spec)}", file=sys.stderr)
        traffic = generate(spec)
        minutes = spec.minutes
    else:
        scenario = scenario_for(args)
        print(
            f"simulate: scenario {args.scenario or 'default'}, {scenario.minutes} minutes, "
            f"{scenario.benign_accounts:,} ordinary accounts: generating...",
            file=sys.stderr,
            flush=True,
        )
        traffic = simulate(scenario)
        minutes = scenario.minutes
    print(
        f"simulate: {len(traffic.events):,} events generated; writing...",
        file=sys.stderr,
        flush=True,
    )
    if args.output:
        lines = write_traffic(traffic, Path(args.output), None, args.bad_lines)
        where = args.output
    else:
        bootstrap = args.bootstrap or Settings.from_env().kafka_bootstrap
        if not bootstrap:
            raise ValueError(
                "no Kafka to write to: pass --bootstrap or set "
                "DISTILLGUARD_KAFKA_BOOTSTRAP (start one with `distillguard broker`)"
            )
        auth = Settings.from_env().kafka_auth()
        check_reachable(bootstrap, auth)
        lines = produce(
            traffic_lines(traffic, args.bad_lines), bootstrap, args.topic, args.rate, auth=auth
        )
        where = f"topic {args.topic} at {bootstrap}"
    if args.labels:
        write_labels(traffic, Path(args.labels))
    print(
        f"simulate: {len(traffic.events)} events ({lines} messages) for "
        f"{len(traffic.labels['accounts'])} accounts and {len(traffic.labels['campaigns'])} "
        f"campaigns over {minutes} minutes -> {where}",
        file=sys.stderr,
    )
    return 0
