"""simulate --topic writes the same traffic to a real (embedded) broker, at the asked rate."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest

from infra.broker import EmbeddedBroker, ensure_topics, read_topic
from schemas.topics import default_topics
from streams.cli import main

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, default_topics(4))
        yield b


def test_simulate_to_topic_delivers_every_line_keyed_by_account(broker, tmp_path, capsys) -> None:
    labels = tmp_path / "labels.json"
    args = [
        "simulate",
        "--topic",
        "api-usage-events",
        "--bootstrap",
        broker.bootstrap,
        "--labels",
        str(labels),
        "--scenario",
        "small",
        "--minutes",
        "4",
        "--benign-accounts",
        "60",
        "--bad-lines",
        "0.01",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    sent = int(err.split("(")[1].split(" messages")[0])
    got = read_topic(broker.bootstrap, "api-usage-events", 4)
    assert len(got) == sent
    accounts = orjson.loads(labels.read_bytes())["accounts"]
    good = bad = 0
    for key, value in got:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(doc, dict) and key is not None and doc.get("account_id") in accounts:
            assert key.decode() == doc["account_id"]
            good += 1
        else:
            bad += 1
    assert good > 1_000 and bad > 0


def test_rate_limit_is_kept(broker) -> None:
    from streams.produce import produce

    started = time.monotonic()
    n = produce(
        ((b"k", b"{}") for _ in range(1_500)),
        broker.bootstrap,
        "enforcement-actions",
        rate=1_000,
        batch=100,
    )
    elapsed = time.monotonic() - started
    assert n == 1_500
    assert 1.3 <= elapsed <= 4.0  # 1.5 s of sending at 1,000/s, plus connection set-up


def test_broker_command_starts_and_stops(capsys) -> None:
    assert main(["broker", "--seconds", "0.5", "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    assert "export DISTILLGUARD_KAFKA_BOOTSTRAP=127.0.0.1:" in out and "stopped" in out
