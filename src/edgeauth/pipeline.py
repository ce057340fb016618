"""The decision engine: the only orchestrator. ``evaluate(view) -> Outcome``.

::

    canonical path -> match rule -> CORS preflight? -> rate limit per ip -> body size
        -> failed-auth lockout (requests with credentials, count_upstream_401 rules)
        -> authenticate (the rule's authenticators, in order) -> revocation
        -> CSRF check for cookie credentials -> authorize
        -> rate limit per subject / api_key -> identity headers

edgeauth's own 401s for a presented credential (``invalid_token``,
``revoked``), and the app's 401s on ``count_upstream_401`` rules (reported
through :meth:`Engine.upstream_response`), count toward the failed-auth
lockout. A client without a credential has not failed to authenticate, so a
``missing_credentials`` 401 does not count.

The engine does no socket I/O of its own (key sets may fetch through their
injected client); it returns a value the front-end renders. Any exception
inside it becomes a 500 ``internal_error`` denial: the decision fails closed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote_from_bytes

from .audit import (
    DECISION_FIELDS,
    AuditSink,
    Decision,
    FileAuditSink,
    LoggingAuditSink,
    decision_head,
    decision_tail,
    fingerprint,
)
from .authn.base import CredentialSource
from .authn.jwt import JwtAuthenticator
from .errors import AuthUnavailable, BadRequest, InvalidCredentials, Revoked, StoreUnavailable
from .forwarded import client_address, rate_key
from .memo import remember
from .model import Allow, Code, Denial, Header, Identity, Kind, Outcome, Preflight, RequestView
from .paths import CanonicalPath, canonicalize
from .policy import Policy, Rule
from .ratelimit import RateDecision, Scope, retry_after_header
from .responses import IdAnswer
from .revocation import FileRevocations, RevocationList, RevocationStore

__all__ = ["Engine"]

log = logging.getLogger("edgeauth")

_REALM: Final = 'Bearer realm="edgeauth"'
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_PREFLIGHT_REFUSED: Final = "CORS preflight refused"
_LOGIN_CODES: Final = frozenset({Code.MISSING_CREDENTIALS, Code.INVALID_TOKEN, Code.REVOKED})
_FAILED_AUTH: Final = frozenset({Code.INVALID_TOKEN, Code.REVOKED})
_STORE_DOWN: Final = "Temporarily unavailable"
# RFC 6750 §3: the challenge on API denials for a missing, bad or too weak token,
# as the headers of a denial without CORS fields. One tuple per code, typed as a
# variable-length tuple so that it stays one object (a fixed-length one is boxed
# anew at each use): renderers find the answer prepared for it by identity.
_CHALLENGES: Final[dict[Code, tuple[Header, ...]]] = {
    Code.MISSING_CREDENTIALS: (("www-authenticate", _REALM),),
    Code.INVALID_TOKEN: (("www-authenticate", f'{_REALM}, error="invalid_token"'),),
    Code.REVOKED: (("www-authenticate", f'{_REALM}, error="invalid_token"'),),
    Code.INSUFFICIENT_SCOPE: (("www-authenticate", f'{_REALM}, error="insufficient_scope"'),),
}

_MISSING: Final = Code.MISSING_CREDENTIALS
_MISSING_HEADERS: Final = _CHALLENGES[_MISSING]
# Audit line tails of settled 401s kept per engine (method, path, rule, client).
_MISSING_TAILS: Final = 1024

# Longer keys (path, method and host together) are canonicalized and matched
# every time: the memo stays within a few MiB whatever clients send.
_ROUTE_MEMO_KEY_CHARS: Final = 1024

_Refusal = tuple[Code, tuple[Header, ...]]
"""A rate-limit or lockout refusal: the code and the headers that explain it."""


class _Routed:
    """What the route memo holds: a canonical path, its raw form as bytes (what
    the upstream gets) and the rule it matches (None: no rule)."""

    def __init__(self, path: CanonicalPath, raw: bytes, rule: Rule | None) -> None:
        self.path = path
        self.raw = raw
        self.rule = rule


def new_request_id() -> str:
    """A random request id, for answers given outside an engine."""
    return secrets.token_hex(8)


class RequestIds:
    """Request ids: 64 random bits as 16 lower-case hex digits, drawn from a
    pool refilled 1,024 at a time (one system call per refill, not per
    request). Unique in practice (a collision is expected after about 2**32
    ids) and they do not tell clients how many requests came before theirs.
    Safe to share between threads: taking one is a single ``list.pop``. Being
    hex digits, they go into JSON as they are."""

    def __init__(self) -> None:
        self._pool: list[str] = []

    def take(self) -> str:
        try:
            return self._pool.pop()
        except IndexError:
            # 1,024 ids of 8 bytes each, cut from one hex string (cheaper than split()).
            digits = secrets.token_hex(8 * 1024)
            self._pool.extend([digits[i : i + 16] for i in range(0, len(digits), 16)])
            return self._pool.pop()


class _Trace:
    """What the audit event needs to know, filled in as the decision goes.

    The defaults are class attributes: a new trace costs one allocation, and
    only what a decision sets is stored."""

    path: str | None = None
    rule: str | None = None
    subject: str | None = None
    authenticator: str | None = None
    credential: str | None = None  # only ever logged as a fingerprint
    key_id: str | None = None
    reason: str | None = None


class Engine:
    """Decides requests against a compiled :class:`~edgeauth.policy.Policy`.

    >>> engine = Engine(load_policy("edgeauth.toml"))        # doctest: +SKIP
    >>> outcome = await engine.evaluate(view)                # doctest: +SKIP
    """

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditSink | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._audit = audit or policy.audit_sink or LoggingAuditSink()
        # The file sink takes decision events as their values (no dict to build).
        sink = self._audit
        self._decisions: FileAuditSink | None = sink if type(sink) is FileAuditSink else None
        self._ids = RequestIds()
        self._routes: dict[tuple[str, str, bytes], _Routed] = {}
        self._missing_tails: dict[tuple[str, str, str | None, str | None], str] = {}
        self._stamp = _Stamp(0)  # the audit's time text, for the second last asked
        self._last_missing = _MissingTail("", "", None, None, "")  # the last line's tail
        self.lanes: dict[bytes, MissingLane] = {}
        """The settled 401s for a missing credential, per raw path: see
        :class:`MissingLane`. Bounded, like every memo."""
        self.watches_upstream = bool(policy.upstream_401_rules)
        """Whether :meth:`upstream_response` does anything for this policy."""
        # settled() answers nothing for a policy that records or watches allowed requests.
        self._settles = (
            policy.failed_auth is None and not policy.audit_allows and not self.watches_upstream
        )

    async def evaluate(self, view: RequestView) -> Outcome:
        """Decide ``view``; never raises."""
        request_id = self._ids.take()
        trace = _Trace()
        try:
            outcome = await self._decide(view, request_id, trace)
        except Exception:
            # Details go to the server log only; the client gets a generic 500.
            log.exception("internal error while deciding request %s", request_id)
            trace.reason = "internal error"
            outcome = Denial(request_id, Code.INTERNAL_ERROR, rule_id=trace.rule)
        if type(outcome) is Denial:
            if outcome.code in _FAILED_AUTH:
                await self._count_failure(view, outcome.request_id, outcome.rule_id)
            self._emit(outcome, trace, view.method, view.client, view.raw_path)
        elif self.policy.audit_allows:
            self._emit(outcome, trace, view.method, view.client, view.raw_path)
        return outcome

    def settled(
        self,
        method: str,
        raw_path: bytes,
        fields: dict[str, tuple[str, ...]],
        peer: str | None,
    ) -> Allow | Denial | None:
        """The outcome :meth:`evaluate` would answer, when it needs no waiting:
        the front-ends' common requests, decided without a :class:`RequestView`.
        That is an :class:`Allow` that records nothing, or the 401 for a
        missing credential on an ``api`` rule, audited here like
        :meth:`evaluate`'s. None means "call :meth:`evaluate`", never "refused".

        The caller vouches for a GET or HEAD that is not a WebSocket upgrade,
        whose headers need nothing stripped, carry Host at most once and no
        Origin; ``fields`` holds its Cookie, Authorization and (kept from a
        trusted ``peer`` only) X-Forwarded-For values, and its Host when a rule
        is for some hosts only (:func:`~edgeauth.asgi.settling_fields`).
        Everything else is checked here: the policy (no failed-auth lockout,
        allows not audited, no upstream status watched); the route (remembered
        by :meth:`evaluate` before); the rule
        (:attr:`~edgeauth.policy.Rule.settles`); the credential (a
        verified-token cache hit, or none: anonymous on a public rule, the 401
        on an ``api`` rule); the revocation list (fresh, the identity not on
        it) and the rule's requirements. Each step is the one :meth:`evaluate`
        takes for such a request; what it would answer otherwise is left to it.
        """
        if not self._settles:
            return None
        host = ""
        if self.policy.needs_host:
            hosts = fields.get("host")
            try:
                host = _host_name(hosts[0] if hosts else None)
            except BadRequest:
                return None
        found = self._routes.get((method, host, raw_path))
        if found is None:
            return None
        path, raw, rule = found.path, found.raw, found.rule
        if rule is None or not rule.settles:
            return None
        if not rule.sources:  # no authenticator: anonymous
            return Allow(self._ids.take(), rule.id, path.decoded, raw)
        source = rule.sources[0]
        try:
            credential = _read(source, fields)  # as the whole path reads it
        except BadRequest:
            return None
        if credential is None:
            if rule.public:
                return Allow(self._ids.take(), rule.id, path.decoded, raw)
            if rule.kind is not Kind.API:
                return None  # a page's answer depends on headers not read here
            denial = Denial(self._ids.take(), _MISSING, rule.id, headers=_MISSING_HEADERS)
            forwarded_for = fields.get("x-forwarded-for")
            if forwarded_for is None:  # the client is the peer
                tail = self._emit_missing(denial, method, path.raw, peer, raw_path)
                if tail is not None and not self.policy.needs_host:
                    self._open_lane(method, raw_path, peer, tail)
                return denial
            client = client_address(peer, forwarded_for, self.policy.trusts)
            self._emit_missing(denial, method, path.raw, client, raw_path)
            return denial
        if not credential:
            return None
        now = self._clock()
        # The same call either way: the first one direct to the compiled class,
        # the second through Python's call protocol (any other authenticator).
        first = rule.first_authenticator
        if isinstance(first, JwtAuthenticator):
            identity = first.verified(credential, now)
        else:
            identity = None if first is None else first.verified(credential, now)
        if identity is None:
            return None
        listed = _current(self.policy.state.revocations)
        if listed is None or ((listed.tokens or listed.subjects) and listed.revoked(identity, now)):
            return None
        if rule.requires and rule.require.check(identity) is not None:
            return None
        try:
            upstream = self.policy.identity.build(identity)
        except InvalidCredentials:
            return None
        # What the first authenticator withholds: its cache answered, and a
        # cache entry answers only the authenticator that verified the token.
        return Allow(
            self._ids.take(), rule.id, path.decoded, raw, identity, upstream, rule.first_withheld
        )

    def report(
        self,
        view: RequestView,
        denial: Denial,
        reason: str | None = None,
        identity: Identity | None = None,
    ) -> None:
        """Audit a denial a front-end made itself (a streamed body over
        ``max_body``, a header that cannot be forwarded, a request it cannot
        read), like the engine's own; ``identity``: the one the request was
        allowed with, if any."""
        trace = _Trace()
        trace.rule = denial.rule_id
        trace.reason = reason
        if identity is not None:
            trace.subject = identity.subject
            trace.authenticator = identity.authenticator
            trace.key_id = identity.key_id
        with contextlib.suppress(BadRequest):
            trace.path = canonicalize(view.raw_path).raw
        self._emit(denial, trace, view.method, view.client, view.raw_path)

    async def upstream_response(self, view: RequestView, allow: Allow, status: int) -> None:
        """Tell the engine the status the app answered an allowed request with.

        Front-ends call this when the response starts; failed-auth counting
        (``count_upstream_401``) uses it. It never raises.
        """
        if status == 401 and allow.rule_id in self.policy.upstream_401_rules:
            await self._count_failure(view, allow.request_id, allow.rule_id)

    def _route(self, view: RequestView, method: str, host: str) -> _Routed:
        """The canonical path and the matching rule, remembered (bounded) in
        ``self._routes`` per (method, host, raw path): both depend on nothing
        else. BadRequest for an ambiguous path is raised, not remembered."""
        key = (method, host, view.raw_path)
        found = self._routes.get(key)
        if found is not None:
            return found
        path = canonicalize(view.raw_path)
        found = _Routed(
            path, path.raw.encode(), self.policy.rules.match(method, host, path.decoded)
        )
        if len(view.raw_path) + len(method) + len(host) <= _ROUTE_MEMO_KEY_CHARS:
            remember(self._routes, key, found)
        return found

    async def _decide(self, view: RequestView, rid: str, trace: _Trace) -> Outcome:
        headers = view.headers
        # Host and Origin are not lists (RFC 9110 §5.3): repeated, the request is
        # ambiguous (servers disagree on which one wins).
        hosts = headers.get("host")
        origins = headers.get("origin")
        repeated = (
            "host" if hosts and len(hosts) > 1 else "origin" if origins and len(origins) > 1 else ""
        )
        if repeated:
            trace.reason = f"more than one {repeated} header"
            return Denial(rid, Code.BAD_REQUEST)
        origin = origins[0] if origins else None
        method = view.method
        preflight = False
        if method == "OPTIONS" and origin is not None:
            requested = view.header("access-control-request-method")
            if requested is not None:
                preflight = True
                method = requested.upper() or method
        try:
            host = _host_name(view.header("host")) if self.policy.needs_host else ""
            routed = self._route(view, method, host)
            if preflight and (routed.rule is None or routed.rule.cors is None):
                # Only a CORS rule answers a preflight. To any other it is the
                # OPTIONS request it is, matched, decided and forwarded as one.
                preflight, method = False, view.method
                routed = self._route(view, method, host)
        except BadRequest as exc:
            trace.reason = str(exc)
            return Denial(rid, Code.BAD_REQUEST)
        path, raw, rule = routed.path, routed.raw, routed.rule
        trace.path = path.raw
        if rule is None:
            if self.policy.default_allow:
                return Allow(rid, "default", path.decoded, raw)
            return Denial(rid, Code.NOT_FOUND)
        trace.rule = rule.id
        cors = rule.cors.response_headers(origin) if rule.cors else ()
        if preflight and rule.cors is not None:
            grant = rule.cors.preflight(origin, method)
            if grant is None:
                trace.reason = "preflight refused"
                return Denial(rid, Code.FORBIDDEN, rule_id=rule.id, message=_PREFLIGHT_REFUSED)
            return Preflight(rid, rule.id, grant)
        now = self._clock()
        # The headers every later answer carries: CORS, then the RateLimit-* fields.
        extra = cors
        checked: list[RateDecision] = []
        if rule.limits:
            refusal = await self._limit(rule, "ip", view, now, checked, trace)
            if refusal is not None:
                return self._refuse(refusal, rid, rule, view, path, cors)
            extra = _rate_headers(cors, checked)
        if rule.max_body is not None:
            length = view.header("content-length")
            if length and length.isdigit() and int(length) > rule.max_body:
                return self._deny(Code.PAYLOAD_TOO_LARGE, rid, rule, view, path, extra)

        credentials: dict[CredentialSource, str] = {}
        if rule.authenticators:
            try:
                credentials = _credentials(rule, view)
            except BadRequest as exc:
                trace.reason = str(exc)
                return self._deny(Code.BAD_REQUEST, rid, rule, view, path, extra)
        if self.policy.failed_auth is not None and (credentials or rule.count_upstream_401):
            refusal = await self._lockout(view, now, trace)
            if refusal is not None:
                return self._refuse(refusal, rid, rule, view, path, extra)

        identity: Identity | None = None
        source: CredentialSource | None = None
        if credentials:
            try:
                hit = _cached(rule, credentials, now, trace)
                if hit is None:
                    identity, source = await self._authenticate(rule, credentials, now, trace)
                else:
                    identity, source = hit
            except Revoked as exc:
                return self._fail(Code.REVOKED, exc, trace, rid, rule, view, path, extra)
            except InvalidCredentials as exc:
                return self._fail(Code.INVALID_TOKEN, exc, trace, rid, rule, view, path, extra)
            except AuthUnavailable as exc:
                return self._fail(Code.AUTH_UNAVAILABLE, exc, trace, rid, rule, view, path, extra)
            if identity is None:
                trace.reason = "no authenticator accepted the credential"
                return self._deny(Code.INVALID_TOKEN, rid, rule, view, path, extra)
        elif rule.authenticators and not rule.public:
            return self._deny(Code.MISSING_CREDENTIALS, rid, rule, view, path, extra)

        if identity is None or source is None:
            return Allow(
                rid,
                rule.id,
                path.decoded,
                raw,
                response_headers=extra,
                max_body=rule.max_body,
                cors=rule.cors is not None,
            )
        trace.subject = identity.subject
        trace.key_id = identity.key_id
        revocations = self.policy.state.revocations
        try:
            listed = revocations.current()
            if listed is None:  # not loaded yet, or stale: wait, or fail closed
                listed = await revocations.snapshot()
            # Most lists are empty: the lookups are skipped, not the answer changed.
            revoked = bool(listed.tokens or listed.subjects) and listed.revoked(identity, now)
        except AuthUnavailable as exc:
            return self._fail(Code.AUTH_UNAVAILABLE, exc, trace, rid, rule, view, path, extra)
        if revoked:
            trace.reason = "credential revoked"
            return self._deny(Code.REVOKED, rid, rule, view, path, extra)
        # An identity the headers cannot carry safely (a control character, a
        # role holding the roles' separator) is an invalid credential whatever
        # the rule requires: checked before the rule's requirements.
        try:
            upstream = self.policy.identity.build(identity)
        except InvalidCredentials as exc:
            return self._fail(Code.INVALID_TOKEN, exc, trace, rid, rule, view, path, extra)
        if (
            source.kind == "cookie"
            and (view.method not in _SAFE_METHODS or view.websocket)
            and self._cross_site(view, rule)
        ):
            trace.reason = "cookie credential from a foreign origin"
            return self._deny(Code.CSRF, rid, rule, view, path, extra)
        refused = rule.require.check(identity) if rule.requires else None
        if refused is not None:
            return self._deny(refused, rid, rule, view, path, extra)
        if rule.limits:
            refusal = await self._limit(rule, "subject", identity.subject, now, checked, trace)
            if refusal is None and identity.credential_type == "api_key":
                refusal = await self._limit(rule, "api_key", identity.key_id, now, checked, trace)
            if refusal is not None:
                return self._refuse(refusal, rid, rule, view, path, cors)
            extra = _rate_headers(cors, checked)
        # The app gets no credential but the one the identity came from (and
        # not that one either unless its authenticator forwards it): another
        # credential in a place the rule reads may be someone else's.
        withheld: tuple[str, ...] = ()
        forwards = self.policy.authenticators[identity.authenticator].forward_credential
        if not forwards or len(credentials) > 1:
            used = credentials[source]
            withheld = tuple(
                s.place for s, value in credentials.items() if not forwards or value != used
            )
        return Allow(
            rid,
            rule.id,
            path.decoded,
            raw,
            identity,
            upstream,
            withheld,
            extra,
            rule.max_body,
            rule.cors is not None,
        )

    async def _limit(
        self,
        rule: Rule,
        scope: Scope,
        who: str | RequestView | None,
        now: float,
        checked: list[RateDecision],
        trace: _Trace,
    ) -> _Refusal | None:
        """Check ``rule``'s limits per ``scope`` for ``who``; keys include the rule id,
        so rules never share counters."""
        limits = rule.limits_per(scope)
        if isinstance(who, RequestView):
            who = _client_key(who)  # computed only for rules that limit per ip
        if not limits or who is None:
            return None
        try:
            decision = await self.policy.state.limits.hit(f"{rule.id}|{scope}|{who}", limits, now)
        except StoreUnavailable:
            return self._store_down(trace)
        checked.append(decision)
        if decision.allowed:
            return None
        trace.reason = f"over the rate limit per {scope}"
        return Code.RATE_LIMITED, decision.headers()

    async def _lockout(self, view: RequestView, now: float, trace: _Trace) -> _Refusal | None:
        try:
            left = await self.policy.state.limits.locked(_client_key(view), now)
        except StoreUnavailable:
            return self._store_down(trace)
        if left is None:
            return None
        trace.reason = "failed-auth lockout"
        return Code.RATE_LIMITED, (retry_after_header(left),)

    def _store_down(self, trace: _Trace) -> _Refusal | None:
        """``on_store_error``: skip the limit (allow), or 503 (deny); never 500."""
        if self.policy.state.settings.on_store_error == "allow":
            return None
        trace.reason = "state store unavailable (on_store_error = deny)"
        return Code.AUTH_UNAVAILABLE, (retry_after_header(1),)

    def _refuse(
        self,
        refusal: _Refusal,
        rid: str,
        rule: Rule,
        view: RequestView,
        path: CanonicalPath,
        cors: tuple[Header, ...],
    ) -> Denial:
        code, headers = refusal
        message = _STORE_DOWN if code is Code.AUTH_UNAVAILABLE else None
        return self._deny(code, rid, rule, view, path, (*headers, *cors), message)

    async def _count_failure(self, view: RequestView, request_id: str, rule_id: str | None) -> None:
        """One failed authentication for the client; audit the lockout it may start."""
        limit = self.policy.failed_auth
        if limit is None:
            return
        try:
            lockout = await self.policy.state.limits.fail(_client_key(view), limit, self._clock())
        except StoreUnavailable:
            return  # logged once per outage by the store
        except Exception:
            log.exception("cannot count a failed authentication for request %s", request_id)
            return
        if lockout is None or not lockout.started:
            return
        event: dict[str, Any] = {
            "time": _iso(self._clock()),
            "event": "lockout",
            "outcome": "lockout",
            "request_id": request_id,
            "rule": rule_id,
            "client": view.client,
            "limit": str(limit),
            "until": _iso(lockout.until),
        }
        try:
            self._audit.emit(event)
        except Exception:
            log.exception("audit sink failed for request %s", request_id)

    async def _authenticate(
        self,
        rule: Rule,
        credentials: dict[CredentialSource, str],
        now: float,
        trace: _Trace,
    ) -> tuple[Identity | None, CredentialSource | None]:
        """(identity, where it came from), or (None, None) when no authenticator
        took one. Called after :func:`_cached` missed: the first credential's
        authenticator is not asked for a cached identity again."""
        first = True
        for authenticator, source in rule.attempts:
            credential = credentials.get(source)
            if credential is None:
                continue
            if first:
                trace.credential = credential
            trace.authenticator = authenticator.id
            identity = None if first else authenticator.verified(credential, now)
            first = False
            if identity is None:
                identity = await authenticator.authenticate(credential, now)
            if identity is not None:
                trace.credential = credential
                return identity, source
        return None, None

    def _cross_site(self, view: RequestView, rule: Rule) -> bool:
        """CSRF: is this cookie credential on an unsafe method or a WebSocket
        upgrade (the caller checks that) from a foreign origin? (Fetch Metadata,
        OWASP CSRF cheat sheet.)"""
        origin = view.header("origin")
        if origin is None:
            return view.header("sec-fetch-site") == "cross-site"
        own = self.policy.server.public_origin or f"{view.scheme}://{view.header('host') or ''}"
        if origin.lower() == own.lower():
            return False
        return not (rule.cors is not None and origin in rule.cors.origins)

    def _fail(
        self,
        code: Code,
        exc: Exception,
        trace: _Trace,
        rid: str,
        rule: Rule,
        view: RequestView,
        path: CanonicalPath,
        cors: tuple[Header, ...],
    ) -> Denial:
        trace.reason = str(exc) or type(exc).__name__
        return self._deny(code, rid, rule, view, path, cors)

    def _deny(
        self,
        code: Code,
        rid: str,
        rule: Rule,
        view: RequestView,
        path: CanonicalPath,
        cors: tuple[Header, ...],
        message: str | None = None,
    ) -> Denial:
        page = _is_page(rule.kind, view)
        if page and code in _LOGIN_CODES and rule.login_url:
            return Denial(
                rid, code, rule.id, page=True, location=_login_location(rule.login_url, path, view)
            )
        return _denial(code, rid, rule.id, page, cors, message)

    def _stamp_now(self) -> _Stamp:
        """The audit's time text for now (UTC, to the second)."""
        second = int(self._clock())
        stamp = self._stamp
        if stamp.second != second:  # one object replaced whole: safe for threads to share
            stamp = self._stamp = _Stamp(second)
        return stamp

    def _emit_missing(
        self, denial: Denial, method: str, path: str, client: str | None, raw_path: bytes
    ) -> str | None:
        """Audit the 401 :meth:`settled` answers a request without a credential
        (``denial``, with one of the engine's request ids) as :meth:`_emit`
        does, the part of its line after the request id remembered per
        method, canonical path, rule and client (the values it depends on).
        That part, when the line went to the file sink; else None."""
        rule_id = denial.rule_id
        decisions = self._decisions
        last = self._last_missing
        plain = type(method) is str and (client is None or type(client) is str)
        if decisions is None or not (  # the last one's route and client? (path and rule:
            plain  # the route memo's own objects)
            and last.path is path
            and last.rule_id is rule_id
            and last.method == method
            and last.client == client
        ):
            key = (method, path, rule_id, client)
            tail = self._missing_tails.get(key) if plain else None
            if tail is None or decisions is None:
                trace = _Trace()
                trace.path, trace.rule = path, rule_id
                values = self._emit(denial, trace, method, client, raw_path)
                tail = None if values is None else decision_tail(values[2:])
                if tail is not None:
                    remember(self._missing_tails, key, tail, _MISSING_TAILS)
                return tail
            self._last_missing = _MissingTail(method, path, rule_id, client, tail)
        else:
            tail = last.tail
        try:
            # The engine's own request id: hex digits, JSON as they are.
            line = f'{self._stamp_now().head}"{denial.request_id}"{tail}'
            decisions.emit_line(line)
        except Exception:
            log.exception("audit sink failed for request %s", denial.request_id)
        return tail

    def _open_lane(self, method: str, raw_path: bytes, peer: str | None, tail: str) -> None:
        """Keep the lane of a settled 401 for ``peer``, whose audit line's
        ``tail`` is remembered (see :class:`MissingLane`)."""
        sink = self._decisions
        if sink is None or len(raw_path) > _ROUTE_MEMO_KEY_CHARS:
            return
        lane = self.lanes.get(raw_path)
        if lane is None or lane.method != method:  # a HEAD after GETs, say: the last one's
            lane = remember(self.lanes, raw_path, MissingLane(method, sink), _LANES)
        if lane.tails.get(peer) != tail:
            remember(lane.tails, peer, tail, _LANE_PEERS)

    def lane_denial(self, lane: MissingLane, tail: str) -> str:
        """Audit one more request like those that opened ``lane``, from the
        peer whose audit line ``tail`` (from :attr:`MissingLane.tails`) is,
        under a new request id, which is returned: the 401 is the
        front-end's to answer (:data:`MISSING_ANSWER` with that id). Never
        raises."""
        rid = self._ids.take()
        try:
            # The engine's own request id: hex digits, JSON as they are.
            lane.sink.emit_line(f'{self._stamp_now().head}"{rid}"{tail}')
        except Exception:
            log.exception("audit sink failed for request %s", rid)
        return rid

    def _emit(
        self, outcome: Outcome, trace: _Trace, method: str, client: str | None, raw_path: bytes
    ) -> Decision | None:
        """Audit ``outcome`` for a ``method`` request from ``client`` to ``raw_path``;
        the event's values when they went to the file sink as a decision line."""
        code: str | None
        if type(outcome) is Denial:
            status = outcome.code.status
            code, result = outcome.code._value_, "deny"  # its text: a plain str hashes faster
            if outcome.page and outcome.location is not None:
                status = 302 if method in ("GET", "HEAD") else 303  # what the client got
        else:
            status, code, result = (204 if type(outcome) is Preflight else 200), None, "allow"
        path = _audited(trace.path if trace.path is not None else _printable(raw_path))
        values = (  # DECISION_FIELDS
            self._stamp_now().time,
            outcome.request_id,
            method,
            path,
            trace.rule,
            result,
            code,
            status,
            trace.reason,
            trace.subject,
            client,
            trace.authenticator,
            trace.key_id,
            fingerprint(trace.credential) if trace.credential else None,
        )
        try:
            # The line of plain values is remembered in parts: a method or
            # client the server gave as a str subclass goes the general way.
            plain = type(method) is str and (client is None or type(client) is str)
            decisions = self._decisions
            if decisions is not None and plain:
                decisions.emit_decision(values)
                return values
            else:
                event = dict(zip(DECISION_FIELDS, values, strict=True))
                if type(outcome) is Denial:
                    event["code"] = outcome.code  # the Code member, as sinks always got it
                self._audit.emit(event)
        except Exception:
            log.exception("audit sink failed for request %s", outcome.request_id)
        return None


