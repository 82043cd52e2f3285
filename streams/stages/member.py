"""What every stage shares: its consumer, and when its state may be checkpointed and committed.

A batch is *in hand* from the moment it is read until everything it produced is published
(`streams.delivery.Delivery.publish`). While one is, the stage's state is ahead of what was
written, so it is never checkpointed and its offsets are never committed. A checkpoint saves the
state first and commits its offsets after (`Delivery.checkpoint`); a periodic one is skipped
when nothing changed since the last one saved (a revocation's always saves).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, UnsupportedCodecError
from aiokafka.structs import OffsetAndMetadata

from streams.clickhouse import CheckpointUnreadable, one_line, pack_state
from streams.config import EngineConfig
from streams.delivery import Delivery
from streams.metrics import Metrics
from streams.processors import Produced
from streams.publish import OutputsUnavailable
from streams.retries import Abandoned

__all__ = ["Member", "consumer", "restored"]

log = logging.getLogger("distillguard.engine")
T = TypeVar("T")


def consumer(cfg: EngineConfig, name: str, fetch_bytes: int) -> AIOKafkaConsumer:
    """A consumer of the stage's group that commits only when the stage says so, starts from
    the earliest offset when the group has none, and reads committed records only: a gateway
    producing in transactions takes back what it aborts, and that never happened."""
    return AIOKafkaConsumer(
        bootstrap_servers=cfg.bootstrap,
        group_id=f"{cfg.group_prefix}-{name}",
        client_id=f"{cfg.client_id}-{name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=fetch_bytes,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        rebalance_timeout_ms=cfg.rebalance_timeout_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        **cfg.kafka_auth.client_kwargs(),
    )


def restored(what: str, restore: Callable[[], T]) -> T:
    """``restore()``: what it raises (but running out of memory) as `CheckpointUnreadable`,
    since a state that does not restore is not mended by trying again.

    >>> import pickle
    >>> restored("accounts partition 3", lambda: pickle.loads(b"not a pickle"))
    Traceback (most recent call last):
    ...
    streams.clickhouse.CheckpointUnreadable: accounts partition 3: UnpicklingError: ...
    """
    try:
        return restore()
    except MemoryError:
        raise
    except Exception as exc:
        raise CheckpointUnreadable(f"{what}: {type(exc).__name__}: {one_line(exc)}") from exc


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
        # Since when each read returned nothing (None: the last one returned records).
        self._empty_since: float | None = None

    def readable_end(self, tp: TopicPartition) -> int | None:
        """The offset after the last record the consumer can read now, as its last fetch left
        it (None: no fetch answered yet). Reading committed records only, that is the last
        stable offset: records of a transaction still open are not readable yet, and waiting
        for them is not a backlog (a transaction left open would hold the partition's windows
        open until the broker aborts it)."""
        high: int | None = self.consumer.highwater(tp)
        stable = self.consumer.last_stable_offset(tp)
        if high is None or not isinstance(stable, int) or stable < 0:
            return high  # an older broker, or no fetch yet
        return min(stable, high)

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

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The run loop raises what is set in ``delivery.fatal``: raised here, aiokafka would only
        # log it, and the partitions would stay assigned and unread, the stage silently stuck.
        try:
            await self._assign(assigned)
        except Abandoned:
            return  # the worker stops: nothing is taken
        except OutputsUnavailable as exc:
            self.delivery.fatal = exc
        except CheckpointUnreadable as exc:
            self.delivery.fatal = OutputsUnavailable(
                f"{self.name}: a checkpoint in detector_state cannot be restored ({exc}); if a "
                f"newer distillguard wrote it, run that version; to start the stage afresh from "
                f"its committed offsets, delete its rows (stage = '{self.name}') from "
                "detector_state"
            )
        except Exception as exc:  # anything else: stop loudly, rather than stall
            self.delivery.fatal = OutputsUnavailable(
                f"{self.name}: taking partitions failed: {type(exc).__name__}: {one_line(exc)}; "
                "the worker exits for its supervisor to restart it from its checkpoints"
            )

    @abc.abstractmethod
    async def _assign(self, assigned: list[TopicPartition]) -> None:
        """Take newly assigned partitions, each restored from its checkpoint."""

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """The next records; from here until they are published, a batch is in hand.

        Raises what stops the stage: an output that failed for good (also when found in a
        rebalance callback), or a read that failed, logged once with its fix.
        """
        if self.delivery.fatal is not None:
            raise self.delivery.fatal
        try:
            data: dict[TopicPartition, list[Any]] = await self.consumer.getmany(
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
            log.error("%s stage stopped: reading %s failed: %r%s", self.name, self.topic, exc, fix)
            raise
        except UnicodeDecodeError as exc:
            # aiokafka decodes header names itself, as UTF-8 (the Java, librdkafka and Python
            # clients write them so; Go clients and librdkafka's C API write any bytes), and a
            # record it cannot decode fails the whole read, on every restart: no dead letter can
            # be made of what the client will not hand over.
            why = (
                f"{self.name} stage stopped: reading {self.topic} failed: the Kafka client "
                f"cannot decode a record ({one_line(exc)}), most likely a header name that is "
                "not UTF-8. Fix: have its producer send UTF-8 header names; this worker cannot "
                "read that partition past the record until it leaves the topic (retention, or "
                "kafka-delete-records past its offset; kcat -C -f '%p %o %h' shows where it is)"
            )
            log.error("%s", why)
            raise OutputsUnavailable(why) from exc
        self._empty_since = (self._empty_since or time.time()) if not data else None
        self._published.clear()
        return data

    def unanswered(self, now: float | None = None) -> str | None:
        """Why reading looks cut off (None if it does not), for /health: the stage has read
        nothing for `EngineConfig.read_silence_seconds`, and no fetch of any partition it
        reads has been answered for as long. A stage with records to read, or whose
        partitions are all paused, is not asked (its fetches wait for it, not the brokers)."""
        now = time.time() if now is None else now
        limit = self.config.read_silence_seconds
        if self._empty_since is None or now - self._empty_since < limit:
            return None
        reading = self.consumer.assignment() - self.consumer.paused()
        answered = [self.consumer.last_poll_timestamp(tp) for tp in reading]
        known = [ms for ms in answered if ms is not None]
        if not known:
            return None
        silent = now - max(known) / 1000
        if silent < limit:
            return None
        return (
            f"{self.name} stage: no fetch of {self.topic} answered for {silent:.0f} s: the "
            f"brokers at {self.config.bootstrap} are unreachable or lead none of its "
            "partitions; reading resumes by itself when they answer"
        )

    async def _publish(self, batch: Produced) -> bool:
        """Publish what the batch in hand produced (`Delivery.publish`). False if the worker
        stops first: the batch then stays in hand, so it is never checkpointed."""
        if batch and not await self.delivery.publish(batch, self.name):
            return False
        self._published.set()
        return True

    async def _commit(self, offsets: dict[int, int]) -> None:
        await self.consumer.commit(
            {TopicPartition(self.topic, p): OffsetAndMetadata(o, "") for p, o in offsets.items()}
        )

    async def _save(
        self,
        states: list[tuple[int, int, Callable[[], bytes]]],
        offsets: dict[int, int],
        changes: int,
    ) -> bool:
        """Save states, then commit their offsets (`Delivery.checkpoint`).

        ``states``: per partition, the offset its state was taken at and how to pickle it. Each
        state is handed to a thread to be compressed as soon as it is pickled, so a raw pickle
        lives only until its compression ends, not until all are taken; nothing else runs on
        the loop until every state is pickled. ``changes``: the count of changes when the state
        was taken (-1: only some partitions were, which leaves the others' changes unsaved).
        """
        loop = asyncio.get_running_loop()
        packing = [(p, o, loop.run_in_executor(None, pack_state, blob())) for p, o, blob in states]
        rows = [(self.name, p, o, await packed) for p, o, packed in packing]
        del packing
        saved = await self.delivery.checkpoint(self.name, rows, offsets, self._commit)
        if saved and changes >= 0:
            self._saved = changes
        return saved
