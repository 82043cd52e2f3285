"""A rejected message, as it goes to ``api-usage-events.dlq`` and the ``dead_letters`` table."""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson

from schemas.validation import Rejection

__all__ = ["REFERENCE_BYTES", "DeadLetter"]

#: How much of a message a dead letter keeps when it refers to the message instead of copying
#: it (a message over the size limit, or one whose copy would not fit the dead-letter topic).
REFERENCE_BYTES = 256


class DeadLetter(NamedTuple):
    """The original bytes, why they were refused, and where they came from.

    ``source`` is a topic name (or a file path for ``score``); ``source_offset`` is the Kafka
    offset (or the line number). ``size`` is the length of the original message when ``raw``
    holds only its first bytes (a dead letter *by reference*: the message stays on its topic at
    ``source_partition``/``source_offset``); -1 when ``raw`` is the whole message.

    Examples
    --------
    >>> d = DeadLetter(1795392000000, "api-usage-events", 3, 42, Rejection("ts", "missing"), b"{}")
    >>> sorted(orjson.loads(d.to_json()))[:4]
    ['field', 'raw', 'raw_base64', 'reason']
    >>> d.truncated, d.to_dict()["size"]
    (False, 2)
    >>> big = DeadLetter.by_reference(0, "t", 0, 7, Rejection("$", "too big"), b"x" * 5_000)
    >>> big.truncated, len(big.raw), big.to_dict()["size"]
    (True, 256, 5000)
    >>> len(d._replace(raw=b"\\x01" * 2_000).to_json(max_bytes=4_000)) < 4_000  # by reference
    True
    """

    received_ms: int
    source: str
    source_partition: int
    source_offset: int
    rejection: Rejection
    raw: bytes
    size: int = -1

    @classmethod
    def by_reference(
        cls,
        received_ms: int,
        source: str,
        source_partition: int,
        source_offset: int,
        rejection: Rejection,
        raw: bytes,
        keep: int = REFERENCE_BYTES,
    ) -> DeadLetter:
        """A dead letter that keeps the first ``keep`` bytes of the message and its size."""
        return cls(
            received_ms, source, source_partition, source_offset, rejection, raw[:keep], len(raw)
        )

    @property
    def truncated(self) -> bool:
        """True when ``raw`` is only the start of the message (see `by_reference`)."""
        return self.size > len(self.raw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.rejection.field,
            "reason": str(self.rejection),
            "source": self.source,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "received_ms": self.received_ms,
            # The size of the original message, and whether raw holds only its start (the rest
            # stays on the source topic at source_partition/source_offset).
            "size": self.size if self.size >= 0 else len(self.raw),
            "truncated": self.truncated,
            # The exact bytes for replay, and a readable copy for people.
            "raw_base64": base64.b64encode(self.raw).decode(),
            "raw": self.raw.decode("utf-8", "replace"),
        }

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The topic's JSON; with ``max_bytes``, by reference whenever a whole copy (base64 and
        readable text of the message, up to ~7.5 times its size) would be longer."""
        doc = orjson.dumps(self.to_dict())
        if max_bytes is not None and len(doc) > max_bytes and not self.truncated:
            size = self.size if self.size >= 0 else len(self.raw)
            doc = orjson.dumps(self._replace(raw=self.raw[:REFERENCE_BYTES], size=size).to_dict())
        return doc
