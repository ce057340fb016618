"""The middleware front-end: DESIGN.md's Decisions on matching, credentials and headers."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edgeauth import EdgeAuth
from edgeauth.model import Identity

from .helpers import (
    API_KEY,
    SECRET,
    SEED_POLICY,
    RecordingAudit,
    break_verification,
    call,
    echo_app,
    guarded,
    session_token,
    write_policy,
)


def seen_headers(body: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name, []).append(value)
    return out


@pytest.fixture
def app(tmp_path: Path) -> EdgeAuth:
    return guarded(tmp_path)


def cookie(token: str | None = None) -> tuple[str, str]:
    return ("cookie", f"session={token or session_token()}")


# Spoofed identity headers -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "x-user-id",
        "X-User-Id",
        "X-USER-ID",
        "x_user_id",
        "X_User_Role",
        "remote-user",
        "X-Forwarded-User",
        "x-auth-request-email",
        "X-Original-URL",
        "x-rewrite-url",
        "X-HTTP-Method-Override",
        "x-method-override",
    ],
)
async def test_client_identity_headers_never_reach_the_app(app: EdgeAuth, name: str) -> None:
    """Identity, rewrite and method-override headers are removed in every spelling, on public routes too."""
    r = await call(app, raw_path=b"/public/x", headers=[(name, "admin"), (name, "root")])
    assert r.status == 200
    received = {n.replace("_", "-") for n, _ in r.json()["headers"]}
    assert name.lower().replace("_", "-") not in received


async def test_spoofed_header_is_replaced_by_the_verified_one(app: EdgeAuth) -> None:
    """A client's x-user-id is dropped; exactly one verified copy reaches the app."""
    r = await call(
        app,
        raw_path=b"/api/protected/me",
        headers=[
            cookie(),
            ("x-user-id", "mallory"),
            ("X_USER_ID", "mallory"),
            ("x-user-role", "admin"),
        ],
    )
    assert r.status == 200
    seen = seen_headers(r.json())
    assert seen["x-user-id"] == ["alice"]
    assert seen["x-user-role"] == ["user"]
    assert "x_user_id" not in seen


async def test_configured_and_strip_list_headers_are_stripped(tmp_path: Path) -> None:
    """Custom identity headers and [identity] strip are removed too, as are the defaults."""
    text = SEED_POLICY.replace(
        "[authenticators.session]",
        '[identity]\nheaders = { "X-Auth-Sub" = "subject", "x-auth-email" = "claim:email" }\n'
        'strip = ["x-internal-flag"]\n\n[authenticators.session]',
    )
    app = guarded(tmp_path, text)
    r = await call(
        app,
        raw_path=b"/api/protected/me",
        headers=[
            cookie(session_token(email="a@example.com")),
            ("x-auth-sub", "mallory"),
            ("X_Auth_Email", "m@evil"),
            ("x-internal-flag", "1"),
            ("x-user-id", "mallory"),
        ],
    )
    seen = seen_headers(r.json())
    assert seen["x-auth-sub"] == ["alice"]
    assert seen["x-auth-email"] == ["a@example.com"]
    assert "x-internal-flag" not in seen
    assert "x-user-id" not in seen


async def test_identity_values_are_made_safe(tmp_path: Path) -> None:
    """Non-ASCII is percent-encoded; claims that are not strings are JSON."""
    text = SEED_POLICY.replace(
        "[authenticators.session]",
        '[identity]\nheaders = { "x-user-id" = "subject", "x-groups" = "claim:groups", '
        '"x-scopes" = "scopes" }\n\n[authenticators.session]',
    )
    app = guarded(tmp_path, text)
    token = session_token("zoë", groups=["a", "b"], scope="read write")
    r = await call(app, raw_path=b"/api/protected/me", headers=[cookie(token)])
    seen = seen_headers(r.json())
    assert seen["x-user-id"] == ["zo%C3%AB"]
    assert json.loads(seen["x-groups"][0]) == ["a", "b"]
    assert seen["x-scopes"] == ["read write"]


@pytest.mark.parametrize(
    ("sub", "role"),
    [
        ("alice\r\nx-user-role: admin", ["user"]),
        ("alice", ["user,admin"]),
        ("bob\x00", ["user"]),
        ("alice", ["a\tb"]),
    ],
)
@pytest.mark.parametrize("target", [b"/api/protected/me", b"/api/admin/reports"])
async def test_unsafe_identity_values_are_401(
    app: EdgeAuth, sub: str, role: list[str], target: bytes
) -> None:
    """A control character in an identity value, or a role holding the
    separator, is 401, also on a rule whose requirements the identity does not
    meet (``/api/admin/**`` requires the role admin, which "user,admin" is not):
    the credential is invalid before it is insufficient. The second time the
    token is in the verified-token cache: the short path answers the same."""
    token = session_token(sub, role)
    for _ in range(2):
        r = await call(app, raw_path=target, headers=[cookie(token)])
        assert r.status == 401
        assert r.json()["code"] == "invalid_token"


# Credentials ----------------------------------------------------------------


