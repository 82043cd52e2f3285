"""An exact set of string ids without a Python object per id, for duplicate checks per event.

An open window must say, for every event, whether its ``event_id`` came before in the window, so
that a redelivered message is not counted twice. A ``set[str]`` answers that by keeping every id's
string alive until the window closes: at a million events a window, a million small objects
interleaved with the worker's short-lived ones, whose few survivors then keep the allocator's
1 MiB arenas resident long after the window is gone (measured in a worker at 1M accounts: a
window's event-id set held ~80 arenas). `SeenIds` keeps the ids' UTF-8 bytes end to end in one
``bytearray`` (the latest few thousand as the strings they came as, packed a batch at a time), and
an open-addressing table (linear probing, a quarter to half full) of their hashes in ``array('q')``
buffers: a handful of large buffers, ``len(id)`` plus 48 to 80 bytes per id, that go back to the
system as a whole when the window closes. It costs more per id than a set (~0.6 us against
~0.1 us to add one), which the window pays once per event.

A hash only finds candidates: every candidate is compared with the stored bytes, so two ids whose
hashes collide are still two ids. ``hash`` is salted per process, so the table is rebuilt from the
stored ids after unpickling (a checkpoint restored by another process).

Examples
--------
>>> seen = SeenIds()
>>> seen.add("e-1"), seen.add("e-2"), seen.add("e-1")
(True, True, False)
>>> len(seen), "e-2" in seen, "e-3" in seen
(2, True, False)
>>> import pickle
>>> clone = pickle.loads(pickle.dumps(seen))
>>> clone.add("e-2"), clone.add("e-3"), len(clone)
(False, True, 3)
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from models.keys import pack

__all__ = ["SeenIds"]

_EMPTY = 0  # a free slot; an id whose hash is 0 is stored under 1
PACK = 4096  # ids kept as strings before they are packed into bytes


class SeenIds:
    """A set of string ids that only grows (see the module docstring)."""

    __slots__ = ("_at", "_data", "_ends", "_hashes", "_mask", "_recent", "_table")

    def __init__(self) -> None:
        self._table = array("q", bytes(8 * 64))  # hash per slot, _EMPTY where free
        self._at = array("q", bytes(8 * 64))  # which id (in order of arrival) a slot holds
        self._mask = 63
        self._hashes = array("q")  # each id's hash, in order of arrival
        # The ids: the first ``len(_ends)`` as UTF-8 bytes end to end, the latest few as the
        # strings they came as (packed `PACK` at a time, so an id costs no call to encode).
        self._data = bytearray()
        self._ends = array("q")
        self._recent: list[str] = []

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and self._probe(entity_id, hash(entity_id) or 1) < 0

    def _probe(self, entity_id: str, h: int) -> int:
        """The free slot where ``entity_id`` (hash ``h``) would go, or -1 if it is held."""
        table, mask = self._table, self._mask
        i = h & mask
        held = table[i]
        while held != _EMPTY:
            if held == h and self._id(self._at[i]) == entity_id:
                return -1
            i = (i + 1) & mask
            held = table[i]
        return i

    def _id(self, k: int) -> str:
        packed = len(self._ends)
        if k >= packed:
            return self._recent[k - packed]
        ends = self._ends
        return str(self._data[ends[k - 1] if k else 0 : ends[k]], "utf-8", "surrogatepass")

    def add(self, entity_id: str) -> bool:
        """Add ``entity_id``; False if it was already held."""
        h = hash(entity_id) or 1
        i = self._probe(entity_id, h)
        if i < 0:
            return False
        hashes = self._hashes
        k = len(hashes)
        self._table[i] = h
        self._at[i] = k
        hashes.append(h)
        recent = self._recent
        recent.append(entity_id)
        if len(recent) >= PACK:
            self._pack()
        if 2 * (k + 1) > self._mask + 1:
            self._rebuild(2 * (self._mask + 1))
        return True

    def _pack(self) -> None:
        data, sizes = pack(self._recent)
        base = len(self._data)
        self._data += data.tobytes()
        self._ends.extend((base + np.cumsum(sizes, dtype=np.int64)).tolist())
        self._recent = []

    def _rebuild(self, size: int) -> None:
        """Lay every id out again in a table of ``size`` slots (a power of two), vectorised:
        each round, every id not yet placed takes its current slot if that is free (the first
        of them in order of arrival, where several want it) or moves on to the next one. A slot
        once taken stays taken, so each id ends up where a lookup probing from its hash finds it.
        """
        h = (
            np.frombuffer(self._hashes, dtype=np.int64)
            if len(self._hashes)
            else np.zeros(0, np.int64)
        )
        table = np.zeros(size, dtype=np.int64)
        at = np.zeros(size, dtype=np.int64)
        mask = size - 1
        pos = h & mask
        pending = np.arange(h.size)
        first = np.full(size, h.size, dtype=np.int64)  # per slot, the first id that wants it
        waiting = np.ones(h.size, dtype=np.bool_)
        while pending.size:
            p = pos[pending]
            free = table[p] == _EMPTY
            want, who = p[free], pending[free]
            np.minimum.at(first, want, who)
            placed = who[first[want] == who]
            table[pos[placed]] = h[placed]
            at[pos[placed]] = placed
            first[want] = h.size
            waiting[placed] = False
            pending = pending[waiting[pending]]
            pos[pending] = (pos[pending] + 1) & mask
        self._table = array("q", table.tobytes())
        self._at = array("q", at.tobytes())
        self._mask = mask

    def nbytes(self) -> int:
        """Bytes held in the buffers (the latest ids, still strings, not counted)."""
        arrays = (self._table, self._at, self._ends, self._hashes)
        return sum(b.itemsize * len(b) for b in arrays) + len(self._data)

    # -- pickling: the ids only; hashes are salted per process ---------------------------------
    def __getstate__(self) -> dict[str, Any]:
        self._pack()
        return {"data": bytes(self._data), "ends": array("q", self._ends)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data = bytearray(state["data"])
        self._ends = state["ends"]
        self._recent = []
        data, ends = self._data, self._ends.tolist()
        starts = [0, *ends][:-1]
        self._hashes = array(
            "q",
            (
                hash(str(data[s:e], "utf-8", "surrogatepass")) or 1
                for s, e in zip(starts, ends, strict=True)
            ),
        )
        size = 64
        while 2 * len(ends) > size:
            size *= 2
        self._rebuild(size)

    @classmethod
    def of(cls, ids: Any) -> SeenIds:
        """A `SeenIds` holding ``ids`` (a window's ``set[str]`` from an older checkpoint)."""
        seen = cls()
        for entity_id in sorted(ids):
            seen.add(entity_id)
        return seen
