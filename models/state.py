"""Per-entity state in numpy columns: a few hundred bytes per account or IP block.

One row per tracked entity holds everything the detector remembers about it between windows:
its own feature baseline, its Page-Hinkley drift test, and its enforcement history. Rows live in
preallocated numpy arrays that double when full, so the per-entity cost is the column widths
and the id's bytes (see `EntityTable.bytes_per_entity`), not a Python object graph: the ids are
kept in `models.keys.Keys`, in numpy arrays rather than as a string, an int and a dict slot
each. Entities idle for longer than a retention period can be evicted
(`EntityTable.evict_idle`); their row is reused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.drift import PageHinkleyBank
from models.evidence import EvidenceMemory
from models.keys import Keys

__all__ = ["EntityTable"]

NO_TIME = np.iinfo(np.int64).min


class EntityTable:
    """Rows of per-entity state for one entity kind.

    Examples
    --------
    >>> t = EntityTable(n_features=3)
    >>> t.rows(["a", "b", "a"]).tolist()
    [0, 1, 0]
    >>> len(t), t.keys[1]
    (2, 'b')
    """

    def __init__(self, n_features: int, capacity: int = 1024) -> None:
        self.n_features = n_features
        self.keys = Keys()
        cap = capacity
        # Own behaviour: EWMA of raw feature values (NaN = never observed) and windows seen.
        self.baseline = np.full((cap, n_features), np.nan, dtype=np.float32)
        self.windows = np.zeros(cap, dtype=np.int32)
        self.last_seen_ms = np.full(cap, NO_TIME, dtype=np.int64)
        self.last_score = np.zeros(cap, dtype=np.float32)
        # Enforcement history: current level (0 none, 1 flag, 2 throttle, 3 suspend), when it
        # lapses, when it last changed, windows over the flag threshold in this episode,
        # consecutive windows over the sustained threshold with extraction behaviour
        # (`models.policy`), and consecutive quiet windows (for hysteresis).
        self.level = np.zeros(cap, dtype=np.int8)
        self.expires_ms = np.full(cap, NO_TIME, dtype=np.int64)
        self.changed_ms = np.full(cap, NO_TIME, dtype=np.int64)
        self.renewed_ms = np.full(cap, NO_TIME, dtype=np.int64)
        self.strikes = np.zeros(cap, dtype=np.int16)
        self.near = np.zeros(cap, dtype=np.int16)
        self.quiet = np.zeros(cap, dtype=np.int16)
        # Until when the entity's windows stay out of the population reference (see Detector).
        self.excluded_until_ms = np.full(cap, NO_TIME, dtype=np.int64)
        self.drift = PageHinkleyBank(min_instances=8, delta=0.01, threshold=1.0, capacity=cap)
        self.evidence = EvidenceMemory(capacity=cap)

    def __len__(self) -> int:
        return len(self.keys)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "index" in state:  # a checkpoint from before `Keys`: a dict, a list, free rows
            state["keys"] = Keys.from_rows(state.pop("ids"), state.pop("_free"))
            del state["index"]
        if "near" not in state:  # a checkpoint from before the sustained tier: none counted yet
            state["near"] = np.zeros_like(state["strikes"])
        self.__dict__.update(state)

    @property
    def capacity(self) -> int:
        return int(self.windows.size)

    def _grow(self) -> None:
        cap = self.capacity
        for name in ("windows", "last_seen_ms", "last_score", "level", "expires_ms"):
            self._extend(name, cap)
        for name in ("changed_ms", "renewed_ms", "strikes", "near", "quiet", "excluded_until_ms"):
            self._extend(name, cap)
        self.baseline = np.concatenate(
            [self.baseline, np.full((cap, self.n_features), np.nan, dtype=np.float32)]
        )
        self.drift.grow(2 * cap)
        self.evidence.grow(2 * cap)

    def _extend(self, name: str, extra: int) -> None:
        col: npt.NDArray[np.generic] = getattr(self, name)
        fill = NO_TIME if col.dtype == np.int64 else 0
        setattr(self, name, np.concatenate([col, np.full(extra, fill, dtype=col.dtype)]))

    def row(self, entity_id: str) -> int:
        """The row of an entity, allocating (or reusing an evicted) one if new."""
        return int(self.rows([entity_id])[0])

    def rows(self, entity_ids: list[str]) -> npt.NDArray[np.intp]:
        """The row of each entity, allocating (or reusing evicted) rows for new ones."""
        rows = self.keys.rows(entity_ids)
        while self.keys.high > self.capacity:
            self._grow()
        return rows

    def lookup(self, entity_id: str) -> int | None:
        r = int(self.keys.find([entity_id])[0])
        return r if r >= 0 else None

    def evict_idle(self, now_ms: int, retention_ms: int) -> int:
        """Forget entities unseen for ``retention_ms`` and under no enforcement; returns count."""
        n = self.keys.high
        idle = (self.last_seen_ms[:n] < now_ms - retention_ms) & (
            (self.level[:n] == 0) | (self.expires_ms[:n] < now_ms)
        )
        idle &= self.last_seen_ms[:n] != NO_TIME
        rows = np.flatnonzero(idle)
        self.keys.remove(rows)
        self.baseline[rows] = np.nan
        for name in ("windows", "last_score", "level", "strikes", "near", "quiet"):
            getattr(self, name)[rows] = 0
        for name in ("last_seen_ms", "expires_ms", "changed_ms", "renewed_ms", "excluded_until_ms"):
            getattr(self, name)[rows] = NO_TIME
        self.drift.reset(rows)
        self.evidence.reset(rows)
        return int(rows.size)

    def column_bytes_per_entity(self) -> int:
        """Bytes of numpy state per row."""
        per_row = self.baseline.itemsize * self.n_features
        for name in ("windows", "last_seen_ms", "last_score", "level", "expires_ms"):
            per_row += getattr(self, name).itemsize
        for name in ("changed_ms", "renewed_ms", "strikes", "near", "quiet", "excluded_until_ms"):
            per_row += getattr(self, name).itemsize
        return per_row + self.drift.nbytes_per_entity() + self.evidence.nbytes_per_entity()

    def bytes_per_entity(self) -> float:
        """Measured bytes per tracked entity: columns at capacity and the ids' keys."""
        n = max(len(self), 1)
        return (self.column_bytes_per_entity() * self.capacity + self.keys.nbytes()) / n
