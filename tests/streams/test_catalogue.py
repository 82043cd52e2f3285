"""A catalogue of bad input, through ``score`` and over Kafka: nothing crashes, nothing is lost.

Every kind of bad message a gateway, a broken producer or a hostile one can send, each with the
field and the reason a person should read in its dead letter. The same catalogue goes through
``distillguard score`` as lines of a file, and to the worker on the real broker (Tansu) from a
librdkafka producer with each of its codecs, mixed with valid traffic, into the real ClickHouse
engine (chDB). Both must account for every message exactly: valid in = scored + late, invalid in =
dead letters, each with its precise reason.

The catalogue: the contract's bad values (`tests.schemas.test_contracts`), the former
disagreements between validator and JSON Schema (`tests.schemas.test_event_agreement`), messages
that are not JSON objects, more bad values, and what only a stream has: a tombstone, a message over
``max_message_bytes``, events far in the future and far in the past.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Producer

from schemas.topics import USAGE_EVENTS
from schemas.validation import Rejection, parse_event
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.cli import main
from streams.processors import MAX_PAST_SKEW_MS, TOMBSTONE
from tests.schemas.test_contracts import BAD, MINIMAL
from tests.schemas.test_event_agreement import REGRESSIONS
from tests.streams.conftest import DAY_MS, query, valid
from tests.streams.test_faults import engine, finish, produce_raw

CODECS = ("gzip", "snappy", "lz4", "zstd")
MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Bad:
    """One kind of bad input: the message (``None``: a tombstone) and what its dead letter says.

    ``stream_only``: it cannot be a line of a file (a tombstone, an empty message, a time that is
    only wrong relative to when a worker receives it)."""

    name: str
    value: bytes | None
    field: str
    phrase: str
    stream_only: bool = False


def _doc(change: dict[str, Any]) -> bytes:
    bad = {**MINIMAL, **change}
    return orjson.dumps({k: v for k, v in bad.items() if not (v is None and k in MINIMAL)})


def _spliced(old: bytes, new: bytes) -> bytes:
    """MINIMAL with ``old`` replaced by ``new`` in its JSON text (for what orjson cannot write)."""
    text = orjson.dumps(MINIMAL)
    assert old in text
    return text.replace(old, new)


def _extra(tail: bytes) -> bytes:
    return orjson.dumps(MINIMAL)[:-1] + b"," + tail + b"}"


def _now_event(name: str, offset_ms: int) -> bytes:
    ts = int(time.time() * 1000) + offset_ms
    return orjson.dumps({**MINIMAL, "event_id": name, "ts": ts})


def catalogue() -> list[Bad]:
    out = [Bad(f"contract:{f}:{i}", _doc(c), f, p) for i, (c, f, p) in enumerate(BAD)]
    out += [Bad(f"agreement:{f}:{i}", _doc(c), f, p) for i, (c, f, p) in enumerate(REGRESSIONS)]
    out += [
        Bad("empty message", b"", "$", "not valid JSON", stream_only=True),
        Bad("truncated JSON", b'{"event_id": "x", "ts": ', "$", "not valid JSON"),
        Bad("not an object: array", b'["not", "an", "object"]', "$", "expected a JSON object"),
        Bad("not an object: null", b"null", "$", "expected a JSON object"),
        Bad("not an object: string", b'"hello"', "$", "expected a JSON object, got str"),
        Bad("not an object: number", b"42", "$", "expected a JSON object, got int"),
        Bad("invalid UTF-8", b"\xff\xfe", "$", "not valid UTF-8 (byte 0xff at offset 0)"),
        Bad("invalid UTF-8 in a string", b'{"event_id": "caf\xc3"}', "$", "not valid UTF-8"),
        Bad("byte order mark", b"\xef\xbb\xbf" + orjson.dumps(MINIMAL), "$", "byte order mark"),
        Bad(
            "content after the object",
            orjson.dumps(MINIMAL) + b" {}",
            "$",
            "unexpected content after document",
        ),
        Bad("NaN", _extra(b'"cot_score": NaN'), "$", "not valid JSON"),
        Bad("Infinity", _extra(b'"latency_ms": Infinity'), "$", "not valid JSON"),
        Bad("lone surrogate", _spliced(b'"acct-42"', b'"\\ud800"'), "$", "no low surrogate"),
        Bad("empty object", b"{}", "event_id", "missing required field"),
        Bad("ip with a port", _doc({"ip": "203.0.113.9:443"}), "ip", "not an IPv4 or IPv6"),
        Bad("ip as a CIDR block", _doc({"ip": "203.0.113.0/24"}), "ip", "not an IPv4 or IPv6"),
        Bad("malformed IPv6", _doc({"ip": "2001:db8:::1"}), "ip", "not an IPv4 or IPv6"),
        Bad("boolean tokens", _doc({"input_tokens": True}), "input_tokens", "got boolean"),
        Bad("list as account", _doc({"account_id": ["a"]}), "account_id", "got list"),
        Bad("object as model", _doc({"model": {"n": 1}}), "model", "got object"),
        Bad("empty model", _doc({"model": ""}), "model", "must not be empty"),
        Bad("long event id", _doc({"event_id": "e" * 300}), "event_id", "longer than 256"),
        Bad("tokens over range", _doc({"output_tokens": 10**11}), "output_tokens", "out of range"),
        Bad(
            "integer beyond 64 bits",
            _doc({"input_tokens": 0}).replace(
                b'"input_tokens":0', b'"input_tokens":123456789012345678901234567890'
            ),
            "input_tokens",
            "expected integer",
        ),
        Bad("negative epoch", _doc({"ts": -5}), "ts", "out of range"),
        Bad("empty timestamp", _doc({"ts": ""}), "ts", "not an RFC 3339 timestamp"),
        Bad("negative cot_score", _doc({"cot_score": -0.1}), "cot_score", "out of range"),
        Bad("latency as a string", _doc({"latency_ms": "5"}), "latency_ms", "expected number"),
        Bad("status 600", _doc({"status": 600}), "status", "out of range 100-599"),
        Bad(
            "fingerprint as a number",
            _doc({"prompt_fingerprint": 12345}),
            "prompt_fingerprint",
            "expected string",
        ),
        # Only a stream has these.
        Bad("tombstone", None, "$", "a tombstone", stream_only=True),
        Bad(
            "message over max_message_bytes",
            b'{"event_id": "big", "pad": "' + b"x" * (MAX_MESSAGE_BYTES + 500_000) + b'"}',
            "$",
            "exceeds max_message_bytes 1048576",
            stream_only=True,
        ),
        Bad(
            "far future",
            _now_event("future", 30 * DAY_MS),
            "ts",
            "ms ahead of the time the worker",
            stream_only=True,
        ),
        Bad(
            "far past",
            _now_event("past", -(MAX_PAST_SKEW_MS + 30 * DAY_MS)),
            "ts",
            "ms behind the time the worker",
            stream_only=True,
        ),
    ]
    return out


CATALOGUE = catalogue()


def test_the_catalogue_holds_at_least_60_distinct_kinds() -> None:
    assert len(CATALOGUE) >= 60
    assert len({b.value for b in CATALOGUE}) == len(CATALOGUE)
    assert len({b.name for b in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("bad", [b for b in CATALOGUE if not b.stream_only], ids=lambda b: b.name)
def test_each_kind_is_refused_with_its_field_and_reason(bad: Bad) -> None:
    assert bad.value is not None
    result = parse_event(bad.value)
    assert isinstance(result, Rejection), result
    assert (result.field, bad.phrase in result.problem) == (bad.field, True), result


def test_score_dead_letters_every_bad_line_with_its_reason(tmp_path: Path) -> None:
    """Each catalogue line between valid events: scored events = valid lines, and one dead
    letter per bad line, on its line, with its field and reason."""
    lines = [
        orjson.dumps({**MINIMAL, "event_id": f"ok-{i}", "ts": 1795392000000 + i * 1000})
        for i in range(len(CATALOGUE) + 1)
    ]
    file_bad = [b for b in CATALOGUE if not b.stream_only]
    mixed: list[bytes] = []
    where: dict[int, Bad] = {}
    for i, bad in enumerate(file_bad):
        mixed.append(lines[i])
        assert bad.value is not None
        mixed.append(bad.value)
        where[len(mixed)] = bad
    mixed.append(lines[-1])
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(mixed) + b"\n")
    dead = tmp_path / "dead.jsonl"
    out = tmp_path / "actions.jsonl"
    args = ["score", "--input", str(src), "--output", str(out), "--dead-letter", str(dead)]
    assert main(args) == 0

    letters = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert {d["line"] for d in letters} == set(where)
    assert len(letters) == len(file_bad)
    for d in letters:
        bad = where[d["line"]]
        assert d["field"] == bad.field and bad.phrase in d["reason"], (bad.name, d["reason"])
    valid_lines = len(mixed) - len(file_bad)
    assert valid_lines == sum(not isinstance(parse_event(x), Rejection) for x in mixed)


def produce_catalogue(bootstrap: str, codec: str) -> None:
    """The catalogue from librdkafka with ``codec``, keyed by kind (spread over partitions)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "partitioner": "murmur2_random",
            "acks": "all",
            "linger.ms": 20,
            "message.max.bytes": 16 << 20,
        }
    )
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    for bad in CATALOGUE:
        producer.produce(USAGE_EVENTS, bad.value, bad.name.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0, f"{codec}: not all messages were delivered"
    assert not failed, f"{codec}: {failed[0]}"


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_the_worker_dead_letters_the_catalogue_from_every_codec_and_loses_nothing(
    broker: Any,
    db: Any,
) -> None:
    """The catalogue once per librdkafka codec, amid valid traffic from kafka-python: the worker
    never fails, scores every valid event once (valid in = scored + late), and writes exactly one
    dead letter per bad message with the catalogue's field and reason."""
    traffic = simulate(replace(SCENARIOS["small"], minutes=5, benign_accounts=120))
    messages = list(traffic_lines(traffic))
    half = len(messages) // 2

    async def run() -> None:
        e = engine(broker, db, asyncio.Lock())
        await e.start()
        await asyncio.to_thread(produce_raw, messages[:half], broker.bootstrap)
        for codec in CODECS:
            await asyncio.to_thread(produce_catalogue, broker.bootstrap, codec)
        await asyncio.to_thread(produce_raw, messages[half:], broker.bootstrap)
        await finish([e], len(messages) + len(CODECS) * len(CATALOGUE))
        await e.stop()
        assert e.failed() is None

    asyncio.run(run())

    rows = query(db, "SELECT field, reason FROM DB.dead_letters FINAL")
    late = sum(1 for f, _ in rows if f == "late")
    ((scored,),) = query(
        db, "SELECT sum(requests) FROM DB.entity_scores FINAL WHERE entity_kind = 'account'"
    )
    assert scored + late == valid(messages)
    refused = [(f, r) for f, r in rows if f != "late"]
    assert len(refused) == len(CODECS) * len(CATALOGUE) + len(messages) - valid(messages)
    # Each kind, from each codec, once, with its exact reason (the reason of a time too far
    # from the worker's clock holds the distance, so those two are matched by their phrase).
    for _, v in messages:
        if isinstance(rej := parse_event(v), Rejection):
            refused.remove((rej.field, str(rej)))
    expected = collections.Counter(
        reason for b in CATALOGUE for _ in CODECS if (reason := exact_reason(b)) is not None
    )
    skewed = [b for b in CATALOGUE if exact_reason(b) is None]
    got = collections.Counter(r for _, r in refused if not any(b.phrase in r for b in skewed))
    assert got == expected, (got - expected, expected - got)
    for b in skewed:
        assert sum(1 for f, r in refused if f == b.field and b.phrase in r) == len(CODECS)


def exact_reason(bad: Bad) -> str | None:
    """The reason the worker gives, in full (None: it depends on when the worker reads it)."""
    if bad.value is None:
        return str(TOMBSTONE)
    if len(bad.value) > MAX_MESSAGE_BYTES:
        return f"$: message of {len(bad.value)} bytes exceeds max_message_bytes {MAX_MESSAGE_BYTES}"
    if bad.name in ("far future", "far past"):
        return None
    rejection = parse_event(bad.value)
    assert isinstance(rejection, Rejection)
    return str(rejection)
