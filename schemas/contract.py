"""The published contracts, defined once: the usage event producers write and the enforcement
event consumers read, as msgspec Structs.

Everything else derives from these two definitions:

- validation (`schemas.validation`) decodes message bytes straight into `UsageEventMessage` and
  `EnforcementMessage`: types, lengths, ranges and patterns are checked by msgspec's decoder in C;
- the JSON Schema files in ``schemas/json`` are rendered from them (`json_schema`;
  ``python -m schemas.contract`` writes them, a test checks the files are up to date);
- the precise messages of a rejection read their limits from them (`field_type`), so a limit
  changed here changes the check, the published schema and the message together.

Two rules no msgspec constraint states live beside the definitions and go into the schema as
annotations: an ``ip`` must parse as an IPv4 or IPv6 address (``format``), and integers are JSON
integers (``100``, not ``100.0``: msgspec refuses floats for ``int`` fields, JSON Schema's
``integer`` admits them, which the schema's ``$comment`` says).

Examples
--------
>>> import msgspec
>>> raw = (b'{"event_id": "r1", "ts": "2026-11-22T14:41:27Z", "account_id": "a",'
...        b' "ip": "10.0.0.1", "model": "m", "input_tokens": 5, "output_tokens": 7}')
>>> msgspec.json.decode(raw, type=UsageEventMessage).output_tokens
7
>>> json_schema(UsageEventMessage)["properties"]["account_id"]["maxLength"]
128
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Struct

__all__ = [
    "CONTRACTS",
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "TOKENS_MAX",
    "TS_PATTERN",
    "EnforcementMessage",
    "ReasonMessage",
    "UsageEventMessage",
    "field_type",
    "json_schema",
    "max_lengths",
    "plain",
]

# 2000-01-01 .. 2100-01-01: anything outside is a unit mistake (seconds, microseconds), not a time.
EPOCH_MS_MIN = 946_684_800_000
EPOCH_MS_MAX = 4_102_444_800_000
TOKENS_MAX = 100_000_000

# RFC 3339 date-time with an offset (section 5.6; "t"/"z" and the space of its note allowed), the
# year written as 2000-2099, days that exist (leap years included), no leap second, 1-9 fraction
# digits. Ends in (?!\n)$ so that engines whose $ also matches before a final newline (Python's re)
# agree with ECMA-262.
_DATE = (
    r"(?:20[0-9]{2}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)|20(?:[02468][048]|[13579][26])-02-29)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
TS_PATTERN = rf"^{_DATE}[Tt ]{_TIME}(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])(?!\n)$"
# What the detector writes: the same, in UTC with "T" and "Z" only.
UTC_PATTERN = rf"^{_DATE}T{_TIME}Z(?!\n)$"
HEX16_PATTERN = r"^[0-9a-fA-F]{16}(?!\n)$"
ENFORCEMENT_ID_PATTERN = r"^[0-9a-f]{32}(?!\n)$"
NO_ZONE_ID_PATTERN = r"^[^%]*$"

_TIMESTAMP_TEXT = (
    "RFC 3339 date-time with a UTC offset (2026-11-22T14:41:27.123Z, 2026-11-22T15:41:27+01:00;"
    " T, t or a space between date and time; seconds required; 1-9 fraction digits; no leap"
    " second :60) with the year written as 2000-2099, or integer Unix epoch milliseconds in the"
    " same years. Other ISO 8601 forms (week or ordinal dates, basic format such as"
    " 20261122T143000Z, offsets without a colon) are refused."
)
Timestamp = (
    Annotated[str, Meta(pattern=TS_PATTERN)]
    | Annotated[int, Meta(ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX - 1)]
)
Tokens = Annotated[int, Meta(ge=0, le=TOKENS_MAX)]
Utc = Annotated[str, Meta(pattern=UTC_PATTERN)]


# Strings: required ones are non-empty; lengths in characters (code points).
Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
Id256 = Annotated[str, Meta(min_length=1, max_length=256)]
Text128 = Annotated[str, Meta(max_length=128)] | None
Text256 = Annotated[str, Meta(max_length=256)] | None
Text1024 = Annotated[str, Meta(max_length=1024)] | None


class UsageEventMessage(Struct, kw_only=True):
    """One served API request, as the gateway writes it to the Kafka topic api-usage-events (one
    UTF-8 JSON object per message, key = account_id). Unknown extra fields are ignored."""

    event_id: Annotated[Id256, Meta(description="unique per API request; drops duplicates")]
    ts: Annotated[Timestamp, Meta(description="when the request was served. " + _TIMESTAMP_TEXT)]
    account_id: Annotated[Id128, Meta(description="the billed account")]
    ip: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=64,
            pattern=NO_ZONE_ID_PATTERN,
            description="client address as seen by the gateway, without an RFC 4007 zone id"
            " (fe80::1%eth0 is refused)",
            extra_json_schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        ),
    ]
    model: Annotated[Id128, Meta(description="model name requested")]
    input_tokens: Tokens
    output_tokens: Tokens
    status: Annotated[
        Annotated[int, Meta(ge=100, le=599)] | None,
        Meta(description="HTTP status of the response; absent or null means 200"),
    ] = None
    latency_ms: Annotated[float, Meta(ge=0)] | None = None
    org_id: Text128 = None
    api_key_id: Text128 = None
    user_agent: Text1024 = None
    endpoint: Text256 = None
    prompt_fingerprint: Annotated[
        Annotated[str, Meta(pattern=HEX16_PATTERN)] | None,
        Meta(
            description="64-bit SimHash of the normalized prompt, 16 hex digits; near-duplicate"
            " prompts differ in few bits"
        ),
    ] = None
    cot_score: Annotated[
        Annotated[float, Meta(ge=0, le=1)] | None,
        Meta(description="probability that the prompt asks for step-by-step reasoning"),
    ] = None
    payment_fingerprint: Annotated[Text128, Meta(description="hash of the payment instrument")] = (
        None
    )
    account_created_at: Annotated[
        Timestamp | None,
        Meta(description="when the account was created; the same forms as ts"),
    ] = None


class ReasonMessage(Struct, kw_only=True):
    """One reason of an enforcement decision: a feature, its value and what it contributed."""

    feature: str
    value: float
    baseline: Annotated[
        float | None,
        Meta(
            description="the entity's own baseline, or the population's while the entity has too"
            " little history"
        ),
    ]
    population_baseline: float | None = None
    contribution: Annotated[float, Meta(ge=0, le=1)]
    detail: Annotated[
        str | msgspec.UnsetType,
        Meta(
            description="the reason in words where it is not one number: what holds a campaign"
            " together, which campaign an account joined"
        ),
    ] = msgspec.UNSET


class EnforcementMessage(Struct, kw_only=True):
    """One enforcement decision on the Kafka topic enforcement-actions (key =
    <entity_kind>:<entity_id>). enforcement_id is deterministic for the same decision: consumers
    drop redeliveries by it."""

    enforcement_id: Annotated[str, Meta(pattern=ENFORCEMENT_ID_PATTERN)]
    ts: Annotated[Utc, Meta(description="event time of the decision")]
    entity_kind: Literal["account", "ip_block", "campaign"]
    entity_id: Id256
    action: Literal["flag", "throttle", "suspend", "release"]
    score: Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="calibrated score: 1 - estimated share of ordinary windows scoring as high",
        ),
    ]
    threshold: Annotated[float, Meta(ge=0, le=1)]
    reasons: list[ReasonMessage]
    window_start: Utc
    window_end: Utc
    expires_at: Annotated[
        Utc | None, Meta(description="when a throttle or suspension ends; null for the others")
    ]
    members: Annotated[
        list[str] | None,
        Meta(description="the accounts of a campaign or an IP block acted on; null for accounts"),
    ]
    detector_version: Id128


_COMMENTS = {
    UsageEventMessage: (
        "Generated from schemas/contract.py (python -m schemas.contract); edit that, not this file."
        " The validator decodes into the same definition, asserts the ipv4/ipv6 formats (which"
        " JSON Schema validators treat as annotations unless told to assert formats) and refuses"
        ' an integer written as 100.0 or 1e2, which JSON Schema\'s "integer" type admits.'
        " Patterns end in (?!\\n)$ so that engines whose $ also matches before a final newline"
        " (Python's re) agree with ECMA-262."
    ),
    EnforcementMessage: (
        "Generated from schemas/contract.py (python -m schemas.contract); edit that, not this file."
    ),
}
CONTRACTS: dict[str, tuple[type[Struct], str, str]] = {
    "usage-event.schema.json": (UsageEventMessage, "API usage event", "usage-event"),
    "enforcement-action.schema.json": (
        EnforcementMessage,
        "Enforcement event",
        "enforcement-action",
    ),
}
_BASE_ID = "https://distillguard.dev/schemas/"
# What an absent field means where it is not the Struct's None (the schema's "default").
_DEFAULTS: dict[type[Struct], dict[str, Any]] = {UsageEventMessage: {"status": 200}}


def json_schema(struct: type[Struct]) -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of a contract, rendered from its Struct.

    Examples
    --------
    >>> doc = json_schema(EnforcementMessage)
    >>> doc["required"][:3], doc["properties"]["action"]["enum"]
    (['enforcement_id', 'ts', 'entity_kind'], ['flag', 'release', 'suspend', 'throttle'])
    >>> doc["properties"]["reasons"]["items"]
    {'$ref': '#/$defs/ReasonMessage'}
    """
    name = next(n for n, (s, _, _) in CONTRACTS.items() if s is struct)
    _, title, slug = CONTRACTS[name]
    _, components = msgspec.json.schema_components([struct])
    body = dict(components.pop(struct.__name__))
    body.pop("title", None)
    description = " ".join((body.pop("description", "") or "").split())
    doc: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE_ID}{slug}.schema.json",
        "title": title,
        "description": description,
        "$comment": _COMMENTS[struct],
        **body,
    }
    for name, value in _DEFAULTS.get(struct, {}).items():
        doc["properties"][name]["default"] = value
    if components:
        doc["$defs"] = {
            k: {**v, "description": " ".join(v.get("description", "").split())}
            for k, v in components.items()
        }
    return doc