def json_denial(
    code: Code, rid: str, rule_id: str | None = None, headers: tuple[Header, ...] = ()
) -> Denial:
    """A JSON denial a front-end answers itself, after the decision (of
    ``rule_id``, if known), with its code's challenge (``WWW-Authenticate``),
    if any, then ``headers`` (the rule's CORS and RateLimit-* fields)."""
    return _denial(code, rid, rule_id, False, headers)


def _denial(
    code: Code,
    rid: str,
    rule_id: str | None,
    page: bool,
    cors: tuple[Header, ...],
    message: str | None = None,
) -> Denial:
    """A denial answered in place (no login redirect): a JSON one carries its
    code's challenge (``WWW-Authenticate``), if any, before ``cors``."""
    headers = cors
    challenge = None if page else _CHALLENGES.get(code)
    if challenge is not None:
        headers = (*challenge, *cors) if cors else challenge
    return Denial(rid, code, rule_id, page, None, headers, message)


def _cached(
    rule: Rule, credentials: dict[CredentialSource, str], now: float, trace: _Trace
) -> tuple[Identity, CredentialSource] | None:
    """The identity of the first credential presented, when the authenticator
    that reads it tries it first and knows it without waiting (a verified-token
    cache hit); None means "authenticate in full", never "refused"."""
    for authenticator, source in rule.attempts:
        credential = credentials.get(source)
        if credential is None:
            continue
        identity = authenticator.verified(credential, now)
        if identity is None:
            return None
        trace.credential = credential
        trace.authenticator = authenticator.id
        return identity, source
    return None


