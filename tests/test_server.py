"""edgeauth serve as a server: signals, workers, TLS, routing, the CLI, the demo."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from edgeauth import load_policy
from edgeauth import server as server_module
from edgeauth.cli import cli
from edgeauth.pipeline import Engine
from edgeauth.server import EdgeHttpProtocol, EdgeServer, _CoalescingTransport, parse_listen

from . import servers
from .helpers import (
    SEED_POLICY,
    RecordingAudit,
    Response,
    call,
    self_signed,
    session_token,
    write_policy,
)
from .servers import POLL, poll


def get(port: int, target: bytes, headers: list[tuple[str, str]] | None = None) -> Response:
    return servers.request(port, "GET", target, headers or [("host", "app.test")])


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_stops_accepting_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM: new connections are refused, the request in flight completes, exit code 0."""
    with servers.upstream("echo", tmp_path) as upstream:
        port = servers.free_port()
        policy = write_policy(tmp_path, servers.server_section(port, upstream.url) + SEED_POLICY)
        with servers.edgeauth(policy, port) as ea:
            answers: list[Response] = []
            slow = threading.Thread(
                target=lambda: answers.append(get(port, b"/public/slow?s=3")), daemon=True
            )
            slow.start()
            seen: list[dict[str, Any]] = []
            poll(lambda: seen.extend(servers.upstream_log(upstream)) or seen, "the slow request")
            ea.popen.send_signal(signal.SIGTERM)
            poll(lambda: refuses_connections(port), "the listener to close")
            assert slow.is_alive()  # still in flight while no longer accepting
            slow.join(POLL)
            assert ea.popen.wait(POLL) == 0
    assert answers and answers[0].status == 200
    assert answers[0].json()["raw_path"] == "/public/slow"


def _workers_of(pid: int) -> list[int]:
    found = []
    for child in servers.children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def test_workers_run_as_separate_processes(tmp_path: Path) -> None:
    """--workers 2 serves from two worker processes; SIGTERM stops them all with exit code 0."""
    with servers.upstream("echo", tmp_path) as upstream:
        port = servers.free_port()
        policy = write_policy(tmp_path, servers.server_section(port, upstream.url) + SEED_POLICY)
        with servers.edgeauth(policy, port, workers=2) as ea:
            poll(lambda: len(_workers_of(ea.pid)) == 2, "two workers")
            workers = _workers_of(ea.pid)
            for _ in range(4):
                assert get(port, b"/public/x").status == 200
            assert get(port, b"/api/protected/me").status == 401
            assert ea.stop() == 0
        assert not any(servers.alive(pid) for pid in workers)


def test_tls_is_served_with_tls_cert_and_key(tmp_path: Path) -> None:
    """With tls_cert/tls_key edgeauth speaks HTTPS and tells the upstream the scheme."""
    cert = self_signed(tmp_path)
    with servers.upstream("echo", tmp_path) as upstream:
        port = servers.free_port()
        section = servers.server_section(port, upstream.url, tls_cert="tls.crt", tls_key="tls.key")
        with servers.edgeauth(write_policy(tmp_path, section + SEED_POLICY), port):
            context = ssl.create_default_context(cafile=str(cert))
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            try:
                connection.request(
                    "GET", "/api/protected/me", headers={"cookie": f"session={session_token()}"}
                )
                response = connection.getresponse()
                body = json.loads(response.read())
            finally:
                connection.close()
    assert response.status == 200
    seen = dict(body["headers"])
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-user-id"] == "alice"


# In process: routing and lifespan --------------------------------------------------


async def test_without_upstream_everything_is_404_json(tmp_path: Path) -> None:
    """With no [server] upstream (and no forward-auth) every request is 404
    not_found JSON, audited."""
    policy = load_policy(write_policy(tmp_path))
    audit = RecordingAudit()
    app = EdgeServer(policy, engine=Engine(policy, audit=audit))
    for path in (b"/", b"/public/x", b"/api/protected/me"):
        r = await call(app, raw_path=path)
        assert r.status == 404
        assert r.json()["code"] == "not_found"
        event = audit.events[-1]
        assert event["request_id"] == r.header("x-request-id")
        assert (event["path"], event["code"], event["status"]) == (path.decode(), "not_found", 404)
    assert len(audit.events) == 3


