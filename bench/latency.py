"""Latency from input to enforcement event, and consumer lag, with traffic offered at a fixed rate.

    .venv/bin/python -m bench.latency [--rate 10000] [--seconds 300] [--partitions 8]
        [--checkpoint-seconds 10]

One worker (both stages and the campaign stage, in this process) reads from the embedded broker
(Tansu) and writes to chDB, as in `bench.pipeline`; a producer process (librdkafka, as a gateway
would) offers the default scenario's events at ``--rate`` events/s for ``--seconds``, each event
stamped with the wall-clock time it is due to be sent (event time = produce time); a consumer
process (librdkafka, as a billing system would) reads the enforcement topic and notes when each
event arrives.

An action on the window ``[start, end)`` cannot be decided before the input has passed
``end + allowed_lateness`` (10 s): that wait is the window's, the same for every design. The
latency reported is the rest, from that moment to the enforcement event's arrival at a consumer:
the worker's own delay (reading, the window's close, scoring, ClickHouse, producing), per entity
kind. Input lag (messages of the input topic the accounts stage has not read, as of its last
batch) is sampled every second; its trend over the offered time should be flat when the worker
keeps up. Events carry their scheduled time, so a producer that falls behind its schedule would
count as worker delay: the largest slip is printed. A window's actions arriving more than 40 s
after the offered traffic ends are not counted. The naive pattern's latency is not measured
here: it emits per event, and `bench.pipeline` shows it cannot keep up with this rate at all.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np
import orjson

from bench import summary
from infra.broker import EmbeddedBroker, ensure_topics
from models.detector import DetectorConfig
from schemas.topics import ENFORCEMENT, USAGE_EVENTS, default_topics
from simulator.traffic import Scenario, simulate
from streams.clickhouse import ClickHouseSink, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.memory import settle_heap


def offer(bootstrap: str, n: int, rate: float, conn: Any) -> None:
    """Producer process: generate ``n`` events of the default scenario, say so, receive the
    start time ``t0``, then send event i when the wall clock reaches ``t0 + i / rate``, stamped
    with that time. Reports (events sent, the furthest the sends fell behind schedule in s): a slip
    counts in the latency as if it were the worker's."""
    from confluent_kafka import Producer

    # the default mix sends ~18,000 events per simulated minute; longer runs go round its 30
    # minutes again (new event ids), which keeps generation and memory bounded
    events = simulate(replace(Scenario(), minutes=min(int(n / 18_000) + 1, 30))).events[:n]
    conn.send("ready")
    t0 = conn.recv()

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    sent = 0
    slip = 0.0  # the furthest the sends fell behind their schedule, s
    while sent < n:
        now = time.time()
        due = min(n, int((now - t0) * rate) + 1)
        if sent < due:
            slip = max(slip, now - (t0 + sent / rate))
        while sent < due:
            rounds, i = divmod(sent, len(events))
            e = events[i]
            if rounds:
                e = {**e, "event_id": f"{e['event_id']}-{rounds}"}
            e["ts"] = int((t0 + sent / rate) * 1000)
            while True:
                try:
                    p.produce(USAGE_EVENTS, orjson.dumps(e), e["account_id"].encode())
                    break
                except BufferError:
                    p.poll(0.01)
            sent += 1
        p.poll(0)
        time.sleep(0.002)
    p.flush(60)
    conn.send((sent, slip))


