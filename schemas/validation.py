"""Untrusted bytes to a `UsageEvent` or a precise rejection: the one gate into the detector.

The rules are those of ``schemas/json/usage-event.schema.json`` (the contract published for
producers), and ``tests/schemas`` checks that the two accept exactly the same events: examples,
events generated from the schema, and near misses mutated from them. One rule the schema cannot
state: an integer field takes only a JSON integer (``100``), not ``100.0`` or ``1e2``, which JSON
Schema's ``"type": "integer"`` admits; the schema says so in its ``$comment``.

This is hand-written rather than a generic JSON-Schema validator because it runs once per API
request on the hot path and must say exactly which field is wrong and why.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from models.events import UsageEvent, ip_block

__all__ = [
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "MAX_LENGTH",
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
_HEX16 = re.compile(r"[0-9a-fA-F]{16}").fullmatch

# Longest accepted value of each string field, in characters (code points, as JSON Schema's
# maxLength counts them); the schema's maxLength values are the same numbers.
MAX_LENGTH: dict[str, int] = {
    "event_id": 256,
    "account_id": 128,
    "ip": 64,
    "model": 128,
    "org_id": 128,
    "api_key_id": 128,
    "user_agent": 1024,
    "endpoint": 256,
    "payment_fingerprint": 128,
}
_MAX_EVENT_ID = MAX_LENGTH["event_id"]
_MAX_ACCOUNT_ID = MAX_LENGTH["account_id"]
_MAX_IP = MAX_LENGTH["ip"]
_MAX_MODEL = MAX_LENGTH["model"]
_MAX_ORG_ID = MAX_LENGTH["org_id"]
_MAX_API_KEY_ID = MAX_LENGTH["api_key_id"]
_MAX_USER_AGENT = MAX_LENGTH["user_agent"]
_MAX_ENDPOINT = MAX_LENGTH["endpoint"]
_MAX_PAYMENT_FINGERPRINT = MAX_LENGTH["payment_fingerprint"]

# RFC 3339 date-time with an offset (section 5.6; "t"/"z" and the space of its note allowed), year
# 2000-2099 as written, 1-9 fraction digits. Month, day (leap years included), hour, minute and
# second are range-checked by `datetime.fromisoformat` afterwards, the offset by this expression
# (fromisoformat takes "+00:75"). The schema's pattern spells all of it out; the tests check that
# the two accept the same strings.
_RFC3339 = re.compile(
    r"20[0-9]{2}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
# The same shape with every component free, to say which one is wrong once the above refused.
_RFC3339_PARTS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))?"
).fullmatch
_RFC3339_FORM = "YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm"
# account_created_at string -> epoch ms: it repeats on every event of an account and costs as much
# to parse as ts, a dict hit ~15 times less. Cleared when full rather than made LRU, like
# models.events' IP block cache.
_CREATED_MS: dict[str, int] = {}
_CREATED_MS_MAX = 1 << 16


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

    Strings must be RFC 3339 date-times (not other ISO 8601 forms: no week or ordinal dates, no
    basic format, seconds and the offset's colon required) with the year written as 2000-2099;
    integers must lie in the same years. Leap seconds are refused: Unix time has none.

    Examples
    --------
    >>> parse_timestamp("2026-11-22T14:41:27.123Z")
    1795358487123
    >>> parse_timestamp("2026-11-22T15:41:27.123+01:00")
    1795358487123
    >>> parse_timestamp(1795358487123)
    1795358487123
    """
    if type(value) is str:
        if _RFC3339(value) is None:
            raise _Invalid(field, _timestamp_problem(value))
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            try:  # fromisoformat refuses RFC 3339's lowercase "t" and "z"
                parsed = datetime.fromisoformat(value.upper())
            except ValueError:
                raise _Invalid(field, _timestamp_problem(value)) from None
        return round(parsed.timestamp() * 1000)
    if type(value) is int:
        if not EPOCH_MS_MIN <= value < EPOCH_MS_MAX:
            raise _Invalid(field, f"out of range (years 2000-2099 in epoch milliseconds): {value}")
        return value
    raise _Invalid(
        field, f"expected RFC 3339 string or integer epoch milliseconds, got {_kind(value)}"
    )


