"""The forward-auth lane of ``edgeauth serve``: EdgeHttpProtocol answers most
decision requests itself, without an ASGI task. It must answer exactly as the
ASGI path does, keep pipelined answers in order, wait for a decision that waits,
and leave uvicorn's way to everything it does not handle."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import httptools
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from edgeauth import Engine, load_policy
from edgeauth.model import Denial, Outcome, RequestView
from edgeauth.policy import Policy
from edgeauth.server import EdgeHttpProtocol, EdgeServer, HeadLimits, _Config

from .gateway_fixtures import forward_auth_policy
from .helpers import session_token, write_policy
from .redis_server import RedisServer, redis_server  # noqa: F401

GATEWAY = ("127.0.0.1", 40000)
POLL = 5.0  # seconds: the bound on every wait below


class Wire(asyncio.Transport):
    """A transport that records what is written, from a trusted gateway's address."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.after_close = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        if self.closed:  # raised here, it would only reach the loop's handler
            self.after_close += data
        else:
            self.data += data

    def writelines(self, data: Any) -> None:
        for part in data:
            self.write(part)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": GATEWAY, "sockname": ("127.0.0.1", 9000)}.get(name, default)


class WaitingEngine:
    """A real engine whose decisions wait until ``go`` is set (only those for a
    path in ``held``, when it is not empty), and that counts them.

    It holds the engine rather than subclassing it (a compiled class cannot be
    subclassed) and offers only ``evaluate``, all the forward-auth app calls,
    and ``report``, which the server calls for a path it does not serve.
    """

    def __init__(self, policy: Policy) -> None:
        self.engine = Engine(policy)
        self.go = asyncio.Event()
        self.go.set()
        self.held: set[bytes] = set()
        self.decided = 0
        self.broken = False

    async def evaluate(self, view: RequestView) -> Outcome:
        self.decided += 1
        if self.broken:
            raise RuntimeError("a bug")
        if not self.go.is_set() and (not self.held or view.raw_path in self.held):
            await self.go.wait()
        return await self.engine.evaluate(view)

    def report(self, view: RequestView, denial: Denial, reason: str | None = None) -> None:
        self.engine.report(view, denial, reason)


def server(folder: Path, dialect: str = "nginx", state: str = "") -> EdgeServer:
    policy = load_policy(write_policy(folder, state + forward_auth_policy(dialect)))
    return EdgeServer(policy, engine=WaitingEngine(policy))  # type: ignore[arg-type]


async def feed(protocol: Any, data: bytes) -> None:
    """Hand ``data`` to the protocol as the event loop does: from a callback,
    outside any task; returns once it has been handled."""
    asyncio.get_running_loop().call_soon(protocol.data_received, data)
    await asyncio.sleep(0)


def connect(app: EdgeServer, protocol: type = EdgeHttpProtocol, **config: Any) -> tuple[Any, Wire]:
    settings = _Config(
        app,
        limits=HeadLimits(),
        lifespan="off",
        proxy_headers=False,
        date_header=False,
        server_header=False,
        access_log=False,
        **config,
    )
    settings.load()
    handler = protocol(settings, ServerState(), {}, _loop=asyncio.get_running_loop())
    wire = Wire()
    handler.connection_made(wire)
    return handler, wire


async def settle(condition: Any = None) -> None:
    """Let tasks run: a few turns, or until ``condition()`` holds (bounded)."""
    deadline = asyncio.get_running_loop().time() + POLL
    for _ in range(5):
        await asyncio.sleep(0)
    while condition is not None and not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def responses(data: bytes | bytearray) -> list[tuple[int, dict[str, list[str]], bytes]]:
    """The responses in ``data``: status, headers (lower-case names) and body."""
    found: list[tuple[int, dict[str, list[str]], bytes]] = []
    current: dict[str, Any] = {}

    class Callbacks:
        def on_message_begin(self) -> None:
            current.clear()
            current.update(headers={}, body=b"")

        def on_header(self, name: bytes, value: bytes) -> None:
            current["headers"].setdefault(name.decode().lower(), []).append(value.decode())

        def on_body(self, body: bytes) -> None:
            current["body"] += body

        def on_message_complete(self) -> None:
            found.append((parser.get_status_code(), dict(current["headers"]), current["body"]))

    parser = httptools.HttpResponseParser(Callbacks())
    parser.feed_data(bytes(data))
    return found


