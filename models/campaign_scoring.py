"""Campaigns scored and enforced as entities, wherever the account summaries come from.

`CampaignScorer` takes one window's account summaries (`LinkInput`), links accounts into
campaigns (`models.campaigns.CampaignLinker`), scores each campaign as one customer, decides on it
with the same graduated policy as accounts and blocks, and imposes an enforced campaign's level on
every member, including accounts that join it later (the replacement-account problem).

Two ways to run it, one code path:

- **In process** (``distillguard score``, one `Detector` that sees every account): the detector
  passes its own account calibrator and account table, so members' levels and the reference are
  shared with the accounts' own decisions.
- **As a stage of its own** (the worker): accounts are spread over partitions, so each partition's
  detector emits its summaries (`encode`), the campaign stage merges the partitions' summaries of a
  window (`merge`, sorted by account id, so arrival order never changes a decision) and scores
  them with its own calibrator, fed the accounts' raw risk of reference windows, and its own table
  of members' levels.

Examples
--------
>>> import numpy as np
>>> from models.campaigns import AccountSummaries
>>> def part(ids, end_ms=60_000):
...     n = len(ids)
...     z = np.zeros(n, dtype=np.int64)
...     s = AccountSummaries(end_ms, ids, np.ones(n, dtype=np.int64), np.zeros((n, 6)),
...         np.zeros((n, 6)), np.zeros(n), z - 1, z, np.zeros(n + 1, dtype=np.int64),
...         z[:0], z[:0], np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint64), z[:0],
...         np.zeros(n, dtype=np.uint64))
...     return LinkInput(s, np.arange(n, dtype=np.float64), np.ones(n, dtype=np.bool_),
...                      np.zeros(8))
>>> merged = merge([part(["b", "d"]), part(["c", "a"])])
>>> merged.summaries.ids, merged.raw.tolist()
(['a', 'b', 'c', 'd'], [1.0, 0.0, 0.0, 1.0])
>>> decode(encode(merged)).summaries.ids == merged.summaries.ids
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.calibration import TailCalibrator
from models.campaigns import (
    CAMPAIGN_FEATURES,
    COORDINATION,
    PROMPT_SET,
    SYNCHRONIZED,
    AccountSummaries,
    CampaignLinker,
    CampaignWindows,
)
from models.config import DetectorConfig
from models.evidence import RATES, behaviours_for
from models.explain import Reason
from models.outputs import (
    DetectorOutput,
    EnforcementAction,
    LinkInput,
    ScoredWindows,
    enforcement_id,
    round4,
)
from models.policy import ACTIONS, Decision, decide, impose
from models.state import EntityTable

__all__ = ["CampaignScorer", "LinkInput", "LinkResult", "decode", "encode", "merge", "split"]

F64 = npt.NDArray[np.float64]
WIRE_VERSION = 1
_RAGGED = (
    ("block_start", ("blocks", "block_requests")),
    ("prompt_start", ("prompts", "prompt_ms")),
)


@dataclass(slots=True)
class LinkResult:
    """What scoring a window's campaigns produced; ``excluded`` are accounts that leave the
    account reference until ``excluded_until_ms`` (members of enforced campaigns)."""

    out: DetectorOutput = field(default_factory=DetectorOutput)
    excluded: list[str] = field(default_factory=list)
    excluded_until_ms: int = 0


def _take(s: AccountSummaries, order: npt.NDArray[np.intp]) -> dict[str, Any]:
    """Columns of ``s`` for the accounts in ``order`` (ragged columns follow their owners)."""
    cols: dict[str, Any] = {"end_ms": s.end_ms, "ids": [s.ids[i] for i in order.tolist()]}
    for f in ("requests", "hits", "trials", "novelty", "created_ms", "payment", "seconds"):
        cols[f] = getattr(s, f)[order]
    for start_name, names in _RAGGED:
        start = getattr(s, start_name)
        lengths = np.diff(start)[order]
        ends = np.cumsum(lengths)
        # positions of the owners' items, owner by owner: each owner's start, then +0, +1, ...
        idx = (
            np.repeat(start[order] - (ends - lengths), lengths) + np.arange(int(lengths.sum()))
        ).astype(np.intp)
        cols[start_name] = np.concatenate([[0], ends]).astype(np.int64)
        for n in names:
            cols[n] = getattr(s, n)[idx]
    return cols


def split(x: LinkInput, max_accounts: int) -> list[LinkInput]:
    """``x`` in parts of at most ``max_accounts`` accounts each (in its order), so that one
    partition's summaries of a busy window fit in messages a broker accepts; `merge` puts them
    back together (125,000 accounts of one window came to 24.7 MB in one message).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import fields
    >>> n = 5
    >>> cols = {f.name: np.zeros(n) for f in fields(AccountSummaries)}
    >>> cols.update(end_ms=60_000, ids=list("edcba"), blocks=np.arange(n),
    ...             block_requests=np.ones(n), block_start=np.arange(n + 1),
    ...             prompts=np.zeros(0), prompt_ms=np.zeros(0), prompt_start=np.zeros(n + 1, int))
    >>> x = LinkInput(AccountSummaries(**cols), np.arange(n) * 1.0, np.ones(n, bool), np.zeros(6))
    >>> parts = split(x, 2)
    >>> [p.summaries.ids for p in parts], [p.summaries.blocks.tolist() for p in parts]
    ([['e', 'd'], ['c', 'b'], ['a']], [[0, 1], [2, 3], [4]])
    >>> merge(parts).summaries.ids, merge(parts).raw.tolist()
    (['a', 'b', 'c', 'd', 'e'], [4.0, 3.0, 2.0, 1.0, 0.0])
    """
    n = len(x.summaries.ids)
    if n <= max_accounts:
        return [x]
    out = []
    for lo in range(0, n, max_accounts):
        rows = np.arange(lo, min(n, lo + max_accounts), dtype=np.intp)
        out.append(
            LinkInput(
                summaries=AccountSummaries(**_take(x.summaries, rows)),
                raw=x.raw[rows],
                reference=x.reference[rows],
                typical_share=x.typical_share,
            )
        )
    return out


def merge(parts: Sequence[LinkInput]) -> LinkInput:
    """One window's summaries from several partitions as one, accounts sorted by id.

    Sorting makes the result independent of which partition's summaries arrived first, so a
    worker with any number of partitions links the same accounts as one process does.
    """
    if not parts:
        raise ValueError("merge needs at least one part")
    s0 = parts[0].summaries
    ids = [a for p in parts for a in p.summaries.ids]
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.intp)

    def cat(name: str) -> Any:
        return np.concatenate([getattr(p.summaries, name) for p in parts])

    # Rebuild ragged starts over the concatenation: each part's starts shifted by the lengths of
    # the parts before it.
    ragged: dict[str, Any] = {}
    for start_name, names in _RAGGED:
        shifted, total = [], 0
        for p in parts:
            st = getattr(p.summaries, start_name)
            shifted.append(st[:-1] + total)
            total += int(st[-1])
        ragged[start_name] = np.concatenate([*shifted, [total]]).astype(np.int64)
        for n in names:
            ragged[n] = cat(n)
    whole = AccountSummaries(
        end_ms=s0.end_ms,
        ids=ids,
        requests=cat("requests"),
        hits=cat("hits"),
        trials=cat("trials"),
        novelty=cat("novelty"),
        created_ms=cat("created_ms"),
        payment=cat("payment"),
        block_start=ragged["block_start"],
        blocks=ragged["blocks"],
        block_requests=ragged["block_requests"],
        prompt_start=ragged["prompt_start"],
        prompts=ragged["prompts"],
        prompt_ms=ragged["prompt_ms"],
        seconds=cat("seconds"),
    )
    return LinkInput(
        summaries=AccountSummaries(**_take(whole, order)),
        raw=np.concatenate([p.raw for p in parts])[order],
        reference=np.concatenate([p.reference for p in parts])[order],
        typical_share=parts[0].typical_share,
    )


def encode(x: LinkInput, **meta: Any) -> bytes:
    """A versioned JSON message of ``x`` (plus ``meta``, e.g. the source partition)."""
    s = x.summaries
    body = {f.name: getattr(s, f.name) for f in fields(AccountSummaries)}
    body.update(raw=x.raw, reference=x.reference, typical_share=x.typical_share)
    return orjson.dumps(
        {"v": WIRE_VERSION, **meta, "summaries": body},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def decode(data: bytes) -> LinkInput:
    """The `LinkInput` of an `encode`d message (`ValueError` for another wire version)."""
    return decode_tagged(data)[0]


def decode_tagged(data: bytes) -> tuple[LinkInput, int | None]:
    """The `LinkInput` of an `encode`d message and its ``source`` (None if it was not given).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import fields
    >>> empty = {f.name: np.zeros(0) for f in fields(AccountSummaries)}
    >>> empty.update(end_ms=60_000, ids=[], block_start=np.zeros(1), prompt_start=np.zeros(1))
    >>> x = LinkInput(AccountSummaries(**empty), np.zeros(0), np.zeros(0, bool), np.zeros(6))
    >>> y, source = decode_tagged(encode(x, source=3))
    >>> source, y.summaries.end_ms
    (3, 60000)
    """
    return decode_message(orjson.loads(data))


def decode_message(msg: dict[str, Any]) -> tuple[LinkInput, int | None]:
    """`decode_tagged` of a message already parsed from JSON."""
    source = msg.get("source")
    return _decoded(msg), (int(source) if source is not None else None)


def _decoded(msg: dict[str, Any]) -> LinkInput:
    if msg.get("v") != WIRE_VERSION:
        raise ValueError(f"account summaries of wire version {msg.get('v')!r}, expected 1")
    b = msg["summaries"]
    n = len(b["ids"])

    def arr(name: str, dtype: Any) -> Any:
        return np.array(b[name], dtype=dtype)

    hits = arr("hits", np.float64).reshape(n, len(RATES))
    trials = arr("trials", np.float64).reshape(n, len(RATES))
    s = AccountSummaries(
        end_ms=int(b["end_ms"]),
        ids=list(b["ids"]),
        requests=arr("requests", np.int64),
        hits=hits,
        trials=trials,
        novelty=arr("novelty", np.float64),
        created_ms=arr("created_ms", np.int64),
        payment=arr("payment", np.int64),
        block_start=arr("block_start", np.int64),
        blocks=arr("blocks", np.int64),
        block_requests=arr("block_requests", np.int64),
        prompt_start=arr("prompt_start", np.int64),
        prompts=arr("prompts", np.uint64),
        prompt_ms=arr("prompt_ms", np.int64),
        seconds=arr("seconds", np.uint64),
    )
    return LinkInput(
        summaries=s,
        raw=arr("raw", np.float64),
        reference=arr("reference", np.bool_),
        typical_share=arr("typical_share", np.float64),
    )


class CampaignScorer:
    """Links, scores and enforces campaigns, one window at a time (see the module docstring).

    State: the linker (templates, hubs, campaign ids), the campaigns' own policy table, and, when
    it runs as a stage of its own, a calibrator and a table of members' levels.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.linker = CampaignLinker(config.campaigns, seed=config.seed)
        self.table = EntityTable(n_features=len(CAMPAIGN_FEATURES))
        self.calibrator = TailCalibrator(
            half_life_ms=config.calibration_half_life_ms, min_count=config.calibration_warmup
        )
        self.members = EntityTable(n_features=1)
        self._last_evict_ms = 0

    def update(
        self,
        x: LinkInput,
        version: str,
        calibrator: TailCalibrator | None = None,
        ready: bool | None = None,
        members: EntityTable | None = None,
    ) -> LinkResult:
        """Score one window's campaigns.

        ``calibrator`` and ``members``: the account calibrator and account table to share (in
        process); without them the scorer's own are used and its calibrator learns ``x``'s
        reference windows. ``ready``: whether enforcement may start (default: the calibrator's).
        """
        if calibrator is None:
            calibrator = self.calibrator
            calibrator.update(x.raw[x.reference], x.summaries.end_ms)
        if ready is None:
            ready = calibrator.ready
        account_table = self.members if members is None else members
        result = LinkResult()
        cw = self.linker.update(x.summaries)
        if len(cw):
            self._score(cw, x, version, calibrator, ready, account_table, result)
        now = x.summaries.end_ms
        if now - self._last_evict_ms >= 3_600_000:
            self._last_evict_ms = now
            self.table.evict_idle(now, self.config.retention_ms)
            self.members.evict_idle(now, self.config.retention_ms)
        return result

    def _score(
        self,
        cw: CampaignWindows,
        x: LinkInput,
        version: str,
        calibrator: TailCalibrator,
        ready: bool,
        account_table: EntityTable,
        result: LinkResult,
    ) -> None:
        """Score each campaign as one customer, enforce on it, and on accounts that join one.

        A campaign's raw risk is its pooled behaviour evidence plus its coordination (how many
        accounts act as one: 0 at 4 accounts and 1 more for each eightfold, without a cap, plus up
        to 0.5 for payment instruments shared across it) plus its members' mean novelty,
        calibrated against ordinary *account* windows: "taken as one
        customer, this campaign is riskier than all but a share p of ordinary customers".
        Campaigns are too few for a reference of their own to resolve a budget within the first
        hour of a deployment; accounts are plenty.
        """
        out = result.out
        out.campaigns.append(cw)
        cfg = self.config
        table = self.table
        raw = cw.raw
        score = calibrator.calibrate(raw) if ready else np.zeros(len(cw))
        rows = table.rows(cw.ids)
        big = np.array([len(m) for m in cw.members]) >= cfg.policy.min_campaign_members
        # Coordination alone is never acted on, nor are accounts for being new: a campaign needs
        # extraction behaviours of its own, worth at least half the evidence it must reach. A
        # sign-up burst sharing a class's exercises is linked by them, and its newness is all or
        # nearly all the evidence it has (a trace of students resending an exercise, or of asking
        # for reasoning: the outside worlds' cohorts of 40-209 new accounts at 0.04-0.09, flagged
        # as campaigns once the size counted past 32).
        acts = cw.beyond_newness >= 0.5 * cfg.campaigns.campaign_evidence
        eligible = big & (cw.evidence >= cfg.campaigns.campaign_evidence) & acts
        decisions = decide(
            table,
            rows,
            cw.ids,
            np.where(eligible, score, 0.0),
            cw.pooled_requests,
            cw.evidence,
            cw.end_ms,
            cfg.policy,
            3,
            enabled=ready,
            # No sustained runs (`models.policy`): a campaign's score is read against ordinary
            # *accounts'* windows, and a group near that line for a while is not what the
            # sustained budget promises about (a SaaS fleet on one card, its members ordinary).
        )
        values = cw.values()
        level = table.level[rows]
        # Loose members (see `_loose`), only for the campaigns acted on or under a level: most
        # campaigns of a window are neither, and their member sets can run to thousands.
        under = {d.position for d in decisions} | set(np.flatnonzero(level >= 1).tolist())
        loose = {i: self._loose(cw, i) for i in sorted(under)}
        for d in decisions:
            i = d.position
            # The accounts the action covers: a flag covers every member, a throttle or a
            # suspension only those that carry the campaign's level (loose members are flagged).
            covered = [
                a
                for a in cw.members[i]
                if d.level <= 1 or (a not in loose[i] and a not in cfg.policy.allowlist)
            ]
            out.actions.append(
                EnforcementAction(
                    enforcement_id=enforcement_id(
                        version, "campaign", cw.ids[i], d.action, cw.end_ms
                    ),
                    ts_ms=cw.end_ms,
                    entity_kind="campaign",
                    entity_id=cw.ids[i],
                    action=d.action,
                    score=round(float(score[i]), 6),
                    threshold=round(d.threshold, 6),
                    reasons=self._reasons(cw, i, float(raw[i]), x.typical_share),
                    window_start_ms=cw.end_ms - cfg.window_ms,
                    window_end_ms=cw.end_ms,
                    expires_ms=d.expires_ms,
                    members=sorted(covered)[: cfg.max_campaign_members],
                    detector_version=version,
                )
            )
        # Every member of an enforced campaign carries the campaign's level on its own account,
        # including accounts that join it later (a banned account's replacement): they are acted
        # on in the window they join, with the campaign in their reasons. Loose members (see
        # `_loose`) are flagged for a look, never throttled or suspended for it.
        for i in np.flatnonzero(level >= 1).tolist():
            for chosen in (True, False):
                members = [
                    a
                    for a in cw.members[i]
                    if a not in cfg.policy.allowlist and (a in loose[i]) != chosen
                ]
                if not members:
                    continue
                member_rows = account_table.rows(members)
                at = int(level[i]) if chosen else 1
                threshold = cfg.policy.thresholds[at]
                for d in impose(account_table, member_rows, at, cw.end_ms, cfg.policy, threshold):
                    out.actions.append(
                        self._member_action(cw, i, members[d.position], d, version, int(level[i]))
                    )
                if account_table is self.members:  # its own table: members stay while enforced
                    account_table.last_seen_ms[member_rows] = cw.end_ms
        # Members of an enforced campaign leave the reference, like an account showing extraction
        # would, whatever each member shows alone: once it is throttled, or once it is flagged and
        # hides who it is (disposable accounts, rotating addresses, cards shared across it,
        # requests in lockstep). A flagged team running one eval suite does none of that, and its
        # members stay part of what ordinary looks like. Loose members leave it too: kept in, a
        # hydra's accounts outside its core are what the campaign's own score is measured
        # against (world 4 of the randomized worlds: 97.9% of its accounts caught -> 81.4%).
        evading = cw.identity_evasion >= 0.5
        for i in np.flatnonzero(big & ((level >= 2) | ((level >= 1) & evading))).tolist():
            result.excluded.extend(cw.members[i])
        result.excluded_until_ms = cw.end_ms + cfg.reference_exclusion_ms
        table.windows[rows] += 1
        table.last_seen_ms[rows] = cw.end_ms
        table.last_score[rows] = score.astype(np.float32)
        out.scored.append(
            ScoredWindows(
                kind="campaign",
                start_ms=cw.end_ms - cfg.window_ms,
                end_ms=cw.end_ms,
                ids=cw.ids,
                requests=np.round(cw.pooled_requests).astype(np.int64),
                values=values,
                evidence=cw.evidence,
                novelty=cw.coordination,
                score=score,
                level=table.level[rows].copy(),
                drift=np.zeros(len(cw), dtype=np.bool_),
            )
        )

    def _has_core(self, cw: CampaignWindows, i: int) -> bool:
        core = len(cw.members[i]) - len(cw.circumstantial[i])
        return core >= self.config.policy.min_campaign_members

    def _loose(self, cw: CampaignWindows, i: int) -> set[str]:
        """Members of campaign ``i`` that carry at most a flag for it.

        When the campaign has a core of members linked by templates or cards big enough to
        enforce, the members outside it (linked only by the proxy blocks or the creation minutes
        they share with the core): an ordinary customer of the same proxy reseller can share both.
        When circumstance alone holds it together, there is no core to tell members from
        bystanders, and the loose ones are the members whose own requests are likelier from an
        ordinary customer than from the campaign (a hydra's accounts send what the hydra sends,
        its reseller's ordinary customers do not)."""
        if self._has_core(cw, i):
            return set(cw.circumstantial[i])
        return set(cw.unlike[i])

    def _why_loose(self, cw: CampaignWindows, i: int, account: str) -> str:
        circumstance = "linked to it only by shared IP blocks or creation times"
        if self._has_core(cw, i):
            return f"{circumstance}, so flagged"
        behaves = "its own requests look more like an ordinary customer's than the campaign's"
        if account in cw.circumstantial[i]:
            return f"{circumstance}, and {behaves}, so flagged"
        return f"{behaves}, so flagged"

    @staticmethod
    def _reasons(cw: CampaignWindows, i: int, raw: float, typical_share: F64) -> list[Reason]:
        reasons: list[Reason] = []

        def share_of(part: float) -> float:
            return round(part / raw, 4) if raw > 0 else 0.0

        for j, b in enumerate(behaviours_for("account")):
            part = float(cw.strength[i, j] * b.weight)
            if part <= 0:
                continue
            reasons.append(
                Reason(
                    feature=b.name,
                    value=round4(float(cw.share[i, j])) or 0.0,
                    baseline=round4(b.onset),
                    population_baseline=round4(float(typical_share[j])),
                    contribution=share_of(part),
                )
            )
        for j, b in enumerate(COORDINATION):
            part = float(b.strength(cw.coordination_share[i : i + 1, j])[0] * b.weight)
            if part <= 0:
                continue
            value = float(cw.coordination_share[i, j])
            reasons.append(
                Reason(
                    feature=b.name,
                    value=round(2**value if j == 0 else value, 4),
                    baseline=round(2**b.onset if j == 0 else b.onset, 4),
                    population_baseline=None,
                    contribution=share_of(part),
                )
            )
        if cw.novelty[i] > 0:
            reasons.append(
                Reason(
                    feature="member_novelty",
                    value=round(float(cw.novelty[i]), 4),
                    baseline=None,
                    population_baseline=None,
                    contribution=share_of(float(cw.novelty[i])),
                )
            )
        prompt_set = float(cw.prompt_set[i] * PROMPT_SET[0].weight)
        if prompt_set > 0:
            reasons.append(
                Reason(
                    feature=PROMPT_SET[0].name,
                    value=float(cw.templates[i]),
                    baseline=2 ** PROMPT_SET[0].onset,
                    population_baseline=None,
                    contribution=share_of(prompt_set),
                )
            )
        sync = float(SYNCHRONIZED.strength(cw.synchrony[i : i + 1])[0] * SYNCHRONIZED.weight)
        if sync > 0:
            reasons.append(
                Reason(
                    feature=SYNCHRONIZED.name,
                    value=round(float(cw.synchrony[i]), 4),
                    baseline=SYNCHRONIZED.onset,
                    population_baseline=None,
                    contribution=share_of(sync),
                )
            )
        reasons.sort(key=lambda x: -x["contribution"])
        for detail in cw.reasons(i):
            reasons.append(
                Reason(
                    feature="link",
                    value=0.0,
                    baseline=None,
                    population_baseline=None,
                    contribution=0.0,
                    detail=detail["detail"],
                )
            )
        return reasons

    def _member_action(
        self,
        cw: CampaignWindows,
        i: int,
        account: str,
        d: Decision,
        version: str,
        campaign_level: int,
    ) -> EnforcementAction:
        detail = (
            f"joined campaign {cw.ids[i]} ({len(cw.members[i])} accounts), "
            f"which is under {ACTIONS[campaign_level]}"
        )
        if d.level < campaign_level:
            detail += f"; {self._why_loose(cw, i, account)}"
        reason = Reason(
            feature="campaign_member",
            value=float(len(cw.members[i])),
            baseline=None,
            population_baseline=None,
            contribution=1.0,
            detail=detail,
        )
        return EnforcementAction(
            enforcement_id=enforcement_id(version, "account", account, d.action, cw.end_ms),
            ts_ms=cw.end_ms,
            entity_kind="account",
            entity_id=account,
            action=d.action,
            score=1.0,
            threshold=round(d.threshold, 6),
            reasons=[reason],
            window_start_ms=cw.end_ms - self.config.window_ms,
            window_end_ms=cw.end_ms,
            expires_ms=d.expires_ms,
            members=None,
            detector_version=version,
        )