async def test_two_authorization_headers_are_400(app: EdgeAuth) -> None:
    """Two Authorization headers are ambiguous."""
    r = await call(
        app,
        raw_path=b"/api/v1/x",
        headers=[("authorization", f"Bearer {API_KEY}"), ("authorization", "Bearer x")],
    )
    assert r.status == 400
    assert r.json()["code"] == "bad_request"


async def test_two_different_session_cookies_are_400(app: EdgeAuth) -> None:
    """Two different values for the session cookie are ambiguous; the same value twice is fine."""
    good, other = session_token("alice"), session_token("bob")
    r = await call(
        app, raw_path=b"/api/protected/x", headers=[("cookie", f"session={good}; session={other}")]
    )
    assert r.status == 400
    r = await call(
        app,
        raw_path=b"/api/protected/x",
        headers=[("cookie", f"session={good}"), ("cookie", f"session={good}")],
    )
    assert r.status == 200


async def test_other_cookies_twice_are_the_apps_business(app: EdgeAuth) -> None:
    """Only the credential cookie must be unambiguous: browsers send a name twice
    when two cookies differ by Path, and that is no reason to refuse the request."""
    good = session_token("alice")
    r = await call(
        app,
        raw_path=b"/api/protected/x",
        headers=[("cookie", f"theme=dark; session={good}; theme=light")],
    )
    assert r.status == 200
    assert seen_headers(r.json())["x-user-id"] == ["alice"]


async def test_bearer_and_api_key_header_that_disagree_are_400(app: EdgeAuth) -> None:
    """Bearer and X-API-Key carrying different credentials are refused."""
    r = await call(
        app,
        raw_path=b"/api/v1/x",
        headers=[("authorization", f"Bearer {API_KEY}"), ("x-api-key", "other")],
    )
    assert r.status == 400


async def test_present_invalid_credential_does_not_fall_through(app: EdgeAuth) -> None:
    """A bad API key is 401 even when a valid session cookie would pass the next authenticator."""
    r = await call(app, raw_path=b"/api/v1/x", headers=[("x-api-key", "eak_wrong"), cookie()])
    assert r.status == 401
    assert r.json()["code"] == "invalid_token"


async def test_credential_no_authenticator_takes_is_invalid_token(tmp_path: Path) -> None:
    """A JWT on a keys-only rule is taken by nobody: 401 invalid_token."""
    text = SEED_POLICY.replace('authenticate = ["keys", "session"]', 'authenticate = ["keys"]')
    app = guarded(tmp_path, text)
    r = await call(
        app, raw_path=b"/api/v1/x", headers=[("authorization", f"Bearer {session_token()}")]
    )
    assert r.status == 401
    assert r.json()["code"] == "invalid_token"


async def test_empty_cookie_counts_as_no_credential(app: EdgeAuth) -> None:
    """A cleared (empty) session cookie is treated as absent."""
    r = await call(app, raw_path=b"/api/protected/x", headers=[("cookie", "session=; theme=dark")])
    assert r.status == 401
    assert r.json()["code"] == "missing_credentials"


async def test_api_key_is_not_forwarded_but_jwt_cookie_is(app: EdgeAuth) -> None:
    """forward_credential defaults: false for api_key, true for jwt."""
    r = await call(app, raw_path=b"/api/v1/x", headers=[("authorization", f"Bearer {API_KEY}")])
    assert "authorization" not in seen_headers(r.json())
    r = await call(app, raw_path=b"/api/v1/x", headers=[("x-api-key", API_KEY)])
    assert "x-api-key" not in seen_headers(r.json())
    token = session_token()
    r = await call(
        app, raw_path=b"/api/protected/x", headers=[("cookie", f"theme=dark; session={token}")]
    )
    assert seen_headers(r.json())["cookie"] == [f"theme=dark; session={token}"]


async def test_forward_credential_false_removes_only_the_session_cookie(tmp_path: Path) -> None:
    """With forward_credential = false the session cookie is cut out, other cookies stay."""
    text = SEED_POLICY.replace(
        'roles_claim = "role"', 'roles_claim = "role"\nforward_credential = false'
    )
    app = guarded(tmp_path, text)
    r = await call(
        app,
        raw_path=b"/api/protected/x",
        headers=[("cookie", f"theme=dark; session={session_token()}")],
    )
    assert seen_headers(r.json())["cookie"] == ["theme=dark"]
    r = await call(
        app, raw_path=b"/api/protected/x", headers=[("cookie", f"session={session_token()}")]
    )
    assert "cookie" not in seen_headers(r.json())


# CSRF -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("origin", "https://evil.example")], 403),
        ([("origin", "null")], 403),
        ([("sec-fetch-site", "cross-site")], 403),
        ([("origin", "http://app.test")], 200),
        ([("sec-fetch-site", "same-origin")], 200),
        ([], 200),
    ],
)
async def test_cookie_credentials_on_unsafe_methods_need_a_same_origin(
    app: EdgeAuth, headers: list[tuple[str, str]], status: int
) -> None:
    """A cookie-authenticated POST from a foreign origin is 403 csrf; no Origin and no Sec-Fetch-Site passes."""
    r = await call(
        app,
        method="POST",
        raw_path=b"/api/protected/x",
        headers=[("host", "app.test"), cookie(), *headers],
    )
    assert r.status == status
    if status == 403:
        assert r.json()["code"] == "csrf"


