"""The three stages of a worker, each a consumer group over one topic, and their loops.

- **accounts** (`AccountStage`) reads ``api-usage-events`` (keyed by account): validates every
  message (bad ones to ``api-usage-events.dlq`` and ``dead_letters``), scores accounts, forwards
  accepted events keyed by IP block to ``distillguard.events-by-block``, and publishes accounts
  that scored over the member threshold to ``distillguard.suspects``.
- **blocks** (`BlockStage`) reads ``distillguard.events-by-block``: each IP block's state lives
  with the worker that owns its partition; block actions name as members the suspects seen behind
  the block (the worker follows ``distillguard.suspects`` into a `streams.processors.SuspectTable`,
  which the stage passes to its detectors as data).
- **campaigns** (`CampaignStage`) reads ``distillguard.account-summaries`` (one partition): the
  accounts stage sends each scored account window's summaries there, with its partitions'
  progress. A window is linked once every account partition has scored it, over all accounts at
  once, in account-id order, so the decisions do not depend on how accounts are spread over
  partitions and workers.

A stage owns its consumer, partition assignment, watermark alignment, idle flush and when to
checkpoint. What it does with the records it reads is in `streams.processors` (no I/O); it hands
what a batch produced, and its checkpoints, to `streams.delivery.Delivery`, which writes them in
order and retries what fails. A stage is given its collaborators (the configuration, the
`Delivery`, the metrics; the block and campaign stages also the account partitions, and the block
stage the suspect table), never the engine that composes them.

Each partition has its own `Detector` (open windows, entity state); the stage's population models
are shared by its partitions, which teach them in one order: a window end is scored once every
partition the stage owns has closed it, partitions in ascending order
(`models.detector.score_in_order`), so the same log gives the same scores and decisions, through
restarts too. The hot topic is read with aiokafka ``getmany`` in batches: Faust's per-message
path costs ~150 us a message here (measured on the 2-core machine), which would cap a worker at
~6,500 events/s; a batch costs a few microseconds per message.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, UnsupportedCodecError
from aiokafka.structs import OffsetAndMetadata

from models.detector import (
    Detector,
    DetectorOutput,
    MemberScores,
    Population,
    score_in_order,
)
from models.features import EntityKind
from models.outputs import LinkInput
from streams import wire
from streams.clickhouse import pack_state
from streams.config import EngineConfig
from streams.delivery import POPULATION, Abandoned, Delivery
from streams.metrics import Metrics
from streams.processors import (
    CampaignLinking,
    Produced,
    SuspectTable,
    read_forwards,
    read_usage,
)
from streams.publish import OutputsUnavailable

__all__ = ["AccountStage", "BlockStage", "CampaignStage", "Member", "Stage"]

log = logging.getLogger("distillguard.engine")


def _consumer(cfg: EngineConfig, name: str, fetch_bytes: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=cfg.bootstrap,
        group_id=f"{cfg.group_prefix}-{name}",
        client_id=f"{cfg.client_id}-{name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=fetch_bytes,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        rebalance_timeout_ms=cfg.rebalance_timeout_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        **cfg.kafka_auth.client_kwargs(),
    )


class Member(ConsumerRebalanceListener):  # type: ignore[misc]
    """What the stages share: a batch is *in hand* from the moment it is read until everything
    it produced is published; while one is, the stage's state is ahead of what was written, so
    it must not be checkpointed."""

    name = ""
    topic = ""
    consumer: AIOKafkaConsumer

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        self.config = config
        self.delivery = delivery
        self.metrics = metrics
        self._published = asyncio.Event()
        self._published.set()
        # Changes to the stage's state, and how many of them the last checkpoint saved: a
        # periodic checkpoint with nothing new to save is skipped (a worker idling at 1M
        # accounts re-pickled every entity every 10 s, ~0.7 KB of transient memory each).
        self._changes = 0
        self._saved = 0

    @property
    def in_hand(self) -> bool:
        """A batch was read whose outputs are not (yet) all published."""
        return not self._published.is_set()

    def changed(self) -> None:
        """The stage's state moved on (records read, windows scored): the next checkpoint saves."""
        self._changes += 1

    @property
    def unsaved(self) -> bool:
        """Whether the state changed since the last checkpoint saved it."""
        return self._changes != self._saved

    async def _settle(self) -> bool:
        """Before a revocation's checkpoint: wait a little for the batch in hand to be published
        (the rebalance waits for this callback). False if it is still in hand."""
        if self.in_hand:
            wait = self.config.rebalance_timeout_ms / 3000
            try:
                await asyncio.wait_for(self._published.wait(), wait)
            except TimeoutError:
                log.warning(
                    "%s: partitions revoked while a batch is not published: not checkpointed; "
                    "their next owner reads from the last checkpoint",
                    self.name,
                )
                return False
        return True

    async def _commit(self, offsets: dict[int, int]) -> None:
        await self.consumer.commit(
            {TopicPartition(self.topic, p): OffsetAndMetadata(o, "") for p, o in offsets.items()}
        )

    async def _save(
        self, rows: list[tuple[str, int, int, bytes]], offsets: dict[int, int], changes: int
    ) -> bool:
        """Save checkpoint rows, then commit their offsets (`Delivery.checkpoint`). ``changes``:
        the count of changes when the state was taken (-1: only some partitions were, which
        leaves the others' changes unsaved)."""
        saved = await self.delivery.checkpoint(self.name, rows, offsets, self._commit)
        if saved and changes >= 0:
            self._saved = changes
        return saved


