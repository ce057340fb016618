"""The reverse-proxy front-end: forward allowed requests to ``[server] upstream``.

A thin front-end, like the middleware: build the view, ask the engine, render
a denial or a preflight, and otherwise do the wire work of a proxy:

- the upstream receives exactly the canonical path that was authorized (and
  the query untouched): the URL is built with ``yarl.URL(..., encoded=True)``
  so the client library cannot re-normalize it;
- hop-by-hop headers and every header named in ``Connection`` are dropped in
  both directions (RFC 9110 §7.6.1), then the identity headers and
  ``X-Forwarded-*`` are added, so ``Connection: x-user-id`` cannot remove them;
- bodies stream both ways with back-pressure, never buffered whole;
- the upstream's failures become 502 ``bad_gateway`` or 504
  ``gateway_timeout`` JSON, with nothing from the failure in them.

One pooled :class:`aiohttp.ClientSession` per worker, opened by
:meth:`Proxy.startup` (the server's lifespan startup).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import cast
from urllib.parse import quote_from_bytes

import aiohttp
import yarl
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict

from .asgi import (
    Receive,
    Scope,
    Send,
    decide,
    refuse_allowed,
    send_rendered,
    settling_view,
    withhold_credentials,
)
from .errors import BadRequest
from .headers import HOP_BY_HOP
from .model import Allow, Code, Denial, Header, RequestView
from .pipeline import Engine, json_denial
from .policy import Policy
from .responses import Rendered, render_denial

__all__ = ["Proxy", "drop_hop_by_hop", "request_headers", "response_headers"]

log = logging.getLogger("edgeauth.proxy")

_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
# Rebuilt by edgeauth on every request (DESIGN.md, "Headers toward the app").
_REBUILT = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# The edge answers "Expect: 100-continue" itself (the server sends 100 when the
# body is first read); passing it on would make the client library wait for a
# second 100 from the upstream (RFC 9110 §10.1.1).
_EDGE_ONLY = frozenset({b"expect"})
# Headers that decide where a request ends or where it goes: their underscore
# spellings never reach the upstream (the real ones are rebuilt or checked).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host", *_REBUILT})
# The upstream handshake is made by the WebSocket client library.
_WS_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)
# Request headers never forwarded, by their lower-case name, and by the '-'
# spelling of a name written with underscores.
_DROPPED = _HOP_BY_HOP | _REBUILT | _EDGE_ONLY
_WS_DROPPED = _DROPPED | _WS_HANDSHAKE
_UNDERSCORE_DROPPED = _HOP_BY_HOP | _FRAMING
# Close codes that must never be sent on the wire (RFC 6455 §7.4.1).
_UNSENDABLE_CLOSE = frozenset({1005, 1006, 1015})
_WS_MAX_MESSAGE = 16 * 1024 * 1024  # the same limit the server applies to clients
# Headers aiohttp would add to a request of its own accord.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
# Query bytes sent as they are; anything else (non-ASCII) is percent-encoded.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def drop_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop headers and those named in ``Connection``."""
    return response_headers(headers, (), cors=False)


