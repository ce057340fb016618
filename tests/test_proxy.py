"""edgeauth serve as a reverse proxy, over real sockets, with real upstream processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeauth import load_policy
from edgeauth.model import Allow, RequestView
from edgeauth.pipeline import Engine
from edgeauth.proxy import Proxy, request_headers, response_headers

from . import servers
from .cases import ALICE
from .helpers import SEED_POLICY, RecordingAudit, Response, call, session_token, write_policy

MiB = 1024 * 1024
HEAD_LIMITS = {"max_headers": 20, "max_head_bytes": 4096, "head_timeout": 1.0}


@pytest.fixture(scope="module")
def echo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[servers.Process, servers.Process]]:
    """(edgeauth, echo upstream), with a 1 s read timeout and small head limits."""
    folder = tmp_path_factory.mktemp("echo")
    with servers.upstream("echo", folder) as upstream:
        port = servers.free_port()
        section = servers.server_section(
            port,
            upstream.url,
            trusted_proxies=["127.0.0.1/32"],
            read_timeout=1.0,
            **HEAD_LIMITS,
        )
        with servers.edgeauth(
            write_policy(folder, section + SEED_POLICY), port, dual_stack=True
        ) as ea:
            servers.upstream_log(upstream)
            yield ea, upstream


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Process]:
    """edgeauth in front of an upstream that answers with the request head it read."""
    folder = tmp_path_factory.mktemp("raw")
    with servers.upstream("raw", folder) as upstream:
        port = servers.free_port()
        section = servers.server_section(
            port, upstream.url, trusted_proxies=["127.0.0.1/32"], upstream_host="internal.example"
        )
        with servers.edgeauth(
            write_policy(folder, section + SEED_POLICY), port, dual_stack=True
        ) as ea:
            yield ea


def head_seen(response: Response) -> tuple[str, list[tuple[str, str]]]:
    """The request line and header fields the raw upstream received."""
    assert response.status == 200, response.body
    line, *fields = response.json()["head"].rstrip("\r\n").split("\r\n")
    return line, [(n, v.strip()) for n, _, v in (f.partition(":") for f in fields)]


def get(
    port: int, target: bytes, headers: list[tuple[str, str]] | None = None, **kw: str
) -> Response:
    return servers.request(port, "GET", target, headers or [("host", "app.test")], **kw)


def audit_event(ea: servers.Process, response: Response) -> dict[str, Any]:
    """The audit event of ``response`` (by its request id)."""
    return servers.audit_events(ea, response.header("x-request-id"))[0]


# The request toward the upstream --------------------------------------------------


def test_upstream_receives_the_canonical_target_byte_for_byte(raw: servers.Process) -> None:
    """The authorized canonical path and the untouched query go out as is; nothing is added."""
    r = get(raw.port, b"//public/./a/%2e%2e/%7Eb/caf%c3%a9?q=%2F&x=%2e%2e&y=a+b")
    line, fields = head_seen(r)
    assert line == "GET /public/~b/caf%C3%A9?q=%2F&x=%2e%2e&y=a+b HTTP/1.1"
    assert [n.lower() for n, _ in fields] == [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
    assert dict(fields)["Host"] == "internal.example"  # [server] upstream_host
    assert dict(fields)["X-Forwarded-Host"] == "app.test"


def test_a_body_goes_upstream_without_headers_of_the_client_library(
    raw: servers.Process,
) -> None:
    """A streamed body gets no Content-Type, User-Agent or Accept-* the client did not send."""
    r = servers.request(raw.port, "POST", b"/public/x", [("host", "app.test")], b"abc")
    line, fields = head_seen(r)
    assert line == "POST /public/x HTTP/1.1"
    assert sorted(n.lower() for n, _ in fields) == [
        "content-length",
        "host",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ]


def test_hop_by_hop_request_headers_are_dropped(raw: servers.Process) -> None:
    """Connection, the headers it names, Keep-Alive, TE, Trailer, Proxy-*, Upgrade never go upstream."""
    headers = [
        ("host", "app.test"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x-sum"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("x-kept", "yes"),
    ]
    _, fields = head_seen(get(raw.port, b"/public/x", headers))
    names = {n.lower() for n, _ in fields}
    assert "x-kept" in names
    for name in ("connection", "x-secret-hop", "keep-alive", "te", "trailer", "upgrade"):
        assert name not in names
    assert not any(n.startswith("proxy-") for n in names)


def test_forwarding_headers_from_an_untrusted_peer_are_replaced(raw: servers.Process) -> None:
    """From an untrusted peer X-Forwarded-* and Forwarded are discarded and rebuilt by edgeauth."""
    headers = [
        ("host", "app.test"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=6.6.6.6"),
    ]
    _, fields = head_seen(get(raw.port, b"/public/x", headers, host="::1"))
    seen = dict((n.lower(), v) for n, v in fields)
    assert seen["x-forwarded-for"] == "::1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "app.test"
    assert "forwarded" not in seen
    assert sum(1 for n, _ in fields if n.lower().startswith("x-forwarded-")) == 3


def test_forwarding_headers_from_a_trusted_peer_are_extended(raw: servers.Process) -> None:
    """A trusted proxy's chain is extended with its address; its proto and host are kept."""
    headers = [
        ("host", "internal:8000"),
        ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "www.example.com"),
        ("forwarded", "for=203.0.113.9"),
    ]
    _, fields = head_seen(get(raw.port, b"/public/x", headers))
    seen = dict((n.lower(), v) for n, v in fields)
    assert seen["x-forwarded-for"] == "203.0.113.9, 10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "www.example.com"
    assert seen["forwarded"] == "for=203.0.113.9"