def receive(bootstrap: str, stop_at: float, out: Any) -> None:
    """Consumer process: every enforcement event with the wall-clock ms it arrived."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"latency-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([ENFORCEMENT])
    got: list[tuple[int, str, str]] = []
    while time.time() < stop_at:
        msg = c.poll(0.05)
        value = None if msg is None or msg.error() else msg.value()
        if value is None:
            continue
        arrived = int(time.time() * 1000)
        doc = orjson.loads(value)
        got.append((arrived, doc["entity_kind"], doc["window_end"]))
    c.close()
    out.send(got)


def quantiles(h: Any) -> tuple[int, float, float]:
    """(count, p50, p99) of a prometheus_client Histogram, each the upper bound of its bucket."""
    buckets = [
        (float(s.labels["le"]), s.value)
        for metric in h.collect()
        for s in metric.samples
        if s.name.endswith("_bucket")
    ]
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.99):
        out.append(next((le for le, c in buckets if c >= q * total), float("inf")))
    return int(total), out[0], out[1]


def _check(engine: Engine, producer: Any) -> None:
    """Stop the run when the worker or (while it has to send) the producer has failed."""
    if engine.failed() is not None:
        raise RuntimeError(f"the worker failed: {engine.failed()}")
    if producer is not None and not producer.is_alive() and producer.exitcode:
        raise RuntimeError(f"the producer process exited with {producer.exitcode}")


def input_lag(engine: Engine) -> int:
    """Messages of the input topic not yet read by the accounts stage (the engine's lag gauge,
    without the internal topics)."""
    return sum(v for k, v in engine.metrics.lag.items() if k.startswith("accounts"))


async def loop_stalls(out: list[float]) -> None:
    """How late a 50 ms sleep wakes up, again and again: how long the worker's event loop (which
    sends, fetches and commits for every stage) is held by something else."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.05)
        out.append(loop.time() - t - 0.05)


