"""Same input, same decisions? One backlog through real worker processes, clean and killed.

    .venv/bin/python -m bench.determinism [--runs 2] [--kills 5] [--minutes 30] [--benign 2000]
                                          [--seed 7] [--logs DIR]

One simulated backlog (scenario ``small``, ``--minutes`` of traffic, ``--benign`` ordinary
accounts) goes, run after run, through a fresh embedded broker (Tansu, 8 partitions) and a real
``distillguard worker`` process on a fresh chDB database:

- ``clean-N``: one worker reads the whole backlog (``--runs`` of them);
- ``kill-9``: the same, but the worker is killed with SIGKILL ``--kills`` times at random moments
  (2-10 s after each replacement starts reading; seeded) and replaced by a new process, which
  resumes from the last checkpoint.

Checkpoints every 2 s in every run (so kills land between checkpoints at different places of the
backlog), idle windows close after 3 s. Each row compares a run with ``clean-1``: decisions
(entity, action, window) and how many it shares with ``clean-1``, windows whose score differs,
requests scored against the valid events produced, decisions under more than one
``enforcement_id``, and decisions published on ``enforcement-actions`` but missing from
ClickHouse (or the other way round). Under a run with differing windows, a line says how many
of each kind differ and from which minute of the traffic. ``--logs DIR`` keeps each run's worker
log (info level: assignments, restores, idle flushes) in ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bench.soak import metric
from infra.broker import EmbeddedBroker, ensure_topics, free_port, read_topic
from schemas.topics import ENFORCEMENT, USAGE_EVENTS, default_topics
from schemas.validation import Rejection, parse_event
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.produce import produce

PARTITIONS = 8
DB = "determinism"

# Read in a process of its own: a process holds one chDB path, and the worker holds it while it
# runs.
_READ = """
import json, sys
from streams.clickhouse import connect
client = connect(sys.argv[1])
db = sys.argv[2]
def q(sql):
    return [list(r) for r in client.query(sql.replace("DB", db)).result_rows]