class Stage(Member):
    name = ""
    role = ""  # which of the engine's topics it reads (an attribute of `Topics`)
    kinds: tuple[EntityKind, ...] = ()

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        super().__init__(config, delivery, metrics)
        self.topic = getattr(config.topics, self.role)
        self.population = Population(config.detector)
        # Whether the population models were restored from a checkpoint (None: not looked yet).
        self.population_loaded: bool | None = None
        # The input has ended (`Engine.request_flush`).
        self.flush_requested = False
        self.parts: dict[int, Detector] = {}
        self.next_offset: dict[int, int] = {}
        # Per partition, the consumer's position: past next_offset when the log ends in records
        # a consumer never returns (transaction markers) or starts after them (expired data).
        self.position: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}
        self.consumer = _consumer(config, self.name, 8 * 1024 * 1024)
        self._last_checkpoint = time.monotonic()

    # -- partition ownership -------------------------------------------------------------------
    def _detector(self) -> Detector:
        return Detector(self.config.detector, kinds=self.kinds, population=self.population)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in revoked if tp.partition in self.parts]
        if mine and await self._settle():
            await self.checkpoint(mine)
        for p in mine:
            self.parts.pop(p, None)
            self.next_offset.pop(p, None)
            self.position.pop(p, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._assign(assigned)
        except Abandoned:
            pass
        except OutputsUnavailable as exc:
            self.delivery.fatal = exc  # the run loop raises it (aiokafka would only log it)

    async def _assign(self, assigned: list[TopicPartition]) -> None:
        if self.population_loaded is None:
            saved = await self.delivery.load(self.name, POPULATION)
            if saved is not None:
                self.population = Population.restore(saved[1])
                for det in self.parts.values():
                    det.population = self.population
            self.population_loaded = saved is not None
        # Every partition is loaded before any is handed to the run loop, which keeps fetching
        # meanwhile: one partition scored ahead of the others would teach the shared population
        # its windows first (see _score_closed).
        loaded: list[tuple[TopicPartition, Detector, tuple[int, bytes] | None]] = []
        for tp in assigned:
            if tp.partition in self.parts:
                continue
            det = self._detector()
            saved = await self.delivery.load(self.name, tp.partition)
            if saved is not None:
                self.restore_partition(tp.partition, det, saved[1])
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

    # -- processing ----------------------------------------------------------------------------
    def partition_blob(self, partition: int) -> bytes:
        return self.parts[partition].partition_state()

    def restore_partition(self, partition: int, det: Detector, blob: bytes) -> None:
        det.load_partition_state(blob)

    @abc.abstractmethod
    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        """Decode this stage's messages into the partition's detector; collect the output."""

    def scored(self, partition: int, out: DetectorOutput, batch: Produced) -> None:
        """Take what scoring one partition's windows produced (the accounts stage: summaries,
        tagged with the partition)."""
        batch.out.extend(out)

    def after_scoring(self, out: DetectorOutput, batch: Produced) -> None:
        """Hook for what a stage derives from its scores (the accounts stage: suspects)."""

    def _frontier(self) -> int | None:
        """The window end every partition that can still close one has closed (None: no bound).

        A partition that has nothing to read and no open window closes nothing until new events
        come, and holds nobody back. A partition not heard from yet holds everyone.
        """
        bounds = []
        for p, det in self.parts.items():
            if self._unread(p) is False and not det.has_open_windows:
                continue
            bounds.append(det.closed_before_ms)
        return min(bounds) if bounds else None

    def _unread(self, p: int) -> bool | None:
        """Whether partition ``p`` has records left to read (None: unknown, no fetch answered)."""
        high: int | None = self.consumer.highwater(TopicPartition(self.topic, p))
        if high is None:
            return None
        return max(self.next_offset.get(p, 0), self.position.get(p, 0)) < high

    async def _read_positions(self) -> None:
        for p in self.parts:
            tp = TopicPartition(self.topic, p)
            if self.consumer.highwater(tp) is None:
                continue  # no fetch answered: the position may not be known yet
            try:
                self.position[p] = await self.consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                self.position.pop(p, None)

    def _score_closed(self, batch: Produced) -> None:
        """Score closed windows in one order: by window end, then by partition.

        The partitions share population models (forest, calibrator) that learn every window
        after scoring it. Scored as each partition's fetch happened to arrive, two runs over the
        same log would teach them in different orders and decide differently. Here a window is
        scored only once every partition has closed its end (`_frontier`), all partitions' windows
        of one end before any later one, partitions in ascending order; a replay from a
        checkpoint (state, population and offsets taken together) continues the same sequence.
        """
        for p, out in score_in_order(self.parts, self._frontier(), self.members()):
            self.scored(p, out, batch)

    def members(self) -> MemberScores | None:
        """What the stage's detectors are told of accounts scored elsewhere (the block stage:
        the suspects), as data."""
        return None

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            if self.delivery.fatal is not None:
                raise self.delivery.fatal
            try:
                data = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.config.max_records
                )
            except KafkaError as exc:
                # The stage stops here (Engine.failed, /health): say why in the log, once.
                fix = (
                    "; a producer compresses with a codec this worker cannot decode: install "
                    "cramjam (a distillguard dependency: aiokafka's snappy, lz4 and zstd) "
                    "and restart the worker"
                    if isinstance(exc, UnsupportedCodecError)
                    else ""
                )
                log.error(
                    "%s stage stopped: reading %s failed: %r%s", self.name, self.topic, exc, fix
                )
                raise
            started = time.perf_counter()
            self._published.clear()  # from here until published, nothing is checkpointed
            now = time.monotonic()
            batch = self._read(data, now)
            del data  # see _read
            await self._read_positions()
            self._idle_flush(now, batch)
            self._score_closed(batch)
            self._align()
            self.after_scoring(batch.out, batch)
            if batch:
                self.changed()
            if batch and not await self.delivery.publish(batch, self.name):
                return  # stopping: the batch stays in hand, so it is never checkpointed
            self._published.set()
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

    def _align(self) -> None:
        """Keep this worker's partitions in step in event time (watermark alignment).

        Reading a backlog, a consumer drains partitions unevenly: one can be half an hour of
        event time ahead of another. The partitions share population models, which would then
        learn one partition's future (a campaign in it included) before scoring the others.
        A partition more than ``max_skew`` ahead of the slowest one that still has a backlog is
        paused until that one catches up; a partition with nothing to read holds nobody back.
        """
        skew = self.config.max_skew_ms
        behind: list[int] = []
        progress: dict[int, int] = {}
        for p, det in self.parts.items():
            progress[p] = det.max_event_ms
            if self._unread(p) is not False:
                behind.append(progress[p])
        floor = min(behind) if behind else None
        pause, resume = [], []
        for p, t in progress.items():
            tp = TopicPartition(self.topic, p)
            # A partition not heard from yet (no event time) holds the others until its first
            # fetch answers: with data, or with a highwater that shows it has none to give.
            if floor is not None and t > floor + skew:
                pause.append(tp)
            else:
                resume.append(tp)
        paused = self.consumer.paused()
        if to_pause := [tp for tp in pause if tp not in paused]:
            self.consumer.pause(*to_pause)
        if to_resume := [tp for tp in resume if tp in paused]:
            self.consumer.resume(*to_resume)

    def _idle_flush(self, now: float, batch: Produced) -> None:
        if self.flush_requested:
            self._flush_caught_up(now, batch)
            return
        self._flush_silent(now, batch)

    def _flush_caught_up(self, now: float, batch: Produced) -> None:
        for p, det in self.parts.items():
            if det.has_open_windows and self._unread(p) is False:
                det.close_open()
                self.last_seen[p] = now
                self.changed()  # closed, maybe not scored yet (another partition holds the end)

    def _flush_silent(self, now: float, batch: Produced) -> None:
        """Close the windows of a partition that has been silent and has nothing left to read.

        Event time only moves with events, so without this the last windows before a quiet
        spell would stay open. A partition with a known backlog is never flushed: its next
        events would land in windows closed too early.
        """
        idle = self.config.idle_flush_seconds
        for p, det in self.parts.items():
            if not det.has_open_windows or now - self.last_seen.get(p, now) < idle:
                continue
            if self._unread(p) is not False:  # a backlog, or not heard from yet
                continue
            log.info(
                "%s: partition %d idle for %.0f s: closing its open windows",
                self.name,
                p,
                now - self.last_seen.get(p, now),
            )
            det.close_open()
            self.last_seen[p] = now
            self.changed()  # closed, maybe not scored yet (another partition holds the end)

    def _record_lag(self) -> None:
        lag = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            p = tp.partition
            if high is not None and (p in self.next_offset or p in self.position):
                pos = max(self.next_offset.get(p, 0), self.position.get(p, 0))
                lag += max(0, high - pos)
        self.metrics.lag[self.name] = lag

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
        # Each state is handed to a thread to be compressed as soon as it is pickled, so a raw
        # pickle lives only until its compression ends, not until all are taken; nothing else
        # runs on the loop until every state is pickled.
        loop = asyncio.get_running_loop()
        packing = [
            (p, loop.run_in_executor(None, pack_state, self.partition_blob(p))) for p in parts
        ]
        population = loop.run_in_executor(None, pack_state, self.population.snapshot())
        rows = [(self.name, p, offsets[p], await packed) for p, packed in packing]
        rows.append((self.name, POPULATION, 0, await population))
        await self._save(rows, offsets, changes)


