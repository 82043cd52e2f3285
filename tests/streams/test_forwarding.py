"""Accepted events travel to the block stage in batches: grouped per block partition and source
partition, split by size, in order, each block on the partition Kafka's partitioner gives it."""

from __future__ import annotations

import orjson
from aiokafka.partitioner import DefaultPartitioner

from models.events import UsageEvent
from streams.publish import FORWARD_CHUNK_BYTES, forwarded
from streams.wire import read_forwarded


def _row(i: int, block: str, payload: str) -> bytes:
    """An accepted event as the accounts stage forwards it (`UsageEvent` fields in order)."""
    event = UsageEvent(f"e{i}", 1000 + i, "a", "203.0.0.1", block, "m", i, 0, user_agent=payload)
    return orjson.dumps(tuple(event))


def test_batches_keep_every_event_in_order_on_its_blocks_partition_and_split_by_size() -> None:
    partitions = [0, 1, 2, 3, 4, 5, 6, 7]
    blocks = [f"203.0.{i}.0/24".encode() for i in range(40)]
    big = "x" * (FORWARD_CHUNK_BYTES // 3)  # three of these do not fit in one message
    forwards = []
    for i in range(400):
        block = blocks[i % len(blocks)]
        payload = big if i % 50 == 0 else "e"
        forwards.append((block, i % 3, 60_000 * (i % 3), _row(i, block.decode(), payload)))

    messages = forwarded(forwards, partitions)

    assert len(messages) < len(forwards) // 4  # batched, not one message per event
    partitioner = DefaultPartitioner()
    got = []
    for m in messages:
        assert len(m.value) <= FORWARD_CHUNK_BYTES + len(big) + 100  # one event may overflow
        source, closed_before, events = read_forwarded(m.value)
        assert events
        for event in events:
            i, block = event.input_tokens, event.ip_block
            assert source == i % 3 and closed_before == 60_000 * (i % 3)
            assert m.partition == partitioner(block.encode(), partitions, partitions)
            got.append((m.partition, source, i))
    assert sorted(i for *_, i in got) == list(range(400))  # each event exactly once
    # within a block partition and source partition, the order the events came in
    by_lane: dict[tuple[int, int], list[int]] = {}
    for partition, source, i in got:
        by_lane.setdefault((partition, source), []).append(i)
    assert all(lane == sorted(lane) for lane in by_lane.values())
    assert any(len(m.value) > FORWARD_CHUNK_BYTES // 2 for m in messages)  # the big ones split


def test_a_lane_over_the_chunk_size_is_split_and_a_lone_oversized_event_still_goes() -> None:
    block = b"198.51.100.0/24"
    event = _row(0, block.decode(), "x" * (FORWARD_CHUNK_BYTES // 3 - 200))  # 3 fit, 4 do not
    messages = forwarded([(block, 0, 0, event)] * 7, [0, 1])
    assert len(messages) == 3
    assert [len(read_forwarded(m.value)[2]) for m in messages] == [3, 3, 1]
    huge = _row(1, block.decode(), "x" * (2 * FORWARD_CHUNK_BYTES))
    (alone,) = forwarded([(block, 0, 0, huge)], [0, 1])
    assert read_forwarded(alone.value)[2] == [UsageEvent(*orjson.loads(huge))]
