"""The decisions of a stage's loop (`streams.stages.progress`), on stand-in partitions: which
window ends may be scored, which partitions pause, which are flushed, and what has a backlog."""

from __future__ import annotations

from dataclasses import dataclass

from streams.stages.progress import ahead, backlog, frontier, quiet


@dataclass
class Part:
    closed_before_ms: int = 0
    has_open_windows: bool = False
    max_event_ms: int = 0


def test_a_backlog_is_what_lies_between_the_next_offset_and_the_highwater() -> None:
    highwater = {0: 10, 1: 10, 2: 10, 3: None}.get
    # 0: read up to 4; 1: read all; 2: read 4, but the consumer is past transaction markers at
    # 10; 3: no fetch answered yet.
    todo = backlog([0, 1, 2, 3], {0: 4, 1: 10, 2: 4}, {2: 10}, highwater)
    assert todo == {0: True, 1: False, 2: False, 3: None}
    assert backlog([5], {}, {}, {5: 0}.get) == {5: False}  # an empty partition


def test_the_frontier_waits_for_every_partition_that_can_still_close_a_window() -> None:
    parts = {0: Part(120_000, True), 1: Part(60_000, True), 2: Part(0, False)}
    # 2 has nothing to read and no open window: it holds nobody back.
    assert frontier(parts, {0: False, 1: True, 2: False}) == 60_000
    # Not heard from yet, it holds everyone.
    assert frontier(parts, {0: False, 1: True, 2: None}) == 0
    # With a backlog, it will close windows: it holds everyone too.
    assert frontier(parts, {0: False, 1: True, 2: True}) == 0
    # Caught up but with an open window: its next close bounds the others.
    parts[2] = Part(30_000, True)
    assert frontier(parts, {0: False, 1: False, 2: False}) == 30_000
    assert frontier({0: Part(5, False)}, {0: False}) is None  # nothing can close: no bound
    assert frontier({}, {}) is None


def test_a_partition_far_ahead_of_the_slowest_with_a_backlog_is_paused() -> None:
    parts = {0: Part(max_event_ms=100_000), 1: Part(max_event_ms=10_000), 2: Part(max_event_ms=0)}
    # 2 is caught up (holds nobody back); 1 has a backlog: 0 is 90 s ahead of it.
    assert ahead(parts, {0: True, 1: True, 2: False}, max_skew_ms=60_000) == {0}
    assert ahead(parts, {0: True, 1: True, 2: False}, max_skew_ms=90_000) == set()
    # 2 not heard from yet: it holds both the others.
    assert ahead(parts, {0: True, 1: True, 2: None}, max_skew_ms=5_000) == {0, 1}
    # Nobody has anything to read: nobody is paused.
    assert ahead(parts, {0: False, 1: False, 2: False}, max_skew_ms=0) == set()


def test_only_caught_up_partitions_with_open_windows_are_flushed_after_their_silence() -> None:
    parts = {
        0: Part(has_open_windows=True),  # caught up, silent for 100 s
        1: Part(has_open_windows=True),  # caught up, heard from 10 s ago
        2: Part(has_open_windows=True),  # silent, but a backlog
        3: Part(has_open_windows=True),  # silent, not heard from
        4: Part(has_open_windows=False),  # silent, caught up, nothing open
    }
    todo = {0: False, 1: False, 2: True, 3: None, 4: False}
    seen = {0: 900.0, 1: 990.0, 2: 0.0, 3: 0.0, 4: 0.0}
    assert quiet(parts, todo, seen, now=1000.0, idle_seconds=60.0) == [0]
    # The input has ended: every caught-up partition is flushed at once, whenever last seen
    # (even "after" now: a partition assigned while the loop's batch was being read).
    seen[1] = 1001.0
    assert quiet(parts, todo, seen, now=1000.0, idle_seconds=0.0) == [0, 1]