class AccountStage(Stage):
    name = "accounts"
    role = "usage"
    kinds: tuple[EntityKind, ...] = ("account",)

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        super().__init__(config, delivery, metrics)
        self.announced: dict[int, int] = {}  # per partition, the progress last sent downstream

    def _detector(self) -> Detector:
        # Accounts are linked into campaigns by the campaign stage, which sees every partition.
        return Detector(
            self.config.detector,
            kinds=("account", "campaign"),
            population=self.population,
            link_campaigns=False,
        )

    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        read_usage(
            records,
            partition,
            det,
            batch,
            topic=self.topic,
            limits=self.config.limits,
            received_ms=int(time.time() * 1000),
            metrics=self.metrics,
        )

    def scored(self, partition: int, out: DetectorOutput, batch: Produced) -> None:
        for x in out.summaries:
            batch.summaries.extend(wire.summaries(x, partition))
        out.summaries.clear()
        batch.out.extend(out)

    def after_scoring(self, out: DetectorOutput, batch: Produced) -> None:
        # Progress reaches every block partition, even those no event of ours went to, however
        # the windows closed (watermark or flush). It is what is *scored*: the campaign stage
        # links a window once every partition's summaries of it are in.
        for p, det in self.parts.items():
            scored = det.scored_through_ms
            if scored > self.announced.get(p, -1):
                batch.heartbeats.append(wire.progress(p, scored))
                self.announced[p] = scored
        threshold = self.config.detector.member_score
        for sw in out.scored:
            if sw.kind != "account":
                continue
            for i in np.flatnonzero(sw.score >= threshold).tolist():
                batch.suspects.append(
                    (sw.ids[i].encode(), wire.suspect(sw.ids[i], sw.end_ms, float(sw.score[i])))
                )


