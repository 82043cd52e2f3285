"""The streaming pipeline: Kafka in, detector per partition, ClickHouse and Kafka out.

`Engine` composes one worker: its three stages (`streams.stages`: accounts, blocks, campaigns,
each a consumer group over one topic), the producer and the ClickHouse sink and state store they
write through (`streams.delivery.Delivery`), the table of suspect accounts the block stage names
as members, and the metrics. It starts and stops them, and says whether the worker is healthy
(`failed`, `degraded`) and whether it has caught up (`settled`, `drained`).

What a worker guarantees, and which part keeps each promise:

- **Delivery** (`streams.stages`, `streams.delivery`): after each batch a stage publishes what
  it produced (Kafka sends acknowledged, rows inserted). Every ``checkpoint_seconds``, on
  partition revocation and on shutdown, it saves each partition's detector state with the offset
  of its next unread message (and the stage's shared population models), then commits those
  offsets. A stage checkpoints only when everything it read has been published: a batch not
  (yet) published is never checkpointed or committed, so the next owner reads it again. After a
  crash, a partition restores its last checkpoint and replays from there: windows close on the
  event sequence alone, so the replay rebuilds the same windows and the same decisions with the
  same enforcement ids. Rows collapse in ClickHouse (ReplacingMergeTree); consumers of the
  enforcement topic drop redelivered ids.
- **Failing outputs** (`streams.retries.Retries`): a batch whose Kafka sends or ClickHouse
  inserts fail is retried (only what failed) with exponential backoff
  (``output_retry_initial_seconds`` doubling up to ``output_retry_max_seconds``) while its stage
  reads nothing more, so a stage holds at most one batch. The first failure of a streak and the
  recovery are logged (one line each), failed attempts are counted (``Metrics.output_errors``),
  and `Engine.degraded` says what fails. After ``output_give_up_seconds`` the stage stops with
  `OutputsUnavailable` (`Engine.failed`); the worker then exits non-zero for its supervisor to
  restart it. A checkpoint that cannot be saved is reported and taken again at the next one.
- **Poison messages** (`streams.processors.read_usage`) never stop a stage: a message over
  ``max_message_bytes`` is dead-lettered by reference (its first bytes, size, partition and
  offset); an event whose time is more than ``max_future_skew_ms`` ahead of (or, if set,
  ``max_past_skew_ms`` behind) the time the worker received it is dead-lettered before it
  reaches a detector, so it cannot move a watermark; an event for a window that has already
  closed is dead-lettered as late. Of the messages a worker reads, every one is scored once,
  dead-lettered once (``dead_letters`` FINAL) or is a duplicate of an event already counted.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.broker import ensure_topics
from streams.clickhouse import ClickHouseSink, StateStore, one_line
from streams.config import EngineConfig
from streams.delivery import ClickHouseCalls, Delivery
from streams.memory import MemoryReturn
from streams.metrics import Metrics
from streams.processors import SuspectTable
from streams.publish import MAX_REQUEST_BYTES, OutputsUnavailable
from streams.retries import Retries
from streams.stages import AccountStage, BlockStage, CampaignStage, Stage
from streams.stages.member import Member

log = logging.getLogger("distillguard.engine")

__all__ = ["Engine", "EngineConfig", "Metrics", "OutputsUnavailable"]


class Engine:
    """One worker: its three stages, and what they share (the producer, the outputs and
    checkpoints of `streams.delivery.Delivery`, the suspect table, the metrics)."""

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
        self.suspects = SuspectTable()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id=f"{config.client_id}-out",
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            **config.kafka_auth.client_kwargs(),
        )
        self._stopping = asyncio.Event()
        # chDB is one engine per process: engines sharing it must share one lock too.
        self.clickhouse = ClickHouseCalls(clickhouse_lock)
        self.retries = Retries(
            config.output_retry_initial_seconds,
            config.output_retry_max_seconds,
            config.output_give_up_seconds,
            self._stopping,
            self.metrics,
        )
        self.delivery = Delivery(
            config.topics,
            config.detector.version,
            self.producer,
            sink,
            store,
            self.clickhouse,
            self.retries,
            self.metrics,
        )
        accounts = AccountStage(config, self.delivery, self.metrics)
        usage = config.topics.usage

        def sources() -> set[int] | None:  # the account partitions, as the broker has them
            found: set[int] | None = accounts.consumer.partitions_for_topic(usage)
            return found

        blocks = BlockStage(config, self.delivery, self.metrics, sources, self.suspects)
        self.stages: list[Stage] = [accounts, blocks]
        self.campaigns = CampaignStage(config, self.delivery, self.metrics, sources)
        self._suspect_consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap,
            client_id=f"{config.client_id}-suspects",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **config.kafka_auth.client_kwargs(),
        )
        metrics = self.metrics
        self.memory = MemoryReturn(
            # Rounds of windows and checkpoints: what frees the most memory.
            lambda: sum(metrics.windows_scored.values()) + metrics.checkpoints,
            config.memory_return_seconds,
            metrics=metrics,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def request_flush(self) -> None:
        """The input has ended (a replay, the demo): close every window once its partition has
        nothing left to read, instead of waiting for more events or for idle_flush_seconds."""
        for stage in self.stages:
            stage.flush_requested = True

    def degraded(self) -> str | None:
        """What is failing and being retried, or cut off (None when nothing is), for /health."""
        members: list[Member] = [*self.stages, self.campaigns]
        reasons = [self.retries.degraded(), *(m.unanswered() for m in members)]
        return "; ".join(r for r in reasons if r) or None

    async def _follow_suspects(self) -> None:
        consumer = self._suspect_consumer
        await consumer.start()
        parts: set[int] = set()
        while not parts and not self._stopping.is_set():
            parts = consumer.partitions_for_topic(self.config.topics.suspects) or set()
            if not parts:
                await consumer.topics()
                await asyncio.sleep(0.2)
        consumer.assign([TopicPartition(self.config.topics.suspects, p) for p in parts])
        while not self._stopping.is_set():
            data = await consumer.getmany(timeout_ms=200)
            self.suspects.read([r for records in data.values() for r in records])
            del data  # the records are let go once read (see Stage._read)

    async def start(self) -> None:
        t = self.config.topics
        internal = {t.by_block: self.config.internal_partitions, t.suspects: 1, t.summaries: 1}
        await asyncio.to_thread(
            ensure_topics,
            self.config.bootstrap,
            internal,
            15.0,
            self.config.kafka_auth,
            self.config.replication_factor,
        )
        await self.producer.start()
        for stage in self.stages:
            await stage.consumer.start()
        await self.campaigns.consumer.start()
        self._tasks = [asyncio.create_task(s.run(self._stopping)) for s in self.stages]
        self._tasks.append(asyncio.create_task(self.campaigns.run(self._stopping)))
        self._tasks.append(asyncio.create_task(self._follow_suspects()))
        self._tasks.append(asyncio.create_task(self.memory.run(self._stopping)))

    async def stop(self, graceful: bool = True) -> None:
        """Graceful: finish the batch in hand, checkpoint, commit. Not graceful: drop everything
        since the last checkpoint (what a crash does).

        Each part is bounded by ``stop_timeout_seconds``: the batches in hand, then the
        checkpoints and the clients' goodbyes. A broker that does not answer (a commit waits for
        the group coordinator for as long as it takes) must not keep a worker that was told to
        stop, or that gave up on its outputs, from exiting for its supervisor; what a checkpoint
        cut short would have saved is read again from the last one. (A ClickHouse call cut
        short runs on in its thread until its own timeout.)"""
        self._stopping.set()
        timeout = self.config.stop_timeout_seconds
        if graceful:
            if self._tasks:
                _, late = await asyncio.wait(self._tasks, timeout=timeout)
                for t in late:  # a batch still in hand: dropped, so never checkpointed
                    t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        else:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._wind_down(graceful), timeout)
        except TimeoutError:
            log.error(
                "stop: checkpoints and goodbyes to Kafka took over %.0f s (the broker or "
                "ClickHouse is not answering); stopping without them: the next start reads "
                "again from the last checkpoint",
                timeout,
            )

    async def _wind_down(self, graceful: bool) -> None:
        if graceful:
            # Only stages with nothing in hand checkpoint (see Stage.checkpoint).
            for stage in self.stages:
                await stage.checkpoint()
            await self.campaigns.checkpoint()
        clients = [s.consumer for s in self.stages]
        clients += [self.campaigns.consumer, self._suspect_consumer, self.producer]
        for client in clients:
            try:
                await client.stop()
            except (Exception, asyncio.CancelledError) as exc:
                # With the broker gone, aiokafka's fetcher may end a retry it cancels with a
                # CancelledError of its own: the other clients still say goodbye.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                log.warning("stop: closing a Kafka client failed: %s", one_line(exc))

    @staticmethod
    def settled(*engines: Engine) -> bool:
        """Nothing left to read, no window open or waiting to be linked, in every stage of these
        engines (one worker group)."""
        return (
            not any(e.campaigns.pending for e in engines)
            and all(v == 0 for e in engines for v in e.metrics.lag.values())
            and not any(
                d.has_open_windows or d.pending_end_ms is not None
                for e in engines
                for s in e.stages
                for d in s.parts.values()
            )
        )

    @staticmethod
    def drained(*engines: Engine) -> bool:
        """All that these engines read is scored and published: `settled`, and every forwarded
        event and summary reached its stage (tests, demo; an engine that replays what a crashed
        one forwarded receives some twice, so after a crash only `settled` holds)."""
        forwarded = sum(e.metrics.forwarded for e in engines)
        received = sum(e.metrics.block_events_in for e in engines)
        summaries = sum(e.metrics.summaries_out - e.metrics.summaries_in for e in engines)
        return forwarded == received and summaries == 0 and Engine.settled(*engines)

    def failed(self) -> BaseException | None:
        """Why a stage stopped, if one did (the worker exits then)."""
        if self.delivery.fatal is not None:
            return self.delivery.fatal
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None
