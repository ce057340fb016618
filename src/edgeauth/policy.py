"""The compiled policy: what :func:`edgeauth.load_policy` returns.

Everything here is built once at load (patterns compiled, keys parsed,
authenticators constructed, state stores chosen) so that deciding a request
does no parsing of configuration. Stores open no connection until first used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .audit import FileAuditSink
from .authn.base import Authenticator, CredentialSource
from .authz import Requirement
from .cors import CorsPolicy
from .errors import ConfigError, ConfigIssue
from .headers import IdentityHeaders
from .memo import remember
from .model import Kind
from .ratelimit import Limit, LimitStore, MemoryLimitStore, RedisLimitStore, Scope
from .revocation import FileRevocations, RedisRevocations, RevocationStore
from .rules import RuleSet
from .state import RedisConnector, StateSettings

__all__ = ["ForwardAuthSettings", "Network", "Policy", "Rule", "ServerSettings", "State"]

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
    limits: tuple[Limit, ...] = ()
    count_upstream_401: bool = False
    # Derived once here, read on every request.
    sources: tuple[CredentialSource, ...] = field(init=False)
    """Every place this rule's authenticators read, in order, without repeats."""
    attempts: tuple[tuple[Authenticator, CredentialSource], ...] = field(init=False)
    """Each authenticator with each place it reads, in the order they are tried."""
    requires: bool = field(init=False)
    """Whether ``require`` asks anything of the identity."""
    first_authenticator: Authenticator | None = field(init=False, repr=False)
    """The first authenticator: the one whose cached identities (``verified``)
    a settled decision asks; None without authenticators."""
    first_withheld: tuple[str, ...] = field(init=False, repr=False)
    """The place the first authenticator read, when it keeps the credential
    from the app (``forward_credential = false``): what an identity it
    verified there withholds; () otherwise."""
    settles: bool = field(init=False)
    """Whether an allowed request's decision can be settled from the route and
    at most one cached credential (see :meth:`edgeauth.pipeline.Engine.settled`):
    the rule reads no place or one, a cookie or the Bearer token, and has no
    CORS, rate limit or body limit. (Upstream-401 counting is the engine's to
    rule out: it watches every allowed request of such a policy.)"""
    _per_scope: dict[str, tuple[Limit, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        attempts = tuple((a, s) for a in self.authenticators for s in a.sources)
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "sources", tuple(dict.fromkeys(s for _, s in attempts)))
        object.__setattr__(self, "requires", not self.require.empty)
        first = attempts[0] if attempts else None
        object.__setattr__(self, "first_authenticator", None if first is None else first[0])
        withheld = () if first is None or first[0].forward_credential else (first[1].place,)
        object.__setattr__(self, "first_withheld", withheld)
        settles = (
            (not self.sources or (len(self.sources) == 1 and self.sources[0].kind != "header"))
            and self.cors is None
            and not self.limits
            and self.max_body is None
        )
        object.__setattr__(self, "settles", settles)
        per_scope: dict[str, tuple[Limit, ...]] = {}
        for limit in self.limits:
            per_scope[limit.scope] = (*per_scope.get(limit.scope, ()), limit)
        object.__setattr__(self, "_per_scope", per_scope)

    def limits_per(self, scope: Scope) -> tuple[Limit, ...]:
        """This rule's limits keyed by ``scope``."""
        return self._per_scope.get(scope, ())


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
class State:
    """Rate-limit counters and revocations: in this process (and a file), or in Redis."""

    settings: StateSettings = field(default_factory=StateSettings)
    limits: LimitStore = field(default_factory=MemoryLimitStore)
    revocations: RevocationStore = field(default_factory=lambda: FileRevocations(None))
    connector: RedisConnector | None = None

    @classmethod
    def build(cls, settings: StateSettings) -> State:
        """The stores ``settings`` ask for; nothing is opened yet."""
        if settings.redis is None:
            revocations = FileRevocations(
                settings.revocation_file, max_staleness=settings.revocation_max_staleness
            )
            return cls(settings, MemoryLimitStore(), revocations)
        connector = RedisConnector(settings.redis, timeout=settings.timeout)
        return cls(
            settings,
            RedisLimitStore(connector, settings.key_prefix),
            RedisRevocations(
                connector,
                prefix=settings.key_prefix,
                max_staleness=settings.revocation_max_staleness,
            ),
            connector,
        )

    @property
    def shared(self) -> bool:
        """Are counters shared between processes (Redis)?"""
        return self.connector is not None

    async def aclose(self) -> None:
        """Stop the revocation poller and close the Redis clients."""
        await self.revocations.aclose()
        await self.limits.aclose()
        if self.connector is not None:
            await self.connector.aclose()


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
    audit_sink: FileAuditSink | None = None
    """``[audit] file``: the events go there rather than to the logger."""
    forward_auth: ForwardAuthSettings | None = None
    state: State = field(default_factory=State)
    failed_auth: Limit | None = None
    upstream_401_rules: frozenset[str] = frozenset()
    counters: bool = False
    needs_host: bool = field(init=False)
    """Whether a rule is for some hosts only (the decision then reads Host):
    ``rules.needs_host``, kept here where the compiled build reads it natively."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs_host", self.rules.needs_host)

    def trusts(self, address: str | None) -> bool:
        """Is ``address`` (a TCP peer) one of ``[server] trusted_proxies``?"""
        return _in_networks(address, self.server.trusted_proxies)

    def check_workers(self, workers: int) -> None:
        """Refuse to run ``workers`` processes that would each keep their own counters.

        Raises :class:`~edgeauth.errors.ConfigError` when ``workers`` > 1, the
        policy has rate limits or ``[protection] failed_auth``, and no
        ``[state] redis_url`` shares them.

        >>> policy.check_workers(4)   # doctest: +SKIP
        """
        if workers > 1 and self.counters and not self.state.shared:
            raise ConfigError(self.source, [workers_issue(workers)])

    async def aclose(self) -> None:
        """Release what the policy holds: JWKS HTTP sessions, the revocation
        poller and Redis clients. Front-ends call it at shutdown."""
        for authenticator in self.authenticators.values():
            await authenticator.aclose()
        await self.state.aclose()
        if self.audit_sink is not None:
            self.audit_sink.close()


def workers_issue(workers: int) -> ConfigIssue:
    """The error for ``workers`` > 1 with counters kept in memory."""
    return ConfigIssue(
        "server.workers",
        f"{workers} workers would each keep their own rate-limit and failed-auth "
        "counters (the memory store); set [state] redis_url to share them, or run one worker",
    )


def _in_networks(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    # Peers repeat (gateways, keep-alive clients): answers are memoized, bounded,
    # by (address, networks object); the tuple is kept so its id stays its own.
    key = (address, id(networks))
    memo = _TRUST_MEMO.get(key)
    if memo is not None and memo[0] is networks:
        return memo[1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return remember(_TRUST_MEMO, key, (networks, any(ip in net for net in networks)))[1]


_TRUST_MEMO: Final[dict[tuple[str, int], tuple[tuple[Network, ...], bool]]] = {}
