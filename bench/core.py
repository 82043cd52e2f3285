"""Events per second of the scoring core, bytes of state per entity, and a per-account HST baseline.

    .venv/bin/python -m bench.core [--minutes 60] [--benign-accounts 4000]

1. Throughput: the default simulated scenario (~1.1M events, 7 campaigns), validated up front,
   then timed through `Detector.process` in 20,000-event batches on one core: windowing, features,
   forest scoring and learning, calibration, drift tests, policy and explanations.
   Validation (bytes -> UsageEvent) is timed separately, then both together as a worker's
   accounts stage runs them: message bytes in event-time order, each batch parsed, scored and
   dropped. The inputs are built first and taken out of the garbage collector's reach, as a
   worker's start-up heap is (`streams.memory.settle_heap`): a worker never holds a million
   parsed events, and every full collection would walk them.
2. Memory: 100,000 distinct accounts (and their IP blocks) pushed through a fresh detector; bytes
   of per-entity state measured on the entity tables and as a pickled snapshot.
3. Baseline: one River `MinMaxScaler() | HalfSpaceTrees()` per account, score_one + learn_one per
   event, on the first 100,000 events of the same stream, and its pickled size per account.
"""

from __future__ import annotations

import argparse
import pickle
import time
from dataclasses import replace
from typing import Any

import orjson
from river import anomaly, compose, preprocessing

from bench import summary
from bench.naive import features
from bench.validation import parse_only, parsed
from models.detector import Detector
from models.events import UsageEvent
from simulator.traffic import Scenario, simulate
from streams.memory import settle_heap

KINDS = ("account", "ip_block", "campaign")
BATCH = 20_000  # events handed to `Detector.process` at a time


