"""An independent "outside world": labelled API traffic for judging a distillation detector.

This module was written by other hands, from the product brief, the input event contract and
the usage-event JSON Schema (``schemas/json``) only -- without reading the detector or the
project's own traffic simulator. It is meant as an exam the detector has not studied for:
``bench/robustness.py --worlds outside`` scores it.

Each seed draws a different world (2-4 hours of gateway traffic on 17 Nov 2026, roughly
300k-1.2M events at scale 1) from wide ranges:

* benign traffic, the majority of accounts: chat users with diurnal sessions and drifting
  conversations, mobile users behind carrier-grade NAT, companies of 40-90 employees on one card
  behind one NAT address, ordinary customers of a residential proxy reseller, sign-up bursts
  (a class or hackathon), organic new accounts, and the heavy users that are hard to tell from
  campaigns: evaluation harnesses (teams running the same benchmark suite, sometimes sharded
  across accounts, sometimes with chain-of-thought prompting), templated batch jobs (some of
  them LLM-as-judge), coding agents with long contexts, enterprise RAG back-ends, and early
  adopters of a model released inside the window;
* campaigns, 1-40 % of the accounts: hydra clusters on the same proxy pool as its ordinary
  customers with banned accounts replaced, load-balanced account groups with shared cards and
  coordinated timing, chain-of-thought harvesting, rubric grading, a lab pivoting half its
  agentic-coding volume to the new model within hours, low-and-slow account swarms, and (in
  most worlds) a single blatant extractor of varying blatancy.

Gateways differ: timestamps as RFC 3339 or epoch ms, optional fields omitted or sent as null,
some gateways without ``cot_score`` or ``prompt_fingerprint``, payment and sign-up data known for
only some accounts. ``prompt_fingerprint`` is a 64-bit SimHash model: prompts from one template
differ in a few bits, unrelated prompts in about 32. ``cot_score`` is a noisy, per-world
calibrated classifier that gives identical prompts identical scores.

Usage (from the repository root)::

    python -m bench.outside_world --seed N --out DIR [--scale S]

writes ``DIR/events.jsonl`` (ordered by arrival: a few seconds of disorder, <1 % re-sent
duplicates) and ``DIR/labels.json`` (accounts -> campaign id or "benign" and archetype;
campaigns -> archetype, first/last request in epoch ms, accounts; plus a "world" description).
"""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

Arr = np.ndarray
Gen = np.random.Generator
Chunk = dict[str, Arr]

SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
EPOCH_DAY = int(datetime(2026, 11, 17, tzinfo=UTC).timestamp() * 1000)

FLAG, MINI, REASON, NEW = 0, 1, 2, 3
ENDPOINTS = ["/v1/messages", "/v1/chat/completions", "/v1/responses", "/v1/batches"]
EP_MSG, EP_CHAT, EP_RESP, EP_BATCH = 0, 1, 2, 3
TZS = np.array([-8.0, -7.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 7.0, 8.0, 9.0, 10.0])
RESERVED_FIRST_OCTETS = {0, 10, 100, 127, 169, 172, 192, 198, 203}
PUBLIC_FIRST = np.array([o for o in range(1, 224) if o not in RESERVED_FIRST_OCTETS])
CAMPAIGN_KINDS = [
    "hydra",
    "load_balanced",
    "cot_harvest",
    "rubric_grading",
    "model_pivot",
    "low_and_slow",
]

UA_POOLS: dict[str, list[str]] = {
    "sdk": [
        "frontier-python/1.9.2",
        "frontier-python/1.8.7",
        "frontier-python/1.6.0",
        "frontier-node/4.2.0",
        "frontier-node/4.1.3",
        "frontier-go/0.14.1",
        "frontier-java/2.3.0",
    ],
    "script": [
        "python-requests/2.32.3",
        "python-requests/2.31.0",
        "python-httpx/0.27.2",
        "curl/8.5.0",
        "axios/1.7.7",
        "Go-http-client/2.0",
        "aiohttp/3.10.10",
    ],
    "browser": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
        " Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "TypingMind/2.4 (Electron 32.1.0; darwin)",
        "ChatBox/1.9.1 (Windows NT 10.0)",
    ],
    "mobile": [
        "PocketChat/5.2.1 (iPhone; iOS 18.1; Scale/3.00)",
        "PocketChat/5.2.0 (Android 15; Pixel 8)",
        "okhttp/4.12.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    ],
    "agent": [
        "codeagent-cli/2.3.1 (darwin; arm64)",
        "codeagent-cli/2.3.0 (linux; x64)",
        "vscode-assist/1.96.0",
        "agentkit/0.9.4 frontier-python/1.9.2",
        "aider/0.65.1 litellm/1.52.0",
    ],
    "eval": [
        "lm-eval-harness/0.4.5 frontier-python/1.9.2",
        "inspect-ai/0.3.52 frontier-python/1.9.2",
        "helm/0.5.4 python-httpx/0.27.2",
        "python-httpx/0.27.2",
    ],
}


# --------------------------------------------------------------------------------------------
# small numeric helpers


def lognorm(rng: Gen, median: Any, sigma: Any, size: int) -> Arr:
    """Log-normal draws with the given median(s)."""
    return np.asarray(median, dtype=np.float64) * np.exp(
        np.asarray(sigma, dtype=np.float64) * rng.standard_normal(size)
    )


