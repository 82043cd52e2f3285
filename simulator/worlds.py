"""Randomised worlds: labelled API traffic drawn from wide ranges, for evaluation nobody tuned on.

`simulator.traffic` generates a handful of fixed scenarios. This module draws a whole *world* from a
seed instead: how long it runs, how many ordinary customers of which kinds, how many extraction
campaigns of which kinds, and for each of them every knob that matters to a detector (rates, prompt
templates and their near-duplicate spread, reasoning elicitation, token shapes, IP strategy,
payment sharing, account ages, churn, start time), plus the gateway quirks around them (which
optional fields are present, timestamp formats, clock skew, late and duplicate deliveries).

The point is breadth: campaigns that run at ordinary-customer rates, start in the first minute or
near the end, hide behind the same residential proxies ordinary customers use; and benign traffic
that looks like extraction (evaluation harnesses replaying public benchmarks with reasoning,
templated batch jobs, coding agents, 40-90 employees behind one corporate address paying with one
card, carrier NAT, a tutoring app whose prompts legitimately ask for step-by-step answers).

`draw_world(seed, scale)` draws a `WorldSpec` (every world-level parameter, frozen, printable);
`generate(spec)` turns it into `SimulatedTraffic` with labels in the format `simulator.traffic`
writes; `random_world(seed, scale)` does both. Everything comes from `numpy.random.default_rng`
seeded by the world seed, so a seed is a world.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator.traffic import SimulatedTraffic

__all__ = [
    "BENIGN_ARCHETYPES",
    "CAMPAIGN_KINDS",
    "GatewaySpec",
    "GroupSpec",
    "WorldSpec",
    "describe",
    "draw_world",
    "generate",
    "random_world",
]

Arr = NDArray[Any]

CAMPAIGN_KINDS = (
    "hydra",
    "load_balanced",
    "cot_elicitation",
    "rubric_grading",
    "low_and_slow",
    "model_pivot",
    "blatant",
)
BENIGN_ARCHETYPES = (
    "chat",
    "coding_agent",
    "batch_job",
    "eval_harness",
    "heavy_customer",
    "saas_fleet",
    "enterprise_nat",
    "mobile_cgnat",
    "new_account",
    "proxy_user",
    "vpn_user",
    "tutoring_app",
)
OPTIONAL_FIELDS = (
    "status",
    "latency_ms",
    "prompt_fingerprint",
    "cot_score",
    "payment_fingerprint",
    "account_created_at",
    "org_id",
    "api_key_id",
    "user_agent",
    "endpoint",
)

_MIN_MS = 60_000
_DAY_MS = 86_400_000
_U64_MAX = np.iinfo(np.uint64).max

# First octets of address space that looks like cloud providers and like residential ISPs and
# mobile carriers (no private, loopback, CGNAT-internal or multicast ranges).
# fmt: off
_CLOUD_A: tuple[int, ...] = (
    3, 13, 18, 20, 23, 34, 35, 40, 44, 52, 54, 64, 104, 107, 129, 134, 137, 138, 139, 140,
    141, 143, 146, 147, 149, 151, 152, 155, 157, 158, 159, 161, 162, 164, 165, 167, 168,
)
_RESID_A: tuple[int, ...] = (
    2, 5, 24, 31, 37, 46, 49, 58, 59, 60, 61, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    101, 106, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124,
    125, 171, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 186, 187, 189, 190,
    191, 200, 201, 203, 210, 211, 212, 213, 217, 218, 219, 220, 221, 222, 223,
)
# fmt: on

_MODEL_FAMILIES = ("frontier", "atlas", "nova", "orion", "zephyr", "cirrus", "meridian")
_SDK_UAS = (
    "python-httpx/0.27.2",
    "python-httpx/0.28.1",
    "python-requests/2.32.3",
    "llm-sdk-python/1.42.0",
    "llm-sdk-python/1.51.3",
    "llm-sdk-node/0.33.1",
    "llm-sdk-node/0.40.0",
    "node-fetch/3.3.2",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "curl/8.5.0",
    "langchain-core/0.3.15",
    "aiohttp/3.10.10",
)
_BROWSER_UAS = tuple(
    f"Mozilla/5.0 ({os_}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
    for os_ in (
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
    )
    for v in (124, 126, 128, 130, 131)
)
_MOBILE_UAS = tuple(f"assistant-ios/{v}" for v in ("3.2.1", "3.3.0", "3.4.2")) + tuple(
    f"assistant-android/{v}" for v in ("3.2.0", "3.3.5", "3.4.1")
)
_AGENT_UAS = (
    *(f"agentcli/{v} (node)" for v in ("1.0.31", "1.0.44", "1.1.2", "1.2.0")),
    "code-assist-vscode/0.19.4",
    "aider/0.62.1",
)
_UA_SETS = {"sdk": _SDK_UAS, "browser": _BROWSER_UAS, "mobile": _MOBILE_UAS, "agent": _AGENT_UAS}
# Lowest per-account rate the volume cap may push a campaign kind to (requests per minute).
_RATE_FLOOR = {"low_and_slow": 0.02, "hydra": 0.08, "cot_elicitation": 0.08}
_RATE_FLOOR |= {"rubric_grading": 0.08, "load_balanced": 0.08, "model_pivot": 0.08, "blatant": 1.0}
_ERROR_CODES = (429, 429, 429, 500, 529, 400, 408, 503)


# --------------------------------------------------------------------------------------------------
# The drawn world


@dataclass(frozen=True)
class GatewaySpec:
    """One API gateway: its share of accounts, clock skew, timestamp style and optional fields."""

    name: str
    share: float
    skew_ms: int
    ts_weights: tuple[float, float, float]  # RFC 3339 with Z, RFC 3339 with offset, epoch ms
    utc_offset_min: int  # the offset its offset-style timestamps are written in
    fields: tuple[str, ...]  # optional fields it emits (status: only non-200 when absent)
    event_id_prefix: str


@dataclass(frozen=True)
class GroupSpec:
    """A group of accounts that behave alike: one campaign, or one slice of ordinary customers.

    Rates are requests per minute per account (median; accounts spread lognormally by
    ``rate_sigma``); token counts are medians; minutes are relative to the start of the run.
    """

    name: str  # campaign id ("hydra-1") or benign group name ("enterprise_nat-0")
    archetype: str
    campaign: bool
    accounts: int  # planned accounts, replacements included
    start_minute: float
    end_minute: float
    ramp_minutes: float  # accounts join over this long after the start
    window_minutes: float  # > 0: each account is active for a window of about this length
    late_join: bool  # accounts appear during the run (sign-ups)
    churn_lifetime_min: float  # > 0: accounts live this long (mean) and are replaced
    churn_gap_min: float
    rate_per_min: float
    rate_sigma: float
    timing: str  # poisson | sessions | regular | synchronized
    session_turns: float
    turn_gap_s: float
    jitter: float  # regular: share of the period; synchronized: seconds
    sync_stride: int  # synchronized: an account fires every sync_stride-th tick (round-robin)
    diurnal: bool
    tz_hours: float  # the group's UTC offset when tz_shared
    tz_shared: bool
    templates: int  # 0 = no templates
    template_scope: str  # group (shared by all accounts) | account
    template_skew: float  # Zipf exponent of template popularity
    dup_bits: int  # bits flipped between instances of a template (slot fillers)
    diverse_share: float  # share of prompts that are not from a template
    drift_bits: int  # conversation/agent drift: bits flipped per turn within a session (0 = none)
    lockstep: bool  # every account sends the same sequence of prompts
    cot_share: float  # share of prompts asking for step-by-step reasoning
    cot_strength: float  # the classifier's mean score on those prompts
    cot_out_mult: float  # how much longer the answer gets when reasoning is asked for
    input_tokens: int
    output_tokens: int
    token_sigma: float
    small_model_share: float
    new_model_share: float  # share of traffic moved to the new model once adopted
    adopter_share: float  # share of accounts that adopt the new model during the run
    adopt_lag_min: float  # mean delay after the release
    error_rate: float
    ip_strategy: (
        str  # home|office|cgnat|cloud_own|cloud_fixed|rotate_pool|ipv6_rotate|proxy|vpn|single
    )
    ip_count: int
    ip_blocks: int
    ipv6_share: float
    sticky_min: float  # pooled strategies: minutes an account keeps an address (0 = per request)
    pool_ref: int  # cgnat: which of the world's carriers
    payment: str  # distinct | family | handful | one | absent
    payment_cards: int
    age_days_min: float
    age_days_max: float
    created_absent_share: float
    org: str  # none | account | shared
    ua_mode: str  # sdk | browser | mobile | agent | mixed | shared
    endpoint: str
    gateway: int  # -1: accounts spread over gateways by share


@dataclass(frozen=True)
class WorldSpec:
    """Every world-level parameter drawn for one seed (per-account draws happen in `generate`)."""

    seed: int
    scale: float
    start_ms: int
    minutes: int
    models: tuple[str, str, str]  # main, small, newly released
    model_ms_per_token: tuple[float, float, float]
    release_minute: float
    diurnal_amplitude: float
    peak_hour: float
    tz_hours: tuple[float, ...]
    tz_weights: tuple[float, ...]
    id_style: str
    campaign_share: float  # drawn share of accounts that belong to campaigns
    campaign_volume_cap: float  # campaigns' share of requests is held under this
    benign_accounts: int
    expected_events: int
    mobile_share: float  # share of home users' requests that come over a carrier
    cloud_blocks: int  # /24s the world's cloud tenants live in (small: tenants share blocks)
    isp_v6_blocks: int  # /48s residential IPv6 users are spread over
    proxy_ips: int  # the proxy reseller's residential pool
    proxy_blocks: int
    proxy_ipv6_share: float
    vpn_ips: int
    vpn_blocks: int
    carriers: tuple[tuple[int, int, int], ...]  # (IPv4 addresses, IPv4 /24s, IPv6 /48s)
    gateways: tuple[GatewaySpec, ...]
    late_share: float
    late_long_share: float  # of late events, the share delayed 10-120 s instead of < 10 s
    dup_share: float
    groups: tuple[GroupSpec, ...]

    @property
    def campaigns(self) -> tuple[GroupSpec, ...]:
        return tuple(g for g in self.groups if g.campaign)

    @property
    def benign(self) -> tuple[GroupSpec, ...]:
        return tuple(g for g in self.groups if not g.campaign)


# --------------------------------------------------------------------------------------------------
# Drawing


class _Draw:
    """Small helpers over one Generator that return plain Python numbers (JSON-serialisable)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def lu(self, lo: float, hi: float) -> float:
        return float(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def i(self, lo: int, hi: int) -> int:
        """Integer in [lo, hi] inclusive."""
        return int(self.rng.integers(lo, hi + 1))

    def li(self, lo: int, hi: int) -> int:
        return max(lo, min(hi, round(self.lu(lo, hi + 0.999))))

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, options: tuple[str, ...], weights: tuple[float, ...] | None = None) -> str:
        if weights is None:
            return options[int(self.rng.integers(len(options)))]
        w = np.asarray(weights, dtype=float)
        return options[int(self.rng.choice(len(options), p=w / w.sum()))]


