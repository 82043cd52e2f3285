"""IP blocks: the quick path for IPv4 agrees with parsing the address."""

from __future__ import annotations

import ipaddress

from hypothesis import given
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
    events._BLOCK_CACHE.clear()
    want = _parsed(ip)
    try:
        got: str | None = ip_block(ip)
    except ValueError:
        got = None
    assert got == want or (want == "v6" and got is not None)
    assert (events._IPV4.fullmatch(ip) is not None) == (want not in (None, "v6"))