async def test_csrf_allows_the_rules_cors_origins_and_bearer_credentials(app: EdgeAuth) -> None:
    """A CORS-listed origin may POST with the cookie; header credentials are not CSRF-prone."""
    r = await call(
        app,
        method="POST",
        raw_path=b"/api/v1/x",
        headers=[("origin", "https://app.example.com"), cookie()],
    )
    assert r.status == 200
    r = await call(
        app,
        method="POST",
        raw_path=b"/api/v1/x",
        headers=[("origin", "https://evil.example"), ("x-api-key", API_KEY)],
    )
    assert r.status == 200


async def test_csrf_uses_public_origin_and_trusted_forwarded_proto(tmp_path: Path) -> None:
    """The own origin comes from [server] public_origin when set."""
    text = '[server]\npublic_origin = "https://www.example.com"\n' + SEED_POLICY
    app = guarded(tmp_path, text)
    post = {"method": "POST", "raw_path": b"/api/protected/x"}
    r = await call(
        app,
        **post,
        headers=[("host", "internal:8000"), ("origin", "https://www.example.com"), cookie()],
    )
    assert r.status == 200
    r = await call(
        app,
        **post,
        headers=[("host", "internal:8000"), ("origin", "http://internal:8000"), cookie()],
    )
    assert r.status == 403


# Rules and matching ---------------------------------------------------------


async def test_unmatched_path_is_404_by_default(app: EdgeAuth) -> None:
    """[default] action = deny answers 404 not_found."""
    r = await call(app, raw_path=b"/nowhere")
    assert r.status == 404
    assert r.json()["code"] == "not_found"


async def test_default_allow_forwards_without_identity(tmp_path: Path) -> None:
    """[default] action = allow forwards unmatched requests, identity headers still stripped."""
    app = guarded(tmp_path, SEED_POLICY.replace('action = "deny"', 'action = "allow"'))
    r = await call(app, raw_path=b"/nowhere", headers=[("x-user-id", "root")])
    assert r.status == 200
    assert "x-user-id" not in seen_headers(r.json())


async def test_methods_get_also_matches_head(tmp_path: Path) -> None:
    """methods = ["GET"] matches HEAD, and not POST."""
    text = SEED_POLICY.replace(
        'match = "/api/login"\nmethods = ["POST"]', 'match = "/api/login"\nmethods = ["GET"]'
    )
    app = guarded(tmp_path, text)
    assert (await call(app, method="HEAD", raw_path=b"/api/login")).status == 200
    assert (await call(app, method="POST", raw_path=b"/api/login")).status == 404


async def test_hosts_restrict_a_rule(tmp_path: Path) -> None:
    """hosts = [...] matches exact names and *.domain subdomains (not the apex), port ignored."""
    text = SEED_POLICY.replace(
        '[[rules]]\nid = "public"',
        '[[rules]]\nid = "tenant"\nmatch = "/t/**"\nhosts = ["app.example.com", "*.tenants.example"]\n'
        'public = true\n\n[[rules]]\nid = "public"',
    )
    app = guarded(tmp_path, text)
    for host, status in [
        ("app.example.com", 200),
        ("APP.example.com:8443", 200),
        ("a.tenants.example", 200),
        ("tenants.example", 404),
        ("evil.example.com", 404),
    ]:
        r = await call(app, raw_path=b"/t/x", headers=[("host", host)])
        assert r.status == status, host


async def test_first_matching_rule_wins_and_ids_default_to_position(tmp_path: Path) -> None:
    """Rules are tried in file order; a rule without id is named rules[N] in audit events."""
    text = SEED_POLICY.replace('id = "dashboard"\n', "")
    audit = RecordingAudit()
    app = guarded(tmp_path, text, audit=audit)
    await call(app, raw_path=b"/dashboard/x")
    assert audit.events[-1]["rule"] == "rules[4]"


@pytest.mark.parametrize(
    ("headers", "page"),
    [
        ([("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")], True),
        ([("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")], False),
        ([("sec-fetch-mode", "cors"), ("accept", "text/html")], False),
        ([("accept", "text/html,application/xhtml+xml,*/*;q=0.8")], True),
        ([("accept", "application/json, text/html;q=0.5")], False),
        ([("accept", "*/*")], False),
        ([], False),
    ],
)
async def test_auto_rules_decide_page_or_api_per_request(
    tmp_path: Path, headers: list[tuple[str, str]], page: bool
) -> None:
    """kind = auto: Sec-Fetch-Mode decides when present, else an Accept preferring HTML."""
    app = guarded(tmp_path, SEED_POLICY.replace('kind = "page"', 'kind = "auto"'))
    r = await call(app, raw_path=b"/dashboard", headers=headers)
    if page:
        assert r.status == 302
        assert r.header("location") == "/login?next=%2Fdashboard"
    else:
        assert r.status == 401
        assert r.json()["code"] == "missing_credentials"