def logu(rng: Gen, lo: float, hi: float, size: int | None = None) -> Any:
    """Log-uniform draws in [lo, hi]."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def randu64(rng: Gen, n: int) -> Arr:
    return rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)


def flip_mask(rng: Gen, k: Arr) -> Arr:
    """A 64-bit mask per element with (at most) k[i] random bits set."""
    kk = np.minimum(np.asarray(k, dtype=np.int64), 40)
    out = np.zeros(kk.size, dtype=np.uint64)
    for j in range(int(kk.max(initial=0))):
        sel = np.nonzero(kk > j)[0]
        pos = rng.integers(0, 64, sel.size).astype(np.uint64)
        out[sel] |= np.left_shift(np.uint64(1), pos)
    return out


def splitmix(x: Arr) -> Arr:
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_normal(x: Arr) -> Arr:
    """A deterministic standard-normal value per 64-bit key (same prompt -> same noise)."""
    h1 = splitmix(x)
    h2 = splitmix(h1)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def at_least_one(rng: Gen, n: int, loc_s: Arr, ts: Arr, t_lo: Arr, t_hi: Arr) -> tuple[Arr, Arr]:
    """Give each of ``n`` accounts that drew no session one, at a uniform time in its span."""
    missing = np.setdiff1d(np.arange(n), loc_s)
    if missing.size == 0:
        return loc_s, ts
    lo = np.maximum(t_lo[missing], 0.0)
    extra = lo + rng.random(missing.size) * np.maximum(t_hi[missing] - lo, 1.0)
    return np.concatenate([loc_s, missing]), np.concatenate([ts, extra])


def group_starts(sizes: Arr) -> tuple[Arr, Arr]:
    """For groups of the given sizes laid end to end: (group of each element, first index)."""
    first = np.cumsum(sizes) - sizes
    grp = np.repeat(np.arange(sizes.size), sizes)
    return grp, first


def group_cumsum(values: Arr, grp: Arr, first: Arr) -> Arr:
    """Cumulative sum restarting at each group (inclusive)."""
    c = np.cumsum(values)
    before = c[first] - values[first]
    return np.asarray(c - before[grp])


def growth_flips(added: Arr, before: Arr) -> Arr:
    """Expected SimHash bit changes when `added` tokens of new text join `before` tokens: the
    angle between the two feature vectors is about arctan(added / before)."""
    return np.asarray(64.0 / np.pi * np.arctan(added / np.maximum(before, 1.0)))


def walk_fingerprints(rng: Gen, grp: Arr, first: Arr, start: Arr, flips: Arr) -> Arr:
    """SimHash of a growing conversation: each step flips a few bits of the previous one."""
    m = flip_mask(rng, rng.poisson(np.maximum(flips, 0.0)))
    if first.size:
        m[first] = start
    px = np.bitwise_xor.accumulate(m)
    prev = np.where(first > 0, px[np.maximum(first - 1, 0)], np.uint64(0)).astype(np.uint64)
    return np.asarray(px ^ prev[grp])


def empty_chunk() -> Chunk:
    return mk_chunk(*(np.zeros(0) for _ in range(9)))


def mk_chunk(
    acct: Any, t: Any, ip: Any, model: Any, tin: Any, tout: Any, fp: Any, cotz: Any, ep: Any
) -> Chunk:
    n = np.asarray(t).size

    def full(x: Any, dtype: Any) -> Arr:
        a = np.asarray(x)
        return np.full(n, a, dtype=dtype) if a.ndim == 0 else a.astype(dtype)

    return {
        "acct": full(acct, np.int64),
        "t": full(t, np.int64),
        "ip": full(ip, np.int64),
        "model": full(model, np.int8),
        "tin": full(tin, np.float64),
        "tout": full(tout, np.float64),
        "fp": full(fp, np.uint64),
        "cotz": full(cotz, np.float64),
        "ep": full(ep, np.int8),
    }


# --------------------------------------------------------------------------------------------
# prompt templates


@dataclass
class Templates:
    """Prompt templates with slots: fills of one template are SimHash near-duplicates."""

    base: Arr  # uint64 SimHash of the template with typical fills
    flips: Arr  # mean number of bits a slot fill changes
    cot: Arr  # latent "asks for step-by-step reasoning" signal (a logit)
    tin: Arr  # median input tokens
    tout: Arr  # median output tokens
    weight: Arr  # how often each template is used

    def pick(self, rng: Gen, n: int) -> Arr:
        return rng.choice(self.base.size, size=n, p=self.weight)

    def sample(self, rng: Gen, idx: Arr) -> tuple[Arr, Arr, Arr, Arr]:
        n = idx.size
        fp = self.base[idx] ^ flip_mask(rng, rng.poisson(self.flips[idx]))
        cotz = self.cot[idx] + rng.normal(0.0, 0.5, n)
        tin = lognorm(rng, self.tin[idx], 0.45, n)
        tout = lognorm(rng, self.tout[idx], 0.6, n)
        return fp, cotz, tin, tout


def make_templates(
    rng: Gen,
    n: int,
    *,
    flips: tuple[float, float],
    p_reason: float,
    tin: tuple[float, float],
    tout: tuple[float, float],
    reason_tout: float = 2.5,
    p_obfuscated: float = 0.0,
    zipf: float | None = None,
) -> Templates:
    n = max(1, int(n))
    reason = rng.random(n) < p_reason
    obf = reason & (rng.random(n) < p_obfuscated)
    cot = np.where(reason, rng.uniform(0.8, 3.5, n), rng.uniform(-4.5, -1.2, n))
    cot = np.where(obf, rng.uniform(-1.4, 0.6, n), cot)
    tout_med = logu(rng, tout[0], tout[1], n) * np.where(reason, reason_tout, 1.0)
    a = rng.uniform(0.0, 1.3) if zipf is None else zipf
    w = 1.0 / np.arange(1, n + 1) ** a
    w = rng.permutation(w / w.sum())
    return Templates(
        base=randu64(rng, n),
        flips=rng.uniform(flips[0], flips[1], n),
        cot=cot,
        tin=logu(rng, tin[0], tin[1], n),
        tout=tout_med,
        weight=w,
    )


# --------------------------------------------------------------------------------------------
# IP address plans


@dataclass
class IPPlan:
    """Where an account's requests come from: a home address (IPv4, or an IPv6 /64 with
    privacy addresses), and/or a pool (carrier NAT, proxy exits, NAT, cloud instances)."""

    home: Arr  # ip index, -1 = none
    v6: Arr  # uint64 /64 prefix, 0 = none
    p_pool: Arr  # probability that a session goes through the pool
    rotate: Arr  # pool address changes per request (else per session)
    pool_off: Arr
    pool_cnt: Arr


# --------------------------------------------------------------------------------------------
# behaviour parameter bundles


@dataclass
class Humans:
    accts: Arr
    sess_rate_h: Arr
    turns_mean: Arr
    think_s: Arr
    tz: Arr
    amp: float
    p_reason: Arr
    ips: IPPlan
    pref: Arr
    adopt: Arr
    adopt_delay: Arr
    ep: Arr
    tpl: Templates | None = None
    tpl_p: Arr | None = None
    t_lo: Arr | None = None
    t_hi: Arr | None = None
    tout_med: float = 350.0
    pop_p: float = 0.05
    scalable: bool = False


@dataclass
class Coders:
    accts: Arr
    sess_rate_h: Arr
    steps_mean: Arr
    gap_s: Arr
    tz: Arr
    amp: float
    ips: IPPlan
    pref: Arr
    adopt: Arr
    adopt_delay: Arr
    ep: Arr
    ctx0: float = 8000.0
    inc: float = 1500.0
    tout_med: float = 300.0
    step_flips: float = 0.5
    p_reason: float = 0.03
    tpl: Templates | None = None
    pivot: tuple[float, float, float] | None = None  # (start, ramp, final share)
    t_lo: Arr | None = None
    t_hi: Arr | None = None
    at_least_one: bool = True


@dataclass
class Streams:
    """Machine clients: gamma-distributed gaps around a rate, optional pauses and diurnal."""

    accts: Arr
    rate_s: Arr
    t_lo: Arr
    t_hi: Arr
    cv: Arr
    tpl: Templates
    ips: IPPlan
    model: Arr  # per account
    ep: Arr
    pauses: float = 0.0
    pause_min: float = 10.0
    tz: Arr | None = None
    amp: float = 0.0
    p_random: float = 0.0
    p_model_alt: float = 0.0
    tpl_per_acct: Arr | None = None  # restrict an account to one template


@dataclass
class Group:
    name: str
    phase: str  # "light", "campaign", "heavy"
    fn: Callable[[Gen, Any, float], Chunk]
    spec: Any


@dataclass
class Gateway:
    name: str
    ts_ms: bool
    frac: int
    send_cot: bool
    send_fp: bool
    send_latency: bool
    send_status: bool
    send_org: bool
    send_key: bool
    send_ua: bool
    send_ep: bool
    nulls: bool
    upper: bool
    id_style: int
    lag_ms: float
    cot_bias: float
    weight: float


@dataclass
class Campaign:
    cid: str
    kind: str
    accts: list[int] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# the world


class World:
    def __init__(self, seed: int, scale: float = 1.0) -> None:
        self.seed = int(seed)
        self.scale = float(scale)
        self.rng = np.random.default_rng([self.seed, 0xD15711])
        r = self.rng
        self.duration = int(r.uniform(2.0, 4.0) * HOUR)
        self.t0 = EPOCH_DAY + int(r.integers(0, 21)) * HOUR + int(r.integers(0, 60)) * MIN
        self.hour0 = (self.t0 % DAY) / HOUR
        self.target_events = float(logu(r, 330_000, 1_050_000)) * self.scale
        self.tz_w = r.dirichlet(np.full(TZS.size, 0.6))

        # accounts
        self.acc_id: list[str] = []
        self.acc_label: list[str] = []
        self.acc_arch: list[str] = []
        self.acc_org: list[str | None] = []
        self.acc_pay: list[str | None] = []
        self.acc_created: list[int | None] = []
        self.acc_ua: list[str] = []
        self.acc_keys: list[list[str]] = []
        self.acc_region: list[int] = []
        self.acc_limit: list[float] = []
        self.acc_banned: list[bool] = []
        self._ids: set[str] = set()
        self.id_style = int(r.integers(0, 3))
        self.pay_style = int(r.integers(0, 2))

        # ip table and special pools
        self.ips: list[str] = []
        self._pool_parts: list[Arr] = []
        self._pool_len = 0
        self.pool_flat = np.zeros(1, dtype=np.int64)

        self.groups: list[Group] = []
        self.campaigns: list[Campaign] = []
        self.info: dict[str, Any] = {
            "seed": self.seed,
            "scale": self.scale,
            "start": self.t0,
            "duration_h": round(self.duration / HOUR, 3),
            "target_events": int(self.target_events),
            "benign": {},
            "campaigns": [],
        }
        self._plan_campaign_kinds()
        self._setup_models()
        self._setup_network()
        self._setup_gateways()
        self._setup_classifier()
        self._setup_status()
        self.popular = make_templates(
            r, 400, flips=(0.0, 1.0), p_reason=0.05, tin=(8, 60), tout=(80, 500), zipf=1.1
        )

    # ---------------------------------------------------------------- setup

    def _plan_campaign_kinds(self) -> None:
        r = self.rng
        k = int(r.choice([1, 2, 3, 4, 5], p=[0.15, 0.3, 0.27, 0.18, 0.1]))
        kinds = [str(x) for x in r.choice(CAMPAIGN_KINDS, size=k, replace=False)]
        if "hydra" in kinds and r.random() < 0.2:
            kinds.append("hydra")
        self.campaign_kinds = kinds
        u = r.random()
        self.n_blatant = 0 if u < 0.15 else (2 if u > 0.9 else 1)
        v = r.random()
        if v < 0.4:
            self.camp_share = r.uniform(0.012, 0.05)
        elif v < 0.75:
            self.camp_share = r.uniform(0.05, 0.15)
        else:
            self.camp_share = r.uniform(0.15, 0.37)
        if self.camp_share > 0.15 and not {"hydra", "low_and_slow"} & set(kinds):
            # only a swarm of many accounts makes a campaign this large
            kinds.append(str(r.choice(["hydra", "low_and_slow"])))
        self.camp_event_cap = r.uniform(0.04, 0.45)

    def _setup_models(self) -> None:
        r = self.rng
        fam = str(r.choice(["aster", "corvid", "lumen", "meridian", "quill", "sable", "tessera"]))
        ver = int(r.integers(3, 7))
        suffix = "" if r.random() < 0.5 else "-2026" + str(r.choice(["0915", "1001", "1020"]))
        self.models = [
            f"{fam}-{ver}{suffix}",
            f"{fam}-{ver}-mini{suffix}",
            f"{fam}-{ver}-reasoning{suffix}",
            f"{fam}-{ver}.5",
        ]
        self.tps = np.array(
            [r.uniform(45, 90), r.uniform(110, 220), r.uniform(40, 80), r.uniform(50, 100)]
        )
        has_release = "model_pivot" in self.campaign_kinds or r.random() < 0.6
        self.t_rel: float | None = (
            float(r.uniform(0.1, 0.55) * self.duration) if has_release else None
        )
        self.info["models"] = self.models
        self.info["new_model_release_ms"] = (
            None if self.t_rel is None else int(self.t0 + self.t_rel)
        )

    def _setup_network(self) -> None:
        r = self.rng
        n_isp = int(r.integers(40, 160))
        first = r.choice(PUBLIC_FIRST, n_isp)
        self.isp16 = (first.astype(np.int64) << 8) | r.integers(0, 256, n_isp)
        self.isp_w = r.dirichlet(np.full(n_isp, 0.5))
        self.isp_span = r.integers(4, 200, n_isp)
        self.isp_third0 = r.integers(0, 256, n_isp)
        n6 = int(r.integers(8, 50))
        p32 = (0x2000_0000 | r.integers(0, 2**29, n6)).astype(np.uint64)
        regions = r.integers(1, 24, n6)
        self.v6_p48 = np.concatenate(
            [
                (p << np.uint64(16)) | r.integers(0, 65536, int(k)).astype(np.uint64)
                for p, k in zip(p32, regions, strict=True)
            ]
        )
        self.v6_w = r.dirichlet(np.full(self.v6_p48.size, 0.7))
        self.v6_share = float(r.uniform(0.05, 0.45))
        n_cloud16 = int(r.integers(4, 12))
        c16 = (r.choice(PUBLIC_FIRST, n_cloud16).astype(np.int64) << 8) | r.integers(
            0, 256, n_cloud16
        )
        n24 = int(r.integers(60, 400))
        self.cloud24 = (r.choice(c16, n24) << 8) | r.integers(0, 256, n24)
        self.cloud_w = r.dirichlet(np.full(n24, 0.4))
        # mobile carriers with carrier-grade NAT
        self.carriers: list[tuple[int, int]] = []
        for _ in range(int(r.integers(2, 7))):
            blocks = self.res_v4_ints(r, int(r.integers(1, 4))) & ~0xFF
            n_ip = int(r.integers(4, 48))
            ints = r.choice(blocks, n_ip) | r.integers(1, 255, n_ip)
            self.carriers.append(self.reserve_pool(self.add_v4(ints)))
        self.carrier_w = r.dirichlet(np.full(len(self.carriers), 1.0))
        # proxy resellers (residential exits shared by customers and, maybe, a hydra)
        self.proxies: list[tuple[int, int]] = []
        self.proxy_info: list[dict[str, Any]] = []
        for _ in range(max(1, self.campaign_kinds.count("hydra"))):
            self._add_proxy_pool()

    def _add_proxy_pool(self) -> None:
        r = self.rng
        if r.random() < 0.75:
            n_ip = int(logu(r, 300, 20_000) * max(self.scale, 0.05))
            n_ip = max(n_ip, 50)
            ints = self.res_v4_ints(r, n_ip)
            idx = self.add_v4(ints)
            n6 = int(n_ip * r.uniform(0.0, 0.25))
            if n6:
                idx = np.concatenate([idx, self.add_v6(self.res_v6_prefix(r, n6), randu64(r, n6))])
            kind = "residential"
        else:
            n_blocks = int(r.integers(4, 40))
            blocks = self.cloud_ints(r, n_blocks, n_blocks) & ~0xFF
            n_ip = int(n_blocks * r.integers(30, 250))
            ints = r.choice(blocks, n_ip) | r.integers(1, 255, n_ip)
            idx = self.add_v4(np.unique(ints))
            kind = "datacenter"
        self.proxies.append(self.reserve_pool(idx))
        self.proxy_info.append({"kind": kind, "ips": int(idx.size)})

    def _setup_gateways(self) -> None:
        r = self.rng
        n = int(r.integers(2, 6))
        ts_ms = r.random(n) < 0.5
        if ts_ms.all() or not ts_ms.any():
            ts_ms[int(r.integers(0, n))] ^= True
        cot_mode = str(r.choice(["all", "partial", "none"], p=[0.55, 0.3, 0.15]))
        fp_mode = str(r.choice(["all", "partial", "none"], p=[0.6, 0.28, 0.12]))

        def sends(mode: str) -> Arr:
            if mode == "all":
                return np.ones(n, dtype=bool)
            if mode == "none":
                return np.zeros(n, dtype=bool)
            s = r.random(n) < 0.5
            s[int(r.integers(0, n))] = True
            if s.all():
                s[int(r.integers(0, n))] = False
            return s

        cot_s, fp_s = sends(cot_mode), sends(fp_mode)
        w = r.dirichlet(np.full(n, 2.0))
        self.gateways = [
            Gateway(
                name=f"gw-{chr(97 + i)}{int(r.integers(1, 9))}",
                ts_ms=bool(ts_ms[i]),
                frac=int(r.choice([3, 3, 3, 6, 0])),
                send_cot=bool(cot_s[i]),
                send_fp=bool(fp_s[i]),
                send_latency=bool(r.random() < 0.85),
                send_status=bool(r.random() < 0.85),
                send_org=bool(r.random() < 0.7),
                send_key=bool(r.random() < 0.7),
                send_ua=bool(r.random() < 0.85),
                send_ep=bool(r.random() < 0.75),
                nulls=bool(r.random() < 0.3),
                upper=bool(r.random() < 0.15),
                id_style=int(r.integers(0, 3)),
                lag_ms=float(logu(r, 20, 700)),
                cot_bias=float(r.normal(0, 0.3)),
                weight=float(w[i]),
            )
            for i in range(n)
        ]
        self.pay_mode = str(r.choice(["full", "partial", "none"], p=[0.3, 0.5, 0.2]))
        self.created_mode = str(r.choice(["full", "partial", "none"], p=[0.35, 0.45, 0.2]))
        self.p_pay_known = 1.0 if self.pay_mode == "full" else float(r.uniform(0.25, 0.9))
        self.p_created_known = 1.0 if self.created_mode == "full" else float(r.uniform(0.25, 0.9))
        self.dup_rate = float(logu(r, 0.0005, 0.008))
        # what the gateway fingerprints: the whole prompt (a conversation drifts slowly as it
        # grows) or only the newest message (successive turns are unrelated)
        self.fp_scope = str(r.choice(["full_prompt", "last_message"], p=[0.65, 0.35]))
        self.info["gateways"] = [
            {
                "name": g.name,
                "ts": "epoch_ms" if g.ts_ms else f"rfc3339(frac={g.frac})",
                "cot_score": g.send_cot,
                "prompt_fingerprint": g.send_fp,
                "nulls_for_missing": g.nulls,
                "traffic_share": round(g.weight, 3),
                "mean_lag_ms": round(g.lag_ms, 1),
            }
            for g in self.gateways
        ]
        self.info["optional_fields"] = {
            "cot_score": cot_mode,
            "prompt_fingerprint": fp_mode,
            "payment_fingerprint": self.pay_mode,
            "payment_known_share": round(self.p_pay_known, 3) if self.pay_mode != "none" else 0.0,
            "fingerprint_scope": self.fp_scope,
            "account_created_at": self.created_mode,
            "created_known_share": round(self.p_created_known, 3)
            if self.created_mode != "none"
            else 0.0,
        }
        self.info["duplicate_rate"] = round(self.dup_rate, 5)

    def _setup_classifier(self) -> None:
        r = self.rng
        self.cot_a = float(r.uniform(0.5, 1.6))
        self.cot_b = float(r.uniform(-1.5, 1.0))
        self.cot_sigma = float(r.uniform(0.3, 1.8))
        self.cot_squash = float(r.uniform(0.55, 1.0)) if r.random() < 0.35 else 1.0
        self.cot_round = int(r.choice([0, 2, 3, 4]))
        self.cot_glitch = float(r.uniform(0.0, 0.01))
        self.info["cot_classifier"] = {
            "slope": round(self.cot_a, 3),
            "bias": round(self.cot_b, 3),
            "prompt_noise_sd": round(self.cot_sigma, 3),
            "squash": round(self.cot_squash, 3),
            "round_digits": self.cot_round or None,
            "fallback_0.5_rate": round(self.cot_glitch, 4),
        }

    def _setup_status(self) -> None:
        r = self.rng
        self.p5xx = float(logu(r, 0.0005, 0.01))
        self.p400 = float(logu(r, 0.001, 0.01))
        self.info["error_rates"] = {"5xx": round(self.p5xx, 4), "400": round(self.p400, 4)}

    # ---------------------------------------------------------------- registries

    def sub_rng(self, *key: int) -> Gen:
        return np.random.default_rng([self.seed, *key])

    def add_v4(self, ints: Arr) -> Arr:
        strs = [f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}" for x in ints.tolist()]
        start = len(self.ips)
        self.ips.extend(strs)
        return np.arange(start, start + len(strs), dtype=np.int64)

    def add_v6(self, prefix64: Arr, iid: Arr) -> Arr:
        strs = [
            str(ipaddress.IPv6Address((p << 64) | (i or 1)))
            for p, i in zip(prefix64.tolist(), iid.tolist(), strict=True)
        ]
        start = len(self.ips)
        self.ips.extend(strs)
        return np.arange(start, start + len(strs), dtype=np.int64)

    def reserve_pool(self, idx: Arr) -> tuple[int, int]:
        off = self._pool_len
        self._pool_parts.append(np.asarray(idx, dtype=np.int64))
        self._pool_len += int(idx.size)
        return off, int(idx.size)

    def res_v4_ints(self, rng: Gen, n: int) -> Arr:
        isp = rng.choice(self.isp16.size, n, p=self.isp_w)
        third = (self.isp_third0[isp] + rng.integers(0, self.isp_span[isp])) % 256
        return (self.isp16[isp] << 16) | (third << 8) | rng.integers(1, 255, n)

    def res_v6_prefix(self, rng: Gen, n: int) -> Arr:
        p48 = self.v6_p48[rng.choice(self.v6_p48.size, n, p=self.v6_w)]
        low = rng.integers(0, 65536, n).astype(np.uint64)
        return (p48 << np.uint64(16)) | low

    def cloud_ints(self, rng: Gen, n: int, n_blocks: int) -> Arr:
        blocks = self.cloud24[rng.choice(self.cloud24.size, max(1, n_blocks), p=self.cloud_w)]
        return (rng.choice(blocks, n) << 8) | rng.integers(1, 255, n)

    def new_ids(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            for x in randu64(self.rng, n - len(out)).tolist():
                if self.id_style == 0:
                    s = f"acct_{x:016x}"
                elif self.id_style == 1:
                    s = f"u{x % 10**12:012d}"
                else:
                    s = str(uuid.UUID(int=(x << 64) | (x * 0x9E3779B1 % 2**64), version=4))
                if s not in self._ids:
                    self._ids.add(s)
                    out.append(s)
        return out

    def cards(self, n: int) -> list[str]:
        xs = randu64(self.rng, n).tolist()
        if self.pay_style == 0:
            return [f"pm_{x:016x}" for x in xs]
        return [f"{x:016x}{(x * 0x2545F491) % 2**32:08x}" for x in xs]

    def maybe_cards(self, n: int, p: float) -> list[str | None]:
        has = self.rng.random(n) < p
        c = self.cards(n)
        return [c[i] if has[i] else None for i in range(n)]

    def old_created(self, n: int, median_days: float = 240.0) -> list[int | None]:
        days = np.clip(lognorm(self.rng, median_days, 1.1, n), 0.3, 1800)
        return [int(self.t0 - d * DAY) for d in days.tolist()]

    def uas(self, n: int, pools: dict[str, float]) -> list[str]:
        names = list(pools)
        p = np.array([pools[k] for k in names], dtype=np.float64)
        which = self.rng.choice(len(names), n, p=p / p.sum())
        return [
            UA_POOLS[names[w]][int(self.rng.integers(0, len(UA_POOLS[names[w]])))]
            for w in which.tolist()
        ]

    def regions(self, n: int) -> Arr:
        w = np.array([g.weight for g in self.gateways])
        return self.rng.choice(len(self.gateways), n, p=w / w.sum())

    def tzs(self, n: int) -> Arr:
        return TZS[self.rng.choice(TZS.size, n, p=self.tz_w)]

    def add_accounts(
        self,
        n: int,
        label: str,
        arch: str,
        *,
        created: list[int | None] | None = None,
        pay: Sequence[str | None] | None = None,
        org: list[str | None] | str | None = None,
        ua: list[str] | str | None = None,
        region: Arr | int | None = None,
        limit: float | Arr = 60.0,
        keys: int = 1,
    ) -> Arr:
        n = int(n)
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        start = len(self.acc_id)
        self.acc_id.extend(self.new_ids(n))
        self.acc_label.extend([label] * n)
        self.acc_arch.extend([arch] * n)
        self.acc_created.extend(created if created is not None else self.old_created(n))
        self.acc_pay.extend(pay if pay is not None else self.maybe_cards(n, 0.5))
        if org is None or isinstance(org, str):
            orgs: list[str | None] = (
                [f"org-{x:010x}" for x in randu64(self.rng, n).tolist()]
                if org is None
                else [org] * n
            )
        else:
            orgs = list(org)
        self.acc_org.extend(orgs)
        if ua is None:
            self.acc_ua.extend(self.uas(n, {"sdk": 2, "script": 1}))
        elif isinstance(ua, str):
            self.acc_ua.extend([ua] * n)
        else:
            self.acc_ua.extend(ua)
        nk = np.maximum(1, self.rng.poisson(keys - 1, n) + 1) if keys > 1 else np.ones(n, int)
        allk = randu64(self.rng, int(nk.sum())).tolist()
        pos = 0
        for k in nk.tolist():
            self.acc_keys.append([f"key_{x >> 24:010x}" for x in allk[pos : pos + k]])
            pos += k
        reg = self.regions(n) if region is None else np.broadcast_to(np.asarray(region), (n,))
        self.acc_region.extend(int(x) for x in reg.tolist())
        self.acc_limit.extend(np.broadcast_to(np.asarray(limit, dtype=float), (n,)).tolist())
        self.acc_banned.extend([False] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def new_campaign(self, kind: str) -> Campaign:
        cid = f"cmp-{int(randu64(self.rng, 1)[0]) >> 40:06x}"
        c = Campaign(cid=cid, kind=kind)
        self.campaigns.append(c)
        return c

    # ---------------------------------------------------------------- ip plans

    def plan_residential(
        self, n: int, *, v6_share: float | None = None, p_mobile: Arr | float = 0.08
    ) -> IPPlan:
        r = self.rng
        v6s = self.v6_share if v6_share is None else v6_share
        home = self.add_v4(self.res_v4_ints(r, n))
        is6 = r.random(n) < v6s
        v6 = np.where(is6, self.res_v6_prefix(r, n), np.uint64(0)).astype(np.uint64)
        car = r.choice(len(self.carriers), n, p=self.carrier_w)
        off = np.array([self.carriers[c][0] for c in car.tolist()], dtype=np.int64)
        cnt = np.array([self.carriers[c][1] for c in car.tolist()], dtype=np.int64)
        return IPPlan(
            home=home,
            v6=v6,
            p_pool=np.broadcast_to(np.asarray(p_mobile, dtype=float), (n,)).copy(),
            rotate=np.zeros(n, dtype=bool),
            pool_off=off,
            pool_cnt=cnt,
        )

    def plan_pool(
        self,
        n: int,
        pool: tuple[int, int],
        *,
        rotate: Arr | bool = False,
        p_pool: Arr | float = 1.0,
        home: IPPlan | None = None,
    ) -> IPPlan:
        base = home or IPPlan(
            home=np.full(n, -1, dtype=np.int64),
            v6=np.zeros(n, dtype=np.uint64),
            p_pool=np.ones(n),
            rotate=np.zeros(n, dtype=bool),
            pool_off=np.zeros(n, dtype=np.int64),
            pool_cnt=np.zeros(n, dtype=np.int64),
        )
        return IPPlan(
            home=base.home,
            v6=base.v6,
            p_pool=np.broadcast_to(np.asarray(p_pool, dtype=float), (n,)).copy(),
            rotate=np.broadcast_to(np.asarray(rotate, dtype=bool), (n,)).copy(),
            pool_off=np.full(n, pool[0], dtype=np.int64),
            pool_cnt=np.full(n, pool[1], dtype=np.int64),
        )

    def plan_cloud(
        self, n: int, per_acct: tuple[int, int], *, shared: int = 0, blocks: int = 2
    ) -> IPPlan:
        """Cloud instances: each account its own few addresses, or all share `shared` ones."""
        r = self.rng
        if shared:
            idx = self.add_v4(self.cloud_ints(r, shared, blocks))
            off, cnt = self.reserve_pool(idx)
            return self.plan_pool(n, (off, cnt), rotate=True)
        offs = np.zeros(n, dtype=np.int64)
        cnts = np.zeros(n, dtype=np.int64)
        for i in range(n):
            k = int(r.integers(per_acct[0], per_acct[1] + 1))
            offs[i], cnts[i] = self.reserve_pool(
                self.add_v4(self.cloud_ints(r, k, int(r.integers(1, blocks + 1))))
            )
        p = self.plan_pool(n, (0, 0), rotate=True)
        p.pool_off, p.pool_cnt = offs, cnts
        return p

    def plan_fixed(self, n: int, ips: Arr, *, rotate: bool = True) -> IPPlan:
        return self.plan_pool(n, self.reserve_pool(ips), rotate=rotate)

    def resolve_ips(self, rng: Gen, plan: IPPlan, loc_ev: Arr, sess_ev: Arr, loc_s: Arr) -> Arr:
        ns = loc_s.size
        cnt = plan.pool_cnt[loc_s]
        no_home = (plan.home[loc_s] < 0) & (plan.v6[loc_s] == 0)
        use_pool = ((rng.random(ns) < plan.p_pool[loc_s]) | no_home) & (cnt > 0)
        pick = self.pool_flat[plan.pool_off[loc_s] + (rng.random(ns) * cnt).astype(np.int64)]
        sess_ip = np.where(use_pool, pick, plan.home[loc_s])
        v6s = ~use_pool & (plan.v6[loc_s] != 0)
        if v6s.any():
            k = int(v6s.sum())
            sess_ip[v6s] = self.add_v6(plan.v6[loc_s[v6s]], randu64(rng, k))
        ip = sess_ip[sess_ev]
        rot = plan.rotate[loc_ev] & use_pool[sess_ev]
        if rot.any():
            lr = loc_ev[rot]
            c = plan.pool_cnt[lr]
            ip[rot] = self.pool_flat[plan.pool_off[lr] + (rng.random(lr.size) * c).astype(np.int64)]
        return np.asarray(ip)

    # ---------------------------------------------------------------- time helpers

    def diurnal(self, t: Arr, tz: Arr, amp: float) -> Arr:
        h = (self.hour0 + t / HOUR + tz) % 24.0
        curve = 0.5 - 0.5 * np.cos(2.0 * np.pi * (h - 4.5) / 24.0)
        return np.asarray((1.0 - amp) + amp * curve)

    def thin(
        self,
        rng: Gen,
        rate_ms: Arr,
        t_lo: Arr,
        t_hi: Arr,
        accept: Callable[[Arr, Arr], Arr] | None,
    ) -> tuple[Arr, Arr]:
        span = np.maximum(t_hi - t_lo, 0.0)
        k = rng.poisson(rate_ms * span)
        loc = np.repeat(np.arange(rate_ms.size), k)
        t = t_lo[loc] + rng.random(loc.size) * span[loc]
        if accept is not None and loc.size:
            keep = rng.random(loc.size) < accept(loc, t)
            loc, t = loc[keep], t[keep]
        return loc, t

    def choose_models(self, rng: Gen, pref: Arr, adopt: Arr, delay: Arr, loc: Arr, t: Arr) -> Arr:
        cum = np.cumsum(pref, axis=1)[loc]
        u = rng.random(loc.size)[:, None]
        m = np.minimum((u > cum).sum(axis=1), 2)
        if self.t_rel is not None:
            sw = (t >= self.t_rel + delay[loc]) & (rng.random(loc.size) < adopt[loc])
            m = np.where(sw, NEW, m)
        return np.asarray(m, dtype=np.int8)

    def machine_times(
        self,
        rng: Gen,
        rate_s: Arr,
        t_lo: Arr,
        t_hi: Arr,
        cv: Arr,
        pauses: float = 0.0,
        pause_min: float = 10.0,
    ) -> tuple[Arr, Arr]:
        dur = np.maximum(t_hi - t_lo, 0.0)
        mean_gap = 1000.0 / np.maximum(rate_s, 1e-9)
        exp_n = dur / mean_gap
        nmax = (exp_n + 5.0 * np.sqrt(exp_n) * np.maximum(cv, 1.0) + 10).astype(np.int64)
        nmax = np.where(dur > 0, nmax, 0)
        loc, first = group_starts(nmax)
        if loc.size == 0:
            return loc, np.zeros(0)
        k = 1.0 / np.maximum(cv, 0.02) ** 2
        g = rng.gamma(k[loc], (mean_gap / k)[loc])
        g[first[nmax > 0]] = rng.random(int((nmax > 0).sum())) * mean_gap[nmax > 0]
        t = t_lo[loc] + group_cumsum(g, loc, first)
        keep = t < t_hi[loc]
        if pauses > 0:
            n = rate_s.size
            kp = 6
            ps = t_lo[:, None] + rng.random((n, kp)) * dur[:, None]
            pl = lognorm(rng, pause_min * MIN, 0.8, n * kp).reshape(n, kp)
            valid = np.arange(kp)[None, :] < rng.poisson(pauses, n)[:, None]
            for j in range(kp):
                inside = (t >= ps[loc, j]) & (t < ps[loc, j] + pl[loc, j]) & valid[loc, j]
                keep &= ~inside
        return loc[keep], t[keep]

    # ---------------------------------------------------------------- behaviour generators

    def gen_humans(self, rng: Gen, h: Humans, mult: float) -> Chunk:
        n = h.accts.size
        if n == 0:
            return empty_chunk()
        t_lo = h.t_lo if h.t_lo is not None else np.full(n, -20.0 * MIN)
        t_hi = h.t_hi if h.t_hi is not None else np.full(n, float(self.duration))
        rate = h.sess_rate_h * (mult if h.scalable else 1.0) / HOUR
        loc_s, ts = self.thin(
            rng, rate, t_lo, t_hi, lambda loc, t: self.diurnal(t, h.tz[loc], h.amp)
        )
        loc_s, ts = at_least_one(rng, n, loc_s, ts, t_lo, t_hi)
        ns = loc_s.size
        nturn = rng.geometric(1.0 / np.maximum(h.turns_mean[loc_s], 1.0))
        sess, first = group_starts(nturn)
        loc = loc_s[sess]
        turn = np.arange(sess.size) - first[sess]
        gaps = lognorm(rng, h.think_s[loc] * 1000.0, 0.9, sess.size) + 2000.0
        t = ts[sess] + group_cumsum(np.where(turn == 0, 0.0, gaps), sess, first)

        # free conversation: tokens grow turn by turn; the SimHash drifts with the growth (or,
        # when only the last message is fingerprinted, every turn is a new text)
        sys_tok = lognorm(rng, 140.0, 0.8, ns)[sess]
        inc = lognorm(rng, 420.0, 0.7, sess.size)
        grown = group_cumsum(np.where(turn == 0, 0.0, inc), sess, first)
        tin = sys_tok + grown
        start = randu64(rng, ns)
        pop = rng.random(ns) < h.pop_p
        if pop.any():
            j = self.popular.pick(rng, int(pop.sum()))
            start[pop] = self.popular.base[j] ^ flip_mask(rng, rng.poisson(0.4, j.size))
        if self.fp_scope == "full_prompt":
            fp = walk_fingerprints(rng, sess, first, start, growth_flips(inc, tin - inc))
        else:
            fp = randu64(rng, sess.size)
            fp[first] = start
        reason_s = rng.random(ns) < h.p_reason[loc_s]
        reason = (reason_s[sess] & (rng.random(sess.size) < 0.75)) | (
            rng.random(sess.size) < 0.15 * h.p_reason[loc]
        )
        cotz = np.where(
            reason, rng.uniform(0.8, 3.5, sess.size), rng.uniform(-4.5, -1.2, sess.size)
        ) + rng.normal(0, 0.5, sess.size)
        tout = lognorm(rng, h.tout_med, 0.9, sess.size) * np.where(reason, 2.2, 1.0)
        if h.tpl is not None and h.tpl_p is not None:
            ts_tpl = (rng.random(ns) < h.tpl_p[loc_s])[sess]
            if ts_tpl.any():
                k = int(ts_tpl.sum())
                f2, c2, i2, o2 = h.tpl.sample(rng, h.tpl.pick(rng, k))
                fp[ts_tpl], cotz[ts_tpl], tin[ts_tpl], tout[ts_tpl] = f2, c2, i2, o2
        m_s = self.choose_models(rng, h.pref, h.adopt, h.adopt_delay, loc_s, ts)
        ip = self.resolve_ips(rng, h.ips, loc, sess, loc_s)
        return mk_chunk(h.accts[loc], t, ip, m_s[sess], tin, tout, fp, cotz, h.ep[loc])

    def gen_coders(self, rng: Gen, c: Coders, mult: float) -> Chunk:
        n = c.accts.size
        if n == 0:
            return empty_chunk()
        t_lo = c.t_lo if c.t_lo is not None else np.full(n, -40.0 * MIN)
        t_hi = c.t_hi if c.t_hi is not None else np.full(n, float(self.duration))
        loc_s, ts = self.thin(
            rng,
            c.sess_rate_h * mult / HOUR,
            t_lo,
            t_hi,
            lambda loc, t: self.diurnal(t, c.tz[loc], c.amp),
        )
        if c.at_least_one:
            loc_s, ts = at_least_one(rng, n, loc_s, ts, t_lo, t_hi)
        ns = loc_s.size
        steps = rng.geometric(1.0 / np.maximum(c.steps_mean[loc_s], 1.0))
        sess, first = group_starts(steps)
        loc = loc_s[sess]
        step = np.arange(sess.size) - first[sess]
        gaps = lognorm(rng, c.gap_s[loc] * 1000.0, 0.8, sess.size) + 400.0
        t = ts[sess] + group_cumsum(np.where(step == 0, 0.0, gaps), sess, first)
        if c.tpl is not None:
            j = c.tpl.pick(rng, ns)
            start = c.tpl.base[j] ^ flip_mask(rng, rng.poisson(c.tpl.flips[j]))
        else:
            start = randu64(rng, ns)
        ctx0 = lognorm(rng, c.ctx0, 0.7, ns)
        inc = lognorm(rng, c.inc, 0.9, sess.size)
        grown = ctx0[sess] + group_cumsum(np.where(step == 0, 0.0, inc), sess, first)
        limit = 190_000.0
        # long sessions compact their context when it nears the window
        tin = np.where(grown > limit, 0.25 * limit + np.mod(grown, 0.6 * limit), grown)
        if self.fp_scope == "full_prompt":
            flips = growth_flips(inc, tin - inc) + c.step_flips
            fp = walk_fingerprints(rng, sess, first, start, flips)
        else:
            fp = randu64(rng, sess.size)
            fp[first] = start
        tout = lognorm(rng, c.tout_med, 0.9, sess.size)
        reason = rng.random(sess.size) < c.p_reason
        cotz = np.where(
            reason, rng.uniform(0.5, 3.0, sess.size), rng.uniform(-4.5, -1.5, sess.size)
        ) + rng.normal(0, 0.5, sess.size)
        m_s = self.choose_models(rng, c.pref, c.adopt, c.adopt_delay, loc_s, ts)
        if c.pivot is not None:
            p0, ramp, final = c.pivot
            share = final * np.clip((ts - p0) / max(ramp, 1.0), 0.0, 1.0)
            m_s = np.where(rng.random(ns) < share, NEW, m_s).astype(np.int8)
        ip = self.resolve_ips(rng, c.ips, loc, sess, loc_s)
        return mk_chunk(c.accts[loc], t, ip, m_s[sess], tin, tout, fp, cotz, c.ep[loc])

    def gen_streams(self, rng: Gen, s: Streams, mult: float) -> Chunk:
        loc, t = self.machine_times(
            rng, s.rate_s * mult, s.t_lo, s.t_hi, s.cv, s.pauses, s.pause_min
        )
        if s.tz is not None and s.amp > 0 and loc.size:
            keep = rng.random(loc.size) < self.diurnal(t, s.tz[loc], s.amp)
            loc, t = loc[keep], t[keep]
        n = loc.size
        if n == 0:
            return empty_chunk()
        j = s.tpl_per_acct[loc] if s.tpl_per_acct is not None else s.tpl.pick(rng, n)
        fp, cotz, tin, tout = s.tpl.sample(rng, j)
        if s.p_random > 0:
            rnd = rng.random(n) < s.p_random
            k = int(rnd.sum())
            fp[rnd] = randu64(rng, k)
            cotz[rnd] = rng.uniform(-4.5, -1.0, k)
        model = s.model[loc]
        if s.p_model_alt > 0:
            alt = rng.random(n) < s.p_model_alt
            model = np.where(alt, rng.integers(0, 3, n), model)
        ev = np.arange(n)
        ip = self.resolve_ips(rng, s.ips, loc, ev, loc)
        return mk_chunk(s.accts[loc], t, ip, model, tin, tout, fp, cotz, s.ep[loc])

    # ---------------------------------------------------------------- common draws

    def human_bundle(
        self,
        accts: Arr,
        ips: IPPlan,
        *,
        rate_med: float,
        turns_med: float,
        amp: float,
        tz: Arr | None = None,
        reason: tuple[float, float] = (0.6, 10.0),
        adopt_p: float = 0.3,
        ep_p: tuple[float, float, float] = (0.5, 0.4, 0.1),
    ) -> Humans:
        r = self.rng
        n = accts.size
        adopter = r.random(n) < adopt_p
        return Humans(
            accts=accts,
            sess_rate_h=np.minimum(lognorm(r, rate_med, 1.0, n), 8.0),
            turns_mean=1.0 + lognorm(r, turns_med, 0.6, n),
            think_s=lognorm(r, r.uniform(25, 80), 0.4, n),
            tz=self.tzs(n) if tz is None else tz,
            amp=amp,
            p_reason=r.beta(reason[0], reason[1], n),
            ips=ips,
            pref=r.dirichlet([3.0, 2.0, 0.7], n),
            adopt=np.where(adopter, r.beta(1.5, 4.0, n), 0.0),
            adopt_delay=r.uniform(0, 3 * HOUR, n),
            ep=r.choice(3, n, p=np.array(ep_p)).astype(np.int8),
            tout_med=float(r.uniform(200, 500)),
            pop_p=float(r.uniform(0.01, 0.12)),
        )

    def coder_bundle(
        self, accts: Arr, ips: IPPlan, *, tz: Arr | None = None, amp: float = 0.6
    ) -> Coders:
        r = self.rng
        n = accts.size
        adopter = r.random(n) < r.uniform(0.2, 0.7)
        return Coders(
            accts=accts,
            sess_rate_h=np.minimum(lognorm(r, r.uniform(0.3, 1.2), 0.8, n), 10.0),
            steps_mean=lognorm(r, r.uniform(15, 80), 0.7, n),
            gap_s=lognorm(r, r.uniform(3, 12), 0.4, n),
            tz=self.tzs(n) if tz is None else tz,
            amp=amp,
            ips=ips,
            pref=r.dirichlet([4.0, 0.5, 1.5], n),
            adopt=np.where(adopter, r.beta(2.0, 2.5, n), 0.0),
            adopt_delay=r.uniform(0, 2 * HOUR, n),
            ep=r.choice(3, n, p=[0.6, 0.25, 0.15]).astype(np.int8),
            ctx0=float(r.uniform(3000, 25000)),
            inc=float(r.uniform(400, 3000)),
            tout_med=float(r.uniform(150, 700)),
            step_flips=float(r.uniform(0.0, 1.5)),
            p_reason=float(r.uniform(0.0, 0.06)),
        )

    def campaign_window(self) -> tuple[float, float, str]:
        r = self.rng
        d = float(self.duration)
        if r.random() < 0.45:
            ts, mode = -float(r.uniform(5 * MIN, 2 * HOUR)), "full_from_start"
        else:
            ts, mode = float(r.uniform(0.03, 0.65) * d), "starts_later"
        te = d if r.random() < 0.8 else float(r.uniform(max(ts, 0.0) + 0.25 * d, d))
        return ts, min(te, d), mode

    def campaign_templates(self, style: str, n: int) -> Templates:
        r = self.rng
        if style == "cot":
            return make_templates(
                r,
                n,
                flips=(2, 10),
                p_reason=float(r.uniform(0.55, 0.97)),
                tin=(60, 900),
                tout=(300, 1600),
                reason_tout=float(r.uniform(1.5, 3.5)),
                p_obfuscated=float(r.uniform(0.0, 0.4)),
            )
        if style == "rubric":
            return make_templates(
                r,
                n,
                flips=(5, 16),
                p_reason=float(r.uniform(0.0, 0.35)),
                tin=(1500, 25000),
                tout=(3, 150),
                reason_tout=3.0,
            )
        return make_templates(
            r,
            n,
            flips=(3, 12),
            p_reason=float(r.uniform(0.1, 0.5)),
            tin=(80, 2000),
            tout=(150, 1200),
            p_obfuscated=float(r.uniform(0.0, 0.3)),
        )

    # ---------------------------------------------------------------- benign planning

    def plan_benign(self) -> None:
        r = self.rng
        s = self.scale
        info = self.info["benign"]
        amp = float(r.uniform(0.35, 0.85))

        # ordinary chat users
        n = max(5, int(r.uniform(2000, 8000) * s))
        a = self.add_accounts(
            n,
            "benign",
            "chat",
            pay=self.maybe_cards(n, float(r.uniform(0.3, 0.7))),
            ua=self.uas(n, {"browser": 3, "sdk": 2, "mobile": 1, "script": 1}),
            limit=r.choice([50.0, 500.0], n, p=[0.5, 0.5]),
        )
        ips = self.plan_residential(n, p_mobile=r.beta(1, 8, n))
        h = self.human_bundle(a, ips, rate_med=float(r.uniform(0.25, 0.7)), turns_med=4, amp=amp)
        self.groups.append(Group("chat", "light", self.gen_humans, h))
        info["chat"] = {"accounts": n}

        # mobile users behind carrier-grade NAT
        n_car = int(r.integers(1, 4))
        sizes = [max(3, int(r.uniform(300, 2500) * s)) for _ in range(n_car)]
        for ci, k in enumerate(sizes):
            carrier = self.carriers[ci % len(self.carriers)]
            a = self.add_accounts(
                k,
                "benign",
                "carrier_nat",
                pay=self.maybe_cards(k, 0.25),
                ua=self.uas(k, {"mobile": 5, "browser": 1}),
                limit=50.0,
            )
            ips = self.plan_residential(k, v6_share=0.0)
            ips.pool_off[:] = carrier[0]
            ips.pool_cnt[:] = carrier[1]
            ips.p_pool[:] = r.uniform(0.7, 1.0, k)
            h = self.human_bundle(
                a, ips, rate_med=float(r.uniform(0.25, 0.6)), turns_med=3, amp=amp
            )
            self.groups.append(Group(f"carrier{ci}", "light", self.gen_humans, h))
        info["carrier_nat"] = {"carriers": n_car, "accounts": sizes}

        # companies: 40-90 employees on one card behind one NAT address
        n_comp = int(np.clip(r.poisson(1.8 * max(s, 0.3)), 1, 6))
        comp_sizes = []
        for _ in range(n_comp):
            k = int(r.integers(40, 91))
            comp_sizes.append(k)
            card = self.cards(1)[0]
            org = f"org-{int(randu64(r, 1)[0]) >> 24:010x}"
            tz = float(self.tzs(1)[0])
            reg = int(self.regions(1)[0])
            onboard = int(self.t0 - r.uniform(30, 900) * DAY)
            created: list[int | None] = [
                int(onboard + x) for x in r.uniform(0, self.t0 - onboard, k).tolist()
            ]
            nat24 = int(self.res_v4_ints(r, 1)[0]) & ~0xFF
            nat = self.add_v4(nat24 | r.integers(1, 255, int(r.integers(1, 3))))
            a = self.add_accounts(
                k,
                "benign",
                "corporate_nat",
                created=created,
                pay=[card] * k,
                org=org,
                ua=self.uas(k, {"browser": 2, "sdk": 2, "agent": 1}),
                region=reg,
                limit=1000.0,
            )
            dev = r.random(k) < r.uniform(0.1, 0.35)
            tzs = np.full(k, tz)
            if (~dev).any():
                sub = a[~dev]
                ips = self.plan_fixed(sub.size, nat, rotate=True)
                h = self.human_bundle(
                    sub,
                    ips,
                    rate_med=float(r.uniform(0.5, 1.4)),
                    turns_med=4,
                    amp=0.9,
                    tz=tzs[: sub.size],
                )
                self.groups.append(Group("corp_chat", "light", self.gen_humans, h))
            if dev.any():
                sub = a[dev]
                ips = self.plan_fixed(sub.size, nat, rotate=True)
                c = self.coder_bundle(sub, ips, tz=tzs[: sub.size], amp=0.9)
                self.groups.append(Group("corp_dev", "light", self.gen_coders, c))
        info["corporate_nat"] = {"companies": n_comp, "employees": comp_sizes}

        # ordinary customers of the proxy reseller(s)
        pc_sizes = []
        for pi, pool in enumerate(self.proxies):
            k = max(5, int(logu(r, 60, 1500) * s))
            pc_sizes.append(k)
            a = self.add_accounts(
                k,
                "benign",
                "proxy_customer",
                pay=self.maybe_cards(k, float(r.uniform(0.2, 0.8))),
                ua=self.uas(k, {"browser": 2, "sdk": 2, "script": 2}),
                limit=r.choice([50.0, 500.0], k),
            )
            script = r.random(k) < r.uniform(0.1, 0.35)
            rot = r.random(k) < r.uniform(0.2, 0.8)
            if (~script).any():
                sub = np.nonzero(~script)[0]
                ips = self.plan_pool(
                    sub.size,
                    pool,
                    rotate=rot[sub],
                    p_pool=r.uniform(0.6, 1.0, sub.size),
                    home=self.plan_residential(sub.size, p_mobile=0.0),
                )
                h = self.human_bundle(
                    a[sub], ips, rate_med=float(r.uniform(0.3, 0.9)), turns_med=4, amp=amp
                )
                self.groups.append(Group(f"proxy_chat{pi}", "light", self.gen_humans, h))
            if script.any():
                sub = np.nonzero(script)[0]
                kk = sub.size
                tpl = make_templates(
                    r, kk, flips=(1, 8), p_reason=0.1, tin=(50, 1500), tout=(20, 800)
                )
                st = Streams(
                    accts=a[sub],
                    rate_s=logu(r, 0.002, 0.04, kk),
                    t_lo=r.uniform(-HOUR, 0.5 * self.duration, kk),
                    t_hi=np.full(kk, float(self.duration)),
                    cv=r.uniform(0.1, 1.2, kk),
                    tpl=tpl,
                    ips=self.plan_pool(kk, pool, rotate=True),
                    model=r.choice(3, kk, p=[0.4, 0.5, 0.1]),
                    ep=r.choice(3, kk).astype(np.int8),
                    tpl_per_acct=np.arange(kk),
                )
                self.groups.append(Group(f"proxy_script{pi}", "light", self.gen_streams, st))
        info["proxy_customer"] = {"pools": self.proxy_info, "accounts": pc_sizes}

        # sign-up bursts (a class, a hackathon) and organic new accounts
        n_coh = int(np.clip(r.poisson(1.2), 0, 4))
        coh_sizes = []
        for _ in range(n_coh):
            k = max(5, int(r.uniform(20, 300) * max(s, 0.2)))
            coh_sizes.append(k)
            tc = float(r.uniform(-0.2, 0.8) * self.duration)
            created_f = tc + r.uniform(0, 20 * MIN, k)
            first_req = created_f + lognorm(r, 3 * MIN, 0.8, k)
            tool_ua = str(r.choice(UA_POOLS["script"] + UA_POOLS["sdk"]))
            ua_list = [tool_ua] * k if r.random() < 0.5 else self.uas(k, {"sdk": 1, "browser": 1})
            a = self.add_accounts(
                k,
                "benign",
                "new_account",
                created=[int(self.t0 + x) for x in created_f.tolist()],
                pay=self.maybe_cards(k, float(r.uniform(0.0, 0.3))),
                ua=ua_list,
                region=int(self.regions(1)[0]),
                limit=20.0,
            )
            if r.random() < 0.6:
                venue24 = int(self.res_v4_ints(r, 1)[0]) & ~0xFF
                ips = self.plan_fixed(
                    k, self.add_v4(venue24 | r.integers(1, 255, int(r.integers(1, 4))))
                )
            else:
                ips = self.plan_residential(k)
            tpl = make_templates(
                r,
                int(r.integers(3, 9)),
                flips=(3, 10),
                p_reason=float(r.uniform(0.0, 0.8)),
                tin=(40, 600),
                tout=(150, 700),
            )
            h = self.human_bundle(
                a,
                ips,
                rate_med=float(r.uniform(0.6, 1.5)),
                turns_med=6,
                amp=0.0,
                tz=np.full(k, float(self.tzs(1)[0])),
            )
            h.tpl, h.tpl_p = tpl, r.uniform(0.3, 0.9, k)
            h.t_lo = first_req
            h.t_hi = np.minimum(first_req + lognorm(r, 90 * MIN, 0.4, k), self.duration)
            h.sess_rate_h = h.sess_rate_h * 2
            self.groups.append(Group("cohort", "light", self.gen_humans, h))
        n_org = max(2, int(r.poisson(r.uniform(10, 120) * s * self.duration / HOUR)))
        created_f = r.uniform(-30 * MIN, self.duration - 5 * MIN, n_org)
        a = self.add_accounts(
            n_org,
            "benign",
            "new_account",
            created=[int(self.t0 + x) for x in created_f.tolist()],
            pay=self.maybe_cards(n_org, 0.3),
            ua=self.uas(n_org, {"sdk": 2, "script": 2, "browser": 1}),
            limit=20.0,
        )
        h = self.human_bundle(a, self.plan_residential(n_org), rate_med=1.0, turns_med=4, amp=0.0)
        h.t_lo = created_f + lognorm(r, 2 * MIN, 1.0, n_org)
        self.groups.append(Group("organic_new", "light", self.gen_humans, h))
        info["new_account"] = {"cohorts": coh_sizes, "organic": n_org}

        self._plan_eval_teams()
        self._plan_batch_jobs()
        self._plan_coding_agents()
        self._plan_enterprises()

    def _plan_eval_teams(self) -> None:
        r = self.rng
        n_team = int(r.integers(1, 7))
        teams = []
        for _ in range(n_team):
            k = int(r.integers(2, 9))
            org = f"org-{int(randu64(r, 1)[0]) >> 24:010x}"
            shared_card = r.random() < 0.8
            card = self.cards(1)[0]
            a = self.add_accounts(
                k,
                "benign",
                "eval_harness",
                pay=[card] * k if shared_card else self.maybe_cards(k, 0.8),
                org=org if r.random() < 0.8 else None,
                ua=str(r.choice(UA_POOLS["eval"])),
                region=int(self.regions(1)[0]),
                limit=float(r.choice([600.0, 2000.0, 10000.0])),
            )
            ips = self.plan_cloud(
                k, (1, 4), shared=int(r.integers(1, 9)) if r.random() < 0.5 else 0
            )
            nb = int(r.integers(2, 9))
            reasoning = r.random(nb) < 0.35
            items = r.integers(100, 3000, nb)
            bench = {
                "base": randu64(r, nb),
                "cot": np.where(reasoning, r.uniform(1.5, 3.5, nb), r.uniform(-4.0, -1.0, nb)),
                "tin": logu(r, 200, 4000, nb),
                "tout": np.where(
                    reasoning,
                    logu(r, 300, 2000, nb),
                    np.where(r.random(nb) < 0.6, logu(r, 2, 40, nb), logu(r, 100, 600, nb)),
                ),
                "masks": [flip_mask(r, r.poisson(r.uniform(3, 14), int(m))) for m in items],
                "cotn": [r.normal(0, 0.6, int(m)) for m in items],
                "tinf": [lognorm(r, 1.0, 0.35, int(m)) for m in items],
                "samples": r.choice([1, 1, 1, 4, 8], nb),
            }
            team = {
                "accts": a,
                "ips": ips,
                "bench": bench,
                "sharded": bool(r.random() < 0.4),
                "runs_mean": float(r.uniform(1.0, 3.5)),
                "rate": float(logu(r, 0.3, 4.0)),
                "cv": float(r.uniform(0.1, 0.7)),
                "model_pref": r.dirichlet([2, 1, 1]),
                "eval_new": float(r.uniform(0.3, 0.9)),
                "ep": int(r.choice([EP_MSG, EP_CHAT, EP_RESP])),
            }
            teams.append(
                {
                    "accounts": k,
                    "benchmarks": nb,
                    "sharded": team["sharded"],
                    "reasoning_benchmarks": int(reasoning.sum()),
                }
            )
            self.groups.append(Group("eval", "heavy", self.gen_eval, team))
        self.info["benign"]["eval_harness"] = teams

    def gen_eval(self, rng: Gen, team: dict[str, Any], mult: float) -> Chunk:
        accts: Arr = team["accts"]
        b = team["bench"]
        nb = b["base"].size
        k = accts.size
        d = float(self.duration)
        parts: list[Chunk] = []
        n_runs = max(1, int(rng.poisson(team["runs_mean"] * mult * (1 if team["sharded"] else k))))
        for _ in range(n_runs):
            start = float(rng.uniform(-0.3 * d, 0.9 * d))
            chosen = np.nonzero(rng.random(nb) < 0.6)[0]
            if chosen.size == 0:
                chosen = np.array([int(rng.integers(0, nb))])
            seq_b = np.concatenate(
                [np.full(b["masks"][j].size * int(b["samples"][j]), j) for j in chosen]
            )
            seq_i = np.concatenate(
                [np.repeat(np.arange(b["masks"][j].size), int(b["samples"][j])) for j in chosen]
            )
            if rng.random() < 0.5:
                p = rng.permutation(seq_b.size)
                seq_b, seq_i = seq_b[p], seq_i[p]
            if seq_b.size > 40_000:
                seq_b, seq_i = seq_b[:40_000], seq_i[:40_000]
            if self.t_rel is not None and start > self.t_rel and rng.random() < team["eval_new"]:
                model = NEW
            else:
                model = int(rng.choice(3, p=team["model_pref"]))
            rate = team["rate"] * float(lognorm(rng, 1.0, 0.3, 1)[0])
            if team["sharded"]:
                who = np.arange(seq_b.size) % k
                rate_each = rate
            else:
                who = np.full(seq_b.size, int(rng.integers(0, k)))
                rate_each = rate * k**0.5
            t = np.zeros(seq_b.size)
            for w in np.unique(who):
                sel = who == w
                m = int(sel.sum())
                cvk = 1.0 / team["cv"] ** 2
                gaps = rng.gamma(cvk, 1000.0 / rate_each / cvk, m)
                t[sel] = start + float(rng.uniform(0, 3000)) + np.cumsum(gaps)
            keep = (t >= 0) & (t < d)
            if not keep.any():
                continue
            sb, si, t, who = seq_b[keep], seq_i[keep], t[keep], who[keep]
            fp = np.empty(sb.size, dtype=np.uint64)
            cotz = np.empty(sb.size)
            tin = np.empty(sb.size)
            for j in np.unique(sb):
                sel = sb == j
                fp[sel] = b["base"][j] ^ b["masks"][j][si[sel]]
                cotz[sel] = b["cot"][j] + b["cotn"][j][si[sel]]
                tin[sel] = b["tin"][j] * b["tinf"][j][si[sel]]
            tout = lognorm(rng, b["tout"][sb], 0.5, sb.size)
            loc = who
            ip = self.resolve_ips(rng, team["ips"], loc, np.arange(loc.size), loc)
            parts.append(mk_chunk(accts[loc], t, ip, model, tin, tout, fp, cotz, team["ep"]))
        return concat_chunks(parts)

    def _plan_batch_jobs(self) -> None:
        r = self.rng
        n_jobs = max(1, int(r.uniform(2, 25) * max(self.scale, 0.1) ** 0.5))
        flavors = ["classify", "extract", "summarize", "judge", "synthetic"]
        jobs = []
        for _ in range(n_jobs):
            fl = str(r.choice(flavors, p=[0.3, 0.25, 0.2, 0.15, 0.1]))
            k = 1 if r.random() < 0.8 else int(r.integers(2, 4))
            a = self.add_accounts(
                k,
                "benign",
                "batch_job",
                pay=self.cards(1) * k,
                org=f"org-{int(randu64(r, 1)[0]) >> 24:010x}",
                ua=str(r.choice(UA_POOLS["script"] + UA_POOLS["sdk"])),
                limit=float(r.choice([300.0, 1000.0, 5000.0])),
            )
            spec = {
                "classify": dict(tin=(200, 1500), tout=(1, 30), p=0.05),
                "extract": dict(tin=(500, 4000), tout=(50, 400), p=0.05),
                "summarize": dict(tin=(2000, 20000), tout=(100, 600), p=0.02),
                "judge": dict(tin=(1000, 15000), tout=(5, 200), p=0.3),
                "synthetic": dict(tin=(100, 600), tout=(300, 1500), p=0.35),
            }[fl]
            tpl = make_templates(
                r,
                int(r.integers(1, 4)),
                flips=(2, 14),
                p_reason=float(spec["p"]),  # type: ignore[arg-type]
                tin=spec["tin"],  # type: ignore[arg-type]
                tout=spec["tout"],  # type: ignore[arg-type]
            )
            lo = float(r.uniform(-self.duration, 0.8 * self.duration))
            hi = lo + float(lognorm(r, 1.5 * HOUR, 0.7, 1)[0])
            st = Streams(
                accts=a,
                rate_s=np.full(k, float(logu(r, 0.1, 5.0)) / k),
                t_lo=np.full(k, lo),
                t_hi=np.full(k, min(hi, float(self.duration))),
                cv=np.full(k, float(r.uniform(0.03, 0.5))),
                tpl=tpl,
                ips=self.plan_cloud(k, (1, 4)),
                model=np.full(k, int(r.choice(3, p=[0.4, 0.5, 0.1]))),
                ep=np.full(k, int(r.choice([EP_MSG, EP_CHAT, EP_BATCH])), dtype=np.int8),
                pauses=float(r.uniform(0, 1.5)),
            )
            jobs.append({"flavor": fl, "accounts": k})
            self.groups.append(Group("batch", "heavy", self.gen_streams, st))
        self.info["benign"]["batch_job"] = jobs

    def _plan_coding_agents(self) -> None:
        r = self.rng
        n = max(3, int(r.uniform(80, 900) * self.scale))
        a = self.add_accounts(
            n,
            "benign",
            "coding_agent",
            pay=self.maybe_cards(n, 0.85),
            ua=self.uas(n, {"agent": 5, "sdk": 1}),
            limit=r.choice([500.0, 4000.0], n),
        )
        home = self.plan_residential(n, p_mobile=0.02)
        cloud = self.plan_cloud(n, (1, 2), blocks=1)
        use_cloud = r.random(n) < r.uniform(0.1, 0.4)
        home.home = np.where(use_cloud, -1, home.home)
        home.v6 = np.where(use_cloud, np.uint64(0), home.v6).astype(np.uint64)
        home.pool_off = np.where(use_cloud, cloud.pool_off, home.pool_off)
        home.pool_cnt = np.where(use_cloud, cloud.pool_cnt, home.pool_cnt)
        home.rotate = use_cloud
        c = self.coder_bundle(a, home, amp=float(r.uniform(0.3, 0.8)))
        self.groups.append(Group("coding", "heavy", self.gen_coders, c))
        self.info["benign"]["coding_agent"] = {"accounts": n}

    def _plan_enterprises(self) -> None:
        r = self.rng
        n_ent = max(1, int(r.uniform(2, 15) * max(self.scale, 0.1) ** 0.5))
        ents = []
        for _ in range(n_ent):
            k = int(r.choice([1, 1, 2, 3]))
            a = self.add_accounts(
                k,
                "benign",
                "enterprise",
                pay=self.cards(1) * k,
                org=f"org-{int(randu64(r, 1)[0]) >> 24:010x}",
                ua=self.uas(k, {"sdk": 4, "script": 1}),
                limit=float(r.choice([3000.0, 20000.0])),
                keys=4,
            )
            tpl = make_templates(
                r,
                int(r.integers(3, 13)),
                flips=(10, 24),
                p_reason=float(r.uniform(0.0, 0.15)),
                tin=(800, 10000),
                tout=(80, 700),
            )
            share = np.array([1.0, 0.15, 0.05][:k])
            rate = float(logu(r, 0.2, 5.0))
            st = Streams(
                accts=a,
                rate_s=rate * share / share.sum() * 1.6,
                t_lo=np.full(k, -HOUR),
                t_hi=np.full(k, float(self.duration)),
                cv=np.ones(k),
                tpl=tpl,
                ips=self.plan_cloud(k, (3, 16), blocks=3),
                model=np.full(k, int(r.choice(3, p=[0.5, 0.4, 0.1]))),
                ep=np.full(k, int(r.choice(3)), dtype=np.int8),
                tz=np.full(k, float(self.tzs(1)[0])),
                amp=float(r.uniform(0.2, 0.7)),
                p_random=float(r.uniform(0.05, 0.4)),
                p_model_alt=float(r.uniform(0.0, 0.3)),
            )
            ents.append({"accounts": k, "rate_per_s": round(rate, 2)})
            self.groups.append(Group("enterprise", "heavy", self.gen_streams, st))
        self.info["benign"]["enterprise"] = ents

    # ---------------------------------------------------------------- campaign planning

    def plan_campaigns(self) -> None:
        r = self.rng
        n_benign = len(self.acc_id)
        n_c = self.camp_share / (1.0 - self.camp_share) * n_benign - self.n_blatant
        mins = {
            "hydra": 20,
            "load_balanced": 3,
            "cot_harvest": 2,
            "rubric_grading": 2,
            "model_pivot": 3,
            "low_and_slow": 10,
        }
        maxs = {
            "hydra": 6000,
            "load_balanced": 400,
            "cot_harvest": 600,
            "rubric_grading": 200,
            "model_pivot": 1000,
            "low_and_slow": 4000,
        }
        big = {"hydra": 3.0, "low_and_slow": 2.0}
        w = r.dirichlet(np.ones(len(self.campaign_kinds))) * np.array(
            [big.get(k, 1.0) for k in self.campaign_kinds]
        )
        w = w / w.sum()
        lo = np.array([mins[k] for k in self.campaign_kinds], dtype=float)
        hi = np.maximum(lo, np.array([maxs[k] for k in self.campaign_kinds]) * self.scale)
        sizes = np.clip(w * n_c, lo, hi)
        for _ in range(3):  # hand what the caps cut off to the kinds that still have room
            room = hi - sizes
            left = n_c - sizes.sum()
            if left < 1 or room.sum() < 1:
                break
            sizes = np.minimum(hi, sizes + left * room / room.sum())
        hydra_i = 0
        for kind, size_f in zip(self.campaign_kinds, sizes, strict=True):
            size = round(float(size_f))
            if kind == "hydra":
                self._plan_hydra(size, self.proxies[min(hydra_i, len(self.proxies) - 1)])
                hydra_i += 1
            elif kind == "load_balanced":
                self._plan_load_balanced(size)
            elif kind == "cot_harvest":
                self._plan_harvest(size, "cot")
            elif kind == "rubric_grading":
                self._plan_harvest(size, "rubric")
            elif kind == "model_pivot":
                self._plan_pivot(size)
            else:
                self._plan_low_and_slow(size)
        for _ in range(self.n_blatant):
            self._plan_blatant()

    def _camp_info(self, c: Campaign, **kw: Any) -> None:
        c.params.update(kw)
        self.info["campaigns"].append({"id": c.cid, "kind": c.kind, **c.params})

    def _plan_hydra(self, size: int, pool: tuple[int, int]) -> None:
        r = self.rng
        c = self.new_campaign("hydra")
        ts, te, mode = self.campaign_window()
        life_med = float(logu(r, 4 * MIN, 90 * MIN))
        gap_med = float(logu(r, 0.3 * MIN, 10 * MIN))
        span = te - max(ts, -life_med)
        slots = max(1, int(np.ceil(size * (life_med * 1.2 + gap_med) / max(span, 10 * MIN))))
        per = int(np.ceil(span / (life_med * 0.3 + gap_med))) + 3
        life = lognorm(r, life_med, 0.6, slots * per).reshape(slots, per)
        gap = r.exponential(gap_med, slots * per).reshape(slots, per)
        ramp = 0.0 if mode == "full_from_start" else float(r.uniform(0, 40 * MIN))
        phase = np.where(
            mode == "full_from_start", ts - r.random(slots) * life_med, ts + r.random(slots) * ramp
        )
        starts = phase[:, None] + np.cumsum(life + gap, axis=1) - (life + gap)
        ends = starts + life
        ok = (starts < te) & (ends > max(ts, 0.0))
        st, li = starts[ok], life[ok]
        if st.size > size:
            sel = np.sort(r.choice(st.size, size, replace=False))
            st, li = st[sel], li[sel]
        n = st.size
        aged = float(r.choice([0.0, 0.0, 0.3, 1.0]))
        is_aged = r.random(n) < aged
        fresh = st - r.uniform(0.5 * MIN, 3 * HOUR, n)
        old = np.array(self.old_created(n, median_days=60.0), dtype=float) - self.t0
        created = np.where(is_aged, old, fresh)
        pay_mode = str(r.choice(["groups", "unique", "none"], p=[0.5, 0.3, 0.2]))
        if pay_mode == "groups":
            gsz = int(r.integers(2, 26))
            pool_cards = self.cards(max(1, n // gsz + 1))
            pay: list[str | None] = [pool_cards[i // gsz] for i in range(n)]
            pay = [pay[i] for i in r.permutation(n)]
        elif pay_mode == "unique":
            pay = list(self.cards(n))
        else:
            pay = [None] * n
        a = self.add_accounts(
            n,
            c.cid,
            "hydra",
            created=[int(self.t0 + x) for x in created.tolist()],
            pay=pay,
            ua=self.uas(n, {"sdk": 3, "script": 2, "browser": 1}),
            limit=50.0,
        )
        c.accts = a.tolist()
        banned = (st + li < te) & (r.random(n) < r.uniform(0.0, 0.6))
        for i in np.nonzero(banned)[0].tolist():
            self.acc_banned[int(a[i])] = True
        style = str(r.choice(["cot", "generic", "rubric"], p=[0.55, 0.35, 0.1]))
        tpl = self.campaign_templates(style, int(logu(r, 5, 80)))
        lam = float(logu(r, 1.5, 25))
        burst = bool(r.random() < 0.4)
        rotate = r.random(n) < float(r.choice([0.0, 0.5, 1.0]))
        ips = self.plan_pool(n, pool, rotate=rotate)
        model_pref = r.dirichlet([3, 0.5, 1.5])
        ep = int(r.choice(3))
        params: dict[str, Any] = {
            "st": st,
            "li": li,
            "te": te,
            "tpl": tpl,
            "lam": lam,
            "burst": burst,
            "ips": ips,
            "model_pref": model_pref,
            "ep": ep,
            "accts": a,
        }
        self.groups.append(Group("hydra", "campaign", self.gen_hydra, params))
        self._camp_info(
            c,
            accounts=n,
            window=mode,
            style=style,
            concurrent_slots=slots,
            account_life_min=round(life_med / MIN, 1),
            requests_per_account=round(lam + 1, 1),
            payment=pay_mode,
            aged_share=aged,
            rotating_ip_share=round(float(rotate.mean()), 2),
            templates=int(tpl.base.size),
        )

    def gen_hydra(self, rng: Gen, p: dict[str, Any], mult: float) -> Chunk:
        """Hydra accounts send a few requests each; `mult` is ignored (volume = churn)."""
        st, li = p["st"], p["li"]
        n = st.size
        if n == 0:
            return empty_chunk()
        k = 1 + rng.poisson(p["lam"], n)
        loc, first = group_starts(k)
        if p["burst"]:
            g = lognorm(rng, 4000.0, 0.9, loc.size)
            off = group_cumsum(np.where(np.arange(loc.size) == first[loc], 0.0, g), loc, first)
            t = st[loc] + rng.random(n)[loc] * 0.3 * li[loc] + off
        else:
            t = st[loc] + rng.random(loc.size) * li[loc]
        keep = (t >= 0) & (t < p["te"])
        loc, t = loc[keep], t[keep]
        tpl: Templates = p["tpl"]
        fp, cotz, tin, tout = tpl.sample(rng, tpl.pick(rng, loc.size))
        model = rng.choice(3, loc.size, p=p["model_pref"])
        ip = self.resolve_ips(rng, p["ips"], loc, loc, np.arange(n))
        return mk_chunk(p["accts"][loc], t, ip, model, tin, tout, fp, cotz, p["ep"])

    def _plan_load_balanced(self, size: int) -> None:
        r = self.rng
        c = self.new_campaign("load_balanced")
        ts, te, mode = self.campaign_window()
        n = size
        n_cards = int(r.integers(1, 4))
        shared_pay = r.random() < 0.75
        cards = self.cards(n_cards)
        pay: list[str | None] = (
            [cards[i % n_cards] for i in range(n)] if shared_pay else list(self.maybe_cards(n, 0.7))
        )
        batch_created = r.random() < 0.6
        created: list[int | None] | None = None
        if batch_created:
            c0 = float(ts - r.uniform(1 * HOUR, 20 * DAY))
            created = [int(self.t0 + c0 + x) for x in r.uniform(0, 2 * HOUR, n).tolist()]
        ua = str(r.choice(UA_POOLS["sdk"] + UA_POOLS["script"]))
        a = self.add_accounts(
            n, c.cid, "load_balanced", created=created, pay=pay, ua=ua, limit=500.0
        )
        c.accts = a.tolist()
        shared_ips = int(r.integers(2, 9)) if r.random() < 0.5 else 0
        ips = self.plan_cloud(n, (1, 2), shared=shared_ips)
        dispatch = str(r.choice(["round_robin", "broadcast", "bursts"]))
        style = str(r.choice(["cot", "generic", "rubric"], p=[0.5, 0.35, 0.15]))
        tpl = self.campaign_templates(style, int(logu(r, 3, 40)))
        agg = float(logu(r, 0.3, 12.0))
        p: dict[str, Any] = {
            "accts": a,
            "ts": ts,
            "te": te,
            "dispatch": dispatch,
            "tpl": tpl,
            "agg": agg,
            "period": float(logu(r, 2, 60)) * SEC,
            "jitter": float(logu(r, 30, 20000)),
            "p_fire": float(r.uniform(0.6, 1.0)),
            "ips": ips,
            "model": int(r.choice(3, p=[0.6, 0.15, 0.25])),
            "ep": int(r.choice(3)),
            "cv": float(r.uniform(0.02, 0.6)),
        }
        self.groups.append(Group("lb", "campaign", self.gen_load_balanced, p))
        self._camp_info(
            c,
            accounts=n,
            window=mode,
            dispatch=dispatch,
            style=style,
            aggregate_rate_per_s=round(agg, 2),
            shared_payment=bool(shared_pay),
            cards=n_cards if shared_pay else None,
            shared_ips=shared_ips,
            jitter_ms=round(p["jitter"], 1),
            batch_created=bool(batch_created),
        )

    def gen_load_balanced(self, rng: Gen, p: dict[str, Any], mult: float) -> Chunk:
        a: Arr = p["accts"]
        n = a.size
        lo, hi = max(p["ts"], 0.0), p["te"]
        tpl: Templates = p["tpl"]
        if p["dispatch"] == "broadcast":
            period = p["period"] / max(mult, 1e-3) ** 0.0
            ticks = np.arange(lo + rng.uniform(0, period), hi, period)
            fire = rng.random((ticks.size, n)) < p["p_fire"] * min(1.0, mult)
            ti, ai = np.nonzero(fire)
            t = ticks[ti] + lognorm(rng, p["jitter"], 1.0, ti.size)
            j_tick = tpl.pick(rng, ticks.size)
            fp, cotz, tin, tout = tpl.sample(rng, j_tick[ti])
            loc = ai
        else:
            agg = p["agg"] * mult
            _, t = self.machine_times(
                rng, np.array([agg]), np.array([lo]), np.array([hi]), np.array([p["cv"]])
            )
            if p["dispatch"] == "round_robin":
                perm = rng.permutation(n)
                loc = perm[np.arange(t.size) % n]
            else:
                on = np.zeros(t.size, dtype=bool)
                s = lo
                while s < hi:
                    ln = float(rng.exponential(8 * MIN))
                    on |= (t >= s) & (t < s + ln)
                    s += ln + float(rng.exponential(12 * MIN))
                t = t[on]
                loc = rng.integers(0, n, t.size)
            fp, cotz, tin, tout = tpl.sample(rng, tpl.pick(rng, t.size))
        keep = (t >= 0) & (t < hi)
        loc, t = loc[keep], t[keep]
        fp, cotz, tin, tout = fp[keep], cotz[keep], tin[keep], tout[keep]
        ip = self.resolve_ips(rng, p["ips"], loc, np.arange(loc.size), loc)
        return mk_chunk(a[loc], t, ip, p["model"], tin, tout, fp, cotz, p["ep"])

    def _plan_harvest(self, size: int, style: str) -> None:
        r = self.rng
        kind = "cot_harvest" if style == "cot" else "rubric_grading"
        c = self.new_campaign(kind)
        ts, te, mode = self.campaign_window()
        n = size
        pay_mode = str(r.choice(["few_cards", "unique", "none"], p=[0.45, 0.35, 0.2]))
        if pay_mode == "few_cards":
            cards = self.cards(int(r.integers(1, 6)))
            pay: list[str | None] = [cards[int(i)] for i in r.integers(0, len(cards), n)]
        elif pay_mode == "unique":
            pay = list(self.cards(n))
        else:
            pay = [None] * n
        created: list[int | None] | None = None
        if r.random() < 0.5:
            c0 = float(ts - r.uniform(0.5 * HOUR, 30 * DAY))
            created = [int(self.t0 + c0 + x) for x in r.uniform(0, 6 * HOUR, n).tolist()]
        a = self.add_accounts(
            n,
            c.cid,
            kind,
            created=created,
            pay=pay,
            ua=self.uas(n, {"sdk": 3, "script": 2})
            if r.random() < 0.5
            else str(r.choice(UA_POOLS["sdk"])),
            limit=500.0,
        )
        c.accts = a.tolist()
        where = str(r.choice(["cloud", "residential", "proxy"], p=[0.55, 0.2, 0.25]))
        if where == "cloud":
            ips = self.plan_cloud(
                n, (1, 3), shared=int(r.integers(2, 20)) if r.random() < 0.4 else 0
            )
        elif where == "residential":
            ips = self.plan_residential(n, p_mobile=0.0)
        else:
            ips = self.plan_pool(
                n,
                self.proxies[int(r.integers(0, len(self.proxies)))],
                rotate=bool(r.random() < 0.5),
            )
        tpl = self.campaign_templates(style, int(logu(r, 3, 200)))
        total = float(logu(r, 0.2, 15.0))
        ramp = 0.0 if mode == "full_from_start" else float(r.uniform(0, 40 * MIN))
        rate = total / n * lognorm(r, 1.0, 0.5, n)
        st = Streams(
            accts=a,
            rate_s=rate,
            t_lo=np.maximum(ts + r.random(n) * ramp, -HOUR),
            t_hi=np.full(n, te),
            cv=np.full(n, float(r.uniform(0.15, 1.3))),
            tpl=tpl,
            ips=ips,
            model=np.full(n, int(r.choice(3, p=[0.55, 0.1, 0.35]))),
            ep=np.full(n, int(r.choice(3)), dtype=np.int8),
            pauses=float(r.uniform(0, 3)),
            p_random=float(r.uniform(0.0, 0.25)),
            p_model_alt=float(r.uniform(0.0, 0.2)),
        )
        self.groups.append(Group(kind, "campaign", self.gen_streams, st))
        self._camp_info(
            c,
            accounts=n,
            window=mode,
            rate_per_s=round(total, 2),
            ips=where,
            payment=pay_mode,
            templates=int(tpl.base.size),
            reasoning_template_share=round(float((tpl.cot > 0.5).mean()), 2),
        )

    def _plan_pivot(self, size: int) -> None:
        r = self.rng
        c = self.new_campaign("model_pivot")
        n = size
        cards = self.cards(int(r.integers(1, max(2, n // 10) + 1)))
        pay = [cards[int(i)] for i in r.integers(0, len(cards), n)] if r.random() < 0.6 else None
        a = self.add_accounts(
            n,
            c.cid,
            "model_pivot",
            pay=pay,
            ua=self.uas(n, {"agent": 3, "sdk": 2}),
            created=self.old_created(n, median_days=40.0),
            limit=4000.0,
        )
        c.accts = a.tolist()
        via = "cloud" if r.random() < 0.7 else "proxy"
        ips = (
            self.plan_cloud(n, (1, 3), blocks=3)
            if via == "cloud"
            else self.plan_pool(n, self.proxies[0], rotate=bool(r.random() < 0.5))
        )
        assert self.t_rel is not None
        delay = float(r.uniform(0, 90 * MIN))
        ramp = float(r.uniform(10 * MIN, 120 * MIN))
        final = float(r.uniform(0.35, 0.65))
        total = float(logu(r, 1.0, 20.0))
        steps = float(r.uniform(15, 60))
        cb = self.coder_bundle(a, ips, amp=0.0)
        cb.steps_mean = lognorm(r, steps, 0.4, n)
        cb.gap_s = lognorm(r, r.uniform(2, 8), 0.3, n)
        cb.sess_rate_h = np.full(n, total * 3600.0 / n / steps)
        cb.pref = np.tile([0.9, 0.0, 0.1], (n, 1))
        cb.adopt = np.zeros(n)
        cb.tpl = self.campaign_templates("generic", int(logu(r, 5, 60)))
        cb.pivot = (self.t_rel + delay, ramp, final)
        cb.t_lo = np.full(n, -HOUR)
        cb.p_reason = float(r.uniform(0.0, 0.3))
        self.groups.append(Group("pivot", "campaign", self.gen_coders, cb))
        self._camp_info(
            c,
            accounts=n,
            window="full_from_start",
            via=via,
            rate_per_s=round(total, 2),
            pivot_delay_min=round(delay / MIN, 1),
            pivot_ramp_min=round(ramp / MIN, 1),
            pivot_share=round(final, 2),
        )

    def _plan_low_and_slow(self, size: int) -> None:
        r = self.rng
        c = self.new_campaign("low_and_slow")
        ts, te, mode = self.campaign_window()
        n = size
        pay_mode = str(r.choice(["unique", "none", "few"], p=[0.5, 0.3, 0.2]))
        pay: list[str | None]
        if pay_mode == "unique":
            pay = list(self.maybe_cards(n, 0.9))
        elif pay_mode == "few":
            cards = self.cards(int(r.integers(2, 12)))
            pay = [cards[int(i)] for i in r.integers(0, len(cards), n)]
        else:
            pay = [None] * n
        a = self.add_accounts(
            n,
            c.cid,
            "low_and_slow",
            pay=pay,
            created=self.old_created(n, median_days=float(r.uniform(5, 200))),
            ua=self.uas(n, {"sdk": 2, "script": 2, "browser": 1}),
            limit=50.0,
        )
        c.accts = a.tolist()
        via = "residential" if r.random() < 0.5 else "proxy"
        if via == "residential":
            ips = self.plan_residential(n, p_mobile=0.05)
        else:
            ips = self.plan_pool(
                n,
                self.proxies[int(r.integers(0, len(self.proxies)))],
                rotate=bool(r.random() < 0.3),
            )
        style = str(r.choice(["cot", "generic"], p=[0.65, 0.35]))
        tpl = self.campaign_templates(style, int(logu(r, 10, 300)))
        human_tz = r.random() < 0.5
        h = self.human_bundle(
            a,
            ips,
            rate_med=float(r.uniform(0.3, 1.5)),
            turns_med=float(r.uniform(2, 10)),
            amp=float(r.uniform(0.3, 0.7)) if human_tz else 0.0,
            tz=None if human_tz else np.full(n, float(self.tzs(1)[0])),
        )
        ramp = 0.0 if mode == "full_from_start" else float(r.uniform(0, 60 * MIN))
        h.t_lo = np.maximum(ts + r.random(n) * ramp, -20 * MIN)
        h.t_hi = np.full(n, te)
        h.tpl, h.tpl_p = tpl, r.uniform(0.6, 1.0, n)
        h.think_s = lognorm(r, r.uniform(10, 90), 0.3, n)
        self.groups.append(Group("low_slow", "campaign", self.gen_humans, h))
        self._camp_info(
            c,
            accounts=n,
            window=mode,
            via=via,
            style=style,
            templates=int(tpl.base.size),
            payment=pay_mode,
            human_like_diurnal=bool(human_tz),
        )

    def _plan_blatant(self) -> None:
        r = self.rng
        c = self.new_campaign("blatant")
        ts, te, mode = self.campaign_window()
        a = self.add_accounts(
            1,
            c.cid,
            "blatant",
            created=(
                self.old_created(1, 30.0)
                if r.random() < 0.5
                else [int(self.t0 + ts - float(r.uniform(5 * MIN, 2 * DAY)))]
            ),
            pay=self.maybe_cards(1, 0.7),
            ua=str(r.choice(UA_POOLS["sdk"] + UA_POOLS["script"])),
            limit=float(r.choice([500.0, 4000.0])),
        )
        c.accts = a.tolist()
        rate = float(logu(r, 0.1, 6.0))
        where = "cloud" if r.random() < 0.7 else "residential"
        ips = (
            self.plan_cloud(1, (1, 4))
            if where == "cloud"
            else self.plan_residential(1, v6_share=0.0, p_mobile=0.0)
        )
        tpl = self.campaign_templates("cot", int(logu(r, 2, 60)))
        st = Streams(
            accts=a,
            rate_s=np.array([rate]),
            t_lo=np.array([max(ts, -HOUR)]),
            t_hi=np.array([te]),
            cv=np.array([float(r.uniform(0.05, 1.2))]),
            tpl=tpl,
            ips=ips,
            model=np.array([int(r.choice(3, p=[0.5, 0.1, 0.4]))]),
            ep=np.array([int(r.choice(3))], dtype=np.int8),
            pauses=float(r.uniform(0, 2)),
            p_random=float(r.uniform(0, 0.3)),
        )
        self.groups.append(Group("blatant", "campaign", self.gen_streams, st))
        self._camp_info(
            c,
            accounts=1,
            window=mode,
            rate_per_s=round(rate, 3),
            ips=where,
            reasoning_template_share=round(float((tpl.cot > 0.5).mean()), 2),
        )

    # ---------------------------------------------------------------- assembly

    def build(self) -> Chunk:
        self.plan_benign()
        self.plan_campaigns()
        self.pool_flat = np.concatenate([*self._pool_parts, np.zeros(1, dtype=np.int64)])

        d = float(self.duration)

        def run_one(gi: int, mult: float) -> Chunk:
            g = self.groups[gi]
            ch = g.fn(self.sub_rng(gi, 1), g.spec, mult)
            keep = (ch["t"] >= 0) & (ch["t"] < d)
            return {k: v[keep] for k, v in ch.items()}

        def run(phase: str, mult: float) -> list[Chunk]:
            return [run_one(gi, mult) for gi, g in enumerate(self.groups) if g.phase == phase]

        def count(chs: list[Chunk]) -> int:
            return int(sum(ch["t"].size for ch in chs))

        light = run("light", 1.0)
        camp = run("campaign", 1.0)
        n_light, n_camp = count(light), count(camp)
        cap = self.camp_event_cap * self.target_events
        m_camp = 1.0
        if n_camp > cap:
            m_camp = cap / n_camp
            camp = run("campaign", m_camp)
            n_camp = count(camp)
        # the heavy benign kinds share the remaining volume in per-world proportions
        heavy_ids = [gi for gi, g in enumerate(self.groups) if g.phase == "heavy"]
        names = sorted({self.groups[gi].name for gi in heavy_ids})
        share = dict(zip(names, self.rng.dirichlet(np.full(len(names), 1.5)), strict=True))
        first = {gi: run_one(gi, 1.0) for gi in heavy_ids}
        per_name = {nm: 0 for nm in names}
        for gi, ch in first.items():
            per_name[self.groups[gi].name] += ch["t"].size
        want = max(self.target_events - n_light - n_camp, 0.2 * self.target_events)
        lo_m, hi_m = 0.1, 8.0
        mults = {
            nm: float(np.clip(want * share[nm] / max(per_name[nm], 1), lo_m, hi_m)) for nm in names
        }
        heavy = []
        for _ in range(4):  # iterate: kinds stuck at a bound hand their shortfall to the others
            heavy = [run_one(gi, mults[self.groups[gi].name]) for gi in heavy_ids]
            got = dict.fromkeys(names, 0)
            for gi, ch in zip(heavy_ids, heavy, strict=True):
                got[self.groups[gi].name] += ch["t"].size
            total = sum(got.values())
            if abs(total - want) < 0.08 * want:
                break
            up = total < want
            free = [
                nm for nm in names if got[nm] > 0 and (mults[nm] < hi_m if up else mults[nm] > lo_m)
            ]
            if not free:
                break
            fixed = total - sum(got[nm] for nm in free)
            factor = max(want - fixed, 0.05 * want) / max(sum(got[nm] for nm in free), 1)
            for nm in free:
                mults[nm] = float(np.clip(mults[nm] * factor, lo_m, hi_m))
        self.info["rate_multipliers"] = {
            "campaign": round(m_camp, 3),
            **{nm: round(m, 3) for nm, m in mults.items()},
        }
        return concat_chunks(light + camp + heavy)


def concat_chunks(parts: list[Chunk]) -> Chunk:
    parts = [p for p in parts if p["t"].size]
    if not parts:
        return empty_chunk()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------------------------
# finishing: status, latency, cot score, gateway fields, order, duplicates, output


def finish_and_write(w: World, ev: Chunk, out: pathlib.Path) -> dict[str, Any]:
    rng = w.sub_rng(999, 3)
    n = ev["t"].size
    acct = ev["acct"]
    t = ev["t"]
    model = ev["model"].astype(np.int64)
    n_acc = len(w.acc_id)

    # reasoning models write longer answers (the hidden reasoning is billed as output)
    tout = ev["tout"] * np.where(model == REASON, lognorm(rng, 2.0, 0.4, n), 1.0)
    tin = np.clip(np.rint(ev["tin"]), 1, 200_000).astype(np.int64)
    tout = np.clip(np.rint(tout), 0, 32_000).astype(np.int64)

    # status codes: rate limiting for fast accounts, random errors, bans
    cnt = np.bincount(acct, minlength=n_acc)
    tmin = np.full(n_acc, np.inf)
    tmax = np.full(n_acc, -np.inf)
    np.minimum.at(tmin, acct, t)
    np.maximum.at(tmax, acct, t)
    span_min = np.maximum((tmax - tmin) / MIN, 1.0)
    rpm = np.where(cnt > 0, cnt / span_min, 0.0)
    limit = np.asarray(w.acc_limit)
    p429 = np.clip((rpm / limit - 0.3) * 0.25, 0.0, 0.3)
    status = np.full(n, 200, dtype=np.int64)
    u = rng.random(n)
    status[u < p429[acct]] = 429
    u = rng.random(n)
    e5 = u < w.p5xx
    status[e5] = rng.choice([500, 502, 503, 529], int(e5.sum()), p=[0.4, 0.2, 0.2, 0.2])
    status[(u >= w.p5xx) & (u < w.p5xx + w.p400 * (1 + (tin > 150_000) * 20))] = 400
    banned = np.asarray(w.acc_banned)
    last = banned[acct] & (t >= tmax[acct])
    status[last] = 403
    # ordinary accounts see auth failures too: revoked or rotated keys, region or policy blocks
    flaky = rng.random(n_acc) < rng.uniform(0.002, 0.01)
    status[flaky[acct] & (rng.random(n) < 0.3)] = 401
    blocked = (rng.random(n_acc) < rng.uniform(0.0005, 0.003)) & ~banned
    status[blocked[acct] & (t >= tmax[acct])] = 403
    ok = status == 200
    tout = np.where(ok, tout, 0)
    tin = np.where((status == 429) | (status == 403) | (status == 401), 0, tin)

    # latency
    tps = w.tps[model] * lognorm(rng, 1.0, 0.25, n)
    lat = (
        lognorm(rng, 250.0 + tin * 0.004, 0.4, n)
        + np.where(model == REASON, lognorm(rng, 4000.0, 0.8, n), 0.0)
        + tout / tps * 1000.0
    )
    lat = np.where(status == 429, lognorm(rng, 15.0, 0.5, n), lat)
    lat = np.where(status >= 500, lognorm(rng, 3000.0, 1.2, n), lat)
    lat = np.where(
        (status == 400) | (status >= 401) & (status <= 403), lognorm(rng, 30.0, 0.5, n), lat
    )

    # gateways: each account mostly reaches its regional gateway
    region = np.asarray(w.acc_region)[acct]
    ng = len(w.gateways)
    other = rng.integers(0, ng, n)
    prod = np.where(rng.random(n) < 0.9, region, other)
    # the request time as written (whole-second RFC 3339 gateways drop the milliseconds)
    whole_sec = np.array([(not g.ts_ms) and g.frac == 0 for g in w.gateways])[prod]
    t_written = np.where(whole_sec, (w.t0 + t) // 1000 * 1000, w.t0 + t)
    wmin = np.full(n_acc, np.iinfo(np.int64).max)
    wmax = np.full(n_acc, np.iinfo(np.int64).min)
    np.minimum.at(wmin, acct, t_written)
    np.maximum.at(wmax, acct, t_written)

    # cot classifier: deterministic per prompt, noisy, calibrated per world and gateway
    g_noise = hash_normal(ev["fp"] ^ np.uint64(w.seed * 0x9E3779B1 % 2**64))
    bias = np.array([g.cot_bias for g in w.gateways])[prod]
    logit = w.cot_a * (ev["cotz"] + w.cot_sigma * g_noise) + w.cot_b + bias
    logit += rng.normal(0, 0.05, n)
    score = 1.0 / (1.0 + np.exp(-logit))
    score = 0.5 + (score - 0.5) * w.cot_squash
    if w.cot_round:
        score = np.round(score, w.cot_round)
    score = np.where(rng.random(n) < w.cot_glitch, 0.5, score)
    score = np.clip(score, 0.0, 1.0)

    # arrival order: gateway lag, rare stalls; duplicates re-sent a little later
    lag_mean = np.array([g.lag_ms for g in w.gateways])[prod]
    emit = (
        t
        + np.minimum(rng.exponential(lag_mean), 4 * lag_mean)
        + np.where(rng.random(n) < 0.002, rng.uniform(500, 4000, n), 0.0)
    )
    n_dup = int(rng.binomial(n, w.dup_rate))
    dup_idx = rng.choice(n, n_dup, replace=False)
    emit_all = np.concatenate([emit, emit[dup_idx] + rng.uniform(300, 8000, n_dup)])
    idx_all = np.concatenate([np.arange(n), dup_idx])
    order = idx_all[np.argsort(emit_all, kind="stable")]

    id_hi = randu64(rng, n)
    id_lo = randu64(rng, n)
    micro = rng.integers(0, 1000, n)

    # per-account optional data the gateways know
    pay_known = (
        np.zeros(n_acc, dtype=bool) if w.pay_mode == "none" else rng.random(n_acc) < w.p_pay_known
    )
    cre_known = (
        np.zeros(n_acc, dtype=bool)
        if w.created_mode == "none"
        else rng.random(n_acc) < w.p_created_known
    )
    # an account cannot send before it exists
    for i in np.nonzero(cnt > 0)[0].tolist():
        c_ms = w.acc_created[i]
        first_ms = int(w.t0 + tmin[i])
        if c_ms is not None and c_ms > first_ms - 20 * SEC:
            w.acc_created[i] = first_ms - int(rng.uniform(20 * SEC, 30 * MIN))
    acc_pay = [p if pay_known[i] else None for i, p in enumerate(w.acc_pay)]
    acc_cre_ms = [c if cre_known[i] else None for i, c in enumerate(w.acc_created)]
    acc_cre_rfc = [None if c is None else rfc3339(c, 3) for c in acc_cre_ms]
    key_pick = rng.random(n)

    sec_cache: dict[int, str] = {}

    def ts_str(ms: int, frac: int, us: int) -> str:
        s = ms // 1000
        pre = sec_cache.get(s)
        if pre is None:
            pre = datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            sec_cache[s] = pre
        if frac == 0:
            return pre + "Z"
        if frac == 3:
            return f"{pre}.{ms % 1000:03d}Z"
        return f"{pre}.{ms % 1000:03d}{us:03d}Z"

    gws = w.gateways
    models = w.models
    ips = w.ips
    out.mkdir(parents=True, exist_ok=True)
    n_lines = 0
    with open(out / "events.jsonl", "wb") as fh:
        B = 100_000
        for b0 in range(0, order.size, B):
            o = order[b0 : b0 + B]
            cols = [
                o.tolist(),
                prod[o].tolist(),
                (t[o] + w.t0).tolist(),
                acct[o].tolist(),
                ev["ip"][o].tolist(),
                model[o].tolist(),
                tin[o].tolist(),
                tout[o].tolist(),
                status[o].tolist(),
                np.round(lat[o], 1).tolist(),
                ev["fp"][o].tolist(),
                score[o].tolist(),
                ev["ep"][o].tolist(),
                id_hi[o].tolist(),
                id_lo[o].tolist(),
                micro[o].tolist(),
                key_pick[o].tolist(),
            ]
            buf = bytearray()
            for i, p, ms, a, ip, m, ti, to, stt, la, fp, sc, ep, hi, lo, us, kp in zip(
                *cols, strict=True
            ):
                g = gws[p]
                if g.id_style == 0:
                    eid = f"req_{hi:016x}{lo >> 32:08x}"
                elif g.id_style == 1:
                    eid = str(uuid.UUID(int=(hi << 64) | lo, version=4))
                else:
                    eid = f"{g.name}:{i:09d}:{lo & 0xFFFF:04x}"
                d: dict[str, Any] = {
                    "event_id": eid,
                    "ts": ms if g.ts_ms else ts_str(ms, g.frac, us),
                    "account_id": w.acc_id[a],
                    "ip": ips[ip],
                    "model": models[m],
                    "input_tokens": ti,
                    "output_tokens": to,
                }
                if g.send_status or stt != 200:
                    d["status"] = stt
                if g.send_latency:
                    d["latency_ms"] = la
                if g.send_org:
                    d["org_id"] = w.acc_org[a]
                if g.send_key:
                    keys = w.acc_keys[a]
                    d["api_key_id"] = keys[int(kp * len(keys))]
                if g.send_ua:
                    d["user_agent"] = w.acc_ua[a]
                if g.send_ep:
                    d["endpoint"] = ENDPOINTS[ep]
                if g.send_fp:
                    d["prompt_fingerprint"] = f"{fp:016X}" if g.upper else f"{fp:016x}"
                elif g.nulls:
                    d["prompt_fingerprint"] = None
                if g.send_cot:
                    d["cot_score"] = sc
                elif g.nulls:
                    d["cot_score"] = None
                pay = acc_pay[a]
                if pay is not None or g.nulls:
                    d["payment_fingerprint"] = pay
                cre = acc_cre_ms[a] if g.ts_ms else acc_cre_rfc[a]
                if cre is not None or g.nulls:
                    d["account_created_at"] = cre
                buf += orjson.dumps(d)
                buf += b"\n"
            fh.write(buf)
            n_lines += o.size

    # labels
    active = np.nonzero(cnt > 0)[0]
    accounts = {
        w.acc_id[i]: {"label": w.acc_label[i], "archetype": w.acc_arch[i]} for i in active.tolist()
    }
    campaigns: dict[str, Any] = {}
    for c in w.campaigns:
        members = [i for i in c.accts if cnt[i] > 0]
        if not members:
            continue
        m = np.array(members)
        campaigns[c.cid] = {
            "archetype": c.kind,
            "start": int(wmin[m].min()),
            "end": int(wmax[m].max()),
            "accounts": [w.acc_id[i] for i in members],
        }
    n_camp_acc = sum(len(c["accounts"]) for c in campaigns.values())
    arch_counts: dict[str, int] = {}
    for i in active.tolist():
        arch_counts[w.acc_arch[i]] = arch_counts.get(w.acc_arch[i], 0) + 1
    camp_events = int(np.isin(acct, np.array([i for c in w.campaigns for i in c.accts])).sum())
    summary = {
        "seed": w.seed,
        "events": int(n),
        "lines": n_lines,
        "duplicates": n_dup,
        "accounts": int(active.size),
        "benign_accounts": int(active.size - n_camp_acc),
        "campaigns": len(campaigns),
        "campaign_kinds": sorted(c["archetype"] for c in campaigns.values()),
        "campaign_account_share": round(n_camp_acc / max(active.size, 1), 4),
        "campaign_event_share": round(camp_events / max(n, 1), 4),
        "duration_h": round(w.duration / HOUR, 3),
        "archetype_accounts": dict(sorted(arch_counts.items())),
    }
    w.info["summary"] = summary
    labels = {"accounts": accounts, "campaigns": campaigns, "world": w.info}
    (out / "labels.json").write_bytes(orjson.dumps(labels, option=orjson.OPT_SERIALIZE_NUMPY))
    return summary


def rfc3339(ms: int, frac: int) -> str:
    dt = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{dt}.{ms % 1000:03d}Z" if frac else dt + "Z"


def generate(seed: int, out: pathlib.Path, scale: float = 1.0) -> dict[str, Any]:
    """Draw world `seed`, write `out/events.jsonl` and `out/labels.json`, return a summary."""
    t_start = time.perf_counter()
    w = World(seed, scale)
    ev = w.build()
    summary = finish_and_write(w, ev, pathlib.Path(out))
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    summary = generate(args.seed, args.out, args.scale)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
