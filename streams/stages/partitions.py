"""A stage's partitions and their state: what it takes when assigned, and what it checkpoints.

Each partition has its own `Detector` (open windows, entity state); the stage's population models
are shared by its partitions. A partition is restored from its checkpoint (state and the offset of
its next unread message) when assigned, every one of an assignment before any is read; when
partitions are revoked, and every ``checkpoint_seconds``, their states are saved with their offsets
and the population, then the offsets committed (`streams.stages.member.Member`), never while a
batch is in hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from aiokafka import TopicPartition

from models.detector import Detector, Population
from models.features import EntityKind
from streams.config import EngineConfig
from streams.delivery import POPULATION, Delivery
from streams.metrics import Metrics
from streams.stages.member import Member, consumer, restored

__all__ = ["Partitioned"]

log = logging.getLogger("distillguard.engine")


class Partitioned(Member):
    """A consumer group's partitions and their state: a `Detector` per partition and the
    population models they share, restored from checkpoints when assigned, checkpointed when
    revoked and every ``checkpoint_seconds`` (see the module docstring)."""

    name = ""
    role = ""  # which of the engine's topics it reads (an attribute of `Topics`)
    kinds: tuple[EntityKind, ...] = ()

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        super().__init__(config, delivery, metrics)
        self.topic = getattr(config.topics, self.role)
        self.population = Population(config.detector)
        # Whether the population models were restored from a checkpoint (None: not looked yet).
        self.population_loaded: bool | None = None
        self.parts: dict[int, Detector] = {}
        self.next_offset: dict[int, int] = {}
        # Per partition, the consumer's position: past next_offset when the log ends in records
        # a consumer never returns (transaction markers) or starts after them (expired data).
        self.position: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}
        self.consumer = consumer(config, self.name, 8 * 1024 * 1024)
        self._last_checkpoint = time.monotonic()

    def _detector(self) -> Detector:
        return Detector(self.config.detector, kinds=self.kinds, population=self.population)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in revoked if tp.partition in self.parts]
        try:
            if mine and await self._settle():
                await self.checkpoint(mine)
        finally:
            # Let go of them whatever the checkpoint did (their next owner restores the last one
            # saved): a revoked partition kept here is never read again, and every later window
            # end would wait for it (`progress.frontier`), stalling the stage.
            for p in mine:
                self.parts.pop(p, None)
                self.next_offset.pop(p, None)
                self.position.pop(p, None)

    async def _assign(self, assigned: list[TopicPartition]) -> None:
        if self.population_loaded is None:
            saved = await self.delivery.load(self.name, POPULATION)
            if saved is not None:
                blob = partial(Population.restore, saved[1])
                self.population = restored(f"{self.name} population", blob)
                for det in self.parts.values():
                    det.population = self.population
            self.population_loaded = saved is not None
        # Every partition is loaded before any is handed to the run loop, which keeps fetching
        # meanwhile: one partition scored ahead of the others would teach the shared population
        # its windows first (see `Stage._score_closed`).
        loaded: list[tuple[TopicPartition, Detector, tuple[int, bytes] | None]] = []
        for tp in assigned:
            if tp.partition in self.parts:
                continue
            det = self._detector()
            saved = await self.delivery.load(self.name, tp.partition)
            if saved is not None:
                restore = partial(self.restore_partition, tp.partition, det, saved[1])
                restored(f"{self.name} partition {tp.partition}", restore)
            loaded.append((tp, det, saved))
        for tp, det, saved in loaded:
            if saved is not None:
                self.consumer.seek(tp, saved[0])
                self.next_offset[tp.partition] = saved[0]
                # Saved, but perhaps not committed (a crash between the two): the next periodic
                # checkpoint commits it, idle or not.
                self.changed()
            self.parts[tp.partition] = det
            self.last_seen[tp.partition] = time.monotonic()
            log.info(
                "%s: partition %d assigned (%s)",
                self.name,
                tp.partition,
                "restored" if saved else "fresh",
            )

    def partition_blob(self, partition: int) -> bytes:
        return self.parts[partition].partition_state()

    def restore_partition(self, partition: int, det: Detector, blob: bytes) -> None:
        det.load_partition_state(blob)

    async def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Save detector state with offsets, then commit those offsets (in that order).

        Never while a batch is in hand: its partitions' state is ahead of what was published,
        and committing its offsets would skip outputs that were never written.
        """
        self._last_checkpoint = time.monotonic()
        if self.in_hand or (partitions is None and not self.unsaved):
            return
        parts = [p for p in (partitions or list(self.parts)) if p in self.next_offset]
        if not parts:
            return
        # State and offsets taken together, before anything else can run.
        offsets = {p: self.next_offset[p] for p in parts}
        changes = self._changes if partitions is None else -1
        states: list[tuple[int, int, Callable[[], bytes]]]
        states = [(p, offsets[p], partial(self.partition_blob, p)) for p in parts]
        states.append((POPULATION, 0, self.population.snapshot))
        await self._save(states, offsets, changes)