async def test_optional_authentication_on_public_rules(tmp_path: Path) -> None:
    """public + authenticate: none is anonymous, valid gives identity, invalid is 401."""
    text = SEED_POLICY.replace(
        'match = ["/", "/login", "/public/**"]\npublic = true',
        'match = ["/", "/login", "/public/**"]\npublic = true\nauthenticate = ["session"]',
    )
    app = guarded(tmp_path, text)
    r = await call(app, raw_path=b"/public/x")
    assert r.status == 200 and r.json()["subject"] is None
    r = await call(app, raw_path=b"/public/x", headers=[cookie()])
    assert r.status == 200 and r.json()["subject"] == "alice"
    r = await call(app, raw_path=b"/public/x", headers=[("cookie", "session=garbage")])
    assert r.status == 401


# Pages --------------------------------------------------------------------


async def test_login_redirect_keeps_path_and_query_encoded(app: EdgeAuth) -> None:
    """next is the canonical path and query, percent-encoded; POST gets 303."""
    r = await call(app, raw_path=b"/dashboard/./a/../reports", query=b"q=1&x=%2F")
    assert r.status == 302
    assert r.header("location") == "/login?next=%2Fdashboard%2Freports%3Fq%3D1%26x%3D%252F"
    r = await call(app, method="POST", raw_path=b"/dashboard")
    assert r.status == 303


async def test_signed_in_user_without_role_gets_a_403_page_not_a_redirect(tmp_path: Path) -> None:
    """A page rule's role failure is a 403 HTML page (no redirect loop)."""
    text = SEED_POLICY.replace(
        'login_url = "/login"', 'login_url = "/login"\nrequire.roles = ["admin"]'
    )
    app = guarded(tmp_path, text)
    r = await call(app, raw_path=b"/dashboard", headers=[cookie()])
    assert r.status == 403
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert b"403" in r.body and b"Traceback" not in r.body


async def test_invalid_cookie_on_a_page_redirects_to_login(app: EdgeAuth) -> None:
    """An expired session on a page is sent to sign in again."""
    r = await call(app, raw_path=b"/dashboard", headers=[cookie(session_token(lifetime=-100))])
    assert r.status == 302


# Paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/v1%2Fx",
        b"/api%5Cadmin",
        b"/api\\admin",
        b"/api/a;b",
        b"/api/%3b",
        b"/api/%252e%252e",
        b"/api/%00",
        b"/api/\x01",
        b"/api/%ff",
        b"/../api",
        b"/api/%2e%2e/%2e%2e/x",
    ],
)
async def test_ambiguous_paths_are_400_before_any_rule(app: EdgeAuth, raw: bytes) -> None:
    """Encoded slashes, backslashes, ';', double encoding, controls, bad UTF-8 and .. above root: 400."""
    r = await call(app, raw_path=raw, headers=[("x-api-key", API_KEY)])
    assert r.status == 400
    assert r.json()["code"] == "bad_request"


async def test_app_receives_the_canonical_path_that_was_authorized(app: EdgeAuth) -> None:
    """Dot segments, duplicate slashes and unreserved escapes are resolved before matching and forwarding."""
    r = await call(app, raw_path=b"/public/..//api/%61dmin/users", headers=[cookie()])
    # /public/..//api/%61dmin/users is /api/admin/users: the admin rule decides, not the public one.
    assert r.status == 403
    r = await call(
        app, raw_path=b"//api//v1/./%7Ereports/caf%c3%a9", headers=[("x-api-key", API_KEY)]
    )
    assert r.status == 200
    body = r.json()
    assert body["raw_path"] == "/api/v1/~reports/caf%C3%A9"
    assert body["path"] == "/api/v1/~reports/café"


# Body size ------------------------------------------------------------------


async def test_body_over_max_body_is_413(tmp_path: Path) -> None:
    """max_body: a declared or streamed body over the limit is 413 JSON."""
    app = guarded(
        tmp_path, SEED_POLICY.replace('methods = ["POST"]', 'methods = ["POST"]\nmax_body = 10')
    )
    r = await call(
        app,
        method="POST",
        raw_path=b"/api/login",
        headers=[("content-length", "11")],
        body=b"x" * 11,
    )
    assert r.status == 413
    assert r.json()["code"] == "payload_too_large"
    r = await call(app, method="POST", raw_path=b"/api/login", body=b"x" * 11)  # no content-length
    assert r.status == 413
    r = await call(app, method="POST", raw_path=b"/api/login", body=b"x" * 10)
    assert r.status == 200


# Failures -----------------------------------------------------------------


