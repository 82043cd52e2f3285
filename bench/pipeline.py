"""Events per second through the streaming pipeline: Tansu -> engine (both stages) -> chDB + Kafka.

    .venv/bin/python -m bench.pipeline [--scenario demo] [--partitions 8] [--baseline-events 20000]

The scenario's messages are produced first (a backlog), then one worker (one process, both
stages) is started and timed until every message is read, every window scored, every row
written to ClickHouse and every enforcement event acknowledged. A backlog is the hardest case:
the worker catching up after an outage.

Then, on the same broker and backlog, the naive pattern (`bench.naive`: a Faust agent scoring
each event with the account's own River ``HalfSpaceTrees``) reads the first
``--baseline-events`` messages in a process of its own, and its events/s are printed beside the
worker's (the naive pattern builds a forest per new account, so it is timed on a prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from infra.broker import EmbeddedBroker, ensure_topics
from models.detector import DetectorConfig
from schemas.topics import USAGE_EVENTS, default_topics
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.clickhouse import ClickHouseSink, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.memory import settle_heap
from streams.produce import produce


def naive_rate(bootstrap: str, events: int, timeout_s: float = 600.0) -> tuple[int, float, int]:
    """(events, seconds, bad lines skipped) of `bench.naive` (a Faust agent, a River forest per
    account) reading the first ``events`` messages of the input topic, in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "naive.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.naive", bootstrap, USAGE_EVENTS, str(events), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not out.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the naive baseline stopped (exit {proc.poll()})")
                time.sleep(0.5)
            time.sleep(0.2)  # the file is written in one call; let it land
            result = orjson.loads(out.read_bytes())
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return int(result["events"]), float(result["seconds"]), int(result["skipped"])


async def run(scenario: str, partitions: int, baseline_events: int) -> None:
    messages = list(traffic_lines(simulate(SCENARIOS[scenario]), bad_line_rate=0.001))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ensure_topics(broker.bootstrap, default_topics(partitions))
        t = time.perf_counter()
        produce(messages, broker.bootstrap, USAGE_EVENTS)
        produce_s = time.perf_counter() - t
        client = connect(f"chdb://{tmp}/chdb")
        migrate(client, "bench")
        engine = Engine(
            EngineConfig(
                broker.bootstrap, detector=DetectorConfig(), internal_partitions=partitions
            ),
            ClickHouseSink(client, "bench"),
            StateStore(client, "bench"),
        )
        t = time.perf_counter()
        await engine.start()
        settle_heap()  # as the worker command does
        while engine.metrics.events_in < len(messages):
            await asyncio.sleep(0.2)
        read_s = time.perf_counter() - t
        engine.request_flush()
        while not Engine.drained(engine):
            await asyncio.sleep(0.2)
        total_s = time.perf_counter() - t
        await engine.stop()
        m = engine.metrics
        sink = engine.sink.stats
        naive = naive_rate(broker.bootstrap, baseline_events) if baseline_events else None
    print(f"scenario {scenario}: {len(messages):,} messages, {partitions} partitions, one worker")
    print(f"producer (kafka-python, acks=all):   {len(messages) / produce_s:>9,.0f} messages/s")
    print(
        f"worker, backlog read and scored:     {len(messages) / read_s:>9,.0f} events/s "
        f"({read_s:.1f} s)"
    )
    print(
        f"worker, until all windows written:   {len(messages) / total_s:>9,.0f} events/s "
        f"({total_s:.1f} s)"
    )
    print(
        f"windows {sum(m.windows_scored.values()):,}, actions {sum(m.actions.values()):,}, "
        f"dead letters {m.dead_letters:,}; ClickHouse: {sink.rows:,} rows in {sink.inserts:,} "
        f"inserts, {sink.total_insert_seconds:.1f} s inserting"
    )
    if naive is not None:
        n, seconds, skipped = naive
        print(
            f"naive pattern (bench.naive: a Faust agent, one River HalfSpaceTrees per account, "
            f"per event, each new account's forest built on its first), same broker and "
            f"backlog, first {n:,} events ({skipped} bad lines skipped): {n / seconds:,.0f} "
            f"events/s; the worker read and "
            f"scored {len(messages) / read_s / (n / seconds):,.0f}x as fast (target >= 10x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="demo", choices=sorted(SCENARIOS))
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument(
        "--baseline-events",
        type=int,
        default=20_000,
        help="events the naive pattern reads on the same broker (0: not run)",
    )
    args = ap.parse_args()
    asyncio.run(run(args.scenario, args.partitions, args.baseline_events))


if __name__ == "__main__":
    main()
