"""Entity ids to dense row numbers, without a Python object per id.

A ``dict[str, int]`` over a million account ids keeps, for every id, its string (~60 B), an int
object for its row (32 B) and a dict slot (~35 B). The strings and ints also sit among the
worker's short-lived objects in the small-object allocator's 16 KiB pools, where each survivor
keeps a pool from being reused by other sizes or handed back (measured in a worker at 1M
accounts: 506 MB of such pools held 276 MB of live objects). `Keys` keeps the UTF-8 bytes of
every id in one numpy buffer, each row's start and length, and a sorted array of the ids'
hashes beside their rows: about ``len(id) + 24`` bytes per id in five arrays (and the buffers'
headroom), and no object per id. A lookup hashes the queried strings (``hash``, which CPython
caches on each string), finds the candidates with one ``searchsorted`` and confirms each against
the stored bytes, so two ids whose hashes collide are still told apart.

Rows are handed out in order of first appearance, and rows freed by `Keys.remove` are reused
last freed first. The hash only orders the lookup array, so the same ids in the same order get
the same rows in every process; it is recomputed after unpickling, since ``hash`` is salted per
process. New ids are merged into the sorted hashes once per call, an O(n) copy: give
`Keys.rows` a window's ids at once, not one id per call.

Examples
--------
>>> k = Keys()
>>> k.rows(["acct-1", "acct-2", "acct-1"]).tolist()
[0, 1, 0]
>>> k.find(["acct-2", "acct-9"]).tolist()
[1, -1]
>>> k[1], len(k), "acct-1" in k
('acct-2', 2, True)
>>> k.remove(np.array([0]))
>>> k.rows(["acct-3"]).tolist(), k[0]                # the freed row is reused
([0], 'acct-3')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Keys", "kafka_partitions", "pack", "stable_hashes", "unpack"]

I64 = npt.NDArray[np.int64]
Rows = npt.NDArray[np.intp]

FREE = -1  # the length recorded for a row that holds no id


def _hashes(ids: Sequence[str]) -> I64:
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))


def _encoded(ids: Sequence[str]) -> tuple[npt.NDArray[np.uint8], I64]:
    """The UTF-8 bytes of ``ids`` end to end, and each one's length."""
    joined = "".join(ids)
    if joined.isascii():  # the usual case: one character, one byte
        sizes = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.frombuffer(joined.encode(), dtype=np.uint8), sizes
    parts = [s.encode("utf-8", "surrogatepass") for s in ids]
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return np.frombuffer(b"".join(parts), dtype=np.uint8), sizes


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def stable_hashes(ids: Sequence[str]) -> I64:
    """64-bit FNV-1a of each id's UTF-8 bytes, as int64: the same in every process, where
    ``hash`` is salted per process. Computed one byte position at a time over all ids at once
    (ids ordered by length, so each step works on the ids still that long): about 0.1 us an id.

    A column that outlives its process (an open window pickled in a checkpoint, read again by
    the worker that restores it) must hash this way: two processes' ``hash`` of one address
    differ, and a window restored in another process would count it as two addresses.

    >>> h = stable_hashes(["a", "10.0.0.1", "a"]).tolist()
    >>> h[0] == h[2] != h[1], h[0] == stable_hashes(["a"]).tolist()[0]
    (True, True)
    >>> hex(int(stable_hashes(["a"]).view(np.uint64)[0]))   # FNV-1a 64 of b"a"
    '0xaf63dc4c8601ec8c'
    >>> stable_hashes([]).tolist()
    []
    """
    data, sizes = _encoded(ids)
    h = np.full(sizes.size, _FNV_OFFSET, dtype=np.uint64)
    if not sizes.size:
        return h.view(np.int64)
    order = np.argsort(-sizes, kind="stable")  # longest first
    starts = (np.cumsum(sizes) - sizes)[order]
    # longer[j]: how many ids are longer than j bytes, the first that many of ``order``
    longer = np.cumsum(np.bincount(sizes)[::-1])[::-1][1:]
    by_length = h.copy()
    for j, k in enumerate(longer.tolist()):
        by_length[:k] ^= data[starts[:k] + j]
        by_length[:k] *= _FNV_PRIME
    h[order] = by_length
    return h.view(np.int64)