def _base_group(name: str, archetype: str, campaign: bool, minutes: int) -> GroupSpec:
    return GroupSpec(
        name=name,
        archetype=archetype,
        campaign=campaign,
        accounts=1,
        start_minute=0.0,
        end_minute=float(minutes),
        ramp_minutes=0.0,
        window_minutes=0.0,
        late_join=False,
        churn_lifetime_min=0.0,
        churn_gap_min=0.0,
        rate_per_min=0.1,
        rate_sigma=0.8,
        timing="sessions",
        session_turns=4.0,
        turn_gap_s=40.0,
        jitter=0.2,
        sync_stride=1,
        diurnal=True,
        tz_hours=0.0,
        tz_shared=False,
        templates=0,
        template_scope="account",
        template_skew=0.8,
        dup_bits=0,
        diverse_share=1.0,
        drift_bits=0,
        lockstep=False,
        cot_share=0.05,
        cot_strength=0.8,
        cot_out_mult=2.0,
        input_tokens=400,
        output_tokens=400,
        token_sigma=0.8,
        small_model_share=0.1,
        new_model_share=0.0,
        adopter_share=0.0,
        adopt_lag_min=60.0,
        error_rate=0.01,
        ip_strategy="home",
        ip_count=2,
        ip_blocks=1,
        ipv6_share=0.0,
        sticky_min=0.0,
        pool_ref=-1,
        payment="distinct",
        payment_cards=0,
        age_days_min=1.0,
        age_days_max=1000.0,
        created_absent_share=0.0,
        org="none",
        ua_mode="mixed",
        endpoint="/v1/messages",
        gateway=-1,
    )


@dataclass(frozen=True)
class _Ctx:
    """What the volume arithmetic at draw time needs to know about the world."""

    minutes: int
    start_hour: float
    amplitude: float
    peak_hour: float
    tz_hours: tuple[float, ...]
    tz_weights: tuple[float, ...]

    def diurnal_mean(self, g: GroupSpec) -> float:
        """Mean of the diurnal factor over the run for the group's time zones."""
        if not g.diurnal:
            return 1.0
        tzs = np.array([g.tz_hours]) if g.tz_shared else np.asarray(self.tz_hours)
        w = np.array([1.0]) if g.tz_shared else np.asarray(self.tz_weights)
        t = np.linspace(0.0, self.minutes, 25)
        hour = (self.start_hour + t[None, :] / 60.0 + tzs[:, None]) % 24.0
        f = 1.0 + self.amplitude * np.cos(2 * np.pi * (hour - self.peak_hour) / 24.0)
        return float((f.mean(axis=1) * w).sum() / w.sum())


def _span(g: GroupSpec, minutes: int) -> float:
    """Mean minutes an account of the group is active."""
    if g.churn_lifetime_min > 0:
        return min(g.churn_lifetime_min, g.end_minute - g.start_minute)
    if g.window_minutes > 0:
        return min(g.window_minutes, float(minutes))
    if g.late_join:
        return minutes / 2
    return max(0.0, g.end_minute - g.start_minute - g.ramp_minutes / 2)


def _active_fraction(g: GroupSpec, ctx: _Ctx) -> float:
    """Expected share of the group's accounts that send at least one request."""
    sigma = g.rate_sigma if g.timing != "synchronized" else 0.0
    bursts = g.session_turns if g.timing == "sessions" else 1.0
    lam = g.rate_per_min / bursts * _span(g, ctx.minutes) * ctx.diurnal_mean(g)
    z = np.array([-1.6, -1.0, -0.5, 0.0, 0.5, 1.0, 1.6])
    w = np.exp(-(z**2) / 2)
    return float(np.sum(w * (1 - np.exp(-lam * np.exp(sigma * z)))) / w.sum())


def _expected(g: GroupSpec, ctx: _Ctx) -> float:
    sigma = g.rate_sigma if g.timing != "synchronized" else 0.0
    per_acc = g.rate_per_min * math.exp(min(sigma, 1.5) ** 2 / 2) * _span(g, ctx.minutes)
    return g.accounts * per_acc * ctx.diurnal_mean(g)


def _benign_groups(
    d: _Draw, minutes: int, world_cot: float, tz: float, n_carriers: int
) -> list[tuple[GroupSpec, float]]:
    """Benign groups with their weight (share of ordinary accounts; < 0: fixed account count)."""
    out: list[tuple[GroupSpec, float]] = []
    m = minutes

    chat = replace(
        _base_group("chat", "chat", False, m),
        rate_per_min=d.lu(0.03, 0.3),
        rate_sigma=d.u(0.8, 1.4),
        session_turns=d.lu(2, 14),
        turn_gap_s=d.lu(15, 120),
        drift_bits=d.i(3, 12) if d.p(0.7) else 0,
        cot_share=world_cot,
        cot_strength=d.u(0.55, 0.95),
        input_tokens=d.li(80, 1500),
        output_tokens=d.li(150, 900),
        small_model_share=d.u(0.0, 0.4),
        new_model_share=d.u(0.3, 1.0),
        adopter_share=d.u(0.02, 0.25),
        adopt_lag_min=d.lu(10, 400),
        error_rate=d.lu(0.002, 0.02),
        ip_count=d.i(1, 3),
        ipv6_share=d.u(0.0, 0.45),
        payment="family",
        age_days_min=d.lu(0.5, 10),
        created_absent_share=d.u(0.0, 0.1),
        ua_mode="mixed",
        endpoint=d.pick(("/v1/messages", "/v1/chat/completions")),
    )
    out.append((chat, d.u(0.3, 0.8)))

    coding = replace(
        _base_group("coding_agent", "coding_agent", False, m),
        rate_per_min=d.lu(0.5, 6),
        rate_sigma=d.u(0.6, 1.1),
        session_turns=d.lu(10, 80),
        turn_gap_s=d.lu(2, 20),
        drift_bits=d.i(1, 6),
        diverse_share=1.0,
        cot_share=d.u(0.02, 0.25),
        cot_strength=d.u(0.5, 0.85),
        input_tokens=d.li(4000, 60000),
        output_tokens=d.li(150, 2500),
        token_sigma=d.u(0.4, 0.9),
        small_model_share=d.u(0.0, 0.3),
        new_model_share=d.u(0.5, 1.0),
        adopter_share=d.u(0.1, 0.6),
        adopt_lag_min=d.lu(5, 120),
        error_rate=d.lu(0.005, 0.04),
        ip_count=d.i(1, 2),
        ipv6_share=d.u(0.0, 0.4),
        age_days_min=d.lu(1, 30),
        org=d.pick(("none", "account")),
        ua_mode="agent",
    )
    out.append((coding, d.lu(0.01, 0.1)))

    batch = replace(
        _base_group("batch_job", "batch_job", False, m),
        window_minutes=d.lu(8, 60),
        rate_per_min=d.lu(5, 80),
        rate_sigma=d.u(0.4, 0.9),
        timing=d.pick(("regular", "poisson"), (0.6, 0.4)),
        jitter=d.u(0.02, 0.6),
        diurnal=False,
        templates=d.li(1, 30),
        template_scope="account",
        template_skew=d.u(0.0, 1.2),
        dup_bits=d.i(0, 8),
        diverse_share=d.u(0.0, 0.2),
        cot_share=d.u(0.0, 0.6),
        cot_strength=d.u(0.6, 0.95),
        input_tokens=d.li(200, 8000),
        output_tokens=d.li(50, 1500),
        token_sigma=d.u(0.2, 0.5),
        small_model_share=d.u(0.0, 0.8),
        new_model_share=d.u(0.5, 1.0),
        adopter_share=d.u(0.0, 0.3),
        adopt_lag_min=d.lu(10, 200),
        error_rate=d.lu(0.005, 0.05),
        ip_strategy="cloud_own",
        ip_count=d.i(1, 4),
        age_days_min=d.lu(10, 100),
        org="account",
        ua_mode="sdk",
    )
    out.append((batch, d.lu(0.003, 0.03)))

    if d.p(0.85):
        items_mode = d.p(0.5)
        evalh = replace(
            _base_group("eval_harness", "eval_harness", False, m),
            window_minutes=d.lu(15, m),
            rate_per_min=d.lu(5, 60),
            rate_sigma=d.u(0.3, 0.8),
            timing=d.pick(("regular", "poisson"), (0.5, 0.5)),
            jitter=d.u(0.05, 0.5),
            diurnal=False,
            templates=d.li(100, 5000) if items_mode else d.li(1, 12),
            template_scope="group",  # public benchmarks: the same items from unrelated accounts
            template_skew=d.u(0.0, 0.3),
            dup_bits=d.i(0, 2) if items_mode else d.i(6, 14),
            diverse_share=d.u(0.0, 0.05),
            cot_share=d.u(0.3, 0.95),
            cot_strength=d.u(0.7, 0.97),
            input_tokens=d.li(300, 4000),
            output_tokens=d.li(200, 3000),
            token_sigma=d.u(0.3, 0.7),
            small_model_share=d.u(0.0, 0.5),
            new_model_share=d.u(0.4, 1.0),
            adopter_share=d.u(0.5, 1.0),  # the new model gets benchmarked at once
            adopt_lag_min=d.lu(0.5, 20),
            error_rate=d.lu(0.005, 0.05),
            ip_strategy="cloud_own",
            ip_count=d.i(1, 3),
            age_days_min=d.lu(30, 300),
            org="account",
            ua_mode="sdk",
        )
        out.append((evalh, d.lu(0.0005, 0.006)))

    heavy = replace(
        _base_group("heavy_customer", "heavy_customer", False, m),
        rate_per_min=d.lu(10, 250),
        rate_sigma=d.u(0.6, 1.1),
        timing="poisson",
        templates=d.li(3, 200),
        template_scope="account",
        template_skew=d.u(0.3, 1.3),
        dup_bits=d.i(1, 10),
        diverse_share=d.u(0.0, 0.3),
        cot_share=d.u(0.0, 0.3),
        cot_strength=d.u(0.5, 0.9),
        input_tokens=d.li(300, 6000),
        output_tokens=d.li(50, 1200),
        token_sigma=d.u(0.2, 0.6),
        small_model_share=d.u(0.0, 0.6),
        new_model_share=d.u(0.2, 1.0),
        adopter_share=d.u(0.0, 0.2),
        adopt_lag_min=d.lu(30, 600),
        error_rate=d.lu(0.005, 0.04),
        ip_strategy="cloud_own",
        ip_count=d.i(1, 6),
        age_days_min=d.lu(60, 400),
        org="account",
        ua_mode="sdk",
    )
    out.append((heavy, d.lu(0.002, 0.02)))

    for i in range(d.i(0, 3)):
        fleet = replace(
            heavy,
            name=f"saas_fleet-{i}",
            archetype="saas_fleet",
            accounts=d.i(2, 12),
            rate_per_min=d.lu(1, 40),
            rate_sigma=d.u(0.3, 0.9),
            templates=d.li(3, 100),
            template_scope="group",
            dup_bits=d.i(1, 8),
            ip_strategy="cloud_fixed",
            ip_count=d.i(2, 8),
            ip_blocks=d.i(1, 2),
            payment="one",
            org="shared",
            ua_mode="shared",
            age_days_min=d.lu(30, 300),
            gateway=0,
        )
        out.append((fleet, -1.0))

    for i in range(d.i(0, 4) if d.p(0.85) else 0):
        age = d.lu(5, 700)
        nat = replace(
            _base_group(f"enterprise_nat-{i}", "enterprise_nat", False, m),
            accounts=d.i(40, 90),
            rate_per_min=d.lu(0.05, 1.0),
            rate_sigma=d.u(0.6, 1.2),
            session_turns=d.lu(3, 30),
            turn_gap_s=d.lu(5, 90),
            drift_bits=d.i(2, 10),
            tz_shared=True,
            tz_hours=float(d.rng.choice((-8, -5, 0, 1, 2, 5.5, 8, 9))),
            cot_share=world_cot * d.u(0.5, 2.0),
            cot_strength=d.u(0.6, 0.95),
            input_tokens=d.li(200, 8000),
            output_tokens=d.li(150, 1500),
            small_model_share=d.u(0.0, 0.4),
            new_model_share=d.u(0.3, 1.0),
            adopter_share=d.u(0.0, 0.3),
            adopt_lag_min=d.lu(10, 300),
            ip_strategy="office",
            ip_count=d.i(1, 2),
            payment="one",  # the company card
            age_days_min=age,  # provisioned together
            age_days_max=age * 1.002,
            created_absent_share=d.u(0.0, 0.3) if d.p(0.3) else 0.0,
            org="shared",
            ua_mode="mixed",
            gateway=0,
        )
        out.append((nat, -1.0))

    for i in range(n_carriers):
        cg = replace(
            chat,
            name=f"mobile_cgnat-{i}",
            archetype="mobile_cgnat",
            rate_per_min=d.lu(0.03, 0.4),
            session_turns=d.lu(1.5, 8),
            drift_bits=d.i(3, 12) if d.p(0.6) else 0,
            ip_strategy="cgnat",
            pool_ref=i,
            payment=d.pick(("distinct", "family")),
            ua_mode="mobile",
            input_tokens=d.li(40, 600),
            output_tokens=d.li(100, 700),
        )
        out.append((cg, d.lu(0.005, 0.07)))

    newacc = replace(
        chat,
        name="new_account",
        archetype="new_account",
        late_join=d.p(0.7),
        rate_per_min=d.lu(0.05, 1.5),
        rate_sigma=d.u(0.7, 1.3),
        cot_share=world_cot * d.u(0.7, 2.5),
        age_days_min=0.001,
        age_days_max=d.lu(0.01, 2),
        created_absent_share=d.u(0.0, 0.3),
        adopter_share=d.u(0.05, 0.5),
    )
    out.append((newacc, d.lu(0.01, 0.1)))

    proxy = replace(
        chat,
        name="proxy_user",
        archetype="proxy_user",
        rate_per_min=d.lu(0.05, 2.0),
        ip_strategy="proxy",
        sticky_min=0.0 if d.p(0.4) else d.lu(1, 30),
        templates=d.li(1, 20) if d.p(0.3) else 0,
        dup_bits=d.i(1, 8),
        diverse_share=d.u(0.3, 1.0),
        ua_mode=d.pick(("mixed", "sdk")),
    )
    out.append((proxy, d.lu(0.005, 0.08)))

    if d.p(0.6):
        vpn = replace(
            chat,
            name="vpn_user",
            archetype="vpn_user",
            ip_strategy="vpn",
            sticky_min=d.lu(5, 60),
        )
        out.append((vpn, d.lu(0.003, 0.05)))

    if d.p(0.7):
        tut = replace(
            _base_group("tutoring_app", "tutoring_app", False, m),
            accounts=d.i(1, 3),
            rate_per_min=d.lu(5, 120),
            rate_sigma=d.u(0.3, 0.8),
            timing="poisson",
            tz_shared=True,
            tz_hours=tz,
            templates=d.li(2, 40),
            template_scope="account",
            dup_bits=d.i(2, 8),
            diverse_share=d.u(0.1, 0.5),
            cot_share=d.u(0.5, 0.9),
            cot_strength=d.u(0.6, 0.95),
            cot_out_mult=d.u(1.2, 2.5),
            input_tokens=d.li(100, 800),
            output_tokens=d.li(300, 2000),
            token_sigma=d.u(0.3, 0.6),
            small_model_share=d.u(0.0, 0.5),
            new_model_share=d.u(0.2, 1.0),
            adopter_share=d.u(0.0, 0.5),
            adopt_lag_min=d.lu(20, 300),
            ip_strategy="cloud_own",
            ip_count=d.i(2, 6),
            age_days_min=d.lu(100, 1000),
            org="account",
            ua_mode="sdk",
        )
        out.append((tut, -1.0))
    return out