def _client_key(view: RequestView) -> str:
    """The per-ip key: the client address (IPv6 by its /64); requests with no
    known address share one key."""
    return rate_key(view.client) if view.client else "unknown"


def _rate_headers(cors: tuple[Header, ...], checked: list[RateDecision]) -> tuple[Header, ...]:
    tightest = RateDecision.tightest(checked)
    return cors if tightest is None else (*cors, *tightest.headers())


def _iso(moment: float) -> str:
    """UTC to the second (decision events take it from the engine's
    :class:`_Stamp`, which keeps it within its second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(moment)))


class _MissingTail:
    """A settled 401's audit line after its request id, with what it depends on."""

    def __init__(
        self, method: str, path: str, rule_id: str | None, client: str | None, tail: str
    ) -> None:
        self.method = method
        self.path = path
        self.rule_id = rule_id
        self.client = client
        self.tail = tail


class MissingLane:
    """The settled 401 for a request without a credential to one raw path,
    kept in :attr:`Engine.lanes` once :meth:`Engine.settled` has answered
    one and its audit line has gone to the file sink with a remembered tail
    (for a policy whose routes do not depend on Host).

    A front-end that has found, as :func:`~edgeauth.asgi.settling_fields`
    does, that a GET or HEAD request to that raw path, with the lane's
    :attr:`method`, from a peer in :attr:`tails` (a plain ``str``, or None:
    a string type of its own may equal another spelling), is one
    :meth:`Engine.settled` may decide and carries none of the fields it
    reads (no Cookie, Authorization or X-Forwarded-For) may answer it with
    :meth:`Engine.lane_denial` and :data:`MISSING_ANSWER`:
    that is what :meth:`Engine.settled` would answer. The route and its rule
    are the raw path's, the audit's client is the peer, and without a
    credential no token, revocation or requirement is consulted."""

    def __init__(self, method: str, sink: FileAuditSink) -> None:
        self.method = method
        self.tails: dict[str | None, str] = {}
        """Peer -> its audit line after the request id (bounded)."""
        self.sink = sink


