"""The demo app alone, with identity headers set by hand as edgeauth would set them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from edgeauth.demo.app import DEMO_USERS, MAX_BODY, DemoUser, create_app, safe_next

SECRET = b"demo-secret-for-tests-0123456789abcdef"
ISSUER = "https://issuer.example"
AUDIENCE = "edge-api"
ALICE = {"x-user-id": "alice", "x-user-role": "user"}
ADMIN = {"x-user-id": "admin", "x-user-role": "admin,user"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
PASSWORDS = [user.password for user in DEMO_USERS]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(session_secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def session_cookie(response: httpx.Response) -> str:
    """The single Set-Cookie header of a response."""
    (header,) = response.headers.get_list("set-cookie")
    return header


def decode(header: str) -> dict[str, Any]:
    """The verified claims of a session Set-Cookie header."""
    token = header.split(";", 1)[0].removeprefix("session=")
    claims: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=["HS256"], issuer=ISSUER, audience=AUDIENCE
    )
    return claims


# --- safe_next ---------------------------------------------------------------------

UNSAFE = [
    None,
    "",
    "//evil.com",
    "//evil.com/path",
    "/\\evil.com",
    "/\\/evil.com",
    "/ok\\..\\x",
    "https://evil.com",
    "http:/evil.com",
    "javascript:alert(1)",
    "%2F%2Fevil.com",
    "/%2F/evil.com",
    "/%2f%2fevil.com",
    "/%5Cevil.com",
    "/%09/evil.com",
    "/\t/evil.com",
    "\t//evil",
    " //evil.com",
    "/\n/evil.com",
    "/dash\x00board",
    "/dash\u2028board",
    "/%252F%252Fevil.com",
    "/%25252525252F",
    "dashboard",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("value", UNSAFE)
def test_safe_next_refuses_redirects_off_site(value: str | None) -> None:
    """Every open-redirect payload falls back to the default path."""
    assert safe_next(value) == "/dashboard"


@pytest.mark.parametrize(
    "value", ["/", "/dashboard", "/api/protected/me?x=1&y=2", "/a/b#top", "/a%20b", "/x:y"]
)
def test_safe_next_keeps_same_site_paths(value: str) -> None:
    """A same-site relative path is returned unchanged."""
    assert safe_next(value) == value


def test_safe_next_uses_the_given_default() -> None:
    """The default is the caller's choice."""
    assert safe_next("//evil.com", default="/") == "/"


# --- construction ------------------------------------------------------------------


def test_create_app_refuses_a_short_secret() -> None:
    """An HS256 secret under 32 bytes is refused, and the message does not echo it."""
    with pytest.raises(ValueError, match="32 bytes") as info:
        create_app(session_secret=b"short-secret", issuer=ISSUER, audience=AUDIENCE)
    assert "short-secret" not in str(info.value)


def test_create_app_refuses_a_non_positive_lifetime() -> None:
    """A session must last some time."""
    with pytest.raises(ValueError, match="positive"):
        create_app(session_secret=SECRET, issuer=ISSUER, audience=AUDIENCE, session_seconds=0)


def test_demo_user_repr_hides_the_password() -> None:
    """A DemoUser printed or logged does not show its password."""
    user = DemoUser("bob", "hunter2-secret", ("user",))
    assert "hunter2-secret" not in repr(user)
    assert "bob" in repr(user)


def test_demo_users_are_alice_and_admin() -> None:
    """The fixed demo accounts and their roles."""
    assert [(u.username, u.roles) for u in DEMO_USERS] == [
        ("alice", ("user",)),
        ("admin", ("admin", "user")),
    ]


# --- pages -------------------------------------------------------------------------


async def test_home_describes_the_demo_and_links_everywhere(client: httpx.AsyncClient) -> None:
    """Anonymous home page: not signed in, links to pages and API paths, CSP set."""
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for path in ("/dashboard", "/login", "/api/protected/me", "/api/v1/reports"):
        assert f'href="{path}"' in response.text
    assert 'href="/api/admin/users"' in response.text
    assert 'href="/public/hello"' in response.text
    assert "not signed in" in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_home_shows_who_is_signed_in(client: httpx.AsyncClient) -> None:
    """With identity headers the home page names the user and offers sign-out."""
    response = await client.get("/", headers=ADMIN)
    assert "Signed in as <strong>admin</strong> (admin, user)" in response.text
    assert 'action="/logout"' in response.text


