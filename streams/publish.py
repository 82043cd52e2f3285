"""Publishing what a batch produced: Kafka messages and ClickHouse rows, in one order.

`Outputs` holds what one batch still has to write. Kafka messages (enforcement actions, dead
letters, summaries, suspects, events forwarded by IP block) and ClickHouse inserts go out
together; the progress heartbeats go last, once everything they vouch for is acknowledged. An
attempt that fails leaves in place only what failed, so the next attempt writes nothing twice.
The retry policy (backoff, giving up) and the commit of offsets, only after a batch is
published, are `streams.delivery`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.columns import Chunk
from models.keys import kafka_partitions
from schemas.topics import BY_BLOCK, Topics
from streams.clickhouse import ClickHouseSink, one_line
from streams.processors import Forward, Produced
from streams.wire import forwarded_columns

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "FORWARD_MAX_BYTES",
    "MAX_REQUEST_BYTES",
    "Message",
    "OutputError",
    "Outputs",
    "OutputsUnavailable",
    "forwarded",
]

#: The producer's ``max_request_size``: no message the worker writes may be longer.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class OutputsUnavailable(RuntimeError):
    """A stage's outputs kept failing for ``output_give_up_seconds``: the stage has stopped, and
    the worker must exit (and be restarted) rather than hold its partitions without progress."""


class OutputError(Exception):
    """One failed attempt: what failed (``Kafka send to <topic>``, ``ClickHouse insert into
    <table>``) and why."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what}: {one_line(cause)}")
        self.what = what
        self.cause = cause


@dataclass(slots=True)
class Message:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    # Of a forwarded message cut in parts, which part: part k is sent only once part k - 1 is
    # acknowledged, so a retried part never lands behind the next one (the block stage would
    # take its events for ones sent again, by their offsets).
    part: int = 0


#: The largest forwarded message: the broker's default limit (``message.max.bytes``, 1 MiB),
#: less headroom for the record batch around it.
FORWARD_MAX_BYTES = 1024 * 1024 - 64 * 1024
#: A dead letter longer than this refers to its message instead of copying it: the broker's
#: default limit too. A whole copy (base64 and readable text) runs to ~7.5 times the message, so
#: an invalid message of a few hundred KB would be refused by a dead-letter topic made with the
#: defaults, retried, and stop the worker on every restart. The `dead_letters` table keeps the
#: whole message either way, and so does the input topic, at the offset the dead letter names.
DEAD_LETTER_MAX_BYTES = FORWARD_MAX_BYTES


def forwarded(
    forwards: list[Forward],
    partitions: list[int],
    topic: str = BY_BLOCK,
    max_bytes: int | None = None,
) -> list[Message]:
    """Accepted events for the block stage as columns (`streams.wire.ForwardedColumns`): one
    message per block partition and account partition, the events in the order they came, each
    with its offset. An IP block goes to the partition Kafka's default partitioner would give
    its key (murmur2), as when each event was its own message. A message is cut in parts only
    past ``max_bytes`` (`FORWARD_MAX_BYTES`; 5,000 events of the longest account ids allowed
    make ~1.1 MB); a part's progress is the one after its last event, and its `Message.part`
    says which part it is.

    Examples
    --------
    >>> import numpy as np
    >>> from models.events import UsageEvent
    >>> from streams.processors import Forward
    >>> def ev(i, block):
    ...     return UsageEvent(f"e{i}", 1000, "a", "10.0.0.1", block, "m", 5, 7)
    >>> def fw(source, events, offsets, progress):
    ...     return Forward(source, [Chunk.from_rows(events)], np.array(offsets), np.array(progress))
    >>> batch = [fw(0, [ev(1, "10.0.0.0/24"), ev(2, "10.0.1.0/24")], [10, 11], [60_000] * 2),
    ...          fw(1, [ev(3, "10.0.0.0/24")], [7], [0])]
    >>> from streams.wire import read_by_block
    >>> [(m.partition, source, after, cols.offsets.tolist(), len(cols.chunk))
    ...  for m in forwarded(batch, [0, 1, 2, 3])
    ...  for source, after, _, cols in [read_by_block(m.value)]]
    [(3, 0, 60000, [10], 1), (1, 0, 60000, [11], 1), (3, 1, 0, [7], 1)]
    """
    out: list[Message] = []
    limit = FORWARD_MAX_BYTES if max_bytes is None else max_bytes
    for f in forwards:
        if not len(f):
            continue
        chunk = Chunk.concat(f.chunks)
        # The chunk's blocks hashed all at once: no cache of hashes outlives the batch (its
        # entries, made amid the batch's short-lived objects, would keep their memory from
        # going back to the system once the batch is gone).
        blocks = [b.encode() for b in chunk.names("blocks")]
        slots = kafka_partitions(blocks, len(partitions))
        dest = np.asarray(partitions, dtype=np.int64)[slots][chunk.block]
        for d in dict.fromkeys(dest.tolist()):
            rows = np.flatnonzero(dest == d)
            out += [
                Message(topic, value, None, int(d), part)
                for part, value in enumerate(
                    _parts(f.source, rows, chunk, f.offsets, f.progress, limit)
                )
            ]
    return out


