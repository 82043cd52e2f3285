"""`lexsort`: ``np.lexsort``'s exact order, several times faster for the keys the models sort by.

The window features, evidence and campaign linking sort events by (entity, something) many times
per window. ``np.lexsort`` does a stable merge sort per key; when the keys together fit in 63 bits
they can instead be packed into one ``int64`` per row, with the row's index in the lowest bits, and
sorted once. The packed values are distinct, so any sort gives the one order, and the index makes
it the order ``np.lexsort`` gives (ties kept in input order). Integer keys of a small range are
packed as they are (less their minimum); other keys (64-bit hashes, floats) by their dense rank,
which ``np.unique`` finds with one sort. Keys that do not fit fall back to ``np.lexsort``.

On a window of 17,000 events (this machine): 1.8 ms with ``np.lexsort`` against 0.2 ms for
(entity, 16-bit band) or (entity, timestamp) and 0.5 ms for (entity, 64-bit hash).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["lexsort"]

_MAX_SPAN_BITS = 40  # wider integer keys are ranked instead, to leave room for the others


def _packable(key: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.int64], int]:
    """The key as non-negative int64 values in the same order, and how many bits they need."""
    if key.dtype.kind == "b":
        return key.astype(np.int64), 1
    if key.dtype.kind in "iu":
        lo = key.min()
        span = int(key.max()) - int(lo)
        if span < (1 << _MAX_SPAN_BITS):
            if key.dtype.kind == "i" and key.dtype.itemsize < 8:
                return key.astype(np.int64) - int(lo), span.bit_length()
            # 64-bit and unsigned keys subtracted in their own type: within a span under 2**40
            # of the minimum, no value wraps (a narrower signed type would: 127 - -128 in int8).
            return (key - lo).astype(np.int64), span.bit_length()
    # Dense rank: np.unique sorts as np.lexsort compares (-0.0 equals 0.0; NaN last).
    uniques, rank = np.unique(key, return_inverse=True)
    return rank.astype(np.int64).ravel(), (uniques.size - 1).bit_length()


def lexsort(keys: Sequence[npt.ArrayLike]) -> npt.NDArray[np.intp]:
    """Indices that sort by the last key, then the one before, ...: ``np.lexsort(keys)`` exactly,
    ties in input order, for 1-D keys of one length.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([2, 0, 2, 0, 1])
    >>> ts = np.array([50, 70, 10, 70, 30])
    >>> lexsort((ts, g)).tolist()              # by g, then ts; the tie (70, 70) kept in order
    [1, 3, 4, 2, 0]
    >>> h = np.array([-2**63, 2**63 - 1, 5, -1, 0])     # 64-bit hashes: sorted by their rank
    >>> lexsort((h, np.zeros(5, dtype=np.int32))).tolist() == np.lexsort((h, np.zeros(5))).tolist()
    True
    >>> lexsort((np.array([0.5, np.nan, -0.0, 0.0]),)).tolist()   # floats as np.lexsort orders them
    [2, 3, 0, 1]
    """
    arrays = [np.asarray(k) for k in keys]
    n = arrays[0].size if arrays else 0
    if (
        n < 2
        or any(a.ndim != 1 or a.size != n for a in arrays)
        or any(a.dtype.kind not in "biuf" for a in arrays)  # complex, objects, text: numpy's
    ):
        return np.lexsort(arrays)  # and numpy's errors for keys it refuses
    shift = index_bits = (n - 1).bit_length()
    packed = np.arange(n, dtype=np.int64)
    for key in arrays:  # the first key is the least significant
        values, bits = _packable(key)
        if shift + bits > 63:
            return np.lexsort(arrays)
        if bits:
            packed |= values << shift
            shift += bits
    # Every packed value is distinct (the row index is in its low bits), so sorting the values
    # and keeping those bits gives the order: ~1.4x faster than `np.argsort` of the same values.
    packed.sort()
    packed &= (1 << index_bits) - 1
    order: npt.NDArray[np.intp] = packed.astype(np.intp, copy=False)
    return order
