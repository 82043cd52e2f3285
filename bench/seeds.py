"""The detector against the issue's targets over several seeds and scenarios, timed end to end.

    .venv/bin/python -m bench.seeds [--seeds 1 2 3 4 5] [--scenarios default quiet stealth]

Each run is the command-line chain a user would type: ``simulate`` to a .jsonl.gz file, ``score``
it, ``evaluate`` the actions against the labels. Seconds are wall time of the whole chain.
Targets (issue 3): every campaign caught, >= 95% of campaign accounts, benign accounts throttled
or suspended <= 0.05% and flagged <= 0.5%, median time to first action <= 5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from streams.cli import main as cli


def run(scenario: str, seed: int) -> tuple[dict[str, Any], float]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            common = ["--scenario", scenario, "--seed", str(seed)]
            assert (
                cli(
                    [
                        "simulate",
                        "--output",
                        str(d / "e.jsonl.gz"),
                        "--labels",
                        str(d / "l.json"),
                        "--bad-lines",
                        "0.001",
                        *common,
                    ]
                )
                == 0
            )
            assert (
                cli(["score", "--input", str(d / "e.jsonl.gz"), "--output", str(d / "a.jsonl")])
                == 0
            )
            assert (
                cli(
                    [
                        "evaluate",
                        "--labels",
                        str(d / "l.json"),
                        "--actions",
                        str(d / "a.jsonl"),
                        "--json",
                        str(d / "r.json"),
                    ]
                )
                == 0
            )
        seconds = time.perf_counter() - started
        report = orjson.loads((d / "r.json").read_bytes())
    return report, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--scenarios", nargs="+", default=["default", "quiet", "stealth"])
    args = ap.parse_args()
    print(
        f"{'scenario':12s} {'seed':>4s} {'campaigns':>9s} {'accounts':>8s} {'median TTD':>10s} "
        f"{'benign flagged':>14s} {'benign thr/susp':>15s} {'seconds':>7s}  weakest campaign"
    )
    for scenario in args.scenarios:
        for seed in args.seeds:
            report, seconds = run(scenario, seed)
            s = report["summary"]
            camps = report["campaigns"]
            weakest = min(camps.items(), key=lambda kv: kv[1]["share_caught"], default=None)
            weak = f"{weakest[0]} {weakest[1]['share_caught']:.0%}" if weakest else "-"
            ttd = s["median_minutes_to_first_action"]
            share = s["campaign_accounts_caught_share"] if camps else float("nan")
            print(
                f"{scenario:12s} {seed:>4d} {s['campaigns_caught']:>4d}/{s['campaigns']:<4d} "
                f"{share:>8.1%} {'-' if ttd is None else f'{ttd:.2f} min':>10s} "
                f"{s['benign_flagged_share']:>14.3%} "
                f"{s['benign_throttled_or_suspended_share']:>15.3%} {seconds:>7.0f}  {weak}",
                flush=True,
            )


if __name__ == "__main__":
    main()