def _campaign(
    d: _Draw, kind: str, idx: int, accounts: int, minutes: int, release: float, tz: float
) -> GroupSpec:
    m = float(minutes)
    g = replace(
        _base_group(f"{kind}-{idx}", kind, True, minutes), accounts=max(1, accounts), diurnal=False
    )
    # When it starts: already running when the traffic begins, or any time up to late in the run.
    if kind == "model_pivot":
        start = 0.0 if d.p(0.4) else d.u(0.0, max(0.0, release - 5.0))
    else:
        start = 0.0 if d.p(0.28) else d.u(0.02 * m, 0.88 * m)
    end = m if d.p(0.8) or kind == "model_pivot" else d.u(start + 0.4 * (m - start), m)
    ramp = 0.0 if start == 0.0 or d.p(0.3) else d.lu(0.2, 15)
    ordinary = d.p(0.3)  # deliberately at ordinary-customer rates
    templates = 0 if d.p(0.15) else d.li(1, 300)
    age_profile = d.pick(("fresh", "aged", "mixed"), (0.5, 0.25, 0.25))
    age_lo, age_hi = {"fresh": (0.002, 2.0), "aged": (30.0, 400.0), "mixed": (0.5, 200.0)}[
        age_profile
    ]
    absent = d.pick(("none", "all", "some"), (0.7, 0.2, 0.1))
    payment = d.pick(("distinct", "handful", "one", "absent"), (0.35, 0.35, 0.2, 0.1))
    ip = d.pick(
        ("cloud_fixed", "rotate_pool", "ipv6_rotate", "proxy", "home"), (0.25, 0.25, 0.1, 0.3, 0.1)
    )
    new_adopt = d.p(0.3)
    g = replace(
        g,
        start_minute=start,
        end_minute=end,
        ramp_minutes=ramp,
        rate_per_min=d.lu(0.05, 1.0) if ordinary else d.lu(0.5, 12),
        rate_sigma=d.u(0.1, 0.9),
        timing=d.pick(("poisson", "sessions", "regular"), (0.45, 0.3, 0.25)),
        session_turns=d.lu(3, 60),
        turn_gap_s=d.lu(0.5, 30),
        jitter=d.u(0.01, 0.5),
        diurnal=d.p(0.25),
        tz_shared=True,
        tz_hours=tz,
        churn_lifetime_min=d.lu(3, 60) if d.p(0.2) else 0.0,
        churn_gap_min=d.lu(0.05, 3),
        templates=templates,
        template_scope="group",
        template_skew=d.u(0.0, 1.2),
        dup_bits=d.i(0, 8),
        diverse_share=1.0 if templates == 0 else (d.u(0.0, 0.4) if d.p(0.5) else 0.0),
        drift_bits=d.i(1, 6) if d.p(0.15) else 0,
        cot_share=d.u(0.6, 0.98) if d.p(0.6) else d.u(0.3, 0.5),
        cot_strength=d.u(0.35, 0.95),
        cot_out_mult=d.u(1.3, 3.5),
        input_tokens=d.li(80, 2500),
        output_tokens=d.li(300, 3000),
        token_sigma=d.u(0.1, 0.8),
        small_model_share=d.u(0.0, 0.2) if d.p(0.4) else 0.0,
        new_model_share=d.u(0.1, 0.6) if new_adopt else 0.0,
        adopter_share=d.u(0.3, 1.0) if new_adopt else 0.0,
        adopt_lag_min=d.lu(1, 60),
        error_rate=d.lu(0.002, 0.05),
        ip_strategy=ip,
        ip_count=d.li(200, 50000) if ip == "rotate_pool" else d.li(2, 64),
        ip_blocks=d.li(20, 2000) if ip in ("rotate_pool",) else d.li(1, 16),
        ipv6_share=d.u(0.0, 0.5) if d.p(0.3) else 0.0,
        sticky_min=0.0 if d.p(0.5) else d.lu(0.5, 30),
        payment=payment,
        payment_cards=d.li(2, 12),
        age_days_min=age_lo,
        age_days_max=age_hi,
        created_absent_share={"none": 0.0, "all": 1.0, "some": d.u(0.2, 0.8)}[absent],
        org=d.pick(("none", "account", "shared"), (0.75, 0.2, 0.05)),
        ua_mode=d.pick(("shared", "sdk", "browser", "mixed"), (0.4, 0.3, 0.15, 0.15)),
        endpoint=d.pick(("/v1/messages", "/v1/chat/completions"), (0.7, 0.3)),
    )
    if kind == "hydra":
        g = replace(
            g,
            rate_per_min=d.lu(0.05, 1.0) if ordinary else d.lu(0.3, 8),
            timing=d.pick(("poisson", "sessions"), (0.6, 0.4)),
            churn_lifetime_min=d.lu(3, 60) if d.p(0.85) else 0.0,
            templates=0 if templates == 0 else d.li(5, 300),
            ip_strategy=d.pick(("proxy", "rotate_pool", "ipv6_rotate"), (0.7, 0.2, 0.1)),
            payment=d.pick(("distinct", "handful", "one"), (0.35, 0.5, 0.15)),
            payment_cards=d.li(2, 40),
            age_days_min=0.002,
            age_days_max=d.lu(0.01, 3),
            diurnal=d.p(0.4),
        )
    elif kind == "load_balanced":
        g = replace(
            g,
            rate_per_min=d.lu(0.1, 1.0) if ordinary else d.lu(0.5, 30),
            rate_sigma=0.0,
            timing="synchronized",
            jitter=d.lu(0.02, 3.0),
            sync_stride=d.i(1, 4),
            lockstep=d.p(0.8),
            token_sigma=d.u(0.05, 0.3),
            ip_strategy=d.pick(("cloud_fixed", "rotate_pool", "proxy"), (0.6, 0.2, 0.2)),
            payment=d.pick(("one", "handful"), (0.4, 0.6)),
            payment_cards=d.li(2, 6),
            cot_share=d.u(0.1, 0.9),
            ua_mode="shared",
        )
    elif kind == "cot_elicitation":
        g = replace(
            g,
            rate_per_min=d.lu(0.05, 1.0) if ordinary else d.lu(0.3, 15),
            cot_share=d.u(0.3, 0.5) if d.p(0.3) else d.u(0.6, 0.98),
            output_tokens=d.li(800, 4000),
            input_tokens=d.li(100, 1500),
        )
    elif kind == "rubric_grading":
        g = replace(
            g,
            rate_per_min=d.lu(0.1, 1.0) if ordinary else d.lu(0.5, 30),
            templates=d.li(1, 20),
            dup_bits=d.i(1, 8),
            diverse_share=d.u(0.0, 0.1),
            input_tokens=d.li(1500, 20000),
            output_tokens=d.li(5, 150),
            cot_share=d.u(0.0, 0.3),
            cot_out_mult=1.0,
            timing=d.pick(("regular", "poisson"), (0.5, 0.5)),
            ip_strategy=d.pick(("cloud_fixed", "rotate_pool", "proxy"), (0.5, 0.3, 0.2)),
        )
    elif kind == "low_and_slow":
        g = replace(
            g,
            rate_per_min=d.lu(0.03, 0.7),
            rate_sigma=d.u(0.2, 0.8),
            timing=d.pick(("poisson", "regular"), (0.6, 0.4)),
            ip_strategy=d.pick(
                ("rotate_pool", "proxy", "home", "ipv6_rotate"), (0.3, 0.35, 0.25, 0.1)
            ),
            age_days_min=d.lu(5, 60),
            age_days_max=d.lu(90, 800),
            cot_share=d.u(0.2, 0.9),
        )
    elif kind == "model_pivot":
        g = replace(
            g,
            rate_per_min=d.lu(0.1, 1.0) if ordinary else d.lu(1, 25),
            timing="sessions",
            session_turns=d.lu(10, 100),
            turn_gap_s=d.lu(1, 15),
            input_tokens=d.li(3000, 50000),
            output_tokens=d.li(300, 3000),
            cot_share=d.u(0.05, 0.5),
            drift_bits=d.i(1, 6) if d.p(0.5) else 0,
            new_model_share=d.u(0.35, 0.7),
            adopter_share=1.0,
            adopt_lag_min=d.lu(0.5, 30),
            ua_mode=d.pick(("agent", "shared"), (0.6, 0.4)),
        )
    elif kind == "blatant":
        g = replace(
            g,
            accounts=1,
            rate_per_min=d.lu(20, 300),
            rate_sigma=0.0,
            timing=d.pick(("poisson", "regular"), (0.6, 0.4)),
            churn_lifetime_min=0.0,
            cot_share=d.u(0.8, 0.98),
            cot_strength=d.u(0.75, 0.97),
            input_tokens=d.li(100, 1500),
            output_tokens=d.li(1000, 5000),
            ip_strategy=d.pick(("single", "rotate_pool", "ipv6_rotate"), (0.5, 0.3, 0.2)),
            ip_count=d.li(1000, 50000),
            ip_blocks=d.li(50, 2000),
            sticky_min=0.0,
            payment=d.pick(("distinct", "absent"), (0.85, 0.15)),
        )
    if g.ip_strategy == "home":  # each account behind its own residential address or two
        g = replace(g, ip_count=d.i(1, 2))
    if g.ip_strategy == "ipv6_rotate":
        g = replace(g, ip_blocks=d.li(1, 16))
    if g.ip_strategy == "rotate_pool":
        g = replace(g, ip_blocks=min(g.ip_blocks, g.ip_count))
    return g


