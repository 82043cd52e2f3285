"""The policy for outputs that fail: retry with backoff, say so once, give up after a bound.

`Retries` runs a failed attempt (a batch's outputs: only what failed; a checkpoint load) again
with exponential backoff, logs the first failure of a streak and the recovery in one line each,
counts failed attempts, and after ``give_up_seconds`` raises an `OutputsUnavailable` that stops
the stage (the worker exits for its supervisor to restart it from the last checkpoint). While a
stage retries it reads nothing more, so it holds at most one batch. A stop request abandons the
retry (`Abandoned`): the batch stays unpublished, so it is never checkpointed.

Examples
--------
A ClickHouse insert that fails twice, then works:

>>> import asyncio
>>> from streams.metrics import Metrics
>>> async def demo():
...     metrics = Metrics()
...     retries = Retries(0.01, 0.02, 5.0, asyncio.Event(), metrics)
...     calls = []
...     async def insert():
...         calls.append(1)
...         if len(calls) < 3:
...             raise ConnectionRefusedError("connection refused")
...         return "inserted"
...     done = await retries.run("accounts", "ClickHouse insert", insert)
...     return done, len(calls), metrics.output_errors, retries.degraded()
>>> asyncio.run(demo())
('inserted', 3, 2, None)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from streams.clickhouse import CheckpointUnreadable, one_line
from streams.metrics import Metrics
from streams.publish import OutputError, OutputsUnavailable

__all__ = ["Abandoned", "Retries", "Streak"]

log = logging.getLogger("distillguard.engine")
T = TypeVar("T")


class Abandoned(Exception):
    """The worker is stopping: the retried work was given up, and nothing was checkpointed."""


@dataclass
class Streak:
    """Consecutive failures of one stage's outputs (or of its checkpoints)."""

    started: float
    what: str
    cause: str
    attempts: int = 0


class Retries:
    """Retry failing outputs with backoff, say so once, and give up after a bound.

    Parameters
    ----------
    initial_seconds, max_seconds
        The first wait between attempts, doubling up to ``max_seconds``.
    give_up_seconds
        How long a streak of failures may last before `run` raises `OutputsUnavailable`.
    stopping
        Set when the worker stops: a retry waiting on it is abandoned.
    metrics
        Counts every failed attempt (``output_errors``).
    """

    def __init__(
        self,
        initial_seconds: float,
        max_seconds: float,
        give_up_seconds: float,
        stopping: asyncio.Event,
        metrics: Metrics,
    ) -> None:
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.give_up_seconds = give_up_seconds
        self.stopping = stopping
        self.metrics = metrics
        self._streaks: dict[str, Streak] = {}

    async def run(self, key: str, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds, with exponential backoff between attempts.

        ``key`` names the streak (a stage, or a stage's checkpoints); ``what`` says what is
        attempted, unless the attempt raises an `OutputError` that says it more precisely.
        Raises `Abandoned` if the worker stops first, `OutputsUnavailable` once it has failed
        for ``give_up_seconds``."""
        delay = self.initial_seconds
        while True:
            try:
                result = await attempt()
            except CheckpointUnreadable:
                raise  # not an outage: retrying cannot mend it
            except Exception as exc:
                failed, cause = (
                    (exc.what, exc.cause) if isinstance(exc, OutputError) else (what, exc)
                )
                streak = self.failure(key, failed, cause, delay)
                elapsed = time.monotonic() - streak.started
                if elapsed >= self.give_up_seconds:
                    message = (
                        f"{key}: {streak.what} has failed for {elapsed:.0f} s "
                        f"({streak.attempts} attempts), last: {streak.cause}; giving up: the "
                        "worker exits for its supervisor to restart it, from the last checkpoint"
                    )
                    log.critical("%s", message)
                    raise OutputsUnavailable(message) from None
                wait = min(delay, self.give_up_seconds - elapsed)
                try:
                    await asyncio.wait_for(self.stopping.wait(), wait)
                except TimeoutError:
                    delay = min(2 * delay, self.max_seconds)
                    continue
                raise Abandoned(key) from None
            self.recovered(key)
            return result

    def failure(self, key: str, what: str, exc: BaseException, retry_in: float | None) -> Streak:
        """Count a failed attempt; log the first of a streak (one line: what, why, what next).
        ``retry_in`` None: the caller tries again later on its own (a checkpoint)."""
        self.metrics.output_errors += 1
        cause = one_line(exc)
        streak = self._streaks.get(key)
        if streak is None:
            streak = self._streaks[key] = Streak(time.monotonic(), what, cause)
            log.error(
                "%s: %s failed: %s; %s",
                key,
                what,
                cause,
                f"retrying in {retry_in:g} s, reading nothing more meanwhile (giving up after "
                f"{self.give_up_seconds:g} s)"
                if retry_in is not None
                else "trying again at the next checkpoint",
            )
        streak.what, streak.cause = what, cause
        streak.attempts += 1
        return streak

    def recovered(self, key: str) -> None:
        """End ``key``'s streak of failures, if it had one, and say so."""
        streak = self._streaks.pop(key, None)
        if streak is not None:
            log.warning(
                "%s: %s works again, after %.1f s and %d failed attempts",
                key,
                streak.what,
                time.monotonic() - streak.started,
                streak.attempts,
            )

    def degraded(self) -> str | None:
        """What is failing and being retried (None when nothing is), for /health."""
        now = time.monotonic()
        reasons = [
            f"{key}: {s.what} failing for {now - s.started:.0f} s ({s.attempts} attempts): "
            f"{s.cause}"
            for key, s in sorted(self._streaks.items())
        ]
        return "; ".join(reasons) or None
