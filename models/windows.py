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

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.events import UsageEvent
from models.events import subnet as _subnet
from models.keys import pack, unpack
from models.seen import SeenIds

__all__ = ["ClosedWindow", "WindowStats", "Windower"]

I64 = npt.NDArray[np.int64]
# Rows are turned into numpy columns every CHUNK events so an open window costs ~100 bytes per
# buffered event instead of keeping every parsed event object alive until the window closes.
CHUNK = 8192

# A chunk's names (accounts, blocks, models, subnets) as UTF-8 bytes and lengths (`pack`): a
# window of a million accounts then keeps no string per account until it closes. Chunks pickled
# before this keep a list.
Names = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]] | list[str]


def _names(names: Names) -> list[str]:
    return names if isinstance(names, list) else unpack(*names)


def _factorize(values: tuple[str, ...] | list[str]) -> tuple[npt.NDArray[np.int32], Names]:
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(v, len(index)) for v in values), dtype=np.int32, count=len(values)
    )
    return codes, pack(list(index))


_PAYMENT_CACHE: dict[str, int] = {}
# The instruments of the last few seconds' busy accounts, not every one ever seen (see
# `models.events`' address cache).
_PAYMENT_CACHE_MAX = 1 << 16


def _payment_hashes(values: tuple[str | None, ...]) -> I64:
    """Stable 63-bit hashes of payment fingerprints (0 = none): the same in every process, so
    campaign links built from them survive a restart and agree between workers."""
    cache = _PAYMENT_CACHE
    if len(cache) > _PAYMENT_CACHE_MAX:
        cache.clear()
    out = np.zeros(len(values), dtype=np.int64)
    for i, p in enumerate(values):
        if p is None:
            continue
        h = cache.get(p)
        if h is None:
            digest = hashlib.blake2b(p.encode(), digest_size=8).digest()
            h = cache[p] = (int.from_bytes(digest, "little") >> 1) or 1
        out[i] = h
    return out


def _optional_ints(values: tuple[Any, ...], missing: int) -> I64:
    return np.fromiter(
        (missing if v is None else v for v in values), dtype=np.int64, count=len(values)
    )


def _with_subnets(obj: Any, state: tuple[Any, dict[str, Any]]) -> None:
    """Restore a pickled chunk or window (pickle's ``(None, slots)`` state), also one pickled
    before it had subnets: those get their IP blocks as subnets (the addresses are not kept, so
    nothing finer can be known)."""
    values = dict(state[1])
    if "subnet" not in values:
        values["subnet"], values["subnets"] = values["block"], values["blocks"]
    for name, value in values.items():
        object.__setattr__(obj, name, value)


@dataclass(slots=True)
class _Chunk:
    """A slice of one window's events as columns; string columns factorised locally."""

    ts: I64
    account: npt.NDArray[np.int32]
    accounts: Names
    block: npt.NDArray[np.int32]
    blocks: Names
    model: npt.NDArray[np.int32]
    models: Names
    ip_hash: I64
    input_tokens: npt.NDArray[np.float64]
    output_tokens: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    fingerprint: npt.NDArray[np.uint64]
    has_fingerprint: npt.NDArray[np.bool_]
    cot: npt.NDArray[np.float64]
    created_ms: I64
    payment_hash: I64
    # A chunk pickled before subnets existed restores with its blocks as subnets.
    subnet: npt.NDArray[np.int32]
    subnets: Names

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        _with_subnets(self, state)

    @classmethod
    def from_rows(cls, rows: list[UsageEvent]) -> _Chunk:
        # The events' fields as columns, by name.
        c = dict(zip(UsageEvent._fields, zip(*rows, strict=True), strict=True))
        n = len(rows)
        account, accounts = _factorize(c["account_id"])
        block, blocks = _factorize(c["ip_block"])
        model, models = _factorize(c["model"])
        subnet, subnets = _factorize(
            [_subnet(ip, b) for ip, b in zip(c["ip"], c["ip_block"], strict=True)]
        )
        fps = c["prompt_fingerprint"]
        return cls(
            ts=np.fromiter(c["ts_ms"], dtype=np.int64, count=n),
            account=account,
            accounts=accounts,
            block=block,
            blocks=blocks,
            model=model,
            models=models,
            ip_hash=np.fromiter((hash(ip) for ip in c["ip"]), dtype=np.int64, count=n),
            subnet=subnet,
            subnets=subnets,
            input_tokens=np.fromiter(c["input_tokens"], dtype=np.float64, count=n),
            output_tokens=np.fromiter(c["output_tokens"], dtype=np.float64, count=n),
            error=np.fromiter(c["status"], dtype=np.int64, count=n) >= 400,
            fingerprint=np.fromiter((0 if f is None else f for f in fps), dtype=np.uint64, count=n),
            has_fingerprint=np.fromiter((f is not None for f in fps), dtype=np.bool_, count=n),
            cot=np.fromiter(
                (np.nan if x is None else x for x in c["cot_score"]), dtype=np.float64, count=n
            ),
            created_ms=_optional_ints(c["account_created_ms"], -1),
            payment_hash=_payment_hashes(c["payment_fingerprint"]),
        )