def _gateways(d: _Draw) -> tuple[GatewaySpec, ...]:
    n = d.i(1, 4)
    shares = d.rng.dirichlet(np.full(n, 2.0))
    out = []
    for i in range(n):
        fields = [
            f
            for f, prob in zip(
                OPTIONAL_FIELDS,
                (0.9, 0.9, 0.95 if i == 0 else 0.8, 0.75, 0.85, 0.7, 0.8, 0.9, 0.8, 0.9),
                strict=True,
            )
            if d.p(prob)
        ]
        style = d.pick(("z", "offset", "epoch", "mixed"), (0.35, 0.2, 0.2, 0.25))
        weights = {
            "z": (1.0, 0.0, 0.0),
            "offset": (0.0, 1.0, 0.0),
            "epoch": (0.0, 0.0, 1.0),
            "mixed": tuple(float(x) for x in d.rng.dirichlet(np.ones(3))),
        }[style]
        out.append(
            GatewaySpec(
                name=f"gw{i}",
                share=float(shares[i]),
                skew_ms=round(d.rng.normal(0.0, d.u(20, 400))),
                ts_weights=(float(weights[0]), float(weights[1]), float(weights[2])),
                utc_offset_min=int(d.rng.choice((-480, -300, -240, 0, 60, 120, 330, 480, 540))),
                fields=tuple(fields),
                event_id_prefix=d.pick(("req_", "evt-", "", "r")),
            )
        )
    return tuple(out)


def draw_world(seed: int, scale: float = 1.0) -> WorldSpec:
    """Draw every world-level parameter for `seed`; `scale` multiplies accounts and volume.

    Examples
    --------
    >>> w = draw_world(3, scale=0.1)
    >>> sum(g.archetype == "blatant" for g in w.campaigns)
    1
    >>> 40 <= w.minutes <= 120 and 0.01 <= w.campaign_share <= 0.4
    True
    """
    rng = np.random.default_rng(seed)
    d = _Draw(rng)
    minutes = d.i(40, 120)
    start_ms = 1_767_225_600_000 + d.i(0, 540) * _DAY_MS + d.i(0, 24 * 60 - 1) * _MIN_MS
    fam = d.pick(_MODEL_FAMILIES)
    ver = d.i(2, 5)
    models = (f"{fam}-{ver}", f"{fam}-{ver}-mini", f"{fam}-{ver + 1}")
    release = d.u(0.2, 0.75) * minutes
    tz_hours = (-8.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0)
    tz_weights = tuple(float(x) for x in rng.dirichlet(np.full(len(tz_hours), 0.6)))
    main_tz = tz_hours[int(np.argmax(tz_weights))]
    world_cot = d.lu(0.02, 0.35)
    ctx = _Ctx(
        minutes=minutes,
        start_hour=(start_ms % _DAY_MS) / 3_600_000,
        amplitude=d.u(0.0, 0.8),
        peak_hour=d.u(10, 22),
        tz_hours=tz_hours,
        tz_weights=tz_weights,
    )
    carriers = tuple((d.li(3, 40), d.i(1, 4), d.i(1, 3)) for _ in range(d.i(1, 4)))

    # Benign population: a drawn number of ordinary accounts, then the rates of the volume-heavy
    # customers (and, if need be, everyone's) are brought to the drawn number of requests.
    target = d.u(150_000, 520_000) * scale
    weighted = _benign_groups(d, minutes, world_cot, main_tz, len(carriers))
    b = max(60.0, d.lu(1500, 8000) * scale)
    nat_keep = max(1, round(4 * min(1.0, scale)))
    groups: list[GroupSpec] = []
    for g, w in weighted:
        if g.archetype == "enterprise_nat":
            if nat_keep == 0:
                continue
            nat_keep -= 1
        groups.append(g if w < 0 else replace(g, accounts=max(1, round(b * w))))
    benign_target = target * d.u(0.8, 1.0)
    heavy = {"coding_agent", "batch_job", "eval_harness", "heavy_customer", "saas_fleet"}
    heavy.add("tutoring_app")
    e_heavy = sum(_expected(g, ctx) for g in groups if g.archetype in heavy)
    e_pop = sum(_expected(g, ctx) for g in groups if g.archetype not in heavy)
    f_pop = float(np.clip(benign_target / max(e_pop + e_heavy, 1.0), 0.4, 2.0))
    f_heavy = float(np.clip((benign_target - e_pop * f_pop) / max(e_heavy, 1.0), 0.05, 4.0))
    groups = [
        replace(g, rate_per_min=g.rate_per_min * (f_heavy if g.archetype in heavy else f_pop))
        for g in groups
    ]
    benign_accounts = sum(g.accounts for g in groups)
    benign_active = sum(g.accounts * _active_fraction(g, ctx) for g in groups)
    benign_ev = sum(_expected(g, ctx) for g in groups)

    # Campaigns: 2-6 drawn kinds plus exactly one blatant single account.
    share = d.lu(0.01, 0.40) if d.p(0.8) else d.u(0.01, 0.40)
    kinds_pool = CAMPAIGN_KINDS[:-1]
    kind_weights = {"hydra": 3.0, "low_and_slow": 2.5, "cot_elicitation": 1.0}
    kind_weights |= {"rubric_grading": 0.7, "load_balanced": 0.8, "model_pivot": 1.0}
    n_kinds = d.i(2, 6)
    kinds = [d.pick(kinds_pool) for _ in range(n_kinds)]
    total_c = share / (1 - share) * benign_active - 1
    alloc = rng.dirichlet(np.array([kind_weights[k] for k in kinds]) * 1.5) * max(total_c, 0)
    campaigns: list[GroupSpec] = []
    counts: dict[str, int] = {}
    for kind, n_acc in zip(kinds, alloc, strict=True):
        idx = counts.get(kind, 0)
        counts[kind] = idx + 1
        tz = float(rng.choice(tz_hours))
        campaigns.append(_campaign(d, kind, idx, max(2, round(float(n_acc))), minutes, release, tz))
    campaigns.append(_campaign(d, "blatant", 0, 1, minutes, release, main_tz))
    # Held under a drawn share of the volume (rates come down, structure stays).
    vcap = d.u(0.08, 0.55)
    budget = vcap / (1 - vcap) * benign_ev
    camp_ev = sum(_expected(c, ctx) for c in campaigns if c.archetype != "blatant")
    if camp_ev > budget:
        f = budget / camp_ev
        campaigns = [
            c
            if c.archetype == "blatant"
            else replace(c, rate_per_min=max(_RATE_FLOOR[c.archetype], c.rate_per_min * f))
            for c in campaigns
        ]
    # A campaign's bursts hold at most about ten minutes' worth of its requests.
    campaigns = [
        replace(c, session_turns=min(c.session_turns, max(1.5, 10 * c.rate_per_min)))
        for c in campaigns
    ]
    # Plan for the accounts that will fall silent (a low rate over a short life sends nothing).
    campaigns = [
        c
        if c.archetype == "blatant"
        else replace(c, accounts=round(c.accounts / max(1 / 3, _active_fraction(c, ctx))))
        for c in campaigns
    ]
    groups += campaigns
    expected = sum(_expected(g, ctx) for g in groups)

    gateways = _gateways(d)
    return WorldSpec(
        seed=int(seed),
        scale=float(scale),
        start_ms=int(start_ms),
        minutes=minutes,
        models=models,
        model_ms_per_token=(d.u(10, 25), d.u(3, 9), d.u(12, 30)),
        release_minute=release,
        diurnal_amplitude=ctx.amplitude,
        peak_hour=ctx.peak_hour,
        tz_hours=tz_hours,
        tz_weights=tz_weights,
        id_style=d.pick(("acct", "user", "cus")),
        campaign_share=share,
        campaign_volume_cap=vcap,
        benign_accounts=benign_accounts,
        expected_events=round(expected),
        mobile_share=d.u(0.0, 0.25),
        cloud_blocks=d.li(50, 3000),
        isp_v6_blocks=d.li(20, 1000),
        proxy_ips=d.li(800, 40000),
        proxy_blocks=d.li(60, 3000),
        proxy_ipv6_share=d.u(0.0, 0.3) if d.p(0.4) else 0.0,
        vpn_ips=d.li(30, 2000),
        vpn_blocks=d.li(3, 60),
        carriers=carriers,
        gateways=gateways,
        late_share=d.u(0.0, 0.03),
        late_long_share=d.u(0.0, 0.2),
        dup_share=d.u(0.0, 0.01),
        groups=tuple(groups),
    )


