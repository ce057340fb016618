"""``edgeauth demo``: the seed's example app behind ``edgeauth serve``, on 127.0.0.1:8080.

The app runs as a separate upstream process on an ephemeral 127.0.0.1 port
(``python -m edgeauth.demo.upstream``), and edgeauth's reverse proxy runs in
this process in front of it, exactly as ``edgeauth serve`` would. Ctrl-C stops
both.

Everything the demo needs is made fresh in a temporary folder: a session
secret (handed to both processes through the environment, as ``${VAR}`` in
the policy shows), an API keys file holding one key's digest, and a partner's
ES256 key pair whose public half the policy trusts for Bearer tokens.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..authn.apikey import new_key
from .app import DEMO_USERS

__all__ = ["DemoSetup", "prepare_demo", "run_demo"]

ISSUER = "https://issuer.demo.edgeauth"
PARTNER_ISSUER = "https://partner.demo.edgeauth/"
AUDIENCE = "edge-api"
SECRET_VAR = "EDGEAUTH_DEMO_SESSION_SECRET"

POLICY = """\
# The seed's example app, as an edgeauth policy.
[identity]
headers = {{ "x-user-id" = "subject", "x-user-role" = "roles" }}

[authenticators.session]
type = "jwt"
from = "cookie:session"
algorithms = ["HS256"]
secret = "${{{secret_var}}}"
issuer = "{issuer}"
audience = "{audience}"
roles_claim = "role"

[authenticators.partner]
type = "jwt"
from = "bearer"
algorithms = ["ES256"]
public_key = "partner.pem"
issuer = "{partner_issuer}"
audience = "{audience}"
roles_claim = "role"

[authenticators.keys]
type = "api_key"
from = ["bearer", "header:x-api-key"]
keys_file = "api-keys.toml"

[[rules]]
id = "admin-api"
match = "/api/admin/**"
authenticate = ["session"]
require.roles = ["admin"]

[[rules]]
id = "protected-api"
match = "/api/protected/**"
authenticate = ["session"]

[[rules]]
id = "partner-api"
match = "/api/v1/**"
authenticate = ["keys", "partner"]

[[rules]]
id = "login-api"
match = "/api/login"
methods = ["POST"]
public = true

[[rules]]
id = "dashboard"
match = "/dashboard/**"
kind = "page"
authenticate = ["session"]
login_url = "/login"

[[rules]]
id = "home"
match = "/"
kind = "page"
public = true
authenticate = ["session"]
login_url = "/login"

[[rules]]
id = "public"
match = ["/login", "/logout", "/public/**"]
public = true

