"""What the worker's stages do with the records they read, without any I/O.

Each function takes a batch of Kafka records (anything with ``offset`` and ``value``) and the
state it works on: `read_usage` adds to a `Produced` the dead letters and the events forwarded to
the block stage, `CampaignLinking` adds campaign scores and actions to a `DetectorOutput`. The
loops of `streams.stages` own the consumers, partition assignment, alignment, scoring order and
when to checkpoint; `streams.delivery` publishes, saves checkpoints and commits. These are tested
without a broker.

- `read_usage`: ``api-usage-events`` into an account partition's detector (the accounts stage).
- `read_forwards`: forwarded events and progress into a block partition's detector.
- `CampaignLinking`: account summaries from every account partition, linked a window at a time.
- `SuspectTable`: the accounts the accounts stage found suspect, for the block stage's members.

Account and block windows are not scored here: a stage scores the closed windows of all its
partitions in one order afterwards (`models.detector.score_in_order`). `CampaignLinking` scores
the campaigns of a window once every account partition's summaries of it are in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.campaign_scoring import CampaignScorer, merge
from models.columns import Chunk
from models.config import DetectorConfig
from models.detector import Detector
from models.keys import kafka_partitions
from models.outputs import DetectorOutput, LinkInput
from schemas.contract import EPOCH_MS_MIN
from schemas.ddl import SCORES_KEPT_DAYS
from schemas.dead_letters import DeadLetter
from schemas.validation import Memo, Rejection, parse_event
from streams import wire
from streams.metrics import Metrics

__all__ = [
    "LATE",
    "TOMBSTONE",
    "CampaignLinking",
    "Forward",
    "Limits",
    "Produced",
    "Record",
    "SuspectTable",
    "read_forwards",
    "read_usage",
    "skewed",
]

LATE = Rejection("late", "window already closed")
# A message with a key and no value (log compaction's delete marker) is not an event.
TOMBSTONE = Rejection("$", "a tombstone (a message without a value) is not a usage event")


class Record(Protocol):
    """What a processor reads of a Kafka record (aiokafka's ``ConsumerRecord`` has more)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Forward:
    """The events account partition ``source`` accepted in one batch, for the block stage: in
    order, as the chunks its windows hold, with each event's offset and the partition's
    progress once it was added (every later event belongs to a window ending after it)."""

    source: int
    chunks: list[Chunk]
    offsets: npt.NDArray[np.int64]
    progress: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        rows = sum(len(c) for c in self.chunks)
        if rows != self.offsets.size or rows != self.progress.size:
            raise ValueError(
                f"{rows} events forwarded with {self.offsets.size} offsets and "
                f"{self.progress.size} progress marks"
            )

    def __len__(self) -> int:
        return int(self.offsets.size)


@dataclass
class Produced:
    """What one batch of a stage produced, to be published before anything is checkpointed."""

    out: DetectorOutput = field(default_factory=DetectorOutput)
    dead: list[DeadLetter] = field(default_factory=list)
    # Accepted events for the block stage, per account partition; sent as columns, one message
    # per block partition and account partition, at publish time (`streams.publish.forwarded`).
    forwards: list[Forward] = field(default_factory=list)
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


#: ClickHouse drops rows of windows older than `SCORES_KEPT_DAYS` as they are written, so an
#: event further behind the clock than a day less is a dead letter by default.
MAX_PAST_SKEW_MS = (SCORES_KEPT_DAYS - 1) * 86_400_000


@dataclass(frozen=True)
class Limits:
    """What the accounts stage refuses before an event reaches a detector (see `EngineConfig`)."""

    max_message_bytes: int = 1024 * 1024
    max_future_skew_ms: int | None = 300_000
    max_past_skew_ms: int | None = MAX_PAST_SKEW_MS


_PRODUCED = "its Kafka record's timestamp (when it was produced, or appended)"
_UNKEYED = object()  # a record that carries no key attribute at all (not a Kafka record)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def skewed(
    ts_ms: int, received_ms: int, limits: Limits, when: str = "the time the worker received it"
) -> Rejection:
    """Why an event's time is refused, precisely: how far it is from ``received_ms``, ``when``.

    Examples
    --------
    >>> limits = Limits(max_past_skew_ms=86_400_000)
    >>> why = skewed(1_795_400_000_000, 1_795_392_000_000, limits)
    >>> print(why.field, why.problem.split(" the ")[0])
    ts 2026-11-23T02:13:20.000+00:00 is 8000000 ms ahead of
    >>> why.problem.split("; ")[1]
    'max_future_skew_ms is 300000'
    >>> print(skewed(1_700_000_000_000, 1_795_392_000_000, limits).problem.split("; ")[1])
    max_past_skew_ms is 86400000
    """
    ahead = ts_ms - received_ms
    where, limit, name = (
        ("ahead of", limits.max_future_skew_ms, "max_future_skew_ms")
        if ahead > 0
        else ("behind", limits.max_past_skew_ms, "max_past_skew_ms")
    )
    return Rejection(
        "ts",
        f"{_iso(ts_ms)} is {abs(ahead)} ms {where} {when} ({_iso(received_ms)}); {name} is {limit}",
    )


