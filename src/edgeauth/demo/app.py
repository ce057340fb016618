"""The demo's example app: the seed's app, put behind edgeauth by ``edgeauth demo``.

The app never verifies a token. edgeauth does that at the edge and hands the
identity over in ``x-user-id`` and ``x-user-role`` (roles joined by ","), which
the handlers trust, exactly as the seed's route handlers do. The only credential
work here is minting the session cookie at sign-in.

>>> app = create_app(session_secret=b"s" * 32, issuer="https://issuer.example",
...                  audience="edge-api")
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["DEMO_USERS", "DemoUser", "create_app", "safe_next"]

USER_HEADER = "x-user-id"
ROLES_HEADER = "x-user-role"
MAX_BODY = 16 * 1024
_MAX_NEXT = 2048
_FORM_TYPE = "application/x-www-form-urlencoded"
_JSON_SHAPE = 'Expected a JSON body {"username": "...", "password": "..."}'


@dataclass(frozen=True)
class DemoUser:
    """A demo account. The password stays out of ``repr`` so it never reaches a log."""

    username: str
    password: str = field(repr=False)
    roles: tuple[str, ...]


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "alice-pass", ("user",)),
    DemoUser("admin", "admin-pass", ("admin", "user")),
)

_REPORTS = (
    {"id": "r-2026-q1", "title": "Quarterly revenue", "period": "2026-Q1"},
    {"id": "r-2026-q2", "title": "Quarterly revenue", "period": "2026-Q2"},
)


def safe_next(value: str | None, default: str = "/dashboard") -> str:
    """Return ``value`` when it is a same-site relative path, else ``default``.

    Browsers read ``//host`` and ``/\\host`` as another site and ignore tabs and
    newlines inside URLs (WHATWG URL standard), so those forms, control characters
    and schemes are refused, also after percent-decoding: edgeauth never issues a
    return path holding an encoded ``/``, ``\\`` or control character.

    >>> safe_next("/api/protected/me?x=1"), safe_next("//evil.com")
    ('/api/protected/me?x=1', '/dashboard')
    """
    if not value or len(value) > _MAX_NEXT:
        return default
    text = value
    for _ in range(4):  # each pass undoes one layer of percent-encoding
        if not _is_local_path(text):
            return default
        decoded = unquote(text)
        if decoded == text:
            return value
        text = decoded
    return default  # still encoded after several layers: not a path anyone meant


def _is_local_path(text: str) -> bool:
    if not text.startswith("/") or text.startswith(("//", "/\\")):
        return False
    if "\\" in text or not text.isprintable():  # isprintable() is False for every control
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def create_app(
    *,
    session_secret: bytes,
    issuer: str,
    audience: str,
    users: Sequence[DemoUser] = DEMO_USERS,
    cookie_name: str = "session",
    session_seconds: int = 3600,
) -> Starlette:
    """Build the demo app; it mints HS256 session cookies edgeauth can verify.

    Raises ValueError for a secret shorter than 32 bytes (RFC 7518 §3.2: the
    HS256 key must be at least as long as the hash) or a non-positive lifetime.
    """
    if len(session_secret) < 32:
        raise ValueError("session_secret must be at least 32 bytes for HS256")
    if session_seconds <= 0:
        raise ValueError("session_seconds must be positive")
    accounts = tuple(users)

    def check_password(username: str, password: str) -> DemoUser | None:
        # Compare with every account, in constant time, so the answer time does
        # not tell which user names exist.
        found = None
        for user in accounts:
            same_name = hmac.compare_digest(_utf8(user.username), _utf8(username))
            same_password = hmac.compare_digest(_utf8(user.password), _utf8(password))
            if same_name and same_password:
                found = user
        return found

    def start_session(request: Request, response: Response, user: DemoUser) -> None:
        now = int(time.time())
        claims = {
            "sub": user.username,
            "role": list(user.roles),
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + session_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, session_secret, algorithm="HS256")
        response.set_cookie(
            cookie_name,
            token,
            max_age=session_seconds,
            path="/",
            secure=_is_https(request),
            httponly=True,
            samesite="lax",
        )

    async def home(request: Request) -> Response:
        who = _identity(request)
        if who is None:
            status = '<p>You are not signed in. <a href="/login">Sign in</a></p>'
        else:
            status = f"<p>Signed in as {_roles_line(*who)}.</p>{_SIGN_OUT}"
        return _page("edgeauth demo", _HOME.format(status=status))

    async def login_form(request: Request) -> Response:
        return _login_page(safe_next(request.query_params.get("next")))

    async def login_submit(request: Request) -> Response:
        if _media_type(request) != _FORM_TYPE:
            return _login_page("/dashboard", error="Send the form URL-encoded.", status=415)
        body = await _read_body(request)
        if body is None:
            return _login_page("/dashboard", error="The form is too large.", status=413)
        form = _parse_form(body)
        if form is None:
            return _login_page("/dashboard", error="The form could not be read.", status=400)
        target = safe_next(form.get("next"))
        username = form.get("username", "")
        user = check_password(username, form.get("password", ""))
        if user is None:
            error = "Invalid username or password."
            return _login_page(target, error=error, username=username, status=401)
        response = RedirectResponse(target, status_code=303)
        start_session(request, response, user)
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(
            cookie_name, path="/", secure=_is_https(request), httponly=True, samesite="lax"
        )
        return response

    async def api_login(request: Request) -> Response:
        # Requiring application/json makes a cross-site fetch send a CORS
        # preflight, so another site cannot sign a browser in silently.
        if _media_type(request) != "application/json":
            return JSONResponse({"error": _JSON_SHAPE}, status_code=400)
        body = await _read_body(request)
        if body is None:
            return JSONResponse({"error": "Request body too large"}, status_code=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return JSONResponse({"error": _JSON_SHAPE}, status_code=400)
        if not isinstance(data, dict) or not all(
            isinstance(data.get(key), str) for key in ("username", "password")
        ):
            return JSONResponse({"error": _JSON_SHAPE}, status_code=400)
        user = check_password(data["username"], data["password"])
        if user is None:
            return JSONResponse({"error": "Invalid username or password"}, status_code=401)
        response = JSONResponse({"user_id": user.username, "roles": list(user.roles)})
        start_session(request, response, user)
        return response

    @_requires_identity
    async def dashboard(request: Request, user_id: str, roles: list[str]) -> Response:
        body = _DASHBOARD.format(who=_roles_line(user_id, roles), sign_out=_SIGN_OUT)
        return _page("Dashboard", body, script=_DASHBOARD_SCRIPT)

    @_requires_identity
    async def me(request: Request, user_id: str, roles: list[str]) -> Response:
        return JSONResponse({"user_id": user_id, "roles": roles})

    @_requires_identity
    async def reports(request: Request, user_id: str, roles: list[str]) -> Response:
        return JSONResponse({"reports": list(_REPORTS), "caller": user_id})

    @_requires_identity
    async def admin_users(request: Request, user_id: str, roles: list[str]) -> Response:
        return JSONResponse([{"username": u.username, "roles": list(u.roles)} for u in accounts])

    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    return Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login_submit, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/api/login", api_login, methods=["POST"]),
            Route("/dashboard", dashboard, methods=["GET"]),
            Route("/api/protected/me", me, methods=["GET"]),
            Route("/api/v1/reports", reports, methods=["GET"]),
            Route("/api/admin/users", admin_users, methods=["GET"]),
            Route("/public/hello", hello, methods=["GET"]),
        ]
    )


# --- identity from edgeauth's headers -------------------------------------------

_Handler = Callable[[Request, str, list[str]], Awaitable[Response]]


def _identity(request: Request) -> tuple[str, list[str]] | None:
    """The identity edgeauth passed on, or None. An empty header means no identity
    (forward-auth sends every identity header, empty when anonymous)."""
    user_id = request.headers.get(USER_HEADER, "")
    if not user_id:
        return None
    roles = [role.strip() for role in request.headers.get(ROLES_HEADER, "").split(",")]
    return user_id, [role for role in roles if role]


def _requires_identity(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run ``handler`` with the identity; without one the policy is wrong, so answer
    500 rather than invent a user."""

    async def endpoint(request: Request) -> Response:
        who = _identity(request)
        if who is None:
            return JSONResponse({"error": "identity header missing"}, status_code=500)
        return await handler(request, *who)

    return endpoint


