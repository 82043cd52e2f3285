"""The streaming pipeline: Kafka in, detector per partition, ClickHouse and Kafka out.

Two stages run in every worker, each a consumer group over one topic:

- **accounts** reads ``api-usage-events`` (keyed by account): validates every message (bad ones
  to ``api-usage-events.dlq`` and ``dead_letters``), scores accounts, forwards accepted events
  keyed by IP block to ``distillguard.events-by-block``, and publishes accounts that scored over
  the member threshold to ``distillguard.suspects``.
- **blocks** reads ``distillguard.events-by-block``: each IP block's state lives with the worker
  that owns its partition; block actions name as members the suspects seen behind the block.
- **campaigns** reads ``distillguard.account-summaries`` (one partition): the accounts stage sends
  each closed account window's summaries there, with its partitions' progress. A window is linked
  once every account partition has closed it, over all accounts at once, in account-id order, so
  the decisions do not depend on how accounts are spread over partitions and workers.

Each partition has its own `Detector` (open windows, entity state); the stage's population models
are shared by its partitions. The hot topic is read with aiokafka ``getmany`` in batches: Faust's
per-message path costs ~150 us a message here (ENVIRONMENT.md), which would cap a worker at
~6,500 events/s; a batch costs a few microseconds per message.

Delivery: after each batch the stage publishes what it produced (Kafka sends acknowledged, rows
inserted). Every ``checkpoint_seconds``, on partition revocation and on shutdown, it saves each
partition's detector state with the offset of its next unread message, then commits those
offsets. After a crash, a partition restores its last checkpoint and replays from there: windows
close on the event sequence alone, so the replay rebuilds the same windows and the same decisions
with the same enforcement ids. Rows collapse in ClickHouse (ReplacingMergeTree); consumers of the
enforcement topic drop redelivered ids.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, UnsupportedCodecError
from aiokafka.structs import OffsetAndMetadata

from infra.broker import ensure_topics
from models.campaign_scoring import CampaignScorer, LinkInput, decode, encode, merge
from models.detector import Detector, DetectorConfig, DetectorOutput, Population
from models.events import UsageEvent
from models.features import EntityKind
from schemas.dead_letters import DeadLetter
from schemas.topics import BY_BLOCK, DEAD_LETTERS, ENFORCEMENT, SUMMARIES, SUSPECTS, USAGE_EVENTS
from schemas.validation import Rejection, parse_event
from streams.clickhouse import ClickHouseSink, StateStore

__all__ = ["Engine", "EngineConfig", "Metrics"]

log = logging.getLogger("distillguard.engine")
POPULATION = -1


@dataclass
class EngineConfig:
    bootstrap: str
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    checkpoint_seconds: float = 10.0
    # A safety net for a stream that stops: wall-clock silence cannot tell a stopped stream from
    # a paused one (a rebalance, a slow producer), and events for a window closed this way
    # count as late. A known end of stream uses Engine.request_flush instead.
    idle_flush_seconds: float = 60.0
    # How far (event time) one partition may run ahead of this worker's slowest backlogged one.
    max_skew_ms: int = 120_000
    max_records: int = 5_000
    client_id: str = "distillguard"
    group_prefix: str = "distillguard"
    internal_partitions: int = 8


@dataclass
class Metrics:
    """Counters the worker exports on /metrics."""

    events_in: int = 0
    forwarded: int = 0
    block_events_in: int = 0
    summaries_out: int = 0
    summaries_in: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    late: int = 0
    windows_scored: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    batch_seconds: float = 0.0


@dataclass
class _Batch:
    out: DetectorOutput = field(default_factory=DetectorOutput)
    dead: list[DeadLetter] = field(default_factory=list)
    forwards: list[tuple[bytes, bytes]] = field(default_factory=list)
    heartbeats: list[bytes] = field(default_factory=list)
    suspects: list[tuple[bytes, bytes]] = field(default_factory=list)
    summaries: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.out.scored
            or self.out.actions
            or self.dead
            or self.forwards
            or self.heartbeats
            or self.summaries
        )


class _Stage(ConsumerRebalanceListener):  # type: ignore[misc]
    name = ""
    topic = ""
    kinds: tuple[EntityKind, ...] = ()

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        cfg = engine.config
        self.population = Population(cfg.detector)
        self.parts: dict[int, Detector] = {}
        self.next_offset: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=f"{cfg.group_prefix}-{self.name}",
            client_id=f"{cfg.client_id}-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self._last_checkpoint = time.monotonic()

    # -- partition ownership -------------------------------------------------------------------
    def _detector(self) -> Detector:
        return Detector(self.engine.config.detector, kinds=self.kinds, population=self.population)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in revoked if tp.partition in self.parts]
        if mine:
            await self.checkpoint(mine)
        for p in mine:
            self.parts.pop(p, None)
            self.next_offset.pop(p, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        store = self.engine.store
        if self.engine.population_loaded.get(self.name) is None:
            saved = await self.engine.clickhouse(store.load, self.name, POPULATION)
            if saved is not None:
                self.population = Population.restore(saved[1])
                for det in self.parts.values():
                    det.population = self.population
            self.engine.population_loaded[self.name] = saved is not None
        for tp in assigned:
            if tp.partition in self.parts:
                continue
            det = self._detector()
            saved = await self.engine.clickhouse(store.load, self.name, tp.partition)
            if saved is not None:
                offset, blob = saved
                self.restore_partition(tp.partition, det, blob)
                self.consumer.seek(tp, offset)
                self.next_offset[tp.partition] = offset
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
    def handle(self, partition: int, det: Detector, records: list[Any], batch: _Batch) -> None:
        """Decode this stage's messages into the partition's detector; collect the output."""

    def after_scoring(self, out: DetectorOutput, batch: _Batch) -> None:
        """Hook for what a stage derives from its scores (the accounts stage: suspects)."""

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            try:
                data = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.engine.config.max_records
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
            batch = _Batch()
            now = time.monotonic()
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
            self._idle_flush(now, batch)
            self._align()
            self.after_scoring(batch.out, batch)
            if batch:
                await self.engine.publish(batch)
            self.engine.metrics.batch_seconds = time.perf_counter() - started
            if now - self._last_checkpoint >= self.engine.config.checkpoint_seconds:
                await self.checkpoint()
            self._record_lag()

    def _align(self) -> None:
        """Keep this worker's partitions in step in event time (watermark alignment).

        Reading a backlog, a consumer drains partitions unevenly: one can be half an hour of
        event time ahead of another. The partitions share population models, which would then
        learn one partition's future (a campaign in it included) before scoring the others.
        A partition more than ``max_skew`` ahead of the slowest one that still has a backlog is
        paused until that one catches up; a partition with nothing to read holds nobody back.
        """
        skew = self.engine.config.max_skew_ms
        behind: list[int] = []
        progress: dict[int, int] = {}
        for p, det in self.parts.items():
            progress[p] = det.windower.max_event_ms
            high = self.consumer.highwater(TopicPartition(self.topic, p))
            if high is None or self.next_offset.get(p, 0) < high:
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

    def _idle_flush(self, now: float, batch: _Batch) -> None:
        if self.engine.flush_requested:
            self._flush_caught_up(now, batch)
            return
        self._flush_silent(now, batch)

    def _flush_caught_up(self, now: float, batch: _Batch) -> None:
        for p, det in self.parts.items():
            high = self.consumer.highwater(TopicPartition(self.topic, p))
            if (
                det.windower.open_windows()
                and high is not None
                and self.next_offset.get(p, 0) >= high
            ):
                batch.out.extend(det.flush())
                self.last_seen[p] = now

    def _flush_silent(self, now: float, batch: _Batch) -> None:
        """Close the windows of a partition that has been silent and has nothing left to read.

        Event time only moves with events, so without this the last windows before a quiet
        spell would stay open. A partition with a known backlog is never flushed: its next
        events would land in windows closed too early.
        """
        idle = self.engine.config.idle_flush_seconds
        for p, det in self.parts.items():
            if not det.windower.open_windows() or now - self.last_seen.get(p, now) < idle:
                continue
            high = self.consumer.highwater(TopicPartition(self.topic, p))
            if high is not None and self.next_offset.get(p, 0) < high:
                continue
            log.info(
                "%s: partition %d idle for %.0f s: closing its open windows",
                self.name,
                p,
                now - self.last_seen.get(p, now),
            )
            batch.out.extend(det.flush())
            self.last_seen[p] = now

    def _record_lag(self) -> None:
        lag = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            pos = self.next_offset.get(tp.partition)
            if high is not None and pos is not None:
                lag += max(0, high - pos)
        self.engine.metrics.lag[self.name] = lag

    async def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Save detector state with offsets, then commit those offsets (in that order)."""
        parts = [p for p in (partitions or list(self.parts)) if p in self.next_offset]
        self._last_checkpoint = time.monotonic()
        if not parts:
            return
        rows = [(self.name, p, self.next_offset[p], self.partition_blob(p)) for p in parts]
        rows.append((self.name, POPULATION, 0, self.population.snapshot()))
        version = self.engine.config.detector.version
        await self.engine.clickhouse(self.engine.store.save, rows, version)
        await self.consumer.commit(
            {
                TopicPartition(self.topic, p): OffsetAndMetadata(self.next_offset[p], "")
                for p in parts
            }
        )
        self.engine.metrics.checkpoints += 1