def describe(spec: WorldSpec) -> str:
    """One line: size, campaign share and kinds with start minutes, benign highlights, disorder."""
    camps = ", ".join(
        f"{c.name}@{c.start_minute:.0f}m({c.accounts}acc {c.rate_per_min:.2g}/min {c.ip_strategy}"
        f"{' churn' if c.churn_lifetime_min else ''} cot{c.cot_share:.2f})"
        for c in spec.campaigns
    )
    by_arch: dict[str, int] = {}
    for g in spec.benign:
        by_arch[g.archetype] = by_arch.get(g.archetype, 0) + g.accounts
    top = sorted(by_arch.items(), key=lambda kv: -kv[1])
    mix = " ".join(f"{a}={n}" for a, n in top)
    chat = next((g for g in spec.benign if g.archetype == "chat"), None)
    cot = f" chat-cot={chat.cot_share:.2f}" if chat else ""
    return (
        f"world {spec.seed} x{spec.scale:g}: {spec.minutes}min ~{spec.expected_events} events, "
        f"campaigns {spec.campaign_share:.1%} of accounts: {camps}; benign {spec.benign_accounts}: "
        f"{mix};{cot} diurnal {spec.diurnal_amplitude:.2f}@{spec.peak_hour:.0f}h; "
        f"{len(spec.gateways)} gateways; late {spec.late_share:.1%} dup {spec.dup_share:.2%}; "
        f"{spec.models[2]} at {spec.release_minute:.0f}m"
    )


# --------------------------------------------------------------------------------------------------
# Generation


def _v4(a: Arr, b: Arr, c: Arr, h: Arr) -> list[str]:
    return [
        f"{w}.{x}.{y}.{z}"
        for w, x, y, z in zip(a.tolist(), b.tolist(), c.tolist(), h.tolist(), strict=True)
    ]


def _v6(p: Arr, rest: Arr) -> list[str]:
    """p: (n, 3) /48 prefix groups; rest: (n, 5) remaining groups."""
    full = np.concatenate([p, rest], axis=1).tolist()
    return [":".join(f"{g:x}" for g in row) for row in full]


def _inverse(keys: Arr) -> Arr:
    """Dense ids 0..u-1 of the distinct keys, per element."""
    _, inv = np.unique(keys, return_inverse=True)
    out: Arr = inv.reshape(-1)
    return out


