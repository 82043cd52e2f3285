"""Request parameters of the worker's API and the web view: one set of checks, one error type.

Examples
--------
>>> int_param({"minutes": "15"}, "minutes", 60, 1, 10080), int_param({}, "minutes", 60, 1, 10080)
(15, 60)
>>> int_param({"minutes": "abc"}, "minutes", 60, 1, 10080)
Traceback (most recent call last):
...
streams.params.BadRequest: minutes must be an integer in 1..10080, got 'abc'
>>> check_id("10.0.0.0/24", cidr=True, what="id")
'10.0.0.0/24'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

__all__ = ["MAX_ID_LENGTH", "BadRequest", "check_id", "check_params", "int_param"]

#: Longest entity id accepted (account ids and CIDR blocks are far shorter).
MAX_ID_LENGTH = 256


class BadRequest(ValueError):
    """A parameter a view or page cannot use: answered 400 with the message."""


def check_params(query: Mapping[str, str], allowed: set[str], noun: str = "view") -> None:
    """Refuse parameters a view does not know (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; this {noun} takes: {known}")


def int_param(
    query: Mapping[str, str],
    name: str,
    default: int,
    low: int,
    high: int,
    empty_is_default: bool = False,
) -> int:
    """Integer parameter ``name`` in ``low..high`` (``default`` when absent, or empty if
    ``empty_is_default``: what an HTML form sends for a blank field)."""
    raw = query.get(name)
    if raw is None or (empty_is_default and raw == ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"{name} must be an integer in {low}..{high}, got {raw[:40]!r}")
    return value


def check_id(raw: str, cidr: bool, what: str) -> str:
    """An entity id: bounded, printable, and a CIDR block when ``cidr``; ``what`` names it in the
    message."""
    if len(raw) > MAX_ID_LENGTH or not raw.isprintable():
        raise BadRequest(f"{what} must be at most {MAX_ID_LENGTH} printable characters")
    if cidr:
        try:
            ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise BadRequest(
                f"{what} must be a CIDR block such as 10.0.0.0/24, got {raw[:40]!r}"
            ) from None
    return raw
