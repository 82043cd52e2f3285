"""Seeded, labelled API traffic in the input contract: benign archetypes and extraction campaigns.

Campaign behaviour follows what providers have published (see MISSION.md): hydra clusters of new
accounts behind proxy resellers mixed with ordinary proxy users, synchronized load-balanced
accounts sharing payment instruments, chain-of-thought elicitation, rubric grading, low-and-slow
rotation, a pivot to a newly released model, and a blatant single extractor. Benign traffic
includes the customers a detector must leave alone: evaluation harnesses, templated batch jobs,
coding agents, corporate and carrier NAT, brand-new accounts.

Labels never enter the events: an event carries only contract fields, and what makes a campaign
detectable is its behaviour, not a marker.
"""

from __future__ import annotations

import gzip
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

__all__ = [
    "ALL_CAMPAIGNS",
    "SCENARIOS",
    "Scenario",
    "SimulatedTraffic",
    "latest_start",
    "simulate",
    "traffic_lines",
    "write_labels",
    "write_traffic",
]

_MIN = 60_000
_DAY = 86_400_000
DIURNAL_AMPLITUDE = 0.6
MAIN_MODEL = "frontier-1"
SMALL_MODEL = "frontier-1-mini"
NEW_MODEL = "frontier-2"


ALL_CAMPAIGNS = (
    "hydra",
    "load_balanced",
    "cot_elicitation",
    "rubric_grading",
    "low_and_slow",
    "model_pivot",
    "blatant",
)


def latest_start(start_ms: int, minutes: float, now_ms: int) -> int:
    """``start_ms`` moved by whole days to the latest day on which ``minutes`` of traffic from it
    have ended by ``now_ms``: the same time of day, so the same traffic, only dated.

    Traffic fed to a live worker must be recent: the worker dead-letters events more than
    ``max_past_skew`` behind its clock (89 days by default) or ahead of it, and ClickHouse drops
    scores older than 90 days.

    Examples
    --------
    >>> day = 86_400_000
    >>> latest_start(0, 30, 5 * day + 29 * 60_000)  # at 00:29 the day's half hour has not ended
    345600000
    >>> latest_start(0, 30, 5 * day + 30 * 60_000) // day, latest_start(9 * day, 30, day) // day
    (5, 0)
    """
    return start_ms + (now_ms - start_ms - int(minutes * _MIN)) // _DAY * _DAY


@dataclass(frozen=True)
class Scenario:
    """Scale and mix of one simulated run.

    ``start_ms`` None (the default) dates the run to the latest UTC midnight from which it has
    ended by the time it is simulated (see `dated`), so whatever the day, a worker accepts it
    and ClickHouse keeps its scores; give a time to pin it.
    """

    seed: int = 7
    start_ms: int | None = None
    minutes: int = 60
    benign_accounts: int = 4_000
    campaign_start_minute: int = 20
    new_model_minute: int = 30
    campaigns: tuple[str, ...] = ALL_CAMPAIGNS
    intensity: float = 1.0
    bad_line_rate: float = 0.0

    def dated(self, now_ms: int | None = None) -> Scenario:
        """This scenario with ``start_ms`` set: as given, or else the latest UTC midnight from
        which its ``minutes`` have ended by ``now_ms`` (default: the clock).

        Examples
        --------
        >>> s = Scenario(minutes=30).dated(now_ms=1_795_393_800_000)  # 2026-11-23T00:30Z
        >>> s.start_ms, s.dated(now_ms=0).start_ms
        (1795392000000, 1795392000000)
        """
        if self.start_ms is not None:
            return self
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return replace(self, start_ms=latest_start(0, self.minutes, now))

    @property
    def start(self) -> int:
        """``start_ms``, which `dated` has set (a scenario not yet dated raises)."""
        if self.start_ms is None:
            raise ValueError("the scenario has no start yet: date it with Scenario.dated()")
        return self.start_ms