def test_audit_client_comes_from_the_same_trusted_proxy_logic(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """The client address in the audit event is the right-most untrusted X-Forwarded-For entry."""
    ea, _ = echo
    headers = [("host", "app.test"), ("x-forwarded-for", "6.6.6.6, 203.0.113.77")]
    assert get(ea.port, b"/nowhere-trusted", headers).status == 404
    assert get(ea.port, b"/nowhere-untrusted", headers, host="::1").status == 404
    events = [json.loads(line) for line in ea.output().splitlines() if line.startswith("{")]
    clients = {e["path"]: e["client"] for e in events}
    assert clients["/nowhere-trusted"] == "203.0.113.77"
    assert clients["/nowhere-untrusted"] == "::1"


def test_header_value_that_is_not_utf8_is_refused(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A header value the upstream would receive altered is 400, not forwarded;
    the second time too, when the decision is remembered."""
    ea, upstream = echo
    for _ in range(2):
        data, _ = servers.raw_exchange(
            ea.port,
            b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n",
        )
        r = servers.parse_response(data)
        assert r.status == 400 and r.json()["code"] == "bad_request"
        assert servers.upstream_log(upstream) == []
        # A denial like any other: audited, with the reason.
        event = audit_event(ea, r)
        assert (event["path"], event["rule"], event["code"], event["status"]) == (
            "/public/x",
            "public",
            "bad_request",
            400,
        )
        assert event["reason"] == "a header value is not UTF-8"


async def test_a_failure_to_build_the_upstream_request_is_an_audited_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure while building the upstream request's headers (the compiled
    build raises there for a header value of a type ASGI does not allow) is
    edgeauth's own 500, audited, with nothing of the failure in the answer."""
    from edgeauth import proxy as proxy_module

    section = servers.server_section(0, "http://127.0.0.1:9")
    policy = load_policy(write_policy(tmp_path, section + SEED_POLICY))
    audit = RecordingAudit()
    proxy = Proxy(policy, Engine(policy, audit=audit))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("detail of the failure")

    monkeypatch.setattr(proxy_module, "request_headers", broken)
    headers = [("host", "app.test"), ("cookie", f"session={session_token()}")]
    with caplog.at_level(logging.ERROR, logger="edgeauth"):
        r = await call(proxy, raw_path=b"/api/protected/x", headers=headers)
    assert r.status == 500 and r.json()["code"] == "internal_error"
    assert "detail" not in r.body.decode()
    assert "cannot build the upstream request's headers" in caplog.text
    event = audit.events[-1]
    assert event["request_id"] == r.header("x-request-id")
    assert (event["rule"], event["code"], event["status"]) == ("protected", "internal_error", 500)
    assert event["reason"] == "cannot build the upstream request's headers"
    # Allowed first: the event says who it was.
    assert (event["subject"], event["authenticator"]) == ("alice", "session")


# The response toward the client ----------------------------------------------------


def test_hop_by_hop_response_headers_are_dropped(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """The upstream's Connection, the headers it names, Keep-Alive, Proxy-*, Upgrade do not reach the client."""
    ea, upstream = echo
    r = get(ea.port, b"/public/hop")
    assert r.status == 200
    names = {n for n, _ in r.headers}
    for name in ("x-hop-secret", "keep-alive", "proxy-authenticate", "upgrade"):
        assert name not in names
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.header("x-upstream") == "echo"
    assert r.header("connection") == "close"  # ours: the client asked to close
    servers.upstream_log(upstream)


def test_unreachable_upstream_is_502_json(tmp_path: Path) -> None:
    """Nothing listening upstream: 502 bad_gateway JSON that says nothing about the failure."""
    port = servers.free_port()
    dead = f"http://127.0.0.1:{servers.free_port()}"
    policy = write_policy(tmp_path, servers.server_section(port, dead) + SEED_POLICY)
    with servers.edgeauth(policy, port) as ea:
        r = get(ea.port, b"/public/x")
        upgrade = servers.raw_exchange(
            ea.port,
            b"GET /public/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )[0]
    ws = servers.parse_response(upgrade)
    assert ws.status == 502 and ws.json()["code"] == "bad_gateway"
    assert r.status == 502
    assert r.json()["code"] == "bad_gateway"
    assert set(r.json()) == {"error", "code", "request_id"}
    assert r.json()["error"] == "Upstream unavailable"
    text = (r.body + json.dumps(r.headers).encode()).lower()
    for word in (b"aiohttp", b"refused", b"errno", b"127.0.0.1", b"python", b"cannot"):
        assert word not in text


def test_slow_upstream_is_504_json(echo: tuple[servers.Process, servers.Process]) -> None:
    """An upstream slower than read_timeout: 504 gateway_timeout JSON."""
    ea, upstream = echo
    r = get(ea.port, b"/public/slow?s=5")
    assert r.status == 504
    assert r.json()["code"] == "gateway_timeout"
    assert r.json()["error"] == "Upstream timed out"
    assert b"socket" not in r.body.lower() and b"aiohttp" not in r.body.lower()
    servers.upstream_log(upstream)


def test_bodies_stream_both_ways_without_buffering(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A 256 MiB upload and a 256 MiB download pass with the proxy's RSS growing < 50 MiB."""
    ea, upstream = echo
    # EDGEAUTH_STREAM_MIB=1024 runs the 1 GiB benchmark of docs/proxy.md.
    size = int(os.environ.get("EDGEAUTH_STREAM_MIB", "256")) * MiB
    # Warm up the paths once so lazily allocated buffers count as baseline.
    assert upload(ea.port, MiB) == MiB
    assert download(ea.port, MiB) == MiB
    baseline, _ = servers.rss_bytes(ea.pid)
    assert upload(ea.port, size) == size
    assert download(ea.port, size) == size
    _, peak = servers.rss_bytes(ea.pid)
    print(f"proxy RSS baseline {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB")
    assert peak - baseline < 50 * MiB, (baseline, peak)
    servers.upstream_log(upstream)


def upload(port: int, size: int) -> int:
    """POST ``size`` bytes; the byte count the upstream received."""
    block = b"u" * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /public/upload HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        sent = 0
        while sent < size:
            part = block[: min(MiB, size - sent)]
            s.sendall(part)
            sent += len(part)
        r = servers.parse_response(servers.read_all(s))
    assert r.status == 200, r.body
    return int(r.json()["body_length"])


def download(port: int, size: int) -> int:
    """GET ``size`` bytes; how many arrived (read and dropped as they come)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            f"GET /public/download?n={size} HTTP/1.1\r\nHost: app.test\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {size}".encode() in head.lower()
        received = len(rest)
        while chunk := s.recv(1024 * 1024):
            received += len(chunk)
    return received


def test_client_leaving_mid_download_stops_the_upstream_transfer(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """When the client goes away mid-download, the upstream connection is closed too."""
    ea, upstream = echo
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        s.sendall(b"GET /public/download?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (8 * 1024 * MiB))
        received = 0
        while received < MiB:
            received += len(s.recv(65536))
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and {"type": "download-aborted"} not in seen:
        seen.extend(servers.upstream_log(upstream))
        time.sleep(0.05)
    assert {"type": "download-aborted"} in seen


def test_client_leaving_mid_upload_is_not_an_error(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A client that disconnects halfway through its body ends the exchange quietly."""
    ea, upstream = echo
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        s.sendall(
            b"POST /public/upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (64 * MiB)
            + b"u" * MiB
        )
    assert get(ea.port, b"/public/x").status == 200
    servers.upstream_log(upstream)
    assert "Traceback" not in ea.output()


def test_upstream_failing_mid_response_is_not_passed_off_as_complete(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A chunked response the upstream breaks off is cut, never terminated as if complete."""
    ea, upstream = echo
    data, closed = servers.raw_exchange(
        ea.port, b"GET /public/broken HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in data.lower()
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n") and closed
    servers.upstream_log(upstream)


# WebSocket ---------------------------------------------------------------------------


async def test_websocket_relays_frames_and_close_codes(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """An allowed upgrade (session cookie, same origin) relays text, binary and the upstream's close."""
    ea, upstream = echo
    origin = f"http://127.0.0.1:{ea.port}"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"ws://127.0.0.1:{ea.port}/api/protected/ws?access_token=not-for-logs-5f2a",
            headers={"cookie": f"session={ALICE}"},
            origin=origin,
            protocols=("chat",),
        ) as ws,
    ):
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert json.loads(await ws.receive_str()) == {"text": "hello", "user": "alice"}
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        await ws.send_str("close 4001 bye")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "bye")
    log = servers.upstream_log(upstream)
    assert log[0]["type"] == "websocket" and log[0]["raw_path"] == "/api/protected/ws"
    assert log[0]["query"] == "access_token=not-for-logs-5f2a"
    assert "not-for-logs-5f2a" not in ea.output()  # no request line logs the query
    seen = dict(log[0]["headers"])
    assert seen["x-user-id"] == "alice"
    assert "sec-websocket-key" in seen  # the upstream handshake is the client library's own


async def test_client_close_code_reaches_the_upstream(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """The client's close code is relayed to the upstream."""
    ea, upstream = echo
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"ws://127.0.0.1:{ea.port}/api/protected/ws",
            headers={"cookie": f"session={ALICE}"},
            origin=f"http://127.0.0.1:{ea.port}",
        ) as ws,
    ):
        await ws.send_str("ping")
        await ws.receive_str()
        await ws.close(code=4002, message=b"done")
    for _ in range(100):  # bounded poll: the upstream records the close when it sees it
        log = [e for e in servers.upstream_log(upstream) if e["type"] == "ws-closed"]
        if log:
            break
        await asyncio.sleep(0.05)
    assert log == [{"type": "ws-closed", "code": 4002}]


async def test_upstream_dropping_a_websocket_closes_the_client_with_1011(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """An upstream that vanishes without a close frame gives the client close code 1011."""
    ea, upstream = echo
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{ea.port}/public/ws") as ws,
    ):
        await ws.send_str("vanish")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1011
    servers.upstream_log(upstream)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ([], 401, "missing_credentials"),
        ([("cookie", f"session={ALICE}"), ("origin", "https://evil.example")], 403, "csrf"),
        ([("cookie", f"session={session_token(lifetime=-100)}")], 401, "invalid_token"),
    ],
)
def test_denied_upgrade_gets_json_before_any_upgrade(
    echo: tuple[servers.Process, servers.Process],
    headers: list[tuple[str, str]],
    status: int,
    code: str,
) -> None:
    """A denied WebSocket upgrade is answered with the JSON error, never 101, and not forwarded."""
    ea, upstream = echo
    handshake = [
        ("host", "app.test"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        *headers,
    ]
    request = b"GET /api/protected/ws HTTP/1.1\r\n" + b"".join(
        f"{n}: {v}\r\n".encode() for n, v in handshake
    )
    data, _ = servers.raw_exchange(ea.port, request + b"\r\n")
    r = servers.parse_response(data)
    assert r.status == status
    assert r.json()["code"] == code
    assert b"websockets" not in data.lower() and b"python" not in data.lower()
    assert servers.upstream_log(upstream) == []
    assert audit_event(ea, r)["code"] == code
    # A denial is the whole answer to the handshake, not an app that failed to finish it.
    assert "without completing handshake" not in ea.output()


def test_a_websocket_head_over_the_librarys_limits_is_answered(raw: servers.Process) -> None:
    """A handshake whose header line is within [server] max_head_bytes but over
    the WebSocket library's own line limit (8 KiB) is answered (431 JSON,
    audited) and closed, not left open without an answer."""
    request = (
        b"GET /public/ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nCookie: a=" + b"c" * 9000 + b"\r\n\r\n"
    )
    data, closed = servers.raw_exchange(raw.port, request)
    r = servers.parse_response(data)
    assert (r.status, r.json()["code"]) == (431, "headers_too_large")
    assert closed
    event = audit_event(raw, r)
    assert (event["method"], event["status"], event["reason"]) == (
        "-",
        431,
        "request head too large",
    )


KEY = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")


@pytest.mark.parametrize(
    ("method", "broken"),
    [
        pytest.param("GET", [("sec-websocket-version", "13")], id="no-key"),
        pytest.param(
            "GET",
            [("sec-websocket-key", "short<script>"), ("sec-websocket-version", "13")],
            id="malformed-key",
        ),
        pytest.param("GET", [KEY, ("sec-websocket-version", "12")], id="other-version"),
        pytest.param("POST", [KEY, ("sec-websocket-version", "13")], id="post"),
    ],
)
def test_a_broken_websocket_handshake_gets_edgeauths_json_400_audited(
    echo: tuple[servers.Process, servers.Process], method: str, broken: list[tuple[str, str]]
) -> None:
    """A handshake the WebSocket library refuses is answered with edgeauth's
    JSON 400, audited, never the library's text (which repeats the request)."""
    ea, upstream = echo
    handshake = [("host", "app.test"), ("upgrade", "websocket"), ("connection", "Upgrade")]
    request = f"{method} /public/ws?q=SECRET HTTP/1.1\r\n".encode() + b"".join(
        f"{n}: {v}\r\n".encode() for n, v in [*handshake, *broken]
    )
    data, closed = servers.raw_exchange(ea.port, request + b"\r\n")
    r = servers.parse_response(data)
    assert (r.status, r.json()["code"]) == (400, "bad_request")
    assert closed and r.header("connection") == "close"
    assert b"websocket" not in r.body.lower() and b"script" not in data
    assert servers.upstream_log(upstream) == []
    event = audit_event(ea, r)
    assert (event["method"], event["path"], event["rule"], event["status"]) == (
        method,
        "/public/ws",
        None,
        400,
    )
    assert event["reason"] == "invalid WebSocket handshake"
    assert "SECRET" not in json.dumps(event)


# Framing and limits ------------------------------------------------------------------

FRAMING = {
    "content-length-and-chunked": b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-content-lengths": b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "repeated-content-length": b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "obs-fold": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
    "bare-lf": b"GET /public/x HTTP/1.1\nHost: a\n\n",
    "bare-lf-in-one-line": b"GET /public/x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
    "no-host": b"GET /public/x HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "space-before-colon": b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length : 2\r\n\r\nab",
    "chunked-twice": b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "fragment": b"GET /public/x#top HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", FRAMING)
def test_ambiguous_framing_is_400_and_closed(
    echo: tuple[servers.Process, servers.Process], name: str
) -> None:
    """Ambiguous or malformed framing gets 400 JSON and a closed connection, and is never forwarded."""
    ea, upstream = echo
    data, closed = servers.raw_exchange(ea.port, FRAMING[name])
    r = servers.parse_response(data)
    assert r.status == 400
    assert r.json()["code"] == "bad_request"
    assert r.header("connection") == "close" and closed
    assert servers.upstream_log(upstream) == []
    # Never decided, but audited: smuggling attempts show in the audit trail.
    event = audit_event(ea, r)
    assert (event["rule"], event["method"], event["code"], event["status"]) == (
        None,
        "-",
        "bad_request",
        400,
    )
    assert event["reason"] == "invalid HTTP request" and event["client"] == "127.0.0.1"
    # What the parser read of the target, if anything; never a fragment.
    assert event["path"] in ("/public/x", "")
    if name == "fragment":
        assert event["path"] == "/public/x"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /public/x?access_token=SECRET1 HTTP/1.1\r\nHost: a\r\nX-Big: "
            + b"v" * 5000
            + b"\r\n\r\n",
            id="query-of-a-431",
        ),
        pytest.param(b"GET /cb#access_token=SECRET2 HTTP/1.1\r\nHost: a\r\n\r\n", id="fragment"),
        pytest.param(
            b"GET http://user:SECRET3@a/public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            id="userinfo",
        ),
    ],
)
def test_a_refused_target_is_audited_without_its_query_or_credentials(
    echo: tuple[servers.Process, servers.Process], request_bytes: bytes
) -> None:
    """The audit event of a request the parser refuses shows the path of its
    target, never a query, fragment or userinfo (which can carry tokens)."""
    ea, _ = echo
    data, _ = servers.raw_exchange(ea.port, request_bytes)
    r = servers.parse_response(data)
    assert r.status in (400, 431)
    event = audit_event(ea, r)
    assert event["path"] in ("/public/x", "/cb", "")
    assert "SECRET" not in ea.output()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /public/x HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(21))
            + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(
            b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n",
            id="large-header",
        ),
        pytest.param(
            b"GET /public/" + b"p" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", id="long-target"
        ),
    ],
)
def test_head_over_the_limits_is_431(
    echo: tuple[servers.Process, servers.Process], request_bytes: bytes
) -> None:
    """More than max_headers fields, or a head over max_head_bytes: 431 JSON, connection closed."""
    ea, upstream = echo
    data, closed = servers.raw_exchange(ea.port, request_bytes)
    r = servers.parse_response(data)
    assert r.status == 431
    assert r.json()["code"] == "headers_too_large"
    assert closed
    assert servers.upstream_log(upstream) == []
    event = audit_event(ea, r)
    assert (event["code"], event["status"], event["reason"]) == (
        "headers_too_large",
        431,
        "request head too large",
    )
    assert event["path"].startswith("/public/") and len(event["path"]) <= 512


