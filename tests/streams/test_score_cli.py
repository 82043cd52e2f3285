"""``distillguard score`` on a file written only from CONTRACTS.md, bad lines included."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import pytest

from models.config import DetectorConfig
from models.events import UsageEvent
from schemas.validation import validate_event
from simulator.traffic import write_traffic
from simulator.worlds import draw_world
from streams.cli import main


@pytest.fixture(scope="module")
def events_file(tmp_path_factory, small_traffic) -> Path:
    path = tmp_path_factory.mktemp("score") / "events.jsonl.gz"
    write_traffic(small_traffic, path, None, bad_line_rate=0.002)
    with gzip.open(path, "ab") as f:  # a few more hand-written bad lines, and a blank one
        f.write(b'{"event_id": "x", "ts": "2026-11-23T00:01:00Z"}\n\n')
        f.write(
            b'{"event_id": "y", "ts": 1795392060000, "account_id": "a", "ip": "1.2.3.4",'
            b' "model": "m", "input_tokens": 1, "output_tokens": "lots"}\n'
        )
    return path


def test_score_writes_actions_and_dead_letters(tmp_path, events_file, capsys) -> None:
    out, dead = tmp_path / "actions.jsonl", tmp_path / "dead.jsonl"
    code = main(
        ["score", "--input", str(events_file), "--output", str(out), "--dead-letter", str(dead)]
    )
    assert code == 0
    actions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert actions and {"flag", "throttle"} <= {a["action"] for a in actions}
    dead_lines = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert len(dead_lines) >= 3
    reasons = {d["reason"] for d in dead_lines}
    assert "account_id: missing required field" in reasons
    assert "output_tokens: expected integer, got str" in reasons
    assert all(d["line"] > 0 and d["raw"] for d in dead_lines)
    summary = capsys.readouterr().err
    assert f"{len(dead_lines)} rejected" in summary and "actions:" in summary


def test_score_is_deterministic(tmp_path, events_file) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"a{i}.jsonl"
        assert main(["score", "--input", str(events_file), "--output", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_missing_input_is_a_clear_error(tmp_path, capsys) -> None:
    code = main(
        ["score", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")]
    )
    assert code == 2
    assert "No such file" in capsys.readouterr().err


def test_simulate_randomize_writes_a_world_that_scores_and_evaluates(tmp_path, capsys) -> None:
    events, labels = tmp_path / "w.jsonl.gz", tmp_path / "w.json"
    args = ["simulate", "--randomize", "5", "--scale", "0.05", "--output", str(events)]
    assert main([*args, "--labels", str(labels)]) == 0
    assert "campaigns" in capsys.readouterr().err  # the drawn world is described
    lab = orjson.loads(labels.read_bytes())
    assert lab["scenario"]["randomized"] is True and lab["scenario"]["seed"] == 5
    again = tmp_path / "again.jsonl.gz"
    assert main(["simulate", "--randomize", "5", "--scale", "0.05", "--output", str(again)]) == 0
    assert gzip.decompress(events.read_bytes()) == gzip.decompress(again.read_bytes())
    # the drawn time of day on the latest day the world has ended by: a worker accepts it
    times = [validate_event(orjson.loads(x)) for x in gzip.decompress(events.read_bytes()).split()]
    ts = [e.ts_ms for e in times if isinstance(e, UsageEvent)]
    now, day = time.time() * 1000, 86_400_000
    assert now - day - 120 * 60_000 < min(ts) and max(ts) <= now
    assert (lab["scenario"]["start_ms"] - draw_world(5, 0.05).start_ms) % day == 0
    out = tmp_path / "a.jsonl"
    assert main(["score", "--input", str(events), "--output", str(out)]) == 0
    assert main(["evaluate", "--labels", str(labels), "--actions", str(out)]) == 0


def test_simulate_refuses_scenario_and_randomize_together(tmp_path, capsys) -> None:
    code = main(
        ["simulate", "--randomize", "1", "--scenario", "small", "--output", str(tmp_path / "x")]
    )
    assert code == 2
    assert "not both" in capsys.readouterr().err


def test_the_verdict_threshold_comes_from_the_settings(tmp_path, events_file, monkeypatch, capsys):
    """``DISTILLGUARD_REASONING_VERDICT`` reaches the detector ``score`` runs (its version on every
    action says so); a value outside (0, 1) is one line naming the variable, and nothing is
    written."""
    out = tmp_path / "a.jsonl"
    monkeypatch.setenv("DISTILLGUARD_REASONING_VERDICT", "0.3")
    assert main(["score", "--input", str(events_file), "--output", str(out)]) == 0
    versions = {orjson.loads(x)["detector_version"] for x in out.read_bytes().splitlines()}
    assert versions == {DetectorConfig(reasoning_verdict=0.3).version}
    assert DetectorConfig().version not in versions
    capsys.readouterr()
    monkeypatch.setenv("DISTILLGUARD_REASONING_VERDICT", "50")
    bad = tmp_path / "bad.jsonl"
    assert main(["score", "--input", str(events_file), "--output", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "DISTILLGUARD_REASONING_VERDICT" in err and len(err.splitlines()) == 1
    assert not bad.exists()
    # the command-line option wins over the environment
    assert main(["score", "--input", str(events_file), "--output", str(bad),
                 "--reasoning-verdict", "0.3"]) == 0  # fmt: skip
    assert bad.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("command", [["worker"], ["demo"], ["demo", "--replay"]])
@pytest.mark.parametrize(
    ("setting", "value"), [("REASONING_VERDICT", "50"), ("SUSTAINED_BUDGET", "0.05")]
)
def test_a_bad_detector_setting_stops_the_worker_and_the_demo_in_one_line(
    command, setting, value, monkeypatch, capsys
):
    """Before any broker, store or traffic is touched: the broker named here does not exist, so
    getting past the settings would be a different error."""
    import streams.cli.demo as demo_cli

    def started(*_: object) -> int:
        raise AssertionError("the demo started with a bad setting")

    monkeypatch.setattr(demo_cli, "run_demo", started)
    monkeypatch.setattr(demo_cli, "run_replay_demo", started)
    monkeypatch.setenv(f"DISTILLGUARD_{setting}", value)
    monkeypatch.setenv("DISTILLGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert f"DISTILLGUARD_{setting}" in err and len(err.splitlines()) == 1


def test_a_setting_that_does_less_than_it_seems_is_said_in_one_line_and_scoring_goes_on(
    tmp_path, monkeypatch, capsys
) -> None:
    """A flag budget raised past the sustained budget leaves the sustained flag nothing to do:
    `score` says so in one line, with the fix, and scores; with the rule off, nothing is said."""
    path, out = tmp_path / "events.jsonl", tmp_path / "actions.jsonl"
    event = {"event_id": "e1", "ts": 1795392060000, "account_id": "a", "ip": "192.0.2.1",
             "model": "m", "input_tokens": 10, "output_tokens": 20}  # fmt: skip
    path.write_bytes(orjson.dumps(event) + b"\n")
    monkeypatch.setenv("DISTILLGUARD_FLAG_BUDGET", "0.01")
    assert main(["score", "--input", str(path), "--output", str(out)]) == 0
    notes = [x for x in capsys.readouterr().err.splitlines() if "note:" in x]
    assert len(notes) == 1
    assert "DISTILLGUARD_SUSTAINED_BUDGET (0.005) is not over DISTILLGUARD_FLAG_BUDGET" in notes[0]
    monkeypatch.setenv("DISTILLGUARD_SUSTAINED_BUDGET", "0")
    assert main(["score", "--input", str(path), "--output", str(out)]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_worker_says_such_a_setting_before_it_starts(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DISTILLGUARD_FLAG_BUDGET", "0.01")
    monkeypatch.setenv("DISTILLGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # no broker: stops there
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "note: DISTILLGUARD_SUSTAINED_BUDGET" in err[0]