SCENARIOS: dict[str, Scenario] = {
    # every campaign archetype once, in ~1.1M events
    "default": Scenario(),
    # CI-sized: the same mix in half the time and a third of the customers
    "small": Scenario(
        minutes=30, benign_accounts=1_500, campaign_start_minute=12, new_model_minute=15
    ),
    # the streaming demo: every campaign, ~300k events, sized to run through Kafka in minutes
    "demo": Scenario(
        minutes=30, benign_accounts=2_500, campaign_start_minute=12, new_model_minute=15
    ),
    # no campaigns at all: every action is a false positive
    "quiet": Scenario(campaigns=()),
    # the proxy-reseller problem at three times the size
    "hydra-heavy": Scenario(campaigns=("hydra", "low_and_slow"), intensity=3.0),
    # only the campaigns built to stay under per-account thresholds
    "stealth": Scenario(campaigns=("low_and_slow", "rubric_grading", "model_pivot"), intensity=0.5),
}


@dataclass
class _Account:
    account_id: str
    archetype: str
    label: str  # "benign" or the campaign id
    rate_per_min: float
    created_ms: int
    payment: str
    ips: list[str]
    rotate: bool = False
    start_min: float = 0.0
    end_min: float | None = None
    models: tuple[tuple[str, float], ...] = ((MAIN_MODEL, 0.85), (SMALL_MODEL, 0.15))
    cot: tuple[float, float] = (1.0, 9.0)
    in_tokens: float = 300.0
    out_tokens: float = 400.0
    prompts: str = "diverse"  # diverse | template | benchmark
    templates: list[int] = field(default_factory=list)
    synchronized: bool = False
    error_rate: float = 0.01
    org: str | None = None
    diurnal: bool = False  # human-driven: busier in the local afternoon
    utc_offset_h: float = 0.0


@dataclass
class SimulatedTraffic:
    """Events (dicts in the input contract, event-time order) and their labels."""

    events: list[dict[str, Any]]
    labels: dict[str, Any]