async def run(
    rate: float, seconds: float, partitions: int, checkpoint_seconds: float | None = None
) -> dict[str, Any]:
    """Offer the traffic, print what was measured, and return the headline figures."""
    n = int(rate * seconds)
    lateness = DetectorConfig().allowed_lateness_ms
    ctx = mp.get_context("spawn")
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ensure_topics(broker.bootstrap, default_topics(partitions))
        client = connect(f"chdb://{tmp}/chdb")
        migrate(client, "bench")
        engine = Engine(
            EngineConfig(
                broker.bootstrap,
                internal_partitions=partitions,
                checkpoint_seconds=(
                    EngineConfig.checkpoint_seconds
                    if checkpoint_seconds is None
                    else checkpoint_seconds
                ),
            ),
            ClickHouseSink(client, "bench"),
            StateStore(client, "bench"),
        )
        await engine.start()
        settle_heap()  # as the worker command does
        stalls: list[float] = []
        probe = asyncio.create_task(loop_stalls(stalls))
        prod, prod_child = ctx.Pipe()
        cons_rx, cons_tx = ctx.Pipe(duplex=False)
        producer = ctx.Process(target=offer, args=(broker.bootstrap, n, rate, prod_child))
        consumer: Any = None
        try:
            producer.start()
            prod_child.close()  # ours closed: a producer that dies ends the pipe
            while not prod.poll(0.5):  # the producer generates its traffic; the worker starts
                _check(engine, producer)
                await asyncio.sleep(0)
            prod.recv()
            t0 = time.time() + 2.0
            end = t0 + seconds
            consumer = ctx.Process(target=receive, args=(broker.bootstrap, end + 40, cons_tx))
            consumer.start()
            cons_tx.close()
            prod.send(t0)
            lags: list[tuple[float, int, int]] = []
            while time.time() < end + 40:
                await asyncio.sleep(1.0)
                _check(engine, producer if time.time() < end else None)
                lags.append((time.time() - t0, input_lag(engine), engine.metrics.events_in))
            if not prod.poll(60) or not cons_rx.poll(60):
                raise RuntimeError("the producer or the consumer process did not report")
            sent, slip = prod.recv()
            got = cons_rx.recv()
        finally:
            for p in (producer, consumer):
                if p is not None and p.is_alive():
                    p.join(30)
                    if p.is_alive():
                        p.terminate()
                        p.join(10)
        probe.cancel()
        actions = dict(engine.metrics.actions)
        histograms = {
            "batch, read to published": engine.metrics.batch_latency,
            "one ClickHouse insert": engine.sink.stats.insert_latency,
        }
        spread = {name: quantiles(h) for name, h in histograms.items()}
        await engine.stop()
    from schemas.validation import parse_timestamp

    print(f"the worker decided {actions}; the consumer received {len(got):,} enforcement events")

    figures: dict[str, Any] = {"rate": rate, "seconds": seconds, "sent": sent, "slip": slip}
    delays: dict[str, list[float]] = {}
    windows: dict[int, list[float]] = {}
    for arrived, kind, window_end in got:
        due = parse_timestamp(window_end) + lateness
        if due / 1000 > end:  # windows the offered traffic never closed: flushed at the end
            continue
        delays.setdefault(kind, []).append((arrived - due) / 1000)
        windows.setdefault(due, []).append((arrived - due) / 1000)
    print(
        f"offered {rate:,.0f} events/s for {seconds:.0f} s: {sent:,} events sent "
        f"(at most {slip:.2f} s behind their schedule), {partitions} partitions, one worker"
    )
    print(f"{'entity kind':<12} {'actions':>8} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}")
    for kind in sorted(delays):
        d = np.array(delays[kind])
        q = np.quantile(d, [0.5, 0.9, 0.99])
        print(f"{kind:<12} {d.size:>8,} {q[0]:>7.2f} {q[1]:>7.2f} {q[2]:>7.2f} {d.max():>7.2f}")
    if delays:
        d = np.concatenate([np.array(v) for v in delays.values()])
        q = np.quantile(d, [0.5, 0.99])
        print(f"all          {d.size:>8,} {q[0]:>7.2f}         {q[1]:>7.2f}   (target p99 <= 1 s)")
        figures.update(actions=int(d.size), p50=float(q[0]), p99=float(q[1]))
        print(f"windows with actions: {len(windows)}; first and last action of each, s:")
        for due in sorted(windows):
            w = windows[due]
            print(f"  window due at +{due / 1000 - t0:5.0f} s: {min(w):5.2f} .. {max(w):5.2f}")
    if stalls:
        st = np.array(stalls)
        print(
            f"event loop stalls (a 50 ms sleep overshooting): p99 {np.quantile(st, 0.99):.2f} s, "
            f"max {st.max():.2f} s, {int((st >= 0.5).sum())} of {st.size} sleeps >= 0.5 s late"
        )
        figures["loop_held"] = float(st.max())
    for name, (count, q50, q99) in spread.items():
        print(f"{name}: {count:,} observed, p50 <= {q50} s, p99 <= {q99} s")
    print("input lag (messages of the input topic not yet read), by second of the run:")
    marks = [x for x in lags if x[0] >= 0]
    step = max(1, len(marks) // 12)
    for s, lag, read in marks[::step]:
        print(f"  {s:6.0f} s  lag {lag:>9,}  read {read:>11,}")
    offered = [(s, lag) for s, lag, _ in marks if seconds / 3 <= s <= seconds]
    if len(offered) > 2:
        slope = float(np.polyfit([s for s, _ in offered], [lag for _, lag in offered], 1)[0])
        verdict = "kept up" if slope <= 0.01 * rate else "lag grew: fell behind"
        print(
            f"input lag over the last two thirds of the offered time: max "
            f"{max(lag for _, lag in offered):,}, trend {slope:+,.0f} messages/s: {verdict}"
        )
        figures.update(
            lag_max=max(lag for _, lag in offered), lag_trend=slope, kept_up=slope <= 0.01 * rate
        )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument(
        "--checkpoint-seconds", type=float, help="the worker's checkpoint interval (default: 10)"
    )
    summary.add_argument(ap)
    args = ap.parse_args()
    figures = asyncio.run(run(args.rate, args.seconds, args.partitions, args.checkpoint_seconds))
    summary.write(args.summary, **figures)


if __name__ == "__main__":
    main()
