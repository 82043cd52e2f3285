"""Prompt templates across accounts: near-duplicate SimHash fingerprints get one template id.

A templated prompt is the same text with its slots filled differently, so its 64-bit SimHash
fingerprints differ from the template's in a few bits, wherever the slot words happened to land.
`TemplateIndex` gives each fingerprint the id of a known template within `MATCH_BITS` of it, so that
"these 300 accounts use the same 25 templates" becomes a statement about template ids.

Lookup is locality-sensitive hashing by bit sampling (Indyk & Motwani, 1998): ``tables`` fixed,
seeded sets of ``bits_per_table`` bit positions; a template is a candidate for a fingerprint when
its centroid agrees with it on every sampled position of some table, and a candidate is accepted
when the full Hamming distance is within `MATCH_BITS`. A fingerprint ``d`` bits from a centroid is
found with probability about ``1 - (1 - C(64 - d, k) / C(64, k)) ** tables`` (99.7% for
``d = 4``, 76% for ``d = 8`` with the defaults); the fixed tables overlap, so they miss together
somewhat more often: measured over 5,000 templates, 97.6% at 4 bits and 72% at 8. Unrelated
prompts differ in about 32 bits; the chance that one lies within `MATCH_BITS` (12) of a given
centroid is about 2.3e-7. That chance is paid per *pair*: two unrelated groups with 400
templates each hold 160,000 pairs, so within 16 bits (3.9e-5) about six of their templates would
be one, and link every account of one group to the other (a campaign to a public benchmark);
within 12, about 0.04.

Most prompts are not templated and are never seen again, so a fingerprint that matches nothing
starts a template only if its hash falls in a fixed ``1 / register_every`` share: a template is
tracked after about ``register_every`` of its requests, and the index holds a sample of one-off
prompts instead of all of them (one-off templates are forgotten after ``singleton_ttl_ms``). A
template's centroid is the bitwise majority of the fingerprints assigned to it, so it moves from
its first fingerprint towards the template itself; templates whose centroids meet are merged into
the older one, whose id the merged ids then resolve to (`TemplateIndex.canonical`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.graph import components
from models.sorting import lexsort

__all__ = ["MATCH_BITS", "TemplateIndex"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

# Unrelated fingerprints are Binomial(64, 1/2) bits apart (32 +- 4); 12 bits is five standard
# deviations below, while slot fillers move a template's fingerprint by a handful of bits (the
# contract: "near-duplicate prompts differ in few bits"). `models.evidence` reads templated
# prompts within an account on the same scale.
MATCH_BITS = 12
_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Lookups (`TemplateIndex._runs`): up to _DENSE_CODES possible codes, this many queries or more
# go through a table of run starts (4 bytes a code); an index of up to _SMALL_INDEX keys stays in
# the CPU's cache and is searched directly.
_DENSE_CODES = 1 << 22
# Templates sharing one lookup code: with SimHash fingerprints (bits as good as random), 200,000
# templates put about 3 behind a code and the default scenario's longest run is 5. Fingerprints
# whose bits vary little (a short hash padded with zeros) put many templates behind each code of
# a table; such runs are passed over (other tables still find a near duplicate), or candidates
# would grow with the square of the templates.
_MAX_RUN = 64
# Fingerprints matched at a time: candidates are (fingerprints x tables x run length) rows, so a
# window of a million prompts is matched a slice at a time, in bounded memory.
_QUERY_SLICE = 1 << 16
_DENSE_QUERIES = 1 << 14
_SMALL_INDEX = 1 << 13


class TemplateIndex:
    """Streaming assignment of prompt fingerprints to template ids (0 = no template).

    Parameters
    ----------
    tables, bits_per_table
        Bit-sampling LSH: how many tables, and how many sampled bit positions each.
    register_every
        About one in this many unmatched fingerprints starts a template.
    capacity
        Most templates remembered; the least recently used are forgotten first.
    ttl_ms, singleton_ttl_ms
        Templates unused for this long (event time) are forgotten; templates that never got a
        second fingerprint sooner.
    seed
        Seed of the sampled bit positions.

    Examples
    --------
    Requests from two templates, slots filled differently, and unrelated prompts:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.integers(0, 2**63, size=2, dtype=np.int64).astype(np.uint64)
    >>> def fill(b):   # three slot words flip three bits of the fingerprint
    ...     flips = rng.choice(64, size=3, replace=False).astype(np.uint64)
    ...     return b ^ np.bitwise_or.reduce(np.uint64(1) << flips)
    >>> index = TemplateIndex()
    >>> for minute in range(3):
    ...     fps = np.array([fill(base[i % 2]) for i in range(40)], dtype=np.uint64)
    ...     other = rng.integers(0, 2**63, size=40, dtype=np.int64).astype(np.uint64)
    ...     ts = np.arange(80, dtype=np.uint64) + np.uint64(minute * 60_000)
    ...     ids = index.assign(np.concatenate([fps, other]), minute * 60_000, salt=ts)
    >>> first, second = set(ids[:40:2].tolist()) - {0}, set(ids[1:40:2].tolist()) - {0}
    >>> len(first), len(second), first != second          # one template id each
    (1, 1, True)
    >>> float((ids[:40] > 0).mean()) > 0.9                # found by nearly every request
    True
    >>> int((ids[40:] > 0).sum()) <= 10                   # most one-off prompts get no template
    True
    """

    def __init__(
        self,
        tables: int = 16,
        bits_per_table: int = 16,
        register_every: int = 8,
        capacity: int = 200_000,
        ttl_ms: int = 2 * 3_600_000,
        singleton_ttl_ms: int = 10 * 60_000,
        seed: int = 0,
    ) -> None:
        # The index packs (code, slot) in 64 bits and counts its keys in int32 run starts.
        if tables << bits_per_table > 1 << 32 or capacity * tables >= 1 << 31:
            raise ValueError(
                f"a template index of {tables} tables of {bits_per_table} bits and capacity "
                f"{capacity} is too large: keep tables * 2**bits_per_table <= 2**32 and "
                "capacity * tables < 2**31"
            )
        rng = np.random.default_rng(seed)
        self.tables = tables
        self.bits_per_table = bits_per_table
        self.register_every = register_every
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.singleton_ttl_ms = singleton_ttl_ms
        self.positions = [
            np.sort(rng.choice(64, size=bits_per_table, replace=False)).tolist()
            for _ in range(tables)
        ]
        # Byte lookup tables: _lut[byte, value, table] is the part of table's code that the
        # sampled bits in that byte of a fingerprint contribute.
        self._lut = np.zeros((8, 256, tables), dtype=np.uint64)
        values = np.arange(256, dtype=np.uint64)
        for t, positions in enumerate(self.positions):
            for j, p in enumerate(positions):
                bit = (values >> np.uint64(p % 8)) & np.uint64(1)
                self._lut[p // 8, :, t] |= bit << np.uint64(j)
        self.ids = np.zeros(0, dtype=np.int64)
        self.centroid = np.zeros(0, dtype=np.uint64)
        self.votes = np.zeros((0, 64), dtype=np.uint16)  # how many fingerprints set each bit
        self.weight = np.zeros(0, dtype=np.uint16)  # how many fingerprints voted
        self.last_ms = np.zeros(0, dtype=np.int64)
        self.next_id = 1
        self.aliases: dict[int, int] = {}  # merged template id -> the id that absorbed it
        self._alias_ms: dict[int, int] = {}
        # The index: lookup codes of the centroids, sorted by (code, slot), and their slots.
        self._keys = np.zeros(0, dtype=np.uint64)
        self._slot_of_key = np.zeros(0, dtype=np.int64)
        # Per slot, the centroid its index entries were computed from (`_reindex` redoes the
        # slots where it differs; a new slot holds its centroid's complement). Not pickled: a
        # checkpoint is taken between calls, when the index is current.
        self._indexed = np.zeros(0, dtype=np.uint64)
        # Where each lookup code's run starts in _keys (built when first needed, not pickled),
        # and the buffer it is built in, kept: a fresh 4 MB table costs its page faults each time.
        self._start: npt.NDArray[np.int32] | None = None
        self._start_buffer: npt.NDArray[np.int32] | None = None

    def __len__(self) -> int:
        return int(self.ids.size)

    def __getstate__(self) -> dict[str, object]:
        derived = ("_start", "_start_buffer", "_indexed")
        return {k: v for k, v in self.__dict__.items() if k not in derived}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._start = self._start_buffer = None
        self._indexed = self.centroid.copy()

    def _codes(self, fps: U64) -> U64:
        """(fingerprints, tables) lookup codes: sampled bits packed, tagged with their table."""
        tag = np.arange(self.tables, dtype=np.uint64) << np.uint64(self.bits_per_table)
        out = np.broadcast_to(tag, (fps.size, self.tables)).copy()
        for byte in range(8):
            out |= self._lut[byte, ((fps >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.intp)]
        return out

    def _reindex(self) -> None:
        """Bring the index up to the centroids: the entries of templates that are new or whose
        centroid moved since they were indexed are (re)computed and merged in, in (code, slot)
        order, so the slots under one code keep their order on every machine and so do the
        matches. A window adds and forgets about a thousand of 15,000 templates and moves a few
        dozen: merging their entries costs a pass over the index, sorting them all several."""
        changed = np.flatnonzero(self._indexed != self.centroid)
        if changed.size == 0:
            return
        redo = np.zeros(self.ids.size, dtype=np.bool_)
        redo[changed] = True
        kept = ~redo[self._slot_of_key]
        keys, slots = self._keys[kept], self._slot_of_key[kept]
        codes = self._codes(self.centroid[changed]).ravel()
        new_slots = np.repeat(changed, self.tables)
        order = lexsort((new_slots, codes))
        codes, new_slots = codes[order], new_slots[order]
        # Codes take tables * 2**bits_per_table values (2**20 by default, at most 2**32: the
        # constructor checks), slots fewer than 2**32: (code, slot) packed in one uint64 orders
        # as the pair does.
        at = np.searchsorted(_packed(keys, slots), _packed(codes, new_slots))
        self._keys = np.insert(keys, at, codes)
        self._slot_of_key = np.insert(slots, at, new_slots)
        self._indexed[changed] = self.centroid[changed]
        self._start = None

    def _runs(self, codes: U64, index: tuple[U64, I64] | None) -> tuple[I64, I64]:
        """Where each code's run of equal keys starts and ends in the sorted keys (the index's,
        or ``index``'s): ``searchsorted`` left and right, found the cheapest way for the sizes.

        Codes take ``tables * 2**bits_per_table`` values (1M by default). Many queries are
        answered from a table of run starts over all codes (4 bytes a code, half the table of 8
        bytes, so more of it stays in cache; the whole index's is kept until the index changes,
        not pickled, and its buffer is reused, also for ``index``'s, which then invalidates it);
        a few queries by searching."""
        keys = self._keys if index is None else index[0]
        n_codes = self.tables << self.bits_per_table
        many = codes.size >= _DENSE_QUERIES and n_codes <= _DENSE_CODES
        start = self._start if index is None else None
        if many or start is not None:
            if start is None:
                start = self._start_buffer
                if start is None or start.size != n_codes + 1:
                    start = self._start_buffer = np.zeros(n_codes + 1, dtype=np.int32)
                counts = np.bincount(keys.astype(np.intp), minlength=n_codes)
                np.cumsum(counts, dtype=np.int32, out=start[1:])
                self._start = start if index is None else None
            at = codes.astype(np.intp)
            return start[at].astype(np.int64), start[at + 1].astype(np.int64)
        if keys.size <= _SMALL_INDEX or codes.size < _DENSE_QUERIES:
            return np.searchsorted(keys, codes, "left"), np.searchsorted(keys, codes, "right")
        # Sorted queries walk a large key array once instead of jumping around it (10x faster).
        by_code = np.argsort(codes)
        lo = np.empty(codes.size, dtype=np.int64)
        hi = np.empty(codes.size, dtype=np.int64)
        lo[by_code] = np.searchsorted(keys, codes[by_code], side="left")
        hi[by_code] = np.searchsorted(keys, codes[by_code], side="right")
        return lo, hi

    def _candidates(self, fps: U64, index: tuple[U64, I64] | None = None) -> tuple[I64, I64, I64]:
        """(query, slot, distance) of every indexed centroid within MATCH_BITS of a fingerprint
        (``index``: sorted codes and their slots to search instead of the whole index)."""
        keys, slot_of_key = index if index is not None else (self._keys, self._slot_of_key)
        if keys.size == 0 or fps.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        codes = self._codes(fps).ravel()
        lo, hi = self._runs(codes, index)
        counts = hi - lo
        # A code that many templates share says nothing about any of them (fingerprints with
        # bits that never vary); checking every pair behind it is what would cost.
        counts[counts > _MAX_RUN] = 0
        total = int(counts.sum())
        query = np.repeat(np.arange(codes.size) // self.tables, counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        slot = slot_of_key[np.repeat(lo, counts) + offsets]
        dist = np.bitwise_count(fps[query] ^ self.centroid[slot]).astype(np.int64)
        ok = dist <= MATCH_BITS
        return query[ok], slot[ok], dist[ok]

    def _match(self, fps: U64, index: tuple[U64, I64] | None = None) -> I64:
        """Slot of the nearest indexed template within MATCH_BITS (ties: the older), or -1;
        `_QUERY_SLICE` fingerprints at a time (each is matched on its own)."""
        best = np.full(fps.size, -1, dtype=np.int64)
        for at in range(0, fps.size, _QUERY_SLICE):
            query, slot, dist = self._candidates(fps[at : at + _QUERY_SLICE], index)
            if query.size:
                order = lexsort((slot, dist, query))
                query, slot = query[order], slot[order]
                first = np.ones(query.size, dtype=np.bool_)
                first[1:] = query[1:] != query[:-1]
                best[at + query[first]] = slot[first]
        return best

    def assign(self, fps: U64, now_ms: int, salt: U64 | None = None) -> I64:
        """Template id of each fingerprint; 0 for one that matches no template and starts none.

        ``salt`` (e.g. each request's timestamp) varies which unmatched fingerprints start a
        template, so a prompt repeated verbatim is not always passed over.

        Examples
        --------
        >>> index = TemplateIndex(register_every=1)          # every new prompt starts one
        >>> fp = np.array([0x0123456789ABCDEF], dtype=np.uint64)
        >>> index.assign(fp, now_ms=0).tolist()
        [1]
        >>> index.assign(fp ^ np.uint64(0b1011), now_ms=1_000).tolist()   # 3 bits off
        [1]
        >>> index.assign(~fp, now_ms=2_000).tolist()         # 64 bits off: another template
        [2]
        """
        slots = self._match(fps)
        unmatched = np.flatnonzero(slots < 0)
        mixed = fps[unmatched] if salt is None else fps[unmatched] ^ (salt[unmatched] * _GOLDEN)
        sampled = (mixed * _GOLDEN) >> np.uint64(64 - 16)
        new = unmatched[sampled < np.uint64(65536 // self.register_every)]
        new_count = 0
        if new.size:
            # Fingerprints new in this batch may be each other's near duplicates: the first of
            # each batch-local group starts the template, the others join it.
            local = _near_groups(fps[new], self._codes(fps[new]))
            roots, group = np.unique(local, return_inverse=True)
            self._grow(fps[new[roots]], now_ms)
            slots[new] = self.ids.size - roots.size + group
            new_count = int(roots.size)
            # The rest of the batch may belong to the templates it just started.
            rest = np.flatnonzero(slots < 0)
            if rest.size:
                fresh = np.arange(self.ids.size - new_count, self.ids.size, dtype=np.int64)
                codes = self._codes(self.centroid[fresh]).ravel()
                order = lexsort((codes,))
                local_index = (codes[order], np.repeat(fresh, self.tables)[order])
                slots[rest] = self._match(fps[rest], local_index)
        assigned = slots >= 0
        ids = np.zeros(fps.size, dtype=np.int64)
        touched = np.zeros(0, dtype=np.int64)
        if assigned.any():
            moved = self._vote(slots[assigned], fps[assigned], now_ms)
            ids[assigned] = self.ids[slots[assigned]]
            # New templates were compared with the old ones when they failed to match; only old
            # templates whose centroid moved can have come within reach of another.
            touched = self.ids[moved[moved < self.ids.size - new_count]]
        self._forget(now_ms)
        self._reindex()
        self._merge_touched(np.flatnonzero(np.isin(self.ids, touched)), now_ms)
        return self.canonical(ids)

    def canonical(self, ids: I64) -> I64:
        """The current id of templates that were merged into older ones since.

        Examples
        --------
        >>> index = TemplateIndex()
        >>> index.aliases.update({7: 5, 5: 2})     # 7 merged into 5, later 5 into 2
        >>> index.canonical(np.array([0, 2, 5, 7, 9])).tolist()
        [0, 2, 2, 2, 9]
        """
        if not self.aliases:
            return ids
        src = np.fromiter(self.aliases.keys(), np.int64, len(self.aliases))
        dst = np.fromiter(self.aliases.values(), np.int64, len(self.aliases))
        order = np.argsort(src)
        src, dst = src[order], dst[order]
        out = ids.copy()
        for _ in range(8):  # aliases may chain (a merged into b, later b into c)
            pos = np.clip(np.searchsorted(src, out), 0, src.size - 1)
            hit = src[pos] == out
            if not hit.any():
                break
            out = np.where(hit, dst[pos], out)
        return out

    def _grow(self, fps: U64, now_ms: int) -> None:
        n = fps.size
        self.ids = np.concatenate([self.ids, np.arange(self.next_id, self.next_id + n)])
        self.next_id += n
        self.centroid = np.concatenate([self.centroid, fps])
        self.votes = np.concatenate([self.votes, np.zeros((n, 64), dtype=np.uint16)])
        self.weight = np.concatenate([self.weight, np.zeros(n, dtype=np.uint16)])
        self.last_ms = np.concatenate([self.last_ms, np.full(n, now_ms, dtype=np.int64)])
        self._indexed = np.concatenate([self._indexed, ~fps])  # not indexed yet

    def _vote(self, slots: I64, fps: U64, now_ms: int) -> I64:
        """Add fingerprints to their templates' bit votes; move centroids to the majority.
        Returns the slots whose centroid moved."""
        used, per = np.unique(slots, return_counts=True)
        # Counts are halved before they could overflow: the majority stays, old votes fade.
        full = self.weight[used].astype(np.int64) + per > 60_000
        self.votes[used[full]] //= 2
        self.weight[used[full]] //= 2
        bits = ((fps[:, None] & _BITS[None, :]) != 0).astype(np.uint16)
        # Each template's votes summed over its run of the fingerprints sorted by slot (what
        # np.add.at adds one row at a time; uint16 sums wrap alike, should a count overflow).
        order = np.argsort(slots, kind="stable")
        self.votes[used] += np.add.reduceat(bits[order], np.cumsum(per) - per, axis=0)
        self.weight[used] += per.astype(np.uint16)
        self.last_ms[used] = now_ms
        majority = self.votes[used].astype(np.int64) * 2 > self.weight[used, None]
        centroid = (majority.astype(np.uint64) * _BITS[None, :]).sum(axis=1, dtype=np.uint64)
        moved: I64 = used[centroid != self.centroid[used]]
        self.centroid[used] = centroid
        return moved

    def _merge_touched(self, touched: I64, now_ms: int) -> None:
        """Templates (among those touched) whose centroids now lie within MATCH_BITS of another
        template's: the older absorbs the younger."""
        query, slot, _ = self._candidates(self.centroid[touched])
        mine = touched[query]
        pair = slot != mine
        a, b = np.minimum(mine[pair], slot[pair]), np.maximum(mine[pair], slot[pair])
        if a.size == 0:
            return
        n = self.ids.size
        root = components(n, a, b)
        dup = np.flatnonzero(root != np.arange(n))
        r = root[dup]
        np.add.at(self.votes, r, self.votes[dup])
        np.add.at(self.weight, r, self.weight[dup])
        np.maximum.at(self.last_ms, r, self.last_ms[dup])
        for d, keep in zip(self.ids[dup].tolist(), self.ids[r].tolist(), strict=True):
            self.aliases[d] = keep
            self._alias_ms[d] = now_ms
        self._drop(dup)
        self._reindex()

    def _drop(self, slots: I64) -> None:
        keep = np.ones(self.ids.size, dtype=np.bool_)
        keep[slots] = False
        for name in ("ids", "centroid", "votes", "weight", "last_ms", "_indexed"):
            setattr(self, name, getattr(self, name)[keep])
        # Their index entries go; the others' slots are renumbered, which keeps their order.
        kept = keep[self._slot_of_key]
        renumbered = np.cumsum(keep, dtype=np.int64) - 1
        self._keys = self._keys[kept]
        self._slot_of_key = renumbered[self._slot_of_key[kept]]
        self._start = None

    def _forget(self, now_ms: int) -> None:
        for a in [a for a, t in self._alias_ms.items() if t <= now_ms - self.ttl_ms]:
            del self.aliases[a], self._alias_ms[a]
        ttl = np.where(self.weight <= 1, self.singleton_ttl_ms, self.ttl_ms)
        stale = self.last_ms <= now_ms - ttl
        over = self.ids.size - int(stale.sum()) - self.capacity
        if over > 0:
            alive = np.flatnonzero(~stale)
            oldest = alive[np.argsort(self.last_ms[alive], kind="stable")[:over]]
            stale[oldest] = True
        if stale.any():
            self._drop(np.flatnonzero(stale))


def _packed(codes: U64, slots: I64) -> U64:
    out: U64 = (codes << np.uint64(32)) | slots.astype(np.uint64)
    return out


def _near_groups(fps: U64, codes: U64) -> I64:
    """Group of each fingerprint (the index of its first member): fingerprints that share a lookup
    code and lie within MATCH_BITS are joined, transitively, but never with a member farther than
    MATCH_BITS from the group's first (``codes`` are their (n, tables) lookup codes)."""
    a_parts, b_parts = [], []
    for t in range(codes.shape[1]):
        order = np.argsort(codes[:, t], kind="stable")
        same = codes[order[1:], t] == codes[order[:-1], t]
        i, j = order[:-1][same], order[1:][same]
        close = np.bitwise_count(fps[i] ^ fps[j]) <= MATCH_BITS
        a_parts.append(i[close])
        b_parts.append(j[close])
    label = components(fps.size, np.concatenate(a_parts), np.concatenate(b_parts))
    # Transitive chains can reach far from where they started: a member farther than MATCH_BITS
    # from its group's first fingerprint (the template it would join) starts its own group.
    far = np.bitwise_count(fps ^ fps[label]) > MATCH_BITS
    label[far] = np.flatnonzero(far)
    return label