class _Gen:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rng = np.random.default_rng(scenario.seed)
        self.accounts: list[_Account] = []
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.n = 0

    # -- addresses -------------------------------------------------------------------------
    def _v4_block(self) -> str:
        a = int(self.rng.integers(11, 223))
        return f"{a}.{int(self.rng.integers(0, 256))}.{int(self.rng.integers(0, 256))}"

    def _v4(self, block: str | None = None) -> str:
        return f"{block or self._v4_block()}.{int(self.rng.integers(1, 255))}"

    def _v6(self, prefix48: str) -> str:
        tail = ":".join(f"{int(x):x}" for x in self.rng.integers(0, 65536, size=5))
        return str(ipaddress.IPv6Address(f"{prefix48}:{tail}"))

    def _v6_prefix(self) -> str:
        w = self.rng.integers(0, 65536, size=2)
        return f"2001:db8:{int(w[0]):x}" if self.rng.random() < 0.5 else f"2a02:{int(w[1]):x}:1"

    def _created(self, lo_days: float, hi_days: float) -> int:
        age = self.rng.uniform(lo_days, hi_days) * _DAY
        return int(self.s.start - age)

    def _payment(self) -> str:
        return f"pm_{int(self.rng.integers(0, 2**48)):012x}"

    def _new_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:06d}-{int(self.rng.integers(0, 2**24)):06x}"

    def _templates(self, k: int) -> list[int]:
        return [int(x) for x in self.rng.integers(0, 2**63, size=k)]

    # -- benign ------------------------------------------------------------------------------
    def benign(self) -> None:
        n = self.s.benign_accounts
        mix = {
            "chat": 0.52,
            "coding_agent": 0.12,
            "batch_job": 0.06,
            "eval_harness": 0.03,
            "enterprise_nat": 0.12,
            "mobile_cgnat": 0.10,
            "new_account": 0.05,
        }
        corp_blocks = [self._v4_block() for _ in range(max(1, n // 150))]
        carrier_v6 = [self._v6_prefix() for _ in range(max(1, n // 300))]
        carrier_v4 = [self._v4_block() for _ in range(max(1, n // 300))]
        self.proxy_blocks = [self._v4_block() for _ in range(12)]
        for archetype, share in mix.items():
            for _ in range(max(1, round(n * share))):
                self.accounts.append(self._benign(archetype, corp_blocks, carrier_v6, carrier_v4))
        # Ordinary customers who happen to use the same commercial proxy service as the hydra.
        for _ in range(max(5, n // 50)):
            a = self._benign("chat", corp_blocks, carrier_v6, carrier_v4)
            a.archetype = "proxy_user"
            a.ips = [self._v4(self.proxy_blocks[int(self.rng.integers(0, 12))]) for _ in range(3)]
            self.accounts.append(a)

    def _benign(
        self, archetype: str, corp: list[str], carrier_v6: list[str], carrier_v4: list[str]
    ) -> _Account:
        r = self.rng
        acc = _Account(
            account_id=self._new_id("acct"),
            archetype=archetype,
            label="benign",
            rate_per_min=float(r.lognormal(np.log(1.0), 0.6)),
            created_ms=self._created(20, 900),
            payment=self._payment(),
            ips=[self._v4()],
            cot=(1.0, 8.0),
            diurnal=archetype not in ("batch_job", "eval_harness"),
            utc_offset_h=float(r.choice([-8.0, -5.0, 0.0, 1.0, 5.5, 8.0, 9.0])),
        )
        if archetype == "coding_agent":
            acc.rate_per_min = float(r.uniform(4, 12))
            acc.in_tokens, acc.out_tokens, acc.cot = 9000.0, 700.0, (2.0, 6.0)
            acc.ips = [self._v4(), self._v4()]
        elif archetype == "batch_job":
            acc.rate_per_min = float(r.uniform(15, 45))
            acc.prompts, acc.templates = "template", self._templates(2)
            acc.in_tokens, acc.out_tokens, acc.cot = 600.0, 250.0, (1.0, 12.0)
            acc.start_min = float(r.uniform(0, self.s.minutes * 0.5))
            acc.end_min = acc.start_min + float(r.uniform(20, 60))
            acc.synchronized = True
            acc.models = ((SMALL_MODEL, 1.0),)
        elif archetype == "eval_harness":
            # The hardest legitimate customer: heavy, repetitive, reasoning-heavy.
            acc.rate_per_min = float(r.uniform(25, 60))
            acc.prompts, acc.templates = "benchmark", self._templates(400)
            acc.in_tokens, acc.out_tokens, acc.cot = 500.0, 900.0, (6.0, 3.0)
            block = self._v4_block()
            acc.ips = [self._v4(block), self._v4(block)]
            acc.models = ((MAIN_MODEL, 0.5), (SMALL_MODEL, 0.3), (NEW_MODEL, 0.2))
        elif archetype == "enterprise_nat":
            block = corp[int(r.integers(0, len(corp)))]
            acc.ips = [f"{block}.1"]
            acc.org = f"org-{block.replace('.', '-')}"
        elif archetype == "mobile_cgnat":
            if r.random() < 0.6:
                prefix = carrier_v6[int(r.integers(0, len(carrier_v6)))]
                acc.ips = [self._v6(prefix) for _ in range(6)]
            else:
                block = carrier_v4[int(r.integers(0, len(carrier_v4)))]
                acc.ips = [self._v4(block) for _ in range(6)]
            acc.rotate = True
        elif archetype == "new_account":
            acc.created_ms = self._created(0, 3)
            acc.rate_per_min = float(r.uniform(0.3, 2.0))
        return acc

    # -- campaigns ---------------------------------------------------------------------------
    def campaign(self, kind: str, index: int) -> None:
        r = self.rng
        s = self.s
        cid = f"{kind}-{index}"
        scale = s.intensity
        start = float(s.campaign_start_minute + r.uniform(0, 10))
        members: list[_Account] = []

        def member(**kw: Any) -> _Account:
            acc = _Account(
                account_id=self._new_id("acct"),
                archetype=kind,
                label=cid,
                created_ms=self._created(0, 6),
                payment=self._payment(),
                start_min=start + float(r.uniform(0, 3)),
                **kw,
            )
            members.append(acc)
            return acc

        if kind == "hydra":
            templates = self._templates(6)
            for _ in range(round(150 * scale)):
                member(
                    rate_per_min=float(r.uniform(2, 6)),
                    ips=[self._v4(b) for b in self.proxy_blocks for _ in range(2)],
                    rotate=True,
                    cot=(9.0, 2.0),
                    in_tokens=250.0,
                    out_tokens=1800.0,
                    prompts="template",
                    templates=templates,
                )
        elif kind == "load_balanced":
            payments = [self._payment() for _ in range(3)]
            dc = self._v4_block()
            templates = self._templates(3)
            for i in range(round(40 * scale)):
                a = member(
                    rate_per_min=6.0,
                    ips=[self._v4(dc) for _ in range(4)],
                    rotate=True,
                    cot=(7.0, 3.0),
                    in_tokens=300.0,
                    out_tokens=1500.0,
                    prompts="template",
                    templates=templates,
                    synchronized=True,
                )
                a.payment = payments[i % 3]
                a.start_min = start
        elif kind == "cot_elicitation":
            for _ in range(round(20 * scale)):
                member(
                    rate_per_min=float(r.uniform(3, 6)),
                    ips=[self._v4() for _ in range(5)],
                    rotate=True,
                    cot=(30.0, 1.5),
                    in_tokens=200.0,
                    out_tokens=2500.0,
                )
        elif kind == "rubric_grading":
            templates = self._templates(2)
            for _ in range(round(15 * scale)):
                member(
                    rate_per_min=float(r.uniform(8, 14)),
                    ips=[self._v4() for _ in range(2)],
                    cot=(3.0, 5.0),
                    in_tokens=1800.0,
                    out_tokens=150.0,
                    prompts="template",
                    templates=templates,
                )
        elif kind == "low_and_slow":
            pool = [self._v4_block() for _ in range(200)]
            templates = self._templates(8)
            for _ in range(round(300 * scale)):
                member(
                    rate_per_min=float(r.uniform(0.4, 1.2)),
                    ips=[self._v4(pool[int(r.integers(0, 200))]) for _ in range(20)],
                    rotate=True,
                    cot=(8.0, 2.0),
                    in_tokens=250.0,
                    out_tokens=1600.0,
                    prompts="template",
                    templates=templates,
                )
        elif kind == "model_pivot":
            templates = self._templates(4)
            for _ in range(round(30 * scale)):
                a = member(
                    rate_per_min=float(r.uniform(3, 6)),
                    ips=[self._v4() for _ in range(3)],
                    rotate=True,
                    cot=(8.0, 2.0),
                    in_tokens=300.0,
                    out_tokens=1400.0,
                    prompts="template",
                    templates=templates,
                    models=((MAIN_MODEL, 1.0),),
                )
                a.created_ms = self._created(10, 40)
                # within hours of the release, but inside the simulated run
                latest = max(2.0, min(30.0, (s.minutes - s.new_model_minute) / 2))
                a.start_min = float(s.new_model_minute + r.uniform(1, latest))
                a.models = ((NEW_MODEL, 0.8), (MAIN_MODEL, 0.2))
        elif kind == "blatant":
            member(
                rate_per_min=200.0 * scale,
                ips=[self._v4()],
                cot=(9.0, 1.5),
                in_tokens=250.0,
                out_tokens=2000.0,
                prompts="template",
                templates=self._templates(10),
            )
        else:
            raise ValueError(f"unknown campaign archetype {kind!r}")
        self.accounts.extend(members)
        self.campaigns[cid] = {
            "archetype": kind,
            "start": s.start + int(min(m.start_min for m in members) * _MIN),
            "end": s.start + s.minutes * _MIN,
            "accounts": [m.account_id for m in members],
        }

    # -- events ------------------------------------------------------------------------------
    def events_of(self, acc: _Account) -> Iterator[dict[str, Any]]:
        r = self.rng
        s = self.s
        begin = acc.start_min
        end = float(s.minutes if acc.end_min is None else min(acc.end_min, s.minutes))
        if end <= begin:
            return
        boost = 1.0 + DIURNAL_AMPLITUDE if acc.diurnal else 1.0
        n = int(r.poisson(acc.rate_per_min * boost * (end - begin)))
        if n == 0:
            return
        if acc.synchronized:
            step = 1.0 / acc.rate_per_min
            grid = np.arange(begin, end, step)
            times = grid + r.normal(0, 0.002, size=grid.size)
            times = times[(times >= begin) & (times < end)]
            n = times.size
        else:
            times = np.sort(r.uniform(begin, end, size=n))
            if acc.diurnal:
                # Thinning: keep a request with probability proportional to the local hour's
                # activity, peaking at 15:00 local time (mean rate stays rate_per_min).
                hour = (s.start / 3_600_000 + times / 60 + acc.utc_offset_h) % 24
                activity = 1 + DIURNAL_AMPLITUDE * np.cos(2 * np.pi * (hour - 15) / 24)
                times = times[r.random(times.size) < activity / boost]
                n = times.size
                if n == 0:
                    return
        ts = (s.start + times * _MIN).astype(np.int64)
        names = [m for m, _ in acc.models]
        weights = np.array([w for _, w in acc.models])
        model_idx = r.choice(len(names), size=n, p=weights / weights.sum())
        if acc.label == "benign" and NEW_MODEL not in names:
            # Ordinary customers adopt a new release slowly.
            adopt = (times >= s.new_model_minute) & (r.random(n) < 0.05)
        else:
            adopt = np.zeros(n, dtype=np.bool_)
        cot = r.beta(acc.cot[0], acc.cot[1], size=n)
        tin = np.maximum(1, r.lognormal(np.log(acc.in_tokens), 0.5, size=n)).astype(np.int64)
        tout = np.maximum(1, r.lognormal(np.log(acc.out_tokens), 0.5, size=n)).astype(np.int64)
        status = np.where(r.random(n) < acc.error_rate, 429, 200)
        ip_idx = r.integers(0, len(acc.ips), size=n) if acc.rotate else np.zeros(n, np.int64)
        if acc.prompts == "diverse":
            fps = r.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
            fps ^= r.integers(0, 2, size=n).astype(np.uint64) << np.uint64(63)
        else:
            base = np.array(acc.templates, dtype=np.uint64)[r.integers(0, len(acc.templates), n)]
            if acc.prompts == "template":
                # Slots filled with different values: a few bits of the SimHash move.
                flips = r.integers(0, 64, size=(n, 3)).astype(np.uint64)
                on = r.random((n, 3)) < 0.7
                masks = np.bitwise_or.reduce(
                    np.where(on, np.uint64(1) << flips, np.uint64(0)), axis=1
                )
                base = base ^ masks
            fps = base
        for i in range(n):
            self.n += 1
            t = int(ts[i])
            e: dict[str, Any] = {
                "event_id": f"req-{s.seed}-{self.n:09d}",
                "ts": _iso(t) if self.n % 5 else t,
                "account_id": acc.account_id,
                "ip": acc.ips[int(ip_idx[i])],
                "model": NEW_MODEL if adopt[i] else names[int(model_idx[i])],
                "input_tokens": int(tin[i]),
                "output_tokens": int(tout[i]),
                "status": int(status[i]),
                "latency_ms": round(float(tout[i]) * 12.0 + 150.0, 1),
                "prompt_fingerprint": f"{int(fps[i]):016x}",
                "cot_score": round(float(cot[i]), 4),
                "payment_fingerprint": acc.payment,
                "account_created_at": _iso(acc.created_ms),
                "api_key_id": f"key-{acc.account_id[-6:]}",
                "endpoint": "/v1/messages",
            }
            if acc.org:
                e["org_id"] = acc.org
            yield e


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_BAD_LINES: tuple[bytes, ...] = (
    b'{"event_id": "bad-json", "ts": ',
    b'{"event_id": "no-account", "ts": "2026-11-23T00:10:00Z", "ip": "10.0.0.1", "model": "m",'
    b' "input_tokens": 1, "output_tokens": 1}',
    b'{"event_id": "bad-tokens", "ts": "2026-11-23T00:10:00Z", "account_id": "a", "ip": "10.0.0.1",'
    b' "model": "m", "input_tokens": -5, "output_tokens": 1}',
    b'{"event_id": "bad-ip", "ts": "2026-11-23T00:10:00Z", "account_id": "a", "ip": "999.1.1.1",'
    b' "model": "m", "input_tokens": 1, "output_tokens": 1}',
    b'["not", "an", "object"]',
    b'{"event_id": "bad-cot", "ts": 1795392600000, "account_id": "a", "ip": "10.0.0.1",'
    b' "model": "m", "input_tokens": 1, "output_tokens": 1, "cot_score": 7}',
)


def simulate(scenario: Scenario | None = None) -> SimulatedTraffic:
    """Generate a scenario's events (sorted by event time) and labels.

    Examples
    --------
    >>> t = simulate(Scenario(minutes=15, benign_accounts=20, campaign_start_minute=1,
    ...                       campaigns=("blatant",)))
    >>> sorted(t.labels["campaigns"])
    ['blatant-0']
    >>> {"event_id", "ts", "account_id", "ip", "model"} <= set(t.events[0])
    True
    """
    s = (scenario or Scenario()).dated()
    g = _Gen(s)
    g.benign()
    for i, kind in enumerate(s.campaigns):
        g.campaign(kind, i)
    events: list[dict[str, Any]] = []
    for acc in g.accounts:
        events.extend(g.events_of(acc))
    events.sort(key=lambda e: (_ts_of(e), e["event_id"]))
    # Only accounts that sent something are labelled: one that never made a request cannot be
    # caught, and counting it as missed would measure the simulator, not the detector.
    active = {e["account_id"] for e in events}
    campaigns = {}
    for cid, c in g.campaigns.items():
        members = [a for a in c["accounts"] if a in active]
        if members:
            campaigns[cid] = {**c, "accounts": members}
    labels = {
        "scenario": {k: v for k, v in s.__dict__.items()},
        "accounts": {
            a.account_id: {"label": a.label, "archetype": a.archetype}
            for a in g.accounts
            if a.account_id in active
        },
        "campaigns": campaigns,
    }
    return SimulatedTraffic(events=events, labels=labels)


def _ts_of(e: dict[str, Any]) -> int:
    ts = e["ts"]
    if isinstance(ts, int):
        return ts
    from datetime import datetime

    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def traffic_lines(
    traffic: SimulatedTraffic, bad_line_rate: float = 0.0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, message) pairs as a gateway would write them, with malformed lines mixed in.

    The key is the account id (the contract's message key); a malformed line's key is empty.
    """
    rng = np.random.default_rng(len(traffic.events))
    for e in traffic.events:
        if bad_line_rate and rng.random() < bad_line_rate:
            yield b"", _BAD_LINES[int(rng.integers(0, len(_BAD_LINES)))]
        yield e["account_id"].encode(), orjson.dumps(e)


def write_traffic(
    traffic: SimulatedTraffic, events_path: Path, labels_path: Path | None, bad_line_rate: float
) -> int:
    """Write events as JSONL (gzip if the name ends in .gz) and labels as JSON; returns lines."""
    opener: Any = gzip.open if events_path.suffix == ".gz" else open
    lines = 0
    with opener(events_path, "wb") as f:
        out: IO[bytes] = f
        for _, line in traffic_lines(traffic, bad_line_rate):
            out.write(line + b"\n")
            lines += 1
    if labels_path is not None:
        write_labels(traffic, labels_path)
    return lines


def write_labels(traffic: SimulatedTraffic, labels_path: Path) -> None:
    labels_path.write_bytes(orjson.dumps(traffic.labels, option=orjson.OPT_INDENT_2))
