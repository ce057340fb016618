"""Real gateways in front of a real app, edgeauth as their auth service.

Debian's nginx (auth_request) and Caddy (forward_auth) run the very files in
docs/deploy, with only the addresses replaced by ephemeral 127.0.0.1 ports.
The app echoes the request it received, so every test sees what the app saw.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from edgeauth import EdgeAuth, Engine, load_policy
from edgeauth.forward_auth import ForwardAuthApp
from edgeauth.headers import METHOD_OVERRIDE, WELL_KNOWN_IDENTITY

from .gateway_fixtures import (
    EchoApp,
    forward_auth_policy,
    received,
    run_caddy,
    run_nginx,
    serve,
)
from .helpers import API_KEY, RecordingAudit, call, echo_app, session_token, write_policy


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    """A gateway, its edgeauth and the echo app behind it."""

    name: str
    port: int
    echo: EchoApp
    audit: RecordingAudit
    edgeauth_port: int
    reference: EdgeAuth

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Send exactly this request line and these headers (no client-side rewriting)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = headers or []
            own_host = any(name.lower() == "host" for name, _ in headers)
            conn.putrequest(method, target, skip_host=own_host, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def app_saw(self, method: str, target: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
        """The request as the app received it (the request must be allowed)."""
        reply = self.request(method, target, headers)
        assert reply.status == 200, reply.body
        record: dict[str, Any] = reply.json()
        return record


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[EchoApp, int]]:
    echo = EchoApp()
    with serve(echo) as port:
        yield echo, port


def _stack(name: str, folder: Path, upstream: tuple[EchoApp, int], gateway: Any) -> Iterator[Stack]:
    policy = load_policy(write_policy(folder, forward_auth_policy(name)))
    audit = RecordingAudit()
    app = ForwardAuthApp(policy, Engine(policy, audit=audit), audit=audit)
    reference = EdgeAuth(echo_app, policy=policy)
    echo, app_port = upstream
    # ::1 is an untrusted client of edgeauth itself; the gateway reaches it on 127.0.0.1.
    with (
        serve(app, hosts=("127.0.0.1", "::1")) as edgeauth_port,
        gateway(edgeauth_port, app_port) as port,
    ):
        yield Stack(name, port, echo, audit, edgeauth_port, reference)


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, upstream: tuple[EchoApp, int]
) -> Iterator[Stack]:
    yield from _stack("nginx", tmp_path_factory.mktemp("nginx"), upstream, run_nginx)


@pytest.fixture(scope="module")
def caddy(
    tmp_path_factory: pytest.TempPathFactory, upstream: tuple[EchoApp, int]
) -> Iterator[Stack]:
    yield from _stack("caddy", tmp_path_factory.mktemp("caddy"), upstream, run_caddy)


@pytest.fixture(params=["nginx", "caddy"])
def stack(request: pytest.FixtureRequest) -> Stack:
    result: Stack = request.getfixturevalue(request.param)
    return result


def cookie(token: str | None = None) -> tuple[str, str]:
    return ("Cookie", f"session={token or session_token()}")


SPOOFED = [
    ("X-User-Id", "mallory"),
    ("x-user-id", "root"),
    ("X_User_Id", "mallory"),
    ("x-user_id", "mallory"),
    ("X-User-Role", "admin"),
    ("X_USER_ROLE", "admin"),
    *((name, "root") for name in sorted(WELL_KNOWN_IDENTITY | METHOD_OVERRIDE)),
    # The "_" spellings, which apps that fold "_" into "-" read as the real ones.
    *((name.replace("-", "_"), "root") for name in sorted(WELL_KNOWN_IDENTITY | METHOD_OVERRIDE)),
    ("X-Forwarded_Email", "root@example.com"),
]


# Identity headers -----------------------------------------------------------


def test_allowed_request_reaches_the_app_with_one_verified_identity(stack: Stack) -> None:
    """The app gets exactly one copy of each identity header: edgeauth's verified one."""
    record = stack.app_saw("GET", "/api/protected/me", [cookie(), *SPOOFED])
    assert received(record, "x-user-id") == ["alice"]
    assert received(record, "x-user-role") == ["user"]
    for name in WELL_KNOWN_IDENTITY | METHOD_OVERRIDE:
        assert received(record, name) == [], name


