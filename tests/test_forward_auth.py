"""The forward-auth endpoint in process: rebuilding the request from each
gateway dialect, trusting only the gateways, and answering in each dialect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from edgeauth import EdgeAuth, Engine, load_policy
from edgeauth.forward_auth import ForwardAuthApp

from .gateway_fixtures import forward_auth_policy
from .helpers import (
    ADMIN_KEY,
    API_KEY,
    SEED_POLICY,
    RecordingAudit,
    Response,
    SpyEngine,
    call,
    echo_app,
    session_token,
    write_policy,
)

GATEWAY = ("127.0.0.1", 40000)
URI_HEADERS = {
    "nginx": ("X-Original-URI", "X-Original-Method"),
    "traefik": ("X-Forwarded-Uri", "X-Forwarded-Method"),
    "caddy": ("X-Forwarded-Uri", "X-Forwarded-Method"),
}


class Endpoint:
    """A ForwardAuthApp of one dialect, with a spy engine and recorded audit events."""

    def __init__(self, folder: Path, dialect: str, trusted: str = '"127.0.0.1"') -> None:
        self.policy = load_policy(write_policy(folder, forward_auth_policy(dialect, trusted)))
        self.audit = RecordingAudit()
        self.engine = SpyEngine(self.policy, audit=self.audit)
        self.refusals = RecordingAudit()
        self.app = ForwardAuthApp(self.policy, self.engine, audit=self.refusals)  # type: ignore[arg-type]
        self.dialect = dialect

    async def ask(
        self,
        uri: str,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        *,
        client: tuple[str, int] | None = GATEWAY,
        host: str = "app.example",
        forwarded_for: str | None = "203.0.113.9",
    ) -> Response:
        """The gateway's decision request for ``method uri`` with the client's ``headers``."""
        sent = list(headers or [])
        if self.dialect == "envoy":
            path, _, query = uri.partition("?")
            sent.append(("host", host))
            if forwarded_for:
                sent.append(("x-forwarded-for", forwarded_for))
            sent.append(("x-forwarded-proto", "https"))
            return await call(
                self.app,
                method=method,
                raw_path=b"/_edgeauth/auth" + path.encode("latin-1"),
                query=query.encode("latin-1"),
                headers=sent,
                client=client,
            )
        uri_name, method_name = URI_HEADERS[self.dialect]
        sent += [(uri_name, uri), (method_name, method), ("host", "edgeauth.internal")]
        sent += [("x-forwarded-host", host), ("x-forwarded-proto", "https")]
        if forwarded_for:
            sent.append(("x-forwarded-for", forwarded_for))
        return await call(self.app, raw_path=b"/_edgeauth/auth", headers=sent, client=client)


@pytest.fixture(params=["nginx", "traefik", "caddy", "envoy"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Endpoint:
    return Endpoint(tmp_path, request.param)


@pytest.fixture
def caddy(tmp_path: Path) -> Endpoint:
    return Endpoint(tmp_path, "caddy")


@pytest.fixture
def nginx(tmp_path: Path) -> Endpoint:
    return Endpoint(tmp_path, "nginx")


@pytest.fixture
def envoy(tmp_path: Path) -> Endpoint:
    return Endpoint(tmp_path, "envoy")


def cookie(token: str | None = None) -> tuple[str, str]:
    return ("cookie", f"session={token or session_token()}")


def middleware(tmp_path: Path) -> EdgeAuth:
    folder = tmp_path / "middleware"
    folder.mkdir()
    return EdgeAuth(
        echo_app, policy=load_policy(write_policy(folder, forward_auth_policy("caddy")))
    )


# Rebuilding the original request -------------------------------------------


async def test_allowed_request_answers_200_with_identity(endpoint: Endpoint) -> None:
    """A valid session is 200, empty body, with the verified identity headers."""
    r = await endpoint.ask("/api/protected/me", headers=[cookie()])
    assert r.status == 200
    assert r.body == b""
    assert r.header_all("x-user-id") == ["alice"]
    assert r.header_all("x-user-role") == ["user"]
    assert r.header("cache-control") == "no-store"


async def test_anonymous_allow_sends_every_identity_header_empty(endpoint: Endpoint) -> None:
    """Without an identity every configured header is sent empty, to overwrite client copies."""
    r = await endpoint.ask("/public/x", headers=[("x-user-id", "mallory")])
    assert r.status == 200
    assert r.header_all("x-user-id") == [""]
    assert r.header_all("x-user-role") == [""]


async def test_view_is_the_original_request(endpoint: Endpoint) -> None:
    """Method, path, query, host, scheme and client come from the gateway's headers."""
    await endpoint.ask(
        "/api/login?next=%2Fhome&x=1", "POST", headers=[("accept", "application/json")]
    )
    view = endpoint.engine.views[-1]
    assert view.method == "POST"
    assert view.raw_path == b"/api/login"
    assert view.query == b"next=%2Fhome&x=1"
    assert view.header("host") == "app.example"
    assert view.scheme == "https"
    assert view.client == "203.0.113.9"
    assert view.header("accept") == "application/json"
    assert view.websocket is False