@dataclass(slots=True)
class ClosedWindow:
    """All events of one tumbling window, as numpy columns (one row per event).

    ``account``, ``block``, ``subnet`` and ``model`` are codes into ``accounts``, ``blocks``,
    ``subnets`` and ``models`` (a subnet is `models.events.subnet`: the /24 of IPv4, the /64 of
    IPv6). ``ip_hash`` only supports distinct counts within the window; ``payment_hash`` is a
    stable hash of the payment fingerprint (0 = none).
    ``created_ms`` is -1 where the producer did not send ``account_created_at``.
    """

    start_ms: int
    end_ms: int
    ts: I64
    account: npt.NDArray[np.int32]
    accounts: list[str]
    block: npt.NDArray[np.int32]
    blocks: list[str]
    model: npt.NDArray[np.int32]
    models: list[str]
    ip_hash: I64
    input_tokens: npt.NDArray[np.float64]
    output_tokens: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    fingerprint: npt.NDArray[np.uint64]
    has_fingerprint: npt.NDArray[np.bool_]
    cot: npt.NDArray[np.float64]
    created_ms: I64
    payment_hash: I64
    subnet: npt.NDArray[np.int32]
    subnets: list[str]

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        _with_subnets(self, state)

    @property
    def n_events(self) -> int:
        return int(self.ts.shape[0])

    def canonical(self) -> ClosedWindow:
        """The same events in an order that does not depend on the order they arrived in.

        Rows are sorted by time, account, model, prompt fingerprint, tokens, reasoning score, IP
        block, subnet, error and whether a fingerprint was sent, and names are coded in sorted
        order. Rows equal in all of these differ at most in ``ip_hash``, ``created_ms`` and
        ``payment_hash``, which are read only as distinct counts and per-account minimums, so
        they are interchangeable.

        Examples
        --------
        >>> from models.events import UsageEvent
        >>> def ev(i, t, acct):
        ...     return UsageEvent(f"e{i}", t, acct, "10.0.0.1", "10.0.0.0/24", "m", 10, 20)
        >>> def window(events):
        ...     w = Windower(60_000, 0, external_watermark=True)
        ...     for e in events:
        ...         w.add(e)
        ...     return w.flush()[0]
        >>> a = window([ev(1, 5, "b"), ev(2, 5, "a"), ev(3, 1, "c")])
        >>> b = window([ev(3, 1, "c"), ev(2, 5, "a"), ev(1, 5, "b")])
        >>> a.accounts, a.account.tolist(), a.ts.tolist()
        (['a', 'b', 'c'], [2, 0, 1], [1, 5, 5])
        >>> (a.accounts, a.account.tolist()) == (b.accounts, b.account.tolist())
        True
        """

        def ranked(names: list[str]) -> tuple[npt.NDArray[np.int32], list[str]]:
            order = sorted(range(len(names)), key=names.__getitem__)
            rank = np.empty(len(names), dtype=np.int32)
            rank[order] = np.arange(len(names), dtype=np.int32)
            return rank, [names[i] for i in order]

        account_rank, accounts = ranked(self.accounts)
        block_rank, blocks = ranked(self.blocks)
        model_rank, models = ranked(self.models)
        subnet_rank, subnets = ranked(self.subnets)
        account = account_rank[self.account]
        model = model_rank[self.model]
        block = block_rank[self.block]
        subnet = subnet_rank[self.subnet]
        perm = np.lexsort(
            (
                self.has_fingerprint,
                self.error,
                subnet,
                block,
                self.cot,
                self.output_tokens,
                self.input_tokens,
                self.fingerprint,
                model,
                account,
                self.ts,
            )
        )
        return ClosedWindow(
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            ts=self.ts[perm],
            account=account[perm],
            accounts=accounts,
            block=block[perm],
            blocks=blocks,
            model=model[perm],
            models=models,
            ip_hash=self.ip_hash[perm],
            subnet=subnet[perm],
            subnets=subnets,
            input_tokens=self.input_tokens[perm],
            output_tokens=self.output_tokens[perm],
            error=self.error[perm],
            fingerprint=self.fingerprint[perm],
            has_fingerprint=self.has_fingerprint[perm],
            cot=self.cot[perm],
            created_ms=self.created_ms[perm],
            payment_hash=self.payment_hash[perm],
        )

    @classmethod
    def from_chunks(cls, start_ms: int, end_ms: int, chunks: list[_Chunk]) -> ClosedWindow:
        def merged(attr: str, names_attr: str) -> tuple[npt.NDArray[np.int32], list[str]]:
            index: dict[str, int] = {}
            parts = []
            for c in chunks:
                names = _names(getattr(c, names_attr))
                remap = np.fromiter(
                    (index.setdefault(v, len(index)) for v in names),
                    dtype=np.int32,
                    count=len(names),
                )
                parts.append(remap[getattr(c, attr)])
            return np.concatenate(parts), list(index)

        account, accounts = merged("account", "accounts")
        block, blocks = merged("block", "blocks")
        model, models = merged("model", "models")
        subnet, subnets = merged("subnet", "subnets")

        def cat(attr: str) -> Any:
            return np.concatenate([getattr(c, attr) for c in chunks])

        return cls(
            start_ms=start_ms,
            end_ms=end_ms,
            ts=cat("ts"),
            account=account,
            accounts=accounts,
            block=block,
            blocks=blocks,
            model=model,
            models=models,
            ip_hash=cat("ip_hash"),
            subnet=subnet,
            subnets=subnets,
            input_tokens=cat("input_tokens"),
            output_tokens=cat("output_tokens"),
            error=cat("error"),
            fingerprint=cat("fingerprint"),
            has_fingerprint=cat("has_fingerprint"),
            cot=cat("cot"),
            created_ms=cat("created_ms"),
            payment_hash=cat("payment_hash"),
        )


