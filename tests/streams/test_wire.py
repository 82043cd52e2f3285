"""The internal messages are defined once (msgspec Structs tagged with the wire version): the
hand-built bytes of the busiest one decode to the Struct, events arrive as typed `UsageEvent`s,
and a message of another version or a malformed one stops a stage instead of being misread."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from models.events import UsageEvent
from streams import wire

EVENTS = [
    UsageEvent("e1", 1_795_358_487_123, "a", "10.0.0.1", "10.0.0.0/24", "m", 5, 7),
    UsageEvent(
        "e2", 1_795_358_487_124, "b", "2001:db8::1", "2001:db8::/48", "m", 9, 800, 429, 812.5,
        2**64 - 1, 0.93, "pm_1", 1_790_000_000_000, "org", "key", "sdk/1", "/v1/messages",
    ),
]  # fmt: skip


def test_forwarded_rows_of_workers_before_columns_are_still_read() -> None:
    rows = b",".join(orjson.dumps(tuple(e)) for e in EVENTS)
    built = b'{"v":2,"source":3,"closed_before":60000,"events":[' + rows + b"]}"
    encoded = msgspec.json.encode(wire.Forwarded(3, 60_000, EVENTS))
    assert orjson.loads(built) == orjson.loads(encoded)
    assert wire.read_forwarded(built) == (3, 60_000, EVENTS)
    assert wire.read_by_block(built) == (3, 60_000, EVENTS, None)
    assert all(type(e) is UsageEvent for e in wire.read_forwarded(built)[2])


def test_progress_and_suspects_round_trip_and_carry_the_version() -> None:
    assert orjson.loads(wire.progress(2, 120_000)) == {
        "v": 2,
        "source": 2,
        "closed_before": 120_000,
    }
    assert wire.read_forwarded(wire.progress(2, 120_000)) == (2, 120_000, [])
    assert wire.read_summaries_topic(wire.progress(2, 120_000)) == ((2, 120_000), None)
    assert wire.read_suspect(wire.suspect("acct-1", 60_000, 0.9991)) == ("acct-1", 60_000, 0.9991)


def test_messages_written_before_versions_are_still_read() -> None:
    row = list(EVENTS[0])
    assert wire.read_forwarded(orjson.dumps([1, 0, row])) == (1, 0, [EVENTS[0]])
    assert wire.read_forwarded(orjson.dumps([1, 0, None, [row, row]]))[2] == [EVENTS[0]] * 2
    assert wire.read_suspect(b'["a", 60000, 0.5]') == ("a", 60_000, 0.5)


@pytest.mark.parametrize(
    "read",
    [wire.read_forwarded, wire.read_suspect, wire.read_summaries_topic],
)
def test_another_version_stops_with_a_line_that_says_so(read: object) -> None:
    with pytest.raises(wire.WireVersionError, match="wire version 3"):
        read(b'{"v": 3, "source": 0, "closed_before": 0, "account": "a", "end": 0, "score": 0}')  # type: ignore[operator]


def test_a_malformed_event_is_refused_not_misread() -> None:
    bad = b'{"v":2,"source":0,"closed_before":0,"events":[["e1", "not a time", "a"]]}'
    with pytest.raises(msgspec.ValidationError, match=r"events\[0\]"):
        wire.read_forwarded(bad)


@pytest.mark.parametrize(
    "value",
    [b'{"source": 0, "closed_before": 0}', b'{"account": "a", "end": 0, "score": 0.5}'],
)
def test_an_object_without_a_version_is_not_taken_for_this_one(value: bytes) -> None:
    read = wire.read_suspect if b"account" in value else wire.read_forwarded
    with pytest.raises(wire.WireVersionError, match="wire version None"):
        read(value)
    spaced = b'{ "v" : 2, "source": 1, "closed_before": 5}'  # another writer's spacing
    assert wire.read_forwarded(spaced) == (1, 5, [])
