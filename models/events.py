"""The validated API usage event and the entity keys derived from it.

`UsageEvent` is what every detector component consumes; `schemas.validation` is the only producer
of it from untrusted bytes. It is a ``NamedTuple`` because the hot path creates one per request and
tuples are the cheapest record CPython has.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

__all__ = ["UsageEvent", "ip_block", "subnet"]


class UsageEvent(NamedTuple):
    """One served API request, normalised (times in Unix epoch milliseconds, UTC).

    Examples
    --------
    >>> e = UsageEvent("e1", 1_700_000_000_000, "acct-1", "203.0.113.9", "203.0.113.0/24",
    ...                "frontier-1", 120, 900)
    >>> e.ip_block, e.status, e.cot_score is None
    ('203.0.113.0/24', 200, True)
    """

    event_id: str
    ts_ms: int
    account_id: str
    ip: str
    ip_block: str
    model: str
    input_tokens: int
    output_tokens: int
    status: int = 200
    latency_ms: float | None = None
    prompt_fingerprint: int | None = None
    cot_score: float | None = None
    payment_fingerprint: str | None = None
    account_created_ms: int | None = None
    org_id: str | None = None
    api_key_id: str | None = None
    user_agent: str | None = None
    endpoint: str | None = None


_BLOCK_CACHE: dict[str, str] = {}
# Gateways see the same client addresses over and over; parsing an address costs ~2 us, a dict
# hit ~40 ns. The cache is cleared when full rather than made LRU: simpler, and refills in seconds.
# It holds the busy addresses of the last few seconds, not every address ever seen: at a million
# clients a cache of all of them cost ~150 bytes per client for the life of the worker.
_BLOCK_CACHE_MAX = 1 << 16
# More distinct addresses than that, seen round-robin, miss every time: an IPv4 address that
# ipaddress would accept (four decimal octets, 0-255, no leading zeros) is then cut to its /24
# with one regular expression (0.6 us) instead of being parsed (2.3 us).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}", re.ASCII)


def _remember(cache: dict[str, str], ip: str, value: str) -> str:
    """Keep ``value`` for ``ip`` in a parsed-address cache, emptied when full."""
    if len(cache) >= _BLOCK_CACHE_MAX:
        cache.clear()
    cache[ip] = value
    return value


def ip_block(ip: str) -> str:
    """The IP block an address belongs to: its /24 for IPv4, its /48 for IPv6, in CIDR form.

    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) count as their IPv4 address, because a
    dual-stack gateway may log the same client either way. Raises ``ValueError`` on anything
    that is not an IP address.

    Examples
    --------
    >>> ip_block("203.0.113.77")
    '203.0.113.0/24'
    >>> ip_block("2001:db8:1:2:3::9")
    '2001:db8:1::/48'
    >>> ip_block("::ffff:198.51.100.4")
    '198.51.100.0/24'
    >>> ip_block("not-an-ip")
    Traceback (most recent call last):
    ...
    ValueError: 'not-an-ip' does not appear to be an IPv4 or IPv6 address
    """
    block = _BLOCK_CACHE.get(ip)
    if block is not None:
        return block
    if _IPV4.fullmatch(ip):  # a dotted quad as ipaddress accepts it: 4x faster than parsing it
        return _remember(_BLOCK_CACHE, ip, ip[: ip.rindex(".")] + ".0/24")
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        a, b, c, _ = addr.packed
        block = f"{a}.{b}.{c}.0/24"
    else:
        block = str(ipaddress.IPv6Network((int(addr) >> 80 << 80, 48)))
    return _remember(_BLOCK_CACHE, ip, block)


_SUBNET_CACHE: dict[str, str] = {}


def subnet(ip: str, block: str) -> str:
    """The network an address sits in, for telling a client that moves from one that rotates.

    For IPv4 it is the block (/24). For IPv6 it is the /64, the one subnet a host's addresses come
    from: a phone or a laptop keeps its privacy address for hours and gets a new /64 only when it
    joins another network, while a proxy handing out a fresh address per request from a /48
    changes /64 nearly every time. ``block`` is ``ip_block(ip)``, passed in because the caller
    already has it (an IPv4 address then costs nothing).

    Examples
    --------
    >>> subnet("203.0.113.77", "203.0.113.0/24")
    '203.0.113.0/24'
    >>> subnet("2001:db8:1:2:3::9", ip_block("2001:db8:1:2:3::9"))
    '2001:db8:1:2::/64'
    >>> subnet("2001:db8:1:2:ffff::1", "2001:db8:1::/48") == subnet("2001:db8:1:2::5", "")
    True
    """
    if block and ":" not in block:
        return block
    net = _SUBNET_CACHE.get(ip)
    if net is not None:
        return net
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        net = str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    else:
        net = ip_block(ip)
    return _remember(_SUBNET_CACHE, ip, net)
