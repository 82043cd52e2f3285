"""``distillguard demo``: the whole product on embedded infrastructure, start to finish.

A Tansu broker on 127.0.0.1, ClickHouse in-process (chDB), the streaming engine of the worker,
and simulated traffic with labelled campaigns written to ``api-usage-events`` the way a gateway
would. Live progress while it runs; at the end, what a billing system read from
``enforcement-actions``, scored against the labels, and where to look in ClickHouse.
Everything it started is stopped before it returns. ``demo --replay`` (`run_replay_demo`): the
same simulated campaigns through the detector alone, from a file.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from infra.broker import EmbeddedBroker, ensure_topics, read_topic
from schemas.topics import ENFORCEMENT, USAGE_EVENTS, default_topics
from simulator.evaluation import evaluate, format_report
from simulator.traffic import Scenario, simulate, traffic_lines, write_traffic
from streams.clickhouse import ClickHouseSink, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.produce import produce
from streams.replay import replay
from streams.settings import Settings, redact

__all__ = ["run_demo", "run_replay_demo"]

DEMO_DATABASE = "distillguard_demo"
PARTITIONS = 8


def _read_enforcement(bootstrap: str) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for _, value in read_topic(bootstrap, ENFORCEMENT, PARTITIONS, idle_ms=3_000):
        doc = orjson.loads(value)
        seen[doc["enforcement_id"]] = doc  # as a billing consumer does: one per id
    return sorted(seen.values(), key=lambda d: (d["ts"], d["entity_kind"], d["entity_id"]))


async def _run(scenario: Scenario, settings: Settings, out: Any) -> int:
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(PARTITIONS))
        say(f"demo: Tansu broker on {broker.bootstrap} ({PARTITIONS} partitions per topic)")
        client = connect(settings.clickhouse_url)
        client.command(f"DROP DATABASE IF EXISTS {DEMO_DATABASE}")
        migrate(client, DEMO_DATABASE)
        say(f"demo: ClickHouse at {redact(settings.clickhouse_url)}, database {DEMO_DATABASE}")
        traffic = simulate(scenario)
        messages = list(traffic_lines(traffic, bad_line_rate=0.001))
        say(
            f"demo: {len(messages):,} messages of simulated traffic, {scenario.minutes} minutes, "
            f"{scenario.benign_accounts:,} ordinary accounts, campaigns: "
            f"{', '.join(scenario.campaigns)}"
        )
        engine = Engine(
            EngineConfig(
                broker.bootstrap,
                detector=settings.detector_config(),
                internal_partitions=PARTITIONS,
            ),
            ClickHouseSink(client, DEMO_DATABASE),
            StateStore(client, DEMO_DATABASE),
        )
        await engine.start()
        sent = [0]
        producing = asyncio.create_task(
            asyncio.to_thread(
                produce,
                messages,
                broker.bootstrap,
                USAGE_EVENTS,
                0.0,
                2_000,
                lambda n: sent.__setitem__(0, n),
            )
        )
        flushed = False
        try:
            while True:
                await asyncio.sleep(2.0)
                if (err := engine.failed()) is not None:
                    raise err
                m = engine.metrics
                acts = ", ".join(f"{k} {v}" for k, v in sorted(m.actions.items())) or "none yet"
                say(
                    f"  {time.monotonic() - started:5.0f} s  sent {sent[0]:>9,}  read "
                    f"{m.events_in:>9,}  dead letters {m.dead_letters:>5,}  windows "
                    f"{sum(m.windows_scored.values()):>8,}  actions: {acts}"
                )
                if producing.done() and m.events_in >= len(messages) and not flushed:
                    producing.result()
                    engine.request_flush()  # the simulated stream has ended
                    flushed = True
                if flushed and Engine.drained(engine):
                    break
        finally:
            await engine.stop()
        actions = _read_enforcement(broker.bootstrap)
    url = redact(settings.clickhouse_url)
    say(f"\ndemo: {len(actions):,} enforcement events read back from {ENFORCEMENT}\n")
    say(format_report(evaluate(traffic.labels, actions)))
    example = next((a for a in actions if a["action"] == "suspend"), None)
    where = f"--clickhouse {url} --database {DEMO_DATABASE}"
    if example:
        say("\nan enforcement event, as billing and gateway systems receive it:")
        say(orjson.dumps(example, option=orjson.OPT_INDENT_2).decode())
        say(f"\nwhy:      ./run dg investigate account {example['entity_id']} {where}")
        say(
            f"web view: ./run dg ui {where}   then open "
            f"http://127.0.0.1:6067/ui/account/{quote(example['entity_id'], safe='')}"
        )
    campaign = next((a for a in actions if a["entity_kind"] == "campaign"), None)
    if campaign:
        say(f"campaign: ./run dg investigate campaign {campaign['entity_id']} {where}")
    say(f"top:      ./run dg investigate top {where}")
    say(
        f'SQL:      ./run dg sql "SELECT entity_kind, action, count() FROM {DEMO_DATABASE}.'
        f'enforcement_actions FINAL GROUP BY ALL ORDER BY ALL" {where}'
    )
    say(f"\ndemo: done in {time.monotonic() - started:.0f} s; broker stopped")
    return 0


def run_demo(scenario: Scenario, settings: Settings, out: Any = sys.stdout) -> int:
    return asyncio.run(_run(scenario, settings, out))


def run_replay_demo(scenario: Scenario, settings: Settings) -> int:
    """``demo --replay``: the same simulated campaigns through the detector alone, from a file
    (no Kafka, no ClickHouse), scored against the labels."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distillguard-demo-") as tmp:
        d = Path(tmp)
        print(
            f"demo: simulating {scenario.minutes} minutes of traffic: {scenario.benign_accounts} "
            f"ordinary accounts and {len(scenario.campaigns)} extraction campaigns "
            f"({', '.join(scenario.campaigns)})",
            flush=True,
        )
        traffic = simulate(scenario)
        write_traffic(traffic, d / "events.jsonl.gz", d / "labels.json", 0.001)
        print(f"demo: {len(traffic.events):,} events written; scoring them", flush=True)
        with open(d / "actions.jsonl", "wb") as out, open(d / "dead.jsonl", "wb") as dead:
            summary = replay(
                d / "events.jsonl.gz",
                out,
                settings.detector_config(),
                dead,
                progress=sys.stdout.isatty(),
            )
        print(summary.line())
        actions = [orjson.loads(x) for x in (d / "actions.jsonl").read_bytes().splitlines()]
        report = evaluate(traffic.labels, actions)
        print()
        print(format_report(report))
        example = next((a for a in actions if a["action"] == "suspend"), None)
        if example:
            print("\nan enforcement event, as billing and gateway systems receive it:")
            print(orjson.dumps(example, option=orjson.OPT_INDENT_2).decode())
    print(f"\ndemo: done in {time.perf_counter() - started:.0f} s")
    return 0
