"""Shared pieces of the adversarial suite: the case shape, the policy, keys, a token forger.

An :class:`Attack` is a :class:`tests.cases.Case` (the shape every front-end
runner already understands) plus the published source it reproduces and the
fields whose expected value differs on one front-end. The policy is the seed
policy grown by the rules the attack classes need: an RS256 and an ES256
bearer authenticator (algorithm confusion, psychic signatures), a GET-only
rule (method tricks), a wildcard CORS rule, a host-bound rule and a
catch-all page rule on its own host (open redirects).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..cases import HOST, LISTED, TRUSTED, UNTRUSTED, Case
from ..helpers import ADMIN_KEY, API_KEY, AUDIENCE, ISSUER, KEYS_FILE, SECRET

__all__ = [
    "ADMIN_KEY",
    "API_KEY",
    "ATTACKER_KEY",
    "AUDIENCE",
    "DIALECTS",
    "ES_ISSUER",
    "ES_KEY",
    "ES_PEM",
    "FA_NOT_ORIGIN_FORM",
    "FA_UNRESOLVED",
    "FRONTENDS",
    "HOST",
    "INTERNAL_HOST",
    "ISSUER",
    "LISTED",
    "MIDDLEWARE_SETTINGS",
    "PAGES_HOST",
    "PARTNER_ISSUER",
    "PARTNER_KEY",
    "PARTNER_PEM",
    "POLICY",
    "PROXY_RAW_BYTES",
    "PROXY_SETTINGS",
    "SECRET",
    "TRUSTED",
    "UNTRUSTED",
    "Attack",
    "b64",
    "claims",
    "es256",
    "es_claims",
    "forward_auth_section",
    "hs",
    "partner_claims",
    "refused",
    "rs",
    "write_security_policy",
]

FRONTENDS = ("middleware", "proxy", "forward_auth")
# Caddy stands for Traefik too: both send X-Forwarded-Uri/-Method and get the
# denial as is, through the same code.
DIALECTS = ("nginx", "caddy", "envoy")

PARTNER_ISSUER = "https://partner.test"
ES_ISSUER = "https://es.test"
INTERNAL_HOST = "internal.test"
PAGES_HOST = "pages.test"


@dataclass(frozen=True)
class Attack(Case):
    """A case with its source, and the expectations that differ per front-end.

    ``on`` maps ``"middleware"``, ``"proxy"``, ``"forward_auth"`` or
    ``"forward_auth:DIALECT"`` to the fields to replace there (the dialect's
    entry applies after the front-end's).
    """

    source: str = ""
    on: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def expected(self, frontend: str) -> Attack:
        """This case as ``frontend`` must answer it."""
        changes: dict[str, Any] = dict(self.on.get(frontend.partition(":")[0], {}))
        if ":" in frontend:
            changes.update(self.on.get(frontend, {}))
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def request_headers(self) -> list[tuple[str, str]]:
        """The headers on the wire: the default Host and Content-Length unless the
        case sends its own."""
        headers = super().request_headers
        own = {n.lower() for n, _ in self.headers}
        if "host" in own:
            headers = headers[1:]
        if "content-length" in own and len(headers) > len(self.headers):
            headers = headers[:-1]  # the one Case added
        return headers


# Keys ---------------------------------------------------------------------------

PARTNER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PARTNER_PEM = PARTNER_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
ES_KEY = ec.generate_private_key(ec.SECP256R1())
ES_PEM = ES_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
# An attacker's own key pair, for tokens that carry their key with them.
ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Tokens ---------------------------------------------------------------------------


def b64(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(part: Mapping[str, Any] | bytes) -> str:
    raw = part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode()
    return b64(raw)


def claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a valid session for alice (role user); ``None`` removes a claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "alice",
        "role": ["user"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def hs(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: bytes = SECRET.encode(),
    bits: str = "256",
) -> str:
    """A compact JWS whose signature is HMAC-SHA``bits`` under ``key``, whatever
    ``header`` claims."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    mac = hmac.new(key, signing_input.encode(), _HASHES[bits]).digest()
    return f"{signing_input}.{b64(mac)}"


def rs(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: rsa.RSAPrivateKey = PARTNER_KEY,
) -> str:
    """A compact JWS signed RSASSA-PKCS1-v1_5 SHA-256 with ``key``."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def es256(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    signature: bytes | None = None,
) -> str:
    """A compact JWS signed ES256 (raw r||s, RFC 7518 §3.4), or carrying ``signature``."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    if signature is None:
        der = ES_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{b64(signature)}"


def partner_claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the RS256 partner authenticator."""
    return claims(**{"iss": PARTNER_ISSUER, "sub": "partner-svc", "role": ["partner"], **overrides})


def es_claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the ES256 authenticator."""
    return claims(**{"iss": ES_ISSUER, "sub": "es-svc", "role": ["es"], **overrides})


# The policy ----------------------------------------------------------------------

POLICY = f"""
[identity]
strip = ["x-internal-flag"]

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

[authenticators.partner]
type = "jwt"
from = "bearer"
algorithms = ["RS256"]
public_key = "partner.pem"
issuer = "{PARTNER_ISSUER}"
audience = "{AUDIENCE}"
roles_claim = "role"

[authenticators.es]
type = "jwt"
from = "bearer"
algorithms = ["ES256"]
public_key = "es.pem"
issuer = "{ES_ISSUER}"
audience = "{AUDIENCE}"

[[rules]]
id = "admin"
match = "/api/admin/**"
authenticate = ["session"]
require.roles = ["admin"]

[[rules]]
id = "protected"
match = "/api/protected/**"
authenticate = ["session"]

[[rules]]
id = "v1"
match = "/api/v1/**"
authenticate = ["keys", "session"]
cors = {{ origins = ["{LISTED}"], credentials = true }}

[[rules]]
id = "login"
match = "/api/login"
methods = ["POST"]
public = true
max_body = 10

[[rules]]
id = "partner"
match = "/api/partner/**"
authenticate = ["partner"]

[[rules]]
id = "es"
match = "/api/es/**"
authenticate = ["es"]

[[rules]]
id = "readonly"
match = "/api/readonly/**"
methods = ["GET"]
public = true

[[rules]]
id = "open"
match = "/api/open/**"
public = true
cors = {{ origins = ["*"] }}

[[rules]]
id = "internal"
match = "/internal/**"
hosts = ["{INTERNAL_HOST}"]
public = true

[[rules]]
id = "dashboard"
match = "/dashboard/**"
kind = "page"
authenticate = ["session"]
login_url = "/login"

[[rules]]
id = "pages"
match = "/**"
hosts = ["{PAGES_HOST}"]
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

# The proxy's limits, small enough that the exhaustion cases stay fast.
PROXY_SETTINGS: Mapping[str, Any] = {
    "trusted_proxies": ["127.0.0.1/32"],
    "max_head_bytes": 16384,
    "max_headers": 100,
    "head_timeout": 1.0,
}
MIDDLEWARE_SETTINGS: Mapping[str, Any] = {"trusted_proxies": ["127.0.0.1/32"]}


def write_security_policy(folder: Path, server: str = "", extra: str = "") -> Path:
    """Write the suite's policy (after ``server``, a ``[server]`` section) and its
    key files into ``folder``; the policy's path."""
    (folder / "partner.pem").write_bytes(PARTNER_PEM)
    (folder / "es.pem").write_bytes(ES_PEM)
    (folder / "api-keys.toml").write_text(KEYS_FILE, encoding="utf-8")
    path = folder / "edgeauth.toml"
    path.write_text(server + POLICY + extra, encoding="utf-8")
    return path


def forward_auth_section(dialect: str) -> str:
    """``[forward_auth]`` for ``dialect``, with 127.0.0.1 as the only gateway."""
    return f'\n[forward_auth]\ndialect = "{dialect}"\ntrusted = ["{TRUSTED}"]\n'


# Expectations that differ on one front-end -------------------------------------


def refused(status: int, code: str) -> dict[str, Any]:
    """The fields of a refusal answered by edgeauth (the app never sees it)."""
    return {
        "status": status,
        "code": code,
        "forwarded": False,
        "response_has": {},
        "response_lacks": (),
    }


# The gateway forwards the path as the client sent it, so forward-auth refuses
# dot and empty segments that the other front-ends resolve (docs/deploy/README.md).
FA_UNRESOLVED: Mapping[str, Mapping[str, Any]] = {"forward_auth": refused(400, "bad_request")}
# A request target that is not origin-form: the gateways' URI header carries it
# as it is (400 from the canonicalizer), Envoy appends it to the endpoint's path
# where it is not below the prefix (403 untrusted_peer).
FA_NOT_ORIGIN_FORM: Mapping[str, Mapping[str, Any]] = {
    "forward_auth": refused(400, "bad_request"),
    "forward_auth:envoy": refused(403, "untrusted_peer"),
}
# llhttp (the proxy's parser) refuses raw bytes outside ASCII in the request
# line, which the canonicalizer would percent-encode (RFC 9112 §3.2: the target
# is ASCII).
PROXY_RAW_BYTES: Mapping[str, Mapping[str, Any]] = {"proxy": refused(400, "bad_request")}
