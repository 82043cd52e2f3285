"""SASL and TLS settings reach every Kafka client the project opens, and the password never
shows: in a repr, in an error, or in what the worker prints when it refuses to start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import certifi
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from infra.broker import free_port
from infra.kafka_auth import KafkaAuth, check_reachable
from streams.app import faust_credentials
from streams.settings import Settings

SECRET = "Pw-7f3a9c"  # a test password, searched for in what is printed
SASL_ENV = {
    "DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "DISTILLGUARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "DISTILLGUARD_KAFKA_SASL_USERNAME": "svc-distillguard",
    "DISTILLGUARD_KAFKA_SASL_PASSWORD": SECRET,
    "DISTILLGUARD_KAFKA_SSL_CAFILE": certifi.where(),
}


def test_settings_make_one_auth_for_every_client_and_never_show_the_password() -> None:
    settings = Settings.from_env(SASL_ENV)
    auth = settings.kafka_auth()
    assert SECRET not in repr(settings) and SECRET not in repr(auth)
    kw = auth.client_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc-distillguard" and kw["sasl_plain_password"] == SECRET
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    # kafka-python (simulate --topic, topic creation) knows every keyword
    assert set(kw) <= set(KafkaProducer.DEFAULT_CONFIG) & set(KafkaAdminClient.DEFAULT_CONFIG)
    creds = faust_credentials(auth)  # the Faust app's own client
    assert creds is not None and creds.protocol.value == "SASL_SSL"

    async def build() -> None:  # aiokafka (the worker) checks its security settings up front
        AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **kw)
        AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", **kw)
        with pytest.raises(ValueError, match="ssl_context"):  # it does check them
            AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **{**kw, "ssl_context": None})

    asyncio.run(build())


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    auth = Settings.from_env({}).kafka_auth()
    assert auth.client_kwargs() == {} and faust_credentials(auth) is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not one of PLAINTEXT, SSL"),
        ({**SASL_ENV, "DISTILLGUARD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "is not one of PLAIN"),
        ({**SASL_ENV, "DISTILLGUARD_KAFKA_SASL_USERNAME": ""}, "needs DISTILLGUARD_KAFKA_SASL"),
        ({"DISTILLGUARD_KAFKA_SASL_PASSWORD": SECRET}, "does not use SASL"),
        ({**SASL_ENV, "DISTILLGUARD_KAFKA_SSL_CAFILE": "/no/ca.pem"}, "/no/ca.pem: no such file"),
        ({"DISTILLGUARD_KAFKA_SSL_CAFILE": certifi.where()}, "does not use TLS"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it_without_the_password(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        Settings.from_env(env).kafka_auth()
    assert "\n" not in str(caught.value) and SECRET not in str(caught.value)


def test_the_worker_refuses_to_start_with_one_line_and_no_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **SASL_ENV,
        "DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",  # SASL_* set but not used: refused
        "DISTILLGUARD_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "DISTILLGUARD_CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb",
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "does not use SASL" in said and "Traceback" not in said and SECRET not in said


def test_the_pre_flight_reads_bootstrap_servers_as_the_clients_do() -> None:
    """Several servers, a protocol prefix, IPv6 literals, no port: the first reachable one is
    enough; the refused ones are named in one line, grouped by what is wrong."""
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        live = up.getsockname()[1]
        closed = [free_port(), free_port()]
        check_reachable(f"127.0.0.1:{closed[0]},PLAINTEXT://127.0.0.1:{live}", KafkaAuth())
        with pytest.raises(OSError) as refused:
            check_reachable(f"127.0.0.1:{closed[0]}, SSL://127.0.0.1:{closed[1]}", KafkaAuth())
    line = str(refused.value)
    assert "\n" not in line and line.count("connection refused") == 1
    assert f"127.0.0.1:{closed[0]}, 127.0.0.1:{closed[1]}: connection refused" in line
    with pytest.raises(OSError, match=r"\[::1\]:9092: "):  # no port: the clients' 9092
        check_reachable("[::1]", KafkaAuth(), timeout_s=2.0)


def test_a_silent_server_leaves_time_for_the_healthy_ones_after_it() -> None:
    """A bootstrap server that never completes a connection (its accept queue is full, so its
    SYNs are dropped) gets its share of the deadline, not all of it."""
    with (
        socket.create_server(("127.0.0.1", 0), backlog=0) as full,
        socket.create_server(("127.0.0.1", 0)) as live,
    ):
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(full.getsockname())

        def answer() -> None:  # what a broker's ApiVersions answer starts with
            conn, _ = live.accept()
            with conn:
                conn.recv(64)
                conn.sendall(struct.pack(">ii", 4, 1))

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        started = time.monotonic()
        check_reachable(
            f"127.0.0.1:{full.getsockname()[1]},127.0.0.1:{live.getsockname()[1]}", KafkaAuth(),
            timeout_s=4.0,
        )  # fmt: skip
        assert time.monotonic() - started < 3.0
        thread.join(timeout=5)
        for filler in fillers:
            filler.close()
