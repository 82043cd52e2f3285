"""Graduated enforcement: calibrated scores to flag, throttle, suspend and release decisions.

Rules, per entity, evaluated once per scored window (vectorised over all entities of a window):

- **Budgets.** A window *strikes* when its calibrated score reaches the flag threshold. Flag,
  throttle and suspend thresholds are false-positive budgets (defaults: top 0.1%, 0.02%, 0.005%
  of ordinary windows).
- **Sustained, not occasional.** Strikes count *consecutive* striking windows of the entity (a
  window that does not strike starts the count again): a flag needs ``flag_strikes`` of them, a
  throttle ``throttle_strikes``, a suspension ``suspend_strikes`` and an existing throttle. The
  budget is spent on windows; consecutive strikes keep it from being spent on many accounts that
  each cross the line once in a while.
- **Sustained near the line.** A window that reaches the *sustained* threshold (budget
  ``sustained_budget``, five times the flag's by default; at or under the flag budget it adds
  nothing) counts towards a flag too: ``sustained_strikes`` consecutive such windows flag the
  entity, if each shows some extraction behaviour (the caller's ``sustained_evidence``: the
  detector asks it of accounts; IP blocks and campaigns need the flag threshold). Ordinary
  heavy customers outrank a steady extractor in some windows, so that it never crosses the
  flag threshold twice in a row; it stays in the top half percent minute after minute, which
  few ordinary customers who show extraction behaviour do (those who are merely unusual do it
  more often). A flag only asks for a look: throttles and suspensions keep their thresholds.
- **Minimum evidence.** Every level needs ``min_requests`` behind the evidence; a throttle also
  needs extraction behaviour worth ``throttle_evidence`` (`models.evidence`), a suspension
  ``suspend_evidence``: an unusual customer who shows none of the behaviours of extraction is
  flagged for a look at most. A throttle is started only in a window in which the entity
  itself sent ``min_requests``: a customer sending a request or two a minute is flagged at
  most, whatever its history shows (throttling it would protect nothing; accounts that spread
  a harvest that thin are enforced as their campaign). Once throttled, thin windows renew and
  escalate it like any other, as the throttle itself may be what keeps them thin.
- **Escalation only upward** while an episode lasts; a throttle or suspension that keeps
  striking is renewed (a new event with a later ``expires_at``) once half its time has passed.
- **Hysteresis.** Release needs ``release_windows`` consecutive windows below the release
  threshold (well under the flag threshold), and at least ``min_hold_ms`` at the level.
- **Expiry.** A level that is not renewed lapses at ``expires_at``; consumers see that time in
  the event and need no further message.
- **Cooldown.** After an episode ends, an entity is not flagged again for ``cooldown_ms``
  unless it reaches the throttle threshold.
- **Allowlist.** Allowlisted entities are scored and recorded but never enforced.

This module decides; `models.detector` builds the enforcement events with their reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from models.state import NO_TIME, EntityTable
from models.units import MINUTE_MS

__all__ = ["ACTIONS", "Decision", "PolicyConfig", "decide", "impose"]

ACTIONS = ("release", "flag", "throttle", "suspend")
_MOST = np.iinfo(np.int16).max  # the enforcement table's run counts are int16, capped here


def _run(counts: npt.NDArray[np.int16], going: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Consecutive windows: one more where ``going``, else 0; in int64, so the count can be
    capped before it is stored (int16 + 1 would wrap to -32768 first)."""
    out: npt.NDArray[np.int64] = np.where(going, counts.astype(np.int64) + 1, 0)
    return out


@dataclass(frozen=True)
class PolicyConfig:
    """Enforcement thresholds and timing. Budgets are shares of ordinary windows."""

    flag_budget: float = 1e-3
    sustained_budget: float = 5e-3
    throttle_budget: float = 2e-4
    suspend_budget: float = 5e-5
    release_budget: float = 2e-2
    min_requests: int = 3
    flag_strikes: int = 2
    sustained_strikes: int = 5
    throttle_strikes: int = 3
    suspend_strikes: int = 5
    throttle_evidence: float = 2.0
    suspend_evidence: float = 2.5
    min_campaign_members: int = 5
    release_windows: int = 10
    min_hold_ms: int = 10 * MINUTE_MS
    cooldown_ms: int = 60 * MINUTE_MS
    flag_ttl_ms: int = 6 * 60 * MINUTE_MS
    throttle_ttl_ms: int = 60 * MINUTE_MS
    suspend_ttl_ms: int = 24 * 60 * MINUTE_MS
    max_level_account: int = 3
    max_level_ip_block: int = 2
    allowlist: frozenset[str] = field(default_factory=frozenset)

    @property
    def thresholds(self) -> tuple[float, float, float, float]:
        """Calibrated-score thresholds for (release, flag, throttle, suspend)."""
        return (
            1.0 - self.release_budget,
            1.0 - self.flag_budget,
            1.0 - self.throttle_budget,
            1.0 - self.suspend_budget,
        )

    def __post_init__(self) -> None:
        # Over the release budget, a window could be both quiet and near the line: an entity
        # flagged and released over and over.
        if not 0.0 <= self.sustained_budget < self.release_budget:
            raise ValueError(
                f"sustained budget {self.sustained_budget!r} is not in [0, "
                f"{self.release_budget}): set DISTILLGUARD_SUSTAINED_BUDGET to a share of ordinary "
                "windows under the release budget, e.g. 0.005; 0 turns it off"
            )

    def ttl_ms(self, level: int) -> int:
        return (0, self.flag_ttl_ms, self.throttle_ttl_ms, self.suspend_ttl_ms)[level]


