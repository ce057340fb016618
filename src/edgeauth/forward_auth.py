"""The forward-auth front-end: a decision endpoint for gateways.

nginx (``auth_request``), Traefik (``ForwardAuth``), Caddy (``forward_auth``)
and Envoy (``ext_authz``, HTTP service) keep proxying and ask edgeauth, per
request, "may this pass, and as whom?". This app rebuilds the original request
from the gateway's headers, hands it to the same engine as every other
front-end, and answers in the gateway's dialect:

========  =========================================  ==================================
dialect   original request                           answer
========  =========================================  ==================================
nginx     ``X-Original-URI``, ``X-Original-Method``  200, or 401/403 with the real
                                                     status in ``X-Edgeauth-*``
traefik   ``X-Forwarded-Uri``, ``-Method``           200, or the denial as is
caddy     ``X-Forwarded-Uri``, ``-Method``           200, or the denial as is
envoy     path after the endpoint's prefix, method   200, or the denial as is
========  =========================================  ==================================

Host, scheme and client come from ``X-Forwarded-Host``, ``-Proto`` and ``-For``
(Envoy: the ``Host`` it passes on). They are believed only from a peer in
``[forward_auth] trusted``, and only when the request carries its own
dialect's URI and method headers once each and no other dialect's: anything
else is 403 ``untrusted_peer``.

>>> app = ForwardAuthApp(policy, Engine(policy))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .asgi import Receive, Scope, Send, send_rendered
from .audit import AuditSink, LoggingAuditSink
from .forwarded import client_address
from .headers import HOP_BY_HOP, is_token, normalize_name
from .memo import remember
from .model import (
    Allow,
    Code,
    Denial,
    Header,
    Identity,
    Outcome,
    Preflight,
    RequestView,
    encode_headers,
)
from .pipeline import Engine, new_request_id
from .policy import ForwardAuthSettings, Policy
from .responses import Rendered, render_denial, render_preflight

__all__ = ["DIALECTS", "ForwardAuthApp"]

log = logging.getLogger("edgeauth")

DIALECTS = ("nginx", "traefik", "caddy", "envoy")

# The headers that carry the original request target and method, per dialect.
# Envoy has none: the check request keeps the original method, and its path is
# the original path appended to the endpoint's prefix.
_REQUEST_LINE: dict[str, tuple[str, str] | None] = {
    "nginx": ("x-original-uri", "x-original-method"),
    "traefik": ("x-forwarded-uri", "x-forwarded-method"),
    "caddy": ("x-forwarded-uri", "x-forwarded-method"),
    "envoy": None,
}
_ALL_REQUEST_LINE = frozenset(
    {"x-original-uri", "x-original-method", "x-forwarded-uri", "x-forwarded-method"}
)
# Headers that must not be repeated either: two hosts or schemes are ambiguous.
_SINGLE = {
    "nginx": frozenset({"x-forwarded-host", "x-forwarded-proto"}),
    "traefik": frozenset({"x-forwarded-host", "x-forwarded-proto"}),
    "caddy": frozenset({"x-forwarded-host", "x-forwarded-proto"}),
    "envoy": frozenset({"host", "x-forwarded-proto"}),
}
# What describes the gateway's own request, not the original one: never part of the view.
_GATEWAY = frozenset(
    {
        *_ALL_REQUEST_LINE,
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-real-ip",
        "host",
        "content-length",
        *HOP_BY_HOP,
    }
)
# What str.strip() removes from a Latin-1 value, for stripping it undecoded.
_SPACE = bytes(c for c in range(256) if chr(c).isspace())
_MEMO_NAME_BYTES = 64
_MEMO_FORWARDED_FOR_BYTES = 256
_UNKNOWN = "?"  # never a client address
# Dot segments (raw or escaped) and empty segments: the gateway forwards the path
# unresolved, so a path whose canonical form differs in structure would be
# authorized as one path and served as another.
_UNRESOLVED = re.compile(rb"(?:^|/)(?:\.|%2e){1,2}(?:/|$)|//", re.IGNORECASE)

# nginx's auth_request accepts only 2xx, 401 and 403 (anything else becomes a
# 500), so the real outcome travels in these headers; the documented nginx
# config turns them back into the final response.
_NGINX_STATUS = "x-edgeauth-status"
_NGINX_CODE = "x-edgeauth-code"
_NGINX_LOCATION = "x-edgeauth-location"
_NGINX_BODY = "x-edgeauth-body"
_WITHHELD = "x-edgeauth-withheld"
_WITHHELD_BYTES = _WITHHELD.encode()
# Envoy's HTTP ext_authz removes these request headers before the upstream.
_ENVOY_REMOVE = "x-envoy-auth-headers-to-remove"
_NO_STORE = (b"cache-control", b"no-store")


@dataclass(frozen=True, slots=True)
class _Refused:
    """A request refused before the engine, and what its audit event names:
    the original request when it could be read, else the gateway's."""

    code: Code
    reason: str
    method: str | None = None
    path: bytes | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class _Answer:
    """The encoded headers of an allow for one identity object, response
    headers and withheld places (see :meth:`ForwardAuthApp._allow_headers`)."""

    identity: Identity | None
    response_headers: tuple[Header, ...]
    withheld: tuple[str, ...]
    headers: list[tuple[bytes, bytes]]


