"""Where a worker's stages write: outputs published, checkpoints saved, offsets committed.

Every stage hands what a batch produced to one `Delivery`, which writes it in one order: a
batch's Kafka messages and ClickHouse rows (`streams.publish.Outputs`); at a checkpoint, the
stage's state with the offset of its next unread message, and only once that is saved, the
commit of the offset (the stage hands in its consumer's commit). When to checkpoint, and never
while a batch is in hand (read but not yet published), is the stage's (`streams.stages`).

Outputs that fail are retried by `streams.retries.Retries`; loading a checkpoint is retried the
same way; saving one is not (`Delivery.checkpoint`): a failed save is counted and reported, and
the next checkpoint takes a newer state anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.topics import Topics
from streams.clickhouse import ClickHouseSink, StateStore
from streams.metrics import Metrics
from streams.processors import Produced
from streams.publish import Outputs, OutputsUnavailable
from streams.retries import Abandoned, Retries

__all__ = ["POPULATION", "ClickHouseCalls", "Delivery"]

log = logging.getLogger("distillguard.engine")

#: The checkpoint row of a stage's population models (partition rows are the partition numbers).
POPULATION = -1


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
        m.forwarded += sum(len(f) for f in batch.forwards)
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
