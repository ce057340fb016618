"""ASGI plumbing shared by the front-ends: scope -> view, credentials withheld,
edge responses sent. No decisions are made here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import quote

from .forwarded import client_address
from .memo import remember
from .model import Allow, Code, Denial, Preflight, RequestView
from .pipeline import Engine, json_denial, new_request_id
from .policy import Policy
from .responses import Rendered, render_denial, render_preflight

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "audit_refusal",
    "content_length",
    "decide",
    "raw_path",
    "refuse",
    "refuse_allowed",
    "send_rendered",
    "settling_fields",
    "settling_view",
    "view_from_scope",
    "withhold_credentials",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("edgeauth")


def view_from_scope(scope: Scope, policy: Policy) -> tuple[RequestView, list[tuple[bytes, bytes]]]:
    """The engine's view of an ASGI request, and its headers after stripping.

    Identity headers are removed in every spelling; ``X-Forwarded-*`` and
    ``Forwarded`` are removed unless the peer is a trusted proxy. When nothing
    is removed, the headers returned are the scope's own list: callers build
    new lists rather than change it.
    """
    peer, trusted = _peer(scope.get("client"), policy)
    # One pass: find identity headers in every spelling (and, from untrusted
    # peers, X-Forwarded-* and Forwarded, which frameworks reading a CGI-style
    # environ also take in their X_Forwarded_Host spelling), and index the rest.
    # How a name is treated is memoized per name (IdentityHeaders.classify).
    keys = policy.identity.keys_for(trusted)
    classify = policy.identity.classify
    which = 0 if trusted else 1
    headers = scope["headers"]
    if type(headers) is not list:
        headers = list(headers)
    mapped: dict[str, tuple[str, ...]] = {}
    stripped = False
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            key = classify(name)[which] or ""
        if not key:
            stripped = True
            continue
        # Latin-1 is what HTTP field bytes mean; for ASCII (nearly every value)
        # the default decoder gives the same text and skips a codec lookup.
        text = value.decode() if value.isascii() else value.decode("latin-1")
        previous = mapped.get(key)
        mapped[key] = (text,) if previous is None else (*previous, text)
    if stripped:  # rare: a second pass keeps the others in order
        headers = [(n, v) for n, v in headers if (keys.get(n) or classify(n)[which])]
    websocket = scope["type"] == "websocket"
    raw = scope.get("raw_path")
    view = _view(
        scope,
        policy,
        "GET" if websocket else scope["method"].upper(),
        raw if type(raw) is bytes else raw_path(scope),
        mapped,
        peer,
        trusted,
        websocket,
    )
    return view, headers


def settling_fields(
    scope: dict[str, Any], policy: Policy, *, forwarded: bool = False
) -> tuple[dict[str, tuple[str, ...]], str | None, bool] | None:
    """What :meth:`Engine.settled <edgeauth.pipeline.Engine.settled>` reads of
    an ASGI request: its Cookie and Authorization values, its Host when a rule
    is for some hosts only, and its X-Forwarded-For (kept from a trusted peer
    only); with the peer's address and whether it is trusted. ``forwarded``
    adds Host always, and X-Forwarded-Host and -Proto (from a trusted peer),
    which the reverse proxy builds the upstream request from. None when the
    request needs :func:`view_from_scope` (and the whole path) instead.

    That is when a header is to be stripped (in any spelling, or
    ``X-Forwarded-*`` from an untrusted peer) or has a name not classified
    yet, when Host comes twice, when there is an Origin (CORS and CSRF read
    it), or when the headers are not a list of two-item tuples of bytes. The
    scope is the dict servers give (its callers send any other mapping the
    whole way: dict lookups are the fast ones).
    """
    headers = scope["headers"]
    if type(headers) is not list:
        return None
    peer, trusted = _peer(scope.get("client"), policy)
    keys = policy.identity.keys_for(trusted)
    looked = _SETTLING_FORWARDED if forwarded else _SETTLING
    fields: dict[str, tuple[str, ...]] = {}
    host: bytes | None = None
    for pair in headers:
        if type(pair) is not tuple or len(pair) != 2:  # a list, say: the whole path reads it
            return None
        name, value = pair  # a tuple of two: its items, with no iterator
        key = keys.get(name)
        if not key or type(value) is not bytes:  # stripped, not classified yet, malformed
            return None
        if key not in looked:
            continue
        if key == "host":
            if host is not None:
                return None
            host = value
        elif key == "origin":
            return None
        else:
            text = value.decode("latin-1")  # as the view decodes it (ASCII: as UTF-8 would)
            previous = fields.get(key)
            fields[key] = (text,) if previous is None else (*previous, text)
    if host is not None and (forwarded or policy.needs_host):  # else nothing reads it
        fields["host"] = (host.decode("latin-1"),)  # Latin-1, as the view decodes it
    return fields, peer, trusted


def settling_view(scope: Scope, policy: Policy) -> tuple[RequestView, str | None] | None:
    """:func:`settling_fields` for the reverse proxy: a view of the request
    whose headers are the fields read (``forwarded``), and the peer's
    address; None as there. The caller vouches for a GET or HEAD whose raw
    path is bytes."""
    if type(scope) is not dict:  # see settling_fields
        return None
    read = settling_fields(scope, policy, forwarded=True)
    if read is None:
        return None
    fields, peer, trusted = read
    view = _view(scope, policy, scope["method"], scope["raw_path"], fields, peer, trusted, False)
    return view, peer


def _view(
    scope: Scope,
    policy: Policy,
    method: str,
    raw: bytes,
    headers: dict[str, tuple[str, ...]],
    peer: str | None,
    trusted: bool,
    websocket: bool,
) -> RequestView:
    """The view of a request whose header fields (all, or those read) are
    ``headers``: the client address and scheme from a trusted peer's
    X-Forwarded-For and -Proto."""
    address = peer
    if trusted:
        address = client_address(peer, headers.get("x-forwarded-for", ()), policy.trusts)
    return RequestView(
        method,
        raw,
        scope.get("query_string", b""),
        headers,
        _scheme(scope, headers, trusted),
        address,
        websocket,
    )


# The headers settling_fields looks at, and settling_view.
_SETTLING: Final = frozenset({"cookie", "authorization", "x-forwarded-for", "host", "origin"})
_SETTLING_FORWARDED: Final = _SETTLING | {"x-forwarded-host", "x-forwarded-proto"}


def _scheme(scope: Scope, headers: dict[str, tuple[str, ...]], trusted: bool) -> str:
    """The request's scheme: the server's, or a trusted peer's X-Forwarded-Proto."""
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    if trusted:
        proto = headers.get("x-forwarded-proto")
        if proto and proto[-1].strip().lower() in ("http", "https"):
            scheme = proto[-1].strip().lower()
    return scheme


