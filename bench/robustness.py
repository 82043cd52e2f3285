"""The detector on randomized worlds it was not tuned on: one row per world, worst world first.

    .venv/bin/python -m bench.robustness [--seeds 1-24] [--scale 1.0] [--jobs 2]
                                         [--variants full per-entity] [--worlds sim|outside]

Each world is ``distillguard simulate --randomize SEED`` (``simulator.worlds``: shares, rates,
archetype mixes, gateways and campaign kinds drawn from wide ranges), or with ``--worlds outside``
one of ``bench.outside_world``'s worlds (a second generator, written from the contract and the
mission alone, without reference to the detector or to ``simulator``), scored the way ``score``
scores a file (validated, sorted by event time, fed in batches of ``streams.replay.BATCH``) and
evaluated against its labels. Variants, side by side in the same run:

- ``full``: the shipped configuration (accounts, IP blocks and linked campaigns);
- ``per-entity``: the same detector with campaign linking switched off (accounts and IP blocks
  only), i.e. what per-entity scoring alone reaches;
- ``worker-8`` / ``unlinked-8``: the worker's layout (8 account partitions with shared models,
  one campaign stage over all of them, IP blocks apart), with and without linking.

Besides the targets, each row shows the hard negatives (benign accounts of the archetypes that
share what campaigns share: a company's card and NAT, a carrier NAT, a proxy pool, an eval
suite) throttled or suspended, and the replacement accounts (first request after their campaign
was throttled) acted on within 2 windows.

Targets (robust detection): in every world, every campaign of >= 5 accounts caught, >= 90% of
campaign accounts, the blatant extractor acted on within 3 windows of its start, benign accounts
throttled or suspended <= 0.05%, flagged <= 0.5%. The summary prints the minimum over worlds (the
maximum for harm), never only the median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.outside_world import generate
from models.campaign_scoring import CampaignScorer, LinkInput, merge
from models.detector import Detector, DetectorConfig, DetectorOutput, Population
from models.events import UsageEvent
from models.evidence import stable_hash
from schemas.validation import Rejection, parse_event, parse_timestamp, validate_event
from simulator.evaluation import evaluate
from simulator.worlds import random_world
from streams.replay import BATCH

VARIANTS = {
    "full": ("account", "ip_block", "campaign"),
    "per-entity": ("account", "ip_block"),
    # What the worker runs: 8 account partitions (an account's partition is a hash of its id)
    # with shared population models, their summaries merged by one campaign stage per window,
    # IP blocks in their own stage. `unlinked-8` is the same without campaigns.
    "worker-8": ("account", "ip_block", "campaign"),
    "unlinked-8": ("account", "ip_block"),
}
PARTITIONS = 8


@dataclass
class WorldResult:
    seed: int
    variant: str
    events: int
    accounts: int
    benign: int
    seconds: float
    campaigns: int
    big_caught: int
    big: int
    account_recall: float
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)
    blatant_windows: float | None = None
    flagged: float = 0.0
    throttled: float = 0.0
    median_ttd: float | None = None
    weakest: str = "-"
    hard_negatives: int = 0  # accounts of the hard-negative archetypes
    hard_negatives_throttled: int = 0
    replacements: int = 0  # campaign accounts first seen after their campaign was throttled
    replacements_in_2: int = 0  # ... acted on within 2 windows of their first request


def parse_seeds(text: str) -> list[int]:
    """``"1-4,9"`` -> ``[1, 2, 3, 4, 9]``."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _world(seed: int, scale: float, worlds: str) -> tuple[list[UsageEvent], dict[str, Any]]:
    """One world's accepted events (in event-time order) and its labels."""
    events: list[UsageEvent] = []
    if worlds == "outside":
        with tempfile.TemporaryDirectory() as tmp:
            generate(seed, Path(tmp), scale)
            labels = orjson.loads((Path(tmp) / "labels.json").read_bytes())
            with open(Path(tmp) / "events.jsonl", "rb") as lines:
                for line in lines:
                    event = parse_event(line)
                    if not isinstance(event, Rejection):
                        events.append(event)
    else:
        traffic = random_world(seed, scale)
        labels = traffic.labels
        for e in traffic.events:
            event = validate_event(e)
            if not isinstance(event, Rejection):
                events.append(event)
    events.sort(key=lambda e: e.ts_ms)
    return events, labels