class ForwardAuthApp:
    """The decision endpoint, an ASGI app for ``[forward_auth] path``.

    The server routes ``path`` to it (for the ``envoy`` dialect, ``path`` and
    everything below it), with the TCP peer in ``scope["client"]`` and no
    proxy-header rewriting in front of it.

    >>> app = ForwardAuthApp(policy, Engine(policy))               # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=9000, proxy_headers=False)  # doctest: +SKIP
    """

    def __init__(self, policy: Policy, engine: Engine, *, audit: AuditSink | None = None) -> None:
        if policy.forward_auth is None:
            raise ValueError(f"{policy.source}: the policy has no [forward_auth] section")
        if policy.forward_auth.dialect not in DIALECTS:
            raise ValueError(f"unknown forward-auth dialect {policy.forward_auth.dialect!r}")
        self.policy = policy
        self.engine = engine
        self.settings: ForwardAuthSettings = policy.forward_auth
        self.dialect = self.settings.dialect
        self._audit = audit or policy.audit_sink or LoggingAuditSink()
        self._names: dict[bytes, tuple[str | None, int, bool]] = {}
        self._methods: dict[bytes, str] = {}
        self._peers: dict[str | None, bool] = {}
        self._clients: dict[tuple[str | None, tuple[bytes, ...]], str | None] = {}
        self._answers: dict[int, _Answer] = {}
        self._request_line = _REQUEST_LINE[self.dialect]
        self._host = "host" if self.dialect == "envoy" else "x-forwarded-host"
        # The dialect check counts every request-line name and this dialect's
        # single-valued names, in any spelling: each count has 64 bits of one
        # integer, so a request's counts are one sum and one set lookup. Well
        # formed: its own request line once each, a single-valued name at most once.
        single = _SINGLE[self.dialect]
        self._counted = tuple(sorted(_ALL_REQUEST_LINE | single))
        sums = {sum(self._weight(n) for n in self._request_line or ())}
        for name in sorted(single):
            sums |= {s + self._weight(name) for s in sums}
        self._well_formed = frozenset(sums)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return
        await send_rendered(scope, send, await self.answer(scope))

    async def answer(self, scope: Scope) -> Rendered:
        """The answer to the gateway's request in ``scope`` (without its
        Content-Length); never raises. ``edgeauth serve`` calls it directly for
        most requests (see :class:`edgeauth.server.EdgeHttpProtocol`)."""
        try:
            request = self._rebuild(scope)
        except Exception:
            log.exception("cannot read the forward-auth request")
            request = _Refused(Code.INTERNAL_ERROR, "unreadable forward-auth request")
        if isinstance(request, _Refused):
            denial = Denial(new_request_id(), request.code)
            method = request.method or _own_method(scope)
            self._audit_refusal(scope, request, denial, method)
            return self._render_denial(denial, method)
        outcome = await self.engine.evaluate(request)
        if type(outcome) is Allow:
            return self._render_allow(outcome)
        return self._render(outcome, request.method)

    def _rebuild(self, scope: Scope) -> RequestView | _Refused:
        """The original request as a :class:`RequestView`, or why it is refused."""
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        trusted = self._peers.get(peer)
        if trusted is None:
            trusted = self._trust(peer)
        if not trusted:
            return _Refused(Code.UNTRUSTED_PEER, "peer not in [forward_auth] trusted")
        # One pass: count the dialect headers in every spelling, drop client
        # copies of identity headers before anything reads them, and keep the
        # gateway's own headers (undecoded) apart from the original request's.
        known = self._names
        counted = 0
        gateway: dict[str, tuple[bytes, ...]] = {}
        headers: dict[str, tuple[str, ...]] = {}
        for name, value in scope["headers"]:
            try:
                key, weight, own = known[name]
            except KeyError:
                key, weight, own = self._learn(name)
            if weight:  # most names are not counted: no big-integer sum for them
                counted += weight
            if key is None:
                continue
            if own:
                if key in gateway:
                    gateway[key] += (value,)
                else:
                    gateway[key] = (value,)
                continue
            text = value.decode("latin-1")
            if key in headers:
                headers[key] += (text,)
            else:
                headers[key] = (text,)
        if counted not in self._well_formed:
            refusal = self._check_dialect(scope["headers"])
            if refusal is not None:
                return refusal
        line = self._request_line
        if line is None:
            target = self._envoy_target(scope)
            if isinstance(target, _Refused):
                return target
            method, path, query = target
        else:
            sent_uri, sent_method = gateway.get(line[0]), gateway.get(line[1])
            if not sent_method or not sent_uri:
                # Sent only in another spelling (X_Original_URI): not the dialect's.
                return _Refused(Code.UNTRUSTED_PEER, f"{line[1]} or {line[0]} missing")
            method = self._methods.get(sent_method[0]) or self._method(sent_method[0])
            uri = sent_uri[0].strip(_SPACE)
            if not method or not uri:
                return _Refused(Code.UNTRUSTED_PEER, f"malformed {line[1]} or {line[0]}")
            path, _, query = uri.partition(b"?")
        forwarded_for = gateway.get("x-forwarded-for")
        if forwarded_for:
            client = self._clients.get((peer, forwarded_for), _UNKNOWN)
            if client is _UNKNOWN:
                client = self._client(peer, forwarded_for)
        else:
            client = peer
        # The regular expression only where it can match: most paths have
        # neither a dot, an escape nor two slashes (bytes.find: see server.on_url).
        if (
            path.find(b".") >= 0 or path.find(b"%") >= 0 or path.find(b"//") >= 0
        ) and _UNRESOLVED.search(path):
            reason = "dot segment or empty segment in forwarded path"
            return _Refused(Code.BAD_REQUEST, reason, method, path, client)

        host = gateway.get(self._host)
        if host:
            headers["host"] = (host[0].decode("latin-1").strip(),)
        scheme = "http"
        proto = gateway.get("x-forwarded-proto")
        if proto:
            sent_scheme = proto[0].decode("latin-1").strip().lower()
            if sent_scheme in ("http", "https"):
                scheme = sent_scheme
        upgrade = gateway.get("upgrade")
        # Gateways drop the hop-by-hop Upgrade header on the auth request, but
        # Sec-WebSocket-Key is end-to-end and on every handshake (RFC 6455 §4.1).
        websocket = method == "GET" and (
            scope["type"] == "websocket"
            or "sec-websocket-key" in headers
            or (upgrade is not None and b"websocket" in b",".join(upgrade).lower())
        )
        return RequestView(method, path, query, headers, scheme, client, websocket)

    def _client(self, peer: str | None, forwarded_for: tuple[bytes, ...]) -> str | None:
        """The client address for a gateway ``peer`` that sent ``forwarded_for``;
        memoized (bounded) for one X-Forwarded-For field of ordinary length, as
        a client's address comes back with each of its requests."""
        entries = tuple(v.decode("latin-1") for v in forwarded_for)
        client = client_address(peer, entries, self.settings.trusts)
        if len(forwarded_for) == 1 and len(forwarded_for[0]) <= _MEMO_FORWARDED_FOR_BYTES:
            remember(self._clients, (peer, forwarded_for), client)
        return client

    def _trust(self, peer: str | None) -> bool:
        """Is ``peer`` a gateway in ``[forward_auth] trusted``? Memoized (bounded)."""
        trusted = self.settings.trusts(peer)
        if peer is None or len(peer) <= _MEMO_NAME_BYTES:
            remember(self._peers, peer, trusted)
        return trusted

    def _render(self, outcome: Outcome, method: str) -> Rendered:
        """The answer to the gateway for ``outcome`` of a ``method`` request."""
        if isinstance(outcome, Allow):
            return self._render_allow(outcome)
        if isinstance(outcome, Preflight):
            rendered = render_preflight(outcome)
            if self.dialect == "nginx":
                # A 2xx would let nginx forward the preflight to the app; the
                # grant travels as a 401 that the nginx config turns into 204.
                return _for_nginx(rendered, None, None)
            return rendered
        return self._render_denial(outcome, method)

    def _learn(self, name: bytes) -> tuple[str | None, int, bool]:
        """How a header name is read, memoized per raw name (bounded): its key
        (None for a client copy of an identity header); its weight in the
        dialect check (see ``__init__``; 0 when not counted); and whether it
        describes the gateway's own request rather than the original one."""
        key = self.policy.identity.classify(name)[0]
        weight = self._weight(normalize_name(name.decode("latin-1")))
        learned = (key, weight, key in _GATEWAY)
        if len(name) <= _MEMO_NAME_BYTES:
            remember(self._names, name, learned)
        return learned

    def _weight(self, normal: str) -> int:
        """A spelling-insensitive name's unit in the packed dialect counts."""
        if normal not in self._counted:
            return 0
        return 1 << (64 * self._counted.index(normal))

    def _check_dialect(self, raw: Iterable[tuple[bytes, bytes]]) -> _Refused | None:
        """Refuse another dialect's request-line headers, repetitions, and a
        missing URI or method header, the first in the order sent."""
        counts: dict[str, int] = {}
        for sent, _ in raw:
            normal = normalize_name(sent.decode("latin-1"))
            if normal in self._counted:
                counts[normal] = counts.get(normal, 0) + 1
        own = self._request_line or ()
        for name, count in counts.items():
            if name not in own and name in _ALL_REQUEST_LINE:
                return _Refused(Code.UNTRUSTED_PEER, f"{name} is not of the {self.dialect} dialect")
            if count > 1:
                return _Refused(Code.UNTRUSTED_PEER, f"{name} repeated")
        for name in own:
            if name not in counts:
                return _Refused(Code.UNTRUSTED_PEER, f"{name} missing")
        return None

    def _envoy_target(self, scope: Scope) -> tuple[str, bytes, bytes] | _Refused:
        """Envoy's (method, raw path, query): <prefix><original path>, and the
        original method and query."""
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode("latin-1"))
        prefix = self.settings.path.rstrip("/").encode("ascii")
        path = raw_path[len(prefix) :] if raw_path.startswith(prefix) else b""
        if not path.startswith(b"/"):
            return _Refused(Code.UNTRUSTED_PEER, "path is not below the endpoint's prefix")
        return _own_method(scope), path, bytes(scope.get("query_string", b""))

    def _method(self, sent: bytes) -> str:
        """A method header's value as a method name (upper case), or "" when it
        is not a token; memoized (bounded)."""
        text = sent.decode("latin-1").strip()
        method = text.upper() if is_token(text) else ""
        if len(sent) <= _MEMO_NAME_BYTES:
            remember(self._methods, sent, method)
        return method

    def _render_allow(self, allow: Allow) -> Rendered:
        headers = [_NO_STORE, (b"x-request-id", allow.request_id.encode())]
        headers += self._allow_headers(allow)
        return 200, headers, b""

    def _allow_headers(self, allow: Allow) -> list[tuple[bytes, bytes]]:
        """The headers of the 200 after the request id; memoized (bounded) per
        identity object, which the verified-token cache shares between requests.
        The caller must not change the list."""
        identity = allow.identity
        answer = self._answers.get(id(identity))
        if (
            answer is None
            or answer.identity is not identity
            or answer.response_headers != allow.response_headers
            or answer.withheld != allow.withheld
        ):
            answer = _Answer(
                identity, allow.response_headers, allow.withheld, self._encode_allow(allow)
            )
            remember(self._answers, id(identity), answer)
        return answer.headers

    def _encode_allow(self, allow: Allow) -> list[tuple[bytes, bytes]]:
        # Every configured identity header, empty when there is none: a gateway
        # that copies them overwrites whatever copy the client sent.
        identity = self.policy.identity.build(allow.identity, include_empty=True)
        headers = self.policy.identity.encoded(identity).copy()
        headers += encode_headers(allow.response_headers)
        if self.dialect == "envoy":
            removed = [p for p in allow.withheld if not p.startswith("cookie:")]
            if removed:
                headers.append((_ENVOY_REMOVE.encode(), ",".join(removed).encode("latin-1")))
        else:
            withheld = ", ".join(allow.withheld).encode("latin-1") if allow.withheld else b""
            headers.append((_WITHHELD_BYTES, withheld))
        return headers

    def _render_denial(self, denial: Denial, method: str) -> Rendered:
        rendered = render_denial(denial, method)
        if self.dialect == "nginx":
            return _for_nginx(rendered, denial.code, denial.location)
        return rendered

    def _audit_refusal(self, scope: Scope, refused: _Refused, denial: Denial, method: str) -> None:
        """The audit event of a request refused before the engine, in the engine's shape."""
        peer = scope.get("client")
        raw = refused.path if refused.path is not None else bytes(scope.get("raw_path") or b"")
        event: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": denial.request_id,
            "method": method,
            # Escapes instead of controls, bounded: the path is the sender's.
            "path": raw[:512]
            .decode("ascii", "backslashreplace")
            .encode("unicode_escape")
            .decode("ascii"),
            "rule": None,
            "outcome": "deny",
            "code": denial.code.value,
            "status": denial.status,
            "reason": refused.reason,
            "subject": None,
            "client": refused.client or (peer[0] if peer else None),
            "authenticator": None,
            "key_id": None,
            "fingerprint": None,
        }
        try:
            self._audit.emit(event)
        except Exception:
            log.exception("audit sink failed for request %s", denial.request_id)


def _own_method(scope: Scope) -> str:
    """The method of the request edgeauth received (a WebSocket handshake is a GET)."""
    return "GET" if scope["type"] == "websocket" else str(scope["method"]).upper()


def _for_nginx(rendered: Rendered, code: Code | None, location: str | None) -> Rendered:
    """A rendered answer as nginx's auth_request can take it: 403 when the real
    status is 403 (forbidden, insufficient_scope, csrf, untrusted_peer), 401
    otherwise, with the real status, code, login URL and JSON body in headers."""
    status, headers, body = rendered
    out = [(n, v) for n, v in headers if n != b"location"]
    out.append((_NGINX_STATUS.encode(), str(status).encode()))
    if code is not None:
        out.append((_NGINX_CODE.encode(), code.value.encode()))
    if location is not None:
        out.append((_NGINX_LOCATION.encode(), location.encode("ascii")))
    if (b"content-type", b"application/json") in headers:
        # auth_request discards the body; one line of JSON fits in a header.
        out.append((_NGINX_BODY.encode(), body))
    return (403 if status == 403 else 401), out, body
