"""Resident memory per tracked entity in a worker process, at 1,000,000 accounts.

A producer process (librdkafka) writes requests from ``--accounts`` accounts to the embedded
broker's input topic: one request from each, from IPv4 addresses spread over one /24 block per 16
accounts, each with a prompt fingerprint, a payment instrument and a creation time (so that the
campaign linker keeps every account), all in the current minute. This process runs one worker
(the three stages and chDB) until every window is scored and published, reading its resident
set size (VmRSS) before the worker reads anything, as soon as it is done, and every 0.25 s while
it idles caught up for three checkpoint intervals, checkpointing and handing freed memory back
to the system as a worker does (`streams.memory`). The median of those samples minus the first
reading, divided by the accounts and blocks it then tracks, is what one entity costs in a
worker: its state in every stage, the indexes, the Python objects and the allocator's overhead
included (not the numpy tables alone, which `bench.core` measures). The least and the most
(while a checkpoint pickles every entity's state) are printed beside it, and so is what
CPython's small-object allocator holds at the end: arenas of 1 MiB, the most it ever held, and
how much in them is alive (what a burst of short-lived objects leaves resident).

Baseline, in a fresh process in the same run: the naive pattern, one River ``MinMaxScaler() |
HalfSpaceTrees()`` per account after its first event, for ``--baseline-accounts`` accounts.

Usage (from the repository root)::

    python -m bench.memory [--accounts 1000000] [--partitions 8] [--baseline-accounts 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any

import orjson

from bench import summary
from infra.broker import EmbeddedBroker, ensure_topics
from schemas.topics import USAGE_EVENTS, default_topics
from streams.clickhouse import ClickHouseSink, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.memory import glibc_trim, settle_heap

PER_BLOCK = 16


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def small_objects() -> tuple[int, int, int] | None:
    """CPython's small-object allocator: (arenas held, their high-water mark, bytes of live
    objects in them), read from ``sys._debugmallocstats`` (None where it is not there). An
    arena (1 MiB) goes back to the system only once nothing in it is alive."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return None
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")

    def figure(label: str) -> int | None:
        found = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else None

    held, high = figure("# arenas allocated current"), figure("# arenas highwater mark")
    live = figure("# bytes in allocated blocks")
    if held is None or high is None or live is None:
        return None
    return held, high, live


def event(i: int, ts_ms: int) -> dict[str, Any]:
    """Account ``i``'s request."""
    block = i // PER_BLOCK
    return {
        "event_id": f"mem-{i:08d}",
        "ts": ts_ms,
        "account_id": f"acct-{i:08d}",
        "ip": f"10.{block >> 8 & 255}.{block & 255}.{i % PER_BLOCK + 1}",
        "model": "frontier-1",
        "input_tokens": 200 + i % 700,
        "output_tokens": 300 + i % 900,
        "prompt_fingerprint": f"{(i * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}",
        "payment_fingerprint": f"card-{i:08d}",
        "account_created_at": "2026-01-01T00:00:00Z",
        "cot_score": (i % 10) / 10,
    }


