from __future__ import annotations

import pickle
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.columns import Chunk
from models.events import UsageEvent, ip_block
from models.keys import unpack
from models.windows import CHUNK, ClosedWindow, Windower


def ev(i: int, ts: int, account: str = "a", ip: str = "10.0.0.1", **kw) -> UsageEvent:
    return UsageEvent(f"e{i}", ts, account, ip, ip_block(ip), "m", 10, 20, **kw)


def closed(order: list[UsageEvent]) -> ClosedWindow:
    """The one window of the first minute, fed ``order`` in that order."""
    w = Windower(window_ms=60_000, allowed_lateness_ms=0, external_watermark=True)
    for e in order:
        w.add(e)
    w.close_through(60_000)
    (window,) = w.advance()
    return window


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


def _columns(c) -> dict[str, object]:
    return {
        "accounts": c.accounts,
        "blocks": c.blocks,
        "models": c.models,
        "subnets": c.subnets,
        **{
            name: getattr(c, name).tolist()
            for name in (
                "ts",
                "account",
                "block",
                "subnet",
                "model",
                "input_tokens",
                "fingerprint",
                "has_fingerprint",
            )
        },
        "cot": np.nan_to_num(c.cot, nan=-1.0).tolist(),
    }


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 5),  # second within the window: ties are common
            st.sampled_from(["a", "b", "c"]),
            # IPv4 blocks, and IPv6 addresses of one /48 in two /64s (same block, other subnet)
            st.sampled_from(["10.0.0.1", "10.0.1.1", "10.0.2.7", "2001:db8::1", "2001:db8:0:1::1"]),
            st.integers(1, 3),  # input tokens
            st.one_of(st.none(), st.floats(0, 1)),  # cot_score
            st.sampled_from([None, 0]),  # no fingerprint, or the all-zero one
        ),
        min_size=1,
        max_size=3 * CHUNK,  # several chunks: their names are merged too
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_window_fed_from_several_upstreams_is_the_same_in_any_arrival_order(rows, seed) -> None:
    """The IP-block stage adds events in whatever order the account partitions' forwards arrive;
    the closed window must not depend on it (its entities are learned in row order)."""
    events = [
        ev(i, 1_000 * s, account, ip, cot_score=cot, prompt_fingerprint=fp)._replace(
            input_tokens=tokens
        )
        for i, (s, account, ip, tokens, cot, fp) in enumerate(rows)
    ]
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)

    assert _columns(closed(events)) == _columns(closed(shuffled))


def test_windows_are_handed_over_up_to_a_bound_and_the_rest_kept() -> None:
    w = Windower(window_ms=1_000, allowed_lateness_ms=0)
    for i, t in enumerate([100, 1_100, 2_100, 3_100]):
        w.add(ev(i, t))
    assert w.next_ready_end_ms == 1_000
    assert [c.end_ms for c in w.advance(through_ms=2_000)] == [1_000, 2_000]
    assert w.next_ready_end_ms == 3_000
    w.close_open()  # closes [3000, 4000) without handing anything over
    assert w.open_windows() == [] and w.next_ready_end_ms == 3_000
    assert [c.end_ms for c in w.advance()] == [3_000, 4_000]
    assert w.next_ready_end_ms is None


def test_a_window_pickled_before_subnets_existed_restores_with_blocks_as_subnets() -> None:
    ips = ["10.0.0.1", "2001:db8::1", "2001:db8:0:1::1"]
    window = closed([ev(i, 1_000 * i, "a", ip) for i, ip in enumerate(ips)])
    assert sorted(window.subnets) == ["10.0.0.0/24", "2001:db8:0:1::/64", "2001:db8::/64"]
    _, _, (_, slots) = window.__reduce_ex__(2)[:3]
    old = {k: v for k, v in slots.items() if k not in ("subnet", "subnets")}
    restored = ClosedWindow.__new__(ClosedWindow)
    restored.__setstate__((None, old))
    assert restored.subnets == window.blocks
    assert restored.subnet.tolist() == window.block.tolist()
    assert restored.ts.tolist() == window.ts.tolist()


def test_rows_that_differ_only_in_their_subnet_are_ordered_by_it() -> None:
    # Same time, account and tokens, one IPv6 /48, two /64s: only the subnet tells them apart.
    a, b = ev(1, 5_000, "a", "2001:db8::1"), ev(2, 5_000, "a", "2001:db8:0:1::1")

    one, other = closed([a, b]), closed([b, a])
    assert [one.subnets[i] for i in one.subnet] == [other.subnets[i] for i in other.subnet]


