"""Untrusted bytes to a `UsageEvent` or a precise rejection: the one gate into the detector.

The rules are the contract's, defined once in `schemas.contract` (msgspec Structs from which
``schemas/json/*.schema.json`` are rendered): a message is decoded straight into
`schemas.contract.UsageEventMessage`, types, lengths, ranges and patterns checked by msgspec's
decoder in C, then normalised into the detector's `UsageEvent` (epoch milliseconds, the IP block,
the fingerprint as an integer). ``tests/schemas`` checks that a generic JSON-Schema validator and
this gate accept exactly the same events: examples, events generated from the schema, and near
misses mutated from them.

A refused message says which field is wrong and why, in words: the limits in the message are read
from the same definition (`schemas.contract.field_type`), so they cannot drift from the check.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import re
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import orjson

from models.events import UsageEvent, ip_block
from schemas.contract import (
    ENFORCEMENT_ID_PATTERN,
    EPOCH_MS_MAX,
    EPOCH_MS_MIN,
    HEX16_PATTERN,
    NO_ZONE_ID_PATTERN,
    TOKENS_MAX,
    TS_PATTERN,
    UTC_PATTERN,
    EnforcementMessage,
    UsageEventMessage,
    field_type,
    max_lengths,
)

__all__ = [
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "MAX_LENGTH",
    "TOKENS_MAX",
    "Memo",
    "Rejection",
    "parse_enforcement",
    "parse_event",
    "parse_timestamp",
    "validate_event",
]

# Longest accepted value of each string field, in characters (code points, as JSON Schema's
# maxLength counts them): read from the contract.
MAX_LENGTH: dict[str, int] = max_lengths(UsageEventMessage)
_RFC3339 = re.compile(TS_PATTERN).search
# The same shape with every component free, to say which one is wrong once the above refused.
_RFC3339_PARTS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))?"
).fullmatch
_RFC3339_FORM = "YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm"
_EVENTS = msgspec.json.Decoder(UsageEventMessage)


@dataclasses.dataclass(slots=True)
class Memo:
    """What parsing one batch of messages has worked out, for that batch alone: each address's
    IP block, and each timestamp string's epoch milliseconds (``account_created_at`` repeats on
    every event of an account, and a gateway writes many events per millisecond; a dict hit
    costs a fraction of working either out). Pass one to `parse_event` for each batch and drop
    it with the batch: kept longer, its entries, made amid each batch's short-lived objects,
    would keep that memory from going back to the system once the batch is gone.

    >>> memo = Memo()
    >>> e = parse_event(b'{"event_id": "r1", "ts": "2026-11-22T14:41:27Z", "account_id": "a",'
    ...                 b' "ip": "10.1.2.3", "model": "m", "input_tokens": 5, "output_tokens": 7}',
    ...                 memo)
    >>> memo.blocks, memo.times
    ({'10.1.2.3': '10.1.2.0/24'}, {'2026-11-22T14:41:27Z': 1795358487000})
    """

    blocks: dict[str, str] = dataclasses.field(default_factory=dict)
    times: dict[str, int] = dataclasses.field(default_factory=dict)


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
        return _epoch_ms(value)
    if type(value) is int:
        if not EPOCH_MS_MIN <= value < EPOCH_MS_MAX:
            raise _Invalid(field, _range_problem(value, EPOCH_MS_MIN, EPOCH_MS_MAX - 1))
        return value
    raise _Invalid(
        field, f"expected RFC 3339 string or integer epoch milliseconds, got {_kind(value)}"
    )


def _epoch_ms(value: str, times: dict[str, int] | None = None) -> int:
    """Epoch milliseconds of a timestamp string the contract's pattern has accepted (``times``:
    a `Memo`'s)."""
    if times is not None:
        ms = times.get(value)
        if ms is not None:
            return ms
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # fromisoformat refuses RFC 3339's lowercase "t" and "z"
        parsed = datetime.fromisoformat(value.upper())
    ms = round(parsed.timestamp() * 1000)
    if times is not None:
        times[value] = ms
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


def _show(value: object) -> str:
    """A number for a message, however many digits it has (Python refuses to print an int of
    more than 4,300 digits).

    Examples
    --------
    >>> _show(17), _show(10**5000)
    ('17', 'an integer of about 5001 digits')
    """
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        return f"an integer of about {len(format(value, 'x')) * 1.2041:.0f} digits"
    return str(value)


