"""One table of request -> expected outcome, run against every front-end.

tests/test_frontends.py runs each case through the ASGI middleware (in
process) and through ``edgeauth serve`` (real sockets, a real upstream), so
the two front-ends cannot drift apart. A case names what the client sends
(byte for byte) and what must come out: the status, the JSON ``code``, some
response headers, and whether the app was reached and with what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .helpers import ADMIN_KEY, API_KEY, SEED_POLICY, Response, session_token

TRUSTED = "127.0.0.1"
UNTRUSTED = "::1"
HOST = "app.test"
LISTED = "https://app.example.com"

# The seed policy, 127.0.0.1 as the trusted gateway, and a body limit on /api/login.
POLICY = SEED_POLICY.replace(
    'methods = ["POST"]\npublic = true', 'methods = ["POST"]\npublic = true\nmax_body = 10'
)
SERVER_SETTINGS: Mapping[str, Any] = {"trusted_proxies": ["127.0.0.1/32"]}

ALICE = session_token("alice", ("user",))
ADMIN = session_token("root", ("admin",))
EXPIRED = session_token("alice", lifetime=-120)


@dataclass(frozen=True)
class Case:
    """A request (``target`` is the raw request target) and its expected outcome."""

    id: str
    target: bytes
    status: int
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    peer: str = TRUSTED
    code: str | None = None
    # True: the app gets the request; False: it never sees it; None: it may see
    # the start of a request whose body edgeauth then cuts off.
    forwarded: bool | None = False
    upstream_path: str | None = None
    upstream_query: str | None = None
    upstream_has: Mapping[str, str] = field(default_factory=dict)
    upstream_lacks: tuple[str, ...] = ()
    upstream_not_containing: Mapping[str, str] = field(default_factory=dict)
    response_has: Mapping[str, str] = field(default_factory=dict)
    response_lacks: tuple[str, ...] = ()

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    @property
    def query(self) -> bytes:
        return self.target.partition(b"?")[2]

    @property
    def request_headers(self) -> list[tuple[str, str]]:
        """The headers on the wire: Host first, Content-Length unless chunked."""
        headers = [("host", HOST), *self.headers]
        chunked = any(n == "transfer-encoding" for n, _ in self.headers)
        if not chunked and (self.body or self.method in ("POST", "PUT", "PATCH")):
            headers.append(("content-length", str(len(self.body))))
        return headers


def cookie(token: str) -> tuple[str, str]:
    return ("cookie", f"session={token}")


CORS_GRANT = {
    "access-control-allow-origin": LISTED,
    "access-control-allow-credentials": "true",
    "vary": "Origin",
}
PREFLIGHT = (("origin", LISTED), ("access-control-request-method", "POST"))

CASES: tuple[Case, ...] = (
    # Paths: the canonical path is decided on and forwarded; ambiguity is 400.
    Case("public", b"/public/x", 200, forwarded=True, upstream_path="/public/x"),
    Case(
        "canonical-path",
        b"//public/./a/../%7Eb/caf%c3%a9",
        200,
        forwarded=True,
        upstream_path="/public/~b/caf%C3%A9",
    ),
    Case(
        "query-untouched",
        b"/public/x?q=%2F&b=a%20b&c=%2e%2e",
        200,
        forwarded=True,
        upstream_query="q=%2F&b=a%20b&c=%2e%2e",
    ),
    Case(
        "dot-segments-reach-admin-rule",
        b"/public/..//api/%61dmin/users",
        403,
        headers=(cookie(ALICE),),
        code="forbidden",
    ),
    Case("encoded-slash", b"/api/v1%2Fx", 400, code="bad_request"),
    Case("encoded-backslash", b"/api%5cadmin", 400, code="bad_request"),
    Case("semicolon", b"/public/a;b", 400, code="bad_request"),
    Case("double-encoding", b"/public/%252e%252e", 400, code="bad_request"),
    Case("encoded-nul", b"/public/%00", 400, code="bad_request"),
    Case("above-root", b"/../public/x", 400, code="bad_request"),
    Case("invalid-utf8", b"/public/%ff", 400, code="bad_request"),
    Case("unmatched", b"/nowhere", 404, code="not_found"),
    Case("root-public", b"/", 200, forwarded=True, upstream_path="/"),
    # Credentials and identity headers.
    Case(
        "no-credentials",
        b"/api/protected/me",
        401,
        code="missing_credentials",
        response_has={"www-authenticate": 'Bearer realm="edgeauth"'},
    ),
    Case(
        "session-cookie",
        b"/api/protected/me",
        200,
        headers=(cookie(ALICE),),
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
    ),
    Case(
        "expired-cookie",
        b"/api/protected/me",
        401,
        headers=(cookie(EXPIRED),),
        code="invalid_token",
    ),
    Case(
        "empty-cookie",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session="),),
        code="missing_credentials",
    ),
    Case(
        "spoofed-identity-headers",
        b"/public/x",
        200,
        headers=(
            ("x-user-id", "mallory"),
            ("X_User_Role", "admin"),
            ("Remote-User", "mallory"),
            ("X-Original-URL", "/api/admin/users"),
            ("X-HTTP-Method-Override", "DELETE"),
        ),
        forwarded=True,
        upstream_lacks=(
            "x-user-id",
            "x_user_role",
            "x-user-role",
            "remote-user",
            "x-original-url",
            "x-http-method-override",
        ),
    ),
    Case(
        "spoofed-header-replaced",
        b"/api/protected/me",
        200,
        headers=(cookie(ALICE), ("x-user-id", "mallory"), ("x-user-role", "admin")),
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
    ),
    Case(
        "connection-cannot-remove-identity",
        b"/api/protected/me",
        200,
        headers=(cookie(ALICE), ("connection", "x-user-id, x-user-role")),
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
    ),
    Case(
        "api-key-header-withheld",
        b"/api/v1/reports",
        200,
        headers=(("x-api-key", API_KEY),),
        forwarded=True,
        upstream_has={"x-user-id": "svc-reporting", "x-user-role": "service"},
        upstream_lacks=("x-api-key",),
    ),
    Case(
        "api-key-bearer-withheld",
        b"/api/v1/reports",
        200,
        headers=(("authorization", f"Bearer {API_KEY}"),),
        forwarded=True,
        upstream_lacks=("authorization",),
    ),
    # The app gets the credential the identity came from, never another one
    # the rule reads: that one may be someone else's.
    Case(
        "another-principals-session-cookie-withheld",
        b"/api/v1/reports",
        200,
        headers=(
            ("authorization", f"Bearer {API_KEY}"),
            ("cookie", f"theme=dark; session={ALICE}"),
        ),
        forwarded=True,
        upstream_has={"x-user-id": "svc-reporting", "cookie": "theme=dark"},
        upstream_lacks=("authorization",),
    ),
    # A credential header in a spelling edgeauth does not read never reaches
    # the app, which may fold "_" into "-" and read it as the real one.
    Case(
        "misspelled-api-key-header-stripped",
        b"/api/v1/reports",
        200,
        headers=(("x-api-key", API_KEY), ("x_api_key", API_KEY), ("X-Api_Key", API_KEY)),
        forwarded=True,
        upstream_has={"x-user-id": "svc-reporting"},
        upstream_lacks=("x-api-key", "x_api_key", "x-api_key"),
    ),
    Case(
        "bad-api-key",
        b"/api/v1/reports",
        401,
        headers=(("x-api-key", "eak_wrong"),),
        code="invalid_token",
    ),
    Case(
        "two-authorization-headers",
        b"/api/v1/reports",
        400,
        headers=(("authorization", f"Bearer {API_KEY}"), ("authorization", "Bearer x")),
        code="bad_request",
    ),
    Case(
        "bearer-and-api-key-disagree",
        b"/api/v1/reports",
        400,
        headers=(("authorization", f"Bearer {API_KEY}"), ("x-api-key", ADMIN_KEY)),
        code="bad_request",
    ),
    Case(
        "role-missing",
        b"/api/admin/users",
        403,
        headers=(cookie(ALICE),),
        code="forbidden",
    ),
    Case(
        "role-present",
        b"/api/admin/users",
        200,
        headers=(cookie(ADMIN),),
        forwarded=True,
        upstream_has={"x-user-id": "root", "x-user-role": "admin"},
    ),
    # Pages.
    Case(
        "page-redirect",
        b"/dashboard",
        302,
        response_has={"location": "/login?next=%2Fdashboard"},
    ),
    Case(
        "page-redirect-keeps-query",
        b"/dashboard/./r?q=1",
        302,
        response_has={"location": "/login?next=%2Fdashboard%2Fr%3Fq%3D1"},
    ),
    Case("page-redirect-post", b"/dashboard", 303, method="POST"),
    # CSRF for cookie credentials.
    Case(
        "csrf-foreign-origin",
        b"/api/protected/x",
        403,
        method="POST",
        headers=(cookie(ALICE), ("origin", "https://evil.example")),
        code="csrf",
    ),
    Case(
        "csrf-cross-site-fetch",
        b"/api/protected/x",
        403,
        method="POST",
        headers=(cookie(ALICE), ("sec-fetch-site", "cross-site")),
        code="csrf",
    ),
    Case(
        "same-origin-post",
        b"/api/protected/x",
        200,
        method="POST",
        headers=(cookie(ALICE), ("origin", f"http://{HOST}")),
        body=b"{}",
        forwarded=True,
    ),
    # CORS.
    Case(
        "preflight-listed",
        b"/api/v1/reports",
        204,
        method="OPTIONS",
        headers=(*PREFLIGHT, ("access-control-request-headers", "content-type")),
        response_has={
            **CORS_GRANT,
            "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
            "access-control-allow-headers": "authorization, content-type",
            "access-control-max-age": "600",
        },
    ),
    Case(
        "preflight-unlisted",
        b"/api/v1/reports",
        403,
        method="OPTIONS",
        headers=(
            ("origin", "https://app.example.com.evil"),
            ("access-control-request-method", "GET"),
        ),
        response_lacks=("access-control-allow-origin", "access-control-allow-credentials"),
    ),
    Case(
        "preflight-null-origin",
        b"/api/v1/reports",
        403,
        method="OPTIONS",
        headers=(("origin", "null"), ("access-control-request-method", "GET")),
        response_lacks=("access-control-allow-origin",),
    ),
    Case(
        "preflight-method-not-allowed",
        b"/api/v1/reports",
        403,
        method="OPTIONS",
        headers=(("origin", LISTED), ("access-control-request-method", "TRACE")),
        response_lacks=("access-control-allow-origin",),
    ),
    Case(
        "options-without-preflight-headers-authenticates",
        b"/api/v1/reports",
        401,
        method="OPTIONS",
        code="missing_credentials",
    ),
    Case(
        "cors-listed-origin-replaces-app-headers",
        b"/api/v1/reports",
        200,
        headers=(("origin", LISTED), ("x-api-key", API_KEY)),
        forwarded=True,
        response_has=CORS_GRANT,
    ),
    Case(
        "cors-unlisted-origin-gets-no-grant",
        b"/api/v1/reports",
        200,
        headers=(("origin", "https://evil.example"), ("x-api-key", API_KEY)),
        forwarded=True,
        response_has={"vary": "Origin"},
        response_lacks=("access-control-allow-origin", "access-control-allow-credentials"),
    ),
    Case(
        "cors-headers-on-denials",
        b"/api/v1/reports",
        401,
        headers=(("origin", LISTED),),
        code="missing_credentials",
        response_has=CORS_GRANT,
    ),
    Case(
        "cors-origin-may-post-with-cookie",
        b"/api/v1/reports",
        200,
        method="POST",
        headers=(("origin", LISTED), cookie(ALICE)),
        forwarded=True,
        response_has=CORS_GRANT,
    ),
    # Forwarding headers: believed from trusted peers only.
    Case(
        "untrusted-forwarded-headers-removed",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")),
        forwarded=True,
        upstream_lacks=("forwarded",),
        upstream_not_containing={"x-forwarded-for": "6.6.6.6"},
    ),
    Case(
        "trusted-forwarded-passed-on",
        b"/public/x",
        200,
        headers=(("forwarded", "for=203.0.113.7"),),
        forwarded=True,
        upstream_has={"forwarded": "for=203.0.113.7"},
    ),
    # Body size.
    Case(
        "declared-body-too-large",
        b"/api/login",
        413,
        method="POST",
        body=b"x" * 11,
        code="payload_too_large",
    ),
    Case(
        "streamed-body-too-large",
        b"/api/login",
        413,
        method="POST",
        headers=(("transfer-encoding", "chunked"),),
        body=b"x" * 11,
        code="payload_too_large",
        forwarded=None,
    ),
    Case("body-within-limit", b"/api/login", 200, method="POST", body=b"x" * 10, forwarded=True),
)


def check(case: Case, response: Response, seen: Mapping[str, Any] | None) -> None:
    """Assert ``response`` (and what the app saw, None if it was not reached)."""
    assert response.status == case.status, (case.id, response.status, response.body[:300])
    if case.code is not None:
        assert response.json()["code"] == case.code, case.id
    for name, value in case.response_has.items():
        assert response.header(name) == value, (case.id, name, response.headers)
    for name in case.response_lacks:
        assert response.header(name) is None, (case.id, name)
    if case.forwarded is None:
        return
    if not case.forwarded:
        assert seen is None, (case.id, "the app was reached")
        assert response.header("x-request-id"), case.id  # answered by edgeauth
        return
    assert seen is not None, (case.id, "the app was not reached")
    if case.upstream_path is not None:
        assert seen["raw_path"] == case.upstream_path, (case.id, seen["raw_path"])
    if case.upstream_query is not None:
        assert seen["query"] == case.upstream_query, (case.id, seen["query"])
    headers: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    for name, value in case.upstream_has.items():
        assert headers.get(name) == [value], (case.id, name, headers.get(name))
    for name in case.upstream_lacks:
        assert name not in headers, (case.id, name)
    for name, text in case.upstream_not_containing.items():
        assert all(text not in v for v in headers.get(name, [])), (case.id, name)