MISSING_ANSWER: Final = IdAnswer(Denial("0" * 16, _MISSING, headers=_MISSING_HEADERS))
"""The answer of every lane: the 401 :meth:`Engine.settled` answers a
request without a credential, prepared once (for request ids of the
engine's length)."""

# Lanes kept per engine (raw paths), and peers per lane.
_LANES: Final = 1024
_LANE_PEERS: Final = 256


class _Stamp:
    """One second's audit time: its text and a decision line's head."""

    def __init__(self, second: int) -> None:
        self.second = second
        self.time = _iso(second)
        self.head = decision_head(self.time)


def _credentials(rule: Rule, view: RequestView) -> dict[CredentialSource, str]:
    """The credential in each place the rule reads; BadRequest when ambiguous."""
    headers = view.headers
    if type(headers) is not dict:  # a view built with another mapping: read as a dict
        headers = dict(headers)
    sources = rule.sources
    if len(sources) == 1:  # one place to read (most rules): nothing to disagree
        value = _read(sources[0], headers)
        return {} if value is None else {sources[0]: value}
    found: dict[CredentialSource, str] = {}
    for source in sources:
        value = _read(source, headers)
        if value is not None:
            found[source] = value
    if len(found) > 1:
        bearer = found.get(_BEARER)
        api_key = found.get(_API_KEY_HEADER)
        if bearer is not None and api_key is not None and bearer != api_key:
            raise BadRequest("Bearer token and X-API-Key disagree")
    return found


