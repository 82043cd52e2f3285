"""The worker's internal messages, versioned: what one stage writes and another reads.

Each message is defined once, as a msgspec Struct whose tag ``"v"`` is the wire version: readers
decode bytes straight into it (events into `UsageEvent`s, checked field by field in C), and
writers encode it. A reader accepts its own version and the unversioned arrays written
before versions existed; a message of another version stops the stage with a line that says so,
instead of being misread. Workers from before versions cannot read these objects: upgrade every
worker of a group together from those.

- `Forwarded` (``distillguard.events-by-block``): ``{"v": 2, "source": p, "closed_before": t,
  "events": [event, ...]}``, each event the fields of `UsageEvent` in order (what workers before
  `ForwardedColumns` wrote; still read). ``closed_before``:
  every later event from account partition ``p`` belongs to a window ending after ``t``.
  Without ``events`` it is a **progress** message (on ``events-by-block`` and
  ``account-summaries``): every window of partition ``p`` ending at or before ``t`` is closed
  (forwarded) and scored (its summaries sent).
- `ForwardedColumns` (``distillguard.events-by-block``, MessagePack): ``{"v": 3, "source": p,
  "closed_before": t, "offsets": ..., "columns": {...}}``, the accepted events of one batch of
  account partition ``p`` for one block partition as the columns of a `models.columns.Chunk`
  (`Chunk.to_buffers`), with each event's offset in ``p``. What the accounts stage writes: the
  block stage adds the columns as they are, and drops the events at offsets of ``p`` it has
  added already (a replay after a restart sends them again), instead of parsing, windowing and
  checking the id of each event a second time.
- `Suspect` (``distillguard.suspects``): ``{"v": 2, "account": id, "end": t, "score": s}``.
- **Account summaries** keep their own versioned body, derived from the fields of
  `models.campaigns.AccountSummaries` (`models.campaign_scoring.encode`).

Examples
--------
>>> row = b'["e1",60000,"a","10.0.0.1","10.0.0.0/24","m",5,7]'
>>> rows = b'{"v":2,"source":3,"closed_before":60000,"events":[' + row + b']}'
>>> read_forwarded(rows)[2][0].account_id      # rows, as workers before columns wrote them
'a'
>>> read_forwarded(progress(3, 120_000))
(3, 120000, [])
>>> read_forwarded(b'[3, 60000, null, [' + row + b']]')[2][0].event_id    # before versions
'e1'
>>> read_suspect(suspect("acct-1", 60_000, 0.9991))
('acct-1', 60000, 0.9991)
>>> try:
...     read_forwarded(b'{"v": 9, "source": 0, "closed_before": 0}')
... except WireVersionError as exc:
...     print(str(exc).split(" (")[0])
internal message of wire version 9
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from models.campaign_scoring import LinkInput, decode_message, encode, split
from models.columns import Chunk
from models.events import UsageEvent

__all__ = [
    "COLUMNS_VERSION",
    "WIRE_VERSION",
    "Columns",
    "Forwarded",
    "ForwardedColumns",
    "Suspect",
    "WireVersionError",
    "forwarded_columns",
    "progress",
    "read_by_block",
    "read_forwarded",
    "read_summaries_topic",
    "read_suspect",
    "summaries",
    "suspect",
]

WIRE_VERSION = 2
#: The version of `ForwardedColumns`, the one MessagePack message.
COLUMNS_VERSION = 3
#: The largest account summaries message: a partition's summaries of a busy window are sent in
#: as many messages as it takes (the producer and the broker refuse messages past their limits).
SUMMARIES_MAX_BYTES = 1024 * 1024


class Forwarded(msgspec.Struct, tag_field="v", tag=WIRE_VERSION, omit_defaults=True):
    """Accepted events of account partition ``source`` for the block stage, or (no events) its
    progress: every window ending at or before ``closed_before`` is closed."""

    source: int
    closed_before: int
    events: list[UsageEvent] = []


class ForwardedColumns(msgspec.Struct, tag_field="v", tag=COLUMNS_VERSION):
    """Accepted events of account partition ``source`` for one block partition, as columns:
    ``offsets`` (int64, little-endian) are their offsets in ``source``, ``columns`` a
    `models.columns.Chunk`'s buffers; every later event of ``source`` belongs to a window
    ending after ``closed_before``."""

    source: int
    closed_before: int
    offsets: bytes
    columns: dict[str, bytes]


class Columns(NamedTuple):
    """Forwarded events as read: each one's offset in its account partition, and the events."""

    offsets: npt.NDArray[np.int64]
    chunk: Chunk


