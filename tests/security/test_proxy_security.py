"""Every attack case through ``edgeauth serve`` over real sockets, in front of a
real upstream; and what only the wire can show: slow heads, and what reaches
the upstream when it fails."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .. import servers
from ..cases import check
from . import cases_ssrf
from .cases_leakage import leaks
from .common import Attack, write_security_policy
from .conftest import Deployment
from .harness import check_safe, credentials
from .table import ALL, case_id


def run(case: Attack, deployment: Deployment) -> None:
    """Send ``case`` to edgeauth serve twice and check each answer and what the
    upstream saw. The second time the memos and the token cache have seen the
    request: it is the short path's (``Engine.settled``) chance to answer."""
    expected = case.expected("proxy")
    for _ in range(2):
        response = servers.request(
            deployment.port,
            expected.method,
            expected.target,
            expected.request_headers,
            expected.body,
            host=expected.peer,
        )
        seen = [r for r in servers.upstream_log(deployment.upstream) if r["type"] == "http"]
        assert len(seen) <= 1, (case.id, seen)
        check(expected, response, seen[0] if seen else None)
        check_safe(expected, response, answered_by_edgeauth=not seen)


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_attack(case: Attack, deployment: Deployment) -> None:
    """edgeauth serve answers the attack as the table says, over real sockets."""
    run(case, deployment)


def test_nothing_in_a_request_makes_edgeauth_fetch_a_url(deployment: Deployment) -> None:
    """No header, token or target makes the proxy connect anywhere but its upstream."""
    with cases_ssrf.Listener() as listener:
        for case in cases_ssrf.cases(listener.url):
            run(case, deployment)
        assert listener.connections() == 0


def test_no_credential_of_any_case_reached_the_log(deployment: Deployment) -> None:
    """The server's log (audit events, errors) holds no credential any case sent."""
    log = deployment.edgeauth.output()
    sent = {c for case in ALL for c in credentials(case.request_headers, case.query)}
    assert not leaks(log, sent, markers=False)


# Slow heads -------------------------------------------------------------------


def test_slow_head_is_cut_off_before_the_upstream(deployment: Deployment) -> None:
    """A head trickled in a field at a time is cut off after head_timeout, unanswered
    and never forwarded (RSnake, 'Slowloris', 2009; CVE-2007-6750)."""
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(b"GET /public/x HTTP/1.1\r\nHost: app.test\r\n")
        closed = False
        for i in range(40):  # 40 x 0.25 s, far past the 1 s head_timeout
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                closed = sock.recv(65536) == b""
                break
        assert closed
    assert servers.upstream_log(deployment.upstream) == []


def test_idle_connection_is_closed(deployment: Deployment) -> None:
    """A connection that never sends a head is closed after head_timeout."""
    data, closed = servers.raw_exchange(deployment.port, b"")
    assert closed and data == b""


# What edgeauth says when the upstream fails ---------------------------------------


class FaultyUpstream:
    """A TCP server on 127.0.0.1 that fails the way ``mode`` says, saying something
    secret-looking that must not reach the client."""

    SAID = b"UPSTREAM-INTERNAL-DIAGNOSTIC /srv/app/secrets.py line 42"

    def __init__(self) -> None:
        self.mode = "garbage"
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "garbage":
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(self.SAID + b"\r\n\r\n")
                conn.close()
            elif self.mode == "invalid-status":
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 999 " + self.SAID + b"\r\nContent-Length: 0\r\n\r\n")
                conn.close()
            elif self.mode == "reset":
                conn.close()
            else:  # stall: read and never answer
                self._open.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)
        for conn in self._open:
            conn.close()


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, FaultyUpstream]]:
    folder = tmp_path_factory.mktemp("failing")
    upstream = FaultyUpstream()
    try:
        port = servers.free_port()
        server = servers.server_section(
            port, f"http://127.0.0.1:{upstream.port}", read_timeout=1.0, connect_timeout=1.0
        )
        with servers.edgeauth(write_security_policy(folder, server), port):
            yield port, upstream
    finally:
        upstream.close()


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("garbage", 502, "bad_gateway"),
        # RFC 9110 §15: a status outside 100..599 is invalid, processed as a 5xx.
        ("invalid-status", 502, "bad_gateway"),
        ("reset", 502, "bad_gateway"),
        ("stall", 504, "gateway_timeout"),
    ],
)
def test_upstream_failure_says_nothing_of_the_upstream(
    failing: tuple[int, FaultyUpstream], mode: str, status: int, code: str
) -> None:
    """When the upstream fails, the 502/504 is edgeauth's JSON with nothing the upstream
    said, no address, no library, no exception (CWE-209)."""
    port, upstream = failing
    upstream.mode = mode
    request = b"GET /public/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    data, _ = servers.raw_exchange(port, request)
    assert data, "the connection was closed without an answer"
    response = servers.parse_response(data)
    assert response.status == status
    assert response.json()["code"] == code
    text = "\n".join(f"{n}: {v}" for n, v in response.headers) + response.body.decode()
    assert not leaks(text)
    assert "UPSTREAM" not in text and str(upstream.port) not in text


def test_unreachable_upstream_says_nothing_of_it(tmp_path: Path) -> None:
    """An upstream nobody listens on is a bare 502: no address, no errno (CWE-209)."""
    dead = servers.free_port()
    port = servers.free_port()
    server = servers.server_section(port, f"http://127.0.0.1:{dead}", connect_timeout=1.0)
    with servers.edgeauth(write_security_policy(tmp_path, server), port):
        response = servers.request(port, "GET", b"/public/x", [("host", "app.test")])
    assert response.status == 502
    text = "\n".join(f"{n}: {v}" for n, v in response.headers) + response.body.decode()
    assert not leaks(text)
    assert str(dead) not in text