def run_world(seed: int, scale: float, variant: str, worlds: str = "sim") -> WorldResult:
    events, labels = _world(seed, scale, worlds)
    started = time.perf_counter()
    config = DetectorConfig()
    actions: list[dict[str, Any]] = []
    if variant.endswith("-8"):
        actions = _run_partitioned(events, config, VARIANTS[variant])
    else:
        det = Detector(config, kinds=VARIANTS[variant])
        for i in range(0, len(events), BATCH):
            actions += [a.to_dict() for a in det.process(events[i : i + BATCH]).actions]
        actions += [a.to_dict() for a in det.flush().actions]
    seconds = time.perf_counter() - started
    report = evaluate(labels, actions)
    s = report["summary"]
    camps = report["campaigns"]
    big = [c for c in camps.values() if c["accounts"] >= 5]
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in camps.values():
        by_kind[c["archetype"]][0] += c["accounts_caught"]
        by_kind[c["archetype"]][1] += c["accounts"]
    weakest = min(camps.items(), key=lambda kv: kv[1]["share_caught"], default=None)
    benign = sum(1 for a in labels["accounts"].values() if a["label"] == "benign")
    hard, hard_hit, repl, repl_ok = _hard_cases(labels, actions, events, config.window_ms)
    return WorldResult(
        hard_negatives=hard,
        hard_negatives_throttled=hard_hit,
        replacements=repl,
        replacements_in_2=repl_ok,
        seed=seed,
        variant=variant,
        events=len(events),
        accounts=len(labels["accounts"]),
        benign=benign,
        seconds=seconds,
        campaigns=len(camps),
        big_caught=sum(1 for c in big if c["caught"]),
        big=len(big),
        account_recall=s["campaign_accounts_caught_share"],
        by_kind={k: (v[0], v[1]) for k, v in by_kind.items()},
        blatant_windows=_blatant_windows(labels, actions, config.window_ms),
        flagged=s["benign_flagged_share"],
        throttled=s["benign_throttled_or_suspended_share"],
        median_ttd=s["median_minutes_to_first_action"],
        weakest=(
            f"{weakest[1]['archetype']} {weakest[1]['accounts_caught']}/{weakest[1]['accounts']}"
            if weakest
            else "-"
        ),
    )