class Suspect(msgspec.Struct, tag_field="v", tag=WIRE_VERSION):
    """An account that scored over the member threshold in the window ending at ``end``."""

    account: str
    end: int
    score: float


# Unversioned arrays (before versions) decode as lists and are read positionally.
_FORWARDED = msgspec.json.Decoder(Forwarded | list[Any])
_SUSPECT = msgspec.json.Decoder(Suspect | list[Any])
_ENCODE = msgspec.json.Encoder()
_COLUMNS = msgspec.msgpack.Decoder(ForwardedColumns)
_PACK = msgspec.msgpack.Encoder()


class WireVersionError(ValueError):
    """An internal message this worker cannot read (written by a newer one)."""

    def __init__(self, version: Any) -> None:
        super().__init__(
            f"internal message of wire version {version!r} (this worker reads versions "
            f"{WIRE_VERSION} and {COLUMNS_VERSION} and the unversioned arrays before them): "
            "another version of the "
            "worker wrote it; run one version of the worker"
        )


def _decode(decoder: msgspec.json.Decoder[Any], value: bytes) -> Any:
    # msgspec takes a lone Struct's tag as optional; every writer puts "v" first, so anything else
    # that is an object is looked at closely (an object without "v" is not of this version).
    if not value.startswith(b'{"v":') and value.lstrip()[:1] == b"{":
        msg = orjson.loads(value)
        if msg.get("v") != WIRE_VERSION:
            raise WireVersionError(msg.get("v"))
    try:
        return decoder.decode(value)
    except msgspec.ValidationError:
        msg = orjson.loads(value)
        if isinstance(msg, dict) and msg.get("v") != WIRE_VERSION:
            raise WireVersionError(msg.get("v")) from None
        raise


def progress(source: int, closed_before: int) -> bytes:
    """A progress message of account partition ``source``."""
    return _ENCODE.encode(Forwarded(source, closed_before))


def forwarded_columns(
    source: int, closed_before: int, offsets: npt.NDArray[np.int64], chunk: Chunk
) -> bytes:
    """A `ForwardedColumns` message: ``chunk``'s events, at ``offsets`` of account partition
    ``source``.

    Examples
    --------
    >>> import numpy as np
    >>> e = UsageEvent("e1", 60_000, "a", "10.0.0.1", "10.0.0.0/24", "m", 5, 7)
    >>> msg = forwarded_columns(3, 60_000, np.array([41]), Chunk.from_rows([e]))
    >>> source, after, events, columns = read_by_block(msg)
    >>> source, after, events, columns.offsets.tolist(), columns.chunk.ts.tolist()
    (3, 60000, [], [41], [60000])
    """
    body = ForwardedColumns(
        source, closed_before, np.ascontiguousarray(offsets, "<i8").tobytes(), chunk.to_buffers()
    )
    return _PACK.encode(body)


def read_by_block(value: bytes) -> tuple[int, int, list[UsageEvent], Columns | None]:
    """(source partition, its progress, events as rows, events as columns) of a message of
    ``events-by-block``: `ForwardedColumns`, or what `read_forwarded` reads.

    A message that claims to be columns and is not (columns of unequal length, codes past their
    names, offsets not one per event) raises ValueError, as a malformed row does.
    """
    if not value[:1] or value[0] < 0x80:  # JSON: an object or an array
        return (*read_forwarded(value), None)
    try:
        msg = _COLUMNS.decode(value)
    except msgspec.ValidationError:
        other = msgspec.msgpack.decode(value)
        if isinstance(other, dict) and other.get("v") != COLUMNS_VERSION:
            raise WireVersionError(other.get("v")) from None
        raise
    chunk = Chunk.from_buffers(msg.columns)
    offsets = np.frombuffer(msg.offsets, dtype="<i8").astype(np.int64)
    if offsets.size != len(chunk):
        raise ValueError(f"{offsets.size} offsets for {len(chunk)} forwarded events")
    return msg.source, msg.closed_before, [], Columns(offsets, chunk)