class _Builder:
    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, 0x5EED])
        self.h0 = (spec.start_ms % _DAY_MS) / 3_600_000
        self.ips: list[str] = []
        # account table
        self.acc_group: list[int] = []
        self.acc_payment: list[str | None] = []
        self.acc_created: list[int] = []  # -1 = absent
        self.acc_org: list[str | None] = []
        self.acc_ua: list[str] = []
        self.acc_endpoint: list[str] = []
        self.acc_gateway: list[int] = []
        self.acc_keys: list[list[str]] = []
        # event columns, one array per group
        self.cols: dict[str, list[Arr]] = {
            k: [] for k in ("t", "acc", "ip", "model", "inp", "out", "status", "lat", "fp", "cot")
        }
        self._pools: dict[str, Arr] = {}
        self._cloud24: Arr | None = None
        self._isp48: Arr | None = None
        gw = np.array([g.share for g in spec.gateways])
        self.gw_p = gw / gw.sum()

    # -- addresses -------------------------------------------------------------------------------

    def _add_ips(self, strings: list[str]) -> Arr:
        base = len(self.ips)
        self.ips.extend(strings)
        return np.arange(base, base + len(strings), dtype=np.int64)

    def _blocks(self, n: int, firsts: tuple[int, ...]) -> Arr:
        r = self.rng
        a = np.asarray(firsts)[r.integers(0, len(firsts), n)]
        return np.stack([a, r.integers(0, 256, n), r.integers(0, 256, n)], axis=1)

    def _in_blocks(self, blocks: Arr, n: int) -> list[str]:
        r = self.rng
        pick = blocks[r.integers(0, len(blocks), n)]
        return _v4(pick[:, 0], pick[:, 1], pick[:, 2], r.integers(1, 255, n))

    def _prefix48(self, n: int) -> Arr:
        r = self.rng
        return np.stack(
            [r.integers(0x2001, 0x2C10, n), r.integers(0, 0x10000, n), r.integers(0, 0x10000, n)],
            axis=1,
        )

    def _in48(self, prefixes: Arr, which: Arr) -> list[str]:
        return _v6(prefixes[which], self.rng.integers(0, 0x10000, (len(which), 5)))

    def cloud24(self) -> Arr:
        if self._cloud24 is None:
            self._cloud24 = self._blocks(self.spec.cloud_blocks, _CLOUD_A)
        return self._cloud24

    def isp48(self) -> Arr:
        if self._isp48 is None:
            self._isp48 = self._prefix48(self.spec.isp_v6_blocks)
        return self._isp48

    def pool(self, name: str) -> Arr:
        """World-level shared pools: the proxy reseller, the VPN provider, each mobile carrier."""
        if name in self._pools:
            return self._pools[name]
        s = self.spec
        r = self.rng
        if name == "proxy":
            n6 = round(s.proxy_ips * s.proxy_ipv6_share)
            v4 = self._in_blocks(self._blocks(s.proxy_blocks, _RESID_A), s.proxy_ips - n6)
            v6 = self._in48(
                self._prefix48(max(1, s.proxy_blocks // 20)),
                r.integers(0, max(1, s.proxy_blocks // 20), n6),
            )
            idx = self._add_ips(list(dict.fromkeys(v4 + v6)))
        elif name == "vpn":
            idx = self._add_ips(
                list(
                    dict.fromkeys(self._in_blocks(self._blocks(s.vpn_blocks, _CLOUD_A), s.vpn_ips))
                )
            )
        else:  # carrier-<i>: IPv4 only; event_ips gives IPv6 users a /64 per session
            n4, nb, _ = s.carriers[int(name.split("-")[1])]
            idx = self._add_ips(
                list(dict.fromkeys(self._in_blocks(self._blocks(nb, _RESID_A), n4)))
            )
        self._pools[name] = idx
        return idx

    def _sticky(self, acc: Arr, t: Arr, sticky_min: float, size: int) -> Arr:
        """Pool positions: a fresh draw per request, or one per (account, sticky period)."""
        r = self.rng
        if sticky_min <= 0:
            return r.integers(0, size, len(acc))
        phase = r.random(int(acc.max()) + 1 if len(acc) else 1) * sticky_min
        period = np.floor((t + phase[acc]) / sticky_min).astype(np.int64)
        inv = _inverse(acc.astype(np.int64) * 1_000_000 + period)
        return r.integers(0, size, int(inv.max()) + 1 if len(inv) else 0)[inv]

    def event_ips(self, g: GroupSpec, k: int, acc: Arr, t: Arr, sess: Arr) -> Arr:
        r = self.rng
        n = len(acc)
        strat = g.ip_strategy
        if strat in ("home", "cloud_own", "single"):
            m = 1 if strat == "single" else max(1, g.ip_count)
            cnt = r.integers(1, m + 1, k)
            if strat == "home":
                v6 = r.random(k) < g.ipv6_share
                v4s = self._in_blocks(self._blocks(k * m, _RESID_A), k * m)
                p48 = self.isp48()
                v6s = self._in48(p48, r.integers(0, len(p48), k * m))
                strings = [v6s[i] if v6[i // m] else v4s[i] for i in range(k * m)]
            else:
                # each tenant sits in one /24 of the world's cloud space (shared with other tenants)
                c24 = self.cloud24()
                blk = np.repeat(c24[r.integers(0, len(c24), k)], m, axis=0)
                strings = _v4(blk[:, 0], blk[:, 1], blk[:, 2], r.integers(1, 255, k * m))
            table = self._add_ips(strings).reshape(k, m)
            primary = r.random(n) < 0.8
            local = np.where(primary, 0, (r.random(n) * cnt[acc]).astype(np.int64))
            out = table[acc, local]
            if strat == "home" and self.spec.carriers and self.spec.mobile_share > 0:
                mob = r.random(n) < self.spec.mobile_share * r.random(k)[acc] * 2
                if mob.any():
                    carrier = r.integers(0, len(self.spec.carriers), k)
                    for ci in range(len(self.spec.carriers)):
                        sel = mob & (carrier[acc] == ci)
                        pool = self.pool(f"carrier-{ci}")
                        out[sel] = pool[r.integers(0, len(pool), int(sel.sum()))]
            return out
        if strat == "office":
            blk = self._blocks(1, _CLOUD_A + _RESID_A)
            pool = self._add_ips(self._in_blocks(blk, max(1, g.ip_count)))
            return pool[r.integers(0, len(pool), n)]
        if strat == "cgnat":
            ci = max(0, g.pool_ref) % max(1, len(self.spec.carriers))
            pool = self.pool(f"carrier-{ci}")
            n6 = self.spec.carriers[ci][2]
            # the carrier maps each session to one of its addresses; IPv6 users: a /64 a session
            inv = _inverse(sess)
            ns = int(inv.max()) + 1 if n else 0
            out = pool[r.integers(0, len(pool), ns)][inv]
            v6 = (r.random(ns) < g.ipv6_share)[inv] if ns else np.zeros(0, bool)
            if v6.any():
                key = f"carrier6-{ci}"
                if key not in self._pools:
                    self._pools[key] = self._prefix48(n6)
                p48 = self._pools[key]
                inv6 = _inverse(sess[v6])
                strings = self._in48(p48, r.integers(0, len(p48), int(inv6.max()) + 1))
                out[v6] = self._add_ips(strings)[inv6]
            return out
        if strat == "cloud_fixed":
            c24 = self.cloud24()
            blk = c24[r.integers(0, len(c24), max(1, g.ip_blocks))]
            pool = self._add_ips(list(dict.fromkeys(self._in_blocks(blk, max(1, g.ip_count)))))
            per = np.minimum(r.integers(1, 4, k), len(pool))
            own = r.integers(0, len(pool), (k, 3))
            local = (r.random(n) * per[acc]).astype(np.int64)
            return pool[own[acc, local]]
        if strat == "rotate_pool":
            firsts = _CLOUD_A if r.random() < 0.5 else _RESID_A + _CLOUD_A
            nb = max(1, min(g.ip_blocks, g.ip_count))
            pool = self._add_ips(
                list(dict.fromkeys(self._in_blocks(self._blocks(nb, firsts), g.ip_count)))
            )
            return pool[self._sticky(acc, t, g.sticky_min, len(pool))]
        if strat == "ipv6_rotate":
            p48 = self._prefix48(max(1, g.ip_blocks))
            if g.sticky_min <= 0:
                return self._add_ips(self._in48(p48, r.integers(0, len(p48), n)))
            phase = r.random(k) * g.sticky_min
            period = np.floor((t + phase[acc]) / g.sticky_min).astype(np.int64)
            inv = _inverse(acc.astype(np.int64) * 1_000_000 + period)
            nu = int(inv.max()) + 1 if n else 0
            return self._add_ips(self._in48(p48, r.integers(0, len(p48), nu)))[inv]
        if strat in ("proxy", "vpn"):
            pool = self.pool(strat)
            sticky = g.sticky_min
            return pool[self._sticky(acc, t, sticky, len(pool))]
        raise ValueError(f"unknown ip strategy {strat!r}")

    # -- timing ----------------------------------------------------------------------------------

    def diurnal(self, t: Arr, tz: Arr) -> Arr:
        hour = (self.h0 + t / 60.0 + tz) % 24.0
        return 1.0 + self.spec.diurnal_amplitude * np.cos(
            2 * np.pi * (hour - self.spec.peak_hour) / 24.0
        )

    def poisson(self, a: Arr, b: Arr, rate: Arr, tz: Arr | None) -> tuple[Arr, Arr]:
        r = self.rng
        dur = np.maximum(b - a, 0.0)
        fmax = 1.0 + (self.spec.diurnal_amplitude if tz is not None else 0.0)
        n = r.poisson(rate * dur * fmax)
        acc = np.repeat(np.arange(len(a)), n)
        t = a[acc] + r.random(len(acc)) * dur[acc]
        if tz is not None and self.spec.diurnal_amplitude > 0:
            keep = r.random(len(t)) * fmax < self.diurnal(t, tz[acc])
            acc, t = acc[keep], t[keep]
        return acc, t

    def sessions(
        self, a: Arr, b: Arr, rate: Arr, tz: Arr | None, turns: float, gap_s: float
    ) -> tuple[Arr, Arr, Arr]:
        r = self.rng
        # A session that is already under way when the run begins starts before minute 0.
        lead = np.where(a <= 0.0, turns * gap_s / 60.0, 0.0)
        sacc, st = self.poisson(a - lead, b, rate / turns, tz)
        nt = r.geometric(1.0 / max(turns, 1.0), len(st))
        sess = np.repeat(np.arange(len(st)), nt)
        gaps = r.lognormal(math.log(gap_s), 0.9, len(sess)) / 60.0
        first = np.cumsum(nt) - nt
        gaps[first] = 0.0
        cs = np.cumsum(gaps)
        t = st[sess] + cs - cs[first][sess]
        acc = sacc[sess]
        keep = (t >= a[acc]) & (t < b[acc])
        return acc[keep], t[keep], sess[keep]

    def regular(self, a: Arr, b: Arr, rate: Arr, jitter: float) -> tuple[Arr, Arr]:
        r = self.rng
        period = 1.0 / np.maximum(rate, 1e-6)
        dur = np.maximum(b - a, 0.0)
        n = np.floor(dur / period + r.random(len(a))).astype(np.int64)
        acc = np.repeat(np.arange(len(a)), n)
        i = np.arange(len(acc)) - np.repeat(np.cumsum(n) - n, n)
        phase = r.random(len(a)) * period
        t = a[acc] + phase[acc] + i * period[acc]
        t = t + r.normal(0.0, jitter, len(t)) * period[acc]
        keep = (t >= a[acc]) & (t < b[acc])
        return acc[keep], t[keep]

    def synchronized(
        self, a: Arr, b: Arr, rate: float, stride: int, jitter_s: float
    ) -> tuple[Arr, Arr, Arr]:
        """A dispatcher's clock: ticks at stride*rate per minute; account k fires on every
        stride-th tick (its residue), a fixed small lag after the tick, with ms-scale jitter."""
        r = self.rng
        k = len(a)
        p = 1.0 / (rate * stride)
        t0 = float(a.min()) - r.random() * p
        lo = np.ceil((a - t0) / p).astype(np.int64)
        hi = np.floor((b - t0) / p).astype(np.int64)
        res = np.arange(k) % stride
        first = lo + (res - lo) % stride
        n = np.maximum(0, (hi - first) // stride + 1)
        acc = np.repeat(np.arange(k), n)
        j = np.arange(len(acc)) - np.repeat(np.cumsum(n) - n, n)
        tick = first[acc] + j * stride
        lag = r.random(k) * jitter_s / 60.0
        t = t0 + tick * p + lag[acc] + np.abs(r.normal(0.0, jitter_s / 4, len(acc))) / 60.0
        keep = r.random(len(t)) > r.uniform(0.0, 0.08)
        return acc[keep], t[keep], tick[keep]

    def windows(self, g: GroupSpec) -> tuple[Arr, Arr]:
        """Per-account [a, b) activity in minutes (churn adds replacement accounts)."""
        r = self.rng
        m = float(self.spec.minutes)
        n = g.accounts
        if g.churn_lifetime_min > 0:
            span = g.end_minute - g.start_minute
            per_slot = 1.0 + span / (g.churn_lifetime_min + g.churn_gap_min)  # renewals
            slots = max(1, round(n / per_slot))
            al: list[float] = []
            bl: list[float] = []
            lives = r.exponential(g.churn_lifetime_min, 100_000).tolist()
            gaps = r.exponential(g.churn_gap_min, 100_000).tolist()
            ramps = (r.random(slots) * g.ramp_minutes).tolist()
            j = 0
            for s in range(slots):
                t = g.start_minute + ramps[s]
                first = True
                while t < g.end_minute and j < 99_999:
                    life = max(0.5, lives[j])
                    if first and g.start_minute == 0.0:
                        life *= r.random()  # already part-way through its life at minute 0
                        life = max(0.5, life)
                    al.append(t)
                    bl.append(min(t + life, g.end_minute))
                    t += life + gaps[j]
                    j += 1
                    first = False
            return np.asarray(al), np.asarray(bl)
        if g.window_minutes > 0:
            w = np.minimum(g.window_minutes * r.lognormal(0.0, 0.4, n), m)
            a = r.uniform(-0.3 * w, m - 0.7 * w)
            return np.clip(a, 0.0, m), np.clip(a + w, 0.0, m)
        if g.late_join:
            a = r.uniform(0.0, m - 1.0, n)
            return a, np.full(n, m)
        a = g.start_minute + r.random(n) * g.ramp_minutes
        return a, np.full(n, g.end_minute)

    # -- one group -------------------------------------------------------------------------------

    def group(self, gi: int, g: GroupSpec) -> None:
        r = self.rng
        s = self.spec
        a, b = self.windows(g)
        k = len(a)
        if k == 0:
            return
        rate = g.rate_per_min * np.exp(r.normal(0.0, g.rate_sigma, k))
        if g.tz_shared:
            tz = np.full(k, g.tz_hours)
        else:
            w = np.asarray(s.tz_weights)
            tz = np.asarray(s.tz_hours)[r.choice(len(w), k, p=w / w.sum())]
        tzd = tz if g.diurnal else None
        ordinal: Arr | None = None
        if g.timing == "sessions":
            acc, t, sess = self.sessions(a, b, rate, tzd, g.session_turns, g.turn_gap_s)
        elif g.timing == "regular":
            acc, t = self.regular(a, b, rate, g.jitter)
            sess = None
        elif g.timing == "synchronized":
            acc, t, ordinal = self.synchronized(a, b, g.rate_per_min, g.sync_stride, g.jitter)
            sess = None
        else:
            acc, t = self.poisson(a, b, rate, tzd)
            sess = None
        t = np.clip(t, 0.0, s.minutes - 1e-4)
        order = np.lexsort((t, acc))
        acc, t = acc[order], t[order]
        n = len(acc)
        first_of = np.searchsorted(acc, np.arange(k))
        ordinal = ordinal[order] if ordinal is not None else np.arange(n) - first_of[acc]
        if sess is not None:
            sess = sess[order]
        else:
            newsess = np.ones(n, bool)
            if n > 1:
                newsess[1:] = (acc[1:] != acc[:-1]) | (np.diff(t) > 10.0)
            sess = np.cumsum(newsess) - 1
        self._accounts(gi, g, k, a, acc, t)
        if n == 0:
            return

        # prompts: templates (slots flip a few bits), drift within sessions, or unrelated
        free_fp = self._fingerprints(g, acc, sess, ordinal)
        tmpl, tmpl_len, tmpl_ask, tmpl_base = self._template_of(g, k, acc, ordinal)
        is_t = tmpl >= 0
        if g.templates > 0:
            if g.lockstep:  # the same prompts, slot fillers included, from every account
                flips = self._flips(int(ordinal.max()) + 1, g.dup_bits)[ordinal]
            else:
                flips = self._flips(n, g.dup_bits)
            fp_all = np.where(is_t, tmpl_base[np.maximum(tmpl, 0)] ^ flips, free_fp)
        else:
            fp_all = free_fp

        # reasoning elicitation: templates ask or not as a whole; free prompts per request
        acc_cot = np.clip(g.cot_share * r.lognormal(0.0, 0.08 if g.campaign else 0.25, k), 0, 1)
        ask = np.where(is_t, tmpl_ask[np.maximum(tmpl, 0)], r.random(n) < acc_cot[acc])
        conc = r.uniform(10, 30)
        hi = r.beta(g.cot_strength * conc, (1 - g.cot_strength) * conc + 1e-3, n)
        lo = r.beta(0.7, r.uniform(8, 25), n)
        cot = np.where(ask, hi, lo)

        # tokens
        in_acc = g.input_tokens * r.lognormal(0.0, 0.0 if g.lockstep else 0.35, k)
        out_acc = g.output_tokens * r.lognormal(0.0, 0.0 if g.lockstep else 0.35, k)
        if g.lockstep:
            L = int(ordinal.max()) + 1
            nin, nout = r.normal(0.0, 1.0, L), r.normal(0.0, 1.0, L)
            z_in, z_out = nin[ordinal], nout[ordinal] * 0.5 + r.normal(0.0, 0.5, n)
        else:
            z_in, z_out = r.normal(0.0, 1.0, n), r.normal(0.0, 1.0, n)
        inp = np.where(
            is_t,
            tmpl_len[np.maximum(tmpl, 0)] * np.exp(0.03 * z_in + 0.01 * g.dup_bits),
            in_acc[acc] * np.exp(g.token_sigma * z_in),
        )
        out = out_acc[acc] * np.exp(g.token_sigma * z_out) * np.where(ask, g.cot_out_mult, 1.0)
        inp = np.clip(np.rint(inp), 1, 1_000_000).astype(np.int64)
        out = np.clip(np.rint(out), 1, 32_000).astype(np.int64)

        # models: main / small, and the new model for adopters after their adoption time
        small_acc = np.clip(g.small_model_share * r.uniform(0.0, 2.0, k), 0.0, 1.0)
        adopter = r.random(k) < g.adopter_share
        lag = g.adopt_lag_min * (r.uniform(0.6, 1.4, k) if g.campaign else r.exponential(1.0, k))
        adopt_t = np.where(adopter, s.release_minute + lag, np.inf)
        new_acc = np.clip(g.new_model_share * r.uniform(0.8, 1.2, k), 0.0, 1.0)
        is_new = (t >= adopt_t[acc]) & (r.random(n) < new_acc[acc])
        is_small = ~is_new & (r.random(n) < small_acc[acc])
        model = np.where(is_new, 2, np.where(is_small, 1, 0)).astype(np.int8)

        # status and latency
        err_acc = g.error_rate * r.lognormal(0.0, 0.5, k) + np.where(rate > 40, 0.02, 0.0)
        err = r.random(n) < err_acc[acc]
        status = np.where(err, np.asarray(_ERROR_CODES)[r.integers(0, len(_ERROR_CODES), n)], 200)
        out = np.where(err, 0, out)
        mspt = np.asarray(s.model_ms_per_token)[model]
        ttft = r.lognormal(math.log(400), 0.5, n) + inp * 0.004
        lat = np.where(
            err, r.lognormal(math.log(80), 0.7, n), ttft + out * mspt * r.lognormal(0, 0.2, n)
        )

        ip = self.event_ips(g, k, acc, t, sess)

        base = len(self.acc_group) - k
        c = self.cols
        c["t"].append(s.start_ms + np.rint(t * _MIN_MS).astype(np.int64))
        c["acc"].append((acc + base).astype(np.int64))
        c["ip"].append(ip.astype(np.int64))
        c["model"].append(model)
        c["inp"].append(inp)
        c["out"].append(out.astype(np.int64))
        c["status"].append(status.astype(np.int64))
        c["lat"].append(np.round(lat, 1))
        c["fp"].append(fp_all.astype(np.uint64))
        c["cot"].append(np.round(np.clip(cot, 0.0, 1.0), 4))

    def _template_of(
        self, g: GroupSpec, k: int, acc: Arr, ordinal: Arr
    ) -> tuple[Arr, Arr, Arr, Arr]:
        """Per event: template index (-1 = free prompt); per template: length, whether it asks
        for reasoning, and its base fingerprint."""
        r = self.rng
        n = len(acc)
        if g.templates <= 0:
            return np.full(n, -1), np.ones(1), np.zeros(1, bool), np.zeros(1, np.uint64)
        T = g.templates
        pop = 1.0 / np.arange(1, T + 1) ** g.template_skew
        pop = pop / pop.sum()
        if g.lockstep:
            L = int(ordinal.max()) + 1
            seq = r.choice(T, L, p=pop)
            local = seq[ordinal]
            free = (r.random(L) < g.diverse_share)[ordinal]
        else:
            local = r.choice(T, n, p=pop)
            free = r.random(n) < g.diverse_share
        if g.template_scope == "account":
            owner = acc
            ntot = k * T
        else:
            owner = np.zeros(n, np.int64)
            ntot = T
        tmpl = np.where(free, -1, owner * T + local)
        tmpl_len = g.input_tokens * r.lognormal(0.0, 0.5, ntot)
        # stratified, so that even a handful of templates asks about as often as drawn
        tmpl_ask = (r.permutation(ntot) + r.random(ntot)) / ntot < g.cot_share
        tmpl_base = r.integers(0, _U64_MAX, ntot, dtype=np.uint64, endpoint=True)
        return tmpl, tmpl_len, tmpl_ask, tmpl_base

    def _flips(self, n: int, max_bits: int, min_bits: int = 0) -> Arr:
        r = self.rng
        if max_bits <= 0 or n == 0:
            return np.zeros(n, np.uint64)
        kbits = r.integers(min_bits, max_bits + 1, n)
        pos = r.integers(0, 64, (n, max_bits)).astype(np.uint64)
        bits = np.left_shift(np.uint64(1), pos)
        bits[np.arange(max_bits)[None, :] >= kbits[:, None]] = 0
        out: Arr = np.bitwise_or.reduce(bits, axis=1)
        return out

    def _fingerprints(self, g: GroupSpec, acc: Arr, sess: Arr, ordinal: Arr) -> Arr:
        """Fingerprints of prompts not from a template: unrelated (~32 bits apart), or drifting
        a few bits per turn within a session (a conversation or an agent loop resending context)."""
        r = self.rng
        n = len(acc)
        if g.lockstep:
            return r.integers(0, _U64_MAX, int(ordinal.max()) + 1, dtype=np.uint64, endpoint=True)[
                ordinal
            ]
        if g.drift_bits > 0:
            masks = self._flips(n, g.drift_bits, 1)
            sid = _inverse(sess)
            ns = int(sid.max()) + 1
            first = np.full(ns, n, np.int64)
            np.minimum.at(first, sid, np.arange(n))
            masks[first] = 0
            cum = np.bitwise_xor.accumulate(masks)
            basefp = r.integers(0, _U64_MAX, ns, dtype=np.uint64, endpoint=True)
            free = basefp[sid] ^ cum ^ cum[first][sid]
        else:
            free = r.integers(0, _U64_MAX, n, dtype=np.uint64, endpoint=True)
        return free

    def _accounts(self, gi: int, g: GroupSpec, k: int, a: Arr, acc: Arr, t: Arr) -> None:
        r = self.rng
        s = self.spec
        # payment instruments
        if g.payment == "absent":
            pays: list[str | None] = [None] * k
        elif g.payment == "one":
            pays = [self._card()] * k
        elif g.payment == "handful":
            cards = [self._card() for _ in range(max(2, min(g.payment_cards, k)))]
            pays = [cards[int(i)] for i in r.integers(0, len(cards), k)]
        elif g.payment == "family":
            pays = [self._card() for _ in range(k)]
            fam = np.flatnonzero(r.random(k) < 0.08)
            for i in fam.tolist():
                j = int(r.integers(max(0, i - 3), i + 1))
                pays[i] = pays[j]
        else:
            pays = [self._card() for _ in range(k)]
        # creation: age before the account's first activity; replacements are brand new
        first_t = np.full(k, np.inf)
        np.minimum.at(first_t, acc, t)
        age_days = np.exp(r.uniform(math.log(g.age_days_min), math.log(g.age_days_max), k))
        created = s.start_ms + np.rint(np.minimum(a, first_t) * _MIN_MS - age_days * _DAY_MS)
        if g.churn_lifetime_min > 0:
            fresh = a > g.start_minute + g.ramp_minutes
            created = np.where(
                fresh, s.start_ms + np.rint(a * _MIN_MS - r.uniform(0.2, 30, k) * _MIN_MS), created
            )
        cap = s.start_ms + np.rint(np.where(np.isfinite(first_t), first_t, a) * _MIN_MS) - 2_000
        created = np.minimum(created, cap).astype(np.int64)
        absent = r.random(k) < g.created_absent_share
        created = np.where(absent, -1, created)
        # organisation, client, gateway, keys
        if g.org == "shared":
            org_shared = f"org-{self._hex(10)}"
            orgs: list[str | None] = [org_shared] * k
        elif g.org == "account":
            orgs = [f"org-{self._hex(10)}" for _ in range(k)]
        else:
            orgs = [None] * k
        uas = self._uas(g, k)
        if g.gateway >= 0:
            gws = np.full(k, min(g.gateway, len(s.gateways) - 1))
        else:
            gws = r.choice(len(self.gw_p), k, p=self.gw_p)
        nkeys = r.integers(1, 4 if not g.campaign else 2, k)
        for i in range(k):
            self.acc_group.append(gi)
            self.acc_payment.append(pays[i])
            self.acc_created.append(int(created[i]))
            self.acc_org.append(orgs[i])
            self.acc_ua.append(uas[i])
            self.acc_endpoint.append(g.endpoint)
            self.acc_gateway.append(int(gws[i]))
            self.acc_keys.append([f"key_{self._hex(12)}" for _ in range(int(nkeys[i]))])

    def _hex(self, nchars: int) -> str:
        return f"{int(self.rng.integers(0, 1 << (4 * nchars), dtype=np.uint64)):0{nchars}x}"

    def _card(self) -> str:
        return f"pm_{self._hex(16)}"

    def _uas(self, g: GroupSpec, k: int) -> list[str]:
        r = self.rng
        mode = g.ua_mode
        if mode == "shared":
            one = _SDK_UAS[int(r.integers(len(_SDK_UAS)))]
            return [one] * k
        if mode == "mixed":
            sets = ("sdk", "browser", "mobile", "agent")
            which = r.choice(4, k, p=[0.3, 0.4, 0.2, 0.1])
            out = []
            for wi in which.tolist():
                pool = _UA_SETS[sets[wi]]
                out.append(pool[int(r.integers(len(pool)))])
            return out
        pool = _UA_SETS[mode]
        return [pool[int(i)] for i in r.integers(0, len(pool), k)]

    # -- assembly ----------------------------------------------------------------------------------

    def build(self) -> SimulatedTraffic:
        s = self.spec
        r = self.rng
        for gi, g in enumerate(s.groups):
            self.group(gi, g)
        cols = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.cols.items()}
        n = len(cols["t"])
        acc = cols["acc"]
        acc_gw = np.asarray(self.acc_gateway, dtype=np.int64)
        # mostly through the account's usual gateway, sometimes another
        gw = np.where(r.random(n) < 0.97, acc_gw[acc], r.choice(len(self.gw_p), n, p=self.gw_p))
        skew = np.asarray([gs.skew_ms for gs in s.gateways], dtype=np.int64)
        ts = cols["t"] + skew[gw]
        order = np.lexsort((r.random(n), ts))

        # disorder: late deliveries and exact duplicate deliveries change the arrival order only
        key = ts[order].astype(np.float64)
        late = np.flatnonzero(r.random(n) < s.late_share)
        long_ = r.random(len(late)) < s.late_long_share
        delay = np.where(
            long_,
            r.uniform(10_000, 120_000, len(late)),
            np.exp(r.uniform(math.log(150), math.log(10_000), len(late))),
        )
        key[late] += delay
        dups = np.flatnonzero(r.random(n) < s.dup_share)
        dkey = key[dups] + np.exp(r.uniform(math.log(50), math.log(30_000), len(dups)))
        arrival_pos = np.concatenate([np.arange(n), dups])
        arrival = arrival_pos[np.argsort(np.concatenate([key, dkey]), kind="stable")]

        events = self._dicts(cols, order, ts, gw)
        out: list[dict[str, Any]] = []
        seen = np.zeros(n, bool)
        for p in arrival.tolist():
            if seen[p]:
                out.append(dict(events[p]))
            else:
                seen[p] = True
                out.append(events[p])
        return SimulatedTraffic(events=out, labels=self._labels(cols, order, ts, n))

    def _dicts(self, cols: dict[str, Arr], order: Arr, ts: Arr, gw: Arr) -> list[dict[str, Any]]:
        """Event dicts in event-time order (position p = order[p])."""
        s = self.spec
        r = self.rng
        n = len(order)
        acc = cols["acc"][order]
        gwo = gw[order]
        tso = ts[order]
        # identifiers
        ids_raw = r.integers(0, _U64_MAX, n, dtype=np.uint64, endpoint=True)
        while len(np.unique(ids_raw)) < n:  # pragma: no cover - 2^-40 odds
            ids_raw = r.integers(0, _U64_MAX, n, dtype=np.uint64, endpoint=True)
        ids_hex = ids_raw.astype(">u8").tobytes().hex()
        prefixes = [gs.event_id_prefix for gs in s.gateways]
        gl = gwo.tolist()
        ids = [prefixes[gl[i]] + ids_hex[16 * i : 16 * i + 16] for i in range(n)]
        # timestamps: RFC 3339 with Z, with the gateway's offset, or epoch ms
        fmt = np.zeros(n, np.int64)
        u = r.random(n)
        for gi, gs in enumerate(s.gateways):
            sel = gwo == gi
            cw = np.cumsum(gs.ts_weights)
            fmt[sel] = np.searchsorted(cw / cw[-1], u[sel], side="right")
        fmt = np.minimum(fmt, 2)
        ts_out: list[Any] = tso.tolist()
        zsel = np.flatnonzero(fmt == 0)
        zs = np.datetime_as_string(tso[zsel].astype("datetime64[ms]"), unit="ms").tolist()
        for i, zstr in zip(zsel.tolist(), zs, strict=True):
            ts_out[i] = zstr + "Z"
        osel = np.flatnonzero(fmt == 1)
        offs = np.asarray([gs.utc_offset_min for gs in s.gateways], dtype=np.int64)[gwo[osel]]
        os_ = np.datetime_as_string(
            (tso[osel] + offs * _MIN_MS).astype("datetime64[ms]"), unit="ms"
        ).tolist()
        for i, ostr, off in zip(osel.tolist(), os_, offs.tolist(), strict=True):
            sign = "+" if off >= 0 else "-"
            ts_out[i] = f"{ostr}{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"
        # account-level fields
        acc_ids = self.account_ids
        created_z = [None if c < 0 else str(np.datetime64(c, "ms")) + "Z" for c in self.acc_created]
        key_flat: list[str] = []
        key_off = np.zeros(len(self.acc_keys), np.int64)
        key_cnt = np.zeros(len(self.acc_keys), np.int64)
        for i, ks in enumerate(self.acc_keys):
            key_off[i] = len(key_flat)
            key_cnt[i] = len(ks)
            key_flat.extend(ks)
        key_idx = key_off[acc] + (r.random(n) * key_cnt[acc]).astype(np.int64)
        fp_hex = cols["fp"][order].astype(">u8").tobytes().hex()
        al = acc.tolist()
        ipl = cols["ip"][order].tolist()
        modl = cols["model"][order].tolist()
        inl = cols["inp"][order].tolist()
        outl = cols["out"][order].tolist()
        stl = cols["status"][order].tolist()
        latl = cols["lat"][order].tolist()
        cotl = cols["cot"][order].tolist()
        kil = key_idx.tolist()
        epoch_gw = [gs.ts_weights[2] >= 0.5 for gs in s.gateways]
        fields = [set(gs.fields) for gs in s.gateways]
        models = s.models
        ips = self.ips
        events: list[dict[str, Any]] = []
        for i in range(n):
            a = al[i]
            g = gl[i]
            f = fields[g]
            e: dict[str, Any] = {
                "event_id": ids[i],
                "ts": ts_out[i],
                "account_id": acc_ids[a],
                "ip": ips[ipl[i]],
                "model": models[modl[i]],
                "input_tokens": inl[i],
                "output_tokens": outl[i],
            }
            st = stl[i]
            if st != 200 or "status" in f:
                e["status"] = st
            if "latency_ms" in f:
                e["latency_ms"] = latl[i]
            if "prompt_fingerprint" in f:
                e["prompt_fingerprint"] = fp_hex[16 * i : 16 * i + 16]
            if "cot_score" in f:
                e["cot_score"] = cotl[i]
            if "payment_fingerprint" in f:
                pay = self.acc_payment[a]
                if pay is not None:
                    e["payment_fingerprint"] = pay
            if "account_created_at" in f:
                c = self.acc_created[a]
                if c >= 0:
                    e["account_created_at"] = c if epoch_gw[g] else created_z[a]
            if "org_id" in f:
                org = self.acc_org[a]
                if org is not None:
                    e["org_id"] = org
            if "api_key_id" in f:
                e["api_key_id"] = key_flat[kil[i]]
            if "user_agent" in f:
                e["user_agent"] = self.acc_ua[a]
            if "endpoint" in f:
                e["endpoint"] = self.acc_endpoint[a]
            events.append(e)
        return events

    @property
    def account_ids(self) -> list[str]:
        if not hasattr(self, "_acc_ids"):
            n = len(self.acc_group)
            style = self.spec.id_style
            if style == "user":
                nums = self.rng.choice(900_000_000, n, replace=False) + 100_000_000
                self._acc_ids = [f"user-{x}" for x in nums.tolist()]
            else:
                nums = self.rng.choice(1 << 48, n, replace=False)
                pre = "acct_" if style == "acct" else "cus_"
                self._acc_ids = [f"{pre}{x:012x}" for x in nums.tolist()]
        return self._acc_ids

    def _labels(self, cols: dict[str, Arr], order: Arr, ts: Arr, n: int) -> dict[str, Any]:
        s = self.spec
        acc = cols["acc"]
        nacc = len(self.acc_group)
        counts = np.bincount(acc, minlength=nacc) if n else np.zeros(nacc, np.int64)
        first = np.full(nacc, np.iinfo(np.int64).max)
        last = np.full(nacc, np.iinfo(np.int64).min)
        if n:
            np.minimum.at(first, acc, ts)
            np.maximum.at(last, acc, ts)
        ids = self.account_ids
        accounts: dict[str, dict[str, str]] = {}
        campaigns: dict[str, dict[str, Any]] = {}
        for a in np.argsort(np.asarray(ids, dtype=object), kind="stable").tolist():
            if counts[a] == 0:
                continue
            g = s.groups[self.acc_group[a]]
            accounts[ids[a]] = {
                "label": g.name if g.campaign else "benign",
                "archetype": g.archetype,
            }
        for gi, g in enumerate(s.groups):
            if not g.campaign:
                continue
            members = [a for a in range(nacc) if self.acc_group[a] == gi and counts[a] > 0]
            if not members:
                continue
            campaigns[g.name] = {
                "archetype": g.archetype,
                "start": int(min(first[a] for a in members)),
                "end": int(max(last[a] for a in members)),
                "accounts": sorted(ids[a] for a in members),
            }
        n_camp = sum(len(c["accounts"]) for c in campaigns.values())
        scenario = asdict(s)
        scenario.update(
            randomized=True,
            description=describe(s),
            events=n,
            active_accounts=len(accounts),
            realized_campaign_share=n_camp / max(1, len(accounts)),
        )
        return {"scenario": scenario, "accounts": accounts, "campaigns": campaigns}


def generate(spec: WorldSpec) -> SimulatedTraffic:
    """Events (arrival order: event-time order plus the world's late and duplicate deliveries)
    and labels in the format `simulator.traffic` writes."""
    return _Builder(spec).build()


def random_world(seed: int, scale: float = 1.0) -> SimulatedTraffic:
    """`generate(draw_world(seed, scale))`.

    Examples
    --------
    >>> t = random_world(5, scale=0.02)
    >>> t.labels["scenario"]["randomized"], t.labels["scenario"]["seed"]
    (True, 5)
    >>> sum(c["archetype"] == "blatant" for c in t.labels["campaigns"].values())
    1
    """
    return generate(draw_world(seed, scale))
