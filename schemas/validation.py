"""Untrusted bytes to a `UsageEvent` or a precise rejection: the one gate into the detector.

The rules are those of ``schemas/json/usage-event.schema.json`` (the contract published for
producers); ``tests/schemas`` checks that the two agree on every example. This is hand-written
rather than a generic JSON-Schema validator because it runs once per API request on the hot path
and must say exactly which field is wrong and why.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from models.events import UsageEvent, ip_block

__all__ = [
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "Rejection",
    "parse_enforcement",
    "parse_event",
    "parse_timestamp",
    "validate_event",
]

# 2000-01-01 .. 2100-01-01: anything outside is a unit mistake (seconds, microseconds), not a time.
EPOCH_MS_MIN = 946_684_800_000
EPOCH_MS_MAX = 4_102_444_800_000
TOKENS_MAX = 100_000_000
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")


class Rejection(NamedTuple):
    """Why a message was refused: the offending field (``$`` for the whole message) and the problem.

    Examples
    --------
    >>> str(Rejection("ts", "missing required field"))
    'ts: missing required field'
    """

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class _Invalid(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.rejection = Rejection(field, problem)


def parse_timestamp(value: object, field: str = "ts") -> int:
    """RFC 3339 with offset, or integer Unix epoch milliseconds, to epoch milliseconds.

    Examples
    --------
    >>> parse_timestamp("2026-11-22T14:41:27.123Z")
    1795358487123
    >>> parse_timestamp("2026-11-22T15:41:27.123+01:00")
    1795358487123
    >>> parse_timestamp(1795358487123)
    1795358487123
    """
    if isinstance(value, bool):
        raise _Invalid(field, "expected RFC 3339 string or integer epoch milliseconds, got boolean")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid(field, f"not an RFC 3339 timestamp: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise _Invalid(field, "RFC 3339 timestamp needs a UTC offset (Z or +hh:mm)")
        ms = round(parsed.timestamp() * 1000)
    else:
        raise _Invalid(
            field,
            f"expected RFC 3339 string or integer epoch milliseconds, got {type(value).__name__}",
        )
    if not EPOCH_MS_MIN <= ms < EPOCH_MS_MAX:
        raise _Invalid(field, f"out of range (years 2000-2099 in epoch milliseconds): {ms}")
    return ms


def _required_str(d: dict[str, Any], field: str, max_len: int) -> str:
    value = d.get(field)
    if value is None:
        raise _Invalid(field, "missing required field")
    if not isinstance(value, str):
        raise _Invalid(field, f"expected string, got {type(value).__name__}")
    if not 0 < len(value) <= max_len:
        raise _Invalid(field, f"length must be 1-{max_len}, got {len(value)}")
    return value


def _optional_str(d: dict[str, Any], field: str) -> str | None:
    value = d.get(field)
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(field, f"expected string, got {type(value).__name__}")


def _tokens(d: dict[str, Any], field: str) -> int:
    value = d.get(field)
    if value is None:
        raise _Invalid(field, "missing required field")
    if type(value) is not int:
        raise _Invalid(field, f"expected integer, got {type(value).__name__}")
    if not 0 <= value <= TOKENS_MAX:
        raise _Invalid(field, f"out of range 0-{TOKENS_MAX}: {value}")
    return value


def _number(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(field, f"expected number, got {type(value).__name__}")
    x = float(value)
    if math.isnan(x) or not low <= x <= high:
        raise _Invalid(field, f"out of range [{low:g}, {high:g}]: {value}")
    return x


def validate_event(d: object) -> UsageEvent | Rejection:
    """A decoded JSON value to a `UsageEvent`, or the first problem found.

    Examples
    --------
    >>> e = validate_event({"event_id": "r1", "ts": "2026-11-22T14:41:27Z", "account_id": "a",
    ...                     "ip": "2001:db8:1::7", "model": "m", "input_tokens": 10,
    ...                     "output_tokens": 400, "prompt_fingerprint": "00000000000000ff"})
    >>> e.ip_block, e.prompt_fingerprint, e.status
    ('2001:db8:1::/48', 255, 200)
    >>> validate_event({"event_id": "r1"})
    Rejection(field='ts', problem='missing required field')
    """
    if not isinstance(d, dict):
        return Rejection("$", f"expected a JSON object, got {type(d).__name__}")
    try:
        event_id = _required_str(d, "event_id", 256)
        raw_ts = d.get("ts")
        if raw_ts is None:
            raise _Invalid("ts", "missing required field")
        ts_ms = parse_timestamp(raw_ts)
        account_id = _required_str(d, "account_id", 128)
        ip = _required_str(d, "ip", 64)
        try:
            block = ip_block(ip)
        except ValueError:
            raise _Invalid("ip", f"not an IPv4 or IPv6 address: {ip[:64]!r}") from None
        model = _required_str(d, "model", 128)
        input_tokens = _tokens(d, "input_tokens")
        output_tokens = _tokens(d, "output_tokens")

        status = d.get("status")
        if status is None:
            status = 200
        elif type(status) is not int:
            raise _Invalid("status", f"expected integer, got {type(status).__name__}")
        elif not 100 <= status <= 599:
            raise _Invalid("status", f"out of range 100-599: {status}")

        latency = d.get("latency_ms")
        if latency is not None:
            latency = _number(latency, "latency_ms", 0.0, math.inf)

        fp_raw = d.get("prompt_fingerprint")
        fingerprint: int | None = None
        if fp_raw is not None:
            if not isinstance(fp_raw, str):
                raise _Invalid(
                    "prompt_fingerprint", f"expected string, got {type(fp_raw).__name__}"
                )
            if not _HEX16.fullmatch(fp_raw):
                raise _Invalid("prompt_fingerprint", "expected 16 hex characters")
            fingerprint = int(fp_raw, 16)

        cot = d.get("cot_score")
        if cot is not None:
            cot = _number(cot, "cot_score", 0.0, 1.0)

        created_raw = d.get("account_created_at")
        created = (
            None if created_raw is None else parse_timestamp(created_raw, "account_created_at")
        )

        return UsageEvent(
            event_id,
            ts_ms,
            account_id,
            ip,
            block,
            model,
            input_tokens,
            output_tokens,
            status,
            latency,
            fingerprint,
            cot,
            _optional_str(d, "payment_fingerprint"),
            created,
            _optional_str(d, "org_id"),
            _optional_str(d, "api_key_id"),
            _optional_str(d, "user_agent"),
            _optional_str(d, "endpoint"),
        )
    except _Invalid as bad:
        return bad.rejection


def parse_event(raw: bytes | str) -> UsageEvent | Rejection:
    """Message bytes (one JSON object) to a `UsageEvent`, or why not.

    Examples
    --------
    >>> parse_event(b'{"event_id": "r1", "ts": 1795358487123, "account_id": "a", "ip": "10.1.2.3",'
    ...             b' "model": "m", "input_tokens": 5, "output_tokens": 7}').ip_block
    '10.1.2.0/24'
    >>> print(parse_event(b'{"event_id": '))
    $: not valid JSON: unexpected end of data: line 1 column 14 (char 13)
    >>> parse_event(b'{"event_id": "r1", "ts": 17, "account_id": "a"}')
    Rejection(field='ts', problem='out of range (years 2000-2099 in epoch milliseconds): 17')
    """
    decoded = _decode_object(raw)
    return decoded if isinstance(decoded, Rejection) else validate_event(decoded)


def _decode_object(raw: bytes | str) -> dict[str, Any] | Rejection:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("$", f"not valid JSON: {exc}")
    if not isinstance(decoded, dict):
        return Rejection("$", f"expected a JSON object, got {type(decoded).__name__}")
    return decoded


_ENTITY_KINDS = frozenset({"account", "ip_block", "campaign"})
_ACTIONS = frozenset({"flag", "throttle", "suspend", "release"})
_ENFORCEMENT_ID = re.compile(r"[0-9a-f]{32}")


def parse_enforcement(raw: bytes | str) -> dict[str, Any] | Rejection:
    """An enforcement event (as a billing consumer receives it) to a dict, or why it is invalid.

    Examples
    --------
    >>> parse_enforcement(b'{"enforcement_id": "x"}')
    Rejection(field='enforcement_id', problem='expected 32 lowercase hex characters')
    """
    d = _decode_object(raw)
    if isinstance(d, Rejection):
        return d
    try:
        eid = d.get("enforcement_id")
        if not isinstance(eid, str) or not _ENFORCEMENT_ID.fullmatch(eid):
            raise _Invalid("enforcement_id", "expected 32 lowercase hex characters")
        for name in ("ts", "window_start", "window_end"):
            value = d.get(name)
            if not isinstance(value, str):
                raise _Invalid(name, "expected RFC 3339 string")
            parse_timestamp(value, name)
        if d.get("entity_kind") not in _ENTITY_KINDS:
            raise _Invalid("entity_kind", f"expected one of {sorted(_ENTITY_KINDS)}")
        _required_str(d, "entity_id", 256)
        if d.get("action") not in _ACTIONS:
            raise _Invalid("action", f"expected one of {sorted(_ACTIONS)}")
        for name in ("score", "threshold"):
            if name not in d:
                raise _Invalid(name, "missing required field")
            _number(d[name], name, 0.0, 1.0)
        reasons = d.get("reasons")
        if not isinstance(reasons, list):
            raise _Invalid("reasons", "expected a list")
        for i, r in enumerate(reasons):
            if not isinstance(r, dict) or not isinstance(r.get("feature"), str):
                raise _Invalid(f"reasons[{i}]", "expected an object with a feature name")
            _number(r.get("contribution"), f"reasons[{i}].contribution", 0.0, 1.0)
            _number(r.get("value"), f"reasons[{i}].value", -math.inf, math.inf)
        expires = d.get("expires_at", ...)
        if expires is ...:
            raise _Invalid("expires_at", "missing required field (null when not applicable)")
        if expires is not None:
            parse_timestamp(expires, "expires_at")
        members = d.get("members", ...)
        if members is ...:
            raise _Invalid("members", "missing required field (null when not applicable)")
        if members is not None and (
            not isinstance(members, list) or not all(isinstance(m, str) for m in members)
        ):
            raise _Invalid("members", "expected a list of account ids or null")
        _required_str(d, "detector_version", 128)
    except _Invalid as bad:
        return bad.rejection
    return d