def core_throughput(
    events: list[UsageEvent],
    batch: int = BATCH,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[float, Detector, int]:
    det = Detector(kinds=kinds)
    actions = 0
    t = time.perf_counter()
    for i in range(0, len(events), batch):
        actions += len(det.process(events[i : i + batch]).actions)
    actions += len(det.flush().actions)
    return len(events) / (time.perf_counter() - t), det, actions


def validation_and_core(lines: list[bytes], batch: int = BATCH) -> tuple[float, int]:
    """Events/s of message bytes (in event-time order) through `parse_event` and
    `Detector.process` a batch at a time, each batch parsed, scored and dropped; and the
    actions taken (the same as from events parsed up front)."""
    det = Detector(kinds=KINDS)
    actions = 0
    t = time.perf_counter()
    for i in range(0, len(lines), batch):
        events = [e for e in parsed(lines[i : i + batch]) if isinstance(e, UsageEvent)]
        actions += len(det.process(events).actions)
    actions += len(det.flush().actions)
    return len(lines) / (time.perf_counter() - t), actions


def state_per_entity(n_accounts: int = 100_000) -> tuple[float, float, int, float]:
    det = Detector()
    # Three windows in which every account makes one request (event-time order), from
    # 400 accounts per /24.
    events = []
    for i in range(n_accounts * 3):
        a = i % n_accounts
        block = f"10.{a // 102400 % 256}.{a // 400 % 256}"
        events.append(
            UsageEvent(
                f"m{i}",
                1_795_392_000_000 + (i // n_accounts) * 60_000 + a % 50_000,
                f"acct-{a:07d}",
                f"{block}.{a % 250}",
                f"{block}.0/24",
                "frontier-1",
                200,
                400,
                200,
                None,
                i * 2654435761 % 2**64,
                0.1,
                None,
                None,
            )
        )
    for i in range(0, len(events), 50_000):
        det.process(events[i : i + 50_000])
    det.flush()
    acc, blk = det.tables["account"], det.tables["ip_block"]
    n = len(acc) + len(blk)
    table_bytes = acc.bytes_per_entity() * len(acc) + blk.bytes_per_entity() * len(blk)
    snap = len(det.snapshot())
    linking = len(pickle.dumps(det.campaigns, protocol=pickle.HIGHEST_PROTOCOL))
    return table_bytes / n, snap / n, len(acc), linking / len(acc)


def river_baseline(raw_events: list[dict[str, Any]], n: int = 30_000) -> tuple[float, float, float]:
    """(events/s overall, events/s excluding the building of new models, pickled bytes/model)."""
    models: dict[str, compose.Pipeline] = {}
    building = 0.0
    t = time.perf_counter()
    for e in raw_events[:n]:
        x = features(e)
        m = models.get(e["account_id"])
        if m is None:
            b = time.perf_counter()
            m = models[e["account_id"]] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()
            m.score_one(x)
            m.learn_one(x)  # River grows the trees on the first learn
            building += time.perf_counter() - b
            continue
        m.score_one(x)
        m.learn_one(x)
    total = time.perf_counter() - t
    sample = list(models.values())[:50]
    size = sum(len(pickle.dumps(m)) for m in sample) / len(sample)
    return n / total, (n - len(models)) / (total - building), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--benign-accounts", type=int, default=4_000)
    ap.add_argument("--accounts", type=int, default=1_000_000, help="for the state measurement")
    summary.add_argument(ap)
    args = ap.parse_args()
    traffic = simulate(
        replace(Scenario(), minutes=args.minutes, benign_accounts=args.benign_accounts)
    )
    lines = [orjson.dumps(e) for e in traffic.events]
    events = parsed(lines)
    assert all(isinstance(e, UsageEvent) for e in events)
    order = sorted(range(len(events)), key=lambda i: events[i].ts_ms)  # type: ignore[union-attr]
    lines = [lines[i] for i in order]
    events = [events[i] for i in order]
    settle_heap()
    t = time.perf_counter()
    parse_only(lines)  # each batch parsed and dropped, as a worker's
    validate_rate = len(lines) / (time.perf_counter() - t)
    rate, det, actions = core_throughput(events)  # type: ignore[arg-type]
    tracked = det.tracked_entities()
    del det  # its state out of the way of the runs below
    unlinked, _, _ = core_throughput(events, kinds=("account", "ip_block"))  # type: ignore[arg-type]
    both, both_actions = validation_and_core(lines)
    assert both_actions == actions, "parsed a batch at a time, the same events must act alike"
    print(
        f"events: {len(events):,} over {args.minutes} simulated minutes, "
        f"{tracked:,} entities tracked, {actions:,} enforcement events"
    )
    print(f"validation (bytes -> UsageEvent):      {validate_rate:>10,.0f} events/s")
    print(f"scoring core (Detector.process):       {rate:>10,.0f} events/s  (target >= 200,000)")
    print(f"  the same without campaign linking:   {unlinked:>10,.0f} events/s")
    print(f"validation + scoring core, one core:   {both:>10,.0f} events/s  (target >= 100,000)")
    t = time.perf_counter()
    table, snap, n_acc, linking = state_per_entity(args.accounts)
    print(
        f"state per entity, {n_acc:,} accounts + their blocks: {table:,.0f} B in tables, "
        f"{snap:,.0f} B pickled snapshot; campaign linking {linking:,.0f} B per account "
        f"(target: <= 1,024 B per entity in all); {time.perf_counter() - t:.0f} s"
    )
    base_rate, steady_rate, base_size = river_baseline(traffic.events)
    print(
        f"baseline: River MinMaxScaler|HalfSpaceTrees per account, score+learn per event: "
        f"{base_rate:,.0f} events/s including building each new account's forest, "
        f"{steady_rate:,.0f} events/s on already-built forests; "
        f"{base_size:,.0f} B pickled per account"
    )
    print(
        f"ratio: core {rate / steady_rate:.1f}x the baseline's steady events/s "
        f"({rate / base_rate:.0f}x including forest building), "
        f"{base_size / table:,.0f}x less state per entity"
    )
    summary.write(
        args.summary,
        core=rate,
        unlinked=unlinked,
        validation=validate_rate,
        validation_core=both,
        river=base_rate,
        river_steady=steady_rate,
        state_bytes=table + linking,
        river_bytes=base_size,
    )


if __name__ == "__main__":
    main()