def _run_partitioned(
    events: list[Any], config: DetectorConfig, kinds: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The worker's layout in one process: account partitions with shared population models,
    each linking its own accounts; IP blocks scored apart with the accounts' scores as members."""
    account_kinds = tuple(k for k in kinds if k != "ip_block")
    population = Population(config)
    parts = [
        Detector(config, kinds=account_kinds, population=population, link_campaigns=False)
        for _ in range(PARTITIONS)
    ]
    scorer = CampaignScorer(config)
    pending: dict[int, list[LinkInput]] = {}
    scores: dict[str, tuple[int, float]] = {}

    blocks = Detector(config, kinds=("ip_block",))
    actions: list[dict[str, Any]] = []

    def take(out: DetectorOutput) -> None:
        for sw in out.scored:
            if sw.kind == "account":
                for i in np.flatnonzero(sw.score >= config.member_score).tolist():
                    scores[sw.ids[i]] = (sw.end_ms, float(sw.score[i]))
        actions.extend(a.to_dict() for a in out.actions)
        for x in out.summaries:
            pending.setdefault(x.summaries.end_ms, []).append(x)

    def link(through: float) -> None:
        # A window is linked once every partition has closed it, like the campaign stage does.
        for end in sorted(e for e in pending if e <= through):
            take(scorer.update(merge(pending.pop(end)), parts[0].version).out)

    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        split: list[list[Any]] = [[] for _ in parts]
        for e in batch:
            split[stable_hash([e.account_id])[0] % PARTITIONS].append(e)
        for det, evs in zip(parts, split, strict=True):
            take(det.process(evs))
        link(min(det.scored_through_ms for det in parts))
        take(blocks.process(batch, members=scores))
    for det in parts:
        take(det.flush())
    link(float("inf"))
    take(blocks.flush(members=scores))
    return actions


#: Benign archetypes that share what campaigns share: one card and one NAT (a company), a carrier
#: NAT, a proxy reseller's pool, one eval suite (as each generator names them).
HARD_NEGATIVES = (
    "enterprise_nat",
    "mobile_cgnat",
    "proxy_user",
    "eval_harness",
    "corporate_nat",
    "carrier_nat",
    "proxy_customer",
)
_LEVEL = {"flag": 1, "throttle": 2, "suspend": 3}


def _hard_cases(
    labels: dict[str, Any], actions: list[dict[str, Any]], events: list[Any], window_ms: int
) -> tuple[int, int, int, int]:
    """Hard negatives throttled or suspended; replacement accounts (first request after their
    campaign was first throttled as a campaign) and how many were acted on within 2 windows."""
    accounts = labels["accounts"]
    first_seen: dict[str, int] = {}
    for e in events:
        first_seen.setdefault(e.account_id, e.ts_ms)
    level: dict[str, int] = defaultdict(int)
    first_action: dict[str, int] = {}
    campaign_throttled: dict[str, int] = {}
    for a in actions:
        lv = _LEVEL.get(a["action"], 0)
        if not lv:
            continue
        ts = parse_timestamp(a["ts"]) if isinstance(a["ts"], str) else a["ts"]
        named = [a["entity_id"]] if a["entity_kind"] == "account" else a.get("members") or []
        for acct in named:
            level[acct] = max(level[acct], lv)
            first_action[acct] = min(first_action.get(acct, ts), ts)
        if a["entity_kind"] == "campaign" and lv >= 2:
            for acct in a.get("members") or []:
                lab = accounts.get(acct, {}).get("label")
                if lab and lab != "benign":
                    campaign_throttled[lab] = min(campaign_throttled.get(lab, ts), ts)
    hard = [a for a, v in accounts.items() if v["archetype"] in HARD_NEGATIVES]
    hard_hit = sum(1 for a in hard if accounts[a]["label"] == "benign" and level[a] >= 2)
    repl = repl_ok = 0
    for acct, v in accounts.items():
        since = campaign_throttled.get(v["label"])
        if since is None or acct not in first_seen or first_seen[acct] <= since:
            continue
        repl += 1
        took = first_action.get(acct, 1 << 62) - first_seen[acct]
        repl_ok += took <= 2 * window_ms
    return len(hard), hard_hit, repl, repl_ok


def _blatant_windows(
    labels: dict[str, Any], actions: list[dict[str, Any]], window_ms: int
) -> float | None:
    """Windows from the blatant extractor's first request to its first action (inf: never)."""
    worst: float | None = None
    for c in labels["campaigns"].values():
        if c["archetype"] != "blatant":
            continue
        acct = c["accounts"][0]
        hits = [
            parse_timestamp(a["ts"]) if isinstance(a["ts"], str) else a["ts"]
            for a in actions
            if a["action"] != "release"
            and (
                (a["entity_kind"] == "account" and a["entity_id"] == acct)
                or acct in (a.get("members") or [])
            )
        ]
        took = (min(hits) - c["start"]) / window_ms if hits else float("inf")
        worst = took if worst is None else max(worst, took)
    return worst


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _row(r: WorldResult) -> str:
    blatant = "-" if r.blatant_windows is None else f"{r.blatant_windows:.0f}"
    ttd = "-" if r.median_ttd is None else f"{r.median_ttd:.1f}"
    return (
        f"{r.variant:10s} {r.seed:4d} {r.events:9,d} {r.accounts:7,d} "
        f"{r.big_caught:>3d}/{r.big:<3d} {100 * r.account_recall:7.1f}% {blatant:>7s} "
        f"{ttd:>6s} {_pct(r.flagged):>8s} {_pct(r.throttled):>8s} "
        f"{r.hard_negatives_throttled:>3d}/{r.hard_negatives:<5d} "
        f"{r.replacements_in_2:>4d}/{r.replacements:<4d} {r.seconds:6.1f}  {r.weakest}"
    )


HEADER = (
    f"{'variant':10s} {'seed':>4s} {'events':>9s} {'accounts':>7s} {'big':>7s} {'recall':>8s} "
    f"{'blatant':>7s} {'TTD':>6s} {'flagged':>8s} {'thr/susp':>8s} {'hard neg':>9s} "
    f"{'replaced':>9s} {'secs':>6s}  weakest campaign"
)


def summary(results: list[WorldResult]) -> list[str]:
    lines = []
    for variant in dict.fromkeys(r.variant for r in results):
        rs = [r for r in results if r.variant == variant]
        recall = [r.account_recall for r in rs]
        blatant = [r.blatant_windows for r in rs if r.blatant_windows is not None]
        met = {
            "every campaign >= 5 accounts caught": sum(r.big_caught == r.big for r in rs),
            ">= 90% of campaign accounts": sum(r.account_recall >= 0.9 for r in rs),
            "blatant acted on within 3 windows": sum(b <= 3 for b in blatant),
            "benign throttled/suspended <= 0.05%": sum(r.throttled <= 0.0005 for r in rs),
            "benign flagged <= 0.5%": sum(r.flagged <= 0.005 for r in rs),
        }
        lines.append(f"{variant}: {len(rs)} worlds")
        lines.append(
            f"  campaign accounts caught: min {100 * min(recall):.1f}%  "
            f"median {100 * statistics.median(recall):.1f}%"
        )
        lines.append(
            f"  campaigns >= 5 accounts caught: {sum(r.big_caught for r in rs)}"
            f"/{sum(r.big for r in rs)} over all worlds"
        )
        lines.append(
            f"  benign flagged: max {_pct(max(r.flagged for r in rs))}  "
            f"thr/susp: max {_pct(max(r.throttled for r in rs))}"
        )
        if blatant:
            lines.append(
                f"  blatant windows to first action: worst {max(blatant):.0f}  "
                f"median {statistics.median(blatant):.0f}"
            )
        kinds: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for k, (caught, n) in r.by_kind.items():
                if n:
                    kinds[k].append(caught / n)
        lines.append(
            "  per campaign kind, share of accounts caught (worst world / median): "
            + ", ".join(
                f"{k} {100 * min(v):.0f}%/{100 * statistics.median(v):.0f}%"
                for k, v in sorted(kinds.items())
            )
        )
        lines.append(
            f"  hard negatives ({', '.join(HARD_NEGATIVES)}) throttled or suspended: "
            f"{sum(r.hard_negatives_throttled for r in rs)} of {sum(r.hard_negatives for r in rs)}"
        )
        lines.append(
            "  replacement accounts (joined after their campaign was throttled) acted on within 2 "
            f"windows: {sum(r.replacements_in_2 for r in rs)} of {sum(r.replacements for r in rs)}"
        )
        for target, n in met.items():
            lines.append(f"  {target}: {n}/{len(rs)} worlds")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-24", help="seed list, e.g. 1-24 or 1,5,9")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["full", "per-entity"], choices=list(VARIANTS))
    ap.add_argument(
        "--worlds",
        choices=["sim", "outside"],
        default="sim",
        help="the project's randomized simulator, or the generator written apart from it",
    )
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    jobs = [(s, args.scale, v, args.worlds) for v in args.variants for s in seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_world, *zip(*jobs, strict=True)))
    print(HEADER)
    for r in sorted(results, key=lambda r: (r.variant != "full", r.account_recall)):
        print(_row(r))
    print()
    for line in summary(results):
        print(line)
    print(
        f"\n{len(jobs)} runs in {time.perf_counter() - started:.0f} s, scale {args.scale}, "
        f"worlds {args.worlds}"
    )


if __name__ == "__main__":
    main()