def render(struct: type[Struct]) -> bytes:
    """The schema file's bytes: the document, indented, with a final newline."""
    return orjson.dumps(json_schema(struct), option=orjson.OPT_INDENT_2) + b"\n"


@functools.cache
def _type_info(struct: type[Struct]) -> msgspec.inspect.Type:
    # Worked out once per Struct: msgspec builds it afresh on every call (~0.9 ms), and every
    # rejected message reads its limits from it.
    return msgspec.inspect.type_info(struct)


def field_type(struct: type[Struct], path: list[str | int]) -> msgspec.inspect.Type | None:
    """The declared type at a path of field names and list indices (None: no such field).

    What rejection messages read their limits from.

    Examples
    --------
    >>> field_type(UsageEventMessage, ["account_id"]).max_length
    128
    >>> field_type(EnforcementMessage, ["reasons", 0, "contribution"]).le
    1
    >>> field_type(UsageEventMessage, ["nope"]) is None
    True
    """
    t: msgspec.inspect.Type = _type_info(struct)
    for step in path:
        t = _strip(plain(t))
        if isinstance(step, int):
            if not isinstance(t, msgspec.inspect.ListType):
                return None
            t = t.item_type
            continue
        if not isinstance(t, msgspec.inspect.StructType):
            return None
        found = [f for f in t.fields if f.encode_name == step]
        if not found:
            return None
        t = found[0].type
    return plain(t)