def _kind(value: object) -> str:
    """A value's JSON type for a message; an integral float is named as such."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float) and value.is_integer():
        return f"float {value!r} (write integers without fraction or exponent)"
    if value is None:
        return "null"
    return {str: "str", int: "int", float: "float", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


# What a pattern of the contract means, for saying why a string does not match it.
_PATTERN_PROBLEMS: dict[str, Any] = {
    TS_PATTERN: _timestamp_problem,
    UTC_PATTERN: lambda v: (
        f"not an RFC 3339 UTC timestamp (YYYY-MM-DDThh:mm:ss[.fff]Z): {v[:40]!r}"
    ),
    HEX16_PATTERN: lambda v: "expected 16 hex characters",
    ENFORCEMENT_ID_PATTERN: lambda v: "expected 32 lowercase hex characters",
    NO_ZONE_ID_PATTERN: lambda v: (
        f"zone id not allowed (an address as seen by the gateway has none): {v[:70]!r}"
    ),
}
_RANGE_NAMES = {(EPOCH_MS_MIN, EPOCH_MS_MAX - 1): "years 2000-2099 in epoch milliseconds"}
_TYPE_NAMES = {
    msgspec.inspect.StrType: "string",
    msgspec.inspect.IntType: "integer",
    msgspec.inspect.FloatType: "number",
    msgspec.inspect.ListType: "list",
    msgspec.inspect.StructType: "object",
    msgspec.inspect.LiteralType: "string",
}


def _range_problem(
    value: float, low: float | None, high: float | None, integer: bool = True
) -> str:
    named = _RANGE_NAMES.get((low, high))  # type: ignore[arg-type]
    if named:
        return f"out of range ({named}): {_show(value)}"
    if integer:
        return f"out of range {low}-{high}: {_show(value)}"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"out of range [{lo}, {hi}]: {_show(value)}"


def _problem(declared: msgspec.inspect.Type, value: object, present: bool = True) -> str | None:
    """Why ``value`` does not fit the declared type, in words (None: it fits, as far as the
    constraints below can tell). ``present``: the field is there (a null is a value)."""
    alts = declared.types if isinstance(declared, msgspec.inspect.UnionType) else (declared,)
    nullable = any(isinstance(t, msgspec.inspect.NoneType) for t in alts)
    alts = tuple(t for t in alts if not isinstance(t, msgspec.inspect.NoneType))
    if not present:
        return "missing required field" + (" (null when not applicable)" if nullable else "")
    if value is None and nullable:
        return None

    def fits(t: msgspec.inspect.Type) -> bool:
        if isinstance(t, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
            return type(value) is str
        if isinstance(t, msgspec.inspect.IntType):
            return type(value) is int
        if isinstance(t, msgspec.inspect.FloatType):
            return type(value) in (int, float)
        if isinstance(t, msgspec.inspect.ListType):
            return type(value) is list
        return isinstance(t, msgspec.inspect.StructType) and type(value) is dict

    matching = [t for t in alts if fits(t)]
    if not matching:
        names = " or ".join(dict.fromkeys(_TYPE_NAMES.get(type(t), "value") for t in alts))
        if set(map(type, alts)) == {msgspec.inspect.StrType, msgspec.inspect.IntType}:
            names = "RFC 3339 string or integer epoch milliseconds"
        return f"expected {names}, got {_kind(value)}"
    t = matching[0]
    if isinstance(t, msgspec.inspect.LiteralType):
        return None if value in t.values else f"expected one of {sorted(map(str, t.values))}"
    if isinstance(t, msgspec.inspect.StrType):
        assert isinstance(value, str)
        if t.min_length and len(value) < t.min_length:
            return "must not be empty" if t.min_length == 1 else f"shorter than {t.min_length}"
        if t.max_length is not None and len(value) > t.max_length:
            return f"longer than {t.max_length} characters ({len(value)})"
        if t.pattern is not None and re.search(t.pattern, value) is None:
            explain = _PATTERN_PROBLEMS.get(t.pattern)
            return explain(value) if explain else f"does not match {t.pattern}"
        return None
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        assert isinstance(value, int | float)
        low, high = t.ge, t.le
        if (low is not None and value < low) or (high is not None and value > high):
            return _range_problem(value, low, high, isinstance(t, msgspec.inspect.IntType))
        if isinstance(t, msgspec.inspect.FloatType) and isinstance(value, int):
            try:
                float(value)
            except OverflowError:
                return f"out of range (beyond a 64-bit float): {_show(value)}"
        if isinstance(value, float) and math.isnan(value):
            return "not a number"
        return None
    if isinstance(t, msgspec.inspect.ListType):
        assert isinstance(value, list)
        for i, item in enumerate(value):
            if (p := _problem(t.item_type, item)) is not None:
                return f"item {i}: {p}"
    return None


_AT = re.compile(r" - at `\$(.*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _explain(
    struct: type[msgspec.Struct], doc: object, error: msgspec.ValidationError
) -> Rejection:
    """A msgspec validation error, said with the field and the reason in words."""
    text = str(error)
    at = _AT.search(text)
    where = at[1] if at else ""
    path: list[str | int] = [m[1] if m[1] is not None else int(m[2]) for m in _STEP.finditer(where)]
    missing = _MISSING.match(text)
    if missing:
        path.append(missing[1])
    name = _path_name(path) or "$"
    if not path:
        if not isinstance(doc, dict):
            return Rejection("$", f"expected a JSON object, got {_kind(doc)}")
        if "`key`" in text:
            return Rejection("$", "object keys must be strings")
        return Rejection("$", text)
    value: Any = doc
    present = True
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            value, present = None, False
            break
    declared = field_type(struct, path)
    problem = _problem(declared, value, present) if declared is not None else None
    return Rejection(name, problem or (text[: at.start()] if at else text))


def _path_name(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _event(m: UsageEventMessage, memo: Memo | None = None) -> UsageEvent:
    """A decoded, contract-valid message to the detector's event; raises `_Invalid` for the one
    rule the decoder cannot check (the address must parse)."""
    ip = m.ip
    times = None
    try:
        if memo is None:
            block = ip_block(ip)
        else:
            blocks, times = memo.blocks, memo.times
            block = blocks.get(ip) or blocks.setdefault(ip, ip_block(ip))
    except ValueError:
        raise _Invalid("ip", f"not an IPv4 or IPv6 address: {ip[:70]!r}") from None
    ts = m.ts
    created = m.account_created_at
    fingerprint = m.prompt_fingerprint
    return UsageEvent(
        m.event_id,
        ts if isinstance(ts, int) else _epoch_ms(ts, times),
        m.account_id,
        ip,
        block,
        m.model,
        m.input_tokens,
        m.output_tokens,
        200 if m.status is None else m.status,
        m.latency_ms,
        None if fingerprint is None else int(fingerprint, 16),
        m.cot_score,
        m.payment_fingerprint,
        created if created is None or isinstance(created, int) else _epoch_ms(created, times),
        m.org_id,
        m.api_key_id,
        m.user_agent,
        m.endpoint,
    )


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
        return Rejection("$", f"expected a JSON object, got {_kind(d)}")
    try:
        return _event(msgspec.convert(d, UsageEventMessage))
    except _Invalid as bad:
        return bad.rejection
    except msgspec.ValidationError as error:
        return _explain(UsageEventMessage, d, error)
    except RecursionError:
        return Rejection("$", "nested too deeply")


def parse_event(raw: bytes | str, memo: Memo | None = None) -> UsageEvent | Rejection:
    """Message bytes (one JSON object) to a `UsageEvent`, or why not. ``memo``: the batch's
    `Memo`, so that an address or a timestamp seen again in the batch is looked up, not worked
    out again.

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
    try:
        if type(raw) is bytes and not raw.isascii():
            raw.decode()  # all of it UTF-8, the fields the decoder skips unread included
        return _event(_EVENTS.decode(raw), memo)
    except _Invalid as bad:
        return bad.rejection
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        pass
    # The slow path, for messages refused or not decoded above: the decoder checks every copy
    # of a key JSON repeats, JSON Schema tools the last, which is what a decoded object keeps;
    # and it recurses where orjson has a depth limit.
    decoded = _decode_object(raw)
    return decoded if isinstance(decoded, Rejection) else validate_event(decoded)


def _decode_object(raw: bytes | str) -> dict[str, Any] | Rejection:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("$", _undecodable(raw, exc))
    if not isinstance(decoded, dict):
        return Rejection("$", f"expected a JSON object, got {_kind(decoded)}")
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
        msgspec.convert(d, EnforcementMessage)
    except msgspec.ValidationError as error:
        return _explain(EnforcementMessage, d, error)
    except RecursionError:
        return Rejection("$", "nested too deeply")
    return d
