"""Campaign linking under account churn: state and time per window while a hydra burns accounts.

    .venv/bin/python -m bench.linker_churn [--per-minute 500] [--hours 14] [--baseline-hours 4]

Every minute ``--per-minute`` fresh accounts send one templated reasoning request each and are
never seen again (the replacement-account pattern at its most extreme), next to a steady
population of 2,000 ordinary accounts. The linker runs as in the worker's campaign stage (window
summaries in, campaigns out). Printed per simulated hour: rows held, MB of per-account state and
milliseconds per window, for the linker as shipped (accounts quiet for 6 hours are forgotten) and,
for ``--baseline-hours``, for the same linker that never forgets (the naive baseline, whose rows
grow with every account ever seen).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np

from models.campaigns import AccountSummaries, CampaignConfig, CampaignLinker, summarize
from models.events import UsageEvent
from models.evidence import RATES, stable_hash
from models.windows import Windower

_MIN = 60_000


def _windows(per_minute: int, minutes: int, seed: int = 0) -> Iterator[AccountSummaries]:
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 2**63, size=20, dtype=np.int64).astype(np.uint64)
    for minute in range(minutes):
        win = Windower(_MIN, 0)
        t0 = minute * _MIN
        for i in range(per_minute):
            fp = int(templates[i % 20] ^ (np.uint64(1) << np.uint64(rng.integers(64))))
            win.add(
                UsageEvent(
                    f"h{minute}-{i}", t0 + int(rng.integers(_MIN)), f"burn-{minute}-{i}",
                    f"34.{i % 200}.0.9", f"34.{i % 200}.0.0/24", "m", 300, 2000,
                    prompt_fingerprint=fp, cot_score=0.9, account_created_ms=t0 - _MIN,
                )
            )  # fmt: skip
        for a in rng.choice(2000, 400, replace=False).tolist():
            win.add(
                UsageEvent(
                    f"o{minute}-{a}", t0 + int(rng.integers(_MIN)), f"user-{a}",
                    f"81.2.{a % 250}.7", f"81.2.{a % 250}.0/24", "m", 400, 300,
                    prompt_fingerprint=int(rng.integers(2**62)), cot_score=0.05,
                    account_created_ms=-(10**11),
                )
            )  # fmt: skip
        [w] = win.flush()
        n = len(w.accounts)
        hits, trials = np.zeros((n, len(RATES))), np.zeros((n, len(RATES)))
        counts = np.bincount(w.account, minlength=n).astype(np.float64)
        trials[:, 0] = counts
        hits[:, 0] = np.bincount(w.account, w.cot >= 0.5, minlength=n)
        yield summarize(w, hits, trials, np.full(n, 0.5), stable_hash(w.blocks))


def _state_mb(linker: CampaignLinker) -> float:
    arrays = sum(v.nbytes for v in vars(linker).values() if isinstance(v, np.ndarray))
    return (arrays + linker.keys.nbytes()) / 1e6  # the per-account rows and the account ids


def run(label: str, config: CampaignConfig, per_minute: int, hours: int) -> None:
    linker = CampaignLinker(config)
    spent = 0.0
    for minute, s in enumerate(_windows(per_minute, hours * 60)):
        t = time.perf_counter()
        out = linker.update(s)
        spent += time.perf_counter() - t
        if (minute + 1) % 60 == 0:
            hour = (minute + 1) // 60
            mb, ms = _state_mb(linker), 1000 * spent / 60
            print(
                f"{label:<14} hour {hour:>3}  rows {len(linker):>10,}  state {mb:8.1f} MB"
                f"  {ms:8.1f} ms/window  campaigns {len(out)}"
            )
            spent = 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-minute", type=int, default=500)
    p.add_argument("--hours", type=int, default=14)
    p.add_argument("--baseline-hours", type=int, default=4)
    args = p.parse_args()
    never = CampaignConfig(forget_ms=10**15)
    run("never forgets", never, args.per_minute, args.baseline_hours)
    run("shipped", CampaignConfig(), args.per_minute, args.hours)


if __name__ == "__main__":
    main()
