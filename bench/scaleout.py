"""One worker process against two on the same backlog: events/s, and every window scored once?

    .venv/bin/python -m bench.scaleout [--scenario demo] [--partitions 8]

The scenario's messages are produced to a fresh embedded broker (Tansu) first (a backlog), then
real ``distillguard worker`` processes read it in one consumer group: first one process alone,
then, on a fresh broker with the same backlog, two processes started together. Each process
writes to a chDB store of its own (a chDB path is held by one process; in production the
workers share a ClickHouse server). Timed from the first event read to the last window scored
(the moment the windows-scored counters stop moving with nothing left to read), as reported by
each worker's ``/metrics``.

"Every window scored once" is checked in the stores: the (kind, entity, window) keys written by
the two processes, each key counted once per store, against the keys the single process wrote.
A key in both stores is a window scored twice (a partition handed over mid-stream restores its
checkpoint from the store of the process that takes it, which here is not the one that wrote it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import summary
from bench.soak import metric
from infra.broker import EmbeddedBroker, ensure_topics, free_port
from schemas.topics import USAGE_EVENTS, default_topics
from schemas.validation import Rejection, parse_event
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.produce import produce

DB = "scaleout"
# Read in a process of its own: the worker held the chDB path while it ran.
_KEYS = """
import json, sys
from streams.clickhouse import connect
client = connect(sys.argv[1])
rows = client.query(
    "SELECT entity_kind, entity_id, toUnixTimestamp64Milli(window_start), count() "
    f"FROM {sys.argv[2]}.entity_scores GROUP BY 1, 2, 3"
).result_rows
print(json.dumps([list(r) for r in rows]))
"""


@dataclass
class Result:
    workers: int
    events: int
    seconds: float
    keys: list[set[tuple[str, str, int]]]


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text
    except OSError:
        return ""


def _keys(url: str) -> set[tuple[str, str, int]]:
    out = subprocess.run(
        [sys.executable, "-c", _KEYS, url, DB], capture_output=True, check=True, text=True
    ).stdout
    return {(k, e, int(w)) for k, e, w, _ in json.loads(out)}


def run(messages: list[tuple[bytes, bytes]], workers: int, partitions: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(partitions))
        produce(messages, broker.bootstrap, USAGE_EVENTS)
        procs: list[tuple[subprocess.Popen[bytes], int, str, Path]] = []
        for i in range(workers):
            port = free_port()
            url = f"chdb://{tmp}/chdb-{i}"
            log = Path(tmp) / f"worker-{i}.log"
            env = {
                **os.environ,
                "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
                "DISTILLGUARD_CLICKHOUSE_URL": url,
                "DISTILLGUARD_CLICKHOUSE_DATABASE": DB,
                "DISTILLGUARD_WEB_PORT": str(port),
                "DISTILLGUARD_INTERNAL_PARTITIONS": str(partitions),
                "DISTILLGUARD_IDLE_FLUSH_SECONDS": "3",
            }
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            procs.append((proc, port, url, log))
        first_read = last_change = None
        last: tuple[float, float] = (-1.0, -1.0)
        deadline = time.monotonic() + 900
        try:
            while time.monotonic() < deadline:
                for proc, _, _, log in procs:
                    if proc.poll() is not None:
                        tail = log.read_text(errors="replace")[-4000:]
                        raise SystemExit(f"a worker exited with {proc.returncode}:\n{tail}")
                texts = [_metrics(port) for _, port, _, _ in procs]
                now = time.monotonic()
                read = sum(metric(t, "distillguard_events_in_total") for t in texts)
                scored = sum(metric(t, "distillguard_windows_scored_total") for t in texts)
                lag = sum(metric(t, "distillguard_consumer_lag") for t in texts)
                if read > 0 and first_read is None:
                    first_read = now
                if (read, scored) != last:
                    last, last_change = (read, scored), now
                if (
                    first_read is not None
                    and last_change is not None
                    and read >= len(messages)
                    and lag == 0
                    and now - last_change >= 8
                ):
                    break
                time.sleep(0.25)
            else:
                raise SystemExit("the workers did not drain the backlog in 900 s")
        finally:
            for proc, _, _, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _, _, _ in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assert first_read is not None and last_change is not None
        keys = [_keys(url) for _, _, url, _ in procs]
    return Result(workers, int(last[0]), last_change - first_read, keys)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="demo", choices=sorted(SCENARIOS))
    ap.add_argument("--partitions", type=int, default=8)
    summary.add_argument(ap)
    args = ap.parse_args(argv)
    messages = list(traffic_lines(simulate(SCENARIOS[args.scenario]), bad_line_rate=0.001))
    valid = sum(not isinstance(parse_event(v), Rejection) for _, v in messages)
    print(
        f"scenario {args.scenario}: {len(messages):,} messages ({valid:,} valid), "
        f"{args.partitions} partitions, backlog produced before the workers start",
        flush=True,
    )
    one = run(messages, 1, args.partitions)
    two = run(messages, 2, args.partitions)
    for r in (one, two):
        print(
            f"{r.workers} worker process{'es' if r.workers > 1 else '  '}: "
            f"{r.events / r.seconds:>9,.0f} events/s ({r.events:,} events in {r.seconds:.1f} s)"
        )
    print(f"ratio: {two.events / two.seconds / (one.events / one.seconds):.2f}x (target >= 1.5x)")
    reference = one.keys[0]
    union = set().union(*two.keys)
    both = set.intersection(*two.keys) if len(two.keys) > 1 else set()
    print(
        f"windows: one process {len(reference):,}; two processes {len(union):,} distinct "
        f"({', '.join(f'{len(k):,}' for k in two.keys)} per process), scored by both: "
        f"{len(both):,}, missing against one process: {len(reference - union):,}, "
        f"extra: {len(union - reference):,}"
    )
    summary.write(
        args.summary,
        events=len(messages),
        one=one.events / one.seconds,
        two=two.events / two.seconds,
        windows=len(reference),
        missing=len(reference - union),
        extra=len(union - reference),
        doubled=len(both),
    )


if __name__ == "__main__":
    main()
