"""Kafka clients' repeated complaints, held back to one line per kind every so often.

With its brokers gone, a worker's aiokafka clients log every failed connection, metadata
update, fetch and coordinator lookup: a fault experiment counted 13,211 lines in 40 s, in
which the line that says what is wrong (`/health`, the worker's own) was lost. `Repeats` lets
the first record of each kind (logger, level and message template) through, then one every
``every_seconds`` that says how many like it were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Repeats", "quiet_repeats"]

MAX_KINDS = 1_000  # kinds remembered; past it, forgotten all at once (memory stays bounded)


class Repeats(logging.Filter):
    """A filter letting one record of each kind through every ``every_seconds``.

    Examples
    --------
    >>> now = [0.0]
    >>> repeats = Repeats(every_seconds=30.0, clock=lambda: now[0])
    >>> def record(msg, *args):
    ...     return logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, args, None)
    >>> passed = []
    >>> for t in range(0, 65, 5):
    ...     now[0] = float(t)
    ...     r = record("Unable connect to node with id %s: %s", 1, "refused")
    ...     if repeats.filter(r):
    ...         passed.append(r.getMessage())
    >>> for line in passed:
    ...     print(line)
    Unable connect to node with id 1: refused
    Unable connect to node with id 1: refused (5 more like it in the last 30 s)
    Unable connect to node with id 1: refused (5 more like it in the last 30 s)
    >>> repeats.filter(record("Unable to update metadata from %s", 0))   # another kind
    True
    """

    def __init__(
        self, every_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.every_seconds:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            # The message is complete once its arguments are in: say so after them.
            # Arguments (), not None: formatters that wrap a lone argument (Faust's, mode's)
            # would make None one, and "%" in the message would be read as a placeholder.
            record.msg = record.getMessage() + (
                f" ({last[1]} more like it in the last {now - last[0]:.0f} s)"
            )
            record.args = ()
        if len(self._kinds) >= MAX_KINDS and kind not in self._kinds:
            self._kinds.clear()  # messages formatted before logging make kinds of their own
        self._kinds[kind] = (now, 0)
        return True


def quiet_repeats(prefixes: tuple[str, ...] = ("aiokafka", "kafka"), every: float = 30.0) -> None:
    """Hold back repeats on every logger named by ``prefixes`` (and their children) that
    exists now: import the clients first. One filter is shared, so each kind is counted once."""
    repeats = Repeats(every)
    names = [*logging.root.manager.loggerDict]
    for name in names:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            logger = logging.getLogger(name)
            if not any(isinstance(f, Repeats) for f in logger.filters):
                logger.addFilter(repeats)
