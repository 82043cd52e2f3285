"""`distillguard worker` as a process: Faust app, engine, web views, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import EmbeddedBroker, ensure_topics, free_port
from schemas.topics import USAGE_EVENTS, default_topics
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.produce import produce
from tests.conftest import stop_worker

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_worker_process_serves_health_metrics_and_investigations(tmp_path) -> None:
    traffic = simulate(replace(SCENARIOS["small"], minutes=4, benign_accounts=150))
    messages = list(traffic_lines(traffic, bad_line_rate=0.01))
    port = free_port()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(2))
        env = {
            **os.environ,
            "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb",
            "DISTILLGUARD_WEB_PORT": str(port),
            "DISTILLGUARD_INTERNAL_PARTITIONS": "2",
            "DISTILLGUARD_IDLE_FLUSH_SECONDS": "3",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            produce(messages, broker.bootstrap, USAGE_EVENTS)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            metrics = ""
            while time.monotonic() < deadline:
                assert worker.poll() is None, worker.stdout.read().decode()[-2000:]
                try:
                    _, body = get(f"{base}/metrics")
                    metrics = body.decode()
                except OSError:
                    metrics = ""
                if (
                    f"distillguard_events_in_total {len(messages)}" in metrics
                    and 'windows_scored_total{kind="ip_block"}' in metrics
                ):
                    break
                time.sleep(1)
            assert f"distillguard_events_in_total {len(messages)}" in metrics, metrics
            # Prometheus text format: every metric with its HELP and TYPE, the latency histograms
            # observed (batches read to published, ClickHouse inserts).
            families = list(text_string_to_metric_families(metrics))
            assert all(f.documentation and f.type for f in families)
            samples = {s.name: s.value for f in families for s in f.samples if not s.labels}
            assert samples["distillguard_dead_letters_total"] >= 0
            assert samples["distillguard_batch_latency_seconds_count"] > 0
            assert samples["distillguard_clickhouse_insert_latency_seconds_count"] > 0
            assert "distillguard_consumer_lag" in {f.name for f in families}
            status, body = get(f"{base}/health")
            assert status == 200 and orjson.loads(body)["status"] == "ok"
            account = next(iter(traffic.labels["accounts"]))
            status, body = get(f"{base}/investigate/account?id={account}")
            view = orjson.loads(body)
            assert status == 200 and view["entity_id"] == account and view["windows"]
            status, _ = get(f"{base}/investigate/account")
            assert status == 400
            # REST-style paths: the same views, 404 for unknown entities, 400 for bad parameters
            status, body = get(f"{base}/api/accounts/{account}")
            assert status == 200 and orjson.loads(body)["entity_id"] == account
            block = orjson.loads(body)["linked"][0]["entity"]  # a CIDR, slash and all
            status, body = get(f"{base}/api/ip-blocks/{block}")
            assert status == 200 and orjson.loads(body)["entity_id"] == block
            assert get(f"{base}/api/accounts/no-such-account")[0] == 404
            assert get(f"{base}/api/ip-blocks/not-a-cidr")[0] == 400
            assert get(f"{base}/api/top?kind=account&minutes=abc")[0] == 400
            status, body = get(f"{base}/api/top?kind=ip-block&minutes=10080&limit=3")
            assert status == 200 and len(orjson.loads(body)["top"]) == 3
            status, body = get(f"{base}/investigate/campaign?id=no-such-campaign")
            assert status == 404 and "no campaign" in orjson.loads(body)["error"]
            status, body = get(f"{base}/investigate/top?kind=campaign&minutes=10080")
            assert status == 200
            for row in orjson.loads(body)["top"][:1]:  # campaigns, if this short run linked any
                status, body = get(f"{base}/investigate/campaign?id={row['entity_id']}")
                view = orjson.loads(body)
                assert status == 200 and view["growth"] and view["members"]
        finally:
            code = stop_worker(worker)
        assert code == 0
        log = worker.stdout.read().decode()
        assert "distillguard worker ready" in log and "/health" in log


def _metric(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and not s.labels:
                return float(s.value)
    return None


def test_a_killed_worker_process_is_replaced_by_another_within_seconds(tmp_path) -> None:
    """`distillguard worker` processes, not engines in one process: the replacement joins the
    Faust app's own consumer group as well as the stages', and waits for the killed process's
    sessions to expire in each (6 s sessions; with Faust's default 60 s the replacement's engine
    started ~115 s after the kill)."""
    traffic = simulate(replace(SCENARIOS["small"], minutes=3, benign_accounts=100))
    messages = list(traffic_lines(traffic))
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(2))
        env = {
            **os.environ,
            "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb",
            "DISTILLGUARD_INTERNAL_PARTITIONS": "2",
            "DISTILLGUARD_CHECKPOINT_SECONDS": "1",
        }

        def start(port: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"],
                env={**env, "DISTILLGUARD_WEB_PORT": str(port)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def read_events(proc: subprocess.Popen[bytes], port: int, timeout: float) -> float:
            """Seconds until the worker has read an event (-1: not within ``timeout``)."""
            started = time.monotonic()
            while time.monotonic() - started < timeout:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                try:
                    text = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
                except OSError:
                    text = ""
                if (_metric(text, "distillguard_events_in_total") or 0) > 0:
                    return time.monotonic() - started
                time.sleep(0.5)
            return -1.0

        half = len(messages) // 2
        first_port, second_port = free_port(), free_port()
        first = start(first_port)
        try:
            produce(messages[:half], broker.bootstrap, USAGE_EVENTS)
            assert read_events(first, first_port, 90) >= 0
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        produce(messages[half:], broker.bootstrap, USAGE_EVENTS)
        second = start(second_port)
        try:
            took = read_events(second, second_port, 90)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=45)
            except subprocess.TimeoutExpired:
                second.kill()
    print(f"\nreplacement process reading {took:.1f} s after it started")
    assert 0 <= took < 40