def _peer(client: Any, policy: Policy) -> tuple[str | None, bool]:
    """The peer's address, from the scope's ``client``, and whether it is one
    of ``[server] trusted_proxies``."""
    peer = client[0] if client else None
    return peer, policy.trusts(peer) if policy.server.trusted_proxies else False


async def decide(
    scope: Scope, send: Send, policy: Policy, engine: Engine
) -> tuple[Allow, RequestView, list[tuple[bytes, bytes]]] | None:
    """The front-ends' common first step: decide the request in ``scope``.

    Denials and preflights are answered here (None is returned); an allowed
    request comes back with its view and its stripped headers to forward.
    """
    try:
        view, headers = view_from_scope(scope, policy)
    except Exception:
        log.exception("cannot read the request scope")
        denial = Denial(new_request_id(), Code.INTERNAL_ERROR)
        refuse(scope, engine.report, denial, "cannot read the request scope")
        await send_rendered(scope, send, render_denial(denial, "GET"))
        return None
    outcome = await engine.evaluate(view)
    if isinstance(outcome, Allow):
        return outcome, view, headers
    if isinstance(outcome, Preflight):
        await send_rendered(scope, send, render_preflight(outcome))
    else:
        await send_rendered(scope, send, render_denial(outcome, view.method))
    return None


