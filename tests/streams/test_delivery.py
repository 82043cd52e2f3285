"""The order in which a worker's outputs, checkpoints and commits become durable, and the retry
policy of failing outputs, without a broker or ClickHouse: the collaborators are plain objects
that record what was asked of them and fail when told to."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from schemas.topics import Topics
from streams.delivery import Abandoned, ClickHouseCalls, Delivery, Retries
from streams.metrics import Metrics
from streams.processors import SuspectTable
from streams.publish import OutputsUnavailable
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


def delivery(store: Store, stopping: asyncio.Event | None = None, give_up: float = 5.0):
    metrics = Metrics()
    retries = Retries(0.01, 0.02, give_up, stopping or asyncio.Event(), metrics)
    calls = ClickHouseCalls()
    d = Delivery(Topics(), "v1", None, None, store, calls, retries, metrics)  # type: ignore[arg-type]
    return d, retries, metrics


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
        asyncio.run(run())
    assert "ClickHouse insert into entity_scores has failed" in str(err.value)
    assert "connection refused" in str(err.value)
    # The streak's first failure is logged once, in one line, not once per attempt.
    firsts = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(firsts) == 1 and "retrying in" in firsts[0].getMessage()


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

    table = SuspectTable(window_ms=60_000)
    table.read([Rec(value=suspect("a", 180_000, 0.99)), Rec(value=None)])
    table.read([Rec(value=suspect("a", 120_000, 0.5))])  # late and older: ignored
    assert len(table) == 1
    assert table.scores(["a"], 360_000).tolist() == [0.99]
    assert table.scores(["a"], 420_000).tolist() == [0.0]