def _connection_named(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """The header names listed in ``Connection`` (RFC 9110 §7.6.1), lower-case,
    but for those dropped as hop-by-hop anyway (``keep-alive``, ``close``...)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token not in _HOP_BY_HOP:
                    named.add(token)
    return named


def request_headers(
    headers: list[tuple[bytes, bytes]],
    view: RequestView,
    allow: Allow,
    policy: Policy,
    peer: str | None,
    *,
    websocket: bool = False,
) -> list[tuple[str, str]]:
    """The headers sent upstream, in order.

    ``headers`` are the client's after :func:`~edgeauth.asgi.view_from_scope`
    stripped identity headers (and ``X-Forwarded-*`` from untrusted peers).
    Raises :class:`~edgeauth.errors.BadRequest` for a value that is not UTF-8:
    the client library re-encodes values as UTF-8 and would alter those bytes.
    """
    if allow.withheld:
        headers = withhold_credentials(headers, allow.withheld)
    dropped = _WS_DROPPED if websocket else _DROPPED
    # A name with underscores is compared in its '-' spelling too: an upstream
    # that reads a CGI-style environ takes transfer_encoding for
    # Transfer-Encoding (request smuggling), x_forwarded_host for X-Forwarded-Host.
    underscored = _UNDERSCORE_DROPPED
    named = _connection_named(headers)
    if named:
        dropped, underscored = dropped | named, underscored | named
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        # find, not ``in``: on bytes, ``in`` first tries its operand as an
        # integer and pays for a formatted TypeError (CPython 3.11).
        if lowered in dropped or (
            lowered.find(b"_") >= 0 and lowered.replace(b"_", b"-") in underscored
        ):
            continue
        try:
            out.append((name.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise BadRequest("a header value is not UTF-8") from None
    # Added after hop-by-hop removal: Connection cannot name them away.
    out.extend(allow.upstream_headers)
    # The Host the engine matched rules on (the first one) is the one forwarded.
    host = policy.server.upstream_host or view.header("host")
    if host:
        out.append(("Host", host))
    out.extend(_forwarding(view, policy, peer))
    return out


def _forwarding(view: RequestView, policy: Policy, peer: str | None) -> list[Header]:
    """X-Forwarded-For/-Proto/-Host built by edgeauth: a trusted peer's chain is
    extended, anything else is replaced (view_from_scope removed it already)."""
    trusted = policy.trusts(peer)
    out: list[Header] = []
    chain = [v.strip() for v in view.headers.get("x-forwarded-for", ()) if v.strip()]
    if peer:
        out.append(("X-Forwarded-For", ", ".join([*chain, peer]) if trusted else peer))
    out.append(("X-Forwarded-Proto", view.scheme))
    inbound_host = view.headers.get("x-forwarded-host", ()) if trusted else ()
    host = inbound_host[0] if inbound_host else view.header("host")
    if host:
        out.append(("X-Forwarded-Host", host))
    return out


def response_headers(
    raw: Iterable[tuple[bytes, bytes]], extra: tuple[Header, ...], cors: bool
) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as sent to the client: hop-by-hop ones
    dropped, on a CORS rule ``Access-Control-*`` replaced by edgeauth's, and
    ``extra`` (CORS, RateLimit-*) added."""
    pairs = raw if isinstance(raw, tuple | list) else list(raw)
    named = _connection_named(pairs)
    dropped = _HOP_BY_HOP | named if named else _HOP_BY_HOP
    out: list[tuple[bytes, bytes]] = []
    # As for requests, a name with underscores is compared in its '-' spelling too.
    for name, value in pairs:
        lowered = name.lower()
        if lowered in dropped or (
            lowered.find(b"_") >= 0 and lowered.replace(b"_", b"-") in dropped
        ):
            continue
        if cors and lowered.startswith(b"access-control-"):
            continue
        out.append((name, value))
    if extra:
        out.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in extra)
    return out


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does the request carry a body (RFC 9112 §6.3)? The server has already
    refused ambiguous framing."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length" and value.strip() != b"0":
            return True
    return False


def _sendable(code: int | None, fallback: int) -> int:
    if code is None or code in _UNSENDABLE_CLOSE or not 1000 <= code < 5000:
        return fallback
    return code


class _RequestBody:
    """The client's body as an async iterator for the client library, counted
    against the rule's ``max_body``."""

    def __init__(self, receive: Receive, limit: int | None) -> None:
        self._receive = receive
        self._limit = limit
        self.done = asyncio.Event()
        self.too_large = False
        self.client_gone = False

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise _ClientGone
            chunk = message.get("body", b"")
            seen += len(chunk)
            if self._limit is not None and seen > self._limit:
                self.too_large = True
                raise _BodyTooLarge
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done.set()
                return


