"""The middleware's request path, compiled: :class:`Guard`, which
:class:`edgeauth.EdgeAuth <edgeauth.middleware.EdgeAuth>` is.

A thin front-end: build a :class:`~edgeauth.model.RequestView` from the scope,
ask the engine, and either call the app with the canonical path and identity
headers, or answer the denial itself. The wrapped app sees ``scope["path"]``
and ``scope["raw_path"]`` rewritten to exactly the path that was authorized,
and the verified identity in ``scope["edgeauth"]`` (None when anonymous).

A repeated allowed request with a cached credential (most of the traffic),
and a repeated request to an ``api`` rule without any credential, are decided
without the view: one pass over the headers
(:func:`~edgeauth.asgi.settling_fields`), then
:meth:`~edgeauth.pipeline.Engine.settled`, which answers only when
``evaluate`` would answer the same way; everything else takes the whole path.
Once the engine has settled such a 401 and written its audit line to the
file sink, a request alike (the same method, raw path and peer, none of the
fields the decision reads) is answered on its lane
(:class:`~edgeauth.pipeline.MissingLane`): the same line under a new
request id, and the same 401, prepared once.

Calling a guard is not a coroutine of its own: it returns what the server is
to await. For an allowed request with a verified identity that is settled
this way, that is the app's own coroutine, called with the app's scope; for
a settled denial, the two sends of its answer
(:func:`~edgeauth.sending.send_both`, awaited by the interpreter); for
everything else, :func:`_whole`, which answers or calls the app as the
request needs. The steps on that path are module functions rather than
methods: compiled code calls them directly, where a method of a class that
interpreted code may subclass is called through the interpreter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from mypy_extensions import mypyc_attr

from .asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    content_length,
    decide,
    refuse,
    refuse_allowed,
    send_rendered,
    settling_fields,
    withhold_credentials,
)
from .audit import AuditSink
from .config import load_policy
from .model import Allow, Code, Denial, RequestView, encode_headers
from .pipeline import MISSING_ANSWER, Engine, json_denial
from .policy import Policy
from .responses import Rendered, render_denial
from .sending import send_both

__all__ = ["ASGIApp", "Guard", "IdentityRequired"]


_IDENTITY_REQUIRED = "the app requires an identity"  # the audit event's reason

log = logging.getLogger("edgeauth")


class IdentityRequired(Exception):
    """Raised by :func:`edgeauth.fastapi.current_identity` when a route needs an
    identity and the request has none; answered with edgeauth's 401 JSON. For
    a request that has an identity it is the app's error like any other: the
    request was not missing a credential."""


# Subclassed by edgeauth.middleware.EdgeAuth, which is interpreted code.
@mypyc_attr(allow_interpreted_subclasses=True)
class Guard:
    """Guard an ASGI app with a policy: what :class:`edgeauth.EdgeAuth
    <edgeauth.middleware.EdgeAuth>` is, but for what servers are shown of
    its ``__call__``."""

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
            add_handler(IdentityRequired, self._starlette_identity_required)
        self._show_servers()

    def _show_servers(self) -> None:
        """What servers are to be shown of this guard: nothing here; see
        :class:`edgeauth.middleware.EdgeAuth`."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        try:
            settled = settled_scope(self, scope)
        except Exception:  # a malformed scope: the whole path answers it
            settled = None
        if isinstance(settled, str):  # on a lane: the settled 401's request id, audited already
            status, headers, body = MISSING_ANSWER.render(settled)
        elif isinstance(settled, Denial):  # audited already; a plain HTTP request
            status, headers, body = render_denial(settled, scope["method"])
            headers.append((b"content-length", content_length(body)))  # a list of its own
        # Settled and allowed with an identity: the app's own coroutine is what
        # the server awaits. (IdentityRequired means no identity: _whole
        # answers it for an anonymous request.)
        elif settled is not None and settled["edgeauth"] is not None:
            return self.app(settled, receive, send)
        else:
            return _whole(self, scope, receive, send, settled)
        return send_both(
            send,
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        )

    def _closing(self, send: Send) -> Send:
        """Release the policy's connections (Redis, JWKS) when the app shuts down."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.policy.aclose()
            await send(message)

        return wrapped

    async def _starlette_identity_required(self, request: Any, exc: Exception) -> Any:
        from starlette.responses import Response

        rid = request.scope.get("edgeauth.request_id", "-")
        status, headers, body = _identity_required(self, request.scope, rid)
        response = Response(body, status_code=status)
        for name, value in headers:
            response.headers[name.decode()] = value.decode()
        return response


async def _whole(
    guard: Guard, scope: Scope, receive: Receive, send: Send, settled: dict[str, Any] | None
) -> None:
    """A request the guard's call does not answer or hand to the app itself
    (all but a settled denial and a settled allowed request with an
    identity); ``settled``: the app's scope :func:`settled_scope` made for an
    anonymous one, else None."""
    kind = scope["type"]
    if kind != "http" and kind != "websocket":
        if kind == "lifespan":
            send = guard._closing(send)
        await guard.app(scope, receive, send)
        return
    inner = settled
    if inner is None:
        decided = await decide(scope, send, guard.policy, guard.engine)
        if decided is None:
            return
        allow, view, headers = decided
        try:
            inner = inner_scope(guard, scope, allow, headers)
        except Exception:  # a header the server should not have sent: fail closed
            log.exception("cannot build the app's scope")
            reason = "cannot build the app's scope"
            await refuse_allowed(
                scope, send, guard.engine, view, allow, Code.INTERNAL_ERROR, reason
            )
            return
        if allow.response_headers or guard.engine.watches_upstream or allow.max_body is not None:
            await _forward_watched(guard, scope, inner, receive, send, allow, view)
            return
    # The common allowed request (no CORS, limits or body limit): nothing to
    # add to the response, nothing to watch.
    try:
        await guard.app(inner, receive, send)
    except IdentityRequired:
        if inner["edgeauth"] is not None:  # as for a settled one, whose app is not wrapped
            raise
        rendered = _identity_required(guard, inner, inner["edgeauth.request_id"])
        await send_rendered(scope, send, rendered)


def settled_scope(guard: Guard, scope: Scope) -> dict[str, Any] | Denial | str | None:
    """The app's scope for the common allowed HTTP request, or the denial of
    a request without a credential, when :meth:`Engine.settled
    <edgeauth.pipeline.Engine.settled>` can decide it from the few header
    fields it reads (for a request on one of the engine's lanes, that
    denial's request id alone, audited already: see
    :class:`~edgeauth.pipeline.MissingLane`); None: the whole path decides
    (and any other scope type goes its own way)."""
    if type(scope) is not dict:  # as servers give it (and dict lookups are the fast ones)
        return None
    kind = scope["type"]
    if type(kind) is not str or kind != "http":
        return None
    method = scope["method"]
    raw = scope.get("raw_path")
    if type(method) is not str or (method != "GET" and method != "HEAD") or type(raw) is not bytes:
        return None
    read = settling_fields(scope, guard.policy)
    if read is None:
        return None
    fields, peer = read[0], read[1]
    engine = guard.engine
    # None of the fields settled() reads, and a peer that is a plain str (one
    # of a type of its own may equal another spelling, audited otherwise).
    if not fields and engine.lanes and (peer is None or type(peer) is str):
        lane = engine.lanes.get(raw)
        if lane is not None and lane.method == method:
            tail = lane.tails.get(peer)
            if tail is not None:
                return engine.lane_denial(lane, tail)
    outcome = engine.settled(method, raw, fields, peer)
    if type(outcome) is Allow:
        return inner_scope(guard, scope, outcome, scope["headers"])
    return outcome


def inner_scope(
    guard: Guard, scope: Scope, allow: Allow, headers: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The app's scope: the canonical path, the stripped headers with the
    identity headers added, the identity and the request id."""
    if allow.withheld:
        headers = withhold_credentials(headers, allow.withheld)
    if allow.upstream_headers:  # a new list: ``headers`` may be the scope's own
        headers = headers + guard.policy.identity.encoded(allow.upstream_headers)
    inner = dict(scope)
    inner["path"] = allow.path
    inner["raw_path"] = allow.raw_path
    inner["headers"] = headers
    inner["edgeauth"] = allow.identity
    inner["edgeauth.request_id"] = allow.request_id
    return inner


