"""The order in which a worker's outputs, checkpoints and commits become durable, and the retry
policy of failing outputs, without a broker or ClickHouse: the collaborators are plain objects
that record what was asked of them and fail when told to."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import numpy as np
import orjson
import pytest

from models.columns import Chunk
from models.events import UsageEvent
from schemas.dead_letters import DeadLetter
from schemas.topics import Topics
from schemas.validation import Rejection
from streams import wire
from streams.clickhouse import CheckpointUnreadable
from streams.delivery import ClickHouseCalls, Delivery
from streams.metrics import Metrics
from streams.processors import Forward, Produced, SuspectTable
from streams.publish import OutputsUnavailable
from streams.retries import Abandoned, Retries
from streams.wire import suspect


class Store:
    """A checkpoint store that refuses to save while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.saved: list[list[tuple[str, int, int, bytes]]] = []
        self.journal: list[str] = []

    def save(self, rows: list[tuple[str, int, int, bytes]], version: str) -> None:
        if self.down:
            self.journal.append("save failed")
            raise ConnectionRefusedError("connection refused")
        self.saved.append(rows)
        self.journal.append("saved")

    def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return (42, b"state") if partition == 0 else None


class Producer:
    """Acknowledges every send (kept in ``sent``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key=None, partition=None):
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


class Sink:
    """A ClickHouse sink whose inserts fail while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.dead: list[DeadLetter] = []

    def write_dead_letters(self, dead: list[DeadLetter]) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        self.dead.extend(dead)


def delivery(
    store: Store,
    stopping: asyncio.Event | None = None,
    give_up: float = 5.0,
    producer: Producer | None = None,
    sink: Sink | None = None,
):
    metrics = Metrics()
    retries = Retries(0.01, 0.02, give_up, stopping or asyncio.Event(), metrics)
    calls = ClickHouseCalls()
    d = Delivery(Topics(), "v1", producer, sink, store, calls, retries, metrics)  # type: ignore[arg-type]
    return d, retries, metrics


def dead_letter_batch() -> Produced:
    batch = Produced()
    batch.dead.append(DeadLetter(0, "api-usage-events", 0, 7, Rejection("$", "not JSON"), b"{"))
    return batch


def test_a_batch_is_published_once_through_an_outage_and_counted_once() -> None:
    producer, sink = Producer(), Sink()
    sink.down = True

    async def run() -> tuple[bool, Metrics]:
        d, _, metrics = delivery(Store(), producer=producer, sink=sink)
        asyncio.get_running_loop().call_later(0.05, setattr, sink, "down", False)
        return await d.publish(dead_letter_batch(), "accounts"), metrics

    ok, metrics = asyncio.run(run())
    assert ok and len(sink.dead) == 1
    # The Kafka copy was acknowledged at the first attempt: retries wrote only what failed.
    assert [topic for topic, _ in producer.sent] == [Topics().dead_letters]
    assert metrics.dead_letters == 1 and metrics.output_errors >= 2


def test_a_batch_abandoned_at_a_stop_is_reported_unpublished_and_not_counted() -> None:
    sink = Sink()
    sink.down = True

    async def run() -> tuple[bool, Metrics]:
        stopping = asyncio.Event()
        d, _, metrics = delivery(Store(), stopping, producer=Producer(), sink=sink)
        asyncio.get_running_loop().call_later(0.05, stopping.set)
        return await d.publish(dead_letter_batch(), "accounts"), metrics

    ok, metrics = asyncio.run(run())
    assert not ok and metrics.dead_letters == 0 and not sink.dead


def test_a_checkpoint_commits_its_offsets_only_after_its_state_is_saved() -> None:
    store = Store()

    async def run() -> tuple[bool, bool]:
        d, retries, metrics = delivery(store)

        async def commit(offsets: dict[int, int]) -> None:
            store.journal.append(f"committed {offsets}")

        store.down = True
        first = await d.checkpoint("accounts", [("accounts", 0, 7, b"s")], {0: 7}, commit)
        assert retries.degraded() is not None and "saving a checkpoint" in retries.degraded()
        store.down = False
        second = await d.checkpoint("accounts", [("accounts", 0, 9, b"s")], {0: 9}, commit)
        assert retries.degraded() is None
        assert metrics.checkpoints == 1 and metrics.output_errors == 1
        return first, second

    first, second = asyncio.run(run())
    assert (first, second) == (False, True)
    # Nothing was committed for the checkpoint that was not saved.
    assert store.journal == ["save failed", "saved", "committed {0: 9}"]