def test_a_window_pickled_with_an_id_set_and_named_chunks_restores_and_closes_the_same() -> None:
    """Checkpoints from before `SeenIds` and packed names: a set of event ids per open window,
    and each chunk's names as a list of strings."""
    events = [ev(i, i % 50_000, account=f"acct{i % 11}") for i in range(CHUNK + 40)]

    def fed() -> Windower:
        w = Windower(window_ms=60_000, allowed_lateness_ms=0)
        for e in events:
            w.add(e)
        return w

    expected = fed().flush()[0]
    old = fed()
    (win,) = old._open.values()
    object.__setattr__(win, "ids", {e.event_id for e in events})
    for chunk in win.chunks:
        for names in ("accounts", "blocks", "models", "subnets"):
            object.__setattr__(chunk, names, list(unpack(*getattr(chunk, names))))
    restored = pickle.loads(pickle.dumps(old))
    assert not restored.add(events[0]) and not restored.add(events[-1])
    assert restored.add(ev(10**6, 10, account="acct0"))
    (window,) = restored.flush()
    assert restored.stats.duplicates == 2
    assert window.n_events == expected.n_events + 1
    assert window.accounts == expected.accounts
    assert window.account[:-1].tolist() == expected.account.tolist()


def test_chunks_and_windows_pickled_before_they_moved_to_models_columns_still_load() -> None:
    """A checkpoint taken before `models.columns` names `models.windows._Chunk` (an open window's
    slices) and `models.windows.ClosedWindow`: a worker restored from it reads them."""
    rows = [ev(i, 1_000 * i, account=f"a{i % 3}") for i in range(10)]
    for now in (Chunk.from_rows(rows), closed(rows)):
        name = type(now).__name__.encode()
        new = pickle.dumps(now, protocol=2)  # text globals: "c<module>\n<name>\n"
        old_name = b"_Chunk" if name == b"Chunk" else name
        old = new.replace(
            b"cmodels.columns\n" + name + b"\n", b"cmodels.windows\n" + old_name + b"\n"
        )
        assert old != new
        back = pickle.loads(old)
        assert type(back) is type(now)
        assert back.ts.tolist() == now.ts.tolist() and back.account.tolist() == now.account.tolist()


RESTORE_ELSEWHERE = """
import pickle, sys
import numpy as np
from models.events import UsageEvent, ip_block
w = pickle.loads(sys.stdin.buffer.read())
for i in range(100):
    ip = f"10.0.0.{i % 5}"
    w.add(UsageEvent(f"later{i}", 30_000 + i, "acct", ip, ip_block(ip), "m", 10, 20))
(window,) = w.flush()
print(len(np.unique(window.ip_hash)))
"""


def test_a_window_restored_by_another_process_counts_each_address_once() -> None:
    """An open window is checkpointed with its first events already in columns (a chunk); a
    worker restored from it in another process (another ``hash`` salt) adds the rest. Hashed with
    ``hash``, the same five addresses before and after counted as ten distinct ones."""
    import os
    import subprocess
    import sys

    w = Windower(window_ms=60_000, allowed_lateness_ms=0, external_watermark=True)
    for i in range(CHUNK + 10):  # the first CHUNK events become a chunk
        ip = f"10.0.0.{i % 5}"
        w.add(UsageEvent(f"e{i}", i % 30_000, "acct", ip, ip_block(ip), "m", 10, 20))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", RESTORE_ELSEWHERE],
        input=pickle.dumps(w),
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert int(done.stdout) == 5


_NAMES = st.sampled_from(["a", "bé", "ccc", "", "dddd€", "10.0.0.0/24", "2001:db8::/48"])


@st.composite
def _rows_and_picks(draw: st.DrawFn) -> tuple[list[UsageEvent], list[int]]:
    n = draw(st.integers(1, 40))
    rows = [
        UsageEvent(
            f"e{i}",
            draw(st.integers(0, 10**6)),
            draw(_NAMES),
            "10.0.0.1",
            draw(_NAMES),
            draw(_NAMES),
            i,
            2,
            payment_fingerprint=draw(st.sampled_from([None, "c1", "c2"])),
        )
        for i in range(n)
    ]
    picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    return rows, picks


@given(_rows_and_picks(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_chunk_taken_from_is_the_chunk_of_those_rows(
    case: tuple[list[UsageEvent], list[int]], names_as_list: bool
) -> None:
    rows, picks = case
    chunk = Chunk.from_rows(rows)
    if names_as_list:  # chunks pickled before names were packed
        chunk.accounts, chunk.blocks = chunk.names("accounts"), chunk.names("blocks")
    taken = chunk.take(np.array(picks))
    made = Chunk.from_rows([rows[i] for i in picks])
    for codes, names in (("account", "accounts"), ("block", "blocks"), ("model", "models")):
        used = taken.names(names)
        assert used == made.names(names)  # only those its rows use, in the order they use them
        assert [used[c] for c in getattr(taken, codes)] == [
            made.names(names)[c] for c in getattr(made, codes)
        ]
    for column in ("ts", "ip_hash", "payment_hash", "input_tokens", "created_ms"):
        assert getattr(taken, column).tolist() == getattr(made, column).tolist()
    back = Chunk.from_buffers(taken.to_buffers())
    assert back.names("accounts") == taken.names("accounts")
    assert back.account.tolist() == taken.account.tolist() and back.ts.tolist() == taken.ts.tolist()