class BlockStage(Stage):
    name = "blocks"
    role = "by_block"
    kinds: tuple[EntityKind, ...] = ("ip_block",)

    def __init__(
        self,
        config: EngineConfig,
        delivery: Delivery,
        metrics: Metrics,
        sources: Callable[[], set[int] | None],
        suspects: SuspectTable,
    ) -> None:
        super().__init__(config, delivery, metrics)
        self.sources = sources  # the account partitions
        self.suspects = suspects  # block members: the accounts found suspect
        # Per block partition: per upstream (account) partition, the time before which all of
        # its windows are closed. Block windows close at the minimum over upstream partitions,
        # so however unevenly the account partitions progress, no event arrives late here.
        self.upstream: dict[int, dict[int, int]] = {}

    def _detector(self) -> Detector:
        return Detector(
            self.config.detector,
            kinds=self.kinds,
            population=self.population,
            external_watermark=True,
        )

    def members(self) -> MemberScores:
        return self.suspects.latest

    def _idle_flush(self, now: float, batch: Produced) -> None:
        """Never on its own clock: block windows close when every account partition has closed
        them (after its own flush, an account partition's heartbeat says so)."""

    def partition_blob(self, partition: int) -> bytes:
        state = (self.parts[partition].partition_state(), self.upstream.get(partition, {}))
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore_partition(self, partition: int, det: Detector, blob: bytes) -> None:
        det_state, self.upstream[partition] = pickle.loads(blob)
        det.load_partition_state(det_state)

    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        upstream = self.upstream.setdefault(partition, {})
        read_forwards(records, det, upstream, self.sources(), self.metrics)