def raw_path(scope: Scope) -> bytes:
    raw = scope.get("raw_path")
    if raw is not None:
        return bytes(raw)
    # No raw_path from the server: rebuild it from the decoded path (and the
    # mount point, which ASGI servers put in front of both).
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path
    return quote(path, safe="/-._~!$&'()*+,=:@%").encode("ascii")


def withhold_credentials(
    headers: list[tuple[bytes, bytes]], places: tuple[str, ...]
) -> list[tuple[bytes, bytes]]:
    """Remove credentials that must not reach the app (``forward_credential = false``)."""
    names = {p.encode() for p in places if not p.startswith("cookie:")}
    cookies = {p[len("cookie:") :] for p in places if p.startswith("cookie:")}
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in names:
            continue
        if lowered == b"cookie" and cookies:
            kept = [
                pair
                for pair in value.decode("latin-1").split(";")
                if pair.partition("=")[0].strip() not in cookies
            ]
            if not any(p.strip() for p in kept):
                continue
            value = ";".join(kept).strip().encode("latin-1")
        out.append((name, value))
    return out


def refuse(
    scope: Scope, report: Callable[[RequestView, Denial, str], None], denial: Denial, reason: str
) -> None:
    """Audit ``denial`` of a request that never got a view (its scope cannot
    be read, or nothing serves its path) through ``report`` (an engine's
    :meth:`~edgeauth.pipeline.Engine.report`), with what can be told of it:
    the method and raw path when they are of the types ASGI gives, and the
    peer. Never raises: the answer goes out regardless."""
    method, client = scope.get("method"), scope.get("client")
    peer = client[0] if type(client) in (tuple, list) and client else None
    try:
        raw = raw_path(scope)
    except Exception:  # a path of a type ASGI does not give
        raw = b""
    method = method if type(method) is str else "-"
    audit_refusal(report, denial, reason, method, raw, peer if type(peer) is str else None)


def audit_refusal(
    report: Callable[[RequestView, Denial, str], None],
    denial: Denial,
    reason: str,
    method: str,
    raw: bytes,
    peer: str | None,
) -> None:
    """Audit ``denial`` of a request known only by its method, raw path and
    peer (the engine bounds and escapes the path). Never raises."""
    try:
        report(RequestView(method, raw, client=peer), denial, reason)
    except Exception:  # the answer goes out whatever the audit does
        log.exception("cannot audit request %s", denial.request_id)


async def refuse_allowed(
    scope: Scope,
    send: Send,
    engine: Engine,
    view: RequestView,
    allow: Allow,
    code: Code,
    reason: str,
    *,
    close: bool = False,
) -> None:
    """Answer an allowed request that cannot go on (its streamed body over
    ``max_body``, a header the upstream cannot be sent, an app that needs an
    identity the request has not got): a denial with its code's challenge and
    the rule's CORS and RateLimit-* headers, so browser code can read it,
    audited like the engine's own with the identity the request was allowed
    with; ``close`` asks the client to close the connection."""
    denial = json_denial(code, allow.request_id, allow.rule_id, allow.response_headers)
    engine.report(view, denial, reason, allow.identity)
    status, headers, body = render_denial(denial, view.method)
    if close:
        headers.append((b"connection", b"close"))
    await send_rendered(scope, send, (status, headers, body))


async def send_rendered(scope: Scope, send: Send, rendered: Rendered) -> None:
    status, headers, body = rendered
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            # Without the denial-response extension the server turns this into a 403.
            await send({"type": "websocket.close", "code": 1008})
        return
    headers = [*headers, (b"content-length", content_length(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def content_length(body: bytes) -> bytes:
    """The Content-Length value of ``body``; the few lengths of edgeauth's own
    answers are remembered."""
    length = len(body)
    value = _LENGTHS.get(length)
    if value is None:
        value = str(length).encode()
        if length <= _REMEMBERED_LENGTH:
            remember(_LENGTHS, length, value, 256)
    return value


_LENGTHS: Final[dict[int, bytes]] = {}
_REMEMBERED_LENGTH: Final = 4096
