"""ASGI middleware: ``app = EdgeAuth(app, policy="edgeauth.toml")``.

A thin front-end: build a :class:`~edgeauth.model.RequestView` from the scope,
ask the engine, and either call the app with the canonical path and identity
headers, or answer the denial itself. The wrapped app sees ``scope["path"]``
and ``scope["raw_path"]`` rewritten to exactly the path that was authorized,
and the verified identity in ``scope["edgeauth"]`` (None when anonymous).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from .audit import AuditSink
from .config import load_policy
from .forwarded import FORWARDING_HEADERS, client_address
from .headers import header_map
from .model import Allow, Code, Denial, Preflight, RequestView
from .pipeline import Engine
from .policy import Policy
from .responses import Rendered, error_body, render_denial, render_preflight

__all__ = ["ASGIApp", "EdgeAuth", "IdentityRequired"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("edgeauth")


class IdentityRequired(Exception):
    """Raised by :func:`edgeauth.fastapi.current_identity` when a route needs an
    identity and the request has none; answered with edgeauth's 401 JSON."""


class _BodyTooLarge(Exception):
    pass


class EdgeAuth:
    """Guard an ASGI app with a policy.

    >>> app = EdgeAuth(app, policy=load_policy("edgeauth.toml"))   # doctest: +SKIP
    >>> app.add_middleware(EdgeAuth, policy="edgeauth.toml")        # FastAPI  # doctest: +SKIP
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy | str | os.PathLike[str],
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.app = app
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        kwargs: dict[str, Any] = {"audit": audit}
        if clock is not None:
            kwargs["clock"] = clock
        self.engine = Engine(self.policy, **kwargs)
        # A Starlette/FastAPI app wrapped directly: its own error middleware would
        # turn IdentityRequired into a 500 before it reached us.
        add_handler = getattr(app, "add_exception_handler", None)
        if callable(add_handler):
            add_handler(IdentityRequired, _starlette_identity_required)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            view, headers = self._view(scope)
        except Exception:
            log.exception("cannot read the request scope")
            await _send_rendered(
                scope, send, render_denial(Denial("-", Code.INTERNAL_ERROR), "GET")
            )
            return
        outcome = await self.engine.evaluate(view)
        if isinstance(outcome, Allow):
            await self._forward(scope, receive, send, outcome, headers)
        elif isinstance(outcome, Preflight):
            await _send_rendered(scope, send, render_preflight(outcome))
        else:
            await _send_rendered(scope, send, render_denial(outcome, view.method))

    def _view(self, scope: Scope) -> tuple[RequestView, list[tuple[bytes, bytes]]]:
        headers = self.policy.identity.strip(scope["headers"])
        client = scope.get("client")
        peer = client[0] if client else None
        trusted = self.policy.trusts(peer)
        if not trusted:
            headers = [(n, v) for n, v in headers if n.lower() not in FORWARDING_HEADERS]
        mapped = header_map(headers)
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if trusted:
            proto = mapped.get("x-forwarded-proto")
            if proto and proto[-1].strip().lower() in ("http", "https"):
                scheme = proto[-1].strip().lower()
        view = RequestView(
            method="GET" if scope["type"] == "websocket" else scope["method"].upper(),
            raw_path=_raw_path(scope),
            query=scope.get("query_string", b""),
            headers=mapped,
            scheme=scheme,
            client=client_address(peer, mapped.get("x-forwarded-for", ()), self.policy.trusts),
            websocket=scope["type"] == "websocket",
        )
        return view, headers

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        allow: Allow,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        if allow.withheld:
            headers = _withhold(headers, allow.withheld)
        if allow.upstream_headers:
            headers = [*headers, *((n.encode(), v.encode()) for n, v in allow.upstream_headers)]
        inner = dict(scope)
        inner["path"] = allow.path
        inner["raw_path"] = allow.raw_path
        inner["headers"] = headers
        inner["edgeauth"] = allow.identity
        inner["edgeauth.request_id"] = allow.request_id
        started = False
        extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in allow.response_headers]

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
                if extra and message["type"] == "http.response.start":
                    message["headers"] = [
                        *(
                            h
                            for h in message.get("headers", ())
                            if not h[0].lower().startswith(b"access-control-")
                        ),
                        *extra,
                    ]
            await send(message)

        app_receive = receive if allow.max_body is None else _limited(receive, allow.max_body)
        try:
            await self.app(inner, app_receive, send_wrapper)
        except IdentityRequired:
            if started:
                raise
            await _send_rendered(scope, send, _identity_required(allow.request_id))
        except _BodyTooLarge:
            if started:
                raise
            await _send_rendered(
                scope,
                send,
                render_denial(
                    Denial(allow.request_id, Code.PAYLOAD_TOO_LARGE, allow.rule_id), "POST"
                ),
            )


def _raw_path(scope: Scope) -> bytes:
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


def _withhold(
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


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return wrapped


def _identity_required(request_id: str) -> Rendered:
    body = error_body(Code.MISSING_CREDENTIALS, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"www-authenticate", b'Bearer realm="edgeauth"'),
        (b"x-request-id", request_id.encode()),
    ]
    return 401, headers, body


async def _starlette_identity_required(request: Any, exc: Exception) -> Any:
    from starlette.responses import Response

    status, headers, body = _identity_required(request.scope.get("edgeauth.request_id", "-"))
    response = Response(body, status_code=status)
    for name, value in headers:
        response.headers[name.decode()] = value.decode()
    return response


async def _send_rendered(scope: Scope, send: Send, rendered: Rendered) -> None:
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
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
