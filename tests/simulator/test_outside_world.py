"""The second world generator (`bench.outside_world`) writes what the contract allows and labels
what it writes: every line is a valid event or a re-sent duplicate, every account that sends is
labelled, and a seed always gives the same world."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import orjson

from bench.outside_world import generate
from schemas.validation import Rejection, parse_event


def test_an_outside_world_is_valid_labelled_and_reproducible(tmp_path: Path) -> None:
    summary = generate(3, tmp_path / "a", scale=0.05)
    lines = (tmp_path / "a" / "events.jsonl").read_bytes().splitlines()
    labels = orjson.loads((tmp_path / "a" / "labels.json").read_bytes())
    events = [parse_event(line) for line in lines]
    rejected = [e for e in events if isinstance(e, Rejection)]
    assert not rejected, rejected[:3]
    ids = Counter(e.event_id for e in events if not isinstance(e, Rejection))
    assert sum(n - 1 for n in ids.values()) == summary["duplicates"]
    senders = {e.account_id for e in events if not isinstance(e, Rejection)}
    assert senders == set(labels["accounts"])
    for cid, c in labels["campaigns"].items():
        assert all(labels["accounts"][a]["label"] == cid for a in c["accounts"])
        assert c["start"] <= c["end"]
    assert {c["archetype"] for c in labels["campaigns"].values()} == set(summary["campaign_kinds"])
    generate(3, tmp_path / "b", scale=0.05)
    digest = [hashlib.sha256((tmp_path / d / "events.jsonl").read_bytes()).digest() for d in "ab"]
    assert digest[0] == digest[1]