class _AccountStage(_Stage):
    name = "accounts"
    topic = USAGE_EVENTS
    kinds: tuple[EntityKind, ...] = ("account",)

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.announced: dict[int, int] = {}  # per partition, the progress last sent downstream

    def _detector(self) -> Detector:
        # Accounts are linked into campaigns by the campaign stage, which sees every partition.
        return Detector(
            self.engine.config.detector,
            kinds=("account", "campaign"),
            population=self.population,
            link_campaigns=False,
        )

    def handle(self, partition: int, det: Detector, records: list[Any], batch: _Batch) -> None:
        metrics = self.engine.metrics
        received = int(time.time() * 1000)
        add = det.add
        forwards = batch.forwards
        windower = det.windower
        before = det.stats.duplicates, det.stats.late
        for r in records:
            parsed = parse_event(r.value if r.value is not None else b"")
            if isinstance(parsed, Rejection):
                batch.dead.append(
                    DeadLetter(received, self.topic, partition, r.offset, parsed, r.value or b"")
                )
                continue
            if add(parsed):
                # Tagged with this partition's progress: every later event from it belongs to a
                # window ending after closed_before_ms (what the block stage's watermark needs).
                forwards.append(
                    (
                        parsed.ip_block.encode(),
                        orjson.dumps([partition, windower.closed_before_ms, tuple(parsed)]),
                    )
                )
        metrics.events_in += len(records)
        metrics.duplicates += det.stats.duplicates - before[0]
        metrics.late += det.stats.late - before[1]
        batch.out.extend(det.advance())

    def after_scoring(self, out: DetectorOutput, batch: _Batch) -> None:
        # Progress reaches every block partition, even those no event of ours went to, however
        # the windows closed (watermark or flush).
        for p, det in self.parts.items():
            closed_before = det.windower.closed_before_ms
            if closed_before > self.announced.get(p, -1):
                batch.heartbeats.append(orjson.dumps([p, closed_before, None]))
                self.announced[p] = closed_before
        batch.summaries.extend(encode(x) for x in out.summaries)
        out.summaries.clear()
        threshold = self.engine.config.detector.member_score
        for sw in out.scored:
            if sw.kind != "account":
                continue
            for i in np.flatnonzero(sw.score >= threshold).tolist():
                batch.suspects.append(
                    (sw.ids[i].encode(), orjson.dumps([sw.ids[i], sw.end_ms, float(sw.score[i])]))
                )


