"""The validated API usage event and the entity keys derived from it.

`UsageEvent` is what every detector component consumes; `schemas.validation` is the only producer
of it from untrusted bytes. It is a ``NamedTuple`` because the hot path creates one per request and
tuples are the cheapest record CPython has.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
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


# An IPv4 address as ipaddress accepts it (four decimal octets, 0-255, no leading zeros) is cut to
# its /24 by splitting it and looking its octets up, ~0.3 us; an IPv6 address is read by
# inet_pton and its prefix written as ipaddress writes it, ~1.8 us (through ipaddress: ~10 us);
# what either refuses (a scope id, say) is left to ipaddress. Nothing is cached here: a cache
# that outlives a batch holds entries made amid the batch's short-lived objects, which keep that
# memory from going back to the system once the batch is gone. A caller that sees the same
# addresses again within a batch keeps a dict for the batch (`schemas.validation.parse_event`,
# `models.columns.Chunk`).
_OCTETS = frozenset(str(i) for i in range(256))


def _ipv4_block(ip: str) -> str | None:
    """The /24 of a dotted quad as ``ipaddress`` accepts it, in CIDR form; None for anything else.

    >>> _ipv4_block("203.0.113.77"), _ipv4_block("203.0.113.077"), _ipv4_block("2001:db8::1")
    ('203.0.113.0/24', None, None)
    """
    p = ip.split(".")
    if len(p) == 4 and p[0] in _OCTETS and p[1] in _OCTETS and p[2] in _OCTETS and p[3] in _OCTETS:
        return f"{p[0]}.{p[1]}.{p[2]}.0/24"
    return None


_V4_MAPPED = bytes(10) + b"\xff\xff"


def _ipv6_prefix(ip: str, hextets: int) -> str | None:
    """The network of an IPv6 address's first ``hextets`` 16-bit groups, written as
    ``ipaddress`` writes it (lower-case hex, the trailing zeros as ``::``), or the /24 of an
    IPv4-mapped address; None where ``inet_pton`` refuses the text.

    >>> _ipv6_prefix("2001:DB8:0:7::1", 3), _ipv6_prefix("0:0:5::9", 3), _ipv6_prefix("::1", 4)
    ('2001:db8::/48', '0:0:5::/48', '::/64')
    >>> _ipv6_prefix("::ffff:198.51.100.4", 3), _ipv6_prefix("fe80::1%eth0", 3)
    ('198.51.100.0/24', None)
    """
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):
        return None
    if packed[:12] == _V4_MAPPED:
        return f"{packed[12]}.{packed[13]}.{packed[14]}.0/24"
    words = list(struct.unpack_from(f">{hextets}H", packed))
    while words and not words[-1]:
        words.pop()  # the zeros after them run longest, so they are what "::" stands for
    return ":".join(f"{w:x}" for w in words) + f"::/{16 * hextets}"


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
    block = _ipv4_block(ip) or _ipv6_prefix(ip, 3)
    if block is not None:
        return block
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        a, b, c, _ = addr.packed
        block = f"{a}.{b}.{c}.0/24"
    else:
        block = str(ipaddress.IPv6Network((int(addr) >> 80 << 80, 48)))
    return block


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
    net = _ipv6_prefix(ip, 4)
    if net is not None:
        return net
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        net = str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    else:
        net = ip_block(ip)
    return net
