from __future__ import annotations

import numpy as np

from models.events import UsageEvent
from models.windows import CHUNK, Windower


def ev(i: int, ts: int, account: str = "a", ip: str = "10.0.0.1", **kw) -> UsageEvent:
    block = ip.rsplit(".", 1)[0] + ".0/24"
    return UsageEvent(f"e{i}", ts, account, ip, block, "m", 10, 20, **kw)


def test_watermark_closes_windows_in_order_and_counts_late_events() -> None:
    w = Windower(window_ms=1_000, allowed_lateness_ms=500)
    for i, t in enumerate([100, 900, 1_200, 1_400]):
        w.add(ev(i, t))
    assert w.advance() == []  # watermark 900: window [0, 1000) still open
    w.add(ev(4, 600))  # out of order but within lateness: counted in its window
    w.add(ev(5, 2_600))  # watermark 2100 closes [0,1000) and [1000,2000)
    closed = w.advance()
    assert [(c.start_ms, c.n_events) for c in closed] == [(0, 3), (1_000, 2)]
    w.add(ev(6, 999))
    assert w.stats.late == 1 and w.stats.events == 7
    assert [c.start_ms for c in w.flush()] == [2_000]


def test_redelivered_event_ids_are_counted_once() -> None:
    w = Windower(window_ms=1_000, allowed_lateness_ms=0)
    for _ in range(3):
        w.add(ev(1, 10))
    w.add(ev(2, 20))
    (closed,) = w.flush()
    assert closed.n_events == 2 and w.stats.duplicates == 2


def test_large_windows_are_chunked_without_losing_or_mixing_rows() -> None:
    w = Windower(window_ms=60_000, allowed_lateness_ms=0)
    n = 2 * CHUNK + 17
    for i in range(n):
        w.add(
            ev(
                i,
                i % 60_000,
                account=f"acct{i % 7}",
                ip=f"10.0.{i % 3}.{i % 250}",
                cot_score=None if i % 2 else 0.5,
            )
        )
    (closed,) = w.flush()
    assert closed.n_events == n
    names = np.array(closed.accounts)[closed.account]
    assert (names == np.array([f"acct{i % 7}" for i in range(n)])).all()
    assert np.isnan(closed.cot[1]) and closed.cot[0] == 0.5
    assert sorted(closed.blocks) == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
