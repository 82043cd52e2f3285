"""Soak: one worker fed at a steady rate for minutes; its resident memory over time.

    .venv/bin/python -m bench.soak [--seconds 600] [--rate 2000] [--every 30]

Starts the embedded broker (Tansu) and a real `distillguard worker` process on a fresh chDB
store, then `distillguard simulate --topic ... --rate RATE` writes simulated traffic for the
whole run. Every ``--every`` seconds it prints the worker's resident memory (VmRSS from /proc),
the events it has read (from /metrics) and its consumer lag. Memory should level off once the
entity tables and windows reach their steady size, not grow with the events read.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from infra.broker import EmbeddedBroker, ensure_topics
from schemas.topics import default_topics


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric(text: str, name: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--every", type=float, default=30)
    ap.add_argument("--port", type=int, default=16099)
    args = ap.parse_args(argv)
    # enough simulated minutes for the whole run at this rate (the default mix: ~18k events per
    # simulated minute)
    minutes = int(args.seconds * args.rate / 18_000) + 5
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(8))
        env = {
            **os.environ,
            "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp}/chdb",
            "DISTILLGUARD_WEB_PORT": str(args.port),
        }
        dg = [sys.executable, "-m", "streams.cli"]
        worker = subprocess.Popen(
            [*dg, "worker", "--loglevel", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        feed = ["--topic", "api-usage-events", "--rate", str(args.rate)]
        feeder = subprocess.Popen(
            [*dg, "simulate", *feed, "--scenario", "default", "--minutes", str(minutes)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{args.port}"
        print(f"{'seconds':>7s} {'RSS MB':>8s} {'events read':>12s} {'lag':>8s}", flush=True)
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds:
                time.sleep(args.every)
                try:
                    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
                        text = r.read().decode()
                except OSError:
                    text = ""
                print(
                    f"{time.monotonic() - started:7.0f} {rss_mb(worker.pid):8.1f} "
                    f"{metric(text, 'distillguard_events_in_total'):12,.0f} "
                    f"{metric(text, 'distillguard_consumer_lag'):8,.0f}",
                    flush=True,
                )
                if worker.poll() is not None:
                    print(f"worker exited with {worker.returncode}", flush=True)
                    break
        finally:
            feeder.send_signal(signal.SIGTERM)
            worker.send_signal(signal.SIGTERM)
            for p in (feeder, worker):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
