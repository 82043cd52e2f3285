"""Does a threshold keep its promise? Budget against realised share on ordinary windows.

    .venv/bin/python -m bench.calibration [--seeds 1-20] [--scale 1.0] [--jobs 2] [--segments 3]
        [--worlds sim|outside]

Each world is a randomized world (``simulator.worlds``, or with ``--worlds outside`` the
second generator of ``bench.outside_world``, written apart from the detector) with every
campaign account's events removed: ordinary traffic only, so every window over a threshold is a
false positive by construction. The detector scores it the way ``score`` does. For each kind
(accounts, IP blocks) and each threshold of the policy (release 2%, flag 0.1%, throttle 0.02%,
suspend 0.005%), the bench prints the share of windows scored at or over the threshold after the
calibrator's warm-up, divided by the budget (1.00x = the promise kept exactly), per world, per
time segment of a world (``--segments``: early, middle, late), and pooled over all worlds.

Small worlds hold few windows: a 0.005% budget over 100,000 windows expects 5. Next to each
ratio the bench prints the count and whether it lies inside the central 95% Poisson interval of
the budget's expectation (``ok``), so a ratio of 3x on 2 expected windows is told apart from a
calibration that is off. Target (robust detection): realised share within 0.5x-2x of each
budget in every world.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from bench.robustness import _world, parse_seeds
from models.detector import Detector, DetectorConfig, exposure
from streams.replay import BATCH

KINDS = ("account", "ip_block")


@dataclass
class Tally:
    """Windows after warm-up and how many scored at or over each threshold, per time segment."""

    windows: np.ndarray  # [segment]
    over: np.ndarray  # [segment, threshold]
    excluded: int = 0  # ordinary windows with evidence enough to leave the reference


def budgets(config: DetectorConfig) -> tuple[float, ...]:
    p = config.policy
    return (p.release_budget, p.flag_budget, p.throttle_budget, p.suspend_budget)


def run_world(
    seed: int, scale: float, segments: int, worlds: str = "sim"
) -> tuple[int, int, dict[str, Tally]]:
    every, labels = _world(seed, scale, worlds)
    accounts = labels["accounts"]
    events = [e for e in every if accounts.get(e.account_id, {}).get("label") == "benign"]
    config = DetectorConfig()
    thresholds = np.array([1.0 - b for b in budgets(config)])
    det = Detector(config, kinds=KINDS)
    # (kind, window end, scores) of every scored window; warm-up ends at a kind's first window
    # with a calibrated (non-zero) score.
    seen: dict[str, list[tuple[int, np.ndarray, int]]] = {k: [] for k in KINDS}
    outs = (det.process(events[i : i + BATCH]) for i in range(0, len(events), BATCH))
    for out in [*outs, det.flush()]:
        for s in out.scored:
            if s.kind in seen:
                # the evidence a window weighs (output volume has no weight in it), read with
                # the level after the window: a throttle starts only in a window of
                # min_requests or more, whose exposure is 1 anyway
                weight = exposure(s.requests, s.level, config.policy.min_requests)
                exposed = s.evidence * weight
                shows = int((exposed >= config.reference_max_evidence).sum())
                seen[s.kind].append((s.end_ms, s.score.copy(), shows))
    tallies: dict[str, Tally] = {}
    for kind, rows in seen.items():
        windows = np.zeros(segments)
        over = np.zeros((segments, len(thresholds)))
        excluded = 0  # counted over the same windows as the shares: after warm-up
        ready = [end for end, sc, _ in rows if (sc > 0).any()]
        if ready:
            t0, t1 = min(ready), max(end for end, _, _ in rows) + 1
            for end, sc, shows in rows:
                if end < t0:
                    continue
                seg = min(int((end - t0) / (t1 - t0) * segments), segments - 1)
                windows[seg] += len(sc)
                over[seg] += (sc[:, None] >= thresholds[None, :]).sum(axis=0)
                excluded += shows
        tallies[kind] = Tally(windows, over, excluded)
    return seed, len(events), tallies


def poisson_interval(mean: float, mass: float = 0.95) -> tuple[int, int]:
    """Central interval of a Poisson(mean) count holding ``mass`` of its probability.

    >>> poisson_interval(5.0)
    (1, 10)
    """
    n = int(mean + 12 * mean**0.5 + 20)
    k = np.arange(n)
    logp = k * np.log(max(mean, 1e-300)) - mean - np.cumsum(np.log(np.maximum(k, 1)))
    cdf = np.cumsum(np.exp(logp))
    tail = (1 - mass) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


def _cell(over: float, windows: float, budget: float) -> str:
    if windows == 0:
        return f"{'-':>14s}"
    expected = windows * budget
    lo, hi = poisson_interval(expected)
    ok = "ok" if lo <= over <= hi else "!!"
    return f"{over / windows / budget:5.2f}x {int(over):4d} {ok}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-20")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--worlds", choices=("sim", "outside"), default="sim")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(
            pool.map(
                run_world,
                seeds,
                [args.scale] * len(seeds),
                [args.segments] * len(seeds),
                [args.worlds] * len(seeds),
            )
        )
    bs = budgets(DetectorConfig())
    names = ("release", "flag", "throttle", "suspend")
    head = " ".join(f"{f'{n} {b:g}':>14s}" for n, b in zip(names, bs, strict=True))
    print("realised share / budget, count over threshold, ok = inside the 95% Poisson interval")
    for kind in KINDS:
        print(f"\n{kind} windows")
        print(f"{'world':>6s} {'segment':>7s} {'windows':>9s} {head}")
        pooled_w = 0.0
        pooled_o = np.zeros(len(bs))
        worst = np.full(len(bs), np.nan)
        best = np.full(len(bs), np.nan)
        for seed, _, tallies in results:
            t = tallies[kind]
            w, o = t.windows.sum(), t.over.sum(axis=0)
            pooled_w += w
            pooled_o += o
            cells = " ".join(_cell(o[j], w, b) for j, b in enumerate(bs))
            print(f"{seed:6d} {'all':>7s} {int(w):9,d} {cells}")
            if w:
                ratio = o / w / np.array(bs)
                worst = np.fmax(worst, ratio)
                best = np.fmin(best, ratio)
            for seg in range(args.segments):
                sw, so = t.windows[seg], t.over[seg]
                cells = " ".join(_cell(so[j], sw, b) for j, b in enumerate(bs))
                print(f"{'':6s} {seg + 1:>7d} {int(sw):9,d} {cells}")
        cells = " ".join(_cell(pooled_o[j], pooled_w, b) for j, b in enumerate(bs))
        print(f"{'pooled':>6s} {'all':>7s} {int(pooled_w):9,d} {cells}")
        print(
            f"{'range':>6s} {'worlds':>7s} {'':9s} "
            + " ".join(f"{f'{lo:.2f}-{hi:.2f}x':>14s}" for lo, hi in zip(best, worst, strict=True))
        )
        left = sum(t[kind].excluded for _, _, t in results)
        print(
            f"ordinary {kind} windows with exposed evidence >= "
            f"{DetectorConfig().reference_max_evidence} (left out of the reference): {left} of "
            f"{int(pooled_w):,d}"
        )
    events = sum(n for _, n, _ in results)
    print(
        f"\n{len(seeds)} ordinary-only worlds ({args.worlds}), {events:,d} events, "
        f"scale {args.scale}, "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