async def test_internal_error_is_a_generic_500_and_the_app_is_not_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception inside edgeauth: 500 JSON internal_error, no details, app not called."""
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    guard = guarded(tmp_path, app=app)
    session = guard.policy.authenticators["session"]
    break_verification(monkeypatch, session, "database password=hunter2 at /srv/x.py line 3")
    token = session_token(purpose="internal-error")  # not in the token cache
    with caplog.at_level(logging.ERROR, logger="edgeauth"):
        r = await call(guard, raw_path=b"/api/protected/x", headers=[cookie(token)])
    assert r.status == 500
    body = r.json()
    assert body["code"] == "internal_error"
    assert set(body) == {"error", "code", "request_id"}
    assert b"hunter2" not in r.body and b"RuntimeError" not in r.body and b".py" not in r.body
    assert not called
    assert "hunter2" in caplog.text  # the details go to the server log


async def test_a_scope_that_cannot_be_read_is_an_audited_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scope the view cannot be built from (a header that is not a pair) is
    edgeauth's 500, audited with its own request id and what can be told of
    the request; the app is not called."""
    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    # The second time from a server that gives no raw_path: rebuilt from the path.
    for extra in ({}, {"raw_path": None}):
        with caplog.at_level(logging.ERROR, logger="edgeauth"):
            r = await call(
                app, raw_path=b"/api/protected/x", extra={"headers": [(b"host",)], **extra}
            )
        assert r.status == 500 and r.json()["code"] == "internal_error"
        assert "cannot read the request scope" in caplog.text
        event = audit.events[-1]
        assert event["request_id"] == r.header("x-request-id") == r.json()["request_id"] != "-"
        assert (event["method"], event["path"], event["client"]) == (
            "GET",
            "/api/protected/x",
            "127.0.0.1",
        )
        assert (event["code"], event["status"]) == ("internal_error", 500)
        assert event["reason"] == "cannot read the request scope"


async def test_an_audited_path_is_bounded(tmp_path: Path) -> None:
    """A path longer than 2,048 characters is cut there in the audit event
    (marked with "..."), so a client cannot write lines of any length into
    the audit trail; one of exactly 2,048 is kept whole."""
    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    whole = "/api/protected/" + "a" * (2048 - len("/api/protected/"))
    for path, logged in ((whole + "bcd" * 5000, whole + "..."), (whole, whole)):
        r = await call(app, raw_path=path.encode())
        assert r.status == 401
        assert audit.events[-1]["request_id"] == r.header("x-request-id")
        assert audit.events[-1]["path"] == logged


async def test_error_responses_name_no_library(app: EdgeAuth) -> None:
    """Responses edgeauth writes carry no server or library name."""
    for raw in (b"/api/protected/x", b"/nowhere", b"/api/%2f"):
        r = await call(app, raw_path=raw)
        text = (r.body + json.dumps(r.headers).encode()).lower()
        for word in (b"starlette", b"uvicorn", b"pyjwt", b"python", b"pydantic", b"traceback"):
            assert word not in text


# Client address -------------------------------------------------------------


async def test_forwarded_headers_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """X-Forwarded-For sets the client only from a trusted peer; otherwise it is removed."""
    text = '[server]\ntrusted_proxies = ["127.0.0.1/32"]\n' + SEED_POLICY
    audit = RecordingAudit()
    app = guarded(tmp_path, text, audit=audit)
    xff = [("x-forwarded-for", "6.6.6.6, 203.0.113.7"), ("forwarded", "for=6.6.6.6")]
    await call(app, raw_path=b"/nowhere", headers=xff, client=("127.0.0.1", 1))
    assert audit.events[-1]["client"] == "203.0.113.7"
    await call(app, raw_path=b"/nowhere", headers=xff, client=("::1", 1))
    assert audit.events[-1]["client"] == "::1"
    r = await call(app, raw_path=b"/public/x", headers=xff, client=("::1", 1))
    seen = seen_headers(r.json())
    assert "x-forwarded-for" not in seen and "forwarded" not in seen
    r = await call(app, raw_path=b"/public/x", headers=xff, client=("127.0.0.1", 1))
    assert "forwarded" in seen_headers(r.json())


# WebSocket ------------------------------------------------------------------


