"""The TLS settings against a real broker: the worker, `simulate --topic`, topic creation and a
librdkafka consumer, through mutual TLS (a TLS listener in front of the embedded Tansu broker,
see `tests.infra.tls_proxy`); and clients that do not trust the broker, or bring no certificate,
are refused."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme
from confluent_kafka import Consumer
from kafka.errors import KafkaError

from infra.broker import EmbeddedBroker, ensure_topics, free_port
from infra.kafka_auth import KafkaAuth, check_reachable
from schemas.topics import DEAD_LETTERS, default_topics
from tests.conftest import stop_worker
from tests.infra.tls_proxy import TlsProxy

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path | ssl.SSLContext]:
    """A CA, the broker's certificate for 127.0.0.1 and a client certificate, as files, and the
    listener's context: it requires a client certificate issued by the CA (mutual TLS)."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("distillguard-worker")
    other = trustme.CA()  # a CA the broker does not know
    paths = {
        "ca": tmp_path / "ca.pem",
        "client": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
        "stranger": tmp_path / "stranger.pem",
        "other_ca": tmp_path / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    client.cert_chain_pems[0].write_to_path(paths["client"])
    client.private_key_pem.write_to_path(paths["client_key"])
    other.issue_cert("distillguard-worker").private_key_and_cert_chain_pem.write_to_path(
        paths["stranger"]
    )
    other.cert_pem.write_to_path(paths["other_ca"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return {**paths, "context": context}


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def test_the_worker_and_every_client_work_through_mutual_tls(pki, tmp_path: Path) -> None:
    auth = KafkaAuth("SSL", cafile=str(pki["ca"]), certfile=str(pki["client"]),
                     keyfile=str(pki["client_key"]))  # fmt: skip
    env = {
        **os.environ,
        "DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
        "DISTILLGUARD_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "DISTILLGUARD_KAFKA_SSL_CERTFILE": str(pki["client"]),
        "DISTILLGUARD_KAFKA_SSL_KEYFILE": str(pki["client_key"]),
        "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb",
        "DISTILLGUARD_INTERNAL_PARTITIONS": "2",
        "DISTILLGUARD_IDLE_FLUSH_SECONDS": "3",
    }
    broker_port, web = free_port(), free_port()
    with (
        TlsProxy(broker_port, pki["context"]) as tls,  # type: ignore[arg-type]
        EmbeddedBroker(port=broker_port, advertised_port=tls.port, auth=auth) as broker,
    ):
        env |= {"DISTILLGUARD_KAFKA_BOOTSTRAP": broker.bootstrap, "DISTILLGUARD_WEB_PORT": str(web)}
        ensure_topics(broker.bootstrap, default_topics(2), auth=auth)  # kafka-python's admin
        # The gateway's side: `simulate --topic` (kafka-python), some lines malformed.
        sim = subprocess.run(
            [sys.executable, "-m", "streams.cli", "simulate", "--scenario", "small",
             "--minutes", "3", "--topic", "api-usage-events", "--bad-lines", "0.01"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stderr[-2000:]
        sent = int(sim.stderr.split(" messages)")[0].rsplit("(", 1)[1])
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline, text = time.monotonic() + 120, ""
            while time.monotonic() < deadline:
                assert worker.poll() is None, worker.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
                text = metrics(web)
                if f"distillguard_events_in_total {sent}" in text and "ip_block" in text:
                    break
                time.sleep(1)
            # Read, windowed and scored through TLS, dead letters published back through it...
            assert f"distillguard_events_in_total {float(sent)}" in text or (
                f"distillguard_events_in_total {sent}" in text
            ), text[-1500:]
            # ... and a librdkafka consumer group (a billing system) reads them through TLS too.
            consumer = Consumer({
                "bootstrap.servers": broker.bootstrap, "group.id": "billing",
                "auto.offset.reset": "earliest", "security.protocol": "SSL",
                "ssl.ca.location": str(pki["ca"]),
                "ssl.certificate.location": str(pki["client"]),
                "ssl.key.location": str(pki["client_key"]),
            })  # fmt: skip
            try:
                consumer.subscribe([DEAD_LETTERS])
                letters: list[dict[str, object]] = []
                until = time.monotonic() + 30
                while time.monotonic() < until and not letters:
                    msg = consumer.poll(1.0)
                    if msg is not None and msg.error() is None:
                        letters.append(orjson.loads(msg.value()))
            finally:
                consumer.close()
            assert letters and letters[0]["reason"]
        finally:
            code = stop_worker(worker)
        assert code == 0


@pytest.mark.parametrize(
    "who", ["trusts another CA", "brings no certificate", "brings a stranger's certificate"]
)
def test_a_client_the_listener_or_it_cannot_trust_is_refused(pki, who: str) -> None:
    good = KafkaAuth("SSL", cafile=str(pki["ca"]), certfile=str(pki["client"]),
                     keyfile=str(pki["client_key"]))  # fmt: skip
    bad = {
        "trusts another CA": KafkaAuth("SSL", cafile=str(pki["other_ca"]),
                                       certfile=str(pki["client"]),
                                       keyfile=str(pki["client_key"])),
        "brings no certificate": KafkaAuth("SSL", cafile=str(pki["ca"])),
        "brings a stranger's certificate": KafkaAuth("SSL", cafile=str(pki["ca"]),
                                                     certfile=str(pki["stranger"])),
    }[who]  # fmt: skip
    broker_port = free_port()
    with (
        TlsProxy(broker_port, pki["context"]) as tls,  # type: ignore[arg-type]
        EmbeddedBroker(port=broker_port, advertised_port=tls.port, auth=good) as broker,
    ):
        started = time.monotonic()
        with pytest.raises(KafkaError):
            ensure_topics(broker.bootstrap, {"t": 1}, timeout_s=3.0, auth=bad)
        assert time.monotonic() - started < 10  # within its timeout, not kafka-python's 30 s
        ensure_topics(broker.bootstrap, {"t": 1}, auth=good)  # the listener is fine


def test_a_tls_1_2_listener_dropping_a_client_without_a_certificate_is_named(pki) -> None:
    """Under TLS 1.2 a listener that wants a client certificate ends a handshake without one by
    closing (or with a bare handshake failure), which alone reads like no TLS listener at all."""
    context = pki["context"]
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    no_cert = KafkaAuth("SSL", cafile=str(pki["ca"]))
    with (
        TlsProxy(free_port(), context) as tls,
        pytest.raises(OSError, match="wants a client certificate") as refused,
    ):
        check_reachable(f"127.0.0.1:{tls.port}", no_cert, timeout_s=5.0)
    assert "not a TLS listener" not in str(refused.value)


@contextlib.contextmanager
def _openssl_listener(context: ssl.SSLContext) -> Iterator[int]:
    """A blocking TLS listener on 127.0.0.1 that, as OpenSSL and Java brokers do (and asyncio
    does not), answers a handshake it refuses with an alert. Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5.0)
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("refusal", ["wants a client certificate", "shares no cipher"])
def test_a_tls_1_2_listener_refusing_with_an_alert_is_not_called_plaintext(
    pki, refusal: str
) -> None:
    """A handshake_failure alert is TLS spoken: whatever the cause (a missing client certificate
    under TLS 1.2, no cipher in common), the advice names the SSL settings, never PLAINTEXT."""
    context = pki["context"]
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if refusal == "shares no cipher":
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("AES128-SHA256")
    no_cert = KafkaAuth("SSL", cafile=str(pki["ca"]))
    with (
        _openssl_listener(context) as port,
        pytest.raises(OSError, match="HANDSHAKE_FAILURE") as refused,
    ):
        check_reachable(f"127.0.0.1:{port}", no_cert, timeout_s=5.0)
    said = str(refused.value)
    assert "not a TLS listener" not in said and "DISTILLGUARD_KAFKA_SSL_" in said, said
    assert "client certificate" in said


def test_the_pre_flight_keeps_its_deadline_when_it_probes_a_second_time(pki) -> None:
    """A listener that closes late in the handshake and then stays silent: the second hello
    (which tells a refusing TLS listener from a plaintext one) gets only what time is left."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        time.sleep(1.4)
        conn.close()
        late, _ = listener.accept()  # the second hello: read, never answered
        time.sleep(0.5)
        late.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started = time.monotonic()
    with pytest.raises(OSError, match="TLS handshake failed"):
        check_reachable(
            f"127.0.0.1:{listener.getsockname()[1]}", KafkaAuth("SSL", cafile=str(pki["ca"])),
            timeout_s=1.5,
        )  # fmt: skip
    assert time.monotonic() - started < 1.8
    thread.join(timeout=5)
    listener.close()


@pytest.mark.parametrize(
    ("command", "who", "says"),
    [
        ("worker", "trusts another CA", "the broker's certificate is not trusted"),
        ("simulate", "brings no certificate", "wants a client certificate"),
        ("worker", "speaks TLS to a plaintext listener", "if it is not a TLS listener"),
        ("simulate", "speaks plaintext to a TLS listener", "SECURITY_PROTOCOL to SSL"),
    ],
)
def test_a_refused_connection_is_one_line_with_the_cause_and_the_setting(
    pki, tmp_path: Path, command: str, who: str, says: str
) -> None:
    files = {
        "trusts another CA": {"CAFILE": pki["other_ca"], "CERTFILE": pki["client"],
                              "KEYFILE": pki["client_key"]},
        "brings no certificate": {"CAFILE": pki["ca"]},
        "speaks TLS to a plaintext listener": {"CAFILE": pki["ca"]},
        "speaks plaintext to a TLS listener": {},
    }[who]  # fmt: skip
    env = {
        **os.environ,
        "DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "SSL" if files else "PLAINTEXT",
        **{f"DISTILLGUARD_KAFKA_SSL_{k}": str(v) for k, v in files.items()},
        "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb",
        "DISTILLGUARD_WEB_PORT": str(free_port()),
    }
    args = {
        "worker": ["worker"],
        "simulate": ["simulate", "--scenario", "small", "--minutes", "1", "--topic", "t"],
    }[command]
    good = KafkaAuth("SSL", cafile=str(pki["ca"]), certfile=str(pki["client"]),
                     keyfile=str(pki["client_key"]))  # fmt: skip
    broker_port = free_port()
    with contextlib.ExitStack() as stack:
        if "to a plaintext" in who:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        else:
            tls = stack.enter_context(TlsProxy(broker_port, pki["context"]))  # type: ignore[arg-type]
            broker = EmbeddedBroker(port=broker_port, advertised_port=tls.port, auth=good)
            bootstrap = stack.enter_context(broker).bootstrap
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env={**env, "DISTILLGUARD_KAFKA_BOOTSTRAP": bootstrap},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"distillguard {command}: error: ")
    assert says in errors[0] and "DISTILLGUARD_KAFKA_" in errors[0], errors[0]
    assert time.monotonic() - started < 30