async def test_nothing_of_the_gateway_request_reaches_the_decision(endpoint: Endpoint) -> None:
    """Identity headers, forwarding headers and the gateway's own Host are not in the view."""
    await endpoint.ask(
        "/public/x",
        headers=[
            ("x-user-id", "mallory"),
            ("X_User_Role", "admin"),
            ("remote-user", "root"),
            ("x-http-method-override", "DELETE"),
            ("x-real-ip", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9"),
            ("content-length", "12"),
            ("connection", "close"),
        ],
    )
    view = endpoint.engine.views[-1]
    names = set(view.headers)
    assert names.isdisjoint(
        {
            "x-user-id",
            "x_user_role",
            "remote-user",
            "x-http-method-override",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-original-uri",
            "x-original-method",
            "x-real-ip",
            "forwarded",
            "content-length",
            "connection",
        }
    )
    assert view.headers["host"] == ("app.example",)


async def test_path_goes_through_the_same_canonicalization(endpoint: Endpoint) -> None:
    """Escapes of unreserved characters are decoded before matching: %61dmin is admin."""
    r = await endpoint.ask("/api/%61dmin/users", headers=[cookie()])
    assert r.status == 403
    assert endpoint.audit.events[-1]["code"] == "forbidden"
    assert endpoint.audit.events[-1]["path"] == "/api/admin/users"


@pytest.mark.parametrize("uri", ["/public/a%2Fb", "/public/%00", "/public/a%zz"])
async def test_ambiguous_paths_are_400(endpoint: Endpoint, uri: str) -> None:
    """Paths the canonicalizer refuses are 400 bad_request, as on every front-end."""
    await endpoint.ask(uri)
    assert endpoint.audit.events[-1]["code"] == "bad_request"


@pytest.mark.parametrize(
    "uri", ["/public/../api/admin", "/public/%2e%2E/x", "/public//x", "/public/./x", "/public/x/.."]
)
async def test_unresolved_segments_are_400(endpoint: Endpoint, uri: str) -> None:
    """Dot and empty segments are refused: the gateway forwards the path unresolved."""
    r = await endpoint.ask(uri, "DELETE")
    event = endpoint.refusals.events[-1]
    assert (event["code"], event["method"], event["path"]) == ("bad_request", "DELETE", uri)
    assert event["client"] == "203.0.113.9"
    assert endpoint.engine.views == []
    real = r.header("x-edgeauth-status") or str(r.status)
    assert real == "400"


async def test_forwarded_uri_loses_surrounding_whitespace(nginx: Endpoint) -> None:
    """Whitespace around the URI header's value, Latin-1's included, is not part of the target."""
    r = await nginx.ask(" \t\xa0/public/x?a=1\x85 ")
    assert r.status == 200
    view = nginx.engine.views[-1]
    assert (view.raw_path, view.query) == (b"/public/x", b"a=1")


async def test_client_is_the_rightmost_forwarded_entry(endpoint: Endpoint) -> None:
    """The client for limits and audit is the right-most X-Forwarded-For entry."""
    await endpoint.ask("/api/protected/me", forwarded_for="198.51.100.1, 203.0.113.7")
    assert endpoint.audit.events[-1]["client"] == "203.0.113.7"


async def test_websocket_handshake_is_recognized(endpoint: Endpoint) -> None:
    """Sec-WebSocket-Key marks a WebSocket handshake, whose cookie is checked for CSRF."""
    r = await endpoint.ask(
        "/ws/chat",
        headers=[
            cookie(),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", "https://evil.example"),
        ],
    )
    assert endpoint.engine.views[-1].websocket is True
    assert r.status == 403
    assert endpoint.audit.events[-1]["code"] == "csrf"


async def test_same_origin_websocket_is_allowed(endpoint: Endpoint) -> None:
    """A WebSocket handshake from the app's own origin with a session is allowed."""
    r = await endpoint.ask(
        "/ws/chat",
        headers=[cookie(), ("sec-websocket-key", "x"), ("origin", "https://app.example")],
    )
    assert r.status == 200
    assert r.header("x-user-id") == "alice"


async def test_websocket_scope_is_answered_over_http(caddy: Endpoint) -> None:
    """A decision request that arrives as a WebSocket upgrade gets a plain HTTP answer."""
    scope = {
        "type": "websocket",
        "path": "/_edgeauth/auth",
        "raw_path": b"/_edgeauth/auth",
        "query_string": b"",
        "headers": [
            (b"x-forwarded-uri", b"/api/protected/me"),
            (b"x-forwarded-method", b"GET"),
            (b"x-forwarded-host", b"app.example"),
        ],
        "client": GATEWAY,
        "extensions": {"websocket.http.response": {}},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await caddy.app(scope, receive, send)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401


async def test_lifespan_is_ignored(caddy: Endpoint) -> None:
    """Non-HTTP scopes other than WebSocket are left alone."""

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing sent")

    await caddy.app({"type": "lifespan"}, receive, send)


# Trusted peers, one dialect -------------------------------------------------


async def test_untrusted_peer_is_403(endpoint: Endpoint) -> None:
    """A peer outside [forward_auth] trusted gets 403 untrusted_peer JSON, audited."""
    r = await endpoint.ask("/public/x", client=("::1", 5000))
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"
    assert endpoint.engine.views == []
    event = endpoint.refusals.events[-1]
    assert event["code"] == "untrusted_peer"
    assert event["client"] == "::1"
    assert event["outcome"] == "deny"
    assert event["status"] == 403
    await endpoint.ask("/nowhere")
    assert set(event) == set(endpoint.audit.events[-1])  # the engine's event shape


async def test_no_peer_is_untrusted(caddy: Endpoint) -> None:
    """A request without a TCP peer is not from a gateway."""
    r = await caddy.ask("/public/x", client=None)
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"


async def test_trusted_networks_are_cidrs(tmp_path: Path) -> None:
    """trusted takes networks: any address inside them is a gateway."""
    endpoint = Endpoint(tmp_path, "traefik", trusted='"10.0.0.0/8", "::1"')
    assert (await endpoint.ask("/public/x", client=("10.2.3.4", 1))).status == 200
    assert (await endpoint.ask("/public/x", client=("::1", 1))).status == 200
    assert (await endpoint.ask("/public/x", client=("127.0.0.1", 1))).status == 403


FOREIGN = [
    (dialect, name)
    for dialect in ("nginx", "traefik", "caddy", "envoy")
    for name in ("X-Original-URI", "x-original-method", "X-Forwarded-Uri", "x-forwarded-method")
    if name.lower() not in {n.lower() for n in URI_HEADERS.get(dialect, ())}
]


@pytest.mark.parametrize(("dialect", "foreign"), FOREIGN)
async def test_another_dialects_headers_are_403(tmp_path: Path, dialect: str, foreign: str) -> None:
    """A URI or method header of another dialect makes the request untrusted."""
    endpoint = Endpoint(tmp_path, dialect)
    r = await endpoint.ask("/public/x", headers=[(foreign, "/api/admin")])
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"
    assert endpoint.engine.views == []


@pytest.mark.parametrize("dialect", ["nginx", "traefik", "caddy"])
@pytest.mark.parametrize("which", [0, 1])
async def test_repeated_dialect_headers_are_403(tmp_path: Path, dialect: str, which: int) -> None:
    """The dialect's URI or method header sent twice (in any spelling) is 403."""
    endpoint = Endpoint(tmp_path, dialect)
    name = URI_HEADERS[dialect][which]
    for spelling in (name, name.replace("-", "_")):
        r = await endpoint.ask("/public/x", headers=[(spelling, "/public/y")])
        assert r.status == 403
        assert r.json()["code"] == "untrusted_peer"


@pytest.mark.parametrize("name", ["x-forwarded-host", "x-forwarded-proto"])
async def test_repeated_host_or_scheme_is_403(endpoint: Endpoint, name: str) -> None:
    """Two forwarded hosts or schemes are ambiguous: 403 untrusted_peer."""
    if endpoint.dialect == "envoy" and name == "x-forwarded-host":
        name = "host"  # Envoy passes the original Host on
    r = await endpoint.ask("/public/x", headers=[(name, "evil.example")])
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"


@pytest.mark.parametrize("dialect", ["nginx", "traefik", "caddy"])
@pytest.mark.parametrize("which", [0, 1])
async def test_missing_dialect_header_is_403(tmp_path: Path, dialect: str, which: int) -> None:
    """Without its URI or method header a request is not in the dialect."""
    endpoint = Endpoint(tmp_path, dialect)
    kept = URI_HEADERS[dialect][1 - which]
    value = "GET" if which == 0 else "/public/x"
    r = await call(
        endpoint.app, raw_path=b"/_edgeauth/auth", headers=[(kept, value)], client=GATEWAY
    )
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"


@pytest.mark.parametrize("method", ["", "GET POST", "G\tET"])
async def test_malformed_method_is_403(caddy: Endpoint, method: str) -> None:
    """A method that is not an HTTP token is not a gateway's."""
    r = await caddy.ask("/public/x", method)
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"


async def test_envoy_needs_a_path_below_the_prefix(envoy: Endpoint) -> None:
    """Envoy check requests carry the original path after the endpoint's prefix."""
    r = await call(envoy.app, raw_path=b"/_edgeauth/auth", client=GATEWAY)
    assert r.status == 403
    assert r.json()["code"] == "untrusted_peer"
    r = await call(envoy.app, raw_path=b"/_edgeauth/authx/public", client=GATEWAY)
    assert r.status == 403


async def test_envoy_keeps_the_original_method(envoy: Endpoint) -> None:
    """Envoy's check request has the original method, host and query."""
    r = await envoy.ask("/api/login?a=b", "POST", host="shop.example")
    assert r.status == 200
    view = envoy.engine.views[-1]
    assert (view.method, view.raw_path, view.query) == ("POST", b"/api/login", b"a=b")
    assert view.header("host") == "shop.example"


async def test_unreadable_request_is_500(caddy: Endpoint) -> None:
    """A scope the endpoint cannot read fails closed with 500 internal_error."""
    scope = {"type": "http", "method": "GET", "client": GATEWAY, "headers": None}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await caddy.app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"])["code"] == "internal_error"


def test_policy_without_forward_auth_is_refused(tmp_path: Path) -> None:
    """ForwardAuthApp needs a [forward_auth] section."""
    policy = load_policy(write_policy(tmp_path, SEED_POLICY))
    with pytest.raises(ValueError, match="forward_auth"):
        ForwardAuthApp(policy, Engine(policy))


# Answers ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["traefik", "caddy", "envoy"])
async def test_denials_are_relayed_as_every_front_end_gives_them(
    tmp_path: Path, dialect: str
) -> None:
    """Traefik, Caddy and Envoy get the very response the middleware gives."""
    endpoint = Endpoint(tmp_path, dialect)
    reference = middleware(tmp_path)
    cases: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("GET", "/api/protected/me", []),
        ("GET", "/api/admin/x", [cookie()]),
        ("GET", "/api/reports/x", [("x-api-key", API_KEY)]),
        ("GET", "/nowhere", []),
        ("GET", "/dashboard/home?tab=1", [("accept", "text/html")]),
        ("POST", "/dashboard/home", [("accept", "text/html")]),
        ("GET", "/api/v1/x", [("origin", "https://app.example.com")]),
    ]
    for method, uri, headers in cases:
        got = await endpoint.ask(uri, method, headers)
        path, _, query = uri.partition("?")
        want = await call(
            reference,
            method=method,
            raw_path=path.encode(),
            query=query.encode(),
            headers=[*headers, ("host", "app.example")],
        )
        assert got.status == want.status, uri
        assert _comparable(got) == _comparable(want), uri


def _comparable(r: Response) -> tuple[Any, ...]:
    headers = sorted((n, v) for n, v in r.headers if n not in ("x-request-id", "content-length"))
    body = r.json() if r.header("content-type") == "application/json" else r.body
    if isinstance(body, dict):
        body.pop("request_id")
    return headers, body


@pytest.mark.parametrize(
    ("uri", "headers", "auth_status", "status", "code"),
    [
        ("/api/protected/me", [], 401, 401, "missing_credentials"),
        ("/api/protected/me", [cookie("not-a-jwt")], 401, 401, "invalid_token"),
        ("/api/admin/x", [cookie()], 403, 403, "forbidden"),
        ("/api/reports/x", [("x-api-key", API_KEY)], 403, 403, "insufficient_scope"),
        ("/nowhere", [], 401, 404, "not_found"),
        ("/public/a%2Fb", [], 401, 400, "bad_request"),
        (
            "/api/v1/x",
            [("authorization", "Bearer a"), ("authorization", "Bearer b")],
            401,
            400,
            "bad_request",
        ),
    ],
)
async def test_nginx_carries_the_real_status_in_headers(
    nginx: Endpoint,
    uri: str,
    headers: list[tuple[str, str]],
    auth_status: int,
    status: int,
    code: str,
) -> None:
    """nginx gets 401 or 403; the real status, code and JSON body travel in X-Edgeauth-*."""
    r = await nginx.ask(uri, headers=headers)
    assert r.status == auth_status
    assert r.header("x-edgeauth-status") == str(status)
    assert r.header("x-edgeauth-code") == code
    assert json.loads(r.header("x-edgeauth-body") or "") == r.json()
    assert r.json()["code"] == code
    assert r.header("x-edgeauth-location") is None


async def test_nginx_insufficient_scope_keeps_its_challenge(nginx: Endpoint) -> None:
    """The 403 for a missing scope carries its RFC 6750 challenge for the config to add."""
    r = await nginx.ask("/api/reports/x", headers=[("x-api-key", API_KEY)])
    assert r.header("www-authenticate") == 'Bearer realm="edgeauth", error="insufficient_scope"'


@pytest.mark.parametrize(("method", "status"), [("GET", "302"), ("HEAD", "302"), ("POST", "303")])
async def test_nginx_login_redirect_travels_in_headers(
    nginx: Endpoint, method: str, status: str
) -> None:
    """A page denial is a 401 carrying the redirect status and the login URL with its return path."""
    r = await nginx.ask("/dashboard/home?tab=1", method, headers=[("accept", "text/html")])
    assert r.status == 401
    assert r.header("x-edgeauth-status") == status
    assert r.header("x-edgeauth-code") == "missing_credentials"
    assert r.header("x-edgeauth-location") == "/login?next=%2Fdashboard%2Fhome%3Ftab%3D1"
    assert r.header("location") is None
    assert r.header("x-edgeauth-body") is None


async def test_nginx_page_denial_has_no_json_body(nginx: Endpoint) -> None:
    """A page rule's 403 carries no JSON body: nginx answers with its own page."""
    r = await nginx.ask("/dashboard/admin/x", headers=[("accept", "text/html"), cookie()])
    assert r.status == 403
    assert r.header("x-edgeauth-status") == "403"
    assert r.header("x-edgeauth-code") == "forbidden"
    assert r.header("x-edgeauth-body") is None


async def test_nginx_untrusted_peer_is_403(nginx: Endpoint) -> None:
    """untrusted_peer is a 403 that nginx takes, with its real status in the headers."""
    r = await nginx.ask("/public/x", headers=[("x-forwarded-uri", "/x")])
    assert r.status == 403
    assert r.header("x-edgeauth-status") == "403"
    assert r.header("x-edgeauth-code") == "untrusted_peer"


PREFLIGHT = [("origin", "https://app.example.com"), ("access-control-request-method", "PUT")]


@pytest.mark.parametrize("dialect", ["traefik", "caddy", "envoy"])
async def test_preflight_grant_is_204(tmp_path: Path, dialect: str) -> None:
    """A granted preflight is 204 with the same grant the middleware gives."""
    endpoint = Endpoint(tmp_path, dialect)
    r = await endpoint.ask("/api/v1/x", "OPTIONS", PREFLIGHT)
    want = await call(
        middleware(tmp_path), method="OPTIONS", raw_path=b"/api/v1/x", headers=PREFLIGHT
    )
    assert r.status == want.status == 204
    assert _comparable(r) == _comparable(want)


async def test_nginx_preflight_grant_travels_as_401(nginx: Endpoint) -> None:
    """nginx would forward a 2xx preflight to the app: the grant is a 401 carrying 204."""
    r = await nginx.ask("/api/v1/x", "OPTIONS", PREFLIGHT)
    assert r.status == 401
    assert r.header("x-edgeauth-status") == "204"
    assert r.header("x-edgeauth-code") is None
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("access-control-allow-methods") == "GET, HEAD, POST, PUT, PATCH, DELETE"


async def test_refused_preflight_is_403(endpoint: Endpoint) -> None:
    """A preflight from an unlisted origin is 403 without any CORS grant."""
    r = await endpoint.ask(
        "/api/v1/x",
        "OPTIONS",
        [("origin", "https://evil.example"), ("access-control-request-method", "GET")],
    )
    assert r.status == 403
    assert r.header("access-control-allow-origin") is None
    assert endpoint.audit.events[-1]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("headers", "withheld"),
    [
        ([("x-api-key", API_KEY)], "x-api-key"),
        ([("authorization", f"Bearer {ADMIN_KEY}")], "authorization"),
        ([cookie()], ""),
    ],
)
async def test_withheld_credentials_are_named(
    caddy: Endpoint, headers: list[tuple[str, str]], withheld: str
) -> None:
    """An API key (forward_credential = false) is named in X-Edgeauth-Withheld; a JWT is not."""
    r = await caddy.ask("/api/v1/x", headers=headers)
    assert r.status == 200
    assert r.header_all("x-edgeauth-withheld") == [withheld]