def test_head_arriving_in_pieces_is_cut_at_the_limit(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A header that keeps growing over many reads is refused once the head passes the limit."""
    ea, _ = echo
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        s.sendall(b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: ")
        answer = b""
        for _ in range(64):  # up to 64 KiB, far over the 4 KiB limit
            try:
                s.sendall(b"v" * 1024)
            except OSError:
                break
            time.sleep(0.005)
        answer = servers.read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("sent", [b"", b"GET /public/x HTTP/1.1\r\nHost: a\r\n"])
def test_slow_or_idle_head_is_cut_off(
    echo: tuple[servers.Process, servers.Process], sent: bytes
) -> None:
    """A head not complete within head_timeout (or no bytes at all) closes the connection."""
    ea, upstream = echo
    data, closed = servers.raw_exchange(ea.port, sent)
    assert closed and data == b""
    assert servers.upstream_log(upstream) == []


def test_pipelined_responses_leave_whole_and_in_order(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A HEAD answer (no body), a GET and a 404 pipelined on one connection come back in order."""
    ea, _ = echo
    head = b"HEAD /public/a HTTP/1.1\r\nhost: app.test\r\n\r\n"
    get = b"GET /public/b HTTP/1.1\r\nhost: app.test\r\n\r\n"
    last = b"GET /nowhere HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n"
    data, closed = servers.raw_exchange(ea.port, head + get + last)
    assert closed
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    second = servers.parse_response(rest)
    assert second.status == 200
    assert second.json()["raw_path"] == "/public/b"
    assert data.count(b"HTTP/1.1 ") == 3


@pytest.mark.parametrize(
    "refused",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /public/c HTTP/1.1\r\nhost: app.test\r\n" + b"x-h: 1\r\n" * 25 + b"\r\n",
        # More than the socket buffers hold after the refused request: read and
        # dropped, so that closing does not reset the connection and lose the
        # answers.
        b"GARBAGE\r\n\r\n" + b"x" * 4_000_000,
    ],
    ids=["garbage", "too-many-headers", "garbage-then-more"],
)
def test_requests_pipelined_before_a_refused_one_are_answered_first(
    echo: tuple[servers.Process, servers.Process], refused: bytes
) -> None:
    """Requests pipelined before one the parser refuses get their answers, in
    order, then the refusal (400, or 431 for a head over the limits) and the
    connection closes: the client learns what happened to each request."""
    ea, upstream = echo
    first = b"GET /public/a HTTP/1.1\r\nhost: app.test\r\n\r\n"
    second = b"GET /public/b HTTP/1.1\r\nhost: app.test\r\n\r\n"
    data, closed = servers.raw_exchange(ea.port, first + second + refused)
    assert closed
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        answers.append((head.split(b" ")[1], rest[:length]))
        data = rest[length:]
    assert [status for status, _ in answers] == [
        b"200",
        b"200",
        b"431" if b"x-h: 1" in refused else b"400",
    ]
    assert [json.loads(body)["raw_path"] for _, body in answers[:2]] == ["/public/a", "/public/b"]
    assert json.loads(answers[2][1])["code"] == (
        "headers_too_large" if answers[2][0] == b"431" else "bad_request"
    )
    assert [r["raw_path"] for r in servers.upstream_log(upstream)][-2:] == [
        "/public/a",
        "/public/b",
    ]