class Decision(NamedTuple):
    """One enforcement decision: ``position`` is the entity's place in the scored window batch;
    ``sustained``: a flag decided by a sustained run near the line, not by the flag threshold."""

    position: int
    action: str
    level: int
    threshold: float
    expires_ms: int | None
    sustained: bool = False


def decide(
    table: EntityTable,
    rows: npt.NDArray[np.intp],
    ids: list[str],
    score: npt.NDArray[np.float64],
    requests: npt.NDArray[np.float64],
    evidence: npt.NDArray[np.float64],
    now_ms: int,
    config: PolicyConfig,
    max_level: int,
    enabled: bool = True,
    outright: npt.NDArray[np.bool_] | None = None,
    window_requests: npt.NDArray[np.int64] | None = None,
    sustained_evidence: float | None = None,
    extraction: npt.NDArray[np.float64] | None = None,
) -> list[Decision]:
    """Update the enforcement state of ``rows`` for one window and return the decisions.

    ``outright`` marks windows that strike whatever their score (extraction behaviour that ordinary
    customers almost never show, harvesting at a volume far beyond them). They count as strikes
    like any striking window (so they can make up a throttle's or a suspension's run), but a
    throttle or a suspension is only decided in a window whose own score crosses its threshold,
    with the evidence it needs; they are never quiet windows. A throttled entity that keeps
    striking outright at a low score is neither renewed nor released: its level lapses at
    ``expires_ms``. ``window_requests`` (this window's own requests per entity; ``requests`` may
    be a decayed history) gates the start of a throttle on ``min_requests`` as well.
    ``sustained_evidence``: the behaviour evidence a window near the flag line needs to count
    towards a sustained run (`PolicyConfig.sustained_budget`); None: no such runs (IP blocks;
    campaigns, whose scores are read against ordinary accounts' windows). ``extraction``: the
    evidence a throttle or a suspension needs, where the caller reads it differently from the
    flag's (None: ``evidence``; `models.detector` leaves out an account's address rotation).

    Examples
    --------
    >>> import numpy as np
    >>> t = EntityTable(n_features=1)
    >>> rows = t.rows(["good", "bad"])
    >>> cfg = PolicyConfig()
    >>> for minute in range(1, 5):
    ...     out = decide(t, rows, ["good", "bad"], np.array([0.5, 0.99999]), np.array([50, 50]),
    ...                  np.array([0.0, 2.5]), minute * 60_000, cfg, max_level=3)
    ...     print(minute, [(d.position, d.action) for d in out])
    1 []
    2 [(1, 'flag')]
    3 [(1, 'throttle')]
    4 []

    The first striking window is not enough for a flag (``flag_strikes``); a throttle needs a
    third and behaviour evidence of 2.0 (``throttle_evidence``).
    """
    release_thr, flag_thr, throttle_thr, suspend_thr = config.thresholds
    level = table.level[rows].astype(np.int64)

    # Lapse what expired without renewal.
    lapsed = (level > 0) & (table.expires_ms[rows] <= now_ms)
    level[lapsed] = 0
    ended = rows[lapsed]
    table.changed_ms[ended] = table.expires_ms[ended]  # the episode ended when it lapsed
    table.level[ended] = 0
    table.strikes[ended] = 0
    table.near[ended] = 0

    striking = score >= flag_thr
    if outright is not None:
        striking = striking | outright
    strikes = _run(table.strikes[rows], striking)
    # A window that strikes outright is not quiet, whatever its score.
    quiet = _run(table.quiet[rows], (score < release_thr) & ~striking)
    strikes = np.where((level == 0) & (quiet >= config.release_windows), 0, strikes)
    table.strikes[rows] = np.minimum(strikes, _MOST)
    table.quiet[rows] = np.minimum(quiet, _MOST)

    enough = requests >= config.min_requests
    target = np.zeros(rows.size, dtype=np.int64)
    flagged = striking & enough & (strikes >= config.flag_strikes)
    target[flagged] = 1
    sustained_thr = 1.0 - config.sustained_budget
    if sustained_evidence is not None and config.sustained_budget > 0.0:
        # A run near the line: each of its windows near the line (a striking one too) *and*
        # showing some extraction behaviour.
        near = _run(table.near[rows], (score >= sustained_thr) & (evidence >= sustained_evidence))
        table.near[rows] = np.minimum(near, _MOST)
        target[enough & (near >= config.sustained_strikes)] = 1
    if window_requests is not None:
        # Gates the start of a throttle, not its renewal: a throttle that holds an account under
        # min_requests a minute must not lapse for working.
        enough = enough & ((window_requests >= config.min_requests) | (level >= 2))
    if extraction is None:
        extraction = evidence
    throttle = (score >= throttle_thr) & enough & (strikes >= config.throttle_strikes)
    target[throttle & (extraction >= config.throttle_evidence)] = 2
    suspend = (score >= suspend_thr) & enough & (strikes >= config.suspend_strikes)
    target[suspend & (level >= 2) & (extraction >= config.suspend_evidence)] = 3
    target = np.minimum(target, max_level)
    if not enabled or config.allowlist:
        allowed = np.fromiter((e in config.allowlist for e in ids), np.bool_, count=len(ids))
        target[allowed | (not enabled)] = 0

    since_change = now_ms - table.changed_ms[rows]
    in_cooldown = (level == 0) & (table.changed_ms[rows] != NO_TIME)
    in_cooldown &= since_change < config.cooldown_ms
    escalate = (target > level) & ~(in_cooldown & (target <= 1))
    renew = (target >= level) & (level >= 2) & ~escalate
    renew &= now_ms - table.renewed_ms[rows] >= config.ttl_ms(2) // 2
    release = (level >= 1) & (quiet >= config.release_windows)
    release &= since_change >= config.min_hold_ms

    decisions: list[Decision] = []
    thresholds = (release_thr, flag_thr, throttle_thr, suspend_thr)
    for i in np.flatnonzero(escalate | renew | release).tolist():
        r = rows[i]
        if escalate[i] or renew[i]:
            new = int(target[i]) if escalate[i] else int(level[i])
            # A flag the sustained run decided crossed the sustained threshold, not the flag's.
            by_run = new == 1 and not flagged[i]
            crossed = sustained_thr if by_run else thresholds[new]
            expires = now_ms + config.ttl_ms(new)
            table.level[r] = new
            table.expires_ms[r] = expires
            table.renewed_ms[r] = now_ms
            if escalate[i]:
                table.changed_ms[r] = now_ms
            decisions.append(Decision(i, ACTIONS[new], new, crossed, expires, by_run))
        else:
            was = int(level[i])
            table.level[r] = 0
            table.strikes[r] = 0
            table.near[r] = 0
            table.changed_ms[r] = now_ms
            table.expires_ms[r] = NO_TIME
            # A flag is informational: it ends quietly. Throttles and suspensions are lifted.
            if was >= 2:
                decisions.append(Decision(i, "release", 0, release_thr, None))
    return decisions