async def test_envoy_removes_withheld_credentials(envoy: Endpoint) -> None:
    """Envoy is asked to remove a withheld credential header before the upstream."""
    r = await envoy.ask("/api/v1/x", headers=[("x-api-key", API_KEY)])
    assert r.status == 200
    assert r.header("x-envoy-auth-headers-to-remove") == "x-api-key"
    assert r.header("x-edgeauth-withheld") is None
    r = await envoy.ask("/api/v1/x", headers=[cookie()])
    assert r.header("x-envoy-auth-headers-to-remove") is None


async def test_cors_headers_ride_on_the_allow(caddy: Endpoint) -> None:
    """On a CORS rule the 200 carries the CORS response headers for the gateway to use."""
    r = await caddy.ask(
        "/api/v1/x", headers=[("x-api-key", API_KEY), ("origin", "https://app.example.com")]
    )
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("vary") == "Origin"


async def test_allow_carries_the_request_id(caddy: Endpoint) -> None:
    """The 200 names the decision's request id, as the audit event does."""
    r = await caddy.ask("/api/protected/me", headers=[cookie()])
    assert r.header("x-request-id")
    assert len(r.header("x-request-id") or "") == 16


def test_unknown_dialect_is_refused(tmp_path: Path) -> None:
    """A dialect the endpoint does not speak is refused when the app is built."""
    policy = load_policy(write_policy(tmp_path, forward_auth_policy("caddy")))
    assert policy.forward_auth is not None
    odd = dataclasses.replace(
        policy, forward_auth=dataclasses.replace(policy.forward_auth, dialect="haproxy")
    )
    with pytest.raises(ValueError, match="haproxy"):
        ForwardAuthApp(odd, Engine(odd))


