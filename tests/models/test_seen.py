"""`SeenIds`: an exact set of string ids without an object per id, checked against a set."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

import models.seen
from models.seen import PACK, SeenIds

# Few distinct ids, so that programs re-add ids often; any text, lone surrogates included.
ids = st.one_of(st.sampled_from([f"e{i}" for i in range(40)]), st.text(max_size=12))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "in", "pickle"]), ids), max_size=300))
def test_seen_ids_answer_as_a_set_does(program) -> None:
    seen, reference = SeenIds(), set()
    for op, entity_id in program:
        if op == "add":
            assert seen.add(entity_id) == (entity_id not in reference)
            reference.add(entity_id)
        elif op == "in":
            assert (entity_id in seen) == (entity_id in reference)
        else:
            seen = pickle.loads(pickle.dumps(seen))
        assert len(seen) == len(reference)


def test_ids_whose_hashes_collide_are_still_told_apart(monkeypatch) -> None:
    # Every id hashes alike: each lookup walks the whole run of slots and compares the ids.
    monkeypatch.setattr(models.seen, "hash", lambda _: 7, raising=False)
    seen = SeenIds()
    assert all(seen.add(f"e{i}") for i in range(300))
    assert not any(seen.add(f"e{i}") for i in range(300))
    assert "e300" not in seen and "e0" in seen


def test_many_ids_grow_the_table_pack_the_ids_and_survive_a_pickle() -> None:
    n = 3 * PACK + 5  # packed into bytes three times, five still strings
    seen = SeenIds()
    assert all(seen.add(f"evt-{i}") for i in range(n))
    clone = pickle.loads(pickle.dumps(seen))
    for s in (seen, clone):
        assert len(s) == n
        assert not s.add("evt-0") and not s.add(f"evt-{n - 1}")
        assert s.add(f"evt-{n}")
    # Bytes, not objects: well under what a set of the same strings holds (~130 B each).
    assert seen.nbytes() < 80 * n


def test_an_older_checkpoints_set_becomes_seen_ids() -> None:
    seen = SeenIds.of({"b", "a"})
    assert len(seen) == 2 and "a" in seen and not seen.add("b") and seen.add("c")