# --- request bodies ----------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (read no further than that)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _parse_form(body: bytes) -> dict[str, str] | None:
    """Parse an URL-encoded form (the first value of each field), or None if malformed.

    Starlette's ``request.form()`` needs python-multipart even for this encoding.
    """
    try:
        fields = parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=16,
        )
    except ValueError:  # non-ASCII bytes, escapes that are not UTF-8, too many fields
        return None
    return {name: values[0] for name, values in fields.items()}


def _utf8(text: str) -> bytes:
    # JSON may carry lone surrogates; keep them distinct instead of failing.
    return text.encode("utf-8", "surrogatepass")


def _is_https(request: Request) -> bool:
    # X-Forwarded-Proto comes from edgeauth in proxy mode; a forged one only makes
    # the forger's own cookie Secure.
    forwarded = request.headers.get("x-forwarded-proto", "").strip().lower()
    return request.scope.get("scheme") == "https" or forwarded == "https"


# --- pages -------------------------------------------------------------------------

_CSS = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; }
code, pre { font-family: ui-monospace, monospace; background: #f3f4f6; border-radius: 4px; }
code { padding: 0 .25rem; }
pre { padding: .75rem; overflow-x: auto; min-height: 1.5rem; }
table { border-collapse: collapse; }
td { padding: .2rem .8rem .2rem 0; vertical-align: top; }
label { display: block; margin: .6rem 0; }
input { display: block; font: inherit; padding: .3rem; width: 16rem; }
button { font: inherit; padding: .3rem .9rem; cursor: pointer; }
.error { color: #b42318; font-weight: 600; }
form.inline { display: inline; }
"""

_SIGN_OUT = '<form class="inline" method="post" action="/logout"><button>Sign out</button></form>'

_HOME = """<h1>edgeauth demo</h1>
<p>This small app sits behind edgeauth. It never checks a token itself: edgeauth
verifies the session cookie, Bearer tokens and API keys at the edge, and passes the
identity on in the <code>x-user-id</code> and <code>x-user-role</code> headers.</p>
{status}
<h2>Pages</h2>
<ul>
<li><a href="/dashboard">/dashboard</a>: signed-in users only; others go to sign-in</li>
<li><a href="/login">/login</a>: the sign-in form</li>
</ul>
<h2>API</h2>
<table>
<tr><td><a href="/api/protected/me"><code>GET /api/protected/me</code></a></td>
<td>who you are (session required; JSON 401 without it)</td></tr>
<tr><td><a href="/api/v1/reports"><code>GET /api/v1/reports</code></a></td>
<td>for services: API key or partner token</td></tr>
<tr><td><a href="/api/admin/users"><code>GET /api/admin/users</code></a></td>
<td>admins only (403 for other users)</td></tr>
<tr><td><a href="/public/hello"><code>GET /public/hello</code></a></td>
<td>public</td></tr>
<tr><td><code>POST /api/login</code></td>
<td>JSON sign-in, rate-limited by edgeauth</td></tr>
</table>"""

_DASHBOARD = """<h1>Dashboard</h1>
<p>Hello, {who}.</p>
<p><button id="call" type="button">Call /api/protected/me</button></p>
<pre id="out" aria-live="polite"></pre>
<p>{sign_out} <a href="/">Home</a></p>"""

_DASHBOARD_SCRIPT = """
document.getElementById("call").addEventListener("click", async () => {
  const out = document.getElementById("out");
  out.textContent = "...";
  try {
    const response = await fetch("/api/protected/me", {headers: {Accept: "application/json"}});
    const text = await response.text();
    let body = text;
    try { body = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
    out.textContent = response.status + " " + response.statusText + "\\n" + body;
  } catch (error) {
    out.textContent = "Request failed: " + error;
  }
});
"""

_LOGIN = """<h1>Sign in</h1>
{error}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Username <input name="username" value="{username}" autocomplete="username"
 required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
 required></label>
<button>Sign in</button>
</form>
<p><a href="/">Home</a></p>"""


def _roles_line(user_id: str, roles: list[str]) -> str:
    shown = ", ".join(roles) if roles else "no roles"
    return f"<strong>{html.escape(user_id)}</strong> ({html.escape(shown)})"


def _login_page(
    target: str, *, error: str = "", username: str = "", status: int = 200
) -> HTMLResponse:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _LOGIN.format(error=message, next=html.escape(target), username=html.escape(username))
    return _page("Sign in", body, status=status)


def _page(title: str, body: str, *, script: str = "", status: int = 200) -> HTMLResponse:
    """A small HTML page; ``body`` must already be escaped. A per-response nonce lets
    only this page's own style and script run (CSP Level 3)."""
    nonce = secrets.token_urlsafe(16)
    script_tag = f'<script nonce="{nonce}">{script}</script>' if script else ""
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><style nonce="{nonce}">{_CSS}</style></head>'
        f"<body>{body}{script_tag}</body></html>"
    )
    headers = {
        "content-security-policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cache-control": "no-store",
    }
    return HTMLResponse(document, status_code=status, headers=headers)