print(json.dumps({
    "decisions": q("SELECT entity_kind, entity_id, action, toUnixTimestamp64Milli(window_end), "
                   "groupUniqArray(enforcement_id) FROM DB.enforcement_actions FINAL "
                   "GROUP BY entity_kind, entity_id, action, window_end"),
    "scores": q("SELECT entity_kind, entity_id, toUnixTimestamp64Milli(window_start), score "
                "FROM DB.entity_scores FINAL"),
    "requests": q("SELECT sum(requests) FROM DB.entity_scores FINAL "
                  "WHERE entity_kind = 'account'")[0][0],
}))
"""


@dataclass
class Run:
    name: str
    seconds: float
    kills: int
    decisions: dict[tuple[str, str, str, int], list[str]]
    scores: dict[tuple[str, str, int], float]
    requests: int
    on_topic: set[str]


def _metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text
    except OSError:
        return None


def _start(env: dict[str, str], log: Path, level: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", level],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _reading(port: int, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Wait until the worker reads (or owns its partitions with nothing left to read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode} before reading")
        text = _metrics(port) or ""
        caught_up = "distillguard_consumer_lag{" in text and not metric(
            text, "distillguard_consumer_lag"
        )
        if metric(text, "distillguard_events_in_total") > 0 or caught_up:
            return
        time.sleep(0.2)
    raise SystemExit("the worker read nothing in 180 s")


def _drained(port: int, proc: subprocess.Popen[bytes], timeout: float = 900) -> None:
    """Wait until nothing is left to read and no window has been scored for 6 s (a replacement
    that finds everything read and checkpointed before the kill scores nothing at all)."""
    deadline = time.monotonic() + timeout
    last, still = -1.0, 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode}")
        text = _metrics(port)
        if text:
            scored = metric(text, "distillguard_windows_scored_total")
            lag = metric(text, "distillguard_consumer_lag")
            reported = "distillguard_consumer_lag{" in text
            still = still + 1 if (scored == last and lag == 0 and reported) else 0
            last = scored
            if still >= 6:
                return
        time.sleep(1.0)
    raise SystemExit("the worker did not drain the backlog in 900 s")


def run_once(
    name: str,
    messages: list[tuple[bytes, bytes]],
    kills: int,
    seed: int,
    logs: Path | None = None,
) -> Run:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(PARTITIONS))
        produce(messages, broker.bootstrap, USAGE_EVENTS)
        port = free_port()
        url = f"chdb://{tmp}/chdb"
        env = {
            **os.environ,
            "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DISTILLGUARD_CLICKHOUSE_URL": url,
            "DISTILLGUARD_CLICKHOUSE_DATABASE": DB,
            "DISTILLGUARD_WEB_PORT": str(port),
            "DISTILLGUARD_CHECKPOINT_SECONDS": "2",
            "DISTILLGUARD_IDLE_FLUSH_SECONDS": "3",
        }
        log = Path(tmp) / "worker.log"
        started = time.monotonic()
        level = "info" if logs else "warning"
        proc = _start(env, log, level)
        try:
            for _ in range(kills):
                _reading(port, proc)
                time.sleep(rng.uniform(2.0, 10.0))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                with log.open("a") as f:
                    f.write("---- SIGKILL, replacement starts ----\n")
                proc = _start(env, log, level)
            _reading(port, proc)
            _drained(port, proc)
        except SystemExit:
            print(log.read_text(errors="replace")[-12000:], file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, logs / f"{name}.log")
        seconds = time.monotonic() - started
        on_topic = {
            orjson.loads(v)["enforcement_id"]
            for _, v in read_topic(broker.bootstrap, ENFORCEMENT, PARTITIONS)
        }
        out = subprocess.run(
            [sys.executable, "-c", _READ, url, DB], capture_output=True, check=True, text=True
        ).stdout
    got: dict[str, Any] = json.loads(out)
    return Run(
        name=name,
        seconds=seconds,
        kills=kills,
        decisions={(k, e, a, int(w)): ids for k, e, a, w, ids in got["decisions"]},
        scores={(k, e, int(w)): float(s) for k, e, w, s in got["scores"]},
        requests=int(got["requests"] or 0),
        on_topic=on_topic,
    )


def compare(run: Run, ref: Run, valid: int) -> str:
    common = set(run.decisions) & set(ref.decisions)
    union = set(run.decisions) | set(ref.decisions)
    shared = set(run.scores) & set(ref.scores)
    differing = {k for k in shared if abs(run.scores[k] - ref.scores[k]) > 1e-6}
    differing |= set(run.scores) ^ set(ref.scores)
    windows_diff = len(differing)
    two_ids = sum(1 for ids in run.decisions.values() if len(ids) > 1)
    in_ch = {i for ids in run.decisions.values() for i in ids}
    every = set(run.scores) | set(ref.scores)
    first = min((w for _, _, w in every), default=0)
    by_kind = []
    for kind in sorted({k for k, _, _ in every}):
        of_kind = [key for key in differing if key[0] == kind]
        total = sum(1 for key in every if key[0] == kind)
        earliest = min((w for _, _, w in of_kind), default=None)
        since = "" if earliest is None else f" from minute {(earliest - first) // 60_000}"
        by_kind.append(f"{kind} {len(of_kind):,d}/{total:,d}{since}")
    if windows_diff:
        print(f"  {run.name}: windows whose score differs: {', '.join(by_kind)}")
    return (
        f"{run.name:9s} {run.kills:5d} {run.seconds:7.0f} {len(run.decisions):9,d} "
        f"{len(common):9,d} {len(common) / max(1, len(union)):8.1%} "
        f"{windows_diff / max(1, len(set(run.scores) | set(ref.scores))):8.2%} "
        f"{run.requests:>10,d}/{valid:<10,d} {two_ids:7d} "
        f"{len(run.on_topic - in_ch):8d} {len(in_ch - run.on_topic):8d}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="clean runs")
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs in the killed run (0: none)")
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--benign", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--logs", type=Path, help="keep each run's worker log (info level) here")
    args = ap.parse_args(argv)
    traffic = simulate(
        replace(SCENARIOS["small"], minutes=args.minutes, benign_accounts=args.benign)
    )
    messages = list(traffic_lines(traffic))
    valid = sum(not isinstance(parse_event(v), Rejection) for _, v in messages)
    print(
        f"{len(messages):,} messages ({valid:,} valid), {args.minutes} simulated minutes, "
        f"{PARTITIONS} partitions, one worker process at a time",
        flush=True,
    )
    runs = [
        run_once(f"clean-{i + 1}", messages, 0, args.seed + i, args.logs) for i in range(args.runs)
    ]
    if args.kills:
        runs.append(run_once("kill-9", messages, args.kills, args.seed, args.logs))
    print(
        f"{'run':9s} {'kills':>5s} {'secs':>7s} {'decisions':>9s} {'common':>9s} {'jaccard':>8s} "
        f"{'win diff':>8s} {'requests scored/valid':>21s} {'two ids':>7s} "
        f"{'topic-CH':>8s} {'CH-topic':>8s}"
    )
    for r in runs:
        print(compare(r, runs[0], valid), flush=True)


if __name__ == "__main__":
    main()