async def test_denied_websocket_gets_the_json_before_any_upgrade(app: EdgeAuth) -> None:
    """A WebSocket upgrade goes through the same decision; denial uses the HTTP response extension."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/api/protected/ws",
        "raw_path": b"/api/protected/ws",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "scheme": "ws",
        "extensions": {"websocket.http.response": {}},
    }
    await app(scope, receive, send)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["code"] == "missing_credentials"
    sent.clear()
    del scope["extensions"]
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_websocket_with_cookie_from_foreign_origin_is_csrf(app: EdgeAuth) -> None:
    """A cookie-authenticated upgrade from a foreign Origin is refused (cross-site WebSocket hijacking)."""
    sent: list[dict[str, Any]] = []
    reached: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["edgeauth"])

    app.app = inner

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    base = {
        "type": "websocket",
        "path": "/api/protected/ws",
        "raw_path": b"/api/protected/ws",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "scheme": "ws",
        "extensions": {"websocket.http.response": {}},
    }
    token = session_token()
    evil = [
        (b"host", b"app.test"),
        (b"origin", b"https://evil.example"),
        (b"cookie", f"session={token}".encode()),
    ]
    await app({**base, "headers": evil}, receive, send)
    assert sent[0]["status"] == 403 and json.loads(sent[1]["body"])["code"] == "csrf"
    good = [
        (b"host", b"app.test"),
        (b"origin", b"http://app.test"),
        (b"cookie", f"session={token}".encode()),
    ]
    await app({**base, "headers": good}, receive, send)
    assert reached and reached[0].subject == "alice"


# Scope ----------------------------------------------------------------------


async def test_scope_carries_the_identity(tmp_path: Path) -> None:
    """scope['edgeauth'] holds the Identity: subject, roles, scopes, claims, authenticator."""
    captured: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        captured.update(scope)
        await echo_app(scope, receive, send)

    guard = EdgeAuth(app, policy=write_policy(tmp_path))  # a path works as well as a Policy
    await call(guard, raw_path=b"/api/protected/x", headers=[cookie(session_token(scope="a b"))])
    identity = captured["edgeauth"]
    assert isinstance(identity, Identity)
    assert identity.subject == "alice"
    assert identity.roles == ("user",)
    assert identity.scopes == ("a", "b")
    assert identity.claims["iss"] == "https://issuer.test"
    assert identity.authenticator == "session"


async def test_lifespan_passes_through(app: EdgeAuth) -> None:
    """Non-HTTP scopes go to the app untouched."""
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app.app = inner
    await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


async def test_escaped_sub_delimiters_match_like_their_literal_form(tmp_path: Path) -> None:
    """/users/%40me is /users/@me to the app, so the @me rule decides it too."""
    text = (
        '[[rules]]\nid = "me"\nmatch = "/users/@me"\nauthenticate = ["s"]\n\n'
        '[[rules]]\nid = "users"\nmatch = "/users/*"\npublic = true\n\n'
        + '[authenticators.s]\ntype = "jwt"\nfrom = "cookie:session"\nalgorithms = ["HS256"]\n'
        + f'secret = "{SECRET}"\n'
    )
    app = guarded(tmp_path, text)
    for raw in (b"/users/@me", b"/users/%40me", b"/users/%40%6De"):
        r = await call(app, raw_path=raw)
        assert r.status == 401, raw
    assert (await call(app, raw_path=b"/users/bob")).status == 200


async def test_lifespan_shutdown_closes_the_policy(
    app: EdgeAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At lifespan shutdown the policy's connections are released before the server is told."""
    closed: list[str] = []

    class Recorder:
        """Stands in for an authenticator: the policy's aclose closes every one."""

        async def aclose(self) -> None:
            closed.append("policy")

    monkeypatch.setitem(app.policy.authenticators, "recorder", Recorder())

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    app.app = inner
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(f"{message['type']} after {closed}")

    await app({"type": "lifespan"}, None, send)  # type: ignore[arg-type]
    assert sent == [
        "lifespan.startup.complete after []",
        "lifespan.shutdown.complete after ['policy']",
    ]


# Serving -------------------------------------------------------------------


def test_servers_serve_it_as_asgi_3(app: EdgeAuth) -> None:
    """Servers tell ASGI 3 from ASGI 2 by asking whether ``app.__call__`` is a
    coroutine function (uvicorn and Starlette through asyncio's check before
    Python 3.14, hypercorn through inspect's): both say it is, and uvicorn
    picks ASGI 3 on its own."""
    import uvicorn
    from starlette._utils import is_async_callable

    assert asyncio.iscoroutinefunction(app.__call__)
    assert inspect.iscoroutinefunction(app.__call__)
    assert is_async_callable(app)
    config = uvicorn.Config(app, interface="auto")
    config.load()
    assert config.interface == "asgi3"


async def test_its_call_attribute_answers_as_the_call_does(app: EdgeAuth) -> None:
    """What a server inspects, awaited, answers as calling the instance does:
    an allowed request with the cached cookie, one without a credential, a
    public route, each asked twice (the second time settled)."""
    token = session_token()
    for raw_path, headers, status in (
        (b"/api/protected/x", [cookie(token)], 200),
        (b"/api/protected/x", [], 401),
        (b"/", [], 200),
    ):
        for _ in range(2):
            direct = await call(app, raw_path=raw_path, headers=headers)
            through = await call(app.__call__, raw_path=raw_path, headers=headers)
            assert (direct.status, through.status) == (status, status), raw_path
            assert json.loads(through.body).get("path") == json.loads(direct.body).get("path")


async def test_an_app_can_subclass_it(tmp_path: Path) -> None:
    """EdgeAuth is an ordinary class to an app, in both builds: a subclass's
    methods are called and the guard still decides."""
    seen: list[str] = []

    class Counted(EdgeAuth):
        def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
            seen.append(scope["path"])
            return super().__call__(scope, receive, send)

    app = Counted(echo_app, policy=write_policy(tmp_path))
    assert (await call(app, raw_path=b"/api/protected/x")).status == 401
    ok = await call(app, raw_path=b"/api/protected/x", headers=[cookie()])
    assert ok.status == 200
    assert seen == ["/api/protected/x", "/api/protected/x"]


