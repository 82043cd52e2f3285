"""Accepted events travel to the block stage as columns: one message per block partition and
source partition, in order, each block on the partition Kafka's partitioner gives it, each event
with its offset; the block stage adds them as they are and knows an event sent again by its
offset."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from models.columns import Chunk
from models.detector import Detector
from models.events import UsageEvent
from streams import wire
from streams.metrics import Metrics
from streams.processors import Forward, read_forwards
from streams.publish import forwarded as _forwarded

T0 = 1_795_392_000_000  # a window boundary


def _event(i: int, block: str, payload: str = "e", ts: int | None = None) -> UsageEvent:
    return UsageEvent(
        f"e{i}", T0 + 1000 + i if ts is None else ts, f"acct-{i % 7}", "203.0.0.1", block, "m",
        i, 0, user_agent=payload,
    )  # fmt: skip


def forwarded(
    rows: list[tuple[int, int, int, UsageEvent]], partitions: list[int], **kw: int
) -> list:  # type: ignore[type-arg]
    """`streams.publish.forwarded` of (source, progress, offset, event) rows, a `Forward` per
    source as the accounts stage makes them."""
    by_source: dict[int, list[tuple[int, int, int, UsageEvent]]] = {}
    for r in rows:
        by_source.setdefault(r[0], []).append(r)
    batch = [
        Forward(
            source,
            [Chunk.from_rows([r[3] for r in mine])],
            np.array([r[2] for r in mine], dtype=np.int64),
            np.array([r[1] for r in mine], dtype=np.int64),
        )
        for source, mine in by_source.items()
    ]
    return _forwarded(batch, partitions, **kw)


class _Rec:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


def test_batches_keep_every_event_in_order_on_its_blocks_partition_with_its_offset() -> None:
    partitions = [0, 1, 2, 3, 4, 5, 6, 7]
    blocks = [f"203.0.{i}.0/24" for i in range(40)]
    forwards = [
        (i % 3, 60_000 * (i // 100), 1000 + i, _event(i, blocks[i % len(blocks)]))
        for i in range(400)
    ]

    messages = forwarded(forwards, partitions)

    assert len(messages) <= len(partitions) * 3  # one per block partition and source partition
    partitioner = DefaultPartitioner()
    got = []
    for m in messages:
        source, closed_before, rows, cols = wire.read_by_block(m.value)
        assert not rows and cols is not None and len(cols.chunk)
        blocks_of = cols.chunk.names("blocks")
        for offset, i, b in zip(
            cols.offsets.tolist(),
            cols.chunk.input_tokens.astype(int).tolist(),
            cols.chunk.block.tolist(),
            strict=True,
        ):
            assert source == i % 3 and offset == 1000 + i
            assert m.partition == partitioner(blocks_of[b].encode(), partitions, partitions)
            got.append((m.partition, source, i))
        # the progress after its last event
        assert closed_before == 60_000 * (max(cols.chunk.input_tokens.astype(int)) // 100)
    assert sorted(i for *_, i in got) == list(range(400))  # each event exactly once
    by_lane: dict[tuple[int, int], list[int]] = {}
    for partition, source, i in got:
        by_lane.setdefault((partition, source), []).append(i)
    assert all(lane == sorted(lane) for lane in by_lane.values())  # in the order they came


def test_a_message_over_the_size_limit_is_cut_in_order_and_a_lone_oversized_event_still_goes() -> (
    None
):
    block = "198.51.100.0/24"
    # account ids of 120 characters: names travel, the fields the block stage does not read not
    forwards = [
        (0, i, i, _event(i, block)._replace(account_id=f"{i}" + "x" * 119)) for i in range(8)
    ]
    whole = forwarded(forwards, [0, 1])
    assert len(whole) == 1
    limit = len(whole[0].value) // 3
    parts = forwarded(forwards, [0, 1], max_bytes=limit)
    read = [_columns(m.value) for m in parts]
    assert len(parts) > 2
    assert all(
        len(m.value) <= limit or len(c.offsets) == 1 for m, (_, c) in zip(parts, read, strict=True)
    )
    assert [o for _, c in read for o in c.offsets.tolist()] == list(range(8))
    # each part says only the progress after its own last event
    assert [after for after, _ in read] == [c.offsets[-1] for _, c in read]
    (alone,) = forwarded(forwards[:1], [0, 1], max_bytes=100)
    assert _columns(alone.value)[1].chunk.names("accounts") == ["0" + "x" * 119]


def _columns(value: bytes) -> tuple[int, wire.Columns]:
    """(progress, columns) of a forwarded message that must be columns."""
    _, closed_before, rows, cols = wire.read_by_block(value)
    assert not rows and cols is not None
    return closed_before, cols


def _windows(det: Detector) -> list[tuple[int, list[tuple[object, ...]]]]:
    """Every window the detector closed, as sorted rows of what is read from it."""
    out = []
    for w in det.windower.advance():
        rows = sorted(
            zip(
                w.ts.tolist(),
                [w.accounts[a] for a in w.account.tolist()],
                [w.blocks[b] for b in w.block.tolist()],
                w.input_tokens.tolist(),
                w.ip_hash.tolist(),
                strict=True,
            )
        )
        out.append((w.start_ms, rows))
    return out


def test_columns_make_the_windows_rows_made_and_a_replay_adds_nothing_twice() -> None:
    blocks = [f"198.51.{i}.0/24" for i in range(5)]
    events = [_event(i, blocks[i % 5], ts=T0 + 500 * i) for i in range(300)]  # 2.5 windows
    forwards = [(0, -1, 100 + i, e) for i, e in enumerate(events)]
    as_rows = Detector(kinds=("ip_block",), external_watermark=True)
    as_cols = Detector(kinds=("ip_block",), external_watermark=True)
    m_rows, m_cols = Metrics(), Metrics()
    up_rows: dict[int, int] = {}
    up_cols: dict[int, int] = {}
    added: dict[int, int] = {}
    rows_msg = msgspec.json.encode(wire.Forwarded(0, -1, events))  # as workers before columns
    read_forwards([_Rec(0, rows_msg)], as_rows, up_rows, {0}, m_rows, {})
    # the batch in two messages, then the first again (a replay after a restart), then progress
    first = forwarded(forwards[:120], [0])
    second = forwarded(forwards[120:], [0])
    batch = [_Rec(i, m.value) for i, m in enumerate(first + second + first)]
    read_forwards(batch, as_cols, up_cols, {0}, m_cols, added)
    assert added == {0: 399} and m_cols.block_duplicates == 120
    assert m_cols.block_events_in == 420 and as_cols.windower.buffered_events() == 300
    for det, up, m in ((as_rows, up_rows, m_rows), (as_cols, up_cols, m_cols)):
        read_forwards([_Rec(9, wire.progress(0, T0 + 180_000))], det, up, {0}, m, {})
    assert _windows(as_cols) == _windows(as_rows)  # the same windows with the same events
    # scored alike: the same windows close, with the same events
    a = Detector(kinds=("ip_block",), external_watermark=True)
    b = Detector(kinds=("ip_block",), external_watermark=True)
    read_forwards(
        [_Rec(0, rows_msg), _Rec(1, wire.progress(0, T0 + 180_000))], a, {}, {0}, Metrics(), {}
    )
    cols = [_Rec(i, m.value) for i, m in enumerate(forwarded(forwards, [0]))]
    read_forwards([*cols, _Rec(5, wire.progress(0, T0 + 180_000))], b, {}, {0}, Metrics(), {})
    wa, wb = _windows(a), _windows(b)
    assert [s for s, _ in wa] == [T0, T0 + 60_000, T0 + 120_000] and wa == wb


def test_an_event_whose_block_window_closed_is_counted_late_not_added() -> None:
    det = Detector(kinds=("ip_block",), external_watermark=True)
    up: dict[int, int] = {}
    m = Metrics()
    read_forwards([_Rec(0, wire.progress(0, T0 + 60_000))], det, up, {0}, m, {})
    stale = forwarded([(0, T0 + 60_000, 5, _event(1, "198.51.0.0/24", ts=T0 + 10))], [0])
    read_forwards([_Rec(1, stale[0].value)], det, up, {0}, m, {})
    assert (m.block_late, m.block_events_in, det.windower.buffered_events()) == (1, 1, 0)


def test_columns_that_do_not_add_up_are_refused_not_misread() -> None:
    (good,) = forwarded([(0, 0, 1, _event(1, "198.51.0.0/24"))], [0])
    msg = msgspec.msgpack.decode(good.value)
    msg["columns"]["ts"] = np.zeros(2, "<i8").tobytes()
    for bad in (msg, {**msg, "columns": {**msg["columns"], "account": b"\x07\x00\x00\x00"}}):
        try:
            wire.read_by_block(msgspec.msgpack.encode(bad))
        except ValueError as exc:
            assert "rows" in str(exc) or "names" in str(exc)
        else:
            raise AssertionError("malformed columns were read")
    newer = msgspec.msgpack.encode({**msgspec.msgpack.decode(good.value), "v": 9})
    try:
        wire.read_by_block(newer)
    except wire.WireVersionError as exc:
        assert "wire version 9" in str(exc)
    else:
        raise AssertionError("a newer version was read")


def test_events_years_apart_in_one_message_make_two_windows_at_once() -> None:
    # A chunk is cut by the windows its events fall in, never by every window between them (an
    # event of the year 2000 among today's once took 31 s; one near 2^62 ms, forever).
    det = Detector(kinds=("ip_block",), external_watermark=True)
    old, now = 946_684_800_000, T0
    (msg,) = forwarded(
        [
            (0, -1, 1, _event(1, "198.51.0.0/24", ts=old)),
            (0, -1, 2, _event(2, "198.51.0.0/24", ts=now)),
        ],
        [0],
    )
    read_forwards([_Rec(0, msg.value)], det, {}, {0}, Metrics(), {})
    assert det.windower.open_windows() == [old, now]


def test_names_that_are_not_utf8_and_flags_that_are_not_0_or_1_are_refused_on_arrival() -> None:
    (good,) = forwarded([(0, 0, 1, _event(1, "198.51.0.0/24"))], [0])
    msg = msgspec.msgpack.decode(good.value)
    name = msg["columns"]["accounts"]
    bad_name = {**msg["columns"], "accounts": b"\xff" + name[1:]}
    bad_flag = {**msg["columns"], "error": b"\x02"}
    for columns, why in ((bad_name, "not UTF-8"), (bad_flag, "neither 0 nor 1")):
        with pytest.raises(ValueError, match=why):
            wire.read_by_block(msgspec.msgpack.encode({**msg, "columns": columns}))
