"""Shared test helpers: policies on disk, tokens, an echo app, a raw ASGI driver,
and stand-ins that work in the plain and the mypyc-compiled build alike."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeauth import EdgeAuth, Engine, load_policy
from edgeauth.authn.jwt import JwtAuthenticator
from edgeauth.model import Outcome, RequestView
from edgeauth.policy import Policy

SECRET = "test-session-secret-that-is-long-enough-0123456789"
ISSUER = "https://issuer.test"
AUDIENCE = "edge-api"
API_KEY = "eak_test-reporting-key-0123456789abcdefghijklmnopqrstu"
ADMIN_KEY = "eak_test-admin-key-0123456789abcdefghijklmnopqrstuvwxy"

KEYS_FILE = f"""
[[keys]]
id = "reporting"
sha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"
subject = "svc-reporting"
roles = ["service"]
scopes = ["reports:read"]

[[keys]]
id = "admin-key"
sha256 = "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"
subject = "svc-admin"
roles = ["admin"]
scopes = ["reports:read", "reports:write"]
"""

# The policy of DESIGN.md's example app (rate limit and JWKS partner left out:
# they have tests of their own), used by most middleware tests.
SEED_POLICY = f"""
[authenticators.session]
type = "jwt"
from = "cookie:session"
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
roles_claim = "role"

[authenticators.keys]
type = "api_key"
from = ["bearer", "header:x-api-key"]
keys_file = "api-keys.toml"

[[rules]]
id = "admin"
match = "/api/admin/**"
kind = "api"
authenticate = ["session"]
require.roles = ["admin"]

[[rules]]
id = "protected"
match = "/api/protected/**"
kind = "api"
authenticate = ["session"]

[[rules]]
id = "v1"
match = "/api/v1/**"
kind = "api"
authenticate = ["keys", "session"]
cors = {{ origins = ["https://app.example.com"], credentials = true }}

[[rules]]
id = "login"
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
id = "public"
match = ["/", "/login", "/public/**"]
public = true

[default]
action = "deny"
"""


def write_policy(folder: Path, text: str = SEED_POLICY, keys: str = KEYS_FILE) -> Path:
    (folder / "api-keys.toml").write_text(keys, encoding="utf-8")
    path = folder / "edgeauth.toml"
    path.write_text(text, encoding="utf-8")
    return path


def session_token(
    sub: str = "alice",
    role: Any = ("user",),
    *,
    secret: str = SECRET,
    lifetime: int = 3600,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "role": list(role) if isinstance(role, tuple) else role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering with what it received, as JSON."""
    if scope["type"] == "lifespan":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    identity = scope.get("edgeauth")
    payload = {
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "subject": identity.subject if identity else None,
        "body_length": len(body),
    }
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"access-control-allow-origin", b"*"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def guarded(folder: Path, text: str = SEED_POLICY, app: Any = echo_app, **kwargs: Any) -> EdgeAuth:
    return EdgeAuth(app, policy=load_policy(write_policy(folder, text)), **kwargs)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    called: bool = False

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawRequest:
    method: str = "GET"
    raw_path: bytes = b"/"
    query: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    client: tuple[str, int] | None = ("127.0.0.1", 5000)
    body: bytes = b""
    scheme: str = "http"
    extra: Mapping[str, Any] = field(default_factory=dict)


async def call(app: Any, request: RawRequest | None = None, **kwargs: Any) -> Response:
    """Drive an ASGI app with an exact scope (no client-side normalization)."""
    req = request or RawRequest(**kwargs)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": req.method,
        "scheme": req.scheme,
        "path": req.raw_path.decode("latin-1"),
        "raw_path": req.raw_path,
        "query_string": req.query,
        "root_path": "",
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in req.headers],
        "client": req.client,
        "server": ("127.0.0.1", 8080),
        **req.extra,
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": req.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in start.get("headers", [])]
    return Response(start["status"], headers, body)


class RecordingAudit:
    """An audit sink that keeps events in memory."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))


class SpyEngine:
    """A real engine that keeps every view it was asked to decide.

    It holds the engine rather than subclassing it (a compiled class cannot be
    subclassed) and offers only ``evaluate``, all a forward-auth endpoint calls:
    any other use fails loudly.
    """

    def __init__(self, policy: Policy, **kwargs: Any) -> None:
        self.engine = Engine(policy, **kwargs)
        self.views: list[RequestView] = []

    async def evaluate(self, view: RequestView) -> Outcome:
        self.views.append(view)
        return await self.engine.evaluate(view)


class BrokenKeys:
    """A JWT key provider with a bug: every call raises RuntimeError(``message``)."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def key_for(self, kid: str | None, alg: str, now: float) -> tuple[Any, object]:
        raise RuntimeError(self.message)

    def key_valid(self, tag: object) -> bool:
        raise RuntimeError(self.message)

    async def aclose(self) -> None:
        """Nothing to release."""


def break_verification(
    monkeypatch: pytest.MonkeyPatch, authenticator: object, message: str
) -> None:
    """Make every JWT verification by ``authenticator`` raise RuntimeError(``message``):
    a bug inside the decision, not a bad credential.

    The fault is in the key provider (an attribute typed by a protocol, so it can
    be replaced in the compiled build too, where methods cannot). A token the
    verified-token cache holds never reaches it: send one minted for the test.
    """
    assert isinstance(authenticator, JwtAuthenticator)
    monkeypatch.setattr(authenticator, "_keys", BrokenKeys(message))


def self_signed(folder: Path, stem: str = "tls") -> Path:
    """A self-signed certificate for 127.0.0.1 (``STEM.crt``) and its key
    (``STEM.key``) in ``folder``; the certificate's path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / f"{stem}.crt"