async def _forward_watched(
    guard: Guard,
    scope: Scope,
    inner: Scope,
    receive: Receive,
    send: Send,
    allow: Allow,
    view: RequestView,
) -> None:
    """Call the app with the response headers added (CORS, RateLimit-*), its
    status reported to the engine and its request body bounded."""
    started = responded = False
    extra = encode_headers(allow.response_headers)

    async def send_wrapper(message: Message) -> None:
        nonlocal started
        if responded:
            return  # edgeauth answered already (body over max_body)
        if message["type"] in ("http.response.start", "websocket.accept"):
            started = True
            if message["type"] == "http.response.start" and guard.engine.watches_upstream:
                await guard.engine.upstream_response(view, allow, message["status"])
            if extra and message["type"] == "http.response.start":
                kept = message.get("headers", ())
                if allow.cors:  # the rule's CORS answer replaces the app's
                    kept = [h for h in kept if not h[0].lower().startswith(b"access-control-")]
                message["headers"] = [*kept, *extra]
        await send(message)

    app_receive = receive
    if allow.max_body is not None:
        limit, seen = allow.max_body, 0

        async def app_receive() -> Message:
            nonlocal seen, responded
            if responded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answered here rather than raised: an exception would
                    # become the app framework's own 500.
                    if not started:
                        code, reason = Code.PAYLOAD_TOO_LARGE, "streamed body over max_body"
                        await refuse_allowed(scope, send, guard.engine, view, allow, code, reason)
                    responded = True
                    return {"type": "http.disconnect"}
            return message

    try:
        await guard.app(inner, app_receive, send_wrapper)
    except IdentityRequired:
        if started or allow.identity is not None:
            raise
        code = Code.MISSING_CREDENTIALS  # with the rule's CORS and RateLimit-* fields
        await refuse_allowed(scope, send, guard.engine, view, allow, code, _IDENTITY_REQUIRED)
    except Exception:
        if not responded:
            raise
        # The app failed on the disconnect it was handed after the 413.


def _identity_required(guard: Guard, inner: Scope, request_id: str) -> Rendered:
    """The 401 for an app that needs an identity the request has not got
    (:func:`edgeauth.fastapi.current_identity`), audited as a denial."""
    denial = json_denial(Code.MISSING_CREDENTIALS, request_id)
    refuse(inner, guard.engine.report, denial, _IDENTITY_REQUIRED)
    return render_denial(denial, inner.get("method", "GET"))