def test_a_failing_commit_leaves_the_checkpoint_to_be_taken_again() -> None:
    store = Store()

    async def run() -> tuple[bool, str | None]:
        d, retries, _ = delivery(store)

        async def commit(offsets: dict[int, int]) -> None:
            raise ConnectionError("the group coordinator moved")

        ok = await d.checkpoint("blocks", [("blocks", 1, 3, b"s")], {1: 3}, commit)
        return ok, retries.degraded()

    ok, degraded = asyncio.run(run())
    assert not ok
    assert degraded is not None and degraded.startswith("blocks checkpoint: saving a checkpoint")


def test_loading_a_checkpoint_waits_out_an_outage() -> None:
    store = Store()
    store.down = True

    async def run() -> tuple[tuple[int, bytes] | None, int]:
        d, _, metrics = delivery(store)

        async def back() -> None:
            await asyncio.sleep(0.05)
            store.down = False

        task = asyncio.create_task(back())
        saved = await d.load("accounts", 0)
        await task
        return saved, metrics.output_errors

    saved, errors = asyncio.run(run())
    assert saved == (42, b"state") and errors >= 2


def test_outputs_failing_past_the_bound_stop_the_stage_with_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> None:
        _, retries, _ = delivery(Store(), give_up=0.1)

        async def insert() -> None:
            raise ConnectionRefusedError("connection refused")

        await retries.run("accounts", "ClickHouse insert into entity_scores", insert)

    with (
        caplog.at_level(logging.ERROR, logger="distillguard.engine"),
        pytest.raises(OutputsUnavailable, match="giving up") as err,
    ):
        asyncio.run(asyncio.wait_for(run(), 10))
    assert "ClickHouse insert into entity_scores has failed" in str(err.value)
    assert "connection refused" in str(err.value)
    # The streak's first failure is logged once, in one line, not once per attempt.
    firsts = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(firsts) == 1 and "retrying in" in firsts[0].getMessage()


def test_the_wait_between_attempts_doubles_up_to_its_bound() -> None:
    async def run() -> list[float]:
        retries = Retries(0.05, 0.2, 30.0, asyncio.Event(), Metrics())
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def insert() -> None:
            times.append(loop.time())
            if len(times) < 6:
                raise ConnectionRefusedError("connection refused")

        await asyncio.wait_for(retries.run("accounts", "outputs", insert), 10)
        return [b - a for a, b in itertools.pairwise(times)]

    gaps = asyncio.run(run())
    # Asked for 0.05, 0.1, 0.2, 0.2, 0.2 s (a timer never fires early by more than a tick).
    assert sum(gaps[:3]) >= 0.33 and sum(gaps) >= 0.72
    assert max(gaps) < 5.0


def test_a_stop_abandons_a_retry_instead_of_waiting_it_out() -> None:
    async def run() -> float:
        stopping = asyncio.Event()
        _, retries, _ = delivery(Store(), stopping, give_up=60.0)
        retries.initial_seconds = retries.max_seconds = 30.0

        async def insert() -> None:
            raise ConnectionRefusedError("connection refused")

        loop = asyncio.get_running_loop()
        started = loop.time()
        loop.call_later(0.05, stopping.set)
        with pytest.raises(Abandoned):
            await retries.run("accounts", "outputs", insert)
        return loop.time() - started

    assert asyncio.run(run()) < 5.0


def test_clickhouse_calls_run_one_at_a_time_off_the_event_loop() -> None:
    import threading
    import time

    active, peak, lock = [0], [0], threading.Lock()

    def call(_: Any) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return threading.get_ident()

    async def run() -> list[int]:
        calls = ClickHouseCalls()
        return await asyncio.gather(*(calls(call, i) for i in range(4)))

    threads = asyncio.run(run())
    assert peak[0] == 1
    assert threading.get_ident() not in threads