async def test_home_treats_an_empty_identity_header_as_anonymous(
    client: httpx.AsyncClient,
) -> None:
    """An empty x-user-id (forward-auth, anonymous) is no identity."""
    response = await client.get("/", headers={"x-user-id": "", "x-user-role": ""})
    assert "not signed in" in response.text


async def test_pages_escape_identity_values(client: httpx.AsyncClient) -> None:
    """Header values are HTML-escaped wherever they are shown."""
    evil = {"x-user-id": "<script>x</script>", "x-user-role": '"><img src=x>'}
    for path in ("/", "/dashboard"):
        response = await client.get(path, headers=evil)
        assert "<script>x</script>" not in response.text
        assert "&lt;script&gt;x&lt;/script&gt;" in response.text
        assert "<img" not in response.text


async def test_login_form_carries_a_safe_next(client: httpx.AsyncClient) -> None:
    """GET /login renders the form with the return path, escaped, in a hidden field."""
    response = await client.get("/login", params={"next": "/api/v1/reports?a=1&b=2"})
    assert response.status_code == 200
    assert 'name="username"' in response.text
    assert 'name="password" type="password"' in response.text
    assert 'name="next" value="/api/v1/reports?a=1&amp;b=2"' in response.text


async def test_login_form_replaces_an_unsafe_next(client: httpx.AsyncClient) -> None:
    """An off-site return path never reaches the form."""
    response = await client.get("/login", params={"next": "//evil.com"})
    assert 'name="next" value="/dashboard"' in response.text
    assert "evil.com" not in response.text


async def test_dashboard_greets_and_calls_the_api(client: httpx.AsyncClient) -> None:
    """The dashboard names the user, has the fetch button, the output and sign-out."""
    response = await client.get("/dashboard", headers=ALICE)
    assert response.status_code == 200
    assert "Hello, <strong>alice</strong> (user)" in response.text
    assert 'fetch("/api/protected/me"' in response.text
    assert '<pre id="out"' in response.text
    assert 'action="/logout"' in response.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", response.headers["content-security-policy"])
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in response.text


async def test_dashboard_without_roles_says_so(client: httpx.AsyncClient) -> None:
    """A user with no role header is shown with no roles."""
    response = await client.get("/dashboard", headers={"x-user-id": "svc"})
    assert "<strong>svc</strong> (no roles)" in response.text


# --- sign-in with the form -----------------------------------------------------------


async def test_form_sign_in_sets_the_session_cookie(client: httpx.AsyncClient) -> None:
    """Right credentials: 303 to next and an HttpOnly, SameSite=Lax JWT cookie."""
    form = {"username": "admin", "password": "admin-pass", "next": "/api/admin/users"}
    response = await client.post("/login", data=form)
    assert response.status_code == 303
    assert response.headers["location"] == "/api/admin/users"
    cookie = session_cookie(response)
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert {"httponly", "path=/", "samesite=lax", "max-age=3600"} <= set(attributes)
    assert "secure" not in attributes
    claims = decode(cookie)
    assert claims["sub"] == "admin"
    assert claims["role"] == ["admin", "user"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert isinstance(claims["iat"], int)
    assert claims["exp"] == claims["iat"] + 3600
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


async def test_each_session_has_its_own_jti(client: httpx.AsyncClient) -> None:
    """Two sign-ins mint two different token ids."""
    form = {"username": "alice", "password": "alice-pass"}
    first = decode(session_cookie(await client.post("/login", data=form)))
    second = decode(session_cookie(await client.post("/login", data=form)))
    assert first["jti"] != second["jti"]


async def test_sign_in_honours_cookie_name_and_lifetime() -> None:
    """cookie_name and session_seconds shape the cookie and the token."""
    app = create_app(
        session_secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        users=[DemoUser("carol", "carol-pass", ("ops",))],
        cookie_name="demo_sid",
        session_seconds=60,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        response = await c.post("/login", data={"username": "carol", "password": "carol-pass"})
        alice = await c.post("/login", data={"username": "alice", "password": "alice-pass"})
    cookie = session_cookie(response)
    assert cookie.startswith("demo_sid=")
    assert "Max-Age=60" in cookie
    claims = decode(cookie.replace("demo_sid=", "session=", 1))
    assert claims["exp"] == claims["iat"] + 60
    assert claims["role"] == ["ops"]
    assert alice.status_code == 401


async def test_sign_in_over_https_marks_the_cookie_secure(client: httpx.AsyncClient) -> None:
    """Over HTTPS (direct, or X-Forwarded-Proto from edgeauth) the cookie is Secure."""
    form = {"username": "alice", "password": "alice-pass"}
    direct = await client.post("https://127.0.0.1/login", data=form)
    forwarded = await client.post("/login", data=form, headers={"x-forwarded-proto": "https"})
    for response in (direct, forwarded):
        assert "; Secure" in session_cookie(response)


async def test_form_sign_in_falls_back_to_the_dashboard(client: httpx.AsyncClient) -> None:
    """An unsafe or absent next sends the user to /dashboard."""
    for target in ("//evil.com", "https://evil.com", None):
        form = {"username": "alice", "password": "alice-pass"}
        if target is not None:
            form["next"] = target
        response = await client.post("/login", data=form)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "admin-pass"), ("alice", ""), ("mallory", "alice-pass"), ("", "")],
)
async def test_form_sign_in_refuses_wrong_credentials(
    client: httpx.AsyncClient, username: str, password: str
) -> None:
    """Wrong credentials: the form again with an error, 401, no cookie, no password."""
    form = {"username": username, "password": password, "next": "/api/protected/me"}
    response = await client.post("/login", data=form)
    assert response.status_code == 401
    assert "Invalid username or password." in response.text
    assert 'name="next" value="/api/protected/me"' in response.text
    assert "set-cookie" not in response.headers
    if password:
        assert password not in response.text


