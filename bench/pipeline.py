"""Events per second through the streaming pipeline: Tansu -> engine (both stages) -> chDB + Kafka.

    .venv/bin/python -m bench.pipeline [--scenario demo] [--partitions 8] [--baseline-events 20000]
    .venv/bin/python -m bench.pipeline --all      # and every other target of the engine: ~20 min

The scenario's messages are produced first (a backlog), then one worker (one process, both
stages) is started and timed until every message is read, every window scored, every row
written to ClickHouse and every enforcement event acknowledged. A backlog is the hardest case:
the worker catching up after an outage.

Then, on the same broker and backlog, the naive pattern (`bench.naive`: a Faust agent scoring
each event with the account's own River ``HalfSpaceTrees``) reads the first
``--baseline-events`` messages in a process of its own, and its events/s are printed beside the
worker's (the naive pattern builds a forest per new account, so it is timed on a prefix).

With ``--all`` it then runs, one after the other and each in a process of its own, the other
benchmarks of the streaming engine's targets (`bench.scaleout` on the default scenario's 1M-event
backlog, `bench.latency` at 10,000 and at 30,000 events/s, `bench.core`, `bench.memory`), and
prints one table of every figure beside its baseline and target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


async def run(scenario: str, partitions: int, baseline_events: int) -> dict[str, Any]:
    """Time the worker (and the naive pattern) on the scenario's backlog; print and return it."""
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
        cpu = time.process_time()
        await engine.start()
        settle_heap()  # as the worker command does
        while engine.metrics.events_in < len(messages):
            await asyncio.sleep(0.2)
        read_s = time.perf_counter() - t
        engine.request_flush()
        while not Engine.drained(engine):
            await asyncio.sleep(0.2)
        total_s = time.perf_counter() - t
        # CPU of this process (the worker, chDB's threads included; not the broker's): what the
        # worker costs per event, steadier on a shared machine than its wall-clock rate
        cpu_s = time.process_time() - cpu
        await engine.stop()
        m = engine.metrics
        sink = engine.sink.stats
        naive = None
        if baseline_events:
            try:
                naive = naive_rate(broker.bootstrap, baseline_events)
            except RuntimeError as exc:  # the worker's figures stand without it
                print(f"naive pattern: not measured: {exc}")
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
        f"worker CPU (its process, chDB included): {cpu_s:.1f} s, "
        f"{cpu_s / len(messages) * 1e6:.1f} us per event"
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
    figures: dict[str, Any] = {"scenario": scenario, "events": len(messages)}
    figures.update(
        read=len(messages) / read_s,
        written=len(messages) / total_s,
        cpu_us=cpu_s / len(messages) * 1e6,
    )
    if naive is not None:
        figures["naive"] = naive[0] / naive[1]
    return figures


# The other benchmarks of the engine's targets (`--all`): name, module and arguments.
OTHERS = [
    ("scaleout", "bench.scaleout", ["--scenario", "default"]),
    ("latency", "bench.latency", ["--rate", "10000", "--seconds", "240"]),
    ("fed", "bench.latency", ["--rate", "30000", "--seconds", "60"]),
    ("core", "bench.core", []),
    ("memory", "bench.memory", ["--baseline-accounts", "200"]),
]