class _BlockStage(_Stage):
    name = "blocks"
    topic = BY_BLOCK
    kinds: tuple[EntityKind, ...] = ("ip_block",)

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Per block partition: per upstream (account) partition, the time before which all of
        # its windows are closed. Block windows close at the minimum over upstream partitions,
        # so however unevenly the account partitions progress, no event arrives late here.
        self.upstream: dict[int, dict[int, int]] = {}

    def _detector(self) -> Detector:
        return Detector(
            self.engine.config.detector,
            kinds=self.kinds,
            population=self.population,
            member_lookup=self.engine.suspect_scores,
            external_watermark=True,
        )

    def _idle_flush(self, now: float, batch: _Batch) -> None:
        """Never on its own clock: block windows close when every account partition has closed
        them (after its own flush, an account partition's heartbeat says so)."""

    def partition_blob(self, partition: int) -> bytes:
        state = (self.parts[partition].partition_state(), self.upstream.get(partition, {}))
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore_partition(self, partition: int, det: Detector, blob: bytes) -> None:
        det_state, self.upstream[partition] = pickle.loads(blob)
        det.load_partition_state(det_state)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await super().on_partitions_assigned(assigned)
        for det in self.parts.values():
            det.member_lookup = self.engine.suspect_scores

    def handle(self, partition: int, det: Detector, records: list[Any], batch: _Batch) -> None:
        add = det.add
        upstream = self.upstream.setdefault(partition, {})
        events = 0
        for r in records:
            source, closed_before, event = orjson.loads(r.value)
            if closed_before > upstream.get(source, -1):
                upstream[source] = closed_before
            if event is not None:
                add(UsageEvent(*event))
                events += 1
        self.engine.metrics.block_events_in += events
        sources = self.engine.stages[0].consumer.partitions_for_topic(USAGE_EVENTS)
        if sources:
            watermark = min(upstream.get(p, -1) for p in sources)
            if watermark > 0:
                det.windower.close_through(watermark)
        batch.out.extend(det.advance())