def _current(store: RevocationStore) -> RevocationList | None:
    """``store.current()``: called directly for the file store (compiled, the
    default), through Python's call protocol for any other."""
    if isinstance(store, FileRevocations):
        return store.current()
    return store.current()


def _read(source: CredentialSource, headers: dict[str, tuple[str, ...]]) -> str | None:
    """The credential in one place, None when that place is absent or empty."""
    kind, name = source
    if kind == "cookie":
        values = headers.get("cookie")
        return None if values is None else _cookie(values, name)
    if kind == "bearer":
        values = headers.get("authorization")
        return None if values is None else _bearer(values)
    values = headers.get(name)
    return None if values is None else _single(values, name)


_BEARER: Final = CredentialSource("bearer")
_API_KEY_HEADER: Final = CredentialSource("header", "x-api-key")


def _bearer(values: tuple[str, ...]) -> str | None:
    if len(values) > 1:
        raise BadRequest("more than one Authorization header")
    if not values:
        return None
    value = values[0]
    if value.startswith("Bearer "):  # the usual spelling: what the split below gives
        return value[7:].strip()
    # Any whitespace after the scheme: "Bearer<TAB>token" is a bearer credential
    # to many apps, so it is one here too (and verified, not passed on unseen).
    parts = value.split(None, 1)
    if not parts or parts[0].lower() != "bearer":
        return None  # another scheme (Basic, ...) is not a bearer credential
    return parts[1].strip() if len(parts) > 1 else ""  # "Bearer" alone: presented, invalid


