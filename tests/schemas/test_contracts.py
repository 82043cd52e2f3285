"""The published JSON Schemas and the validator agree on every example."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest

from models.events import UsageEvent
from schemas.contract import CONTRACTS, EnforcementMessage, field_type, render
from schemas.contract import main as contract_main
from schemas.validation import Rejection, parse_enforcement, parse_event, validate_event


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("schemas.json").joinpath(name).read_text()
    return json.loads(text)


EVENT_SCHEMA = _schema("usage-event.schema.json")
ACTION_SCHEMA = _schema("enforcement-action.schema.json")
CHECKER = jsonschema.FormatChecker()

MINIMAL = {
    "event_id": "req-1",
    "ts": "2026-11-22T14:41:27.123Z",
    "account_id": "acct-42",
    "ip": "203.0.113.9",
    "model": "frontier-1",
    "input_tokens": 120,
    "output_tokens": 900,
}
EXAMPLES = [
    MINIMAL,
    {**MINIMAL, "ts": 1795358487123, "ip": "2001:db8:1:2::7"},
    {**MINIMAL, "ts": "2026-11-22T15:41:27+01:00", "status": 429, "latency_ms": 812.5},
    {
        **MINIMAL,
        "org_id": "org-1",
        "api_key_id": "key-1",
        "user_agent": "sdk/1.2",
        "endpoint": "/v1/messages",
        "prompt_fingerprint": "a3f09c11d2e4b5c6",
        "cot_score": 0.93,
        "payment_fingerprint": "pm_abc",
        "account_created_at": "2026-11-20T00:00:00Z",
        "some_future_field": {"ignored": True},
    },
    {**MINIMAL, "status": None, "cot_score": None, "prompt_fingerprint": None},
    {**MINIMAL, "account_created_at": 1795000000000, "cot_score": 0, "input_tokens": 0},
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_examples_pass_schema_and_validator(example: dict[str, Any]) -> None:
    jsonschema.validate(example, EVENT_SCHEMA, format_checker=CHECKER)
    event = parse_event(orjson.dumps(example))
    assert isinstance(event, UsageEvent), event
    assert event.account_id == example["account_id"]
    assert event.event_id == example["event_id"]
    assert event.input_tokens == example["input_tokens"]


BAD = [
    ({"event_id": None}, "event_id", "missing required field"),
    ({"event_id": 7}, "event_id", "expected string"),
    ({"ts": None}, "ts", "missing required field"),
    ({"ts": "yesterday"}, "ts", "not an RFC 3339 timestamp"),
    ({"ts": "2026-11-22T14:41:27"}, "ts", "needs a UTC offset"),
    ({"ts": 1795358487}, "ts", "out of range"),
    ({"ts": True}, "ts", "got boolean"),
    ({"ts": 1.5}, "ts", "got float"),
    ({"account_id": ""}, "account_id", "must not be empty"),
    ({"account_id": "x" * 129}, "account_id", "longer than 128 characters (129)"),
    ({"ip": "999.1.1.1"}, "ip", "not an IPv4 or IPv6 address"),
    ({"ip": 3232235777}, "ip", "expected string"),
    ({"model": None}, "model", "missing required field"),
    ({"input_tokens": -1}, "input_tokens", "out of range"),
    ({"input_tokens": "12"}, "input_tokens", "expected integer"),
    ({"output_tokens": 1.5}, "output_tokens", "expected integer"),
    ({"output_tokens": None}, "output_tokens", "missing required field"),
    ({"status": 99}, "status", "out of range"),
    ({"status": "200"}, "status", "expected integer"),
    ({"latency_ms": -3}, "latency_ms", "out of range"),
    ({"prompt_fingerprint": "abc"}, "prompt_fingerprint", "16 hex"),
    ({"prompt_fingerprint": "zzzzzzzzzzzzzzzz"}, "prompt_fingerprint", "16 hex"),
    ({"cot_score": 1.01}, "cot_score", "out of range"),
    ({"cot_score": "high"}, "cot_score", "expected number"),
    ({"payment_fingerprint": 5}, "payment_fingerprint", "expected string"),
    ({"account_created_at": "soon"}, "account_created_at", "not an RFC 3339"),
]


@pytest.mark.parametrize(("change", "field", "phrase"), BAD)
def test_each_bad_value_is_rejected_with_its_field_and_reason(
    change: dict[str, Any], field: str, phrase: str
) -> None:
    bad = {**MINIMAL, **change}
    bad = {k: v for k, v in bad.items() if not (v is None and k in MINIMAL)}
    result = validate_event(bad)
    assert isinstance(result, Rejection), result
    assert result.field == field
    assert phrase in result.problem
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, EVENT_SCHEMA, format_checker=CHECKER)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b"", "not valid JSON"),
        (b"{oops", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "not valid UTF-8 (byte 0xff at offset 0)"),
        (b'{"event_id": "caf\xc3"}', "not valid UTF-8 (byte 0xc3 at offset 17)"),
        (b"null", "expected a JSON object"),
    ],
)
def test_unparseable_messages_are_rejected_as_a_whole(raw: bytes, phrase: str) -> None:
    result = parse_event(raw)
    assert isinstance(result, Rejection)
    assert result.field == "$" and phrase in result.problem


def test_enforcement_events_from_the_detector_match_schema_and_validator(
    small_run: Any,
) -> None:
    actions = small_run.actions
    assert actions, "the small scenario must produce enforcement events"
    kinds = {a.action for a in actions}
    assert {"flag", "throttle"} <= kinds
    for action in actions[:300]:
        raw = action.to_json()
        doc = orjson.loads(raw)
        jsonschema.validate(doc, ACTION_SCHEMA, format_checker=CHECKER)
        assert parse_enforcement(raw) == doc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": "ban"}, "action"),
        ({"score": 2}, "score"),
        ({"members": "a"}, "members"),
        ({"entity_kind": "user"}, "entity_kind"),
        ({"ts": "noon"}, "ts"),
    ],
)
def test_bad_enforcement_events_are_rejected(
    small_run: Any, change: dict[str, Any], field: str
) -> None:
    doc = {**small_run.actions[0].to_dict(), **change}
    result = parse_enforcement(orjson.dumps(doc))
    assert isinstance(result, Rejection) and result.field == field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, ACTION_SCHEMA, format_checker=CHECKER)


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_each_schema_file_is_rendered_from_its_definition(name: str) -> None:
    struct = CONTRACTS[name][0]
    on_disk = resources.files("schemas.json").joinpath(name).read_bytes()
    assert on_disk == render(struct), f"stale: run `python -m schemas.contract` ({name})"
    assert contract_main(["--check"]) == 0


def test_a_limit_changed_in_the_definition_changes_check_schema_and_message() -> None:
    # The entity_id limit of enforcement events was in the validator only; now it is in the one
    # definition, so the schema states it, the decoder checks it and the message quotes it.
    doc = {**_detector_action_dict(), "entity_id": "x" * 257}
    limit = field_type(EnforcementMessage, ["entity_id"])
    assert limit is not None and getattr(limit, "max_length", None) == 256
    assert ACTION_SCHEMA["properties"]["entity_id"]["maxLength"] == 256
    result = parse_enforcement(orjson.dumps(doc))
    assert result == Rejection("entity_id", "longer than 256 characters (257)")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, ACTION_SCHEMA, format_checker=CHECKER)


def test_a_flood_of_rejected_events_works_out_the_contract_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A poisoned producer sends nothing but rejects: each one's message reads its limits from
    # the contract, whose type information msgspec builds afresh per call (~0.6 ms; the accounts
    # stage then read ~3,000 rejects a second against ~90,000 once it is kept).
    import msgspec

    calls = []
    real = msgspec.inspect.type_info
    monkeypatch.setattr(msgspec.inspect, "type_info", lambda t: calls.append(t) or real(t))
    bad = {**MINIMAL, "input_tokens": -5}
    for i in range(200):
        why = parse_event(orjson.dumps({**bad, "event_id": f"req-{i}"}))
        assert isinstance(why, Rejection) and why.field == "input_tokens"
    assert len(calls) <= 1


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        ({"reasons": [{"feature": "f", "value": 1.0, "baseline": None, "contribution": 2}]},
         "reasons[0].contribution", "out of range [0, 1]: 2"),
        ({"reasons": [{"feature": "f", "value": 1.0, "contribution": 0.5}]},
         "reasons[0].baseline", "missing required field"),
        ({"members": [1, 2]}, "members[0]", "expected string, got int"),
        ({"reasons": [{"feature": "campaign_member", "value": 9.0, "baseline": None,
                       "contribution": 1.0, "detail": None}]},
         "reasons[0].detail", "expected string, got null"),
        ({"members": "a"}, "members", "expected list, got str"),
        ({"ts": "2026-11-22T14:41:27.123+01:00"}, "ts", "not an RFC 3339"),
    ],
)  # fmt: skip
def test_nested_problems_of_an_enforcement_event_name_their_path(
    change: dict[str, Any], field: str, phrase: str
) -> None:
    doc = {**_detector_action_dict(), **change}
    result = parse_enforcement(orjson.dumps(doc))
    assert isinstance(result, Rejection), result
    assert result.field == field and phrase in result.problem, result
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, ACTION_SCHEMA, format_checker=CHECKER)


def test_a_reason_in_words_is_part_of_the_contract() -> None:
    doc = _detector_action_dict()
    doc["reasons"] = [
        {"feature": "campaign_member", "value": 149.0, "baseline": None,
         "population_baseline": None, "contribution": 1.0,
         "detail": "joined campaign campaign-1 (149 accounts), which is under suspend"},
    ]  # fmt: skip
    assert parse_enforcement(orjson.dumps(doc)) == doc
    jsonschema.validate(doc, ACTION_SCHEMA, format_checker=CHECKER)
    assert "detail" in ACTION_SCHEMA["$defs"]["ReasonMessage"]["properties"]


def _detector_action_dict() -> dict[str, Any]:
    return {
        "enforcement_id": "0" * 32,
        "ts": "2026-11-22T14:41:00.000Z",
        "entity_kind": "account",
        "entity_id": "acct-1",
        "action": "flag",
        "score": 0.9995,
        "threshold": 0.999,
        "reasons": [{"feature": "f", "value": 1.0, "baseline": 0.1, "contribution": 0.5}],
        "window_start": "2026-11-22T14:40:00.000Z",
        "window_end": "2026-11-22T14:41:00.000Z",
        "expires_at": None,
        "members": None,
        "detector_version": "distillguard-0.1+abc",
    }


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        ({"reasons": None}, "reasons", "expected list, got null"),
        ({"members": [None]}, "members[0]", "expected string, got null"),
        ({"expires_at": ...}, "expires_at", "missing required field (null when not applicable)"),
        ({"extra": orjson.loads(b"[" * 200 + b"]" * 200)}, "$", ""),
    ],
)
def test_present_nulls_and_absent_fields_are_told_apart(
    change: dict[str, Any], field: str, phrase: str
) -> None:
    doc = {**_detector_action_dict(), **change}
    doc = {k: v for k, v in doc.items() if v is not ...}
    result = parse_enforcement(orjson.dumps(doc))
    if field == "$":
        assert result == doc  # an unknown field, however nested, is ignored
        return
    assert isinstance(result, Rejection) and result.field == field, result
    assert phrase in result.problem, result
