"""The compiled policy: what :func:`edgeauth.load_policy` returns.

Everything here is built once at load (patterns compiled, keys parsed,
authenticators constructed) so that deciding a request does no parsing of
configuration.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from .authn.base import Authenticator, CredentialSource
from .authz import Requirement
from .cors import CorsPolicy
from .headers import IdentityHeaders
from .model import Kind
from .rules import RuleSet

__all__ = ["ForwardAuthSettings", "Network", "Policy", "Rule", "ServerSettings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled ``[[rules]]`` entry."""

    id: str
    kind: Kind = Kind.API
    public: bool = False
    authenticators: tuple[Authenticator, ...] = ()
    require: Requirement = field(default_factory=Requirement)
    login_url: str | None = None
    cors: CorsPolicy | None = None
    max_body: int | None = None

    @property
    def sources(self) -> tuple[CredentialSource, ...]:
        """Every place this rule's authenticators read, in order, without repeats."""
        seen: dict[CredentialSource, None] = {}
        for a in self.authenticators:
            for s in a.sources:
                seen.setdefault(s, None)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: used by the front-ends, not by the decision itself."""

    listen: str = "127.0.0.1:8080"
    upstream: str | None = None
    upstream_host: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    public_origin: str | None = None
    workers: int = 1
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardAuthSettings:
    """``[forward_auth]``: the decision endpoint for gateways."""

    path: str = "/_edgeauth/auth"
    dialect: str = "nginx"
    trusted: tuple[Network, ...] = ()

    def trusts(self, address: str | None) -> bool:
        """Is ``address`` one of the gateways in ``trusted``?"""
        return _in_networks(address, self.trusted)


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """A loaded, validated, compiled policy."""

    source: str
    rules: RuleSet[Rule]
    identity: IdentityHeaders
    authenticators: Mapping[str, Authenticator]
    server: ServerSettings = field(default_factory=ServerSettings)
    default_allow: bool = False
    audit_allows: bool = False
    forward_auth: ForwardAuthSettings | None = None

    def trusts(self, address: str | None) -> bool:
        """Is ``address`` (a TCP peer) one of ``[server] trusted_proxies``?"""
        return _in_networks(address, self.server.trusted_proxies)

    async def aclose(self) -> None:
        """Release what the authenticators hold (JWKS HTTP sessions)."""
        for authenticator in self.authenticators.values():
            await authenticator.aclose()


def _in_networks(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
