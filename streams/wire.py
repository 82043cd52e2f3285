"""The worker's internal messages, versioned: what one stage writes and another reads.

Each message is defined once, as a msgspec Struct whose tag ``"v"`` is the wire version: readers
decode bytes straight into it (events into `UsageEvent`s, checked field by field in C), and
writers encode it, or, for the busiest message, build its bytes by hand in the same shape (a test
checks the two agree). A reader accepts its own version and the unversioned arrays written
before versions existed; a message of another version stops the stage with a line that says so,
instead of being misread. Workers from before versions cannot read these objects: upgrade every
worker of a group together from those.

- `Forwarded` (``distillguard.events-by-block``): ``{"v": 2, "source": p, "closed_before": t,
  "events": [event, ...]}``, each event the fields of `UsageEvent` in order. ``closed_before``:
  every later event from account partition ``p`` belongs to a window ending after ``t``.
  Without ``events`` it is a **progress** message (on ``events-by-block`` and
  ``account-summaries``): every window of partition ``p`` ending at or before ``t`` is closed
  (forwarded) and scored (its summaries sent).
- `Suspect` (``distillguard.suspects``): ``{"v": 2, "account": id, "end": t, "score": s}``.
- **Account summaries** keep their own versioned body, derived from the fields of
  `models.campaigns.AccountSummaries` (`models.campaign_scoring.encode`).

Examples
--------
>>> row = b'["e1",60000,"a","10.0.0.1","10.0.0.0/24","m",5,7]'
>>> read_forwarded(forwarded_head(3, 60_000) + row + FORWARDED_TAIL)[2][0].account_id
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

from typing import Any

import msgspec
import orjson

from models.campaign_scoring import LinkInput, decode_message, encode, split
from models.events import UsageEvent

__all__ = [
    "FORWARDED_TAIL",
    "WIRE_VERSION",
    "Forwarded",
    "Suspect",
    "WireVersionError",
    "forwarded_head",
    "progress",
    "read_forwarded",
    "read_summaries_topic",
    "read_suspect",
    "summaries",
    "suspect",
]

WIRE_VERSION = 2
FORWARDED_TAIL = b"]}"
#: The largest account summaries message: a partition's summaries of a busy window are sent in
#: as many messages as it takes (the producer and the broker refuse messages past their limits).
SUMMARIES_MAX_BYTES = 1024 * 1024


class Forwarded(msgspec.Struct, tag_field="v", tag=WIRE_VERSION, omit_defaults=True):
    """Accepted events of account partition ``source`` for the block stage, or (no events) its
    progress: every window ending at or before ``closed_before`` is closed."""

    source: int
    closed_before: int
    events: list[UsageEvent] = []


class Suspect(msgspec.Struct, tag_field="v", tag=WIRE_VERSION):
    """An account that scored over the member threshold in the window ending at ``end``."""

    account: str
    end: int
    score: float


# Unversioned arrays (before versions) decode as lists and are read positionally.
_FORWARDED = msgspec.json.Decoder(Forwarded | list[Any])
_SUSPECT = msgspec.json.Decoder(Suspect | list[Any])
_ENCODE = msgspec.json.Encoder()


class WireVersionError(ValueError):
    """An internal message this worker cannot read (written by a newer one)."""

    def __init__(self, version: Any) -> None:
        super().__init__(
            f"internal message of wire version {version!r} (this worker reads version "
            f"{WIRE_VERSION} and the unversioned arrays before it): another version of the "
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


def forwarded_head(source: int, closed_before: int) -> bytes:
    """The start of a `Forwarded` message; events (`UsageEvent`s as JSON arrays) joined by
    commas and `FORWARDED_TAIL` complete it (built as bytes: this is the worker's busiest
    message, and the events are already serialised when it is assembled)."""
    return b'{"v":%d,"source":%d,"closed_before":%d,"events":[' % (
        WIRE_VERSION,
        source,
        closed_before,
    )


def progress(source: int, closed_before: int) -> bytes:
    """A progress message of account partition ``source``."""
    return _ENCODE.encode(Forwarded(source, closed_before))


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