def _answers(data: bytes) -> list[tuple[bytes, bytes]]:
    """(status, body) of each answer in ``data``, by Content-Length."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answers.append((head.split(b" ")[1], rest[:length]))
        data = rest[length:]
    return answers


@pytest.mark.parametrize("refused", [b"host: a\r\nhost: b\r\n", b""], ids=["two-hosts", "no-host"])
def test_a_head_refused_behind_a_running_request_waits_for_its_answer(
    echo: tuple[servers.Process, servers.Process], refused: bytes
) -> None:
    """A head refused for its Host fields (checked when the head is complete)
    behind a request still being answered, and behind one still queued, is
    refused after their answers: they are neither cut off nor dropped."""
    ea, upstream = echo
    slow = b"POST /public/slow?s=0.3 HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nhello"
    queued = b"GET /public/queued HTTP/1.1\r\nhost: app.test\r\n\r\n"
    bad = b"GET /public/bad HTTP/1.1\r\n" + refused + b"\r\n"
    servers.upstream_log(upstream)
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        s.sendall(slow)
        time.sleep(0.1)  # the POST is running
        s.sendall(queued + bad)
        data = servers.read_all(s)
    answers = _answers(data)
    assert [status for status, _ in answers] == [b"200", b"200", b"400"]
    assert json.loads(answers[1][1])["raw_path"] == "/public/queued"
    assert [r["raw_path"] for r in servers.upstream_log(upstream)] == [
        "/public/slow",
        "/public/queued",
    ]


def test_a_body_refused_after_expect_100_continue_logs_no_error(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A chunked body refused while the client waits for 100 Continue gets the
    400 and a closed connection, and the server writes nothing after it (no
    'write after write_eof' error in its log)."""
    ea, _ = echo
    request = (
        b"POST /public/c HTTP/1.1\r\nhost: app.test\r\nexpect: 100-continue\r\n"
        b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n"
    )
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        s.sendall(request)
        data = servers.read_all(s)  # until the server ends its side
        time.sleep(0.3)  # the connection stays open: the app's leftovers would write now
    assert data.count(b"HTTP/1.1 ") == 1 and data.startswith(b"HTTP/1.1 400"), data[:200]
    assert "write_eof" not in ea.output() and "Traceback" not in ea.output()


