"""The worker's web server: bound to the configured host, guarded by an optional bearer token,
and strict about its parameters (400 / 404 with one-line JSON errors, never a traceback).

One worker process (real Tansu broker, real chDB) serves every test of the module."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest

from infra.broker import EmbeddedBroker, ensure_topics, free_port
from schemas.topics import USAGE_EVENTS, default_topics
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.app import create_app
from streams.cli import main
from streams.produce import produce
from streams.settings import Settings
from tests.conftest import stop_worker

TOKEN = "t0ken-for-tests-only"


def get(url: str, token: str | None = TOKEN, scheme: str = "Bearer") -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Worker:
    base: str
    port: int
    account: str
    block: str


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    traffic = simulate(replace(SCENARIOS["small"], minutes=4, benign_accounts=150))
    messages = list(traffic_lines(traffic, bad_line_rate=0.0))
    port = free_port()
    tmp = tmp_path_factory.mktemp("secure-worker")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, default_topics(2))
        env = {
            **os.environ,
            "DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp}/chdb",
            "DISTILLGUARD_WEB_PORT": str(port),
            "DISTILLGUARD_WEB_TOKEN": TOKEN,
            "DISTILLGUARD_INTERNAL_PARTITIONS": "2",
            "DISTILLGUARD_IDLE_FLUSH_SECONDS": "3",
        }
        env.pop("DISTILLGUARD_WEB_HOST", None)  # the default host is what is tested
        proc = subprocess.Popen(
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
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
                try:
                    metrics = get(f"{base}/metrics")[1].decode()
                except OSError:
                    metrics = ""
                if 'windows_scored_total{kind="ip_block"}' in metrics:
                    break
                time.sleep(1)
            assert 'windows_scored_total{kind="ip_block"}' in metrics, metrics
            status, body = get(f"{base}/investigate/top?kind=ip-block&limit=1")
            assert status == 200, body
            block = orjson.loads(body)["top"][0]["entity_id"]
            status, body = get(f"{base}/investigate/top?limit=1")
            assert status == 200, body
            account = orjson.loads(body)["top"][0]["entity_id"]
            yield Worker(base, port, account, block)
        finally:
            code = stop_worker(proc)
        assert code == 0


def _listening(port: int) -> set[str]:
    """Addresses with a TCP socket listening on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state = cols[1], cols[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def _local_non_loopback_ipv4() -> list[str]:
    """This machine's own IPv4 addresses other than 127/8 (from the kernel's routing trie)."""
    path = Path("/proc/net/fib_trie")
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            addr = prev.strip().removeprefix("|-- ")
            if not addr.startswith("127."):
                out.append(addr)
    return sorted(set(out))


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_web_server_listens_on_loopback_only(worker: Worker) -> None:
    assert _listening(worker.port) == {"127.0.0.1"}
    for addr in _local_non_loopback_ipv4():
        with pytest.raises(OSError):
            socket.create_connection((addr, worker.port), timeout=3).close()


def test_the_app_binds_the_configured_host() -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", web_host="127.0.0.1"))
    assert app.conf.web_bind == "127.0.0.1"
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", web_host="0.0.0.0", web_token="x"))
    assert app.conf.web_bind == "0.0.0.0"


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_token_guards_every_route_but_health(worker: Worker) -> None:
    base = worker.base
    status, body = get(f"{base}/health", token=None)
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    guarded = [
        "/metrics",
        "/investigate/top",
        f"/investigate/account?id={worker.account}",
        "/investigate/nope",
        "/",  # Faust's own pages too
        "/router/",
        "/no/such/route",
    ]
    for path in guarded:
        for token, scheme in ((None, "Bearer"), ("wrong", "Bearer"), (TOKEN + "x", "Bearer")):
            status, body = get(base + path, token=token, scheme=scheme)
            assert status == 401, (path, token, status)
            assert "bearer token" in orjson.loads(body)["error"]
        status, _ = get(base + path, token=TOKEN, scheme="Basic")
        assert status == 401, path
    assert get(f"{base}/metrics")[0] == 200
    assert get(f"{base}/metrics", scheme="bearer")[0] == 200  # the scheme is case-insensitive
    status, body = get(f"{base}/investigate/account?id={worker.account}")
    assert status == 200 and orjson.loads(body)["entity_id"] == worker.account
    # the web view the worker serves: the same token (as a header here; a login form for people)
    for path in ("/ui/", f"/ui/account/{worker.account}"):
        assert get(base + path, token=None)[0] == 401, path
        status, body = get(base + path)
        assert status == 200 and b"<html" in body.lower(), path
    assert b"<svg" in get(f"{base}/ui/account/{worker.account}")[1]


@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.parametrize(
    "path",
    [
        "/investigate/top?minutes=abc",
        "/investigate/top?minutes=0",
        "/investigate/top?minutes=10081",
        "/investigate/top?minutes=-5",
        "/investigate/top?limit=0",
        "/investigate/top?limit=1001",
        "/investigate/top?limit=1e3",
        "/investigate/top?kind=bogus",
        "/investigate/top?minute=5",  # a typo is not silently ignored
        "/investigate/account",
        "/investigate/account?id=",
        "/investigate/account?id=a&limit=x",
        "/investigate/account?id=a&limit=100000",
        "/investigate/account?id=" + "a" * 300,
        "/investigate/account?id=a%0Ab",
        "/investigate/ip-block?id=not-a-cidr",
        "/investigate/ip-block?id=1.2.3.0/24&debug=1",
        "/health?x=1",
        "/metrics?x=1",
    ],
)
def test_bad_parameters_answer_400_with_one_line_json(worker: Worker, path: str) -> None:
    status, body = get(worker.base + path)
    assert status == 400, (status, body[:300])
    error = orjson.loads(body)["error"]
    assert error and "\n" not in error and "Traceback" not in error
    assert b"\n" not in body.strip()


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_unknown_entities_and_views_answer_404(worker: Worker) -> None:
    for path in (
        "/investigate/account?id=no-such-account",
        "/investigate/ip-block?id=203.0.113.0/24",
        "/investigate/campaigns",
    ):
        status, body = get(worker.base + path)
        assert status == 404, (path, status, body[:300])
        assert "\n" not in orjson.loads(body)["error"]


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_valid_parameters_bound_the_answer(worker: Worker) -> None:
    status, body = get(f"{worker.base}/investigate/account?id={worker.account}&limit=1")
    view = orjson.loads(body)
    assert status == 200 and len(view["windows"]) == 1 and len(view["linked"]) <= 1
    status, body = get(f"{worker.base}/investigate/ip-block?id={worker.block}&limit=2")
    view = orjson.loads(body)
    assert status == 200 and view["entity_kind"] == "ip_block" and 1 <= len(view["windows"]) <= 2
    status, body = get(f"{worker.base}/investigate/top?kind=ip_block&minutes=10080&limit=1000")
    assert status == 200 and orjson.loads(body)["kind"] == "ip_block"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "worker.example.com"])
def test_a_non_loopback_host_without_a_token_is_refused(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISTILLGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("DISTILLGUARD_WEB_HOST", host)
    monkeypatch.delenv("DISTILLGUARD_WEB_TOKEN", raising=False)
    assert main(["worker"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"distillguard worker: error: DISTILLGUARD_WEB_HOST={host} exposes investigation data; "
        "set DISTILLGUARD_WEB_TOKEN or bind 127.0.0.1"
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_a_loopback_host_needs_no_token(host: str) -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", web_host=host))
    assert app.conf.web_bind == host