class CampaignStage(Member):
    """Links accounts into campaigns over every account partition (see the module docstring).

    One partition, so one worker of the group owns it. Its state (the campaign scorer, windows
    waiting for some account partition, each account partition's progress) is checkpointed with
    the offset of its next unread message, like the other stages'.
    """

    name = "campaigns"

    def __init__(
        self,
        config: EngineConfig,
        delivery: Delivery,
        metrics: Metrics,
        sources: Callable[[], set[int] | None],
    ) -> None:
        super().__init__(config, delivery, metrics)
        self.sources = sources
        self.topic = config.topics.summaries
        self.linking = CampaignLinking(config.detector)
        self.owned = False
        self.next_offset: int | None = None
        self.consumer = _consumer(config, self.name, 16 * 1024 * 1024)
        self._last_checkpoint = time.monotonic()

    @property
    def pending(self) -> dict[int, dict[tuple[int, int, int], LinkInput]]:
        """Summaries of windows not linked yet, by window end, account partition and part."""
        return self.linking.pending

    def _blob(self) -> bytes:
        return pickle.dumps(self.linking, protocol=pickle.HIGHEST_PROTOCOL)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.owned and any(tp.partition == 0 for tp in revoked):
            if await self._settle():
                await self.checkpoint()
            self.owned = False
            self.next_offset = None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if not any(tp.partition == 0 for tp in assigned) or self.owned:
            return
        try:
            saved = await self.delivery.load(self.name, 0)
        except Abandoned:
            return
        except OutputsUnavailable as exc:
            self.delivery.fatal = exc
            return
        self.linking = CampaignLinking(self.config.detector)
        if saved is not None:
            offset, blob = saved
            self.linking = CampaignLinking.restored(pickle.loads(blob), self.config.detector)
            self.consumer.seek(TopicPartition(self.topic, 0), offset)
            self.next_offset = offset
            self.changed()  # saved, perhaps not committed: see Stage._assign
        self.owned = True
        log.info("campaigns: partition 0 assigned (%s)", "restored" if saved else "fresh")

    def handle(self, records: list[Any], out: DetectorOutput) -> None:
        version = self.config.detector.version
        self.linking.handle(records, self.sources(), version, self.metrics, out)

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            if self.delivery.fatal is not None:
                raise self.delivery.fatal
            data = await self.consumer.getmany(timeout_ms=200, max_records=self.config.max_records)
            self._published.clear()
            batch = self._read(data)
            del data  # the records are let go once read (see Stage._read)
            if batch and not await self.delivery.publish(batch, self.name):
                return  # stopping: the batch stays in hand, so it is never checkpointed
            self._published.set()
            if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_seconds:
                await self.checkpoint()
            self._record_lag()

    def _read(self, data: dict[TopicPartition, list[Any]]) -> Produced:
        batch = Produced()
        for tp, records in data.items():
            if not records:
                continue
            if not self.owned:
                self.consumer.seek(tp, records[0].offset)
                continue
            self.handle(records, batch.out)
            self.next_offset = records[-1].offset + 1
            self.changed()
        return batch

    def _record_lag(self) -> None:
        high = self.consumer.highwater(TopicPartition(self.topic, 0)) if self.owned else None
        pos = self.next_offset
        self.metrics.lag[self.name] = (
            max(0, high - pos) if high is not None and pos is not None else 0
        )

    async def checkpoint(self) -> None:
        """Save the stage's state with its next offset, then commit that offset (never while a
        batch is in hand, see `Stage.checkpoint`)."""
        self._last_checkpoint = time.monotonic()
        if not self.owned or self.next_offset is None or self.in_hand or not self.unsaved:
            return
        # Taken together, before any await.
        offset, blob, changes = self.next_offset, self._blob(), self._changes
        state = await asyncio.get_running_loop().run_in_executor(None, pack_state, blob)
        del blob
        await self._save([(self.name, 0, offset, state)], {0: offset}, changes)