def test_a_client_that_half_closes_gets_every_answer(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """A client that sends its requests and then shuts its sending side
    (SHUT_WR) still gets every answer, in order, before the connection closes;
    with a refused one last, the refusal too."""
    ea, _ = echo
    slow = b"GET /public/slow?s=0.2 HTTP/1.1\r\nhost: app.test\r\n\r\n"
    second = b"GET /public/b HTTP/1.1\r\nhost: app.test\r\n\r\n"
    for tail, statuses in ((b"", [b"200", b"200"]), (b"GARBAGE\r\n\r\n", [b"200", b"200", b"400"])):
        with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
            s.sendall(slow + second + tail)
            s.shutdown(socket.SHUT_WR)
            data = servers.read_all(s)
        assert [status for status, _ in _answers(data)] == statuses, data[:300]


def test_head_timeout_counts_from_each_head_on_a_kept_alive_connection(
    echo: tuple[servers.Process, servers.Process],
) -> None:
    """Each head gets head_timeout from its first byte, however long the connection lived."""
    ea, _ = echo
    request = b"GET /public/x HTTP/1.1\r\nhost: app.test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", ea.port), timeout=10) as s:
        for _ in range(3):  # past the first head's deadline, on one connection
            s.sendall(request)
            assert _read_response(s).startswith(b"HTTP/1.1 200")
            time.sleep(0.4)
        s.sendall(request[:20])
        started = time.monotonic()
        assert s.recv(65536) == b""  # closed
        assert 0.8 < time.monotonic() - started < 5


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(65536)
    return head