def read_forwarded(value: bytes) -> tuple[int, int, list[UsageEvent]]:
    """(source partition, its progress, events) of a forwarded-events or progress message."""
    msg = _decode(_FORWARDED, value)
    if isinstance(msg, Forwarded):
        return msg.source, msg.closed_before, msg.events
    # before versions: [source, closed_before, event or null] or [source, closed_before, null,
    # [event, ...]]
    source, closed_before, event, *batched = msg
    events = [event] if event is not None else []
    for many in batched:
        events.extend(many)
    return int(source), int(closed_before), [UsageEvent(*e) for e in events]


def summaries(x: LinkInput, source: int, max_bytes: int = SUMMARIES_MAX_BYTES) -> list[bytes]:
    """Account partition ``source``'s summaries of one window, in messages of at most
    ``max_bytes``: one if it fits, else parts numbered ``chunk`` of ``chunks`` (a partition
    replaying the window sends them again, and they replace the first copy however it was cut:
    `streams.processors.CampaignLinking`).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import fields
    >>> from models.campaigns import AccountSummaries
    >>> n = 1000
    >>> cols = {f.name: np.zeros(n, int) for f in fields(AccountSummaries)}
    >>> cols.update(end_ms=60_000, ids=[f"acct-{i:04d}" for i in range(n)],
    ...             block_start=np.zeros(n + 1, int), prompt_start=np.zeros(n + 1, int),
    ...             blocks=np.zeros(0, int), block_requests=np.zeros(0, int),
    ...             prompts=np.zeros(0, int), prompt_ms=np.zeros(0, int),
    ...             hits=np.zeros((n, 6)), trials=np.zeros((n, 6)))
    >>> x = LinkInput(AccountSummaries(**cols), np.zeros(n), np.ones(n, bool), np.zeros(6))
    >>> len(summaries(x, 3))
    1
    >>> parts = summaries(x, 3, max_bytes=20_000)
    >>> len(parts), all(len(m) <= 20_000 for m in parts)
    (10, True)
    >>> [read_summaries_topic(m)[1][1:] for m in parts][:2]
    [(3, (0, 10)), (3, (1, 10))]
    """
    whole = encode(x, source=source)
    if len(whole) <= max_bytes:
        return [whole]
    parts = 2 * -(-len(whole) // max_bytes)
    while True:
        per = -(-len(x.summaries.ids) // parts)
        pieces = split(x, per)
        out = [encode(p, source=source, chunk=i, chunks=len(pieces)) for i, p in enumerate(pieces)]
        if all(len(m) <= max_bytes for m in out) or per == 1:
            return out
        parts *= 2


def read_summaries_topic(
    value: bytes,
) -> tuple[tuple[int, int] | None, tuple[LinkInput, int | None, tuple[int, int]] | None]:
    """A message of the summaries topic: ``((source, progress), None)`` for progress,
    ``(None, (summaries, source, (chunk, chunks)))`` for part ``chunk`` of ``chunks`` of an
    account partition's summaries of one window (their body has its own version,
    `models.campaign_scoring.encode`; ``(0, 1)`` when they fit in one message, see
    `summaries`)."""
    msg = orjson.loads(value)
    if isinstance(msg, list):  # progress, before versions: [source, closed_before, null]
        return (int(msg[0]), int(msg[1])), None
    if "summaries" in msg:
        x, source = decode_message(msg)
        return None, (x, source, (int(msg.get("chunk", 0)), int(msg.get("chunks", 1))))
    if msg.get("v") != WIRE_VERSION:
        raise WireVersionError(msg.get("v"))
    done = msgspec.convert(msg, Forwarded)
    return (done.source, done.closed_before), None


def suspect(account: str, end_ms: int, score: float) -> bytes:
    """An account that scored over the member threshold in the window ending at ``end_ms``."""
    return _ENCODE.encode(Suspect(account, end_ms, score))


def read_suspect(value: bytes) -> tuple[str, int, float]:
    msg = _decode(_SUSPECT, value)
    if isinstance(msg, Suspect):
        return msg.account, msg.end, msg.score
    account, end, score = msg  # before versions
    return str(account), int(end), float(score)
