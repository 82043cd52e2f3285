"""Freed memory handed back to the system after windows (`streams.memory`)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Awaitable, Callable

import pytest

from bench.memory import rss_bytes
from streams import memory
from streams.memory import MemoryReturn, glibc_trim
from streams.metrics import Metrics, SinkStats, WorkerCollector, render


def _run(ret: MemoryReturn, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``ret`` while ``body(stopping)`` (a coroutine) runs, then stop it within 1 s."""

    async def main() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(ret.run(stopping))
        await body(stopping)
        stopping.set()
        await asyncio.wait_for(task, 1.0)

    asyncio.run(main())


@pytest.mark.skipif(glibc_trim() is None, reason="malloc_trim is glibc's")
def test_glibc_trim_returns_what_the_heap_holds_free() -> None:
    trim = glibc_trim()
    assert trim is not None
    trim()
    # Many middle-sized blocks (under glibc's mmap threshold) freed while one block above
    # them is kept: the heap cannot shrink from its top, only malloc_trim gives them back.
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(4_000)]  # 256 MB
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)
    pin = libc.malloc(64 * 1024)
    for b in blocks:
        libc.free(b)
    held = rss_bytes()
    trim()
    released = held - rss_bytes()
    libc.free(pin)
    assert released > 128 * 2**20, f"released only {released / 2**20:.0f} MB of 256"


def test_without_glibc_there_is_nothing_to_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")  # as on musl, macOS

    glibc_trim.cache_clear()
    monkeypatch.setattr(os, "confstr", unknown)
    try:
        assert glibc_trim() is None
        ret = MemoryReturn(lambda: 1)
        assert ret.trim is None

        async def body(stopping: asyncio.Event) -> None:
            await asyncio.sleep(0.05)

        _run(ret, body)  # returns at once, and is not a failure
        assert ret.trims == 0
    finally:
        glibc_trim.cache_clear()


def test_trims_after_windows_at_most_every_interval() -> None:
    scored, calls = [0], []
    metrics = Metrics()
    ret = MemoryReturn(
        lambda: scored[0], min_interval_s=1.0, poll_s=0.01, trim=lambda: calls.append(1) or 1,
        metrics=metrics,
    )  # fmt: skip

    async def body(stopping: asyncio.Event) -> None:
        await asyncio.sleep(0.2)
        assert calls == []  # nothing scored: nothing to do
        for _ in range(10):  # windows scored without pause for 0.3 s
            scored[0] += 1
            await asyncio.sleep(0.03)
        assert len(calls) == 1  # the first round, then the interval holds the rest back
        await asyncio.sleep(1.2)
        assert len(calls) == 2  # the windows scored meanwhile get their round after it
        await asyncio.sleep(1.2)
        assert len(calls) == 2  # nothing new scored

    _run(ret, body)
    assert metrics.memory_trims == 2
    text = render(WorkerCollector(metrics, SinkStats(), lambda: None))
    assert "distillguard_memory_trims_total 2.0" in text


def test_stopping_ends_the_wait_between_rounds() -> None:
    scored = [0]
    ret = MemoryReturn(lambda: scored[0], min_interval_s=30.0, poll_s=30.0, trim=lambda: 1)

    async def body(stopping: asyncio.Event) -> None:
        await asyncio.sleep(0.05)  # waiting out poll_s
        scored[0] = 1
        stopping.set()

    _run(ret, body)  # not after 30 s

    ret = MemoryReturn(lambda: scored[0], min_interval_s=30.0, poll_s=0.01, trim=lambda: 1)

    async def after_one_round(stopping: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        scored[0] = 2
        await asyncio.sleep(0.1)
        assert ret.trims == 1  # now waiting out min_interval_s

    _run(ret, after_one_round)


def test_a_failing_trim_is_logged_once_and_never_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scored = [0]

    def broken() -> int:
        raise RuntimeError("cannot schedule new futures after shutdown")

    ret = MemoryReturn(lambda: scored[0], min_interval_s=0.0, poll_s=0.01, trim=broken)

    async def body(stopping: asyncio.Event) -> None:
        for _ in range(5):
            scored[0] += 1
            await asyncio.sleep(0.03)

    with caplog.at_level(logging.WARNING, logger=memory.__name__):
        _run(ret, body)  # run() returned normally: Engine.failed() says nothing
    assert ret.trims == 0
    warnings = [r for r in caplog.records if "freed memory" in r.getMessage()]
    assert len(warnings) == 1


def test_none_turns_it_off() -> None:
    scored, calls = [0], []
    ret = MemoryReturn(
        lambda: scored[0], min_interval_s=None, poll_s=0.01, trim=lambda: calls.append(1) or 1
    )

    async def body(stopping: asyncio.Event) -> None:
        for _ in range(5):
            scored[0] += 1
            await asyncio.sleep(0.03)

    _run(ret, body)
    assert calls == []


def test_settle_heap_frees_startup_garbage_then_leaves_the_rest_out_of_collections() -> None:
    import gc
    import weakref

    class Node:
        pass

    def cycle() -> weakref.ref[Node]:
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        return weakref.ref(a)

    gc.collect()
    kept = Node()
    garbage_before = cycle()  # unreachable already, only a collection frees it
    try:
        frozen = memory.settle_heap()
        assert frozen > 1000
        assert garbage_before() is None, "garbage left by start-up must be freed, not frozen"
        tracked = {id(o) for o in gc.get_objects()}
        assert id(kept) not in tracked, "objects alive at start-up are out of every collection"
        garbage_after = cycle()
        gc.collect()
        assert garbage_after() is None, "garbage made later is collected as before"
    finally:
        gc.unfreeze()