# Units --------------------------------------------------------------------------------


def test_request_headers_add_identity_after_hop_by_hop_removal(tmp_path: Path) -> None:
    """Connection naming an identity header cannot remove the one edgeauth sets."""
    from edgeauth import load_policy

    policy = load_policy(write_policy(tmp_path))
    view = RequestView("GET", b"/x", headers={"host": ("app.test",)}, client="::1")
    allow = Allow("r", "rule", "/x", b"/x", upstream_headers=(("x-user-id", "alice"),))
    raw = [(b"connection", b"x-user-id, x-other"), (b"x-other", b"1"), (b"host", b"app.test")]
    out = request_headers(raw, view, allow, policy, "::1")
    assert ("x-user-id", "alice") in out
    assert all(n.lower() not in ("connection", "x-other") for n, _ in out)
    assert [v for n, v in out if n == "Host"] == ["app.test"]


def test_connection_drops_a_named_header_in_either_spelling(tmp_path: Path) -> None:
    """A header Connection names goes, spelled exactly or with '_' for '-'."""
    from edgeauth import load_policy

    policy = load_policy(write_policy(tmp_path))
    view = RequestView("GET", b"/x", headers={"host": ("app.test",)}, client="::1")
    allow = Allow("r", "rule", "/x", b"/x")
    raw = [(b"connection", b"x-a, x_b"), (b"x_a", b"1"), (b"x_b", b"2"), (b"x-c", b"3")]
    assert request_headers(raw, view, allow, policy, "::1")[:1] == [("x-c", "3")]
    assert response_headers(raw, (), cors=False) == [(b"x-c", b"3")]