@pytest.mark.parametrize(("dialect", "below"), [("nginx", 404), ("envoy", 299)])
async def test_forward_auth_path_goes_to_the_forward_auth_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialect: str, below: int
) -> None:
    """[forward_auth] path reaches ForwardAuthApp(policy, engine) (envoy: and paths below it)."""
    built: list[tuple[Any, Any]] = []

    class FakeForwardAuth:
        def __init__(self, policy: Any, engine: Any) -> None:
            built.append((policy, engine))

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 299, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    module = types.ModuleType("edgeauth.forward_auth")
    module.ForwardAuthApp = FakeForwardAuth  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgeauth.forward_auth", module)
    text = (
        f'[forward_auth]\npath = "/_auth"\ndialect = "{dialect}"\ntrusted = ["127.0.0.1/32"]\n\n'
        + SEED_POLICY
    )
    app = EdgeServer(load_policy(write_policy(tmp_path, text)))
    assert built == [(app.policy, app.engine)]
    assert (await call(app, raw_path=b"/_auth")).status == 299
    assert (await call(app, raw_path=b"/_auth/api/x")).status == below  # else: no upstream, 404
    assert (await call(app, raw_path=b"/_authx")).status == 404


async def test_lifespan_opens_and_closes_the_upstream_session(tmp_path: Path) -> None:
    """The pooled upstream session is opened at lifespan startup and closed at shutdown."""
    section = servers.server_section(8080, "http://127.0.0.1:9")
    app = EdgeServer(load_policy(write_policy(tmp_path, section + SEED_POLICY)))
    assert app.proxy is not None
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []
    sessions: list[Any] = []

    async def receive() -> dict[str, Any]:
        if sent:
            sessions.append(app.proxy and app.proxy._session)
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sessions[0] is not None and sessions[0].closed
    assert app.proxy._session is None


async def lifespan_startup(app: EdgeServer) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        assert message["type"] != "lifespan.startup.failed"

    await app({"type": "lifespan"}, receive, send)


async def test_a_server_process_makes_its_collector_cheaper_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``edgeauth serve`` (each worker) freezes what startup loaded out of the
    collector's reach and collects the youngest generation less often; an
    EdgeServer embedded elsewhere leaves the process's collector alone."""
    section = servers.server_section(8080, "http://127.0.0.1:9")
    path = write_policy(tmp_path, section + SEED_POLICY)
    threshold = gc.get_threshold()
    try:
        await lifespan_startup(EdgeServer(load_policy(path)))
        assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0
        monkeypatch.setattr(server_module, "_configure_logging", lambda level: None)
        worker = server_module._worker_app(str(path), "warning")
        await lifespan_startup(worker)
        assert gc.get_threshold() == (7_000, *threshold[1:])
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_lifespan_reports_a_failed_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A startup that fails is reported to the server (which then exits) instead of serving."""
    section = servers.server_section(8080, "http://127.0.0.1:9")
    app = EdgeServer(load_policy(write_policy(tmp_path, section + SEED_POLICY)))
    assert app.proxy is not None

    async def broken() -> None:
        raise OSError("no file descriptors left")

    monkeypatch.setattr(app.proxy, "startup", broken)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "descriptors" not in sent[0]["message"]


# The command line ------------------------------------------------------------------


def test_serve_refuses_a_policy_that_does_not_load(tmp_path: Path) -> None:
    """edgeauth serve prints every policy error and exits 1 without listening."""
    bad = write_policy(tmp_path, '[server]\nlisten = "nowhere"\n\n' + SEED_POLICY)
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert "server.listen: expected host:port, got 'nowhere'" in result.output
    bad.write_text("[server]\nworkers = 0\n\n" + SEED_POLICY, encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert "server.workers" in result.output


def test_serve_refuses_workers_that_would_not_share_counters(tmp_path: Path) -> None:
    """--workers 2 with in-memory rate-limit counters is refused at start."""
    text = SEED_POLICY.replace(
        'methods = ["POST"]\npublic = true',
        'methods = ["POST"]\npublic = true\nrate_limit = "5/minute per ip"',
    )
    policy = write_policy(tmp_path, servers.server_section(servers.free_port(), None) + text)
    result = CliRunner().invoke(cli, ["serve", "--config", str(policy), "--workers", "2"])
    assert result.exit_code == 1
    assert "workers" in result.output


def test_serve_exits_non_zero_when_it_cannot_listen(tmp_path: Path) -> None:
    """A listen address already in use is reported and the process exits non-zero."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        policy = write_policy(
            tmp_path, servers.server_section(port, "http://127.0.0.1:9") + SEED_POLICY
        )
        result = subprocess.run(
            [servers.EDGEAUTH, "serve", "--config", str(policy)],
            capture_output=True,
            timeout=POLL,
            check=False,
        )
    assert result.returncode != 0
    assert b"address already in use" in result.stderr.lower()