async def test_form_sign_in_escapes_the_echoed_username(client: httpx.AsyncClient) -> None:
    """The username typed is shown again, escaped."""
    response = await client.post("/login", data={"username": '"><b>x', "password": "no"})
    assert 'value="&quot;&gt;&lt;b&gt;x"' in response.text


async def test_form_sign_in_needs_url_encoding(client: httpx.AsyncClient) -> None:
    """A form that is not URL-encoded is refused with 415."""
    response = await client.post("/login", json={"username": "alice", "password": "alice-pass"})
    assert response.status_code == 415
    assert "set-cookie" not in response.headers


async def test_form_sign_in_refuses_a_large_body(client: httpx.AsyncClient) -> None:
    """A form over 16 KiB is refused with 413."""
    body = b"username=alice&password=alice-pass&pad=" + b"x" * MAX_BODY
    response = await client.post("/login", content=body, headers=FORM)
    assert response.status_code == 413
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "body", [b"username=alice&password=%FF", "username=al\u00efce".encode(), b"a=1&" * 20]
)
async def test_form_sign_in_refuses_a_malformed_form(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """Non-UTF-8 escapes, raw non-ASCII bytes or too many fields: 400."""
    response = await client.post("/login", content=body, headers=FORM)
    assert response.status_code == 400
    assert "The form could not be read." in response.text


async def test_form_with_a_charset_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    """Content-Type parameters do not matter."""
    headers = {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"}
    body = b"username=alice&password=alice-pass"
    response = await client.post("/login", content=body, headers=headers)
    assert response.status_code == 303


async def test_logout_clears_the_cookie(client: httpx.AsyncClient) -> None:
    """POST /logout expires the session cookie and goes home."""
    response = await client.post("/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = session_cookie(response)
    assert cookie.startswith("session=")
    assert "Max-Age=0" in cookie
    assert "Path=/" in cookie
    assert "HttpOnly" in cookie


# --- sign-in with JSON -------------------------------------------------------------


async def test_api_login_answers_json_and_sets_the_cookie(client: httpx.AsyncClient) -> None:
    """Right credentials: 200 JSON identity and the same session cookie."""
    response = await client.post("/api/login", json={"username": "alice", "password": "alice-pass"})
    assert response.status_code == 200
    assert response.json() == {"user_id": "alice", "roles": ["user"]}
    claims = decode(session_cookie(response))
    assert claims["sub"] == "alice"
    assert claims["role"] == ["user"]


async def test_api_login_refuses_wrong_credentials(client: httpx.AsyncClient) -> None:
    """Wrong credentials: 401 JSON, no cookie."""
    response = await client.post("/api/login", json={"username": "alice", "password": "admin-pass"})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid username or password"}
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"username": "alice"}', "application/json"),
        (b'{"username": "alice", "password": 1}', "application/json"),
        (b'{"username": null, "password": "alice-pass"}', "application/json"),
        (b"[" * 8000 + b"]" * 8000, "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"username": "alice", "password": "alice-pass"}', "text/plain"),
        (b"username=alice&password=alice-pass", "application/x-www-form-urlencoded"),
    ],
)
async def test_api_login_refuses_a_body_that_is_not_the_json(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    """Anything but a JSON object of two strings is 400 JSON with an error."""
    response = await client.post("/api/login", content=body, headers={"content-type": content_type})
    assert response.status_code == 400
    assert "error" in response.json()
    assert "set-cookie" not in response.headers


async def test_api_login_refuses_a_large_body(client: httpx.AsyncClient) -> None:
    """A JSON body over 16 KiB is refused with 413 JSON."""
    body = b'{"username": "alice", "password": "alice-pass", "pad": "' + b"x" * MAX_BODY + b'"}'
    response = await client.post(
        "/api/login", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "error" in response.json()


# --- APIs behind edgeauth ----------------------------------------------------------


async def test_me_echoes_the_identity_headers(client: httpx.AsyncClient) -> None:
    """/api/protected/me reports the identity edgeauth passed on."""
    response = await client.get("/api/protected/me", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"user_id": "admin", "roles": ["admin", "user"]}


async def test_roles_header_is_split_on_commas(client: httpx.AsyncClient) -> None:
    """Roles are split on ",", trimmed, and empty entries dropped."""
    headers = {"x-user-id": "bob", "x-user-role": " ops , user,,"}
    response = await client.get("/api/protected/me", headers=headers)
    assert response.json()["roles"] == ["ops", "user"]
    response = await client.get("/api/protected/me", headers={"x-user-id": "bob"})
    assert response.json()["roles"] == []


async def test_reports_name_the_caller(client: httpx.AsyncClient) -> None:
    """/api/v1/reports lists reports and names the caller."""
    headers = {"x-user-id": "svc-reporting", "x-user-role": "service"}
    response = await client.get("/api/v1/reports", headers=headers)
    assert response.status_code == 200
    data = response.json()
    assert data["caller"] == "svc-reporting"
    assert data["reports"]
    assert all("id" in report for report in data["reports"])


async def test_admin_users_lists_names_and_roles(client: httpx.AsyncClient) -> None:
    """/api/admin/users lists the demo users with their roles, never a password."""
    response = await client.get("/api/admin/users", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == [
        {"username": "alice", "roles": ["user"]},
        {"username": "admin", "roles": ["admin", "user"]},
    ]


async def test_public_hello(client: httpx.AsyncClient) -> None:
    """/public/hello needs nobody."""
    response = await client.get("/public/hello")
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}


@pytest.mark.parametrize(
    "path", ["/dashboard", "/api/protected/me", "/api/v1/reports", "/api/admin/users"]
)
@pytest.mark.parametrize("headers", [{}, {"x-user-id": ""}, {"x-user-role": "admin"}])
async def test_protected_handlers_never_invent_an_identity(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    """Reached without x-user-id (a policy mistake), a protected handler answers 500."""
    response = await client.get(path, headers=headers)
    assert response.status_code == 500
    assert response.json() == {"error": "identity header missing"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("GET", "/api/admin"), ("POST", "/api/protected/x")]
)
async def test_unknown_paths_are_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    """Anything else is Starlette's default 404."""
    response = await client.request(method, path, headers=ADMIN)
    assert response.status_code == 404


async def test_no_response_contains_a_password(client: httpx.AsyncClient) -> None:
    """No page, API answer, error or header ever carries a demo password."""
    responses = [
        await client.get("/"),
        await client.get("/", headers=ADMIN),
        await client.get("/login"),
        await client.get("/dashboard", headers=ADMIN),
        await client.get("/api/protected/me", headers=ADMIN),
        await client.get("/api/v1/reports", headers=ADMIN),
        await client.get("/api/admin/users", headers=ADMIN),
        await client.get("/public/hello"),
        await client.post("/login", data={"username": "admin", "password": "alice-pass"}),
        await client.post("/login", data={"username": "admin", "password": "admin-pass"}),
        await client.post("/api/login", json={"username": "alice", "password": "admin-pass"}),
        await client.post("/api/login", json={"username": "alice", "password": "alice-pass"}),
        await client.post("/logout"),
    ]
    for response in responses:
        seen = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in (*PASSWORDS, SECRET.decode()):
            assert secret not in seen
