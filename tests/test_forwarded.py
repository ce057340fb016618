"""Client address from trusted proxies only, and rate-limit keys."""

from __future__ import annotations

import pytest

from edgeauth.forwarded import client_address, rate_key


def trusted(address: str) -> bool:
    return address.startswith("10.") or address == "127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("127.0.0.1", ("203.0.113.9",), "203.0.113.9"),
        ("127.0.0.1", ("6.6.6.6, 203.0.113.9, 10.0.0.2",), "203.0.113.9"),
        ("127.0.0.1", ("6.6.6.6", "203.0.113.9"), "203.0.113.9"),
        ("127.0.0.1", ("garbage, 10.0.0.3",), "10.0.0.3"),
        ("127.0.0.1", ("10.0.0.4, 10.0.0.3",), "10.0.0.4"),
        ("198.51.100.1", ("203.0.113.9",), "198.51.100.1"),
        ("127.0.0.1", (), "127.0.0.1"),
        (None, ("1.2.3.4",), None),
    ],
)
def test_client_address(peer: str | None, xff: tuple[str, ...], expected: str | None) -> None:
    """The right-most untrusted X-Forwarded-For entry, only behind a trusted peer
    (asked twice: parsed addresses are remembered, answers never change)."""
    assert client_address(peer, xff, trusted) == expected
    assert client_address(peer, xff, trusted) == expected


def test_addresses_are_canonical_and_remembered_within_bounds() -> None:
    """IPv6 spellings collapse to one address; garbage stays garbage; a flood of
    distinct entries does not grow the memo without bound."""
    from edgeauth import forwarded

    assert client_address("127.0.0.1", ("2001:DB8:0:0::1",), trusted) == "2001:db8::1"
    assert client_address("127.0.0.1", ("2001:db8::1",), trusted) == "2001:db8::1"
    for i in range(10_000):
        client_address("127.0.0.1", (f"garbage-{i}, 203.0.113.{i % 250}",), trusted)
    assert len(forwarded._ADDRESSES) <= 4096
    assert client_address("127.0.0.1", ("garbage-1",), trusted) == "127.0.0.1"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_rate_key(address: str, key: str) -> None:
    """IPv6 clients are keyed by their /64; IPv4-mapped addresses by their IPv4."""
    assert rate_key(address) == key