@dataclass(slots=True)
class _OpenWindow:
    rows: list[UsageEvent] = field(default_factory=list)
    chunks: list[_Chunk] = field(default_factory=list)
    # The window's event ids, for duplicates: without a string per event (`models.seen`).
    ids: SeenIds = field(default_factory=SeenIds)

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        for name, value in state[1].items():
            # A window pickled before `SeenIds` holds its event ids in a set.
            object.__setattr__(
                self, name, SeenIds.of(value) if name == "ids" and isinstance(value, set) else value
            )


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
        win.rows.append(event)
        if len(win.rows) >= CHUNK:
            win.chunks.append(_Chunk.from_rows(win.rows))
            win.rows = []
        if ts > self.max_event_ms:
            self.max_event_ms = ts
            if ts - self.allowed_lateness_ms >= self._next_end and not self.external_watermark:
                self._ready.extend(self._close_until(ts - self.allowed_lateness_ms))
        return True

    def open_windows(self) -> list[int]:
        return sorted(self._open)

    def buffered_events(self) -> int:
        return sum(len(w.ids) for w in self._open.values())

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
        closed = []
        for start in sorted(self._open):
            end = start + self.window_ms
            if end > watermark_ms:
                break
            win = self._open.pop(start)
            if win.rows:
                win.chunks.append(_Chunk.from_rows(win.rows))
            window = ClosedWindow.from_chunks(start, end, win.chunks)
            # Fed by several upstream partitions, a window's rows come in whatever order they
            # arrived; put them in one order so that a replay scores the same window.
            closed.append(window.canonical() if self.external_watermark else window)
            self.closed_before_ms = max(self.closed_before_ms, end)
            self.stats.windows_closed += 1
        self._next_end = min(self._open) + self.window_ms if self._open else np.iinfo(np.int64).max
        return closed
