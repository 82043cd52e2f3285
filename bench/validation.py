"""Events per second through the gate into the detector, against a generic JSON-Schema validator.

    .venv/bin/python -m bench.validation [--events 200000] [--repeat 3]

The default simulated scenario's events, written as gateways write them (half with RFC 3339
timestamps, half with epoch milliseconds, optional fields present), are turned from bytes into
`UsageEvent`s by `schemas.validation.parse_event` (msgspec decoding into the contract's Struct,
then normalisation), a batch of ``max_records`` at a time as a worker reads them (an address
or timestamp seen again within a batch is looked up, not worked out again). Baseline, same bytes,
same run: what a producer-side check usually does, ``orjson.loads`` and jsonschema's Draft
2020-12 validator over the published schema (with the ipv4/ipv6 formats), which validates but
does not normalise. Also timed: ``orjson.loads`` alone, the floor of any Python-side decoding.
Best of ``--repeat`` runs, one core.

Rejected messages are timed too (a poisoned producer can send nothing else): the same events
spoilt in five ways (a field out of range, one missing, an address that is not one, a wrong
type, bytes that are not JSON), each turned into the `Rejection` that its dead letter carries,
against the baseline's error for the same bytes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from typing import Any

import jsonschema
import orjson

from models.events import UsageEvent
from models.outputs import rfc3339
from schemas.validation import Memo, Rejection, parse_event
from simulator.traffic import Scenario, simulate
from streams.config import EngineConfig


def parsed(
    lines: list[bytes], batch: int = EngineConfig.max_records
) -> list[UsageEvent | Rejection]:
    """``parse_event`` over ``lines`` as a worker's accounts stage calls it: a `Memo` for each
    batch of ``batch`` messages, dropped with the batch."""
    out: list[UsageEvent | Rejection] = []
    for i in range(0, len(lines), batch):
        memo = Memo()
        out += [parse_event(x, memo) for x in lines[i : i + batch]]
    return out


def parse_only(lines: list[bytes], batch: int = EngineConfig.max_records) -> None:
    """As `parsed`, each event dropped once parsed (as before batches, so that rates compare):
    keeping them is the garbage collector's cost, not parsing's."""
    for i in range(0, len(lines), batch):
        memo = Memo()
        for x in lines[i : i + batch]:
            parse_event(x, memo)


def gateway_lines(n: int) -> list[bytes]:
    """``n`` events of the default scenario as message bytes, timestamps in both forms."""
    traffic = simulate(replace(Scenario(), minutes=60))
    lines = []
    for i, e in enumerate(traffic.events[:n]):
        if i % 2 and isinstance(e["ts"], int):
            e = {**e, "ts": rfc3339(e["ts"])}
        lines.append(orjson.dumps(e))
    return lines


def spoilt(lines: list[bytes]) -> list[bytes]:
    """``lines`` each made invalid, in turn in one of five ways."""
    ways = (
        lambda e: {**e, "input_tokens": -5},
        lambda e: {k: v for k, v in e.items() if k != "account_id"},
        lambda e: {**e, "ip": "10.0.0.300"},
        lambda e: {**e, "output_tokens": "many"},
    )
    out = []
    for i, line in enumerate(lines):
        if i % 5 == 4:
            out.append(line[: len(line) // 2])
        else:
            out.append(orjson.dumps(ways[i % 5](orjson.loads(line))))
    return out


def rate(fn: Callable[[bytes], Any], lines: list[bytes], repeat: int) -> float:
    return batch_rate(lambda batch: [fn(line) for line in batch], lines, repeat)


def batch_rate(fn: Callable[[list[bytes]], Any], lines: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(lines)
        best = min(best, time.perf_counter() - t)
    return len(lines) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lines = gateway_lines(args.events)
    assert all(isinstance(e, UsageEvent) for e in parsed(lines)), (
        "the scenario's events must be valid"
    )
    schema = json.loads(
        resources.files("schemas.json").joinpath("usage-event.schema.json").read_text()
    )
    generic = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker(formats=["ipv4", "ipv6"])
    )

    def baseline(line: bytes) -> None:
        generic.validate(orjson.loads(line))

    ours = batch_rate(parse_only, lines, args.repeat)
    floor = rate(orjson.loads, lines, args.repeat)
    base = rate(baseline, lines[: max(len(lines) // 10, 1)], 1)
    bad = spoilt(lines[: max(len(lines) // 10, 1)])
    assert all(isinstance(e, Rejection) for e in parsed(bad)), "spoilt events must be rejected"

    def baseline_rejects(line: bytes) -> None:
        try:
            generic.validate(orjson.loads(line))
        except (jsonschema.ValidationError, orjson.JSONDecodeError):
            return
        raise AssertionError("the baseline accepted a spoilt event")

    ours_bad = batch_rate(parse_only, bad, args.repeat)
    base_bad = rate(baseline_rejects, bad[: max(len(bad) // 10, 1)], 1)
    size = sum(map(len, lines)) / len(lines)
    print(f"{len(lines):,} events, {size:.0f} B each on average, best of {args.repeat}")
    print(f"parse_event (bytes -> UsageEvent):            {ours:>10,.0f} events/s")
    print(f"orjson.loads alone (no checks):               {floor:>10,.0f} events/s")
    print(f"baseline: orjson.loads + jsonschema 2020-12:  {base:>10,.0f} events/s")
    print(f"ratio: {ours / base:.0f}x the baseline")
    print(f"rejected messages, parse_event (-> Rejection):  {ours_bad:>10,.0f} messages/s")
    print(f"rejected messages, baseline:                    {base_bad:>10,.0f} messages/s")


if __name__ == "__main__":
    main()