_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> npt.NDArray[np.uint32]:
    """Kafka's murmur2 of each key (what its default partitioner hashes a message key with,
    before ``& 0x7FFFFFFF``), computed over all keys at once: a 4-byte word position at a time,
    without a Python loop per key or a cache of hashes that outlives the call. Every key is
    padded to the longest one's length (fine for IP blocks; not for a few very long keys).

    >>> h = murmur2([b"21", b"foobar", b"abc", b""])    # Kafka's own test vectors, as int32
    >>> [int(x) - (1 << 32) * (x >> 31) for x in h.tolist()]
    [-973932308, -790332482, 479470107, 275646681]
    >>> murmur2([]).tolist()
    []
    """
    n = len(keys)
    sizes = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    width = (int(sizes.max(initial=0)) // 4 + 1) * 4  # room for a partial last word, zero-padded
    data = np.frombuffer(b"".join(k.ljust(width, b"\0") for k in keys), dtype=np.uint8)
    words = data.reshape(n, width).view("<u4")
    h = np.uint32(0x9747B28C) ^ sizes.astype(np.uint32)
    whole = sizes // 4
    for j in range(width // 4 - 1):
        k = words[:, j] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h = np.where(whole > j, (h * _M) ^ k, h)
    # the 1-3 bytes after the last whole word, zero-padded, are that word's low bytes
    tail = words[np.arange(n), whole]
    h = np.where(sizes % 4 > 0, (h ^ tail) * _M, h)
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def kafka_partitions(keys: Sequence[bytes], partitions: int) -> npt.NDArray[np.int64]:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka, librdkafka's
    ``murmur2_random``) gives each key among ``partitions``.

    >>> kafka_partitions([b"21", b"foobar"], 8).tolist()
    [4, 6]
    """
    out: npt.NDArray[np.int64] = ((murmur2(keys) & 0x7FFFFFFF) % partitions).astype(np.int64)
    return out


def pack(ids: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """``ids`` as two arrays, their UTF-8 bytes end to end and each one's length: no Python
    object per id (`unpack` gives them back).

    >>> data, sizes = pack(["a", "bé", ""])
    >>> data.tobytes(), sizes.tolist(), unpack(data, sizes)
    (b'ab\\xc3\\xa9', [1, 3, 0], ['a', 'bé', ''])
    """
    data, sizes = _encoded(ids)
    return data.copy(), sizes.astype(np.int32)


def unpack(data: npt.NDArray[np.uint8], sizes: npt.NDArray[np.integer[Any]]) -> list[str]:
    """The ids `pack` packed, in order."""
    ends = np.cumsum(sizes, dtype=np.int64)
    starts = (ends - sizes).tolist()
    if not data.size or int(data.max()) < 0x80:  # ASCII: one string, sliced
        text = data.tobytes().decode("ascii")
        return [text[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]
    raw = memoryview(data.data)
    return [
        str(raw[s:e], "utf-8", "surrogatepass") for s, e in zip(starts, ends.tolist(), strict=True)
    ]


class Keys:
    """A set of string ids, each with a row number (see the module docstring)."""

    def __init__(self) -> None:
        self._data = np.zeros(64, dtype=np.uint8)
        self._used = 0  # bytes of _data written, removed ids' included until compaction
        self._start = np.zeros(0, dtype=np.int64)
        self._size = np.zeros(0, dtype=np.int32)  # FREE: the row holds no id
        self._high = 0  # rows handed out so far
        self._free = np.zeros(0, dtype=np.int64)  # removed rows, reused from the end
        self._hash = np.zeros(0, dtype=np.int64)  # sorted hashes of the ids...
        self._row = np.zeros(0, dtype=np.int32)  # ...and each one's row

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._hash.size)

    @property
    def high(self) -> int:
        """One past the highest row ever handed out: the rows per-row arrays must hold."""
        return self._high

    def __getitem__(self, row: int) -> str | None:
        """The id in ``row``, or None if the row holds none."""
        if not 0 <= row < self._high or self._size[row] == FREE:
            return None
        return self.ids([row])[0]

    def _held(self, rows: Sequence[int] | Rows | I64) -> I64:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (
            (rows < 0).any() or (rows >= self._high).any() or (self._size[rows] == FREE).any()
        ):
            raise KeyError("a row holds no id")
        return rows

    def ids(self, rows: Sequence[int] | Rows) -> list[str]:
        """The ids in ``rows`` (each must hold one)."""
        rows = self._held(rows)
        data = memoryview(self._data.data)
        starts = self._start[rows].tolist()
        ends = (self._start[rows] + self._size[rows]).tolist()
        return [str(data[s:e], "utf-8", "surrogatepass") for s, e in zip(starts, ends, strict=True)]

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and int(self.find([entity_id])[0]) >= 0

    def find(self, ids: Sequence[str]) -> Rows:
        """The row of each id, -1 where it is not held."""
        return self._find(ids, _hashes(ids))

    def _find(self, ids: Sequence[str], hashes: I64) -> Rows:
        out = np.full(len(ids), -1, dtype=np.intp)
        if not self._hash.size or not len(ids):
            return out
        # Sorted queries walk the sorted hashes once instead of jumping around them (10x faster
        # at a million ids).
        by_hash = np.argsort(hashes)
        pos = np.empty(hashes.size, dtype=np.intp)
        pos[by_hash] = np.searchsorted(self._hash, hashes[by_hash])
        np.minimum(pos, self._hash.size - 1, out=pos)
        hit = np.flatnonzero(self._hash[pos] == hashes)
        if not hit.size:
            return out
        rows = self._row[pos[hit]]
        same = self._same([ids[i] for i in hit.tolist()], rows)
        out[hit[same]] = rows[same]
        for i in hit[~same].tolist():  # another id has the same hash: try the others under it
            j = int(pos[i]) + 1
            while j < self._hash.size and self._hash[j] == hashes[i]:
                if self._same([ids[i]], self._row[j : j + 1])[0]:
                    out[i] = self._row[j]
                    break
                j += 1
        return out

    def _same(self, ids: list[str], rows: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:
        """Whether each id's bytes are the bytes stored in its candidate row."""
        query, sizes = _encoded(ids)
        same: npt.NDArray[np.bool_] = sizes == self._size[rows]
        if not query.size:
            return same
        # Where each query byte's counterpart is stored (clipped: a length that differs is
        # already a mismatch), then the mismatches counted per id from a running total.
        offset = np.cumsum(sizes) - sizes
        at = np.repeat(self._start[rows] - offset, sizes) + np.arange(query.size)
        np.clip(at, 0, max(self._used - 1, 0), out=at)
        wrong = np.zeros(query.size + 1, dtype=np.int64)
        np.cumsum(self._data[at] != query, out=wrong[1:])
        same &= wrong[offset + sizes] == wrong[offset]
        return same

    # -- writing ------------------------------------------------------------------------------
    def rows(self, ids: Sequence[str]) -> Rows:
        """The row of each id, giving each new id one (in order of first appearance)."""
        hashes = _hashes(ids)
        out = self._find(ids, hashes)
        missing = np.flatnonzero(out < 0)
        if missing.size:
            first: dict[str, int] = {}
            for i in missing.tolist():
                first.setdefault(ids[i], i)
            fresh = self._add(list(first), hashes[list(first.values())])
            row_of = dict(zip(first, fresh.tolist(), strict=True))
            out[missing] = [row_of[ids[i]] for i in missing.tolist()]
        return out

    def _add(self, ids: list[str], hashes: I64) -> I64:
        n = len(ids)
        reused = self._free[::-1][:n]
        self._free = self._free[: self._free.size - reused.size]
        fresh = np.arange(self._high, self._high + n - reused.size, dtype=np.int64)
        rows = np.concatenate([reused, fresh])
        self._high += fresh.size
        if self._high > self._start.size:
            extra = max(self._high, 2 * self._start.size) - self._start.size
            self._start = np.concatenate([self._start, np.zeros(extra, dtype=np.int64)])
            self._size = np.concatenate([self._size, np.full(extra, FREE, dtype=np.int32)])
        data, sizes = _encoded(ids)
        self._reserve(data.size)
        self._data[self._used : self._used + data.size] = data
        self._start[rows] = self._used + np.cumsum(sizes) - sizes
        self._size[rows] = sizes
        self._used += data.size
        order = np.argsort(hashes, kind="stable")
        at = np.searchsorted(self._hash, hashes[order])
        self._hash = np.insert(self._hash, at, hashes[order])
        self._row = np.insert(self._row, at, rows[order])
        return rows

    def _reserve(self, extra: int) -> None:
        need = self._used + extra
        if need > self._data.size:
            grown = np.zeros(max(need, 2 * self._data.size), dtype=np.uint8)
            grown[: self._used] = self._data[: self._used]
            self._data = grown

    def remove(self, rows: Rows | I64) -> None:
        """Forget the ids in ``rows`` (rows that hold none are ignored); the rows are reused."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[(rows < self._high) & (rows >= 0)]
        rows = rows[self._size[rows] != FREE]
        if not rows.size:
            return
        self._size[rows] = FREE
        keep = self._size[self._row] != FREE
        self._hash, self._row = self._hash[keep], self._row[keep]
        self._free = np.concatenate([self._free, rows])
        if 2 * int(self._size[: self._high].clip(0).sum()) < self._used:
            self._compact()

    def take(self, rows: Rows | I64) -> Keys:
        """A new `Keys` holding the ids of ``rows`` (each must hold one, once) in rows 0, 1..."""
        rows = self._held(rows)
        if np.unique(rows).size != rows.size:
            raise KeyError("take: a row is given twice")
        renumber = np.full(self._high, -1, dtype=np.int64)
        renumber[rows] = np.arange(rows.size)
        out = Keys()
        out._high = int(rows.size)
        out._start, out._size = self._start[rows], self._size[rows].copy()
        out._data, out._used = self._data, self._used
        out._compact()
        kept = renumber[self._row] >= 0
        out._hash, out._row = self._hash[kept], renumber[self._row[kept]].astype(np.int32)
        return out

    def _compact(self) -> None:
        """Write the held ids' bytes end to end again, dropping removed ids' bytes."""
        held = np.flatnonzero(self._size[: self._high] != FREE)
        sizes = self._size[held].astype(np.int64)
        owner = np.repeat(np.arange(held.size), sizes)
        offset = np.cumsum(sizes) - sizes
        at = self._start[held][owner] + (np.arange(int(sizes.sum())) - offset[owner])
        data = self._data[at]
        self._data = np.zeros(max(64, data.size), dtype=np.uint8)
        self._data[: data.size] = data
        self._used = int(data.size)
        self._start = self._start.copy()
        self._start[held] = offset

    # -- pickling: the bytes and rows, not the hashes (salted per process) ---------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "data": self._data[: self._used].copy(),
            "start": self._start[: self._high].copy(),
            "size": self._size[: self._high].copy(),
            "free": self._free.copy(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data = np.asarray(state["data"], dtype=np.uint8).copy()
        self._used = int(self._data.size)
        self._start = np.asarray(state["start"], dtype=np.int64)
        self._size = np.asarray(state["size"], dtype=np.int32)
        self._high = int(self._start.size)
        self._free = np.asarray(state["free"], dtype=np.int64)
        held = np.flatnonzero(self._size != FREE)
        hashes = _hashes(self.ids(held))
        order = np.argsort(hashes, kind="stable")
        self._hash, self._row = hashes[order], held[order].astype(np.int32)

    @classmethod
    def from_rows(cls, ids: Sequence[str | None], free: Sequence[int] = ()) -> Keys:
        """Keys holding ``ids[r]`` in row ``r`` (None: a free row), with ``free`` the rows to
        reuse, last first (how an older checkpoint kept them: a dict and a list)."""
        out = cls()
        held = [r for r, e in enumerate(ids) if e is not None]
        out._high = len(ids)
        out._start = np.zeros(len(ids), dtype=np.int64)
        out._size = np.full(len(ids), FREE, dtype=np.int32)
        data, sizes = _encoded([ids[r] or "" for r in held])
        out._data = np.zeros(max(64, data.size), dtype=np.uint8)
        out._data[: data.size] = data
        out._used = int(data.size)
        out._start[held] = np.cumsum(sizes) - sizes
        out._size[held] = sizes
        out._free = np.asarray(list(free), dtype=np.int64)
        hashes = _hashes([ids[r] or "" for r in held])
        order = np.argsort(hashes, kind="stable")
        out._hash, out._row = hashes[order], np.asarray(held, dtype=np.int32)[order]
        return out

    def nbytes(self) -> int:
        """Bytes held, headroom included."""
        arrays = (self._data, self._start, self._size, self._free, self._hash, self._row)
        return sum(a.nbytes for a in arrays)
