from __future__ import annotations

import numpy as np
import pytest

from models.columns import Chunk
from models.events import UsageEvent

NAME_COLUMNS = ("accounts", "blocks", "models", "subnets")


def events(seed: int, n: int) -> list[UsageEvent]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = int(rng.integers(0, n // 3 + 1)), int(rng.integers(0, 40))
        v6 = rng.random() < 0.3
        ip = f"2001:db8:{b}::{a % 7}" if v6 else f"10.{b // 256}.{b % 256}.{a % 250}"
        block = f"2001:db8:{b}::/48" if v6 else f"10.{b // 256}.{b % 256}.0/24"
        out.append(
            UsageEvent(
                f"e{i}", 1_000 * i, f"acct-{a}", ip, block, f"m{int(rng.integers(0, 3))}",
                int(rng.integers(1, 500)), int(rng.integers(1, 900)),
                prompt_fingerprint=int(rng.integers(0, 2**63)) if rng.random() < 0.5 else None,
                cot_score=float(rng.random()) if rng.random() < 0.5 else None,
                payment_fingerprint=f"card-{a % 5}" if rng.random() < 0.7 else None,
            )
        )  # fmt: skip
    return out


@pytest.mark.parametrize("seed", range(6))
def test_a_chunk_taken_from_rows_is_the_chunk_of_those_rows(seed: int) -> None:
    """`Chunk.take` (a window's part of a chunk) keeps only the names its rows use, coded in the
    order the rows first use them: exactly what `Chunk.from_rows` of those rows gives, so a
    window holds the same columns however its events were cut into chunks."""
    rows = events(seed, 500)
    chunk = Chunk.from_rows(rows)
    rng = np.random.default_rng(seed + 100)
    for size in (0, 1, 7, 250, 500):
        pick = rng.choice(len(rows), size=size, replace=False)
        for order in (pick, np.sort(pick)):
            got = chunk.take(order.astype(np.intp))
            want = Chunk.from_rows([rows[i] for i in order.tolist()]) if size else None
            assert len(got) == size
            if want is None:
                assert all(got.names(c) == [] for c in NAME_COLUMNS)
                continue
            for column in NAME_COLUMNS:
                assert got.names(column) == want.names(column), column
            for name in ("ts", "account", "block", "model", "subnet", "ip_hash", "fingerprint"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), name
            assert np.array_equal(got.cot, want.cot, equal_nan=True)
            assert np.array_equal(got.payment_hash, want.payment_hash)