class _UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request without the headers aiohttp adds of its own accord
    (Accept, Accept-Encoding, User-Agent, a default Content-Type): only what the
    client sent and edgeauth sets goes upstream. The session's
    ``skip_auto_headers`` does the same, but builds and copies header
    dictionaries on every request to do it."""

    # Read where a body would get a default Content-Type.
    _skip_auto_headers = CIMultiDict((name, None) for name in _NO_AUTO_HEADERS)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        return


class _UpstreamConnection(ResponseHandler):
    """aiohttp's connection protocol, without a stale read timer.

    When resuming a read paused for back-pressure parses the end of the
    response, the response has ended and the connection has gone back to the
    pool, yet aiohttp 3.14 re-arms ``sock_read`` ([server] read_timeout)
    after it. The timer then fires on the idle connection, or during the
    next request sent over it (a large upload), which fails with a read
    timeout (504) while the upstream is fine. A response that has ended
    waits for nothing: the timer is dropped.
    """

    def resume_reading(self, resume_parser: bool = True) -> None:
        super().resume_reading(resume_parser)
        payload = self._payload
        if payload is not None and payload.is_eof():
            self._drop_timeout()


class Proxy:
    """The reverse proxy as an ASGI app; ``edgeauth serve`` runs it.

    >>> proxy = Proxy(policy, Engine(policy))     # doctest: +SKIP
    >>> await proxy.startup()                     # in the lifespan startup  # doctest: +SKIP
    """

    def __init__(self, policy: Policy, engine: Engine) -> None:
        upstream = policy.server.upstream
        if upstream is None:
            raise ValueError("the proxy needs [server] upstream")
        self.policy = policy
        self.engine = engine
        self._base = upstream.rstrip("/")
        self._ws_base = "ws" + self._base[len("http") :]  # http -> ws, https -> wss
        self._session: aiohttp.ClientSession | None = None

    async def startup(self) -> None:
        """Open the worker's pooled upstream session."""
        settings = self.policy.server
        # No pool cap: each client request holds at most one upstream
        # connection, so the client connections bound them.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=15)
        connector._factory = functools.partial(  # type: ignore[assignment]  # a subclass
            _UpstreamConnection, loop=connector._loop
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Never keep one user's upstream cookies for another user.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            # Only what the client sent and edgeauth sets goes upstream (Host is
            # always ours: the client's, [server] upstream_host, or for an
            # HTTP/1.0 client without one, the upstream's own host:port).
            request_class=_UpstreamRequest,
            max_line_size=65536,
            max_field_size=65536,
            # connect covers name resolution too; sock_read starts once the
            # request is sent, and restarts with every read.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.connect_timeout,
                sock_connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
        )

    async def aclose(self) -> None:
        """Close the upstream session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Proxy.startup() was not called")
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # the lifespan is the server's (EdgeServer)
        decided = None
        if scope["type"] == "http":
            try:
                settled = self._settled(scope)
            except Exception:  # a malformed scope: the whole path answers it
                settled = None
            if type(settled) is Denial:  # audited already
                await send_rendered(scope, send, render_denial(settled, scope["method"]))
                return
            decided = settled
        if decided is None:
            decided = await decide(scope, send, self.policy, self.engine)
        if decided is not None:
            outcome, view, headers = decided
            client = scope.get("client")
            peer = client[0] if client else None
            websocket = scope["type"] == "websocket"
            try:
                upstream = request_headers(
                    headers, view, outcome, self.policy, peer, websocket=websocket
                )
            except BadRequest as exc:
                code, reason = Code.BAD_REQUEST, str(exc)
                await refuse_allowed(scope, send, self.engine, view, outcome, code, reason)
                return
            except Exception:  # a header the server should not have sent: fail closed
                log.exception("cannot build the upstream request's headers")
                reason = "cannot build the upstream request's headers"
                code = Code.INTERNAL_ERROR
                await refuse_allowed(scope, send, self.engine, view, outcome, code, reason)
                return
            if websocket:
                await self._websocket(scope, receive, send, outcome, upstream)
            else:
                await self._http(scope, receive, send, view, outcome, headers, upstream)

    def _settled(
        self, scope: Scope
    ) -> tuple[Allow, RequestView, list[tuple[bytes, bytes]]] | Denial | None:
        """The common request decided as the middleware decides it
        (:meth:`Engine.settled <edgeauth.pipeline.Engine.settled>`), with the
        view the upstream request is built from; None: the whole path decides."""
        method = scope["method"]
        if (method != "GET" and method != "HEAD") or type(scope.get("raw_path")) is not bytes:
            return None
        read = settling_view(scope, self.policy)
        if read is None:
            return None
        view, peer = read
        fields = cast("dict[str, tuple[str, ...]]", view.headers)  # settling_view's own dict
        outcome = self.engine.settled(method, view.raw_path, fields, peer)
        if type(outcome) is Allow:
            return outcome, view, scope["headers"]
        return outcome

    def _url(self, base: str, allow: Allow, query: bytes) -> yarl.URL:
        target = allow.raw_path.decode("ascii")
        if query:
            target += "?" + quote_from_bytes(query, safe=_QUERY_SAFE)
        # encoded=True: the bytes go out as they are, no dot-segment removal or
        # re-quoting by yarl (the path was canonicalized by the engine).
        return yarl.URL(base + target, encoded=True)

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        view: RequestView,
        allow: Allow,
        headers: list[tuple[bytes, bytes]],
        upstream: list[tuple[str, str]],
    ) -> None:
        body = _RequestBody(receive, allow.max_body) if _has_body(headers) else None
        data = body.chunks() if body is not None else None
        url = self._url(self._base, allow, view.query)
        try:
            response = await self.session.request(
                scope["method"], url, headers=upstream, data=data, allow_redirects=False
            )
        except Exception as exc:  # any upstream failure is a 502/504, never a dropped connection
            if body is not None and body.client_gone:
                return
            if body is not None and body.too_large:
                # The rest of the body is not wanted: close instead of draining it.
                code, reason = Code.PAYLOAD_TOO_LARGE, "streamed body over max_body"
                await refuse_allowed(
                    scope, send, self.engine, view, allow, code, reason, close=True
                )
                return
            code = _failure_code(exc)
            log.warning("upstream request %s failed: %s", allow.request_id, type(exc).__name__)
            await send_rendered(scope, send, _failure(allow, code, view.method))
            return
        if not 200 <= response.status <= 599:
            # No status a client could be given (RFC 9110 §15: three digits, 1xx
            # are interim): the upstream is broken, as for any garbage.
            response.close()
            log.warning("upstream request %s failed: bad status", allow.request_id)
            await send_rendered(scope, send, _failure(allow, Code.BAD_GATEWAY, view.method))
            return
        try:
            await self._relay(send, receive, view, allow, body, response)
        finally:
            response.release()

    async def _relay(
        self,
        send: Send,
        receive: Receive,
        view: RequestView,
        allow: Allow,
        body: _RequestBody | None,
        response: aiohttp.ClientResponse,
    ) -> None:
        if self.engine.watches_upstream:
            await self.engine.upstream_response(view, allow, response.status)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response_headers(
                    response.raw_headers, allow.response_headers, allow.cors
                ),
            }
        )
        if response.content.is_eof():
            # The whole (small) body came with the head: no streaming, no
            # disconnect watcher to start and cancel.
            tail = response.content.read_nowait()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, body, response, gone))
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as exc:
            response.close()  # never return a half-read connection to the pool
            if not gone.is_set():
                # Too late for a 502: end the response without completing it,
                # so the client sees a broken response, not a short one.
                log.warning("upstream response %s broken off: %s", allow.request_id, exc)
            return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        allow: Allow,
        upstream: list[tuple[str, str]],
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        url = self._url(self._ws_base, allow, scope.get("query_string", b""))
        try:
            ws = await self.session.ws_connect(
                url,
                headers=upstream,
                protocols=tuple(scope.get("subprotocols", ())),
                autoping=True,
                max_msg_size=_WS_MAX_MESSAGE,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            code = _failure_code(exc)
            log.warning("upstream WebSocket %s failed: %s", allow.request_id, type(exc).__name__)
            await send_rendered(scope, send, _failure(allow, code, "GET"))
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": ws.protocol})
            await _relay_frames(receive, send, ws)
        finally:
            await ws.close()


async def _watch_disconnect(
    receive: Receive,
    body: _RequestBody | None,
    response: aiohttp.ClientResponse,
    gone: asyncio.Event,
) -> None:
    """Stop pulling from the upstream once the client has gone away (the
    request body, if any, read first)."""
    if body is not None:
        await body.done.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            response.close()
            return


async def _relay_frames(receive: Receive, send: Send, ws: aiohttp.ClientWebSocketResponse) -> None:
    """Relay messages both ways until one side closes; mirror its close code."""

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await ws.send_str(message["text"])
                else:
                    await ws.send_bytes(message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                reason = (message.get("reason") or "").encode()
                await ws.close(code=_sendable(message.get("code"), 1000), message=reason)
                return

    async def from_upstream() -> None:
        while True:
            frame = await ws.receive()
            if frame.type is aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": frame.data})
            elif frame.type is aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": frame.data})
            elif frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                reason = frame.extra if isinstance(frame.extra, str) else ""
                code = _sendable(ws.close_code, 1000)
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
            else:  # CLOSED or ERROR: the upstream went away without a close frame
                await send({"type": "websocket.close", "code": 1011, "reason": ""})
                return

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            with contextlib.suppress(OSError, aiohttp.ClientError, RuntimeError):
                task.result()  # a side that vanished mid-send ends the relay too
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _failure_code(exc: Exception) -> Code:
    """Too slow is 504, anything else (refused, reset, garbage) 502."""
    return Code.GATEWAY_TIMEOUT if isinstance(exc, TimeoutError) else Code.BAD_GATEWAY


def _failure(allow: Allow, code: Code, method: str) -> Rendered:
    """A JSON error for an allowed request the upstream failed (502, 504): not
    a denial, so logged rather than audited; it keeps the rule's CORS headers
    so browser code can read it."""
    return render_denial(
        json_denial(code, allow.request_id, allow.rule_id, allow.response_headers), method
    )