def produce(bootstrap: str, n: int, conn: Any) -> None:
    """Producer process: ``n`` accounts' requests, stamped over the current minute."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    t0 = int(time.time() * 1000)
    for i in range(n):
        e = event(i, t0 + i * 30_000 // n)
        while True:
            try:
                p.produce(USAGE_EVENTS, orjson.dumps(e), e["account_id"].encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(120)
    conn.send(n)


def naive(n: int, conn: Any) -> None:
    """Baseline process: one River pipeline per account after one event; resident bytes each."""
    from river import anomaly, preprocessing

    gc.collect()
    before = rss_bytes()
    models = {}
    for i in range(n):
        e = event(i, 0)
        x = {
            "input_tokens": e["input_tokens"],
            "output_tokens": e["output_tokens"],
            "ratio": e["output_tokens"] / e["input_tokens"],
            "cot": e["cot_score"],
        }
        m = models[e["account_id"]] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()
        m.score_one(x)
        m.learn_one(x)
    gc.collect()
    conn.send((rss_bytes() - before) / n)


def trim() -> int:
    """Hand the memory the allocator holds free back to the system (glibc ``malloc_trim``);
    the resident bytes this released."""
    before = rss_bytes()
    release = glibc_trim()
    if release is None:
        raise RuntimeError("bench.memory needs glibc (malloc_trim) to tell live from held memory")
    release()
    return before - rss_bytes()


async def worker(accounts: int, partitions: int) -> tuple[Any, ...]:
    """(RSS before, as soon as done, median, least and most while idling after, after this
    process returned all the allocator held free; seconds; seconds the worker's latest
    hand-back of freed memory took; account windows, block windows; the small-object
    allocator before and at the end) of one worker."""
    ctx = mp.get_context("spawn")
    # chDB may still be merging parts when the worker stops: its files are left to the OS.
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        ensure_topics(broker.bootstrap, default_topics(partitions))
        rx, tx = ctx.Pipe(duplex=False)
        producer = ctx.Process(target=produce, args=(broker.bootstrap, accounts, tx))
        producer.start()
        tx.close()
        if not rx.poll(900):
            raise RuntimeError("the producer process did not finish")
        rx.recv()
        producer.join(30)
        client = connect(f"chdb://{tmp}/chdb")
        migrate(client, "bench")
        engine = Engine(
            EngineConfig(broker.bootstrap, internal_partitions=partitions),
            ClickHouseSink(client, "bench"),
            StateStore(client, "bench"),
        )
        gc.collect()
        objects_before = small_objects()
        before = rss_bytes()
        t = time.perf_counter()
        await engine.start()
        settle_heap()  # as the worker command does
        try:
            while engine.metrics.events_in < accounts or engine.metrics.lag.get("accounts", 1):
                if engine.failed():
                    raise RuntimeError(f"the worker failed: {engine.failed()!r}")
                await asyncio.sleep(0.5)
            engine.request_flush()
            while not Engine.drained(engine):
                if engine.failed():
                    raise RuntimeError(f"the worker failed: {engine.failed()!r}")
                await asyncio.sleep(0.5)
            seconds = time.perf_counter() - t
            done = rss_bytes()
            # The worker goes on as a worker does once caught up: it checkpoints every
            # checkpoint_seconds (pickling every entity's state: a transient peak) and returns
            # freed memory after windows and checkpoints. Its resident size, sampled over three
            # checkpoint intervals: the median is what it typically holds, the most what it
            # needs while taking a checkpoint.
            samples = [done]
            until = time.monotonic() + 3 * max(engine.config.checkpoint_seconds, 1.0)
            while time.monotonic() < until:
                await asyncio.sleep(0.25)
                samples.append(rss_bytes())
            gc.collect()
            objects_after = small_objects()
            trimmed = rss_bytes() - trim()
            scored = dict(engine.metrics.windows_scored)
            took = engine.metrics.memory_trim_seconds
        finally:
            await engine.stop()
    windows = scored.get("account", 0), scored.get("ip_block", 0)
    typical = int(statistics.median(samples))
    return (
        before, done, typical, min(samples), max(samples), trimmed, seconds, took, *windows,
        objects_before, objects_after,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--baseline-accounts", type=int, default=2_000)
    summary.add_argument(ap)
    args = ap.parse_args()
    blocks = -(-args.accounts // PER_BLOCK)
    (
        before,
        done,
        after,
        least,
        peak,
        trimmed,
        seconds,
        took,
        acc_w,
        block_w,
        o_before,
        o_after,
    ) = asyncio.run(worker(args.accounts, args.partitions))
    ctx = mp.get_context("spawn")
    rx, tx = ctx.Pipe(duplex=False)
    base = ctx.Process(target=naive, args=(args.baseline_accounts, tx))
    base.start()
    tx.close()
    per_naive = rx.recv()
    base.join(30)
    entities = args.accounts + blocks
    grown = after - before
    print(
        f"one worker, {args.partitions} partitions: {args.accounts:,} accounts and {blocks:,} "
        f"blocks read and scored in {seconds:.0f} s ({acc_w:,} account and {block_w:,} block "
        "windows)"
    )
    print(
        f"resident memory: {before / 2**20:,.0f} MB before; caught up and idling, median "
        f"{after / 2**20:,.0f} MB: {grown / entities:,.0f} B per tracked entity (target <= "
        f"1,024 B), {grown / args.accounts:,.0f} B per account with its share of blocks"
    )
    print(
        "  per tracked entity, as soon as done: "
        f"{(done - before) / entities:,.0f} B; idling, least {(least - before) / entities:,.0f}"
        f" B and most (while a checkpoint is taken) {(peak - before) / entities:,.0f} B; after "
        f"this process returned all the allocator still held free: "
        f"{(trimmed - before) / entities:,.0f} B (the worker's latest hand-back of freed "
        f"memory took {took * 1000:,.0f} ms)"
    )
    if o_before is not None and o_after is not None:
        print(
            f"  small-object allocator: {o_after[0]:,} arenas of 1 MiB held (high-water "
            f"{o_after[1]:,}) for {o_after[2] / 2**20:,.0f} MB of live objects; before: "
            f"{o_before[0]:,} arenas for {o_before[2] / 2**20:,.0f} MB"
        )
    print(
        f"baseline: River MinMaxScaler|HalfSpaceTrees per account after one event: "
        f"{per_naive:,.0f} B resident per account ({args.baseline_accounts:,} accounts), "
        f"{per_naive / (grown / args.accounts):,.0f}x the worker's per account"
    )
    summary.write(
        args.summary,
        accounts=args.accounts,
        per_entity=grown / entities,
        per_account=grown / args.accounts,
        naive_per_account=per_naive,
    )


if __name__ == "__main__":
    main()