class _Wire(asyncio.Transport):
    """A transport that records each write (writelines is one write)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.writes.append(b"".join(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_response_head_leaves_with_the_first_body_part() -> None:
    """Head and body go in one write; later body parts and the next response's head as usual."""
    wire = _Wire()
    writer = _CoalescingTransport(wire, asyncio.get_running_loop())
    writer.write(b"HEAD1")
    assert wire.writes == []
    writer.write(b"body")
    writer.write(b"more")
    writer.next_response()
    writer.write(b"HEAD2")
    writer.write(b"")
    await asyncio.sleep(0)
    assert wire.writes == [b"HEAD1body", b"more", b"HEAD2"]


async def test_a_head_with_no_body_part_in_this_turn_leaves_in_the_next() -> None:
    """A head is never held beyond one turn of the loop, and close sends it first."""
    wire = _Wire()
    writer = _CoalescingTransport(wire, asyncio.get_running_loop())
    writer.write(b"HEAD1")
    await asyncio.sleep(0)
    assert wire.writes == [b"HEAD1"]
    writer.next_response()
    writer.write(b"HEAD2")
    writer.close()
    assert wire.writes == [b"HEAD1", b"HEAD2"] and wire.closed


async def _one_exchange(protocol_class: Any, head: bytes, body: bytes) -> tuple[Any, ...]:
    """What the app sees of one request through ``protocol_class``, and the bytes written."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append({k: v for k, v in scope.items() if k != "state"})
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app, lifespan="off", date_header=False, server_header=False)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    wire = _Wire()
    protocol.connection_made(wire)
    protocol.data_received(head)
    for _ in range(5):
        await asyncio.sleep(0)
    protocol.data_received(body)
    for _ in range(5):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return (*seen, b"".join(wire.writes))


async def test_the_app_gets_the_request_uvicorns_protocol_gives() -> None:
    """EdgeHttpProtocol hands the app the scope uvicorn's own protocol would (header
    names lower-cased, in order, repeats kept) and answers Expect: 100-continue."""
    head = (
        b"POST /a/%62?x=1 HTTP/1.1\r\nHost: app.example\r\nX-Custom: A\r\n"
        b"x_custom: b\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    )
    scope, body, wire = await _one_exchange(EdgeHttpProtocol, head, b"ok")
    assert (scope, body, wire) == await _one_exchange(HttpToolsProtocol, head, b"ok")
    assert scope["headers"][1:3] == [(b"x-custom", b"A"), (b"x_custom", b"b")]
    assert body == b"ok"
    assert wire.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 ")


def test_parse_listen() -> None:
    """listen is host:port, with brackets for IPv6."""
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="expected host:port"):
            parse_listen(bad)


# The demo --------------------------------------------------------------------------


def test_demo_runs_the_app_as_its_own_process_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """edgeauth demo serves the app from a separate process behind the proxy; SIGINT stops both, exit 0."""
    port = servers.free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [servers.EDGEAUTH, "demo", "--port", str(port)],
            cwd=servers.ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    demo = servers.Process(popen, port, log)
    apps: list[int] = []
    try:
        servers.wait_until_listening(demo)
        poll(lambda: bool(servers.children(demo.pid)), "the demo app process")
        apps = servers.children(demo.pid)
        cmdline = Path(f"/proc/{apps[0]}/cmdline").read_bytes()
        assert b"edgeauth.demo.upstream" in cmdline
        r = get(port, b"/public/hello")
        assert r.status == 200 and r.json() == {"hello": "world"}
        assert get(port, b"/api/protected/me").status == 401
        r = get(port, b"/dashboard")
        assert r.status == 302 and r.header("location") == "/login?next=%2Fdashboard"
        popen.send_signal(signal.SIGINT)
        assert popen.wait(POLL) == 0
        poll(lambda: not any(servers.alive(pid) for pid in apps), "the demo app to stop")
    finally:
        demo.stop()
        for pid in apps:
            if servers.alive(pid):
                os.kill(pid, signal.SIGKILL)
    output = demo.output()
    assert f"the example app behind edgeauth at http://127.0.0.1:{port}" in output
    assert "Traceback" not in output
