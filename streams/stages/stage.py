"""What every partitioned stage's loop does: read, score in order, align, flush, checkpoint.

A `Stage` is a consumer group over one topic. Its loop owns the consumer, the backlog check and
the decisions it feeds (`streams.stages.progress`: which window ends may be scored, which
partitions pause or flush), and when to checkpoint. What its partitions hold, restore and save
is `streams.stages.partitions.Partitioned`; when it may commit, `streams.stages.member.Member`.
What it does with the records it reads is in `streams.processors` (no I/O); it hands what a
batch produced, and its checkpoints, to `streams.delivery.Delivery`, which writes them in order
and retries what fails.
A stage is given its collaborators (the configuration, the `Delivery`, the metrics; the block
stage also the account partitions and the suspect table), never the engine that composes them.

Each partition has its own `Detector` (open windows, entity state); the stage's population models
are shared by its partitions, which teach them in one order: a window end is scored once every
partition the stage owns has closed it, partitions in ascending order
(`models.detector.score_in_order`), so the same log gives the same scores and decisions, through
restarts too.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from models.detector import Detector, DetectorOutput, MemberScores, score_in_order
from streams.config import EngineConfig
from streams.delivery import Delivery
from streams.metrics import Metrics
from streams.processors import Produced
from streams.stages import progress
from streams.stages.partitions import Partitioned

__all__ = ["Stage"]

log = logging.getLogger("distillguard.engine")


class Stage(Partitioned):
    """A partitioned stage's loop (see the module docstring)."""

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        super().__init__(config, delivery, metrics)
        # The input has ended (`Engine.request_flush`).
        self.flush_requested = False

    @abc.abstractmethod
    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        """Decode this stage's messages into the partition's detector; collect the output."""

    def scored(self, partition: int, out: DetectorOutput, batch: Produced) -> None:
        """Take what scoring one partition's windows produced (the accounts stage: summaries,
        tagged with the partition)."""
        batch.out.extend(out)

    def after_scoring(self, out: DetectorOutput, batch: Produced) -> None:
        """Hook for what a stage derives from its scores (the accounts stage: suspects)."""

    def _backlog(self) -> dict[int, bool | None]:
        """Whether each partition has records left to read, as the last fetches left it."""
        return progress.backlog(
            self.parts,
            self.next_offset,
            self.position,
            lambda p: self.readable_end(TopicPartition(self.topic, p)),
        )

    async def _read_positions(self) -> None:
        for p in self.parts:
            tp = TopicPartition(self.topic, p)
            if self.consumer.highwater(tp) is None:
                continue  # no fetch answered: the position may not be known yet
            try:
                self.position[p] = await self.consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                self.position.pop(p, None)

    def _score_closed(self, batch: Produced, todo: progress.Backlog) -> None:
        """Score closed windows in one order: by window end, then by partition.

        The partitions share population models (forest, calibrator) that learn every window
        after scoring it. Scored as each partition's fetch happened to arrive, two runs over the
        same log would teach them in different orders and decide differently. Here a window is
        scored only once every partition has closed its end (`progress.frontier`), all
        partitions' windows of one end before any later one, partitions in ascending order; a
        replay from a checkpoint (state, population and offsets taken together) continues the
        same sequence.
        """
        for p, out in score_in_order(
            self.parts, progress.frontier(self.parts, todo), self.members()
        ):
            self.scored(p, out, batch)

    def members(self) -> MemberScores | None:
        """What the stage's detectors are told of accounts scored elsewhere (the block stage:
        the suspects), as data."""
        return None

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            data = await self._fetch()
            started = time.perf_counter()
            now = time.monotonic()
            batch = self._read(data, now)
            del data  # see _read
            await self._read_positions()
            todo = self._backlog()
            self._idle_flush(now, batch, todo)
            self._score_closed(batch, todo)
            self._align(todo)
            self.after_scoring(batch.out, batch)
            if batch:
                self.changed()
            if not await self._publish(batch):
                return  # stopping
            took = time.perf_counter() - started
            self.metrics.batch_seconds = took
            self.metrics.batch_latency.observe(took)
            if now - self._last_checkpoint >= self.config.checkpoint_seconds:
                await self.checkpoint()
            self._record_lag()

    def _read(self, data: dict[TopicPartition, list[Any]], now: float) -> Produced:
        """Hand each partition's records to its detector; what they produced, as one batch.

        The records are let go once read (the caller drops ``data``). Kept while the loop
        publishes, checkpoints and waits for the next fetch, the last batch's records (a few
        thousand small objects) outlived a burst, scattered over memory it had freed.
        """
        batch = Produced()
        for tp, records in data.items():
            det = self.parts.get(tp.partition)
            if not records:
                continue
            if det is None:
                # Not ours (yet): never drop what was fetched, read it again once assigned.
                self.consumer.seek(tp, records[0].offset)
                continue
            self.handle(tp.partition, det, records, batch)
            self.next_offset[tp.partition] = records[-1].offset + 1
            self.last_seen[tp.partition] = now
            self.changed()
        return batch

    def _align(self, todo: progress.Backlog) -> None:
        """Keep this worker's partitions in step in event time (watermark alignment).

        Reading a backlog, a consumer drains partitions unevenly: one can be half an hour of
        event time ahead of another. The partitions share population models, which would then
        learn one partition's future (a campaign in it included) before scoring the others.
        A partition more than ``max_skew`` ahead of the slowest one that still has a backlog is
        paused until that one catches up (`progress.ahead`).
        """
        pause = progress.ahead(self.parts, todo, self.config.max_skew_ms)
        paused = self.consumer.paused()
        tps = {p: TopicPartition(self.topic, p) for p in self.parts}
        if to_pause := [tp for p, tp in tps.items() if p in pause and tp not in paused]:
            self.consumer.pause(*to_pause)
        if to_resume := [tp for p, tp in tps.items() if p not in pause and tp in paused]:
            self.consumer.resume(*to_resume)

    def _idle_flush(self, now: float, batch: Produced, todo: progress.Backlog) -> None:
        """Close the open windows of partitions with nothing left to read: at once when the
        input has ended (`Engine.request_flush`), else after ``idle_flush_seconds`` of silence.

        Event time only moves with events, so without this the last windows before a quiet
        spell would stay open. A partition with a known backlog is never flushed: its next
        events would land in windows closed too early.
        """
        idle = 0.0 if self.flush_requested else self.config.idle_flush_seconds
        for p in progress.quiet(self.parts, todo, self.last_seen, now, idle):
            if not self.flush_requested:
                log.info(
                    "%s: partition %d idle for %.0f s: closing its open windows",
                    self.name,
                    p,
                    now - self.last_seen[p],
                )
            self.parts[p].close_open()
            self.last_seen[p] = now
            self.changed()  # closed, maybe not scored yet (another partition holds the end)

    def _record_lag(self) -> None:
        lag = 0
        for tp in self.consumer.assignment():
            high = self.readable_end(tp)
            p = tp.partition
            if high is not None and (p in self.next_offset or p in self.position):
                pos = max(self.next_offset.get(p, 0), self.position.get(p, 0))
                lag += max(0, high - pos)
        self.metrics.lag[self.name] = lag
