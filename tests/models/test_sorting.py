"""`lexsort` gives ``np.lexsort``'s order exactly, for every kind of key the models sort by."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import models.sorting
from models.sorting import lexsort

# Keys as the models have them: small codes, timestamps, 16-bit bands, 64-bit hashes (signed and
# unsigned), floats with NaN and signed zeros, flags; few distinct values so that ties are common.
_few = st.integers(0, 3)
_dtypes = st.sampled_from(
    ["int8", "int16", "int32", "int64", "uint8", "uint64", "float64", "complex128", "bool"]
)


def _key(dtype: str, n: int) -> st.SearchStrategy[np.ndarray]:
    if dtype == "float64":
        elements = st.sampled_from([0.0, -0.0, 0.5, -1.5, np.nan, np.inf, 1e300])
    elif dtype == "complex128":
        elements = st.sampled_from([complex(np.nan, 0), complex(0, np.nan), 1 + 0j, -1j, 0j])
    elif dtype in ("int8", "int16", "uint8"):  # the whole range: narrow signed types wrap
        info = np.iinfo(dtype)
        elements = st.one_of(
            st.sampled_from([info.min, info.max, 0]), st.integers(info.min, info.max)
        )
    elif dtype == "bool":
        elements = st.booleans()
    elif dtype == "uint64":
        elements = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
    elif dtype == "int64":
        elements = st.one_of(
            st.sampled_from([-(2**63), -1, 0, 2**63 - 1]),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(1_795_000_000_000, 1_795_000_060_000),  # timestamps of one window
        )
    else:
        elements = st.one_of(st.integers(0, 40), st.sampled_from([-(2**31), 2**31 - 1]))
    return hnp.arrays(dtype, n, elements=elements)


@st.composite
def _keys(draw: st.DrawFn) -> list[np.ndarray]:
    n = draw(st.integers(0, 60))
    return [draw(_key(draw(_dtypes), n)) for _ in range(draw(st.integers(1, 4)))]


@settings(max_examples=400, deadline=None)
@given(_keys())
def test_the_order_is_numpys_lexsort_order(keys: list[np.ndarray]) -> None:
    assert lexsort(keys).tolist() == np.lexsort(keys).tolist()


def test_keys_that_do_not_fit_one_integer_are_sorted_by_numpy(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    wide = [rng.integers(0, 2**30, 1000) for _ in range(3)]  # 90 bits with the row index
    calls = []
    real = np.lexsort
    monkeypatch.setattr(models.sorting.np, "lexsort", lambda k: calls.append(1) or real(k))
    assert lexsort(wide).tolist() == real(wide).tolist()
    assert calls, "three 30-bit keys and a 10-bit index cannot be packed in 63 bits"
    narrow = [rng.integers(0, 2**10, 1000) for _ in range(3)]
    calls.clear()
    assert lexsort(narrow).tolist() == real(narrow).tolist()
    assert not calls


def test_keys_numpy_refuses_are_refused() -> None:
    import pytest

    with pytest.raises(TypeError):
        lexsort([])
    with pytest.raises(ValueError):
        lexsort([np.arange(5), np.array([1])])
