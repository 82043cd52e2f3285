"""The wire contracts as faust Records, for the streaming agents (``streams/``).

The Records mirror ``schemas/json/*.schema.json`` field for field. They describe; they do not
validate: untrusted input goes through `schemas.validation` first, which says exactly what is
wrong with a bad message (faust would only raise on it).
"""

from __future__ import annotations

from typing import Any

import faust

__all__ = ["EnforcementActionRecord", "Reason", "UsageEventRecord"]


class UsageEventRecord(faust.Record, serializer="json"):
    """An API usage event as it travels on ``api-usage-events``."""

    event_id: str
    ts: Any  # RFC 3339 string or integer epoch milliseconds
    account_id: str
    ip: str
    model: str
    input_tokens: int
    output_tokens: int
    status: int | None = 200
    latency_ms: float | None = None
    org_id: str | None = None
    api_key_id: str | None = None
    user_agent: str | None = None
    endpoint: str | None = None
    prompt_fingerprint: str | None = None
    cot_score: float | None = None
    payment_fingerprint: str | None = None
    account_created_at: Any = None


class Reason(faust.Record, serializer="json"):
    feature: str
    value: float
    baseline: float | None
    contribution: float
    population_baseline: float | None = None


class EnforcementActionRecord(faust.Record, serializer="json"):
    """An enforcement event as it travels on ``enforcement-actions``."""

    enforcement_id: str
    ts: str
    entity_kind: str
    entity_id: str
    action: str
    score: float
    threshold: float
    reasons: list[Reason]
    window_start: str
    window_end: str
    expires_at: str | None
    members: list[str] | None
    detector_version: str