# Review findings: ambiguity and spelling tricks ------------------------------

HOSTS_POLICY = (
    '[[rules]]\nid = "internal"\nmatch = "/internal/**"\nhosts = ["admin.example.com"]\n'
    'authenticate = ["s"]\n\n[[rules]]\nid = "open"\nmatch = "/internal/**"\npublic = true\n\n'
    '[authenticators.s]\ntype = "jwt"\nfrom = "cookie:session"\nalgorithms = ["HS256"]\n'
    f'secret = "{SECRET}"\n'
)


@pytest.mark.parametrize(
    ("hosts", "status"),
    [
        (["admin.example.com"], 401),
        (["admin.example.com."], 401),
        (["ADMIN.example.com.:443"], 401),
        (["admin.example.com\x00"], 400),
        (["admin.example.com/x"], 400),
        (["evil.example", "admin.example.com"], 400),
        (["other.example.com"], 200),
    ],
)
async def test_host_tricks_cannot_skip_a_hosts_rule(
    tmp_path: Path, hosts: list[str], status: int
) -> None:
    """A trailing dot, a malformed or a repeated Host never skips a host-bound rule."""
    app = guarded(tmp_path, HOSTS_POLICY)
    r = await call(app, raw_path=b"/internal/x", headers=[("host", h) for h in hosts])
    assert r.status == status


@pytest.mark.parametrize("name", ["host", "origin"])
async def test_repeated_single_header_is_audited_by_name(tmp_path: Path, name: str) -> None:
    """A repeated Host or Origin is 400, and the audit says which one repeated."""
    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    r = await call(
        app,
        raw_path=b"/api/protected/x",
        headers=[(name, "app.test"), (name, "other.test"), cookie()],
    )
    assert r.status == 400
    assert audit.events[-1]["reason"] == f"more than one {name} header"


async def test_repeated_origin_is_400(app: EdgeAuth) -> None:
    """Two Origin headers are ambiguous (the CSRF check must not pick the friendly one)."""
    r = await call(
        app,
        method="POST",
        raw_path=b"/api/protected/x",
        headers=[
            ("host", "app.test"),
            ("origin", "http://app.test"),
            ("origin", "https://evil.example"),
            cookie(),
        ],
    )
    assert r.status == 400


async def test_percent_in_identity_values_is_encoded(app: EdgeAuth) -> None:
    """'%' is encoded too, so two different subjects never give the same header."""
    one = await call(app, raw_path=b"/api/protected/x", headers=[cookie(session_token("alié"))])
    two = await call(
        app, raw_path=b"/api/protected/x", headers=[cookie(session_token("ali%C3%A9"))]
    )
    assert seen_headers(one.json())["x-user-id"] == ["ali%C3%A9"]
    assert seen_headers(two.json())["x-user-id"] == ["ali%25C3%25A9"]


async def test_c1_control_in_identity_is_401(app: EdgeAuth) -> None:
    """C1 controls (U+0080-U+009F) count as control characters."""
    r = await call(app, raw_path=b"/api/protected/x", headers=[cookie(session_token("ali\x85ce"))])
    assert r.status == 401