[default]
action = "deny"
"""


@dataclass(frozen=True)
class DemoSetup:
    folder: Path
    policy_file: Path
    session_secret: str
    api_key: str
    partner_token: str
    alice_session: str
    cors_origins: tuple[str, ...] = ()


def prepare_demo(
    folder: Path,
    *,
    listen: str | None = None,
    upstream: str | None = None,
    cors_origins: Sequence[str] = (),
) -> DemoSetup:
    """Write the demo's policy, keys file and partner key into ``folder``.

    With ``upstream`` the policy gets a ``[server]`` section (``listen``,
    ``upstream``) for ``edgeauth serve``; ``cors_origins`` may call
    ``/api/protected/**`` from the browser with the session cookie.
    """
    secret = secrets.token_urlsafe(48)
    api_key, entry = new_key(subject="svc-reporting", roles=["service"], scopes=["reports:read"])
    (folder / "api-keys.toml").write_text(entry, encoding="utf-8")
    partner_key = ec.generate_private_key(ec.SECP256R1())
    pem = partner_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "partner.pem").write_bytes(pem)
    policy_file = folder / "edgeauth.toml"
    text = POLICY.format(
        secret_var=SECRET_VAR, issuer=ISSUER, partner_issuer=PARTNER_ISSUER, audience=AUDIENCE
    )
    if cors_origins:
        origins = ", ".join(json.dumps(o) for o in cors_origins)
        cors = f"cors = {{ origins = [{origins}], credentials = true }}\n"
        text = text.replace('match = "/api/protected/**"\n', f'match = "/api/protected/**"\n{cors}')
    if upstream is not None:
        server = f"[server]\nlisten = {json.dumps(listen or '127.0.0.1:8080')}\n"
        text = f"{server}upstream = {json.dumps(upstream)}\n\n{text}"
    policy_file.write_text(text, encoding="utf-8")
    now = int(time.time())
    partner_token = jwt.encode(
        {
            "sub": "partner-app",
            "iss": PARTNER_ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 3600,
        },
        partner_key,
        algorithm="ES256",
    )
    alice_session = jwt.encode(
        {
            "sub": "alice",
            "role": ["user"],
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 3600,
        },
        secret,
        algorithm="HS256",
    )
    return DemoSetup(
        folder, policy_file, secret, api_key, partner_token, alice_session, tuple(cors_origins)
    )


def _banner(setup: DemoSetup, base: str) -> str:
    users = "\n".join(
        f"    {u.username:<6} password {u.password:<11} roles {', '.join(u.roles)}"
        for u in DEMO_USERS
    )
    origins = ", ".join(setup.cors_origins) or "(none)"
    return f"""
edgeauth demo: the example app behind edgeauth at {base}
  policy: {setup.policy_file}

  Open {base}/dashboard in a browser: you land on the sign-in page. Demo users:
{users}

  API key (svc-reporting, role service): {setup.api_key}

  Try it:
    200  curl -i -H 'X-API-Key: {setup.api_key}' {base}/api/v1/reports
    200  curl -i -H 'Authorization: Bearer {setup.partner_token}' {base}/api/v1/reports
    401  curl -i {base}/api/protected/me
    403  curl -i --cookie 'session={setup.alice_session}' {base}/api/admin/users
    302  curl -i {base}/dashboard
    200  curl -i -H 'content-type: application/json' \\
              -d '{{"username":"admin","password":"admin-pass"}}' {base}/api/login

  CORS: pages at {origins} may call {base}/api/protected/**
  with the session cookie (fetch with credentials: "include").

  Audit events for every denial are printed below. Ctrl-C stops the demo.
"""


def run_demo(
    *, host: str = "127.0.0.1", port: int = 8080, cors_origins: Sequence[str] | None = None
) -> None:
    """Run the demo in the foreground until Ctrl-C (or SIGTERM); exits cleanly.

    ``port`` 0 picks a free port. ``cors_origins`` default to
    ``http://127.0.0.1:PORT+1``: a page served there may call
    ``/api/protected/**`` with the session cookie.
    """
    from ..server import serve

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    origins = tuple(cors_origins) if cors_origins else (f"http://{shown}:{port + 1}",)
    # The app's socket is bound and listening before the app starts, so the
    # proxy can connect at once (connections wait in the backlog).
    app_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    app_socket.bind(("127.0.0.1", 0))
    app_socket.listen(2048)
    upstream = f"http://127.0.0.1:{app_socket.getsockname()[1]}"
    with tempfile.TemporaryDirectory(prefix="edgeauth-demo-") as tmp:
        setup = prepare_demo(
            Path(tmp), listen=f"{shown}:{port}", upstream=upstream, cors_origins=origins
        )
        os.environ[SECRET_VAR] = setup.session_secret
        app = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "edgeauth.demo.upstream", "--fd", str(app_socket.fileno())],
            pass_fds=[app_socket.fileno()],
            env={**os.environ, SECRET_VAR: setup.session_secret},
            # Its own session: Ctrl-C reaches this process only, which then
            # stops the app after the proxy has drained.
            start_new_session=True,
        )
        app_socket.close()
        try:
            print(_banner(setup, base), flush=True)
            serve(setup.policy_file, sockets=[listener], log_level="warning")
        finally:
            listener.close()
            _stop(app)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