def test_client_identity_headers_never_reach_the_app(stack: Stack) -> None:
    """On a public route, where edgeauth has no identity to set, the gateway config
    alone keeps every client copy of an identity header from the app."""
    record = stack.app_saw("GET", "/public/x", SPOOFED)
    for name in ("x-user-id", "x-user-role"):
        # nginx sends no header for an empty value; Caddy sends edgeauth's empty copy.
        assert received(record, name) in ([], [""]), name
    for name in WELL_KNOWN_IDENTITY | METHOD_OVERRIDE:
        assert received(record, name) == [], name


def test_client_forwarding_headers_never_reach_the_app(stack: Stack) -> None:
    """Forwarded, X-Real-IP and a client's X-Forwarded-For chain stop at the
    gateway: the app learns the client from the gateway only."""
    record = stack.app_saw(
        "GET",
        "/public/x",
        [
            ("Forwarded", "for=203.0.113.9;proto=https"),
            ("X-Real-IP", "203.0.113.9"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    assert received(record, "forwarded") == []
    assert received(record, "x-real-ip") == []
    assert not any("203.0.113.9" in value for value in received(record, "x-forwarded-for"))


def test_only_websocket_handshakes_are_upgraded(stack: Stack) -> None:
    """An Upgrade other than a WebSocket handshake (h2c, or websocket without
    its key) never reaches the app: an app answering 101 would open a tunnel
    past every later decision on the connection."""
    for upgrade in (
        [
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABk"),
        ],
        [("Connection", "Upgrade"), ("Upgrade", "websocket")],
    ):
        record = stack.app_saw("GET", "/public/x", upgrade)
        assert record["type"] == "http"
        assert received(record, "upgrade") == [], upgrade
        assert all("upgrade" not in v.lower() for v in received(record, "connection")), upgrade


def test_another_dialects_headers_from_the_client_do_not_refuse_it(stack: Stack) -> None:
    """A client (or a proxy before the gateway) sending the other dialect's
    request-line headers is decided like any: the gateway drops them before
    asking edgeauth, which would refuse them as 403 untrusted_peer."""
    for name, value in (
        ("X-Original-URI", "/public/x"),
        ("X-Original-Method", "GET"),
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Forwarded-Method", "GET"),
    ):
        reply = stack.request("GET", "/public/x", [(name, value)])
        assert reply.status == 200, (name, reply.body)


def test_a_client_cannot_name_the_path_that_is_decided(stack: Stack) -> None:
    """The gateway overwrites a client's copy of its own URI and method headers."""
    forged = {
        "nginx": [("X-Original-URI", "/public/x"), ("X-Original-Method", "GET")],
        "caddy": [("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-Method", "GET")],
    }[stack.name]
    reply = stack.request("GET", "/api/admin/x", forged)
    assert reply.status == 401
    assert reply.json()["code"] == "missing_credentials"


# Denials ----------------------------------------------------------------------

DENIALS = [
    ("GET", "/api/protected/me", []),
    ("GET", "/api/protected/me", [cookie("not-a-token")]),
    ("GET", "/api/admin/x", [cookie()]),
    ("GET", "/api/reports/x", [("X-Api-Key", API_KEY)]),
    ("GET", "/api/v1/x", [("Origin", "https://app.example.com")]),
    ("GET", "/nowhere", []),
    ("GET", "/public/a%2Fb", []),
    ("GET", "/public/../api/admin", []),
    ("GET", "/api/login", []),
]
COMPARED = (
    "content-type",
    "www-authenticate",
    "cache-control",
    "x-content-type-options",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "vary",
)


@pytest.mark.parametrize(("method", "target", "headers"), DENIALS)
async def test_denials_reach_the_client_unchanged(
    stack: Stack, method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    """401/403/404/400 JSON reach the client as every front-end gives them, and the
    app never sees the request."""
    seen = len(stack.echo.seen)
    reply = stack.request(method, target, headers)
    path, _, query = target.partition("?")
    if "/../" in path:
        want_status, want_body = (
            400,
            {"error": "Malformed or ambiguous request", "code": "bad_request"},
        )
        want_headers: dict[str, list[str]] = {
            "content-type": ["application/json"],
            "cache-control": ["no-store"],
            "x-content-type-options": ["nosniff"],
        }
    else:
        want = await call(
            stack.reference,
            method=method,
            raw_path=path.encode(),
            query=query.encode(),
            headers=[*headers, ("host", "app.example")],
        )
        want_status, want_body = want.status, want.json()
        want_body.pop("request_id")
        want_headers = {name: want.header_all(name) for name in COMPARED if want.header_all(name)}
    assert reply.status == want_status
    body = reply.json()
    assert reply.header("x-request-id") == body.pop("request_id")
    assert body == want_body
    got_headers = {name: reply.header_all(name) for name in COMPARED if reply.header_all(name)}
    assert got_headers == want_headers
    assert len(stack.echo.seen) == seen


def test_page_request_without_a_session_ends_at_the_login_page(stack: Stack) -> None:
    """A page without a session redirects to the login page, which gets the return path."""
    reply = stack.request("GET", "/dashboard/home?tab=1", [("Accept", "text/html")])
    assert reply.status == 302
    location = reply.header("location")
    assert location == "/login?next=%2Fdashboard%2Fhome%3Ftab%3D1"
    record = stack.app_saw("GET", location, [("Accept", "text/html")])
    assert record["raw_path"] == "/login"
    assert record["query"] == "next=%2Fdashboard%2Fhome%3Ftab%3D1"


def test_page_post_without_a_session_is_303(stack: Stack) -> None:
    """An unsafe page request is sent to the login page with 303."""
    reply = stack.request("POST", "/dashboard/form", [("Accept", "text/html")], b"a=1")
    assert reply.status == 303
    assert reply.header("location") == "/login?next=%2Fdashboard%2Fform"


def test_page_denial_is_an_html_page(stack: Stack) -> None:
    """A page rule's 403 is an HTML page with the status, not JSON."""
    reply = stack.request("GET", "/dashboard/admin/x", [("Accept", "text/html"), cookie()])
    assert reply.status == 403
    assert (reply.header("content-type") or "").startswith("text/html")
    assert b"403" in reply.body


# Methods, credentials, client address ----------------------------------------


def test_the_original_method_is_decided(stack: Stack) -> None:
    """POST /api/login matches its POST-only rule and reaches the app with its body."""
    reply = stack.request("POST", "/api/login", [("Content-Type", "text/plain")], b"hello")
    assert reply.status == 200
    assert reply.json()["method"] == "POST"


def test_withheld_api_keys_do_not_reach_the_app(stack: Stack) -> None:
    """An API key (forward_credential = false) stops at the gateway; a JWT cookie passes."""
    record = stack.app_saw("GET", "/api/v1/x", [("X-Api-Key", API_KEY)])
    assert received(record, "x-user-id") == ["svc-reporting"]
    assert received(record, "x-api-key") == []
    record = stack.app_saw("GET", "/api/v1/x", [("Authorization", f"Bearer {API_KEY}")])
    assert received(record, "authorization") == []
    session = cookie()  # one token: a second one, a second later, would differ
    record = stack.app_saw("GET", "/api/v1/x", [session])
    assert received(record, "cookie") == [session[1]]
    assert received(record, "x-edgeauth-withheld") == []


def test_client_address_is_the_gateways_peer(stack: Stack) -> None:
    """A client-sent X-Forwarded-For does not change the client edgeauth sees."""
    stack.request("GET", "/nowhere", [("X-Forwarded-For", "198.51.100.7")])
    assert stack.audit.events[-1]["client"] == "127.0.0.1"
    assert stack.audit.events[-1]["code"] == "not_found"


def test_edgeauth_refuses_peers_outside_trusted(stack: Stack) -> None:
    """Asked directly by an untrusted peer (::1), edgeauth answers 403 untrusted_peer."""
    conn = http.client.HTTPConnection("::1", stack.edgeauth_port, timeout=10)
    try:
        headers = {"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET"}
        headers |= {"X-Original-URI": "/public/x", "X-Original-Method": "GET"}
        conn.request("GET", "/_edgeauth/auth", headers=headers)
        response = conn.getresponse()
        assert response.status == 403
        assert json.loads(response.read())["code"] == "untrusted_peer"
    finally:
        conn.close()
    assert stack.audit.events[-1]["client"] == "::1"


# CORS preflights ----------------------------------------------------------------

PREFLIGHT = [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "PUT")]
GRANT = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "vary",
)


async def test_preflight_is_granted_at_the_edge(stack: Stack) -> None:
    """A listed origin gets edgeauth's 204 grant; the app never sees the preflight."""
    seen = len(stack.echo.seen)
    reply = stack.request("OPTIONS", "/api/v1/x", PREFLIGHT)
    want = await call(stack.reference, method="OPTIONS", raw_path=b"/api/v1/x", headers=PREFLIGHT)
    assert reply.status == want.status == 204
    for name in GRANT:
        assert reply.header_all(name) == want.header_all(name), name
    assert len(stack.echo.seen) == seen


def test_preflight_on_a_rule_without_cors_reaches_the_app(stack: Stack) -> None:
    """A preflight to a rule without cors is not edgeauth's to answer: decided
    as the OPTIONS request it is (here public), it reaches the app."""
    record = stack.app_saw("OPTIONS", "/public/x", PREFLIGHT)
    assert record["method"] == "OPTIONS"
    assert received(record, "x-edgeauth-withheld") == []


def test_a_preflight_decided_as_options_is_decided_once(stack: Stack) -> None:
    """The gateway asks edgeauth once for it: on a rule allowing one request
    an hour, the preflight-shaped OPTIONS reaches the app (a second decision
    would be the 429)."""
    record = stack.app_saw("OPTIONS", "/api/once/x", PREFLIGHT)
    assert record["method"] == "OPTIONS"
    assert stack.request("GET", "/api/once/x").status == 429


def test_preflight_from_an_unlisted_origin_is_refused(stack: Stack) -> None:
    """An unlisted origin gets 403 JSON without any CORS header; the app never sees it."""
    seen = len(stack.echo.seen)
    reply = stack.request(
        "OPTIONS",
        "/api/v1/x",
        [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")],
    )
    assert reply.status == 403
    assert reply.json()["code"] == "forbidden"
    assert reply.header("access-control-allow-origin") is None
    assert len(stack.echo.seen) == seen


def test_nginx_gives_cors_headers_to_allowed_responses(nginx: Stack) -> None:
    """On a CORS rule edgeauth's Access-Control-* replace the app's on the response."""
    reply = nginx.request(
        "GET", "/api/v1/x", [("X-Api-Key", API_KEY), ("Origin", "https://app.example.com")]
    )
    assert reply.status == 200
    assert reply.header_all("access-control-allow-origin") == ["https://app.example.com"]
    assert reply.header_all("access-control-allow-credentials") == ["true"]


def test_nginx_gives_the_rate_limit_to_allowed_responses(nginx: Stack) -> None:
    """A rate-limited rule's RateLimit-* fields are on its allowed answers
    too, and a CORS rule's Vary: Origin on the app's."""
    reply = nginx.request("GET", "/api/limited/x")
    assert reply.status == 200
    assert reply.header("ratelimit-limit") == "1000"
    assert reply.header("ratelimit-remaining") is not None
    reply = nginx.request(
        "GET", "/api/v1/x", [("X-Api-Key", API_KEY), ("Origin", "https://app.example.com")]
    )
    assert "Origin" in reply.header_all("vary")


# WebSocket ----------------------------------------------------------


def test_websocket_with_a_session_is_authorized(stack: Stack) -> None:
    """A WebSocket upgrade with a session cookie reaches the app with the verified identity."""
    with connect(
        f"ws://127.0.0.1:{stack.port}/ws/chat",
        origin=Origin(f"http://127.0.0.1:{stack.port}"),
        additional_headers=[cookie(), ("X-User-Id", "mallory")],
        proxy=None,
        open_timeout=10,
    ) as ws:
        record = json.loads(ws.recv(timeout=10))
    assert record["type"] == "websocket"
    assert received(record, "x-user-id") == ["alice"]


def test_websocket_without_a_session_is_refused(stack: Stack) -> None:
    """A WebSocket upgrade without a session gets edgeauth's 401."""
    seen = len(stack.echo.seen)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{stack.port}/ws/chat", proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["code"] == "missing_credentials"
    assert len(stack.echo.seen) == seen


def test_cross_site_websocket_with_a_cookie_is_refused(stack: Stack) -> None:
    """A WebSocket upgrade from a foreign origin with the session cookie is 403 csrf."""
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"ws://127.0.0.1:{stack.port}/ws/chat",
            origin=Origin("https://evil.example"),
            additional_headers=[cookie()],
            proxy=None,
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["code"] == "csrf"