class _CampaignStage(ConsumerRebalanceListener):  # type: ignore[misc]
    """Links accounts into campaigns over every account partition (see the module docstring).

    One partition, so one worker of the group owns it. Its state (the campaign scorer, windows
    waiting for some account partition, each account partition's progress) is checkpointed with
    the offset of its next unread message, like the other stages'.
    """

    name = "campaigns"
    topic = SUMMARIES

    def __init__(
        self,
        engine: Engine,
        sources: Callable[[], set[int] | None],
    ) -> None:
        self.engine = engine
        self.sources = sources
        cfg = engine.config
        self.scorer = CampaignScorer(cfg.detector)
        self.pending: dict[int, list[LinkInput]] = {}
        self.upstream: dict[int, int] = {}
        self.owned = False
        self.next_offset: int | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=f"{cfg.group_prefix}-{self.name}",
            client_id=f"{cfg.client_id}-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self._last_checkpoint = time.monotonic()

    def _blob(self) -> bytes:
        state = (self.scorer, self.pending, self.upstream)
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.owned and any(tp.partition == 0 for tp in revoked):
            await self.checkpoint()
            self.owned = False
            self.next_offset = None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if not any(tp.partition == 0 for tp in assigned) or self.owned:
            return
        saved = await self.engine.clickhouse(self.engine.store.load, self.name, 0)
        self.scorer = CampaignScorer(self.engine.config.detector)
        self.pending, self.upstream = {}, {}
        if saved is not None:
            offset, blob = saved
            self.scorer, self.pending, self.upstream = pickle.loads(blob)
            self.consumer.seek(TopicPartition(self.topic, 0), offset)
            self.next_offset = offset
        self.owned = True
        log.info("campaigns: partition 0 assigned (%s)", "restored" if saved else "fresh")

    def handle(self, records: list[Any], out: DetectorOutput) -> None:
        """Collect summaries and progress; link every window all account partitions closed."""
        for r in records:
            value = r.value or b""
            if value[:1] == b"[":
                source, closed_before, _ = orjson.loads(value)
                if closed_before > self.upstream.get(source, -1):
                    self.upstream[source] = closed_before
            else:
                x = decode(value)
                self.pending.setdefault(x.summaries.end_ms, []).append(x)
                self.engine.metrics.summaries_in += 1
        sources = self.sources()
        if not sources or not self.pending:
            return
        watermark = min(self.upstream.get(p, -1) for p in sources)
        version = self.engine.config.detector.version
        for end in sorted(e for e in self.pending if e <= watermark):
            out.extend(self.scorer.update(merge(self.pending.pop(end)), version).out)

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            data = await self.consumer.getmany(
                timeout_ms=200, max_records=self.engine.config.max_records
            )
            batch = _Batch()
            for tp, records in data.items():
                if not records:
                    continue
                if not self.owned:
                    self.consumer.seek(tp, records[0].offset)
                    continue
                self.handle(records, batch.out)
                self.next_offset = records[-1].offset + 1
            if batch:
                await self.engine.publish(batch)
            if time.monotonic() - self._last_checkpoint >= self.engine.config.checkpoint_seconds:
                await self.checkpoint()
            self._record_lag()

    def _record_lag(self) -> None:
        high = self.consumer.highwater(TopicPartition(self.topic, 0)) if self.owned else None
        pos = self.next_offset
        self.engine.metrics.lag[self.name] = (
            max(0, high - pos) if high is not None and pos is not None else 0
        )

    async def checkpoint(self) -> None:
        """Save the stage's state with its next offset, then commit that offset."""
        self._last_checkpoint = time.monotonic()
        if not self.owned or self.next_offset is None:
            return
        rows = [(self.name, 0, self.next_offset, self._blob())]
        await self.engine.clickhouse(
            self.engine.store.save, rows, self.engine.config.detector.version
        )
        await self.consumer.commit(
            {TopicPartition(self.topic, 0): OffsetAndMetadata(self.next_offset, "")}
        )
        self.engine.metrics.checkpoints += 1


