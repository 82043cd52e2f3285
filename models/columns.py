"""A window's events as numpy columns: the slices an open window buffers, and a closed window.

A window's events are turned into `Chunk`s of columns a batch at a time (at most `CHUNK`
events each; `models.windows`), or arrive as chunks (the IP-block stage); when a window
closes, its chunks are concatenated into one `ClosedWindow`, with the string columns (accounts,
IP blocks, models, subnets) factorised over the whole window, so the features of every entity
in it are computed in one vectorised pass (`models.features`).

    >>> from models.events import UsageEvent
    >>> rows = [
    ...     UsageEvent("e1", 1_000, "acct-a", "10.0.0.1", "10.0.0.0/24", "m", 10, 20),
    ...     UsageEvent("e2", 2_000, "acct-b", "10.0.0.2", "10.0.0.0/24", "m", 30, 40),
    ...     UsageEvent("e3", 3_000, "acct-a", "10.0.1.9", "10.0.1.0/24", "m", 50, 60),
    ... ]
    >>> chunks = [Chunk.from_rows(rows[:2]), Chunk.from_rows(rows[2:])]
    >>> window = ClosedWindow.from_chunks(0, 60_000, chunks)
    >>> window.n_events, window.accounts, window.account.tolist()
    (3, ['acct-a', 'acct-b'], [0, 1, 0])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.events import UsageEvent
from models.events import subnet as _subnet
from models.keys import pack, stable_hashes, unpack

__all__ = ["CHUNK", "Chunk", "ClosedWindow"]

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


def _payment_hashes(values: tuple[str | None, ...]) -> I64:
    """Stable 63-bit hashes of payment fingerprints (0 = none): the same in every process, so
    campaign links built from them survive a restart and agree between workers. Each distinct
    fingerprint of the chunk is hashed once; nothing is kept past the call (a cache across
    chunks holds objects made amid each batch's short-lived ones, whose memory they then keep
    from going back to the system)."""
    hashed: dict[str, int] = {}
    out = np.zeros(len(values), dtype=np.int64)
    for i, p in enumerate(values):
        if p is None:
            continue
        h = hashed.get(p)
        if h is None:
            digest = hashlib.blake2b(p.encode(), digest_size=8).digest()
            h = hashed[p] = (int.from_bytes(digest, "little") >> 1) or 1
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
class Chunk:
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
    def from_rows(cls, rows: list[UsageEvent]) -> Chunk:
        # The events' fields as columns, by name.
        c = dict(zip(UsageEvent._fields, zip(*rows, strict=True), strict=True))
        n = len(rows)
        account, accounts = _factorize(c["account_id"])
        block, blocks = _factorize(c["ip_block"])
        model, models = _factorize(c["model"])
        nets: dict[str, str] = {}  # the chunk's IPv6 addresses -> their /64, each parsed once
        subnet, subnets = _factorize(
            [
                b if b and ":" not in b else nets.get(ip) or nets.setdefault(ip, _subnet(ip, b))
                for ip, b in zip(c["ip"], c["ip_block"], strict=True)
            ]
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
            ip_hash=stable_hashes(c["ip"]),
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

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def names(self, column: str) -> list[str]:
        """The names a code column refers to: ``accounts``, ``blocks``, ``models``, ``subnets``."""
        if column not in _NAME_COLUMNS:
            raise ValueError(f"{column!r} is not a names column: {', '.join(_NAME_COLUMNS)}")
        return _names(getattr(self, column))

    def take(self, rows: npt.NDArray[np.intp]) -> Chunk:
        """The chunk of ``rows`` (positions, in the order given), its names only those they use.

        >>> rows = [UsageEvent(f"e{i}", i, f"acct-{i % 3}", "10.0.0.1", "10.0.0.0/24", "m", 1, 2)
        ...         for i in range(6)]
        >>> part = Chunk.from_rows(rows).take(np.array([4, 1, 5]))
        >>> part.ts.tolist(), _names(part.accounts), part.account.tolist()
        ([4, 1, 5], ['acct-1', 'acct-2'], [0, 0, 1])
        """

        def names(codes: npt.NDArray[np.int32], table: Names) -> tuple[Any, Names]:
            # names in the order the rows first use them, as `from_rows` of those rows codes them:
            # each name's first row found in one pass (no larger than the chunk's names, which
            # are no more than its rows), not by sorting the rows' codes
            c = codes[rows]
            m = len(table) if isinstance(table, list) else int(table[1].size)
            first = np.full(m, c.size, dtype=np.int64)
            np.minimum.at(first, c, np.arange(c.size, dtype=np.int64))
            used = np.flatnonzero(first < c.size)
            used = used[np.argsort(first[used])]  # first rows are distinct: one order
            rank = np.zeros(m, dtype=np.int32)
            rank[used] = np.arange(used.size, dtype=np.int32)
            code = rank[c]
            if isinstance(table, list):
                return code, pack([table[u] for u in used.tolist()])
            # the used names' bytes gathered at once, without a string each
            data, sizes = table
            starts = (np.cumsum(sizes, dtype=np.int64) - sizes)[used]
            kept = sizes[used].astype(np.int64)
            ends = np.cumsum(kept)
            at = np.arange(int(ends[-1]) if ends.size else 0, dtype=np.int64)
            at += np.repeat(starts - (ends - kept), kept)
            return code, (data[at], kept.astype(np.int32))

        cols: dict[str, Any] = {
            name: getattr(self, name)[rows] for name in _COLUMNS if name not in _CODED
        }
        for codes, table in _CODED.items():
            cols[codes], cols[table] = names(getattr(self, codes), getattr(self, table))
        return Chunk(**cols)

    @classmethod
    def concat(cls, chunks: list[Chunk]) -> Chunk:
        """One chunk of the rows of ``chunks``, in order.

        >>> rows = [UsageEvent(f"e{i}", i, f"acct-{i % 2}", "10.0.0.1", "10.0.0.0/24", "m", 1, 2)
        ...         for i in range(3)]
        >>> both = Chunk.concat([Chunk.from_rows(rows[:2]), Chunk.from_rows(rows[2:])])
        >>> both.ts.tolist(), both.names("accounts"), both.account.tolist()
        ([0, 1, 2], ['acct-0', 'acct-1'], [0, 1, 0])
        """
        if len(chunks) == 1:
            return chunks[0]

        cols: dict[str, Any] = {
            name: np.concatenate([getattr(c, name) for c in chunks])
            for name in _COLUMNS
            if name not in _CODED
        }
        for codes, names in _CODED.items():
            code, merged = _merged(chunks, codes, names)
            cols[codes], cols[names] = code, pack(merged)
        return cls(**cols)

    def to_buffers(self) -> dict[str, bytes]:
        """Each column's bytes (little-endian), names as their packed bytes and lengths: what
        `from_buffers` reads back, and what travels between a worker's stages.

        >>> rows = [UsageEvent("e1", 7, "a", "10.0.0.1", "10.0.0.0/24", "m", 1, 2, cot_score=0.5)]
        >>> back = Chunk.from_buffers(Chunk.from_rows(rows).to_buffers())
        >>> back.ts.tolist(), _names(back.accounts), back.cot.tolist()
        ([7], ['a'], [0.5])
        """
        out: dict[str, bytes] = {}
        for name, dtype in _COLUMNS.items():
            out[name] = np.ascontiguousarray(getattr(self, name), dtype=dtype).tobytes()
        for name in _NAME_COLUMNS:
            names = getattr(self, name)
            data, sizes = pack(names) if isinstance(names, list) else names
            out[name] = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
            out[name + "_sizes"] = np.ascontiguousarray(sizes, dtype="<i4").tobytes()
        return out

    @classmethod
    def from_buffers(cls, buffers: dict[str, bytes]) -> Chunk:
        """The chunk `to_buffers` wrote; raises ValueError if its columns disagree in length
        or a code points past its names."""
        missing = [n for n in (*_COLUMNS, *_NAME_COLUMNS) if n not in buffers]
        if missing:
            raise ValueError(f"columns missing: {', '.join(missing)}")
        cols: dict[str, Any] = {
            name: np.frombuffer(buffers[name], dtype=dtype).astype(dtype.lstrip("<"), copy=False)
            for name, dtype in _COLUMNS.items()
        }
        for name in _NAME_COLUMNS:
            data = np.frombuffer(buffers[name], dtype=np.uint8)
            sizes = np.frombuffer(buffers.get(name + "_sizes", b""), "<i4").astype(np.int32)
            if sizes.size and (int(sizes.min()) < 0 or int(sizes.sum()) != data.size):
                raise ValueError(f"column {name}: lengths do not add up to its bytes")
            try:  # refused here, not when its window closes (ASCII needs no look)
                if data.size and int(data.max()) >= 0x80:
                    unpack(data, sizes)
            except UnicodeError:
                raise ValueError(f"column {name}: a name that is not UTF-8") from None
            cols[name] = (data, sizes)
        n = cols["ts"].size
        for name in ("error", "has_fingerprint"):
            if cols[name].size and int(cols[name].view(np.uint8).max()) > 1:
                raise ValueError(f"column {name}: a flag that is neither 0 nor 1")
        for name in _COLUMNS:
            if cols[name].size != n:
                raise ValueError(f"column {name} has {cols[name].size} rows, ts has {n}")
        for codes, names in _CODED.items():
            c = cols[codes]
            if c.size and (int(c.min()) < 0 or int(c.max()) >= cols[names][1].size):
                raise ValueError(f"column {codes} refers past its {cols[names][1].size} names")
        return cls(**cols)


def _merged(chunks: list[Chunk], codes: str, names: str) -> tuple[npt.NDArray[np.int32], list[str]]:
    """The code column ``codes`` of ``chunks`` end to end, coded into one list of their
    ``names``, in the order the rows first use them."""
    index: dict[str, int] = {}
    parts = []
    for c in chunks:
        mine = _names(getattr(c, names))
        remap = np.fromiter(
            (index.setdefault(v, len(index)) for v in mine), dtype=np.int32, count=len(mine)
        )
        parts.append(remap[getattr(c, codes)])
    return np.concatenate(parts), list(index)


# A chunk's columns as they travel (`Chunk.to_buffers`), and the names each code refers to.
_COLUMNS = {
    "ts": "<i8",
    "account": "<i4",
    "block": "<i4",
    "model": "<i4",
    "subnet": "<i4",
    "ip_hash": "<i8",
    "input_tokens": "<f8",
    "output_tokens": "<f8",
    "error": "?",
    "fingerprint": "<u8",
    "has_fingerprint": "?",
    "cot": "<f8",
    "created_ms": "<i8",
    "payment_hash": "<i8",
}
_CODED = {"account": "accounts", "block": "blocks", "model": "models", "subnet": "subnets"}
_NAME_COLUMNS = tuple(_CODED.values())


@dataclass(slots=True)
class ClosedWindow:
    """All events of one tumbling window, as numpy columns (one row per event).

    ``account``, ``block``, ``subnet`` and ``model`` are codes into ``accounts``, ``blocks``,
    ``subnets`` and ``models`` (a subnet is `models.events.subnet`: the /24 of IPv4, the /64 of
    IPv6). ``ip_hash`` (`models.keys.stable_hashes` of the address, the same in every process,
    so a window restored from a checkpoint by another worker counts an address once) supports
    distinct counts within the window; ``payment_hash`` is a stable hash of the payment
    fingerprint (0 = none).
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
        ...     return ClosedWindow.from_chunks(0, 60_000, [Chunk.from_rows(events)]).canonical()
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
    def from_chunks(cls, start_ms: int, end_ms: int, chunks: list[Chunk]) -> ClosedWindow:
        account, accounts = _merged(chunks, "account", "accounts")
        block, blocks = _merged(chunks, "block", "blocks")
        model, models = _merged(chunks, "model", "models")
        subnet, subnets = _merged(chunks, "subnet", "subnets")

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