def _parts(
    source: int,
    rows: npt.NDArray[np.intp],
    chunk: Chunk,
    offsets: npt.NDArray[np.int64],
    progress: npt.NDArray[np.int64],
    max_bytes: int,
) -> list[bytes]:
    """``rows`` of ``chunk`` as one message, or as parts of at most ``max_bytes`` each (a lone
    event always goes)."""
    part = chunk if rows.size == len(chunk) else chunk.take(rows)
    value = forwarded_columns(source, int(progress[rows[-1]]), offsets[rows], part)
    if len(value) <= max_bytes or rows.size == 1:
        return [value]
    half = rows.size // 2
    return _parts(source, rows[:half], chunk, offsets, progress, max_bytes) + _parts(
        source, rows[half:], chunk, offsets, progress, max_bytes
    )


class _Producer(Protocol):
    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Awaitable[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class Outputs:
    """What one batch still has to write, so that an attempt after a failure retries only what
    failed: Kafka messages not yet acknowledged (in their order), ClickHouse tables not yet
    inserted into, then the progress heartbeats, sent only once everything they vouch for (the
    forwarded events and summaries before them) is acknowledged."""

    def __init__(
        self,
        batch: Produced,
        topics: Topics,
        producer: _Producer,
        sink: ClickHouseSink,
        version: str,
        clickhouse: Callable[[Callable[[], None]], Awaitable[None]],
    ) -> None:
        """``clickhouse`` runs a blocking call off the event loop
        (`streams.delivery.ClickHouseCalls`)."""
        self.producer = producer
        self.clickhouse = clickhouse
        out, dead = batch.out, batch.dead
        t = self.topics = topics
        msgs = [Message(t.enforcement, a.to_json(), a.key.encode()) for a in out.actions]
        msgs += [
            Message(t.dead_letters, d.to_json(DEAD_LETTER_MAX_BYTES), str(d.source_offset).encode())
            for d in dead
        ]
        # Summaries before the progress that says they are complete (one partition: in order).
        msgs += [Message(t.summaries, value, None, 0) for value in batch.summaries]
        msgs += [Message(t.suspects, value, key) for key, value in batch.suspects]
        self.messages = msgs
        self.forwards: list[Forward] | None = batch.forwards or None
        self.later_parts: list[list[Message]] = []  # forwarded parts 1, 2...: one wave each
        self.heartbeats = list(batch.heartbeats)
        self.progress: list[Message] | None = None  # the heartbeats, once partitions are known
        self.inserts: list[tuple[str, Callable[[], None]]] = []
        # One entry per insert: each is dropped once written, so a retry writes only the rest.
        if out.scored:
            self.inserts += [("entity_scores", f) for f in sink.score_inserts(out, version)]
        if out.campaigns:
            self.inserts.append(("campaign_members", lambda: sink.write_members(out)))
        if out.actions:
            self.inserts.append(("enforcement_actions", lambda: sink.write_actions(out.actions)))
        if out.links:
            self.inserts += [("entity_links", f) for f in sink.link_inserts(out)]
        if dead:
            self.inserts.append(("dead_letters", lambda: sink.write_dead_letters(dead)))

    async def attempt(self) -> None:
        """Write what is left; raises `OutputError` for the first failure (after waiting for
        the rest of this attempt, so that whatever succeeded is not written again)."""
        work: list[Awaitable[None]] = []
        if self.forwards is not None:  # grouped once, then retried like any message
            parts = await self._block_partitions()
            for m in forwarded(self.forwards, parts, self.topics.by_block):
                if m.part == 0:
                    self.messages.append(m)
                    continue
                while len(self.later_parts) < m.part:
                    self.later_parts.append([])
                self.later_parts[m.part - 1].append(m)
            self.forwards = None
        if self.messages:
            work.append(self._send(self.messages))
        if self.inserts:
            work.append(self.clickhouse(self._insert))
        for result in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        while self.later_parts:  # each wave once the one before is acknowledged
            await self._send(self.later_parts[0])
            del self.later_parts[0]
        if self.progress is None and self.heartbeats:
            block_parts = await self._block_partitions()
            self.progress = []
            for value in self.heartbeats:
                by_block, summaries = self.topics.by_block, self.topics.summaries
                self.progress += [Message(by_block, value, None, p) for p in block_parts]
                self.progress.append(Message(summaries, value, None, 0))
        if self.progress:
            await self._send(self.progress)

    async def _block_partitions(self) -> list[int]:
        try:
            return sorted(await self.producer.partitions_for(self.topics.by_block))
        except Exception as exc:
            raise OutputError(f"Kafka metadata of {self.topics.by_block}", exc) from exc

    async def _send(self, queue: list[Message]) -> None:
        """Send the queue; leave in it (in order) what was not acknowledged."""
        producer = self.producer
        sent: list[tuple[Message, Awaitable[Any]]] = []
        error: tuple[str, BaseException] | None = None
        for m in queue:
            try:
                fut = await producer.send(m.topic, m.value, key=m.key, partition=m.partition)
            except Exception as exc:  # e.g. no metadata: keep this message and the rest
                error = (m.topic, exc)
                break
            sent.append((m, fut))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        failed = []
        for (m, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(m)
                if error is None:
                    error = (m.topic, result)
        queue[:] = failed + queue[len(sent) :]
        if error is not None:
            raise OutputError(f"Kafka send to {error[0]}", error[1])

    def _insert(self) -> None:
        """In a worker thread: one insert per table, each removed once it succeeded."""
        while self.inserts:
            table, write = self.inserts[0]
            try:
                write()
            except Exception as exc:
                raise OutputError(f"ClickHouse insert into {table}", exc) from exc
            del self.inserts[0]
