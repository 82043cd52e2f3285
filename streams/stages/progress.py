"""When a stage's windows may be scored and which partitions pause or close: pure decisions.

The stage's loop (`streams.stages.stage.Stage`) asks the consumer, once per batch, whether each
partition has records left to read (`backlog`), and hands that to these functions with the
partitions' detectors. Nothing here does I/O, so each decision is tested without a broker.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Part:
    ...     closed_before_ms: int
    ...     has_open_windows: bool
    ...     max_event_ms: int
    >>> parts = {0: Part(60_000, True, 70_000), 1: Part(0, False, 10_000), 2: Part(0, True, 5_000)}
    >>> todo = backlog(parts, {0: 5, 1: 9}, {}, {0: 9, 1: 9, 2: None}.get)
    >>> todo
    {0: True, 1: False, 2: None}
    >>> frontier(parts, todo)  # partition 2 is not heard from yet: it holds everyone
    0
    >>> sorted(ahead(parts, todo, max_skew_ms=30_000))
    [0]
    >>> quiet(parts, todo, {2: 0.0}, now=100.0, idle_seconds=60.0)
    []
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

__all__ = ["Backlog", "Partition", "ahead", "backlog", "frontier", "quiet"]

# Per partition: whether it has records left to read (None: not known, no fetch answered yet).
Backlog = Mapping[int, bool | None]


class Partition(Protocol):
    """What these decisions read of a partition's detector (`models.detector.Detector`)."""

    @property
    def closed_before_ms(self) -> int: ...

    @property
    def has_open_windows(self) -> bool: ...

    @property
    def max_event_ms(self) -> int: ...


def backlog(
    partitions: Iterable[int],
    read: Mapping[int, int],
    position: Mapping[int, int],
    highwater: Callable[[int], int | None],
) -> dict[int, bool | None]:
    """Whether each partition has records left to read: its next offset to read (the larger of
    what was read and the consumer's position, which is past the last record when the log ends
    in records a consumer never returns) against the highwater of its last fetch."""
    out: dict[int, bool | None] = {}
    for p in partitions:
        high = highwater(p)
        out[p] = None if high is None else max(read.get(p, 0), position.get(p, 0)) < high
    return out


def frontier(parts: Mapping[int, Partition], todo: Backlog) -> int | None:
    """The window end every partition that can still close one has closed (None: no bound).

    A partition with nothing to read and no open window closes nothing until new events come,
    and holds nobody back. A partition not heard from yet holds everyone.
    """
    bounds = [
        det.closed_before_ms
        for p, det in parts.items()
        if det.has_open_windows or todo.get(p) is not False
    ]
    return min(bounds) if bounds else None


def ahead(parts: Mapping[int, Partition], todo: Backlog, max_skew_ms: int) -> set[int]:
    """The partitions to pause: more than ``max_skew_ms`` of event time ahead of the slowest one
    that may still have records to read (watermark alignment). A partition with nothing to read
    holds nobody back; one not heard from yet (no event time) holds the others until its first
    fetch answers."""
    behind = [det.max_event_ms for p, det in parts.items() if todo.get(p) is not False]
    if not behind:
        return set()
    floor = min(behind)
    return {p for p, det in parts.items() if det.max_event_ms > floor + max_skew_ms}


def quiet(
    parts: Mapping[int, Partition],
    todo: Backlog,
    last_seen: Mapping[int, float],
    now: float,
    idle_seconds: float,
) -> list[int]:
    """The partitions whose open windows may be closed now: nothing left to read, and no record
    for ``idle_seconds`` (0: as soon as they are caught up). A partition with a backlog, or not
    heard from yet, never is: its next events would land in windows closed too early."""
    return [
        p
        for p, det in parts.items()
        if det.has_open_windows
        and todo.get(p) is False
        and (idle_seconds <= 0 or now - last_seen.get(p, now) >= idle_seconds)
    ]