async def test_without_forwarded_host_the_view_has_no_host(caddy: Endpoint) -> None:
    """The gateway's own Host is never taken for the original one."""
    r = await call(
        caddy.app,
        raw_path=b"/_edgeauth/auth",
        headers=[
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
            ("host", "edgeauth.internal"),
        ],
        client=GATEWAY,
    )
    assert r.status == 200
    assert caddy.engine.views[-1].header("host") is None
    assert caddy.engine.views[-1].scheme == "http"


async def test_failing_audit_sink_does_not_change_the_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal is answered even when its audit event cannot be written."""

    class Broken:
        def emit(self, event: Any) -> None:
            raise OSError("disk full")

    policy = load_policy(write_policy(tmp_path, forward_auth_policy("caddy")))
    app = ForwardAuthApp(policy, Engine(policy), audit=Broken())
    r = await call(app, raw_path=b"/_edgeauth/auth", client=("::1", 1))
    assert r.status == 403
    assert "audit sink failed" in caplog.text


async def test_answers_do_not_depend_on_earlier_requests(endpoint: Endpoint) -> None:
    """Header names and method values are remembered between requests; a malformed
    method, a repeated URI header or a client identity header is treated the same
    the tenth time as the first, whatever came in between."""
    for _ in range(3):
        ok = await endpoint.ask("/api/protected/x", "get", [cookie(), ("x-user-id", "mallory")])
        assert ok.status == 200
        assert ok.header("x-user-id") == "alice"
        if endpoint.dialect == "envoy":
            continue
        bad_method = await endpoint.ask("/api/protected/x", "GE T", [cookie()])
        assert bad_method.status == 403
        uri_name, _ = URI_HEADERS[endpoint.dialect]
        twice = await endpoint.ask("/api/protected/x", "GET", [cookie(), (uri_name, "/public/x")])
        assert twice.status == 403


async def test_request_line_only_in_underscore_spelling_is_untrusted_peer(nginx: Endpoint) -> None:
    """X_Original_URI / X_Original_Method alone (no dash spelling) is not the
    dialect: 403 untrusted_peer, never a 500."""
    r = await call(
        nginx.app,
        raw_path=b"/_edgeauth/auth",
        headers=[("x_original_uri", "/api/protected/x"), ("x_original_method", "GET"), cookie()],
        client=GATEWAY,
    )
    assert r.status == 403
    assert r.header("x-edgeauth-code") == "untrusted_peer"


async def test_allow_answers_do_not_depend_on_earlier_requests(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    """The 200's headers, remembered per identity, are a fresh endpoint's whatever
    was answered in between: another user, no user, CORS or not, a withheld key."""
    alice, bob = cookie(), cookie(session_token("bob", ("user", "ops")))
    asks: list[tuple[str, list[tuple[str, str]]]] = [
        ("/api/protected/me", [alice]),
        ("/public/x", []),
        ("/api/v1/x", [alice]),
        ("/api/v1/x", [alice, ("origin", "https://app.example.com")]),
        ("/api/v1/x", [alice, ("origin", "https://other.example")]),
        ("/api/v1/x", [("x-api-key", API_KEY), ("origin", "https://app.example.com")]),
        ("/api/protected/me", [bob]),
    ]
    seen = [_comparable(await endpoint.ask(uri, headers=h)) for uri, h in asks * 2]
    folder = tmp_path / "fresh"
    folder.mkdir()
    for (uri, headers), got in zip(asks * 2, seen, strict=True):
        fresh = Endpoint(folder, endpoint.dialect)
        assert _comparable(await fresh.ask(uri, headers=headers)) == got, uri


async def test_clients_do_not_depend_on_earlier_requests(tmp_path: Path) -> None:
    """The client read from X-Forwarded-For (remembered per gateway and value) is
    a fresh endpoint's for every request, whatever came in between."""
    trusted = '"127.0.0.1", "10.0.0.0/8"'
    endpoint = Endpoint(tmp_path, "caddy", trusted=trusted)
    asks = [
        (("127.0.0.1", 1), "198.51.100.1, 203.0.113.7"),
        (("10.2.3.4", 1), "203.0.113.7, 10.1.1.1"),
        (("127.0.0.1", 1), "203.0.113.7, 10.1.1.1"),
        (("10.2.3.4", 1), "not an address, 10.1.1.1"),
        (("127.0.0.1", 1), "10.9.9.9"),
        (("127.0.0.1", 1), "2001:db8::1"),
        (("10.2.3.4", 1), "garbage"),
        (("127.0.0.1", 1), "garbage"),
    ]
    seen = []
    for peer, forwarded_for in asks * 2:
        await endpoint.ask("/api/protected/me", client=peer, forwarded_for=forwarded_for)
        seen.append(endpoint.audit.events[-1]["client"])
    assert seen[:2] == ["203.0.113.7", "203.0.113.7"]
    for i, ((peer, forwarded_for), got) in enumerate(zip(asks * 2, seen, strict=True)):
        folder = tmp_path / f"fresh-{i}"
        folder.mkdir()
        fresh = Endpoint(folder, "caddy", trusted=trusted)
        await fresh.ask("/api/protected/me", client=peer, forwarded_for=forwarded_for)
        assert fresh.audit.events[-1]["client"] == got, forwarded_for
