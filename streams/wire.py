"""The worker's internal messages, versioned: what one stage writes and another reads.

Every internal message is a JSON object with ``"v"``, the wire version. A reader accepts its own
version and the unversioned arrays written before versions existed; a message of another version
stops the stage with a line that says so, instead of being misread. Workers from before versions
cannot read these objects: upgrade every worker of a group together from those.

- **Forwarded events** (``distillguard.events-by-block``): ``{"v": 2, "source": p,
  "closed_before": t, "events": [event, ...]}``, each event the fields of `UsageEvent` in order.
  ``closed_before``: every later event from account partition ``p`` belongs to a window ending
  after ``t``.
- **Progress** (``events-by-block`` and ``account-summaries``): ``{"v": 2, "source": p,
  "closed_before": t}``: every window of partition ``p`` ending at or before ``t`` is closed
  (forwarded) and scored (its summaries sent).
- **Suspects** (``distillguard.suspects``): ``{"v": 2, "account": id, "end": t, "score": s}``.
- **Account summaries** keep their own versioned body (`models.campaign_scoring.encode`).

Examples
--------
>>> read_forwarded(forwarded_head(3, 60_000) + b'["e1"]' + FORWARDED_TAIL)
(3, 60000, [['e1']])
>>> read_forwarded(progress(3, 120_000))
(3, 120000, [])
>>> read_forwarded(b'[3, 60000, null, [["e1"]]]')      # written before versions
(3, 60000, [['e1']])
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

import orjson

from models.campaign_scoring import LinkInput, decode_message

__all__ = [
    "FORWARDED_TAIL",
    "WIRE_VERSION",
    "WireVersionError",
    "forwarded_head",
    "progress",
    "read_forwarded",
    "read_summaries_topic",
    "read_suspect",
    "suspect",
]

WIRE_VERSION = 2
FORWARDED_TAIL = b"]}"


class WireVersionError(ValueError):
    """An internal message this worker cannot read (written by a newer one)."""

    def __init__(self, version: Any) -> None:
        super().__init__(
            f"internal message of wire version {version!r} (this worker reads version "
            f"{WIRE_VERSION} and the unversioned arrays before it): another version of the "
            "worker wrote it; run one version of the worker"
        )


def _checked(value: bytes) -> Any:
    msg = orjson.loads(value)
    if isinstance(msg, dict) and msg.get("v") != WIRE_VERSION:
        raise WireVersionError(msg.get("v"))
    return msg


def forwarded_head(source: int, closed_before: int) -> bytes:
    """The start of a forwarded-events message; events (JSON arrays) joined by commas and
    `FORWARDED_TAIL` complete it (built as bytes: this is the worker's busiest message)."""
    return b'{"v":%d,"source":%d,"closed_before":%d,"events":[' % (
        WIRE_VERSION,
        source,
        closed_before,
    )


def progress(source: int, closed_before: int) -> bytes:
    """A progress message of account partition ``source``."""
    return b'{"v":%d,"source":%d,"closed_before":%d}' % (WIRE_VERSION, source, closed_before)


def read_forwarded(value: bytes) -> tuple[int, int, list[list[Any]]]:
    """(source partition, its progress, events) of a forwarded-events or progress message."""
    msg = _checked(value)
    if isinstance(msg, dict):
        return int(msg["source"]), int(msg["closed_before"]), msg.get("events") or []
    # before versions: [source, closed_before, event or null] or [source, closed_before, null,
    # [event, ...]]
    source, closed_before, event, *batched = msg
    events = [event] if event is not None else []
    for many in batched:
        events.extend(many)
    return int(source), int(closed_before), events


def read_summaries_topic(
    value: bytes,
) -> tuple[tuple[int, int] | None, tuple[LinkInput, int | None] | None]:
    """A message of the summaries topic: ``((source, progress), None)`` for progress,
    ``(None, (summaries, source))`` for an account partition's summaries of one window (their
    body has its own version, `models.campaign_scoring.encode`)."""
    msg = orjson.loads(value)
    if isinstance(msg, list):  # progress, before versions: [source, closed_before, null]
        return (int(msg[0]), int(msg[1])), None
    if "summaries" in msg:
        return None, decode_message(msg)
    if msg.get("v") != WIRE_VERSION:
        raise WireVersionError(msg.get("v"))
    return (int(msg["source"]), int(msg["closed_before"])), None


def suspect(account: str, end_ms: int, score: float) -> bytes:
    """An account that scored over the member threshold in the window ending at ``end_ms``."""
    return orjson.dumps({"v": WIRE_VERSION, "account": account, "end": end_ms, "score": score})


def read_suspect(value: bytes) -> tuple[str, int, float]:
    msg = _checked(value)
    if isinstance(msg, dict):
        return str(msg["account"]), int(msg["end"]), float(msg["score"])
    account, end, score = msg  # before versions
    return str(account), int(end), float(score)
