"""`bench.pipeline --all`'s table: every target gets a row saying whether it is met, and a
figure that could not be measured says so instead of vanishing."""

from __future__ import annotations

import doctest

from bench import summary
from bench.pipeline import table

WORKER = {
    "scenario": "demo",
    "events": 348_235,
    "read": 17_796.0,
    "written": 17_089.0,
    "naive": 246.0,
}
FOUND = {
    "scaleout": {
        "events": 1_035_284,
        "one": 17_909.0,
        "two": 28_418.0,
        "windows": 302_110,
        "missing": 0,
        "extra": 0,
        "doubled": 0,
    },
    "latency": {"rate": 10_000.0, "seconds": 240.0, "p50": 6.44, "p99": 9.36},
    "fed": {
        "rate": 30_000.0,
        "seconds": 60.0,
        "lag_trend": 1_908.0,
        "lag_max": 93_239,
        "kept_up": False,
    },
    "core": {"core": 78_759.0, "validation_core": 43_098.0, "river_steady": 13_216.0},
    "memory": {
        "accounts": 1_000_000,
        "per_entity": 1_059.0,
        "per_account": 1_125.0,
        "naive_per_account": 1_282_642.0,
    },
}


def met(lines: list[str]) -> dict[str, str]:
    """Each row's figure and its last cell (met: yes / no)."""
    return {line.split(" | ")[0].strip(): line.split(" | ")[-1].strip() for line in lines[1:]}


def test_every_target_has_a_row_with_its_verdict() -> None:
    rows = met(table(WORKER, FOUND))
    assert len(rows) == 8
    assert rows["one worker against the naive pattern (demo backlog)"] == "yes"  # 72x >= 10x
    assert rows["two worker processes, same backlog"] == "yes"  # 1.59x, every window once
    assert rows["one worker, backlog of 1,035,284 events (default scenario)"] == "no"
    assert sum(v == "no" for v in rows.values()) == 6


def test_a_window_scored_twice_fails_the_scale_out_target_whatever_the_speed() -> None:
    found = {**FOUND, "scaleout": {**FOUND["scaleout"], "two": 40_000.0, "doubled": 3}}
    assert met(table(WORKER, found))["two worker processes, same backlog"] == "no"


def test_a_figure_that_could_not_be_measured_is_a_row_that_is_not_met() -> None:
    found = {
        **FOUND,
        "latency": {"rate": 10_000.0, "seconds": 240.0},
        "fed": {"rate": 30_000.0, "seconds": 60.0},
    }
    lines = table(WORKER, found)
    text = "\n".join(lines)
    assert "no enforcement event arrived in time" in text
    assert "no trend: the run was too short" in text
    rows = met(lines)
    assert rows["latency, produce to enforcement event, at 10,000 events/s"] == "no"
    assert rows["fed at 30,000 events/s for 60 s: input lag"] == "no"


def test_a_benchmark_that_failed_leaves_only_its_own_rows_out() -> None:
    worker = {k: v for k, v in WORKER.items() if k != "naive"}  # the naive baseline failed
    rows = met(table(worker, {"core": FOUND["core"]}))
    assert list(rows) == ["scoring core, one core", "validation + scoring core, one core"]


def test_the_summary_writer_examples_pass() -> None:
    result = doctest.testmod(summary)
    assert result.failed == 0 and result.attempted > 0
