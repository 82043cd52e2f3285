"""simulate | score | evaluate chain on the command line, with the HTML report."""

from __future__ import annotations

import re

import orjson

from streams.cli import main


def test_simulate_score_evaluate_chain_writes_table_json_and_html(tmp_path, capsys) -> None:
    ev, lab = tmp_path / "e.jsonl.gz", tmp_path / "l.json"
    acts, scores = tmp_path / "a.jsonl", tmp_path / "s.jsonl.gz"
    args = ["--scenario", "small", "--minutes", "20", "--benign-accounts", "800"]
    assert main(["simulate", "--output", str(ev), "--labels", str(lab), *args]) == 0
    assert main(["score", "--input", str(ev), "--output", str(acts), "--scores", str(scores)]) == 0
    capsys.readouterr()
    report_dir = tmp_path / "rep"
    assert (
        main(
            [
                "evaluate",
                "--labels",
                str(lab),
                "--actions",
                str(acts),
                "--scores",
                str(scores),
                "--report",
                str(report_dir),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "campaigns caught" in table and "hydra-0" in table
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    labels = orjson.loads(lab.read_bytes())
    assert report["summary"]["campaigns"] == len(labels["campaigns"]) >= 5  # those that started
    assert report == orjson.loads((report_dir / "report.json").read_bytes())
    page = (report_dir / "index.html").read_text()
    # time to detection, benign hits (only when some were hit: no empty frames), score timelines
    # (one line per campaign), campaign membership over time
    benign_hit = report["benign"]["hit"]["flag"] > 0
    images = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    assert len(images) == 3 + benign_hit
    assert benign_hit or "No benign account was hit" in page
    # what it was made from, at the top; missed accounts listed
    assert "detector version" in page and "distillguard-" in page and str(acts) in page
    assert "<h2>Campaign accounts missed</h2>" in page
    assert "<h2>Campaigns</h2>" in page


def test_unknown_scenario_is_a_clear_error(tmp_path, capsys) -> None:
    code = main(["simulate", "--output", str(tmp_path / "x.jsonl"), "--scenario", "nope"])
    assert code == 2 and "unknown scenario 'nope'" in capsys.readouterr().err
