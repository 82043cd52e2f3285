"""Where a worker's stages write: outputs published, checkpoints saved, offsets committed.

Every stage hands what a batch produced to one `Delivery`, which writes it in one order: a
batch's Kafka messages and ClickHouse rows (`streams.publish.Outputs`); at a checkpoint, the
stage's state with the offset of its next unread message, and only once that is saved, the
commit of the offset (the stage hands in its consumer's commit). When to checkpoint, and never
while a batch is in hand (read but not yet published), is the stage's (`streams.stages`).

`Retries` is the policy for outputs that fail: the same attempt again (only what failed) with
exponential backoff, the first failure of a streak and the recovery logged in one line each,
failed attempts counted, and after ``give_up_seconds`` an `OutputsUnavailable` that stops the
stage (the worker exits for its supervisor to restart it from the last checkpoint). While a
stage retries it reads nothing more, so it holds at most one batch. A stop request abandons the
retry (`Abandoned`): the batch stays unpublished, so it is never checkpointed. Loading a
checkpoint is retried the same way; saving one is not (`Delivery.checkpoint`): a failed save is
counted and reported, and the next checkpoint takes a newer state anyway.

Examples
--------
A ClickHouse insert that fails twice, then works:

>>> import asyncio
>>> from streams.metrics import Metrics
>>> async def demo():
...     metrics = Metrics()
...     retries = Retries(0.01, 0.02, 5.0, asyncio.Event(), metrics)
...     calls = []
...     async def insert():
...         calls.append(1)
...         if len(calls) < 3:
...             raise ConnectionRefusedError("connection refused")
...         return "inserted"
...     done = await retries.run("accounts", "ClickHouse insert", insert)
...     return done, len(calls), metrics.output_errors, retries.degraded()
>>> asyncio.run(demo())
('inserted', 3, 2, None)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from schemas.topics import Topics
from streams.clickhouse import ClickHouseSink, StateStore, one_line
from streams.metrics import Metrics
from streams.processors import Produced
from streams.publish import OutputError, Outputs, OutputsUnavailable

__all__ = ["Abandoned", "ClickHouseCalls", "Delivery", "Retries"]

log = logging.getLogger("distillguard.engine")
T = TypeVar("T")

#: The checkpoint row of a stage's population models (partition rows are the partition numbers).
POPULATION = -1


class Abandoned(Exception):
    """The worker is stopping: the retried work was given up, and nothing was checkpointed."""


@dataclass
class Streak:
    """Consecutive failures of one stage's outputs (or of its checkpoints)."""

    started: float
    what: str
    cause: str
    attempts: int = 0


