"""Events per second through the streaming pipeline: Tansu -> engine (both stages) -> chDB + Kafka.

    .venv/bin/python -m bench.pipeline [--scenario demo] [--partitions 8]

The scenario's messages are produced first (a backlog), then one worker (one process, both
stages) is started and timed until every message is read, every window scored, every row
written to ClickHouse and every enforcement event acknowledged. A backlog is the hardest case:
the worker catching up after an outage.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from infra.broker import EmbeddedBroker, ensure_topics
from models.detector import DetectorConfig
from schemas.topics import USAGE_EVENTS, default_topics
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.clickhouse import ClickHouseSink, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.memory import settle_heap
from streams.produce import produce


async def run(scenario: str, partitions: int) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="demo", choices=sorted(SCENARIOS))
    ap.add_argument("--partitions", type=int, default=8)
    args = ap.parse_args()
    asyncio.run(run(args.scenario, args.partitions))


if __name__ == "__main__":
    main()