def test_the_suspect_table_keeps_each_accounts_latest_window() -> None:
    from types import SimpleNamespace as Rec

    from models.detector import member_scores

    table = SuspectTable()
    table.read([Rec(value=suspect("a", 180_000, 0.99)), Rec(value=None)])
    table.read([Rec(value=suspect("a", 120_000, 0.5))])  # late and older: ignored
    table.read([Rec(value=suspect("b", 60_000, 0.7)), Rec(value=suspect("b", 60_000, 0.8))])
    assert table.latest["b"] == (60_000, 0.8)  # the same window sent again: the later copy
    assert len(table) == 2
    assert member_scores(table.latest, ["a"], 360_000, 60_000).tolist() == [0.99]
    assert member_scores(table.latest, ["a"], 420_000, 60_000).tolist() == [0.0]


class DamagedStore(Store):
    """A store whose checkpoint of partition 0 reads back but does not decode."""

    def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        raise CheckpointUnreadable("the compressed state of accounts partition 0 is damaged")


def test_a_damaged_checkpoint_is_not_retried_as_if_clickhouse_were_down() -> None:
    """Retrying cannot mend it: waiting out `give_up_seconds` (300 s by default) before every
    restart, and then blaming ClickHouse, would hide the cause."""

    async def run() -> tuple[float, int, str | None]:
        d, retries, metrics = delivery(DamagedStore(), give_up=30.0)
        started = time.monotonic()
        with pytest.raises(CheckpointUnreadable, match="damaged"):
            await d.load("accounts", 0)
        return time.monotonic() - started, metrics.output_errors, retries.degraded()

    took, errors, degraded = asyncio.run(run())
    assert took < 1.0 and errors == 0 and degraded is None


class PartsProducer(Producer):
    """Refuses the first send of part 0 of the one forwarded lane; records sends in order."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    async def send(self, topic: str, value: bytes, key=None, partition=None):
        done = asyncio.get_running_loop().create_future()
        first = wire.read_by_block(value)[3].offsets[0]  # type: ignore[union-attr]
        if first == 0 and not self.refused:
            self.refused = True
            done.set_exception(ConnectionError("leader not available"))
            return done
        self.sent.append((topic, value))
        done.set_result(None)
        return done


def test_a_forwarded_message_in_parts_is_sent_part_after_part_through_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The block stage drops an event at an offset below one it has added (a replay), so a part
    # retried after the next part was acknowledged would be lost: part k goes only once part
    # k - 1 is acknowledged.
    from streams import publish

    monkeypatch.setattr(publish, "FORWARD_MAX_BYTES", 1_500)
    events = [
        UsageEvent(
            f"e{i}", 60_000 + i, f"{i:03d}" + "a" * 100, "10.0.0.1", "10.0.0.0/24", "m", 1, 2
        )
        for i in range(24)
    ]
    batch = Produced()
    offsets = np.arange(24, dtype=np.int64)
    batch.forwards.append(Forward(0, [Chunk.from_rows(events)], offsets, offsets))
    producer = PartsProducer()

    async def run() -> bool:
        d, _, _ = delivery(Store(), producer=producer, sink=Sink())
        return await d.publish(batch, "accounts")

    assert asyncio.run(run()) and producer.refused
    got = [o for _, v in producer.sent for o in wire.read_by_block(v)[3].offsets.tolist()]  # type: ignore[union-attr]
    assert got == list(range(24)) and len(producer.sent) > 2  # in parts, each once, in order


def test_a_dead_letter_fits_a_topic_made_with_the_brokers_default_limit() -> None:
    # An invalid message of 900 KB, under the input limit: copied whole (base64 and readable
    # text), its dead letter ran to ~6.6 MB, which a dead-letter topic with Kafka's default 1 MiB
    # limit refuses, again on every restart. On the topic it now refers to its message; the
    # dead_letters table still gets all of it.
    raw = b'{"event_id": "x", "pad": "' + bytes(range(1, 128)) * 7_200 + b'"'
    batch = Produced()
    batch.dead.append(DeadLetter(0, "api-usage-events", 2, 9, Rejection("$", "not JSON"), raw))
    producer, sink = Producer(), Sink()

    async def run() -> bool:
        d, _, _ = delivery(Store(), producer=producer, sink=sink)
        return await d.publish(batch, "accounts")

    assert asyncio.run(run())
    ((topic, value),) = producer.sent
    assert topic == Topics().dead_letters and len(value) < 1024 * 1024 - 64 * 1024
    doc = orjson.loads(value)
    assert (doc["source_partition"], doc["source_offset"], doc["size"]) == (2, 9, len(raw))
    assert [d.raw for d in sink.dead] == [raw]