def read_usage(
    records: list[Any],
    partition: int,
    det: Detector,
    produced: Produced,
    *,
    topic: str,
    limits: Limits,
    received_ms: int,
    metrics: Metrics,
    partitions: int | None = None,
) -> None:
    """Usage events into an account partition's detector. Every message is added to a window,
    a duplicate, or dead-lettered: a tombstone, over the size limit (by reference), invalid,
    too far from the time received (or ahead of its record's timestamp, when it has one), or
    late. Accepted events are forwarded by IP block. Valid events not where the contract's key
    puts them (their key is not their account_id, or, given the topic's ``partitions``, Kafka's
    murmur2 partitioner would place that key on another partition) are counted
    (``metrics.miskeyed``): their account is scored in parts.

    Examples
    --------
    >>> from types import SimpleNamespace as Rec
    >>> good = b'{"event_id":"e1","ts":"2026-11-23T00:00:01Z","account_id":"a","ip":"10.0.0.1",'
    >>> good += b'"model":"m","input_tokens":5,"output_tokens":9}'
    >>> records = [Rec(offset=0, value=good), Rec(offset=1, value=good), Rec(offset=2, value=None),
    ...            Rec(offset=3, value=b"{not json")]
    >>> det, produced, m = Detector(kinds=("account",)), Produced(), Metrics()
    >>> read_usage(records, 0, det, produced, topic="api-usage-events", limits=Limits(),
    ...            received_ms=1_795_392_001_000, metrics=m)
    >>> m.events_in, m.duplicates, [d.source_offset for d in produced.dead]
    (4, 1, [2, 3])
    >>> [(f.source, f.offsets.tolist(), f.chunks[0].names("blocks")) for f in produced.forwards]
    [(0, [0], ['10.0.0.0/24'])]
    """
    max_bytes = limits.max_message_bytes
    future = limits.max_future_skew_ms
    newest = received_ms + future if future is not None else 1 << 62
    oldest = received_ms - limits.max_past_skew_ms if limits.max_past_skew_ms is not None else -1
    add = det.add
    forwards = produced.forwards
    dead = produced.dead
    stats = det.stats
    before = stats.duplicates, stats.late
    late = stats.late
    memo = Memo()  # addresses and timestamps this batch has worked out
    offsets: list[int] = []  # of the events accepted, and the partition's progress after each
    progress: list[int] = []
    miskeyed = 0
    keys: list[bytes] = []  # of valid events keyed by their account: on the right partition?
    det.collect_added()
    for r in records:
        if r.value is None:
            dead.append(DeadLetter(received_ms, topic, partition, r.offset, TOMBSTONE, b""))
            continue
        raw = r.value
        if len(raw) > max_bytes:
            size = f"message of {len(raw)} bytes exceeds max_message_bytes {max_bytes}"
            why = Rejection("$", size)
            dead.append(DeadLetter.by_reference(received_ms, topic, partition, r.offset, why, raw))
            continue
        parsed = parse_event(raw, memo)
        if isinstance(parsed, Rejection):
            dead.append(DeadLetter(received_ms, topic, partition, r.offset, parsed, raw))
            continue
        key = getattr(r, "key", _UNKEYED)
        if key is not _UNKEYED:
            if key is None or key != parsed.account_id.encode():
                miskeyed += 1
            else:
                keys.append(key)
        if not oldest <= parsed.ts_ms <= newest:
            why = skewed(parsed.ts_ms, received_ms, limits)
            dead.append(DeadLetter(received_ms, topic, partition, r.offset, why, raw))
            continue
        # Read from a backlog, an event from a gateway whose clock ran an hour fast is no longer
        # ahead of the worker's clock, but it is ahead of when it was produced (the record's
        # timestamp, if its producer set one): it would move the watermark and make the rest
        # of the backlog late.
        produced_ms = getattr(r, "timestamp", None)  # None or -1: none set
        if (
            future is not None
            and isinstance(produced_ms, int)
            and produced_ms >= EPOCH_MS_MIN  # earlier: none, or seconds taken for milliseconds
            and parsed.ts_ms - produced_ms > future
        ):
            why = skewed(parsed.ts_ms, produced_ms, limits, _PRODUCED)
            dead.append(DeadLetter(received_ms, topic, partition, r.offset, why, raw))
            continue
        if add(parsed):
            # Tagged with this partition's progress: every later event from it belongs to a
            # window ending after closed_before_ms (what the block stage's watermark needs),
            # and with its offset, by which the block stage knows an event sent again.
            offsets.append(r.offset)
            progress.append(det.closed_before_ms)
        elif stats.late != late:  # its window had closed (else: a duplicate, counted once)
            late = stats.late
            dead.append(DeadLetter(received_ms, topic, partition, r.offset, LATE, raw))
    if partitions and keys:
        placed = kafka_partitions(keys, partitions)
        miskeyed += int(np.count_nonzero(placed != partition))
    metrics.miskeyed += miskeyed
    chunks = det.take_added()
    if offsets:
        forwards.append(
            Forward(
                partition,
                chunks,
                np.array(offsets, dtype=np.int64),
                np.array(progress, dtype=np.int64),
            )
        )
    metrics.events_in += len(records)
    metrics.duplicates += stats.duplicates - before[0]
    metrics.late += stats.late - before[1]