def impose(
    table: EntityTable,
    rows: npt.NDArray[np.intp],
    level: int,
    now_ms: int,
    config: PolicyConfig,
    threshold: float,
) -> list[Decision]:
    """Raise ``rows`` to ``level`` if they are below it (an account joining an enforced campaign).

    Positions in the returned decisions index ``rows``; the allowlist is honoured by the caller.

    Examples
    --------
    >>> t = EntityTable(n_features=1)
    >>> rows = t.rows(["old", "fresh"])
    >>> t.level[rows[0]], t.expires_ms[rows[0]] = 3, 10**13   # "old" is suspended already
    >>> [(d.position, d.action) for d in impose(t, rows, 2, 60_000, PolicyConfig(), 0.99)]
    [(1, 'throttle')]
    """
    out: list[Decision] = []
    current = table.level[rows].astype(np.int64)
    expired = table.expires_ms[rows] <= now_ms
    for i in np.flatnonzero((current < level) | ((current > 0) & expired)).tolist():
        r = rows[i]
        if current[i] >= level and not expired[i]:
            continue
        expires = now_ms + config.ttl_ms(level)
        table.level[r] = level
        table.expires_ms[r] = expires
        table.renewed_ms[r] = now_ms
        table.changed_ms[r] = now_ms
        out.append(Decision(i, ACTIONS[level], level, threshold, expires))
    return out
