"""``edgeauth serve``: the proxy and the forward-auth endpoint on embedded uvicorn.

The server is uvicorn with uvloop, the httptools parser and the websockets
sans-I/O protocol, with one addition: :class:`EdgeHttpProtocol`, a subclass of
uvicorn's httptools protocol that enforces what uvicorn leaves open (see
docs/proxy.md, "Why this server"):

- a request head larger than ``max_head_bytes``, or with more than
  ``max_headers`` fields, gets 431 ``headers_too_large`` and a closed
  connection (uvicorn has no such limit with httptools);
- a request head that does not arrive within ``head_timeout`` (slow clients,
  idle new connections) closes the connection (uvicorn times out only idle
  keep-alive connections);
- malformed or ambiguous framing gets 400 ``bad_request`` JSON and a closed
  connection. llhttp (httptools) refuses Content-Length with
  Transfer-Encoding, repeated Content-Length, obsolete line folding and bare
  LF line ends, which h11 accepts in part; this class adds a missing or
  repeated ``Host`` (RFC 9112 §3.2).

Requests for the forward-auth endpoint are answered by the protocol itself
when nothing else is in flight on the connection (see
:meth:`EdgeHttpProtocol.on_headers_complete`): the same app and the same bytes,
without an ASGI task per decision.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools
import uvicorn
import uvicorn.config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.supervisors.multiprocess import Multiprocess
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import Request

from .asgi import Message, Receive, Scope, Send, audit_refusal, raw_path, refuse, send_rendered
from .config import load_policy, parse_listen
from .errors import ConfigError, ConfigIssue
from .model import Code, Denial
from .pipeline import Engine, new_request_id
from .policy import Policy
from .proxy import Proxy
from .responses import Rendered, render_denial

if TYPE_CHECKING:
    from .forward_auth import ForwardAuthApp

__all__ = ["EdgeHttpProtocol", "EdgeServer", "HeadLimits", "parse_listen", "serve"]

log = logging.getLogger("edgeauth.server")

GRACEFUL_TIMEOUT = 30


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Limits on the request head, from ``[server]``."""

    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0


