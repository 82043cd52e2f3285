"""A rejected message, as it goes to ``api-usage-events.dlq`` and the ``dead_letters`` table."""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson

from schemas.validation import Rejection

__all__ = ["DeadLetter"]


class DeadLetter(NamedTuple):
    """The original bytes, why they were refused, and where they came from.

    ``source`` is a topic name (or a file path for ``score``); ``source_offset`` is the Kafka
    offset (or the line number).

    Examples
    --------
    >>> d = DeadLetter(1795392000000, "api-usage-events", 3, 42, Rejection("ts", "missing"), b"{}")
    >>> sorted(orjson.loads(d.to_json()))[:4]
    ['field', 'raw', 'raw_base64', 'reason']
    """

    received_ms: int
    source: str
    source_partition: int
    source_offset: int
    rejection: Rejection
    raw: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.rejection.field,
            "reason": str(self.rejection),
            "source": self.source,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "received_ms": self.received_ms,
            # The exact bytes for replay, and a readable copy for people.
            "raw_base64": base64.b64encode(self.raw).decode(),
            "raw": self.raw.decode("utf-8", "replace"),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())
