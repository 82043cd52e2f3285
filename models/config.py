"""Every knob of the detector in one frozen dataclass, whose hash is the detector's version.

Kept apart from `models.detector` so that the parts the detector composes (the campaign scorer
among them) can take its configuration without importing the detector.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import orjson

from models.campaigns import CampaignConfig
from models.policy import PolicyConfig
from models.units import MINUTE_MS

__all__ = ["DETECTOR_NAME", "DetectorConfig"]

DETECTOR_NAME = "distillguard-0.1"


@dataclass(frozen=True)
class DetectorConfig:
    """Every knob of the detector; its hash is the ``detector_version`` on each action."""

    window_ms: int = MINUTE_MS
    allowed_lateness_ms: int = 10_000
    n_trees: int = 25
    height: int = 8
    forest_window: int = 500
    seed: int = 42
    calibration_warmup: int = 1_000
    calibration_half_life_ms: float = 30 * MINUTE_MS
    reference_max_evidence: float = 2.0
    outright_evidence: float = 0.5
    volume_doubling_evidence: float = 0.25
    reference_exclusion_ms: int = 60 * MINUTE_MS
    centre_half_life: float = 50_000.0
    baseline_alpha: float = 0.1
    own_baseline_windows: int = 5
    new_model_ms: int = 48 * 60 * MINUTE_MS
    model_grace_ms: int = 15 * MINUTE_MS
    member_score: float = 0.995
    max_members: int = 200
    max_campaign_members: int = 1000
    retention_ms: int = 7 * 24 * 60 * MINUTE_MS
    # The upstream classifier's operating point: a prompt whose cot_score reaches it counts as
    # asking for step-by-step reasoning. 0.5 is "more likely than not" for a calibrated
    # classifier; a deployment whose classifier is calibrated otherwise sets its own.
    reasoning_verdict: float = 0.5
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    campaigns: CampaignConfig = field(default_factory=CampaignConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.reasoning_verdict < 1.0:
            raise ValueError(
                f"reasoning verdict {self.reasoning_verdict!r} is not between 0 and 1: set "
                "DISTILLGUARD_REASONING_VERDICT to the cot_score your classifier means "
                "'asks for reasoning' at, e.g. 0.5"
            )

    @property
    def version(self) -> str:
        params = asdict(self)
        params["policy"]["allowlist"] = sorted(self.policy.allowlist)
        digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"{DETECTOR_NAME}+{digest[:10]}"