def _account_created_ms(value: object) -> int:
    ms = parse_timestamp(value, "account_created_at")
    if type(value) is str:
        if len(_CREATED_MS) >= _CREATED_MS_MAX:
            _CREATED_MS.clear()
        _CREATED_MS[value] = ms
    return ms


def _timestamp_problem(value: str) -> str:
    """Why `value` is not an accepted RFC 3339 timestamp (it has been refused already)."""
    m = _RFC3339_PARTS(value)
    if m is None:
        return f"not an RFC 3339 timestamp ({_RFC3339_FORM}): {value[:40]!r}"
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if m[7] is None:
        return "RFC 3339 timestamp needs a UTC offset (Z or +hh:mm)"
    if not 2000 <= year <= 2099:
        return f"year {year} out of range 2000-2099"
    if not 1 <= month <= 12:
        return f"month {month:02d} out of range 01-12"
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return f"day {day:02d} does not exist in {year}-{month:02d}"
    if hour > 23:
        return f"hour {hour:02d} out of range 00-23"
    if minute > 59:
        return f"minute {minute:02d} out of range 00-59"
    if second == 60:
        return "leap second (:60) not accepted: Unix time has none; send :59.999 instead"
    if second > 59:
        return f"second {second:02d} out of range 00-59"
    if m[8] is not None and (int(m[8]) > 23 or int(m[9]) > 59):
        return f"UTC offset {m[7]} out of range (-23:59 to +23:59)"
    return f"not an RFC 3339 timestamp ({_RFC3339_FORM}): {value[:40]!r}"


