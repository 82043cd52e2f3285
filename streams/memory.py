"""Hand the memory a worker has freed back to the operating system, after each round of windows.

Closing a window is the worker's memory peak: its events, the columns built from them and the
scoring's intermediate arrays live together for a moment, then are freed. CPython returns its own
arenas, and numpy its large arrays, but the many middle-sized blocks go through glibc's heap,
which keeps what was freed for later instead of returning it. Measured at a million accounts
(``python -m bench.memory``), a worker held 947 MB of freed memory that way, a quarter of its
resident size: memory that a container limit or the OOM killer counts all the same.

`MemoryReturn` watches the worker's count of scored windows and checkpoints (a checkpoint frees
its pickled state once written). When it has moved, it calls glibc's
``malloc_trim(0)`` in a thread (ctypes releases the GIL for the call), then waits at least
``min_interval_s`` before the next one, so a worker scoring windows without pause trims at most
that often. Elsewhere than glibc (musl, macOS) there is nothing to call and it does nothing; if
a call fails, it logs that once and stops trying (housekeeping never stops a worker).

Examples
--------
>>> import asyncio
>>> scored, calls = [0], []
>>> ret = MemoryReturn(lambda: scored[0], min_interval_s=0.0, poll_s=0.01,
...                    trim=lambda: calls.append(1) or 1)
>>> async def main():
...     stopping = asyncio.Event()
...     task = asyncio.create_task(ret.run(stopping))
...     await asyncio.sleep(0.05)          # nothing scored yet: nothing to return
...     scored[0] = 3
...     await asyncio.sleep(0.05)
...     stopping.set()
...     await task
>>> asyncio.run(main())
>>> len(calls), ret.trims
(1, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import time
from collections.abc import Callable

from streams.metrics import Metrics

__all__ = ["MemoryReturn", "glibc_trim", "settle_heap"]

log = logging.getLogger(__name__)


class _Default:
    """The default ``trim``: glibc's, if the process runs on glibc."""


_DEFAULT = _Default()


def settle_heap() -> int:
    """Collect the garbage a worker's start-up left, then take everything still alive (modules,
    classes, functions of numpy, River, aiokafka...: ~150,000 objects) out of the cyclic garbage
    collector's reach (``gc.freeze``); returns how many objects that is.

    Those objects live as long as the process, yet every full collection walked all of them: in
    ``bench/pipeline.py`` 20 full collections took 1.3 s of a 15 s backlog, 65 ms each, a pause
    for every stage. Frozen, they took 0.3 s. Objects created later are collected as before;
    reference counting frees the frozen ones that are dropped, unless they are caught in a cycle.
    Call it once, when the worker has started.

    Examples
    --------
    >>> import gc
    >>> settle_heap() > 1000 and gc.get_freeze_count() > 1000   # the modules' objects at least
    True
    >>> gc.unfreeze()                                           # (back as they were, for tests)
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@functools.cache
def glibc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` (returns 1 if it released memory), or None without glibc.

    Examples
    --------
    >>> trim = glibc_trim()
    >>> trim is None or trim() in (0, 1)
    True
    """
    if not _on_glibc():
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the symbols this process already has loaded
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> int:
        return int(fn(0))

    return trim


def _on_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # the name is unknown off glibc (musl, macOS)
        return False


class MemoryReturn:
    """Trims the heap after windows were scored (see the module docstring).

    ``scored`` counts the windows scored (and checkpoints taken) so far; ``trim`` returns freed
    memory (by default `glibc_trim`'s function; None, or no glibc: nothing is done).
    ``min_interval_s`` None turns it off. ``trims`` and ``last_seconds`` say how often and how
    long it ran, and go to ``metrics`` (/metrics) when given. A worker that idles still
    checkpoints, so it trims every ``checkpoint_seconds`` or ``min_interval_s``, whichever is
    longer.
    """

    def __init__(
        self,
        scored: Callable[[], int],
        min_interval_s: float | None = 10.0,
        poll_s: float = 1.0,
        trim: Callable[[], int] | _Default | None = _DEFAULT,
        metrics: Metrics | None = None,
    ) -> None:
        self.scored = scored
        self.metrics = metrics
        self.min_interval_s = min_interval_s
        self.poll_s = poll_s
        self.trim = glibc_trim() if isinstance(trim, _Default) else trim
        self.trims = 0
        self.last_seconds = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        if self.trim is None or self.min_interval_s is None:
            return
        seen = self.scored()
        while not stopping.is_set():
            await self._wait(stopping, self.poll_s)
            now = self.scored()
            if now == seen or stopping.is_set():
                continue
            seen = now
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.trim)
            except Exception as exc:  # housekeeping: never the reason a worker stops
                log.warning("handing freed memory back failed, not trying again: %r", exc)
                return
            self.last_seconds = time.perf_counter() - started
            self.trims += 1
            if self.metrics is not None:
                self.metrics.memory_trims = self.trims
                self.metrics.memory_trim_seconds = self.last_seconds
            await self._wait(stopping, self.min_interval_s)

    @staticmethod
    async def _wait(stopping: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds``, or less if the worker stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