class _Config(uvicorn.Config):
    """uvicorn's config plus the head limits (picklable, for worker processes)."""

    def __init__(self, app: Any, *, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _HeadTooLarge(Exception):
    pass


class _BadHost(Exception):
    """A head refused with 400: a missing or repeated Host, a fragment."""


class _Deadline:
    """A deadline that moves often, kept with one timer: moving it or clearing
    it only records the time; a timer that fires before the deadline sets
    itself again for it, and ``expired`` is called once it has passed."""

    __slots__ = ("_expired", "_loop", "_timer", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._timer: asyncio.TimerHandle | None = None
        self.at: float | None = None
        """The deadline (event-loop time), or None when none runs."""

    def start(self, seconds: float) -> None:
        self.at = at = self._loop.time() + seconds
        if self._timer is None:
            self._timer = self._loop.call_at(at, self._fire, at)

    def cancel(self) -> None:
        self.at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, armed_for: float) -> None:
        self._timer = None
        at = self.at
        if at is None:
            return  # cleared since: the next start sets a timer again
        if at > armed_for:
            self._timer = self._loop.call_at(at, self._fire, at)
            return
        self.at = None
        self._expired()


class _Closed(Exception):
    """A request pipelined after the connection's last answer: not read."""


class _Resumed:
    """Awaitable: a coroutine already run by hand up to where it first waited
    (on ``waiting``), to be carried on by a task. Its first step hands the task
    what the coroutine waits on; the next ones go to the coroutine."""

    __slots__ = ("_coroutine", "_waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, Rendered], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting: Any = waiting

    def __await__(self) -> Generator[Any, Any, Rendered]:
        return self

    def __iter__(self) -> _Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        waiting = self._waiting
        if waiting is not _NOTHING:
            self._waiting = _NOTHING
            return waiting
        return self._coroutine.send(value)

    def throw(self, *exc: Any) -> Any:
        self._waiting = _NOTHING
        return self._coroutine.throw(*exc)

    def close(self) -> None:
        self._coroutine.close()


_NOTHING: Any = object()
_STATUS = {status: line[:-2] for status, line in STATUS_LINE.items()}  # without CRLF
_FIELD = b": ".join  # a (name, value) header as its line, without CRLF
_LENGTHS: dict[int, bytes] = {}


def _length_line(length: int) -> bytes:
    line = b"content-length: %d" % length
    if length < 4096:  # the lengths of edgeauth's own answers: few, short
        _LENGTHS[length] = line
    return line


_INTERNAL_ERROR: Rendered = (
    500,
    [(b"content-type", b"text/plain; charset=utf-8")],
    b"Internal Server Error",
)


class _CoalescingTransport(asyncio.Transport):
    """The connection's transport as the response cycles see it: the first
    write of each response (its head) is held until the next one (the body),
    so that a small response leaves in one write and one TCP segment instead
    of two. Anything held goes out by itself at the latest in the next turn of
    the event loop, and before the protocol writes or closes on its own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self.held: bytes | None = None
        """The head of the response being written, until its first body part."""
        self._fresh = True  # the next write starts a response
        self.ended = False
        """The connection's last bytes are written (a refusal): nothing more goes out."""

    def next_response(self) -> None:
        self._fresh = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.ended:
            return
        held = self.held
        if held is not None:
            self.held = None
            self._transport.writelines((held, data))
        elif self._fresh:
            self._fresh = False
            self.held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self._transport.is_closing():  # else the connection is gone
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


# How much of a refused target the parser keeps for its audit event (the
# engine bounds every audited path besides).
_AUDITED_TARGET = 512
# How long a connection closed after a refusal goes on reading (and dropping)
# what the client still sends, so that the refusal is not lost to a reset.
_LINGER_SECONDS = 2.0


def _audit_unparsed(
    app: Any, denial: Denial, reason: str, method: str, target: bytes, client: Any
) -> None:
    """Audit a request refused before it became an ASGI request (the HTTP
    parser's 400 and 431, a refused WebSocket handshake) like a decision, so
    that smuggling attempts and oversized heads show in the audit trail: no
    rule, the path of the target only. Never raises."""
    if isinstance(app, EdgeServer):
        peer = client[0] if client else None
        audit_refusal(app.engine.report, denial, reason, method, _audited_path(target), peer)


def _audited_path(target: bytes) -> bytes:
    """What an audit event may show of a refused request's target: the path of
    an origin-form target (``/...``), before any query or fragment, which can
    carry tokens; nothing of any other form (``http://user:password@host/...``)."""
    if not target.startswith(b"/"):
        return b""
    for mark in (b"?", b"#"):
        at = target.find(mark)
        if at >= 0:
            target = target[:at]
    return target


def _closing_answer(denial: Denial) -> bytes:
    """``denial`` as a whole HTTP/1.1 response that closes the connection."""
    status, headers, body = render_denial(denial, "GET")
    content = [STATUS_LINE[status]]
    for name, value in [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]:
        content.extend([name, b": ", value, b"\r\n"])
    content.extend([b"\r\n", body])
    return b"".join(content)


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with three changes.

    A handshake the websockets library refuses (no or a malformed
    ``Sec-WebSocket-Key``, another ``Sec-WebSocket-Version``, a method other
    than GET, ...) gets edgeauth's JSON 400, audited, instead of the library's
    plain-text answer, which names the library and repeats what the client
    sent. A head the library cannot parse at all (a line or header count over
    its own limits, which are lower than ``[server] max_head_bytes``) gets
    the same 431 or 400, where uvicorn would queue the library's answer and
    never send it, leaving the connection open. And a denial sent through the
    denial-response extension is a complete answer, not logged as an app that
    "returned without completing handshake"."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.handshake_initiated or self.conn.handshake_exc is None:
            return
        if self.transport.is_closing():
            return
        self.conn.data_to_send()  # the library's own answer, never sent
        too_large = isinstance(
            self.conn.handshake_exc, (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders)
        )
        code = Code.HEADERS_TOO_LARGE if too_large else Code.BAD_REQUEST
        reason = "request head too large" if too_large else "invalid WebSocket handshake"
        self._refuse(Denial(new_request_id(), code), reason, "-", b"")

    def handle_connect(self, event: Request) -> None:
        response = self.conn.accept(event)
        if response.status_code == 101:
            # uvicorn's handle_connect accepts the request itself: the same
            # response, not computed twice.
            self.conn.accept = lambda request: response  # type: ignore[method-assign]
            try:
                super().handle_connect(event)
            finally:
                del self.conn.accept
            return
        target = event.path.encode("ascii", "backslashreplace")
        reason = "invalid WebSocket handshake"
        self._refuse(Denial(new_request_id(), Code.BAD_REQUEST), reason, event.method, target)

    def _refuse(self, denial: Denial, reason: str, method: str, target: bytes) -> None:
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        _audit_unparsed(self.app, denial, reason, method, target, self.client)
        self.transport.write(_closing_answer(denial))
        self.transport.close()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # answered: the denial was the response


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size, header count and head time
    limits, whose responses leave with their head and first body part in one
    write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The forward-auth lane (see on_headers_complete): only under
        # `edgeauth serve`'s own app, unwrapped, with nothing uvicorn would add
        # to the request (a root path), refuse (a concurrency limit) or isolate
        # (a fresh context per request).
        app = self.app
        self._lane: EdgeServer | None = None
        self._lane_start = b""
        if (
            isinstance(app, EdgeServer)
            and app.forward_auth is not None
            and not self.root_path
            and self.limit_concurrency is None
            and not self.config.reset_contextvars
        ):
            self._lane = app
            self._lane_start = app.forward_auth_start
        self._lane_request: tuple[Scope, bool] | None = None
        self._lane_closed = False
        config = self.config
        self.limits = config.limits if isinstance(config, _Config) else HeadLimits()
        self._max_head_bytes = self.limits.max_head_bytes
        self._max_headers = self.limits.max_headers
        # The head timeout and the keep-alive timeout, one timer each per
        # connection: a head that completes in time, or a request that begins,
        # only clears its deadline, so keep-alive requests arm no timer each.
        self._head_deadline = _Deadline(self.loop, self._head_timed_out)
        self._idle_deadline = _Deadline(self.loop, self.timeout_keep_alive_handler)
        self._writer: _CoalescingTransport  # from connection_made
        self._in_head = True
        self._pending = 0  # bytes received while the head is incomplete
        self._room = 0  # bytes the head parsed so far may still grow by
        self._hosts = 0  # Host fields in the head so far
        self._body = False  # a body announced in the head so far (for the lane)
        self._too_large = False
        # The closing answer to a request the parser refused, held while
        # requests pipelined before it are still being answered.
        self._refusal: bytes | None = None
        # The cycle of the request whose body is being read, if one is.
        self._body_of: RequestResponseCycle | None = None
        self._lingering = False  # the last answer is out; reading to drop
        self._linger: asyncio.TimerHandle | None = None  # closes a lingering connection
        self._client_done = False  # the client has sent all it will (EOF)
        self.url = b""  # uvicorn sets it when a request begins

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = _CoalescingTransport(transport, self.loop)
        self._head_deadline.start(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.cancel()
        self._idle_deadline.cancel()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    # data_received and on_message_begin run for every read and every request:
    # they do uvicorn 0.54's work themselves rather than call it, one Python
    # call instead of two or three. tests/test_server.py compares the scopes.

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self._writer.held is not None:
            self._writer.flush()  # before a 400 or an upgrade answered from here
        if self._in_head:
            self._pending += len(data)
        # uvicorn's data_received, but for the keep-alive timer (see
        # on_message_begin and on_response_complete).
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._lane_closed:
                return  # a request after the connection's last answer (on_message_begin)
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        # A head still incomplete after this many bytes is too large, whatever
        # the parser buffers internally (one header can arrive in many reads).
        too_large = self._in_head and self._pending > self._max_head_bytes
        if too_large and not self.transport.is_closing():
            self._too_large = True
            self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        if self._lane_closed:
            # Pipelined after a request the lane answered with "connection:
            # close" that llhttp still keeps open (HTTP/1.0 keep-alive, which
            # uvicorn does not keep): never read, and not logged as invalid.
            raise _Closed
        self.url = b""
        self.expect_100_continue = False
        headers: list[tuple[bytes, bytes]] = []
        self.headers = headers
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        self._idle_deadline.at = None  # a request has begun: not idle
        self._room = self._max_head_bytes
        self._hosts = 0
        self._body = False
        if self._head_deadline.at is None:
            self._head_deadline.start(self.limits.head_timeout)

    # on_url and on_header run for every part of every head: they do uvicorn's
    # work themselves (uvicorn 0.54: append to url, lower-case and keep the
    # field, note Expect: 100-continue) rather than call it, one Python call
    # per field instead of two, and note for the lane whether a body is
    # announced. tests/test_server.py compares the scopes.

    def on_url(self, url: bytes) -> None:
        room = self._room = self._room - len(url)
        if room < 0:
            self._too_large = True
            self._audited_target(url)
            raise _HeadTooLarge  # httptools turns it into a parser error: 431
        # A fragment never belongs in a request target (RFC 9112 §3.2); the
        # server would drop it silently, so the path decided would not be the
        # target the client wrote. Refused like every ambiguous target: 400.
        # bytes.find, not ``in``: on bytes, ``in`` first tries its operand as an
        # integer and pays for a formatted TypeError (CPython 3.11), per request.
        if url.find(b"#") >= 0:
            self._audited_target(url)
            raise _BadHost
        self.url += url

    def _audited_target(self, url: bytes) -> None:
        """Keep what the audit event of a refused target shows of it."""
        self.url += url[: max(0, _AUDITED_TARGET - len(self.url))]

    def on_header(self, name: bytes, value: bytes) -> None:
        room = self._room = self._room - (len(name) + len(value) + 4)  # ": " and CRLF
        headers = self.headers
        if room < 0 or len(headers) >= self._max_headers:
            self._too_large = True
            raise _HeadTooLarge  # httptools turns it into a parser error: 431
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"content-length":
            if value != b"0":
                self._body = True
        elif name == b"transfer-encoding":
            self._body = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_deadline.at = None
        self._in_head = False
        self._pending = 0
        # RFC 9112 §3.2: a request without Host (HTTP/1.1) or with more than one
        # must be answered with 400; rules match on Host and the upstream gets it.
        hosts = self._hosts
        if hosts != 1 and (hosts > 1 or self.parser.get_http_version() == "1.1"):
            raise _BadHost  # httptools turns it into a parser error: 400 below
        if self._lane is not None and self._lane_takes():
            return
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request, not an upgrade
            self.cycle.transport = self._writer
            self._body_of = self.cycle

    def _lane_takes(self) -> bool:
        """Is this head a forward-auth request to answer from the protocol?

        Yes when it is for the endpoint, carries no body and no upgrade, and
        nothing else is in flight on the connection: no response unfinished or
        queued, and the client reading what it is sent. uvicorn would start an
        ASGI task for it; the lane answers it when the message completes, with
        the app's own :meth:`~edgeauth.forward_auth.ForwardAuthApp.answer` and
        the bytes uvicorn would write. Anything else takes uvicorn's way.
        """
        url = self.url
        if not url.startswith(self._lane_start):
            return False
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)
            or self.transport.is_closing()
            or self.pipeline
            or self.flow.write_paused
            or self.expect_100_continue
            or self._body
            or self.parser.should_upgrade()
        ):
            return False
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return False  # uvicorn's way refuses it
        path: bytes = parsed.path
        server = self._lane
        if server is None or not server.is_forward_auth(path):
            return False
        version = self.parser.get_http_version()
        scope: Scope = self.scope  # type: ignore[assignment]
        scope["method"] = self.parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        text = path.decode("ascii")
        scope["path"] = unquote(text) if "%" in text else text
        scope["raw_path"] = path
        scope["query_string"] = parsed.query or b""
        self._lane_request = scope, version != "1.0" and self.parser.should_keep_alive()
        return True

    def _lane_answer(self, scope: Scope, keep_alive: bool) -> None:
        """Answer a request the lane took: at once when the decision needs no
        waiting (a cached token, in-memory limits), else from a task with a
        response cycle of uvicorn's own, which holds later requests back.

        The decision starts outside any task. Code that needs one (Redis calls
        under ``asyncio.timeout``, the first revocation load) awaits
        :func:`edgeauth.state.in_task` first, which moves the decision into its
        task before anything else happens."""
        server = self._lane
        assert server is not None and server.forward_auth is not None
        answer = server.forward_auth.answer(scope)
        try:
            waiting = answer.send(None)
        except StopIteration as done:
            self._lane_write(done.value, scope["method"], keep_alive)
            return
        except Exception:
            # answer() catches what the decision raises; this is a bug. Answered
            # as uvicorn answers an app that raises before its response.
            self.logger.error("Exception in ASGI application\n", exc_info=True)
            self._lane_write(_INTERNAL_ERROR, scope["method"], keep_alive=False)
            return
        cycle = RequestResponseCycle(
            scope=scope,  # type: ignore[arg-type]
            transport=self._writer,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.more_body = False
        self.cycle = cycle
        resumed = _Resumed(answer, waiting)

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            await send_rendered(scope, send, await resumed)

        task = self.loop.create_task(cycle.run_asgi(respond))  # type: ignore[arg-type]
        task.add_done_callback(self.tasks.discard)
        # A task cancelled before its first step never runs ``respond``: the
        # decision is closed here all the same, its finally blocks run at once.
        task.add_done_callback(lambda _: answer.close())
        self.tasks.add(task)

    def _lane_write(self, rendered: Rendered, method: str, keep_alive: bool) -> None:
        """Write an answer as uvicorn's response cycle would: its headers (all
        edgeauth's own: constants, identity values checked for control
        characters, values from the policy), Content-Length, and
        "connection: close" when the connection ends with it."""
        status, headers, body = rendered
        length = len(body)
        lines = [
            _STATUS[status],
            *map(_FIELD, self.server_state.default_headers),
            *map(_FIELD, headers),
            _LENGTHS.get(length) or _length_line(length),
        ]
        if not keep_alive:
            lines.append(b"connection: close")
        lines += (b"", b"")  # the head ends with an empty line
        data = b"\r\n".join(lines)
        if body and method != "HEAD":
            data += body
        if self._writer.held is not None:
            self._writer.flush()  # nothing is held here; kept for the order of bytes
        self.transport.write(data)
        if not keep_alive:
            self._lane_closed = True
            self.transport.close()
        self.on_response_complete()

    # The keep-alive timeout: uvicorn arms a timer after every response and
    # cancels it on the next read. Here one timer per connection is moved
    # lazily, like the head timer (uvicorn's own timer is never armed). The
    # connection is idle from a response that leaves nothing in flight until
    # the next request begins; bytes that begin none (a bare CRLF) do not make
    # it busy.

    def on_response_complete(self) -> None:
        """uvicorn 0.54's, with the lazy keep-alive timer: start the next
        pipelined request, else wait ``timeout_keep_alive`` for one (unless
        one has begun to arrive: the head timeout is its clock)."""
        self._writer.next_response()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_deadline.at = None
        if self._refusal is not None or self._client_done:  # nothing more is read
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            elif self._refusal is not None:
                self._close_with(self._refusal)
            else:
                self._writer.flush()
                self.transport.close()
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        if self._head_deadline.at is None:
            self._idle_deadline.start(self.timeout_keep_alive)

    def shutdown(self) -> None:
        self._writer.flush()
        super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        self._writer.flush()
        super().timeout_keep_alive_handler()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._pending = 0
        self._body_of = None
        request = self._lane_request
        if request is not None:
            self._lane_request = None
            self._lane_answer(*request)
            return
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused, as JSON, and close the connection
        (audited: :func:`_audit_unparsed`). Requests pipelined before it get
        their answers first: nothing more is read, and the refusal waits for
        the last of them."""
        self._writer.flush()
        code = Code.HEADERS_TOO_LARGE if self._too_large else Code.BAD_REQUEST
        denial = Denial(new_request_id(), code)
        reason = "request head too large" if self._too_large else "invalid HTTP request"
        _audit_unparsed(self.app, denial, reason, "-", self.url, self.client)
        answer = _closing_answer(denial)
        refused = self._body_of  # refused in its body: this request's
        self._body_of = None
        if refused is not None:
            if self.pipeline and self.pipeline[0][0] is refused:
                self.pipeline.popleft()  # queued: it never starts, the others go on
                self._hold(answer)
                return
            # Running, so nothing before it is in flight. Its app gets no more
            # of it; and if it has begun to answer, that answer is the only
            # one the client gets (cut short if unfinished), never a second.
            refused.waiting_for_100_continue = False
            refused.disconnected = True
            refused.message_event.set()
            self._close_with(None if refused.response_started else answer)
            return
        if self._in_flight():
            self._hold(answer)
            return
        self._close_with(answer)

    def _in_flight(self) -> bool:
        """Is an answer unfinished, or a request waiting for its turn?"""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def _hold(self, answer: bytes) -> None:
        """Keep ``answer`` until the requests before it are answered; read no more."""
        self._refusal = answer
        self.flow.pause_reading()
        self._head_deadline.cancel()

    def _close_with(self, answer: bytes | None) -> None:
        """Send the closing ``answer``, then close without losing it: a socket
        closed with unread bytes from the client resets the connection, and the
        client's system may drop the answer with it. So the sending side is
        shut first, and what the client still sends is read and dropped until
        it closes, for at most ``_LINGER_SECONDS`` (RFC 9112 §9.6)."""
        if self._writer.ended:
            return  # closed already
        self._refusal = answer or b""  # nothing more is parsed
        self._writer.flush()
        self._writer.ended = True
        transport = self.transport
        if answer:
            transport.write(answer)
        if self._client_done or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self._head_deadline.cancel()
        self._idle_deadline.cancel()
        self._linger = self.loop.call_later(_LINGER_SECONDS, transport.close)
        if self.flow.read_paused:
            self.flow.resume_reading()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol allows it
        """The client has sent all it will (a half-close): the requests it
        sent are still answered, then the connection closes (uvicorn closes at
        once, losing them)."""
        self._client_done = True
        if self._lingering or not (self._refusal is not None or self._in_flight()):
            return None  # the transport closes
        return True  # keep writing; closed after the last answer

    def _head_timed_out(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits while reading is paused for the current
            # response: not the client's slowness.
            self._head_deadline.start(self.limits.head_timeout)
            return
        if not self.transport.is_closing():
            self._writer.flush()
            self.transport.close()


class EdgeServer:
    """The ASGI app that ``edgeauth serve`` runs.

    Requests to ``[forward_auth] path`` go to the forward-auth endpoint (when
    configured); everything else goes to the proxy, or is 404 ``not_found``
    JSON when there is no ``[server] upstream``.

    >>> app = EdgeServer(load_policy("edgeauth.toml"))     # doctest: +SKIP
    """

    def __init__(
        self, policy: Policy, *, engine: Engine | None = None, tune_gc: bool = False
    ) -> None:
        self.policy = policy
        self.engine = engine or Engine(policy)
        self._tune_gc = tune_gc  # a server process of its own: see _tune_collector
        self.proxy = Proxy(policy, self.engine) if policy.server.upstream else None
        self.forward_auth: ForwardAuthApp | None = None
        self._forward_auth_path = b""
        self._forward_auth_prefix: bytes | None = None
        self.forward_auth_start = b""
        """What every raw request target for the endpoint starts with."""
        if policy.forward_auth is not None:
            self.forward_auth = _forward_auth_app(policy, self.engine)
            self._forward_auth_path = policy.forward_auth.path.encode()
            self.forward_auth_start = self._forward_auth_path.rstrip(b"/")
            if policy.forward_auth.dialect == "envoy":
                # Envoy's ext_authz appends the original path to the prefix.
                self._forward_auth_prefix = self.forward_auth_start + b"/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        if self.forward_auth is not None and self.is_forward_auth(_raw_path(scope)):
            await self.forward_auth(scope, receive, send)
        elif self.proxy is not None:
            await self.proxy(scope, receive, send)
        else:
            denial = Denial(new_request_id(), Code.NOT_FOUND)
            reason = "no upstream and not the forward-auth endpoint"
            refuse(scope, self.engine.report, denial, reason)
            await send_rendered(scope, send, render_denial(denial, "GET"))

    def is_forward_auth(self, path: bytes) -> bool:
        """Is ``path`` (raw) the forward-auth endpoint's?"""
        if path == self._forward_auth_path:
            return True
        prefix = self._forward_auth_prefix
        return prefix is not None and path.startswith(prefix)

    async def startup(self) -> None:
        """Open the upstream session (one per worker process)."""
        if self.proxy is not None:
            await self.proxy.startup()
        if self._tune_gc:
            _tune_collector()

    async def aclose(self) -> None:
        """Close the upstream session and what the authenticators hold."""
        if self.proxy is not None:
            await self.proxy.aclose()
        await self.policy.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": "startup failed"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _tune_collector() -> None:
    """Make the garbage collector cheaper for a server process that has started.

    Everything loaded so far (modules, the policy, the sessions) lives as long
    as the process: it is frozen out of the collector's reach
    (:func:`gc.freeze`), so a full collection no longer walks it. The youngest
    generation is collected every 7,000 allocations instead of 700: a request
    allocates and frees hundreds of objects (the HTTP client's above all), and
    the default sends those still in flight to the older generations, whose
    collections then walk every cached identity too (tens of milliseconds with
    the verified-token cache full: most of the 99th percentile latency).
    Cyclic garbage is still collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_GC_YOUNGEST, middle, oldest)


_GC_YOUNGEST = 7_000


def _raw_path(scope: Scope) -> bytes:
    path = scope.get("raw_path")
    return path if type(path) is bytes else raw_path(scope)


def _forward_auth_app(policy: Policy, engine: Engine) -> ForwardAuthApp:
    # Imported when configured only: a proxy-only server never loads it.
    from .forward_auth import ForwardAuthApp

    return ForwardAuthApp(policy, engine)


def _worker_app(policy_file: str, log_level: str) -> EdgeServer:
    """The app of one worker process (``--workers`` > 1): the policy is loaded
    again in each process."""
    _configure_logging(log_level)
    return EdgeServer(load_policy(policy_file), tune_gc=True)


def serve(
    config: str | Path,
    *,
    workers: int | None = None,
    sockets: Sequence[socket.socket] | None = None,
    graceful_timeout: int = GRACEFUL_TIMEOUT,
    log_level: str = "info",
) -> None:
    """Run ``edgeauth serve`` in the foreground until SIGTERM or SIGINT.

    On either signal the server stops accepting, lets in-flight requests
    finish for up to ``graceful_timeout`` seconds, and returns (exit code 0).
    ``workers`` overrides ``[server] workers``; ``sockets`` serves already
    bound sockets instead of binding ``[server] listen``.

    Raises :class:`~edgeauth.errors.ConfigError` when the policy does not load,
    or when several workers would each keep their own rate-limit counters.

    >>> serve("edgeauth.toml", workers=4)     # doctest: +SKIP
    """
    path = Path(config)
    policy = load_policy(path)
    settings = policy.server
    count = workers if workers is not None else settings.workers
    policy.check_workers(count)  # in-memory counters cannot be shared by workers
    try:
        host, port = parse_listen(settings.listen)
    except ValueError as exc:
        raise ConfigError(str(path), [ConfigIssue("server.listen", str(exc))]) from None
    _configure_logging(log_level)
    # With workers, each process builds its own app from the file.
    worker_app = functools.partial(_worker_app, str(path), log_level)
    app: Any = EdgeServer(policy, tune_gc=True) if count == 1 else worker_app
    uv = _Config(
        app,
        limits=HeadLimits(settings.max_head_bytes, settings.max_headers, settings.head_timeout),
        factory=count > 1,
        host=host,
        port=port,
        workers=count,
        loop="uvloop",
        http=EdgeHttpProtocol,
        ws=EdgeWebSocketProtocol,
        lifespan="on",
        # edgeauth reads X-Forwarded-* itself, from [server] trusted_proxies only.
        proxy_headers=False,
        server_header=False,
        # The upstream's Date passes through; a second one would be added.
        date_header=False,
        # The audit log records decisions; an access log would record query
        # strings, which can hold tokens.
        access_log=False,
        log_config=_log_config(),
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    with _exit_cleanly():
        if count == 1:
            server = uvicorn.Server(uv)
            server.run(sockets=list(sockets) if sockets else None)
            if not server.started:  # the lifespan startup failed (logged)
                raise SystemExit(STARTUP_FAILURE)
        else:
            bound = list(sockets) if sockets else [uv.bind_socket()]
            Multiprocess(uv, sockets=bound).run()


@contextmanager
def _exit_cleanly() -> Iterator[None]:
    """After a graceful shutdown uvicorn re-raises the signal that caused it,
    which would end the process with a signal status; a handler that does
    nothing lets ``serve`` return and the process exit 0."""

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _RequestLineFilter(logging.Filter):
    """Drops uvicorn's WebSocket request lines: they hold the query string,
    which can carry a token (``?access_token=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg)


def _log_config() -> dict[str, Any]:
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"request_lines": {"()": f"{__name__}._RequestLineFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["request_lines"]
    return config


def _configure_logging(level: str) -> None:
    """Audit events and server messages to stderr, one line each."""
    logger = logging.getLogger("edgeauth")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