def _kind(value: object) -> str:
    """A value's JSON type for a message; an integral float is named as such."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float) and value.is_integer():
        return f"float {value!r} (write integers without fraction or exponent)"
    return type(value).__name__


def _required_str(d: dict[str, Any], field: str, max_len: int) -> str:
    value = d.get(field)
    if value is None:
        raise _Invalid(field, "missing required field")
    if type(value) is not str:
        raise _Invalid(field, f"expected string, got {type(value).__name__}")
    if not 0 < len(value) <= max_len:
        raise _Invalid(field, _length_problem(value, max_len))
    return value


def _optional_str(d: dict[str, Any], field: str, max_len: int) -> str | None:
    value = d.get(field)
    if value is None:
        return None
    if type(value) is not str:
        raise _Invalid(field, f"expected string, got {type(value).__name__}")
    if len(value) > max_len:
        raise _Invalid(field, _length_problem(value, max_len))
    return value


def _length_problem(value: str, max_len: int) -> str:
    if not value:
        return "must not be empty"
    return f"longer than {max_len} characters ({len(value)})"


def _tokens(d: dict[str, Any], field: str) -> int:
    value = d.get(field)
    if value is None:
        raise _Invalid(field, "missing required field")
    if type(value) is not int:
        raise _Invalid(field, f"expected integer, got {_kind(value)}")
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
    >>> ok = {"event_id": "r1", "ts": 1795358487123, "account_id": "a", "ip": "10.1.2.3",
    ...       "model": "m", "input_tokens": 5, "output_tokens": 7}
    >>> print(validate_event({**ok, "ts": "1999-12-31T23:59:59Z"}))
    ts: year 1999 out of range 2000-2099
    >>> print(validate_event({**ok, "ts": "2026-12-31T23:59:60Z"}))
    ts: leap second (:60) not accepted: Unix time has none; send :59.999 instead
    >>> print(validate_event({**ok, "input_tokens": 100.0}))
    input_tokens: expected integer, got float 100.0 (write integers without fraction or exponent)
    >>> print(validate_event({**ok, "ip": "fe80::1%eth0"}))
    ip: zone id not allowed (an address as seen by the gateway has none): 'fe80::1%eth0'
    >>> print(validate_event({**ok, "user_agent": "x" * 5000}))
    user_agent: longer than 1024 characters (5000)
    """
    if not isinstance(d, dict):
        return Rejection("$", f"expected a JSON object, got {type(d).__name__}")
    try:
        event_id = _required_str(d, "event_id", _MAX_EVENT_ID)
        raw_ts = d.get("ts")
        if raw_ts is None:
            raise _Invalid("ts", "missing required field")
        ts_ms = parse_timestamp(raw_ts)
        account_id = _required_str(d, "account_id", _MAX_ACCOUNT_ID)
        ip = _required_str(d, "ip", _MAX_IP)
        if "%" in ip:  # ipaddress takes RFC 4007 zone ids ("fe80::1%eth0"); the schema does not
            raise _Invalid(
                "ip", f"zone id not allowed (an address as seen by the gateway has none): {ip!r}"
            )
        try:
            block = ip_block(ip)
        except ValueError:
            raise _Invalid("ip", f"not an IPv4 or IPv6 address: {ip!r}") from None
        model = _required_str(d, "model", _MAX_MODEL)
        input_tokens = _tokens(d, "input_tokens")
        output_tokens = _tokens(d, "output_tokens")

        status = d.get("status")
        if status is None:
            status = 200
        elif type(status) is not int:
            raise _Invalid("status", f"expected integer, got {_kind(status)}")
        elif not 100 <= status <= 599:
            raise _Invalid("status", f"out of range 100-599: {status}")

        latency = d.get("latency_ms")
        if latency is not None:
            latency = _number(latency, "latency_ms", 0.0, math.inf)

        fp_raw = d.get("prompt_fingerprint")
        fingerprint: int | None = None
        if fp_raw is not None:
            if type(fp_raw) is not str:
                raise _Invalid(
                    "prompt_fingerprint", f"expected string, got {type(fp_raw).__name__}"
                )
            if _HEX16(fp_raw) is None:
                raise _Invalid("prompt_fingerprint", "expected 16 hex characters")
            fingerprint = int(fp_raw, 16)

        cot = d.get("cot_score")
        if cot is not None:
            cot = _number(cot, "cot_score", 0.0, 1.0)

        created_raw = d.get("account_created_at")
        created: int | None = None
        if created_raw is not None:
            if type(created_raw) is str:
                created = _CREATED_MS.get(created_raw)
            if created is None:
                created = _account_created_ms(created_raw)

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
            _optional_str(d, "payment_fingerprint", _MAX_PAYMENT_FINGERPRINT),
            created,
            _optional_str(d, "org_id", _MAX_ORG_ID),
            _optional_str(d, "api_key_id", _MAX_API_KEY_ID),
            _optional_str(d, "user_agent", _MAX_USER_AGENT),
            _optional_str(d, "endpoint", _MAX_ENDPOINT),
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
        return Rejection("$", _undecodable(raw, exc))
    if not isinstance(decoded, dict):
        return Rejection("$", f"expected a JSON object, got {type(decoded).__name__}")
    return decoded


def _undecodable(raw: bytes | str, exc: orjson.JSONDecodeError) -> str:
    r"""Why orjson refused a message: where it stops being UTF-8, else orjson's JSON error.

    Examples
    --------
    >>> print(parse_event(b'{"event_id": "r\xff1"}'))
    $: not valid UTF-8 (byte 0xff at offset 15)
    >>> print(parse_event('{"event_id": "r\ud8001"}'))
    $: not valid UTF-8 (lone surrogate U+D800 at offset 15)
    """
    message = str(exc)
    if "UTF-8" in message:  # orjson says "surrogates not allowed" for any bad byte
        if isinstance(raw, str):
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError as bad:
                return (
                    f"not valid UTF-8 (lone surrogate U+{ord(raw[bad.start]):04X}"
                    f" at offset {bad.start})"
                )
        else:
            data = bytes(raw)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"not valid UTF-8 (byte 0x{data[bad.start]:02x} at offset {bad.start})"
    return f"not valid JSON: {message}"


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
