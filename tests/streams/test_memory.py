"""Freed memory handed back to the system after windows (`streams.memory`)."""

from __future__ import annotations

import asyncio
import ctypes

from streams.memory import MemoryReturn, glibc_trim
from streams.metrics import Metrics, SinkStats, WorkerCollector, render


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_glibc_trim_returns_what_the_heap_holds_free() -> None:
    trim = glibc_trim()
    assert trim is not None, "this machine runs glibc"
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
    held = _rss()
    trim()
    released = held - _rss()
    libc.free(pin)
    assert released > 128 * 2**20, f"released only {released / 2**20:.0f} MB of 256"


def test_trims_after_windows_at_most_every_interval() -> None:
    scored, calls = [0], []
    metrics = Metrics()
    ret = MemoryReturn(
        lambda: scored[0], min_interval_s=0.3, poll_s=0.01, trim=lambda: calls.append(1) or 1,
        metrics=metrics,
    )  # fmt: skip

    async def main() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(ret.run(stopping))
        await asyncio.sleep(0.1)
        assert calls == []  # nothing scored: nothing to do
        for _ in range(10):  # windows scored without pause for 0.2 s
            scored[0] += 1
            await asyncio.sleep(0.02)
        assert len(calls) == 1  # the first round, then the interval holds the rest back
        await asyncio.sleep(0.4)
        assert len(calls) == 2  # the windows scored meanwhile get their round after it
        await asyncio.sleep(0.4)
        assert len(calls) == 2  # nothing new scored
        stopping.set()
        await asyncio.wait_for(task, 1.0)

    asyncio.run(main())
    assert metrics.memory_trims == 2
    text = render(WorkerCollector(metrics, SinkStats(), lambda: None))
    assert "distillguard_memory_trims_total 2.0" in text


def test_without_glibc_it_does_nothing() -> None:
    ret = MemoryReturn(lambda: 1, trim=None)
    ret.trim = None  # as on musl or macOS, where glibc_trim finds nothing

    async def main() -> None:
        await asyncio.wait_for(ret.run(asyncio.Event()), 1.0)  # returns at once

    asyncio.run(main())
    assert ret.trims == 0


def test_stopping_ends_the_loop_promptly() -> None:
    ret = MemoryReturn(lambda: 0, min_interval_s=5.0, poll_s=5.0, trim=lambda: 1)

    async def main() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(ret.run(stopping))
        await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 1.0)  # not after poll_s

    asyncio.run(main())
