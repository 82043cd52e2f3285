"""Event-time tumbling windows closed by a watermark, buffered column-wise.

Every event is appended to the buffer of the window its timestamp falls in; nothing per entity
happens per event. When the watermark (highest event time seen minus the allowed lateness) passes
a window's end, the whole window is handed over as numpy columns, so the features of every account
and IP block in it are computed in one vectorised pass (`models.features`). This is what lets the
core keep up with peak traffic in Python: per-event work is a dedup check and a list append.

Late events (their window already closed) are counted, per window they missed, never silently
dropped; duplicate ``event_id`` s inside an open window are counted and ignored, so a redelivered
message cannot be counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.columns import CHUNK, Chunk, ClosedWindow
from models.events import UsageEvent
from models.seen import SeenIds

__all__ = ["CHUNK", "ClosedWindow", "WindowStats", "Windower"]

# Chunks and closed windows pickled before `models.columns` name these.
_Chunk = Chunk


@dataclass(slots=True)
class _OpenWindow:
    rows: list[UsageEvent] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    # The window's event ids, for duplicates: without a string per event (`models.seen`).
    ids: SeenIds = field(default_factory=SeenIds)
    # Events buffered a chunk at a time (`Windower.add_chunk`), without their ids.
    taken: int = 0

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        object.__setattr__(self, "taken", 0)  # a window pickled before chunks were added whole
        for name, value in state[1].items():
            # A window pickled before `SeenIds` holds its event ids in a set.
            object.__setattr__(
                self, name, SeenIds.of(value) if name == "ids" and isinstance(value, set) else value
            )
        # A window pickled while events were kept as rows: they come before any added since.
        if self.rows:
            self.chunks.append(Chunk.from_rows(self.rows))
            self.rows = []


#: A window's chunks of fewer events than this are merged once `SMALL_RUN` of them follow one
#: another: a worker reading a few events a batch would otherwise keep a chunk (a dozen arrays)
#: for every few events of the window.
SMALL = CHUNK // 16
SMALL_RUN = 32


def _append(win: _OpenWindow, chunk: Chunk) -> None:
    """Add ``chunk`` to the window; a run of small chunks at its end becomes one."""
    chunks = win.chunks
    chunks.append(chunk)
    if len(chunk) >= SMALL or len(chunks) < SMALL_RUN:
        return
    run = 0
    while run < len(chunks) and len(chunks[-1 - run]) < SMALL:
        run += 1
    if run >= SMALL_RUN:
        chunks[-run:] = [Chunk.concat(chunks[-run:])]


@dataclass(slots=True)
class WindowStats:
    """Counters a worker exports: what came in and what did not make it into a window."""

    events: int = 0
    duplicates: int = 0
    late: int = 0
    windows_closed: int = 0


class Windower:
    """Assigns events to tumbling event-time windows and closes them by watermark.

    Parameters
    ----------
    window_ms
        Window length in milliseconds.
    allowed_lateness_ms
        How far behind the highest event time an event may arrive and still be counted in its
        window. A window ``[s, s + window_ms)`` closes once the watermark
        ``max_event_time - allowed_lateness_ms`` reaches ``s + window_ms``.
    external_watermark
        If true, events never close windows; the owner calls `close_through` with a watermark
        it learned elsewhere (the worker's IP-block stage: the slowest upstream partition's).

    Examples
    --------
    >>> from models.events import UsageEvent
    >>> w = Windower(window_ms=60_000, allowed_lateness_ms=5_000)
    >>> def ev(i, t):
    ...     return UsageEvent(f"e{i}", t, "acct", "10.0.0.1", "10.0.0.0/24", "m", 10, 20)
    >>> for i, t in enumerate([1_000, 2_000, 2_000, 61_000]):
    ...     _ = w.add(ev(i, t))
    >>> w.add(ev(1, 2_000))         # redelivery of e1: ignored
    False
    >>> w.add(ev(4, 66_000))        # the watermark passes 60 s: window [0, 60 s) closes
    True
    >>> [(c.start_ms, c.n_events) for c in w.advance()]
    [(0, 3)]
    >>> w.add(ev(9, 30_000))        # its window has closed: counted as late
    False
    >>> w.stats
    WindowStats(events=7, duplicates=1, late=1, windows_closed=1)
    >>> [(c.start_ms, c.n_events) for c in w.flush()]
    [(60000, 2)]
    """

    def __init__(
        self,
        window_ms: int = 60_000,
        allowed_lateness_ms: int = 10_000,
        external_watermark: bool = False,
    ) -> None:
        if window_ms <= 0 or allowed_lateness_ms < 0:
            raise ValueError("window_ms must be > 0 and allowed_lateness_ms >= 0")
        self.window_ms = window_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.external_watermark = external_watermark
        self.max_event_ms = -1
        self.closed_before_ms = -1  # every window ending at or before this is closed
        self.stats = WindowStats()
        self._open: dict[int, _OpenWindow] = {}
        self._ready: list[ClosedWindow] = []  # closed by the watermark, not yet handed over
        self._next_end = np.iinfo(np.int64).max  # end of the oldest open window
        # Events added and not yet in a window's columns, with their windows' starts: turned
        # into one chunk (`_settle`) at `CHUNK` events, before a window closes, and when the
        # events added are handed over (`take_added`).
        self._pending: list[UsageEvent] = []
        self._pending_start: list[int] = []
        self._added: list[Chunk] | None = None  # collecting what `take_added` hands over

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A windower pickled before events were settled a chunk at a time has none pending.
        self.__dict__.update({"_pending": [], "_pending_start": [], **state, "_added": None})

    def __getstate__(self) -> dict[str, Any]:
        self._settle()  # a checkpoint holds columns, not the events as objects
        return {**self.__dict__, "_added": None}

    @property
    def watermark_ms(self) -> int:
        return self.max_event_ms - self.allowed_lateness_ms

    def add(self, event: UsageEvent) -> bool:
        """Buffer one event; False if it was a duplicate or late (and counted as such).

        A window closes as soon as an event moves the watermark past its end, so which events a
        window holds depends only on the order of events, never on how they were batched: a
        replay from a checkpoint rebuilds exactly the same windows.
        """
        self.stats.events += 1
        ts = event.ts_ms
        start = ts - ts % self.window_ms
        if start < self.closed_before_ms:
            self.stats.late += 1
            return False
        win = self._open.get(start)
        if win is None:
            win = self._open[start] = _OpenWindow()
            self._next_end = min(self._next_end, start + self.window_ms)
        if not win.ids.add(event.event_id):
            self.stats.duplicates += 1
            return False
        self._pending.append(event)
        self._pending_start.append(start)
        if len(self._pending) >= CHUNK:
            self._settle()
        if ts > self.max_event_ms:
            self.max_event_ms = ts
            if ts - self.allowed_lateness_ms >= self._next_end and not self.external_watermark:
                self._ready.extend(self._close_until(ts - self.allowed_lateness_ms))
        return True

    def collect_added(self) -> None:
        """Keep, from now until `take_added`, the columns of every event added."""
        self._settle()
        self._added = []

    def take_added(self) -> list[Chunk]:
        """The events added since `collect_added`, in the order they were added, as chunks
        (the same columns the windows hold); collecting stops.

        >>> from models.events import UsageEvent
        >>> w = Windower(window_ms=60_000, allowed_lateness_ms=0)
        >>> def ev(i, t):
        ...     return UsageEvent(f"e{i}", t, "acct", "10.0.0.1", "10.0.0.0/24", "m", 10, 20)
        >>> w.collect_added()
        >>> [w.add(ev(i, t)) for i, t in enumerate([1_000, 2_000, 61_000, 1_500, 62_000])]
        [True, True, True, False, True]
        >>> [c.ts.tolist() for c in w.take_added()]   # cut where the first window closed
        [[1000, 2000, 61000], [62000]]
        >>> [(c.start_ms, c.ts.tolist()) for c in w.advance()]
        [(0, [1000, 2000])]
        """
        self._settle()
        added, self._added = self._added or [], None
        return added

    def _settle(self) -> None:
        """The pending events into their windows' columns: one chunk, cut by window."""
        if not self._pending:
            return
        chunk = Chunk.from_rows(self._pending)
        starts = np.array(self._pending_start, dtype=np.int64)
        self._pending, self._pending_start = [], []
        if self._added is not None:
            self._added.append(chunk)
        self._spread(chunk, starts)

    def _spread(self, chunk: Chunk, starts: npt.NDArray[np.int64], ids: bool = True) -> None:
        """Each of ``chunk``'s rows into the window starting at its ``starts``, opened if need
        be: the chunk as it is when all fall in one, else a part per window they fall in (never
        a step per window between them). ``ids``: the windows hold these events' ids already
        (added one by one), else they count them as taken without."""
        first, last = int(starts.min()), int(starts.max())
        for start in [first] if first == last else np.unique(starts).tolist():
            win = self._open.get(start)
            if win is None:
                win = self._open[start] = _OpenWindow()
                self._next_end = min(self._next_end, start + self.window_ms)
            part = chunk if first == last else chunk.take(np.flatnonzero(starts == start))
            _append(win, part)
            if not ids:
                win.taken += len(part)

    def add_chunk(self, chunk: Chunk) -> int:
        """Buffer a chunk of events at once; how many were taken (the others are counted late).

        For a windower fed by an external watermark (its windows close only through
        `close_through`), whose events come deduplicated already: an event whose window has
        closed is counted late, every other is buffered, without an id check.

        >>> from models.events import UsageEvent
        >>> w = Windower(window_ms=60_000, external_watermark=True)
        >>> rows = [UsageEvent(f"e{i}", t, "a", "10.0.0.1", "10.0.0.0/24", "m", 1, 2)
        ...         for i, t in enumerate([1_000, 61_000, 2_000])]
        >>> w.add_chunk(Chunk.from_rows(rows)), w.open_windows(), w.buffered_events()
        (3, [0, 60000], 3)
        >>> w.close_through(60_000)
        >>> w.add_chunk(Chunk.from_rows(rows[:1])), w.stats.late
        (0, 1)
        >>> [(c.start_ms, c.n_events) for c in w.advance()]
        [(0, 2)]
        """
        if not self.external_watermark:
            raise ValueError("add_chunk is for windows closed by an external watermark")
        n = len(chunk)
        self.stats.events += n
        if not n:
            return 0
        starts = chunk.ts - chunk.ts % self.window_ms
        on_time = starts >= self.closed_before_ms
        taken = int(np.count_nonzero(on_time))
        self.stats.late += n - taken
        if not taken:
            return 0
        if taken < n:
            chunk, starts = chunk.take(np.flatnonzero(on_time)), starts[on_time]
        self._spread(chunk, starts, ids=False)
        self.max_event_ms = max(self.max_event_ms, int(chunk.ts.max()))
        return taken

    def open_windows(self) -> list[int]:
        return sorted(self._open)

    def buffered_events(self) -> int:
        return sum(len(w.ids) + w.taken for w in self._open.values())

    @property
    def next_ready_end_ms(self) -> int | None:
        """End of the oldest window closed and not yet handed over (None: there is none)."""
        return self._ready[0].end_ms if self._ready else None

    def advance(self, through_ms: int | None = None) -> list[ClosedWindow]:
        """Hand over the windows the watermark has closed, oldest first: every one, or those
        ending at or before ``through_ms`` (the rest wait for a later call)."""
        if through_ms is None:
            ready, self._ready = self._ready, []
            return ready
        n = 0
        while n < len(self._ready) and self._ready[n].end_ms <= through_ms:
            n += 1
        ready, self._ready = self._ready[:n], self._ready[n:]
        return ready

    def close_through(self, watermark_ms: int) -> None:
        """Close every window ending at or before ``watermark_ms`` (external watermarks)."""
        if watermark_ms >= self._next_end:
            self._ready.extend(self._close_until(watermark_ms))
        self.closed_before_ms = max(
            self.closed_before_ms, watermark_ms - watermark_ms % self.window_ms
        )

    def close_open(self) -> None:
        """Close every open window, to be handed over by `advance` (an idle partition)."""
        if self._open:
            self._ready.extend(self._close_until(max(self._open) + self.window_ms))

    def flush(self) -> list[ClosedWindow]:
        """Close every open window and hand over all closed ones (end of a replay, a shutdown)."""
        self.close_open()
        return self.advance()

    def _close_until(self, watermark_ms: int) -> list[ClosedWindow]:
        self._settle()
        closed = []
        for start in sorted(self._open):
            end = start + self.window_ms
            if end > watermark_ms:
                break
            win = self._open.pop(start)
            if win.rows:
                win.chunks.append(Chunk.from_rows(win.rows))
            window = ClosedWindow.from_chunks(start, end, win.chunks)
            # Fed by several upstream partitions, a window's rows come in whatever order they
            # arrived; put them in one order so that a replay scores the same window.
            closed.append(window.canonical() if self.external_watermark else window)
            self.closed_before_ms = max(self.closed_before_ms, end)
            self.stats.windows_closed += 1
        self._next_end = min(self._open) + self.window_ms if self._open else np.iinfo(np.int64).max
        return closed