def head_request(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: auth.internal", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ask(uri: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    """An nginx-dialect decision request for ``method uri``."""
    return head_request(
        "/_edgeauth/auth",
        f"X-Original-URI: {uri}",
        f"X-Original-Method: {method}",
        "X-Forwarded-For: 203.0.113.9",
        *headers,
        version=version,
    )


def cookie() -> str:
    return f"Cookie: session={session_token()}"


def same_but_ids(data: bytes | bytearray) -> bytes:
    return re.sub(rb"(x-request-id: |\"request_id\":\")[0-9a-f]{16}", rb"\1<id>", bytes(data))


CASES: dict[str, bytes] = {
    "allowed": ask("/api/protected/me", cookie()),
    "anonymous allow": ask("/public/x", "X-User-Id: mallory"),
    "missing credentials": ask("/api/protected/me"),
    "page to the login": ask("/dashboard", "Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: document"),
    "another dialect": ask("/api/protected/me", cookie(), "X-Forwarded-Uri: /public/x"),
    "ambiguous path": ask("/api/protected/..%2fadmin", cookie()),
    "HEAD": head_request(
        "/_edgeauth/auth?probe=1",
        "X-Original-URI: /api/protected/me",
        "X-Original-Method: GET",
        method="HEAD",
    ),
    "HTTP/1.0": ask("/api/protected/me", cookie(), version="1.0"),
    "connection close": ask("/api/protected/me", cookie(), "Connection: close"),
    "a bug in the decision": ask("/api/protected/me", cookie()),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_lane_answers_as_the_asgi_path_does(tmp_path: Path, case: str) -> None:
    """Same status, headers and body as uvicorn's own protocol running the app,
    written before the call returns, without a task."""
    app = server(tmp_path)
    app.engine.broken = case == "a bug in the decision"  # type: ignore[attr-defined]
    lane, lane_wire = connect(app)
    await feed(lane, CASES[case])
    assert lane_wire.data and not lane.tasks  # answered in the call, by the lane
    asgi, asgi_wire = connect(app, HttpToolsProtocol)
    await feed(asgi, CASES[case])
    await settle(lambda: asgi_wire.data)
    await settle()
    assert same_but_ids(lane_wire.data) == same_but_ids(asgi_wire.data)
    assert lane_wire.closed == asgi_wire.closed
    assert not lane_wire.after_close
    assert len(responses(lane_wire.data)) == 1 or case == "HEAD"
    if case == "a bug in the decision":  # it did happen, and both answered it alike
        assert responses(lane_wire.data)[0][0] == 500


async def test_envoy_paths_below_the_prefix_take_the_lane(tmp_path: Path) -> None:
    """Envoy's check requests (original path after the prefix) are answered by the lane."""
    app = server(tmp_path, "envoy")
    lane, wire = connect(app)
    request = b"GET /_edgeauth/auth/api/protected/me HTTP/1.1\r\nHost: app.example\r\n"
    await feed(lane, request + cookie().encode() + b"\r\n\r\n")
    [(status, headers, _)] = responses(wire.data)
    assert (status, headers["x-user-id"]) == (200, ["alice"])
    assert not lane.tasks


async def test_pipelined_answers_keep_their_order(tmp_path: Path) -> None:
    """A lane answer, a request for another path (404, uvicorn's way) and another
    decision, sent together, are answered in the order sent."""
    app = server(tmp_path)
    protocol, wire = connect(app)
    other = head_request("/elsewhere")
    await feed(protocol, ask("/api/protected/me", cookie()) + other + ask("/api/protected/me"))
    await settle(lambda: len(responses(wire.data)) == 3)
    statuses = [r[0] for r in responses(wire.data)]
    assert statuses == [200, 404, 401]
    assert app.engine.decided == 2  # type: ignore[attr-defined]
    assert protocol.server_state.total_requests == 3


async def test_a_decision_that_waits_holds_later_requests_back(tmp_path: Path) -> None:
    """A decision that has to wait (a key set, Redis) goes on in a task; requests
    behind it wait for its answer, and reading pauses meanwhile."""
    app = server(tmp_path)
    engine: WaitingEngine = app.engine  # type: ignore[assignment]
    engine.go.clear()
    protocol, wire = connect(app)
    await feed(protocol, ask("/api/protected/me", cookie()) + ask("/api/protected/me"))
    await settle()
    assert wire.data == b"" and engine.decided == 1
    assert wire.paused  # the second request waits in uvicorn's pipeline
    engine.go.set()
    await settle(lambda: len(responses(wire.data)) == 2)
    assert [r[0] for r in responses(wire.data)] == [200, 401]
    assert not wire.paused and not wire.closed


@pytest.mark.parametrize(
    ("version", "connection"),
    [("1.1", "close"), ("1.0", "keep-alive")],  # uvicorn keeps no HTTP/1.0 connection
)
async def test_a_connection_closed_by_its_answer_reads_nothing_more(
    tmp_path: Path, version: str, connection: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After an answer with "connection: close", a request pipelined behind it is
    neither decided, answered nor logged as invalid."""
    caplog.set_level(logging.WARNING, logger="uvicorn.error")
    logging.getLogger("uvicorn.error").addHandler(caplog.handler)
    app = server(tmp_path)
    protocol, wire = connect(app)
    first = ask("/public/x", f"Connection: {connection}", version=version)
    await feed(protocol, first + ask("/api/protected/me"))
    await settle()
    [(status, headers, _)] = responses(wire.data)
    assert status == 200 and headers["connection"] == ["close"]
    assert wire.closed
    assert app.engine.decided == 1  # type: ignore[attr-defined]
    assert not wire.after_close
    logging.getLogger("uvicorn.error").removeHandler(caplog.handler)
    assert "Invalid HTTP request" not in caplog.text


@pytest.mark.parametrize(
    ("field", "body"),
    [("Content-Length: 2", b"ok"), ("Transfer-Encoding: chunked", b"2\r\nok\r\n0\r\n\r\n")],
)
async def test_a_request_with_a_body_takes_uvicorns_way(
    tmp_path: Path, field: str, body: bytes
) -> None:
    """A decision request with a body is answered by the app in a task, the same."""
    app = server(tmp_path)
    protocol, wire = connect(app)
    request = ask("/api/protected/me", cookie(), field)
    await feed(protocol, request + body)
    assert protocol.tasks and not wire.data
    await settle(lambda: wire.data)
    [(status, headers, _)] = responses(wire.data)
    assert (status, headers["x-user-id"]) == (200, ["alice"])


async def test_an_empty_body_is_answered_by_the_lane(tmp_path: Path) -> None:
    """Content-Length: 0 announces no body: the lane answers at once, no task."""
    app = server(tmp_path)
    protocol, wire = connect(app)
    await feed(protocol, ask("/api/protected/me", cookie(), "Content-Length: 0"))
    assert not protocol.tasks
    [(status, headers, _)] = responses(wire.data)
    assert (status, headers["x-user-id"]) == (200, ["alice"])


async def test_a_client_that_does_not_read_gets_no_answer_until_it_does(tmp_path: Path) -> None:
    """While the transport's buffer is full, nothing more is written: the request
    waits in uvicorn's response cycle until writing resumes."""
    app = server(tmp_path)
    protocol, wire = connect(app)
    protocol.pause_writing()
    await feed(protocol, ask("/api/protected/me", cookie()))
    await settle()
    assert wire.data == b""
    protocol.resume_writing()
    await settle(lambda: wire.data)
    assert [r[0] for r in responses(wire.data)] == [200]


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(tmp_path: Path) -> None:
    """timeout_keep_alive after the last answer, and not before: a request in
    between moves the deadline."""
    app = server(tmp_path)
    protocol, wire = connect(app, timeout_keep_alive=0.3)
    loop = asyncio.get_running_loop()
    await feed(protocol, ask("/public/x"))
    await asyncio.sleep(0.2)
    last = loop.time()
    await feed(protocol, ask("/public/x"))
    await asyncio.sleep(0.2)  # past the first answer's deadline, not the second's
    assert not wire.closed
    await settle(lambda: wire.closed)
    assert loop.time() - last >= 0.3
    assert [r[0] for r in responses(wire.data)] == [200, 200]


async def test_a_connection_waiting_for_its_answer_is_not_timed_out(tmp_path: Path) -> None:
    """The keep-alive clock does not run while a decision is pending."""
    app = server(tmp_path)
    engine: WaitingEngine = app.engine  # type: ignore[assignment]
    protocol, wire = connect(app, timeout_keep_alive=0.1)
    await feed(protocol, ask("/public/x"))
    engine.go.clear()
    await feed(protocol, ask("/public/x"))
    await asyncio.sleep(0.3)
    assert not wire.closed
    engine.go.set()
    await settle(lambda: wire.closed)
    assert [r[0] for r in responses(wire.data)] == [200, 200]


async def test_a_busy_connection_outlives_an_answer_given_in_the_same_read(
    tmp_path: Path,
) -> None:
    """An answer given while a read is parsed, then a slower decision in the same
    read: the keep-alive clock does not run while the second is pending."""
    app = server(tmp_path)
    engine: WaitingEngine = app.engine  # type: ignore[assignment]
    engine.held = {b"/api/protected/me"}
    engine.go.clear()
    protocol, wire = connect(app, timeout_keep_alive=0.1)
    await feed(protocol, ask("/public/x") + ask("/api/protected/me", cookie()))
    assert [r[0] for r in responses(wire.data)] == [200]
    await asyncio.sleep(0.3)
    assert not wire.closed
    engine.go.set()
    await settle(lambda: len(responses(wire.data)) == 2)
    assert [r[0] for r in responses(wire.data)] == [200, 200]


async def test_bytes_that_begin_no_request_do_not_keep_a_connection_open(
    tmp_path: Path,
) -> None:
    """A bare CRLF after an answer begins no request: the idle connection is
    still closed at the keep-alive timeout."""
    app = server(tmp_path)
    protocol, wire = connect(app, timeout_keep_alive=0.2)
    await feed(protocol, ask("/public/x"))
    await asyncio.sleep(0.1)
    await feed(protocol, b"\r\n")
    await settle(lambda: wire.closed)
    assert [r[0] for r in responses(wire.data)] == [200]


async def test_shutdown_lets_a_pending_decision_answer_then_closes(tmp_path: Path) -> None:
    """A graceful shutdown while a decision waits: it is answered, with
    "connection: close", and the connection ends."""
    app = server(tmp_path)
    engine: WaitingEngine = app.engine  # type: ignore[assignment]
    engine.go.clear()
    protocol, wire = connect(app)
    await feed(protocol, ask("/api/protected/me", cookie()))
    protocol.shutdown()
    assert not wire.closed
    engine.go.set()
    await settle(lambda: wire.closed)
    [(status, headers, _)] = responses(wire.data)
    assert (status, headers["connection"]) == (200, ["close"])


async def test_decisions_that_use_redis_move_into_a_task(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """State in Redis (the revocation list, rate limits): the lane's decision
    moves into a task before its first Redis call, and the limits hold."""
    state = (
        f'[state]\nredis_url = "{redis_server.url}"\n\n'
        '[[rules]]\nid = "limited"\nmatch = "/limited"\npublic = true\n'
        'rate_limit = "2/hour per ip"\n\n'
    )
    app = server(tmp_path, state=state)
    protocol, wire = connect(app)
    for uri in ("/api/protected/me", "/limited", "/limited", "/limited"):
        await feed(protocol, ask(uri, cookie()))
        await settle(lambda: wire.data.count(b"HTTP/1.1 ") == app.engine.decided)  # type: ignore[attr-defined]
    answers = [(r[0], r[1].get("x-edgeauth-status")) for r in responses(wire.data)]
    try:
        assert answers == [(200, None), (200, None), (200, None), (401, ["429"])]
        await settle(lambda: not protocol.tasks)  # each decision's task ended
        assert not wire.closed
    finally:
        await app.aclose()


async def test_the_lanes_denials_and_refusals_are_audited(tmp_path: Path) -> None:
    """A denial decided in the lane and a request refused before the engine both
    reach the [audit] file, with the original request's client and path, and
    the credential only as its fingerprint."""
    app = server(tmp_path, state='[audit]\nfile = "audit.log"\n\n')
    protocol, wire = connect(app)
    token = session_token(role=("user",))
    await feed(protocol, ask("/api/admin/users", f"Cookie: session={token}"))
    await feed(protocol, ask("/api/protected/me", "X-Forwarded-Uri: /public/x"))
    await settle()
    assert [r[1]["x-edgeauth-status"] for r in responses(wire.data)] == [["403"], ["403"]]
    log = tmp_path / "audit.log"
    await settle(lambda: log.exists() and log.read_text().count("\n") == 2)
    denied, refused = (json.loads(line) for line in log.read_text().splitlines())
    assert (denied["code"], denied["path"], denied["client"]) == (
        "forbidden",
        "/api/admin/users",
        "203.0.113.9",
    )
    assert denied["fingerprint"] and token not in log.read_text()
    assert (refused["code"], refused["client"]) == ("untrusted_peer", "127.0.0.1")
    await app.aclose()