def read_forwards(
    records: Iterable[Record],
    det: Detector,
    upstream: dict[int, int],
    sources: Iterable[int] | None,
    metrics: Metrics,
    added: dict[int, int],
) -> None:
    """Forwarded events into a block partition's detector, and each account partition's
    progress into ``upstream``; the partition's windows close at the slowest of ``sources`` (the
    account partitions), so however unevenly they progress, no event arrives late here.

    Messages: forwarded events (as columns or rows) and progress (`streams.wire`). Events sent
    as columns carry their offsets in their account partition: ``added`` keeps, per account
    partition, the highest offset added, and an event at or below it is one sent again by a
    replay of that partition (dropped, counted as a duplicate). An account partition forwards
    its events in the order of their offsets, and a replay forwards the same events again.

    Examples
    --------
    >>> from types import SimpleNamespace as Rec
    >>> e = b'["e1", 1000, "a", "10.0.0.1", "10.0.0.0/24", "m", 5, 9]'
    >>> records = [Rec(offset=0, value=b'{"v":2,"source":0,"closed_before":0,"events":[%s]}' % e),
    ...            Rec(offset=1, value=wire.progress(1, 60_000))]
    >>> det = Detector(kinds=("ip_block",), external_watermark=True)
    >>> upstream, m = {}, Metrics()
    >>> read_forwards(records, det, upstream, {0, 1}, m, {})
    >>> upstream, m.block_events_in, det.closed_before_ms    # partition 0 still holds it
    ({0: 0, 1: 60000}, 1, -1)
    >>> read_forwards([Rec(offset=2, value=wire.progress(0, 60_000))], det, upstream, {0, 1}, m, {})
    >>> det.closed_before_ms, det.pending_end_ms
    (60000, 60000)
    """
    add = det.add
    events = 0
    late_before = det.stats.late
    for r in records:
        if r.value is None:
            continue
        source, closed_before, forwarded, columns = wire.read_by_block(r.value)
        if closed_before > upstream.get(source, -1):
            upstream[source] = closed_before
        for e in forwarded:
            add(e)
        events += len(forwarded)
        if columns is not None:
            offsets, chunk = columns
            events += len(chunk)
            through = added.get(source, -1)
            new = offsets > through
            if not new.all():
                metrics.block_duplicates += len(chunk) - int(np.count_nonzero(new))
                chunk = chunk.take(np.flatnonzero(new))
            if len(chunk):
                det.add_chunk(chunk)
                added[source] = max(through, int(offsets.max()))
    metrics.block_events_in += events
    metrics.block_late += det.stats.late - late_before
    if sources:
        watermark = min(upstream.get(p, -1) for p in sources)
        if watermark > 0:
            det.close_through(watermark)


