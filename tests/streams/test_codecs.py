"""Gateways compress: the worker reads what librdkafka, kafka-python and aiokafka producers write,
with every Kafka codec, and a librdkafka consumer group reads its enforcement events.

On the real broker (Tansu, which hands compressed batches to consumers as they were produced)
and the real ClickHouse engine (chDB), with the helpers of the pipeline tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import replace
from pathlib import Path

import aiokafka.codec
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnsupportedCodecError
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaProducer
from kafka.codec import has_lz4

import schemas.json
from infra.broker import EmbeddedBroker
from models.detector import DetectorConfig
from models.keys import kafka_partitions
from models.policy import PolicyConfig
from schemas.topics import ENFORCEMENT, USAGE_EVENTS
from schemas.validation import Rejection, parse_enforcement
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.clickhouse import ClickHouseSink, StateStore
from streams.engine import Engine, EngineConfig
from streams.publish import OutputsUnavailable
from tests.streams.conftest import PARTITIONS, query, wait_until
from tests.streams.test_pipeline import finish

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
Messages = list[tuple[bytes, bytes]]
# Six minutes of 200 accounts (~7,000 events) reach enforcement when the reference is this small
# and the flag budget this loose: enough for a few flags on the topic, in seconds.
DETECTOR = DetectorConfig(
    calibration_warmup=200, forest_window=200, policy=PolicyConfig(flag_budget=0.01)
)
LIBRDKAFKA_CODECS = ("gzip", "snappy", "lz4", "zstd")
CONTRACT = orjson.loads(
    (Path(schemas.json.__file__).parent / "enforcement-action.schema.json").read_bytes()
)


@pytest.fixture(scope="module")
def messages() -> Messages:
    traffic = simulate(
        replace(
            SCENARIOS["small"],
            minutes=6,
            benign_accounts=200,
            campaign_start_minute=2,
            new_model_minute=3,
        )
    )
    return list(traffic_lines(traffic))


def engine(broker: EmbeddedBroker, db) -> Engine:
    client, name = db
    cfg = EngineConfig(
        broker.bootstrap,
        detector=DETECTOR,
        checkpoint_seconds=2.0,
        internal_partitions=PARTITIONS,
    )
    return Engine(cfg, ClickHouseSink(client, name), StateStore(client, name), asyncio.Lock())


def produce_librdkafka(
    messages: Messages, bootstrap: str, codec: str, partitioner: str = "murmur2_random"
) -> None:
    """As a gateway on confluent-kafka would. Its default partitioner hashes keys with CRC32;
    murmur2 is the one of the Java client, kafka-python and aiokafka, so an account keeps its
    partition whichever client wrote it."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "partitioner": partitioner,
            "acks": "all",
            "linger.ms": 20,
        }
    )
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    for key, value in messages:
        while True:
            try:
                producer.produce(USAGE_EVENTS, value, key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0, f"{codec}: not all messages were delivered"
    assert not failed, f"{codec}: {failed[0]}"


def produce_kafka_python(
    messages: Messages, bootstrap: str, codec: str | None, keyed: bool = True
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec)
    try:
        futures = [
            producer.send(USAGE_EVENTS, key=k if keyed else None, value=v) for k, v in messages
        ]
        producer.flush()
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close()


async def produce_aiokafka(messages: Messages, bootstrap: str, codec: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec)
    await producer.start()
    try:
        futures = [await producer.send(USAGE_EVENTS, v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def read_with_librdkafka_group(bootstrap: str, expected: set[str]) -> list[tuple[bytes, bytes]]:
    """A billing system on confluent-kafka: a consumer group, offsets committed after reading.
    Reads until every expected enforcement id has arrived (redeliveries included)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "billing-librdkafka",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # Tansu holds a new member's JoinGroup for half its session timeout (measured: 3 s
            # at 6 s, 22.5 s at librdkafka's default of 45 s)
            "session.timeout.ms": 6_000,
        }
    )
    got: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    try:
        consumer.subscribe([ENFORCEMENT])
        deadline = time.monotonic() + 30
        while not expected <= seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value()))
            seen.add(orjson.loads(msg.value())["enforcement_id"])
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_every_client_and_codec_is_read_and_scored(broker, db, messages) -> None:
    # one slice per producer, in event-time order: librdkafka with each codec, then kafka-python
    # and aiokafka (lz4 and zstd: snappy and zstd need libraries kafka-python does not ship)
    n = len(LIBRDKAFKA_CODECS) + 2
    size = -(-len(messages) // n)
    slices = [messages[i * size : (i + 1) * size] for i in range(n)]
    assert sum(map(len, slices)) == len(messages) and all(slices)
    kafka_python_codec = "lz4" if has_lz4() else "gzip"

    async def run() -> None:
        eng = engine(broker, db)
        await eng.start()
        try:
            for codec, part in zip(LIBRDKAFKA_CODECS, slices, strict=False):
                await asyncio.to_thread(produce_librdkafka, part, broker.bootstrap, codec)
            await asyncio.to_thread(
                produce_kafka_python, slices[-2], broker.bootstrap, kafka_python_codec
            )
            await produce_aiokafka(slices[-1], broker.bootstrap, "zstd")
            await finish([eng], len(messages))
        finally:
            await eng.stop()
        assert eng.failed() is None
        assert eng.metrics.events_in == len(messages)
        assert eng.metrics.dead_letters == 0  # every payload arrived intact
        assert eng.metrics.miskeyed == 0  # every client sent the account as the key

        # every event counted once in its account's window and in its block's window, and every
        # window scored once (all clients partitioned each account alike)
        for kind in ("account", "ip_block"):
            ((requests, rows, keys),) = query(
                db,
                "SELECT sum(requests), count(), uniqExact(entity_id, window_start) "
                f"FROM DB.entity_scores WHERE entity_kind = '{kind}'",
            )
            assert requests == len(messages), kind
            assert rows == keys, kind

        # the enforcement events, read by a librdkafka consumer group
        ids = {row[0] for row in query(db, "SELECT enforcement_id FROM DB.enforcement_actions")}
        assert ids, "no enforcement event to read"
        got = await asyncio.to_thread(read_with_librdkafka_group, broker.bootstrap, ids)
        assert {orjson.loads(v)["enforcement_id"] for _, v in got} == ids
        for key, value in got:
            doc = parse_enforcement(value)  # JSON, and the contract's schema
            assert not isinstance(doc, Rejection), doc
            assert key.decode() == f"{doc['entity_kind']}:{doc['entity_id']}"
            assert set(CONTRACT["required"]) <= set(doc)

    asyncio.run(run())


def test_a_codec_the_worker_cannot_decode_is_logged_with_its_fix(
    broker, db, messages, monkeypatch, caplog
) -> None:
    # aiokafka without its codec library, as before cramjam was a dependency
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    produce_librdkafka(messages[:500], broker.bootstrap, "snappy")

    async def run() -> None:
        eng = engine(broker, db)
        await eng.start()
        try:
            with pytest.raises(UnsupportedCodecError):
                await wait_until(lambda: False, timeout=20, engines=[eng])
        finally:
            await eng.stop(graceful=False)
        assert eng.metrics.events_in == 0

    with caplog.at_level(logging.ERROR, logger="distillguard.engine"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "distillguard.engine"]
    assert len(lines) == 1, lines
    (line,) = lines
    assert "accounts stage stopped" in line and "snappy" in line and "install cramjam" in line
    assert "\n" not in line


class _RawName(str):
    """A header name that a Go client (sarama, franz-go) or librdkafka's C API can write: bytes
    that are not UTF-8 (kafka-python encodes header names with ``str.encode``)."""

    def encode(self, *args, **kwargs) -> bytes:  # type: ignore[override]
        return b"\xff\xfetrace"


def test_a_header_name_the_client_cannot_decode_stops_the_worker_with_its_fix(
    broker, db, messages, caplog
) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        key, value = messages[0]
        producer.send(USAGE_EVENTS, key=key, value=value, headers=[(_RawName("t"), b"1")]).get(30)
    finally:
        producer.close()

    async def run() -> None:
        eng = engine(broker, db)
        await eng.start()
        try:
            with pytest.raises(OutputsUnavailable, match="a header name that is not UTF-8"):
                await wait_until(lambda: False, timeout=20, engines=[eng])
        finally:
            await eng.stop(graceful=False)

    with caplog.at_level(logging.ERROR, logger="distillguard.engine"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "distillguard.engine"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "accounts stage stopped" in lines[0] and "kafka-delete-records" in lines[0]


def test_a_gateways_open_transaction_is_neither_read_nor_waited_for(broker, db, messages) -> None:
    # A gateway producing in transactions (librdkafka, transactional.id): one committed, then
    # one left open while the worker catches up on what is committed. Records of an open
    # transaction are not readable yet (they may be aborted), and the partitions they sit on
    # are caught up: their windows close and flush as if the input ended there. (Aborted
    # records are skipped through the fetch response's list of aborted transactions, which
    # Kafka sends and the embedded broker leaves empty, so that part is not tested here.)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": "gateway-1",
            "partitioner": "murmur2_random",
            "linger.ms": 20,
        }
    )
    producer.init_transactions(30)

    def transaction(part: Messages) -> None:
        producer.begin_transaction()
        for key, value in part:
            while True:
                try:
                    producer.produce(USAGE_EVENTS, value, key)
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(30) == 0

    transaction(messages)
    producer.commit_transaction(30)
    pending: Messages = []
    for _key, value in messages[:300]:  # other accounts' requests, ids of their own
        doc = orjson.loads(value)
        doc["account_id"] = f"pending-{doc['account_id']}"
        doc["event_id"] = f"pending-{doc['event_id']}"
        pending.append((doc["account_id"].encode(), orjson.dumps(doc)))
    transaction(pending)  # left open

    async def run() -> None:
        eng = engine(broker, db)
        await eng.start()
        try:
            await finish([eng], len(messages))  # caught up, flushed
        finally:
            await eng.stop()
        assert eng.failed() is None
        assert eng.metrics.events_in == len(messages)

    try:
        asyncio.run(run())
    finally:
        producer.abort_transaction(30)
    ((requests, pending_rows),) = query(
        db,
        "SELECT sum(requests), countIf(startsWith(entity_id, 'pending-')) "
        "FROM DB.entity_scores WHERE entity_kind = 'account'",
    )
    assert (requests, pending_rows) == (len(messages), 0)


@pytest.mark.parametrize("gateway", ["kafka-python, no key", "librdkafka, CRC32 partitioner"])
def test_a_gateway_that_splits_accounts_is_said_once_and_still_scored(
    broker, db, messages, caplog, gateway
) -> None:
    # kafka-python without a key, or librdkafka keyed by account but with its default CRC32
    # partitioner (murmur2 is the contract's, the Java, Python and aiokafka clients'), spreads
    # accounts over partitions: scored, counted on /metrics, said in one line with the fix.
    part = messages[:300]
    if gateway.startswith("kafka-python"):
        produce_kafka_python(part, broker.bootstrap, None, keyed=False)
        misplaced = len(part)
    else:
        produce_librdkafka(part, broker.bootstrap, "none", partitioner="consistent_random")
        misplaced = sum(
            zlib.crc32(k) % PARTITIONS != int(kafka_partitions([k], PARTITIONS)[0]) for k, _ in part
        )
        assert 0 < misplaced < len(part)

    async def run() -> None:
        eng = engine(broker, db)
        await eng.start()
        try:
            await finish([eng], 300)
        finally:
            await eng.stop()
        assert eng.failed() is None
        assert (eng.metrics.events_in, eng.metrics.miskeyed, eng.metrics.dead_letters) == (
            len(part),
            misplaced,
            0,
        )

    with caplog.at_level(logging.WARNING, logger="distillguard.engine"):
        asyncio.run(run())
    said = [r.getMessage() for r in caplog.records if "where their account_id" in r.getMessage()]
    assert len(said) == 1, said
    assert "are not where their account_id puts them" in said[0]
    assert "Fix: produce with key=account_id" in said[0]
    assert "\n" not in said[0]
