"""`Keys`: string ids to rows, checked against a dict and a list doing the same."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.keys import Keys, murmur2, stable_hashes


class Reference:
    """What `EntityTable` kept before: a dict, a list and a free list."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str | None] = []
        self.free: list[int] = []

    def rows(self, ids: list[str]) -> list[int]:
        out = []
        for e in ids:
            if e not in self.index:
                if self.free:
                    r = self.free.pop()
                    self.ids[r] = e
                else:
                    r = len(self.ids)
                    self.ids.append(e)
                self.index[e] = r
            out.append(self.index[e])
        return out

    def remove(self, rows: list[int]) -> None:
        for r in sorted(set(rows)):
            e = self.ids[r] if r < len(self.ids) else None
            if e is not None:
                del self.index[e]
                self.ids[r] = None
                self.free.append(r)


names = st.text(alphabet="ab\u00e9\u4e2d-0", min_size=0, max_size=6)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("rows"), st.lists(names, max_size=12)),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 30), max_size=6)),
        st.tuples(st.just("pickle"), st.just([])),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_keys_give_the_rows_a_dict_and_a_free_list_give(program) -> None:
    keys, ref = Keys(), Reference()
    for op, arg in program:
        if op == "rows":
            assert keys.rows(arg).tolist() == ref.rows(arg)
        elif op == "remove":
            keys.remove(np.array(arg, dtype=np.int64))
            ref.remove(arg)
        else:
            keys = pickle.loads(pickle.dumps(keys))
        assert len(keys) == len(ref.index)
        assert keys.high == len(ref.ids)
        assert [keys[r] for r in range(keys.high)] == ref.ids
        probe = [*ref.index, "zz-unknown", ""]
        assert keys.find(probe).tolist() == [ref.index.get(e, -1) for e in probe]


@settings(max_examples=100, deadline=None)
@given(st.lists(names, max_size=30, unique=True), st.data())
def test_take_renumbers_the_kept_rows_in_order(ids, data) -> None:
    keys = Keys()
    keys.rows(ids)
    rows = st.lists(st.sampled_from(range(len(ids))), unique=True) if ids else st.just([])
    kept = data.draw(rows)
    out = keys.take(np.array(kept, dtype=np.int64))
    assert [out[r] for r in range(out.high)] == [ids[r] for r in kept]
    assert out.find(ids).tolist() == [kept.index(r) if r in kept else -1 for r in range(len(ids))]


class Colliding(str):
    """An id whose hash is the same as every other's: lookups must still tell them apart."""

    def __hash__(self) -> int:
        return 7


def test_ids_whose_hashes_collide_keep_their_own_rows() -> None:
    ids = [Colliding(f"acct-{i}") for i in range(50)]
    keys = Keys()
    assert keys.rows(ids).tolist() == list(range(50))
    assert keys.rows(ids[::-1]).tolist() == list(range(50))[::-1]
    assert keys.find([Colliding("acct-50"), Colliding("acct")]).tolist() == [-1, -1]
    keys.remove(np.arange(0, 50, 2))
    assert keys.find(ids).tolist() == [-1 if i % 2 == 0 else i for i in range(50)]


def test_an_older_checkpoints_dict_and_list_become_keys() -> None:
    keys = Keys.from_rows(["a", None, "c"], free=[1])
    assert keys.find(["a", "b", "c"]).tolist() == [0, -1, 2]
    assert keys.rows(["d", "e"]).tolist() == [1, 3]


def test_keys_cost_bytes_not_objects() -> None:
    keys = Keys()
    keys.rows([f"acct-{i:08d}" for i in range(100_000)])
    assert keys.nbytes() / 100_000 < 13 + 48 + 16  # the id's bytes, six arrays, headroom


def test_rows_that_hold_no_id_are_refused_not_wrapped_around() -> None:
    keys = Keys()
    keys.rows(["a", "b"])
    for bad in ([-1], [2], [0, 0]):
        with pytest.raises(KeyError):
            keys.take(np.array(bad))
    for bad in ([-1], [2]):
        with pytest.raises(KeyError):
            keys.ids(bad)
    assert keys[-1] is None and keys[2] is None


def test_any_python_string_is_an_id_lone_surrogates_included() -> None:
    odd = ["\ud800", "a\udfffb", "\x00", "\u4e2d"]
    keys = pickle.loads(pickle.dumps(Keys.from_rows(odd)))
    assert keys.ids(range(4)) == odd and keys.find(odd).tolist() == [0, 1, 2, 3]


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8", "surrogatepass"):
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h - 2**64 if h >= 2**63 else h


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=45), max_size=60))
def test_stable_hashes_are_fnv1a_of_the_utf8_bytes(ids: list[str]) -> None:
    assert stable_hashes(ids).tolist() == [fnv1a64(i) for i in ids]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30))
def test_murmur2_is_kafkas_for_every_key_length(keys: list[bytes]) -> None:
    """Every length modulo 4, empty keys and NUL bytes included: a block goes to the partition
    Kafka's default partitioner gives it, as before forwarding was batched."""
    from aiokafka.partitioner import murmur2 as kafka_murmur2

    assert murmur2(keys).tolist() == [kafka_murmur2(k) for k in keys]