class Retries:
    """Retry failing outputs with backoff, say so once, and give up after a bound.

    Parameters
    ----------
    initial_seconds, max_seconds
        The first wait between attempts, doubling up to ``max_seconds``.
    give_up_seconds
        How long a streak of failures may last before `run` raises `OutputsUnavailable`.
    stopping
        Set when the worker stops: a retry waiting on it is abandoned.
    metrics
        Counts every failed attempt (``output_errors``).
    """

    def __init__(
        self,
        initial_seconds: float,
        max_seconds: float,
        give_up_seconds: float,
        stopping: asyncio.Event,
        metrics: Metrics,
    ) -> None:
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.give_up_seconds = give_up_seconds
        self.stopping = stopping
        self.metrics = metrics
        self._streaks: dict[str, Streak] = {}

    async def run(self, key: str, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds, with exponential backoff between attempts.

        ``key`` names the streak (a stage, or a stage's checkpoints); ``what`` says what is
        attempted, unless the attempt raises an `OutputError` that says it more precisely.
        Raises `Abandoned` if the worker stops first, `OutputsUnavailable` once it has failed
        for ``give_up_seconds``."""
        delay = self.initial_seconds
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                failed, cause = (
                    (exc.what, exc.cause) if isinstance(exc, OutputError) else (what, exc)
                )
                streak = self.failure(key, failed, cause, delay)
                elapsed = time.monotonic() - streak.started
                if elapsed >= self.give_up_seconds:
                    message = (
                        f"{key}: {streak.what} has failed for {elapsed:.0f} s "
                        f"({streak.attempts} attempts), last: {streak.cause}; giving up: the "
                        "worker exits for its supervisor to restart it, from the last checkpoint"
                    )
                    log.critical("%s", message)
                    raise OutputsUnavailable(message) from None
                wait = min(delay, self.give_up_seconds - elapsed)
                try:
                    await asyncio.wait_for(self.stopping.wait(), wait)
                except TimeoutError:
                    delay = min(2 * delay, self.max_seconds)
                    continue
                raise Abandoned(key) from None
            self.recovered(key)
            return result

    def failure(self, key: str, what: str, exc: BaseException, retry_in: float | None) -> Streak:
        """Count a failed attempt; log the first of a streak (one line: what, why, what next).
        ``retry_in`` None: the caller tries again later on its own (a checkpoint)."""
        self.metrics.output_errors += 1
        cause = one_line(exc)
        streak = self._streaks.get(key)
        if streak is None:
            streak = self._streaks[key] = Streak(time.monotonic(), what, cause)
            log.error(
                "%s: %s failed: %s; %s",
                key,
                what,
                cause,
                f"retrying in {retry_in:g} s, reading nothing more meanwhile (giving up after "
                f"{self.give_up_seconds:g} s)"
                if retry_in is not None
                else "trying again at the next checkpoint",
            )
        streak.what, streak.cause = what, cause
        streak.attempts += 1
        return streak

    def recovered(self, key: str) -> None:
        """End ``key``'s streak of failures, if it had one, and say so."""
        streak = self._streaks.pop(key, None)
        if streak is not None:
            log.warning(
                "%s: %s works again, after %.1f s and %d failed attempts",
                key,
                streak.what,
                time.monotonic() - streak.started,
                streak.attempts,
            )

    def degraded(self) -> str | None:
        """What is failing and being retried (None when nothing is), for /health."""
        now = time.monotonic()
        reasons = [
            f"{key}: {s.what} failing for {now - s.started:.0f} s ({s.attempts} attempts): "
            f"{s.cause}"
            for key, s in sorted(self._streaks.items())
        ]
        return "; ".join(reasons) or None


class ClickHouseCalls:
    """Blocking ClickHouse calls run off the event loop, one at a time (chDB is one engine per
    process: every user of it in a process must share one lock)."""

    def __init__(self, lock: asyncio.Lock | None = None) -> None:
        self.lock = lock or asyncio.Lock()

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.lock:
            return await asyncio.to_thread(fn, *args)


class Delivery:
    """Where a worker's stages publish, load and save checkpoints, and have offsets committed.

    Parameters
    ----------
    topics, version
        Where outputs go; the detector version written with actions and checkpoints.
    producer, sink, store
        The Kafka producer, the ClickHouse sink of outputs, the store of checkpoints.
    clickhouse
        Runs a blocking ClickHouse call off the event loop (`ClickHouseCalls`).
    retries
        The retry policy (`Retries`), also asked what is failing (`degraded`).
    metrics
        Counters of what was published.
    """

    def __init__(
        self,
        topics: Topics,
        version: str,
        producer: AIOKafkaProducer,
        sink: ClickHouseSink,
        store: StateStore,
        clickhouse: ClickHouseCalls,
        retries: Retries,
        metrics: Metrics,
    ) -> None:
        self.topics = topics
        self.version = version
        self.producer = producer
        self.sink = sink
        self.store = store
        self.clickhouse = clickhouse
        self.retries = retries
        self.metrics = metrics
        # A stage that cannot go on, found outside its task (a partition assignment's load):
        # the stages' run loops raise it.
        self.fatal: OutputsUnavailable | None = None

    async def publish(self, batch: Produced, stage: str) -> bool:
        """Send and insert everything a batch produced; True once all of it is acknowledged.
        Retries what failed; False if the worker stops first; raises `OutputsUnavailable` once
        it has failed for the retry policy's ``give_up_seconds``."""
        outputs = Outputs(
            batch, self.topics, self.producer, self.sink, self.version, self.clickhouse
        )
        try:
            await self.retries.run(stage, "outputs", outputs.attempt)
        except Abandoned:
            log.warning(
                "%s: stopping with a batch whose outputs are not all written: not checkpointed, "
                "it is read again from the last checkpoint",
                stage,
            )
            return False
        m = self.metrics
        for a in batch.out.actions:
            m.actions[a.action] = m.actions.get(a.action, 0) + 1
        m.summaries_out += len(batch.summaries)
        m.forwarded += len(batch.forwards)
        m.dead_letters += len(batch.dead)
        for sw in batch.out.scored:
            m.windows_scored[sw.kind] = m.windows_scored.get(sw.kind, 0) + len(sw)
        return True

    async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        """A checkpoint (next offset, state), retried like outputs: a partition cannot start
        without it. Raises `Abandoned` if the worker stops first."""
        return await self.retries.run(
            f"{stage} checkpoint",
            "loading a checkpoint from ClickHouse",
            lambda: self.clickhouse(self.store.load, stage, partition),
        )

    async def checkpoint(
        self,
        stage: str,
        rows: list[tuple[str, int, int, bytes]],
        offsets: dict[int, int],
        commit: Callable[[dict[int, int]], Awaitable[None]],
    ) -> bool:
        """Save a stage's checkpoint rows, then ``commit`` their offsets (in that order). A
        failure is reported and left for the next checkpoint: nothing is committed that was not
        saved, and the offsets already committed stay where they were."""
        key = f"{stage} checkpoint"
        try:
            await self.clickhouse(self.store.save, rows, self.version)
            await commit(offsets)
        except Exception as exc:
            self.retries.failure(key, "saving a checkpoint", exc, None)
            return False
        self.retries.recovered(key)
        self.metrics.checkpoints += 1
        return True
