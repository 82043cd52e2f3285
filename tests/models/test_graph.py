from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.graph import components


def _edges(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    return a, b


def _reference(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Smallest node of each node's component, by plain union-find."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in pairs:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return [find(x) for x in range(n)]


def test_no_edges_every_node_is_its_own_component() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert components(0, empty, empty).tolist() == []
    out = components(4, empty, empty)
    assert out.tolist() == [0, 1, 2, 3]
    assert out.dtype == np.int64


def test_isolated_nodes_keep_their_own_label() -> None:
    a, b = _edges([(1, 3)])
    assert components(6, a, b).tolist() == [0, 1, 2, 1, 4, 5]


def test_long_chain_in_any_edge_order_collapses_to_its_smallest_node() -> None:
    n = 200
    pairs = [(i, i + 1) for i in range(n - 1)]
    rng = np.random.default_rng(0)
    for order in (pairs, pairs[::-1], [pairs[i] for i in rng.permutation(len(pairs))]):
        a, b = _edges(order)
        assert components(n, a, b).tolist() == [0] * n
        # direction of an edge does not matter
        assert components(n, b, a).tolist() == [0] * n


def test_label_is_the_smallest_index_even_when_it_is_reached_last() -> None:
    # 5 - 4 - 3 - 2 and 2 - 0: the component's smallest node sits at the far end of the chain.
    a, b = _edges([(5, 4), (4, 3), (3, 2), (2, 0)])
    assert components(6, a, b).tolist() == [0, 1, 0, 0, 0, 0]


def test_duplicate_edges_and_self_loops_change_nothing() -> None:
    a, b = _edges([(2, 2), (0, 1), (1, 0), (0, 1), (4, 4), (3, 5), (5, 3)])
    assert components(6, a, b).tolist() == [0, 0, 2, 3, 4, 3]


def test_int32_edge_arrays_are_accepted() -> None:
    a = np.array([0, 2], dtype=np.int32)
    b = np.array([2, 3], dtype=np.int32)
    assert components(4, a, b).tolist() == [0, 1, 0, 0]


def test_star_and_two_cliques() -> None:
    star = [(7, i) for i in range(7)]
    clique = [(i, j) for i in range(8, 12) for j in range(8, 12) if i < j]
    a, b = _edges(star + clique)
    assert components(13, a, b).tolist() == [0] * 8 + [8] * 4 + [12]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=0, max_size=80
            ),
        )
    )
)
def test_matches_union_find_on_random_graphs(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, pairs = case
    a, b = _edges(pairs)
    assert components(n, a, b).tolist() == _reference(n, pairs)