async def test_underscore_forwarded_headers_from_untrusted_peers_are_removed(app: EdgeAuth) -> None:
    """X_Forwarded_Host and friends are removed like X-Forwarded-Host."""
    r = await call(
        app,
        raw_path=b"/public/x",
        headers=[
            ("X_Forwarded_Host", "evil.example"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Forwarded_Proto", "https"),
        ],
    )
    names = {n.replace("_", "-") for n in seen_headers(r.json())}
    assert not names & {"x-forwarded-host", "x-forwarded-for", "x-forwarded-proto"}


async def test_api_key_in_both_places_is_withheld_from_both(app: EdgeAuth) -> None:
    """forward_credential = false removes every copy of the key, not only the one used."""
    r = await call(
        app,
        raw_path=b"/api/v1/x",
        headers=[("authorization", f"Bearer {API_KEY}"), ("x-api-key", API_KEY)],
    )
    assert r.status == 200
    seen = seen_headers(r.json())
    assert "authorization" not in seen
    assert "x-api-key" not in seen


async def test_no_credential_but_the_identitys_reaches_the_app(tmp_path: Path) -> None:
    """On a rule that reads several places, the app gets the credential its
    identity came from (when its authenticator forwards it) and no other: an
    API key sent beside the session cookie that decided the request stays at
    the edge (API keys are never forwarded), and so does a session cookie
    beside the API key that decided it."""
    text = SEED_POLICY.replace(
        'authenticate = ["keys", "session"]', 'authenticate = ["session", "keys"]'
    )
    app = guarded(tmp_path, text)
    token = session_token("alice")
    r = await call(
        app,
        raw_path=b"/api/v1/x",
        headers=[("cookie", f"session={token}"), ("x-api-key", API_KEY)],
    )
    assert r.status == 200
    seen = seen_headers(r.json())
    assert seen["x-user-id"] == ["alice"]
    assert seen["cookie"] == [f"session={token}"]
    assert "x-api-key" not in seen
    r = await call(
        app,
        raw_path=b"/api/v1/x",
        headers=[("cookie", f"session={token}"), ("x_api_key", API_KEY)],
    )
    seen = seen_headers(r.json())
    assert seen["x-user-id"] == ["alice"]
    assert not {"x-api-key", "x_api_key"} & set(seen)  # not read, and not passed on either
    r = await call(
        guarded(tmp_path),
        raw_path=b"/api/v1/x",
        headers=[("cookie", f"session={token}; theme=dark"), ("x-api-key", API_KEY)],
    )
    seen = seen_headers(r.json())
    assert seen["x-user-id"] == ["svc-reporting"]
    assert seen["cookie"] == ["theme=dark"]
    assert "x-api-key" not in seen


async def test_audit_status_is_what_the_client_got(tmp_path: Path) -> None:
    """A page redirect is audited as 302/303; a refused preflight says so."""
    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    await call(app, raw_path=b"/dashboard")
    assert audit.events[-1]["status"] == 302
    await call(app, method="POST", raw_path=b"/dashboard")
    assert audit.events[-1]["status"] == 303
    r = await call(
        app,
        method="OPTIONS",
        raw_path=b"/api/v1/x",
        headers=[("origin", "https://evil.example"), ("access-control-request-method", "GET")],
    )
    assert r.json()["error"] == "CORS preflight refused"


async def test_app_cors_headers_stay_on_rules_without_cors(tmp_path: Path) -> None:
    """A rate-limited rule without cors keeps the app's own Access-Control-* headers."""
    text = SEED_POLICY.replace(
        'methods = ["POST"]\npublic = true',
        'methods = ["POST"]\npublic = true\nrate_limit = "100/minute per ip"',
    )
    app = guarded(tmp_path, text)
    r = await call(app, method="POST", raw_path=b"/api/login")
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "*"  # the echo app's own
    assert r.header("ratelimit-limit") == "100"


@pytest.mark.parametrize("value", [f"Bearer\t{API_KEY}", f"bearer  {API_KEY}", f"BEARER {API_KEY}"])
async def test_bearer_with_any_whitespace_is_a_bearer_credential(app: EdgeAuth, value: str) -> None:
    """The scheme is case-insensitive and any whitespace separates it from the token."""
    r = await call(app, raw_path=b"/api/v1/x", headers=[("authorization", value)])
    assert r.status == 200
    assert r.json()["subject"] == "svc-reporting"


@pytest.mark.parametrize("value", ["", "   ", "Basic dXNlcjpwYXNz"])
async def test_empty_or_other_authorization_is_no_bearer_credential(
    app: EdgeAuth, value: str
) -> None:
    """An empty Authorization or another scheme counts as no bearer credential (401 missing)."""
    r = await call(app, raw_path=b"/api/v1/x", headers=[("authorization", value)])
    assert r.status == 401
    assert r.json()["code"] == "missing_credentials"


@pytest.mark.parametrize(
    "name",
    [
        "x-forwarded-uri",
        "X-Forwarded-Method",
        "x-forwarded-client-cert",
        "X_Forwarded_Anything",
        "x-ssl-client-s-dn",
        "x-client-verify",
    ],
)
async def test_every_proxy_only_header_from_untrusted_peers_is_removed(
    app: EdgeAuth, name: str
) -> None:
    """All X-Forwarded-* and TLS client-certificate headers are removed from untrusted peers."""
    r = await call(app, raw_path=b"/public/x", headers=[(name, "spoofed")], client=("::1", 1))
    assert "spoofed" not in json.dumps(r.json()["headers"])


async def test_a_header_value_of_another_type_gets_an_answer_never_an_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that hands over a header value as a bytearray (ASGI asks for
    bytes) on a rule that withholds the credential gets edgeauth's own answer,
    never an exception out of the middleware, and the credential does not reach
    the app: the sources strip it, the compiled build (whose functions check
    the types they declare) refuses the request as an internal error, audited,
    with the rule's CORS headers so that browser code can read it."""
    audit = RecordingAudit()
    app = guarded(tmp_path, audit=audit)
    headers = [
        (b"host", b"app.test"),
        (b"origin", b"https://app.example.com"),
        (b"authorization", bytearray(f"Bearer {API_KEY}".encode())),
    ]
    with caplog.at_level(logging.ERROR, logger="edgeauth"):
        r = await call(app, raw_path=b"/api/v1/x", extra={"headers": headers})
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    if r.status == 200:
        assert "authorization" not in seen_headers(r.json())
    else:
        assert r.status == 500
        assert r.json()["code"] == "internal_error"
        assert audit.events[-1]["code"] == "internal_error"
        assert audit.events[-1]["reason"] == "cannot build the app's scope"
        assert API_KEY not in r.body.decode() and API_KEY not in json.dumps(audit.events)