def plain(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """A type without the descriptions wrapped around it (``Metadata``), also in a union's members.

    Examples
    --------
    >>> info = msgspec.inspect.type_info(UsageEventMessage)
    >>> type(info.fields[0].type).__name__, type(plain(info.fields[0].type)).__name__
    ('Metadata', 'StrType')
    """
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    if isinstance(t, msgspec.inspect.UnionType):
        return msgspec.inspect.UnionType(types=tuple(plain(u) for u in t.types))
    return t


def _strip(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """A Struct or list inside an optional (``X | None``), for walking a path."""
    if isinstance(t, msgspec.inspect.UnionType):
        inner = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        if len(inner) == 1:
            return inner[0]
    return t


def max_lengths(struct: type[Struct]) -> dict[str, int]:
    """The longest accepted value of each string field, in characters (code points).

    Examples
    --------
    >>> max_lengths(UsageEventMessage)["user_agent"]
    1024
    """
    out: dict[str, int] = {}
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        declared = plain(f.type)
        alts = declared.types if isinstance(declared, msgspec.inspect.UnionType) else (declared,)
        for t in alts:
            if isinstance(t, msgspec.inspect.StrType) and t.max_length is not None:
                out[f.encode_name] = t.max_length
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the schema files from the definitions above, or check that they are up to date."""
    parser = argparse.ArgumentParser(prog="python -m schemas.contract", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="only say whether files are stale")
    args = parser.parse_args(argv)
    folder = Path(__file__).parent / "json"
    stale = []
    for name, (struct, _, _) in CONTRACTS.items():
        path = folder / name
        text = render(struct)
        if path.exists() and path.read_bytes() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_bytes(text)
    verb = "stale" if args.check else "written"
    for name in stale:
        print(f"{verb}: schemas/json/{name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