def _single(values: tuple[str, ...], name: str) -> str | None:
    distinct = {v.strip() for v in values}
    if len(distinct) > 1:
        raise BadRequest(f"conflicting {name} headers")
    value = distinct.pop() if distinct else ""
    return value or None


def _cookie(headers: tuple[str, ...], name: str) -> str | None:
    """The value of the credential cookie ``name`` (RFC 6265 §5.4), unquoted;
    None when absent or empty (a signed-out cookie is no credential). Sent twice
    with different values it is ambiguous (servers disagree on which one wins)
    and refused. Only headers that mention ``name`` are split into pairs; the
    other cookies are the app's business."""
    found: str | None = None
    for header in headers:
        if name not in header:
            continue
        for pair in header.split(";") if ";" in header else [header]:  # a list either way
            # Spaces around the name are allowed (str.strip's whitespace).
            key, eq, value = pair.partition("=")
            if not eq or key.strip() != name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value:
                continue
            if found is None:
                found = value
            elif found != value:
                raise BadRequest(f"cookie {name!r} sent twice with different values")
    return found


_HOST: Final = re.compile(r"(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def _host_name(value: str | None) -> str:
    """The host name in a Host header's ``value``, lower-case, without port or
    trailing dot; "" when there is none.

    A Host that is not a host name is refused rather than matched as a string:
    ``admin.example.com.`` must not slip past a rule for ``admin.example.com``.
    """
    host = (value or "").strip().lower()
    if not host:
        return ""
    if not _HOST.fullmatch(host):
        raise BadRequest("malformed Host header")
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    name = host.rpartition(":")[0] if ":" in host else host
    return name.rstrip(".")


def _is_page(kind: Kind, view: RequestView) -> bool:
    if kind is Kind.API or view.websocket:
        return False
    if kind is Kind.PAGE:
        return True
    mode = view.header("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate" and view.header("sec-fetch-dest") == "document"
    return _prefers_html(view.header("accept") or "")


def _prefers_html(accept: str) -> bool:
    """Does an Accept header (RFC 9110 §12.5.1) prefer text/html over everything
    else it names? A bare ``*/*`` is not a preference."""
    html_q, best_other = -1.0, 0.0
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == "text/html":
            html_q = max(html_q, q)
        elif media and media != "*/*" and media != "application/xhtml+xml":
            best_other = max(best_other, q)
    return html_q > 0 and html_q >= best_other


def _login_location(login_url: str, path: CanonicalPath, view: RequestView) -> str:
    """``login_url`` with ``next`` = the canonical path and query, percent-encoded.

    The canonical path starts with exactly one '/' and holds no backslash, so
    ``next`` is always a same-site relative path.
    """
    target = "/" + path.raw.lstrip("/")
    raw = target.encode() + (b"?" + view.query if view.query else b"")
    joiner = "&" if "?" in login_url else "?"
    return f"{login_url}{joiner}next={quote_from_bytes(raw, safe='')}"


# The longest path an audit event holds; a longer one is cut there and ends
# with "...". Request heads are bounded by the server in front (edgeauth
# serve: [server] max_head_bytes), not always by much.
_AUDITED_PATH: Final = 2048


def _audited(path: str) -> str:
    """``path`` as an audit event holds it: cut at :data:`_AUDITED_PATH`
    characters (one line stays a line, whatever the client sent)."""
    return path if len(path) <= _AUDITED_PATH else path[:_AUDITED_PATH] + "..."


def _printable(raw: bytes) -> str:
    """A raw path safe to log: escapes instead of controls, bounded length."""
    return raw[:512].decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii")
