"""Client address and scheme, believing ``X-Forwarded-*`` only from trusted proxies.

The client is the TCP peer, replaced by the right-most ``X-Forwarded-For``
entry that is not itself a trusted proxy, and only when the peer is trusted
(right-to-left parsing: entries to the left are written by the client and can
be forged). ``Forwarded`` (RFC 7239) is never read for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

from .memo import remember

__all__ = ["FORWARDING_HEADERS", "UNTRUSTED_PREFIXES", "client_address", "rate_key"]

# Headers through which a proxy tells the app about the client and the original
# request: removed from untrusted peers (frameworks read all of these:
# Werkzeug ProxyFix and Spring read -Prefix, Rack -Ssl and -Scheme).
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-ssl",
        b"x-forwarded-scheme",
        b"x-real-ip",
        b"x-client-cert",
        b"x-client-verify",
        b"x-client-dn",
    }
)
# Whole families only proxies may set: every X-Forwarded-* (-Uri, -Method,
# -Client-Cert for mTLS identity, ...) and the TLS client-certificate headers.
UNTRUSTED_PREFIXES = (b"x-forwarded-", b"x-ssl-client-", b"ssl-client-")


def client_address(
    peer: str | None, forwarded_for: tuple[str, ...], trusts: Callable[[str], bool]
) -> str | None:
    """The client address for rate limits and audit.

    >>> client_address("10.0.0.1", ("203.0.113.9, 10.0.0.2",), lambda a: a.startswith("10."))
    '203.0.113.9'
    >>> client_address("198.51.100.7", ("203.0.113.9",), lambda a: a.startswith("10."))
    '198.51.100.7'
    """
    if peer is None or not forwarded_for or not trusts(peer):
        return peer
    entries = [e.strip() for value in forwarded_for for e in value.split(",")]
    client = peer
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            break  # garbage from the client side: stop at the last trusted hop
        client = address
        if not trusts(address):
            break
    return client


def _address(text: str) -> str | None:
    """``text`` as a canonical IP address, or None; memoized (bounded), as the
    same clients and gateways come back request after request."""
    found = _ADDRESSES.get(text, _UNPARSED)
    if found is not _UNPARSED:
        return found
    try:
        address: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        address = None
    if len(text) <= _MEMO_TEXT:
        remember(_ADDRESSES, text, address)
    return address


_ADDRESSES: Final[dict[str, str | None]] = {}
_UNPARSED: Final = ""  # never a parsed address
_MEMO_TEXT: Final = 64


def rate_key(address: str) -> str:
    """The rate-limit key of an address: IPv6 clients are keyed by their /64,
    since one host usually holds the whole prefix."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