class CampaignLinking:
    """The campaign stage's state: account summaries waiting for every account partition, each
    partition's progress, and the campaign scorer. A window is linked once every account
    partition has scored it, from each partition's summaries of it (one message, or numbered parts
    of a busy window; a partition that replays after a restart sends them again: they replace the
    first copy, all of it, and summaries of a window already linked are dropped), merged in
    account order.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.scorer = CampaignScorer(config)
        # By window end, then by (account partition, part, parts) of its summaries of the window.
        self.pending: dict[int, dict[tuple[int, int, int], LinkInput]] = {}
        self.upstream: dict[int, int] = {}
        self.linked_through = -1  # every window ending at or before this is linked

    @classmethod
    def restored(cls, state: Any, config: DetectorConfig) -> CampaignLinking:
        """A checkpointed state: this class, or the tuple an earlier version saved
        (``(scorer, pending, upstream[, linked_through])``, pending lists of summaries).

        Examples
        --------
        >>> cfg = DetectorConfig()
        >>> old = (CampaignScorer(cfg), {60_000: ["x", "y"]}, {0: 60_000})
        >>> linking = CampaignLinking.restored(old, cfg)
        >>> linking.pending, linking.upstream, linking.linked_through
        ({60000: {(-1, 0, 1): 'x', (-2, 0, 1): 'y'}}, {0: 60000}, -1)
        """
        pending: dict[int, Any]
        if isinstance(state, cls):
            linking, pending = state, state.pending
        else:
            linking = cls(config)
            scorer, pending, upstream, *rest = state
            linking.scorer, linking.upstream = scorer, dict(upstream)
            linking.linked_through = int(rest[0]) if rest else -1
        # Summaries were a list per window, then keyed by partition alone, before they could
        # come in parts.
        linking.pending = {}
        for end, parts in pending.items():
            if not isinstance(parts, dict):
                parts = {-1 - i: x for i, x in enumerate(parts)}
            linking.pending[end] = {
                (k if isinstance(k, tuple) else (k, 0, 1)): x for k, x in parts.items()
            }
        return linking

    def handle(
        self,
        records: Iterable[Record],
        sources: Iterable[int] | None,
        version: str,
        metrics: Metrics,
        out: DetectorOutput,
    ) -> None:
        """Collect summaries and progress; link every window all account partitions scored."""
        for r in records:
            if r.value is None:
                continue
            progress, summaries = wire.read_summaries_topic(r.value)
            if progress is not None:
                source, closed_before = progress
                if closed_before > self.upstream.get(source, -1):
                    self.upstream[source] = closed_before
            elif summaries is not None:
                x, tag, (chunk, chunks) = summaries
                metrics.summaries_in += 1
                end = x.summaries.end_ms
                if end <= self.linked_through:
                    continue  # sent again by a partition replaying a window already linked
                parts = self.pending.setdefault(end, {})
                if tag is None:
                    parts[(-1 - len(parts), 0, 1)] = x
                    continue
                # A replay split in a different number of parts replaces all of the first copy.
                for stale in [k for k in parts if k[0] == tag and k[2] != chunks]:
                    del parts[stale]
                parts[(tag, chunk, chunks)] = x
        if not sources or not self.pending:
            return
        watermark = min(self.upstream.get(p, -1) for p in sources)
        for end in sorted(e for e in self.pending if e <= watermark):
            parts = self.pending.pop(end)
            merged = merge([parts[s] for s in sorted(parts)])
            out.extend(self.scorer.update(merged, version).out)
            self.linked_through = max(self.linked_through, end)


class SuspectTable:
    """Accounts found suspect by the accounts stage (`streams.wire.suspect` messages), kept for
    the block stage, which passes them to its detectors as data (`models.detector.MemberScores`):
    a block's action names as members the suspects seen behind it.

    Per account, its latest suspect window's end and score. A message without a value (a
    tombstone, if the topic is ever compacted) carries no suspect and is passed over.

    Examples
    --------
    >>> from types import SimpleNamespace as Rec
    >>> table = SuspectTable()
    >>> table.read([Rec(value=wire.suspect("a", 120_000, 0.999)),
    ...             Rec(value=wire.suspect("a", 60_000, 0.5)),     # older: ignored
    ...             Rec(value=wire.suspect("b", 60_000, 0.9)), Rec(value=None)])
    >>> table.latest
    {'a': (120000, 0.999), 'b': (60000, 0.9)}
    """

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self.latest)

    def read(self, records: Iterable[Record]) -> None:
        """Take suspect messages, in any order: an account keeps its latest window."""
        latest = self.latest
        for r in records:
            if r.value is None:
                continue
            account, end, score = wire.read_suspect(r.value)
            seen = latest.get(account)
            if seen is None or end >= seen[0]:
                latest[account] = (end, score)