def test_a_value_that_is_not_utf8_is_refused_unless_connection_drops_it(
    tmp_path: Path,
) -> None:
    """Only a header that would be forwarded has to be UTF-8."""
    from edgeauth import load_policy
    from edgeauth.errors import BadRequest

    policy = load_policy(write_policy(tmp_path))
    view = RequestView("GET", b"/x", headers={"host": ("app.test",)}, client="::1")
    allow = Allow("r", "rule", "/x", b"/x")
    raw = [(b"connection", b"x-bin"), (b"x-bin", b"\xff"), (b"x-kept", b"1")]
    out = request_headers(raw, view, allow, policy, "::1")
    assert ("x-kept", "1") in out
    assert all(n != "x-bin" for n, _ in out)
    with pytest.raises(BadRequest):
        request_headers(raw[1:], view, allow, policy, "::1")


def test_response_headers_replace_access_control_on_cors_rules() -> None:
    """On a CORS rule the app's Access-Control-* headers give way to edgeauth's."""
    raw = [
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Connection", b"x-a"),
        (b"X-A", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Type", b"text/plain"),
    ]
    assert response_headers(raw, (), cors=False) == [
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Content-Type", b"text/plain"),
    ]
    assert response_headers(raw, (("vary", "Origin"),), cors=True) == [
        (b"Content-Type", b"text/plain"),
        (b"vary", b"Origin"),
    ]
    # A rule with a rate limit but no CORS adds its RateLimit-* fields and
    # leaves the app's own Access-Control-* alone.
    assert response_headers(raw, (("ratelimit-limit", "5"),), cors=False) == [
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Content-Type", b"text/plain"),
        (b"ratelimit-limit", b"5"),
    ]


async def test_a_pooled_upstream_connection_keeps_no_read_timer_of_a_response_read_slowly(
    tmp_path: Path,
) -> None:
    """A response read more slowly than it arrived (reading paused for
    back-pressure, its end parsed when reading resumes) leaves no read timer
    on the pooled connection: the next request over it, sent after longer
    than read_timeout, is answered (aiohttp 3.14 re-arms the timer there, and
    the next request fails with a read timeout although the upstream is fine)."""
    body = b"x" * (512 * 1024)
    connections = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    section = servers.server_section(0, f"http://127.0.0.1:{port}", read_timeout=0.3)
    policy = load_policy(write_policy(tmp_path, section + SEED_POLICY))
    proxy = Proxy(policy, Engine(policy))
    await proxy.startup()
    try:
        session = proxy.session
        for _ in range(3):
            async with session.get(f"http://127.0.0.1:{port}/big", read_bufsize=2**14) as r:
                await asyncio.sleep(0.05)  # all of it arrives while nothing reads
                assert len(b"".join([c async for c in r.content.iter_any()])) == len(body)
            await asyncio.sleep(0.5)  # longer than read_timeout, the connection idle
            async with session.get(f"http://127.0.0.1:{port}/next") as r:
                assert len(await r.read()) == len(body)
        assert len(connections) == 1  # every request went over the one pooled connection
    finally:
        await proxy.aclose()
        server.close()
        await server.wait_closed()
