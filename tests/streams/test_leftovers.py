"""What a batch computes on the way (blocks of addresses, epoch milliseconds of timestamps,
hashes of payment instruments and of forwarded blocks) does not outlive the batch: entries of a
cache made amid a batch's short-lived objects keep the allocator's memory from going back to the
system once the batch is gone (a worker idled at ~1,070 bytes per tracked entity with such
caches, ~960 without)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from models import columns, events, keys
from models.events import UsageEvent
from schemas import validation
from schemas.validation import Memo, parse_event
from streams import publish
from streams.processors import Forward

HASH_OF_CARD_1 = 8_693_530_135_333_032_444


# Libraries keep small caches of their own, bounded whatever the traffic: msgspec up to 512
# short strings it decoded (~28 KiB), numpy a few bytes. A cache of ours would hold an entry
# for each of a batch's thousands of distinct values (hundreds of KiB here).
ALLOWANCE = 32 * 1024


def _left_behind(make: Callable[[int], Any], *modules: Any) -> int:
    """Bytes allocated by ``make(batch)`` in the files of ``modules`` still alive once its
    result is dropped, for a second batch of other input (the first may leave the interpreter's
    own caches of the code)."""
    files = [m.__file__ for m in modules]
    make(0)
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        result = make(1)
        del result
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diff = after.filter_traces([tracemalloc.Filter(True, f) for f in files]).compare_to(
        before.filter_traces([tracemalloc.Filter(True, f) for f in files]), "filename"
    )
    return sum(max(d.size_diff, 0) for d in diff)


def test_addresses_leave_nothing_behind() -> None:
    def batch(b: int) -> list[str]:
        v4 = [f"198.{b}.{i >> 8 & 255}.{i & 255}" for i in range(5000)]
        v6 = [f"2001:db8:{b}:{i:x}::{i:x}" for i in range(500)]
        return [events.ip_block(ip) for ip in v4] + [events.subnet(ip, "") for ip in v6]

    assert _left_behind(batch, events) < ALLOWANCE
    assert events.ip_block("198.51.100.7") == "198.51.100.0/24"


def test_a_batch_of_messages_parsed_with_its_own_blocks_gives_what_each_message_gives() -> None:
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "ts": 1_795_358_487_123,
                "account_id": "a",
                "ip": ip,
                "model": "m",
                "input_tokens": 5,
                "output_tokens": 7,
            }
        )
        for i, ip in enumerate(["10.0.0.1", "2001:db8::1", "10.0.0.1", "10.0.0.01", "x", "::1"])
    ]
    memo = Memo()
    assert [parse_event(x, memo) for x in lines] == [parse_event(x) for x in lines]
    assert memo.blocks == {
        "10.0.0.1": "10.0.0.0/24",
        "2001:db8::1": "2001:db8::/48",
        "::1": "::/48",
    }


def test_timestamps_leave_nothing_behind() -> None:
    def batch(b: int) -> list[Any]:
        lines = [
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "ts": f"2026-11-22T14:{b:02d}:{i // 1000:02d}.{i % 1000:03d}Z",
                    "account_id": "a",
                    "ip": "10.0.0.1",
                    "model": "m",
                    "input_tokens": 5,
                    "output_tokens": 7,
                    "account_created_at": f"2026-11-{b + 1:02d}T00:00:00Z",
                }
            )
            for i in range(3000)
        ]
        memo = Memo()
        return [parse_event(x, memo) for x in lines]

    assert _left_behind(batch, validation) < ALLOWANCE


def test_payment_hashes_leave_nothing_behind_and_stay_the_same() -> None:
    def batch(b: int) -> Any:
        return columns._payment_hashes(tuple(f"card-{b}-{i}" for i in range(5000)))

    assert _left_behind(batch, columns) < ALLOWANCE
    cards = (*(f"card-{i}" for i in range(5000)), None, "card-1")
    h = columns._payment_hashes(cards)
    assert h[1] == h[-1] != 0 and h[-2] == 0 and len(set(h[:5000].tolist())) == 5000
    # the value checkpoints already hold for an instrument (half its BLAKE2b-64)
    assert int(h[1]) == HASH_OF_CARD_1


def test_forwarding_a_batch_leaves_nothing_behind() -> None:
    def batch(b: int) -> Any:
        rows = [
            UsageEvent(f"e{i}", 0, "a", "198.0.0.1", f"198.{b}.{i % 256}.0/24", "m", 1, 1)
            for i in range(5000)
        ]
        ints = np.arange(5000, dtype=np.int64)
        fw = Forward(0, [columns.Chunk.from_rows(rows)], ints, ints)
        return publish.forwarded([fw], list(range(8)))

    assert _left_behind(batch, publish, keys) < ALLOWANCE
