"""Request smuggling at the proxy, over raw sockets.

A front-end and a back-end that frame one byte stream differently let a
request ride inside another past the front-end's decision (Watchfire, 'HTTP
Request Smuggling', 2005; J. Kettle, 'HTTP Desync Attacks: Request Smuggling
Reborn', 2019). edgeauth must refuse every ambiguous framing (400 and a
closed connection, RFC 9112 §6.3), decide every request it does parse on its
own, and re-frame what it forwards so the upstream reads exactly one request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from .. import servers
from ..helpers import Response
from .common import PROXY_SETTINGS, write_security_policy
from .conftest import Deployment

KETTLE = "J. Kettle, 'HTTP Desync Attacks: Request Smuggling Reborn' (2019)"
HEAD = b"POST /public/x HTTP/1.1\r\nHost: app.test\r\n"
ADMIN = b"GET /api/admin/users HTTP/1.1\r\nHost: app.test\r\n\r\n"
LAST = b"GET /public/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"

# id: (bytes on the wire, source). Each is refused with 400 and a closed connection.
REFUSED: dict[str, tuple[bytes, str]] = {
    "cl-te": (
        HEAD + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        f"{KETTLE} (CL.TE); RFC 9112 §6.3 rule 3",
    ),
    "te-cl": (
        HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        f"{KETTLE} (TE.CL); RFC 9112 §6.3 rule 3",
    ),
    "te-space-before-colon": (
        HEAD + b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "CVE-2019-16276 (Go net/http); RFC 9112 §5.1",
    ),
    "te-chunked-identity": (
        HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        f"{KETTLE} (TE obfuscation); RFC 9112 §6.3 rule 4",
    ),
    "te-chunked-twice-in-one": (
        HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "RFC 9112 §7 (chunked applied once)",
    ),
    "te-two-fields": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        f"{KETTLE} (TE.TE)",
    ),
    "te-unknown-coding": (
        HEAD + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        f"{KETTLE} (TE obfuscation); RFC 9112 §6.1 (501/400)",
    ),
    "te-identity": (
        HEAD + b"Transfer-Encoding: identity\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "RFC 9112 §7 (identity is no transfer coding)",
    ),
    "te-quoted": (
        HEAD + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
        f"{KETTLE} (TE obfuscation)",
    ),
    "te-vertical-tab": (
        HEAD + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        f"{KETTLE} (TE obfuscation); CVE-2020-7238 (Netty)",
    ),
    "te-nul": (
        HEAD + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n",
        "RFC 9110 §5.5 (no NUL in field values)",
    ),
    "te-obs-fold": (
        HEAD + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        "RFC 9112 §5.2 (obs-fold is refused); CVE-2022-32215 (Node llhttp)",
    ),
    "te-leading-space-line": (
        HEAD + b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "RFC 9112 §2.2 (whitespace before the first field)",
    ),
    "te-trailer-smuggles-framing": (
        HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "RFC 9112 §7.1.2 (framing fields never in trailers)",
    ),
    "cl-twice-same": (
        HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        f"{KETTLE} (CL.CL); RFC 9112 §6.3 rule 5",
    ),
    "cl-twice-different": (
        HEAD + b"Content-Length: 2\r\nContent-Length: 40\r\n\r\nab" + ADMIN,
        f"{KETTLE} (CL.CL); RFC 9112 §6.3 rule 5",
    ),
    "cl-list": (HEAD + b"Content-Length: 2, 2\r\n\r\nab", "RFC 9110 §8.6; RFC 9112 §6.3 rule 5"),
    "cl-plus-sign": (HEAD + b"Content-Length: +2\r\n\r\nab", "RFC 9110 §8.6 (1*DIGIT)"),
    "cl-negative": (HEAD + b"Content-Length: -2\r\n\r\nab", "RFC 9110 §8.6"),
    "cl-hex": (HEAD + b"Content-Length: 0x2\r\n\r\nab", "RFC 9110 §8.6"),
    "cl-space-inside": (HEAD + b"Content-Length: 1 0\r\n\r\nabcdefghij", "RFC 9110 §8.6"),
    "cl-overflow": (
        HEAD + b"Content-Length: 18446744073709551617\r\n\r\nab",
        "CWE-190; RFC 9110 §8.6",
    ),
    "chunk-size-prefix": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
        "RFC 9112 §7.1 (chunk-size is HEXDIG)",
    ),
    "chunk-size-space": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
        "RFC 9112 §7.1; CVE-2023-44487 class parsers",
    ),
    "chunk-size-overflow": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nab\r\n0\r\n\r\n",
        "CWE-190; RFC 9112 §7.1",
    ),
    "chunk-data-overrun": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        "RFC 9112 §7.1 (CRLF after chunk-data)",
    ),
    "chunk-bare-lf": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\nab\n0\n\n",
        "RFC 9112 §2.2; CVE-2025-43859 (h11 chunk terminators)",
    ),
    "bare-lf-head": (
        b"POST /public/x HTTP/1.1\nHost: app.test\nTransfer-Encoding: chunked\n\n0\n\n",
        "RFC 9112 §2.2 (bare LF); Kettle 2019",
    ),
    "bare-cr-head": (
        b"GET /public/x HTTP/1.1\rHost: app.test\r\n\r\n",
        "RFC 9112 §2.2 (bare CR is refused)",
    ),
}

# Valid, if unusual, framing: decided and forwarded as exactly one request.
VALID: dict[str, tuple[bytes, int, str]] = {
    "te-tab-is-whitespace": (
        HEAD + b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        5,
        "RFC 9110 §5.6.3 (OWS includes HTAB)",
    ),
    "te-case-insensitive": (
        HEAD + b"Transfer-Encoding: ChUnKeD\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        5,
        "RFC 9112 §7 (coding names are case-insensitive)",
    ),
    "te-name-case": (
        HEAD + b"tRANSFER-eNCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        5,
        "RFC 9110 §5.1 (field names are case-insensitive)",
    ),
    "chunk-extension": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
        5,
        "RFC 9112 §7.1.1 (chunk extensions)",
    ),
    "cl-leading-zeros": (HEAD + b"Content-Length: 005\r\n\r\nhello", 5, "RFC 9110 §8.6"),
}


def parse_all(data: bytes) -> list[Response]:
    """Every response in ``data``, in order (each has a Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        response = servers.parse_response(head + b"\r\n\r\n" + rest)
        length = int(response.header("content-length") or 0)
        response.body = rest[:length]
        out.append(response)
        data = rest[length:]
    return out


def exchange(
    deployment: Deployment, data: bytes
) -> tuple[list[Response], bool, list[dict[str, object]]]:
    """(responses, whether the connection was closed, what the upstream received)."""
    answer, closed = servers.raw_exchange(deployment.port, data)
    seen = [r for r in servers.upstream_log(deployment.upstream) if r["type"] == "http"]
    return parse_all(answer), closed, seen


def first_response(port: int, data: bytes) -> Response:
    """The first response to ``data``, read as soon as it is complete (the server
    may keep the connection open after an upgrade request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
            _head, sep, rest = received.partition(b"\r\n\r\n")
            if sep:
                response = servers.parse_response(received)
                if len(rest) >= int(response.header("content-length") or 0):
                    return response


@pytest.mark.parametrize("name", REFUSED)
def test_ambiguous_framing_is_refused(deployment: Deployment, name: str) -> None:
    """Ambiguous framing is 400 JSON, the connection is closed, nothing reaches the upstream."""
    responses, closed, seen = exchange(deployment, REFUSED[name][0])
    assert [r.status for r in responses] == [400], name
    assert responses[0].json()["code"] == "bad_request"
    assert closed
    assert seen == []


@pytest.mark.parametrize("name", VALID)
def test_valid_framing_reaches_the_upstream_as_one_request(
    deployment: Deployment, name: str
) -> None:
    """Unusual but valid framing is read once: one request, its whole body, upstream."""
    data, length, _ = VALID[name]
    responses, _, seen = exchange(deployment, data + LAST)
    assert [r.status for r in responses] == [200, 200], name
    assert [(r["method"], r["raw_path"]) for r in seen] == [
        ("POST", "/public/x"),
        ("GET", "/public/x"),
    ]
    assert json.loads(responses[0].body)["body_length"] == length


DESYNC: dict[str, tuple[bytes, list[int], str]] = {
    # A complete request after the terminating chunk is a request of its own.
    "after-last-chunk": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + ADMIN + LAST,
        [200, 401, 200],
        f"{KETTLE} (the smuggled prefix is decided like any request)",
    ),
    # The body of a request edgeauth denies is read past, never parsed as a request.
    "body-of-a-denied-request": (
        b"POST /api/protected/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n"
        % len(ADMIN)
        + ADMIN
        + LAST,
        [401, 200],
        "J. Kettle, 'Browser-Powered Desync Attacks' (2022, CL.0)",
    ),
    "body-of-a-get": (
        b"GET /api/protected/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n"
        % len(ADMIN)
        + ADMIN
        + LAST,
        [401, 200],
        "J. Kettle, 'Browser-Powered Desync Attacks' (2022, GET with body)",
    ),
    "body-of-an-unmatched-request": (
        b"POST /nowhere HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(ADMIN)
        + ADMIN
        + LAST,
        [404, 200],
        "J. Kettle, 'Browser-Powered Desync Attacks' (2022, CL.0 on 404)",
    ),
    "body-over-max-body": (
        b"POST /api/login HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(ADMIN)
        + ADMIN
        + LAST,
        [413, 200],
        "J. Kettle, 'Browser-Powered Desync Attacks' (2022); RFC 9110 §15.5.14",
    ),
    "chunked-body-of-a-denied-request": (
        b"POST /api/protected/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(ADMIN)
        + ADMIN
        + b"\r\n0\r\n\r\n"
        + LAST,
        [401, 200],
        f"{KETTLE}",
    ),
    "pipelined": (
        b"GET /public/x HTTP/1.1\r\nHost: app.test\r\n\r\n" + ADMIN + LAST,
        [200, 401, 200],
        "RFC 9112 §9.3.2 (pipelining): each request decided on its own",
    ),
}


@pytest.mark.parametrize("name", DESYNC)
def test_no_request_hides_in_another(deployment: Deployment, name: str) -> None:
    """Each request on a connection is decided on its own; a request inside a body
    never becomes one, and none reaches the upstream undecided."""
    data, statuses, _ = DESYNC[name]
    responses, _, seen = exchange(deployment, data)
    assert [r.status for r in responses] == statuses, name
    assert all(r["raw_path"] != "/api/admin/users" for r in seen), name
    assert len(seen) == statuses.count(200)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/public/x", 200), ("/api/protected/me", 401)],
)
def test_h2c_upgrade_is_never_passed_on(deployment: Deployment, path: str, status: int) -> None:
    """An h2c upgrade is not relayed, so no HTTP/2 tunnel can bypass the per-request
    decision (J. Miller, 'h2c Smuggling', Bishop Fox 2020)."""
    data = (
        f"GET {path} HTTP/1.1\r\nHost: app.test\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"
    ).encode()
    response = first_response(deployment.port, data)
    assert response.status == status  # never 101
    seen = [r for r in servers.upstream_log(deployment.upstream) if r["type"] == "http"]
    assert len(seen) == (1 if status == 200 else 0)
    for record in seen:
        names = {n.lower() for n, _ in record["headers"]}
        assert names.isdisjoint({"upgrade", "http2-settings", "connection"}), names


def test_websocket_upgrade_without_credentials_is_denied(deployment: Deployment) -> None:
    """A WebSocket handshake to a protected path is decided first: 401, never 101."""
    data = (
        b"GET /api/protected/me HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    answer, _ = servers.raw_exchange(deployment.port, data)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert servers.upstream_log(deployment.upstream) == []


def test_transfer_encoding_in_http_1_0_closes_the_connection(deployment: Deployment) -> None:
    """HTTP/1.0 with Transfer-Encoding: answered at most once, then closed (RFC 9112 §6.1)."""
    data = (
        b"POST /public/x HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + ADMIN
    )
    responses, closed, seen = exchange(deployment, data)
    assert closed
    assert len(responses) == 1
    assert len(seen) <= 1 and all(r["raw_path"] == "/public/x" for r in seen)


# What the upstream reads -------------------------------------------------------


@pytest.fixture(scope="module")
def raw_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """edgeauth in front of an upstream that answers with the request head it read."""
    folder = tmp_path_factory.mktemp("raw")
    with servers.upstream("raw", folder) as upstream:
        port = servers.free_port()
        server = servers.server_section(port, upstream.url, **PROXY_SETTINGS)
        with servers.edgeauth(write_security_policy(folder, server), port):
            yield port


def upstream_head(port: int, data: bytes) -> list[tuple[str, str]]:
    """The header fields the raw upstream received for ``data``."""
    answer, _ = servers.raw_exchange(port, data)
    response = servers.parse_response(answer)
    assert response.status == 200, response.body
    _, *fields = response.json()["head"].rstrip("\r\n").split("\r\n")
    return [(n.strip().lower(), v.strip()) for n, _, v in (f.partition(":") for f in fields)]


FRAMING_NAMES = ("content-length", "transfer-encoding")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEAD + b"Connection: close\r\nContent-Length: 5\r\n\r\nhello", id="length"),
        pytest.param(
            HEAD
            + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(
            HEAD
            + b"Connection: close\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
            id="underscore-transfer-encoding",
        ),
        pytest.param(
            HEAD + b"Connection: close\r\nContent_Length: 50\r\nContent-Length: 5\r\n\r\nhello",
            id="underscore-content-length",
        ),
        pytest.param(
            HEAD + b"Connection: close, Content-Length\r\nContent-Length: 5\r\n\r\nhello",
            id="connection-names-content-length",
        ),
    ],
)
def test_upstream_reads_exactly_one_framing_header(raw_upstream: int, data: bytes) -> None:
    """The upstream gets one Content-Length or one Transfer-Encoding, and no other
    spelling of either that a server folding '_' into '-' could read as framing
    (sozu-proxy/sozu#726: a proxy forwarding a framing header the backend reads
    differently; RFC 3875 §4.1.18)."""
    fields = upstream_head(raw_upstream, data)
    framing = [n for n, _ in fields if n.replace("_", "-") in FRAMING_NAMES]
    assert len(framing) == 1, fields
    assert framing[0] in FRAMING_NAMES, fields
