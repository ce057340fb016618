"""``edgeauth demo``: the seed's example app behind edgeauth, on 127.0.0.1:8080.

Everything the demo needs is made fresh in a temporary folder: a session
secret (handed over through the environment, as ``${VAR}`` in the policy
shows), an API keys file holding one key's digest, and a partner's ES256 key
pair whose public half the policy trusts for Bearer tokens.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..authn.apikey import new_key
from ..config import load_policy
from ..middleware import EdgeAuth
from .app import DEMO_USERS, create_app

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


def prepare_demo(folder: Path) -> DemoSetup:
    """Write the demo's policy, keys file and partner key into ``folder``."""
    secret = secrets.token_urlsafe(48)
    api_key, entry = new_key(subject="svc-reporting", roles=["service"], scopes=["reports:read"])
    (folder / "api-keys.toml").write_text(entry, encoding="utf-8")
    partner_key = ec.generate_private_key(ec.SECP256R1())
    pem = partner_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "partner.pem").write_bytes(pem)
    policy_file = folder / "edgeauth.toml"
    policy_file.write_text(
        POLICY.format(
            secret_var=SECRET_VAR, issuer=ISSUER, partner_issuer=PARTNER_ISSUER, audience=AUDIENCE
        ),
        encoding="utf-8",
    )
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
    return DemoSetup(folder, policy_file, secret, api_key, partner_token, alice_session)


def _banner(setup: DemoSetup, base: str) -> str:
    users = "\n".join(
        f"    {u.username:<6} password {u.password:<11} roles {', '.join(u.roles)}"
        for u in DEMO_USERS
    )
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

  Audit events for every denial are printed below. Ctrl-C stops the demo.
"""


def run_demo(*, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the demo in the foreground until Ctrl-C."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgeauth-demo-") as tmp:
        setup = prepare_demo(Path(tmp))
        os.environ[SECRET_VAR] = setup.session_secret
        upstream = create_app(
            session_secret=setup.session_secret.encode(), issuer=ISSUER, audience=AUDIENCE
        )
        app = EdgeAuth(upstream, policy=load_policy(setup.policy_file))
        shown = f"[{host}]" if ":" in host else host
        print(_banner(setup, f"http://{shown}:{port}"), flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