class Engine:
    """Both stages, the producer, the ClickHouse sink and the suspect table of one worker."""

    def __init__(
        self,
        config: EngineConfig,
        sink: ClickHouseSink,
        store: StateStore,
        clickhouse_lock: asyncio.Lock | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.store = store
        self.metrics = Metrics()
        self.population_loaded: dict[str, bool | None] = {}
        self.suspects: dict[str, tuple[int, float]] = {}
        self.producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id=f"{config.client_id}-out",
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        self.stages: list[_Stage] = [_AccountStage(self), _BlockStage(self)]
        accounts = self.stages[0].consumer
        self.campaigns = _CampaignStage(self, lambda: accounts.partitions_for_topic(USAGE_EVENTS))
        # chDB is one engine per process: engines sharing it must share one lock too.
        self._ch_lock = clickhouse_lock or asyncio.Lock()
        self._suspect_consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap,
            client_id=f"{config.client_id}-suspects",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.flush_requested = False

    def request_flush(self) -> None:
        """The input has ended (a replay, the demo): close every window once its partition has
        nothing left to read, instead of waiting for more events or for idle_flush_seconds."""
        self.flush_requested = True

    async def clickhouse(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking ClickHouse call off the event loop, one at a time."""
        async with self._ch_lock:
            return await asyncio.to_thread(fn, *args)

    def suspect_scores(self, accounts: list[str], window_end_ms: int) -> Any:
        """Scores of accounts flagged as suspects within the last three windows of this one."""
        horizon = window_end_ms - 3 * self.config.detector.window_ms
        out = np.zeros(len(accounts))
        for i, a in enumerate(accounts):
            seen = self.suspects.get(a)
            if seen is not None and seen[0] >= horizon:
                out[i] = seen[1]
        return out

    async def publish(self, batch: _Batch) -> None:
        """Send and insert everything a batch produced; returns once all of it is acknowledged."""
        producer = self.producer
        futures: list[Awaitable[Any]] = []
        for a in batch.out.actions:
            futures.append(await producer.send(ENFORCEMENT, a.to_json(), key=a.key.encode()))
            self.metrics.actions[a.action] = self.metrics.actions.get(a.action, 0) + 1
        for d in batch.dead:
            futures.append(
                await producer.send(DEAD_LETTERS, d.to_json(), key=str(d.source_offset).encode())
            )
        for key, value in batch.forwards:
            futures.append(await producer.send(BY_BLOCK, value, key=key))
        # Summaries before the progress that says they are complete (one partition: in order).
        for value in batch.summaries:
            futures.append(await producer.send(SUMMARIES, value, partition=0))
        self.metrics.summaries_out += len(batch.summaries)
        if batch.heartbeats:
            block_parts = await producer.partitions_for(BY_BLOCK)
            for value in batch.heartbeats:
                for part in sorted(block_parts):
                    futures.append(await producer.send(BY_BLOCK, value, partition=part))
                futures.append(await producer.send(SUMMARIES, value, partition=0))
        self.metrics.forwarded += len(batch.forwards)
        for key, value in batch.suspects:
            futures.append(await producer.send(SUSPECTS, value, key=key))
        self.metrics.dead_letters += len(batch.dead)
        for sw in batch.out.scored:
            self.metrics.windows_scored[sw.kind] = self.metrics.windows_scored.get(
                sw.kind, 0
            ) + len(sw)
        version = self.config.detector.version
        await asyncio.gather(
            asyncio.gather(*futures),
            self.clickhouse(self.sink.write, batch.out, batch.dead, version),
        )

    async def _follow_suspects(self) -> None:
        consumer = self._suspect_consumer
        await consumer.start()
        parts: set[int] = set()
        while not parts and not self._stopping.is_set():
            parts = consumer.partitions_for_topic(SUSPECTS) or set()
            if not parts:
                await consumer.topics()
                await asyncio.sleep(0.2)
        consumer.assign([TopicPartition(SUSPECTS, p) for p in parts])
        while not self._stopping.is_set():
            data = await consumer.getmany(timeout_ms=200)
            for records in data.values():
                for r in records:
                    account, end, score = orjson.loads(r.value)
                    seen = self.suspects.get(account)
                    if seen is None or end >= seen[0]:
                        self.suspects[account] = (end, score)

    async def start(self) -> None:
        internal = {BY_BLOCK: self.config.internal_partitions, SUSPECTS: 1, SUMMARIES: 1}
        await asyncio.to_thread(ensure_topics, self.config.bootstrap, internal)
        await self.producer.start()
        for stage in self.stages:
            await stage.consumer.start()
        await self.campaigns.consumer.start()
        self._tasks = [asyncio.create_task(s.run(self._stopping)) for s in self.stages]
        self._tasks.append(asyncio.create_task(self.campaigns.run(self._stopping)))
        self._tasks.append(asyncio.create_task(self._follow_suspects()))

    async def stop(self, graceful: bool = True) -> None:
        """Graceful: finish the batch in hand, checkpoint, commit. Not graceful: drop everything
        since the last checkpoint (what a crash does)."""
        self._stopping.set()
        if graceful:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for stage in self.stages:
                await stage.checkpoint()
            await self.campaigns.checkpoint()
        else:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for stage in self.stages:
            await stage.consumer.stop()
        await self.campaigns.consumer.stop()
        await self._suspect_consumer.stop()
        await self.producer.stop()

    @staticmethod
    def drained(*engines: Engine) -> bool:
        """All that these engines (one worker group) read is scored and published, and no window
        is open: every forwarded event reached a block stage, no partition lags (tests, demo)."""
        forwarded = sum(e.metrics.forwarded for e in engines)
        received = sum(e.metrics.block_events_in for e in engines)
        summaries = sum(e.metrics.summaries_out - e.metrics.summaries_in for e in engines)
        return (
            forwarded == received
            and summaries == 0
            and not any(e.campaigns.pending for e in engines)
            and all(v == 0 for e in engines for v in e.metrics.lag.values())
            and not any(
                d.windower.open_windows()
                for e in engines
                for s in e.stages
                for d in s.parts.values()
            )
        )

    def failed(self) -> BaseException | None:
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None