def others(partitions: int, timeout_s: float = 3600.0) -> dict[str, dict[str, Any]]:
    """Run each of `OTHERS` in a process of its own (its output passes through); their figures.
    One that fails, or runs longer than ``timeout_s``, is said so and left out."""
    found: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, args in OTHERS:
            out = Path(tmp, f"{name}.json")
            cmd = [sys.executable, "-m", module, *args, "--summary", str(out)]
            if module != "bench.core":
                cmd += ["--partitions", str(partitions)]
            print(f"\n== {' '.join(a for a in cmd[1:] if a not in ('--summary', str(out)))}")
            sys.stdout.flush()
            try:
                code = subprocess.run(cmd, check=False, timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                code = None
            if code != 0 or not out.exists():
                why = f"exit {code}" if code is not None else f"over {timeout_s:.0f} s"
                print(f"   {module} failed ({why}): its rows are left out")
                continue
            found[name] = orjson.loads(out.read_bytes())
    return found


def table(worker: dict[str, Any], found: dict[str, dict[str, Any]]) -> list[str]:
    """One row per target of the engine: what was measured, its baseline in the same run, the
    target and whether it is met. A benchmark that failed leaves its rows out; one that ran but
    could not measure a figure (no enforcement event in time, a run too short to fit a trend)
    says so, and the target is not met."""
    rows: list[tuple[str, str, str, str, bool]] = []
    naive = worker.get("naive")
    naive_s = f"naive pattern {naive:,.0f} events/s" if naive else "-"
    naive_on = f"{naive_s} ({worker['scenario']} backlog)" if naive else "-"
    if s := found.get("scaleout"):
        rows.append(
            (
                f"one worker, backlog of {s['events']:,} events (default scenario)",
                f"{s['one']:,.0f} events/s",
                naive_on,
                ">= 50,000 events/s",
                s["one"] >= 50_000,
            )
        )
    if naive:
        ratio = worker["read"] / naive
        rows.append(
            (
                f"one worker against the naive pattern ({worker['scenario']} backlog)",
                f"{worker['read']:,.0f} events/s, {ratio:,.0f}x",
                naive_s,
                ">= 10x",
                ratio >= 10,
            )
        )
    if f := found.get("fed"):
        rows.append(
            (
                f"fed at {f['rate']:,.0f} events/s for {f['seconds']:.0f} s: input lag",
                f"trend {f['lag_trend']:+,.0f} messages/s, max {f['lag_max']:,}"
                if "lag_trend" in f
                else "no trend: the run was too short",
                "-",
                "not growing",
                bool(f.get("kept_up", False)),
            )
        )
    if s:
        ratio = s["two"] / s["one"]
        once = s["missing"] == 0 and s["extra"] == 0 and s["doubled"] == 0
        rows.append(
            (
                "two worker processes, same backlog",
                f"{ratio:.2f}x ({s['two']:,.0f} events/s); windows missing {s['missing']}, "
                f"doubled {s['doubled']}",
                f"one worker {s['one']:,.0f} events/s",
                ">= 1.5x, every window once",
                ratio >= 1.5 and once,
            )
        )
    if lat := found.get("latency"):
        rows.append(
            (
                f"latency, produce to enforcement event, at {lat['rate']:,.0f} events/s",
                f"p50 {lat['p50']:.2f} s, p99 {lat['p99']:.2f} s"
                if "p99" in lat
                else "no enforcement event arrived in time",
                f"{naive_s}: cannot keep up" if naive and naive < lat["rate"] else naive_s,
                "p99 <= 1 s",
                lat.get("p99", float("inf")) <= 1.0,
            )
        )
    if c := found.get("core"):
        river = f"River per account {c['river_steady']:,.0f} events/s"
        rows.append(
            (
                "scoring core, one core",
                f"{c['core']:,.0f} events/s",
                river,
                ">= 200,000",
                c["core"] >= 200_000,
            )
        )
        rows.append(
            (
                "validation + scoring core, one core",
                f"{c['validation_core']:,.0f} events/s",
                river,
                ">= 100,000",
                c["validation_core"] >= 100_000,
            )
        )
    if m := found.get("memory"):
        rows.append(
            (
                f"resident memory per tracked entity, {m['accounts']:,} accounts, worker process",
                f"{m['per_entity']:,.0f} B ({m['per_account']:,.0f} B per account with its blocks)",
                f"River per account {m['naive_per_account']:,.0f} B",
                "<= 1,024 B",
                m["per_entity"] <= 1024,
            )
        )
    head = ("figure", "measured", "baseline, same run", "target", "met")
    cells = [head] + [(a, b, c, d, "yes" if ok else "no") for a, b, c, d, ok in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(5)]
    return [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]


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
    ap.add_argument(
        "--all",
        action="store_true",
        help="then run the other benchmarks of the engine's targets and print one table",
    )
    args = ap.parse_args()
    worker = asyncio.run(run(args.scenario, args.partitions, args.baseline_events))
    if args.all:
        found = others(args.partitions)
        print(f"\nthe streaming engine's targets, one worker process, {os.cpu_count()} cores:")
        print("\n".join(table(worker, found)))


if __name__ == "__main__":
    main()
