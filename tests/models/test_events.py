"""IP blocks: the quick path for IPv4 agrees with parsing the address."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from models import events
from models.events import ip_block

# Octets as producers write them, and as they should not: leading zeros, out of range, signs,
# spaces, other digits.
_OCTETS = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(0, 999).map(lambda n: f"{n:03d}"),
    st.sampled_from(["", "256", "-1", "+1", " 1", "1 ", "１", "0x1", "1e2", "00"]),
)
_QUADS = st.lists(_OCTETS, min_size=3, max_size=5).map(".".join)


def _parsed(ip: str) -> str | None:
    """The block by parsing the address (what ip_block did for every address before)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        a, b, c, _ = addr.packed
        return f"{a}.{b}.{c}.0/24"
    return "v6"


@given(_QUADS)
def test_the_quick_ipv4_path_agrees_with_parsing(ip: str) -> None:
    want = _parsed(ip)
    try:
        got: str | None = ip_block(ip)
    except ValueError:
        got = None
    assert got == want or (want == "v6" and got is not None)
    assert (events._ipv4_block(ip) is not None) == (want not in (None, "v6"))


def _parsed_v6(ip: str, prefix: int) -> str | None:
    """The network as ipaddress gives it (what ip_block and subnet did for IPv6 before)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        a, b, c, _ = addr.packed
        return f"{a}.{b}.{c}.0/24"
    return str(ipaddress.IPv6Network((int(addr) >> (128 - prefix) << (128 - prefix), prefix)))


def _v6_text(n: int, form: int, octets: list[str]) -> str:
    addr = ipaddress.IPv6Address(n)
    quad = ".".join(octets)
    return [
        addr.compressed,
        addr.exploded,
        addr.compressed.upper(),
        f"::ffff:{quad}",
        f"{addr.exploded[:29]}{quad}",  # six groups, then an IPv4 address
        f"{addr.compressed}%eth0",
        addr.exploded.replace(":0", ":", 1),
    ][form]


_V6 = st.one_of(
    st.builds(
        _v6_text,
        st.one_of(
            st.integers(0, 2**128 - 1),
            st.integers(0, 2**64 - 1).map(lambda n: n << 64),  # a /64 with zero groups
            st.integers(0, 2**48 - 1).map(lambda n: n << 80),
            st.integers(0, 7).map(lambda n: n << (16 * 5)),
        ),
        st.integers(0, 6),
        st.lists(_OCTETS, min_size=4, max_size=4),
    ),
    st.text("0123456789abcdefABCDEF:.% ", max_size=45),
)


@settings(max_examples=500, deadline=None)
@given(_V6)
def test_ipv6_blocks_and_subnets_are_what_ipaddress_gives(ip: str) -> None:
    want = _parsed_v6(ip, 48)
    try:
        got: str | None = ip_block(ip)
    except ValueError:
        got = None
    assert got == want
    if want is not None:
        assert events.subnet(ip, "") == _parsed_v6(ip, 64)
