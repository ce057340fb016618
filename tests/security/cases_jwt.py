"""JWT attacks: RFC 8725 (JWT best current practices) and the published catalogues.

Every forged token goes where a real one would: the HS256 session cookie
(``/api/protected``, ``/api/admin``), the RS256 partner bearer
(``/api/partner``) or the ES256 bearer (``/api/es``). A token that is not
exactly right is 401 ``invalid_token``; three valid tokens show the
authenticators do accept what they should.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..cases import cookie
from .common import (
    ATTACKER_KEY,
    AUDIENCE,
    ES_KEY,
    ISSUER,
    PARTNER_ISSUER,
    PARTNER_KEY,
    PARTNER_PEM,
    SECRET,
    Attack,
    b64,
    claims,
    es256,
    es_claims,
    hs,
    partner_claims,
    rs,
)

HS256 = {"alg": "HS256", "typ": "JWT"}
RS256 = {"alg": "RS256", "typ": "JWT"}
ES256 = {"alg": "ES256", "typ": "JWT"}
KEY = SECRET.encode()
PROTECTED = b"/api/protected/me"
ADMIN_PATH = b"/api/admin/users"
PARTNER = b"/api/partner/x"
ES = b"/api/es/x"

RFC8725 = "RFC 8725"
CONFUSION = "PortSwigger Web Security Academy, 'JWT algorithm confusion'"
MCLEAN = "T. McLean, 'Critical vulnerabilities in JSON Web Token libraries' (2015)"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64(_raw(header))}.{b64(_raw(payload))}.{signature}"


def _pub_jwk(key: Any) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "n": b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }


def cookie_case(
    id: str,
    token: str,
    source: str,
    *,
    path: bytes = PROTECTED,
    status: int = 401,
    code: str | None = "invalid_token",
    **kw: Any,
) -> Attack:
    """A forged session cookie: 401 invalid_token unless said otherwise."""
    return Attack(id, path, status, headers=(cookie(token),), code=code, source=source, **kw)


def bearer_case(
    id: str,
    token: str,
    source: str,
    *,
    path: bytes = PARTNER,
    status: int = 401,
    code: str | None = "invalid_token",
    **kw: Any,
) -> Attack:
    """A forged bearer token: 401 invalid_token unless said otherwise."""
    headers = (("authorization", f"Bearer {token}"),)
    return Attack(id, path, status, headers=headers, code=code, source=source, **kw)


def _dup(base: dict[str, Any], name: str, value: Any) -> bytes:
    """``base`` as JSON with member ``name`` written a second time, holding ``value``."""
    return _raw(base)[:-1] + b"," + json.dumps(name).encode() + b":" + _raw(value) + b"}"


_DER_SIGNED = ES_KEY.sign(
    f"{b64(_raw(ES256))}.{b64(_raw(es_claims()))}".encode(), ec.ECDSA(hashes.SHA256())
)
_ALICE = hs(HS256, claims())
_ROOT = hs(HS256, claims(sub="root", role=["admin"]))

CASES: tuple[Attack, ...] = (
    # Controls: the right token passes, so every refusal below is the attack's.
    cookie_case(
        "jwt-valid-session",
        _ALICE,
        "RFC 7519 §7.2",
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
    ),
    bearer_case(
        "jwt-valid-rs256",
        rs(RS256, partner_claims()),
        "RFC 7518 §3.3",
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "partner-svc"},
    ),
    bearer_case(
        "jwt-valid-es256",
        es256(ES256, es_claims()),
        "RFC 7518 §3.4",
        path=ES,
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "es-svc"},
    ),
    # alg "none" in every spelling (RFC 8725 §2.1, §3.1).
    *(
        cookie_case(f"jwt-alg-{alg}", _unsigned({"alg": alg, "typ": "JWT"}, claims()), source)
        for alg, source in (
            ("none", f"{RFC8725} §2.1; CVE-2015-9235; {MCLEAN}"),
            ("None", f"{RFC8725} §3.1; CVE-2018-1000531"),
            ("NONE", f"{RFC8725} §3.1; PortSwigger 'JWT attacks' (alg none)"),
            ("nOnE", f"{RFC8725} §3.1; PortSwigger 'JWT attacks'"),
        )
    ),
    cookie_case(
        "jwt-alg-none-keeps-signature",
        hs({"alg": "none"}, claims(sub="root", role=["admin"])),
        f"{RFC8725} §2.1; {MCLEAN}",
        path=ADMIN_PATH,
    ),
    bearer_case(
        "jwt-alg-none-bearer",
        _unsigned({"alg": "none"}, partner_claims()),
        f"{RFC8725} §2.1; CVE-2015-9235",
    ),
    *(
        cookie_case(f"jwt-alg-{name}", hs(header, claims()), f"{RFC8725} §3.1; RFC 7515 §4.1.1")
        for name, header in (
            ("missing", {"typ": "JWT"}),
            ("null", {"alg": None}),
            ("empty", {"alg": ""}),
            ("list", {"alg": ["HS256"]}),
            ("number", {"alg": 256}),
            ("lower-case", {"alg": "hs256"}),
            ("trailing-space", {"alg": "HS256 "}),
            ("nul-suffix", {"alg": "HS256\u0000"}),
        )
    ),
    # HMAC/asymmetric confusion: the public key used as an HMAC secret.
    bearer_case(
        "jwt-hs256-with-public-pem",
        hs(HS256, partner_claims(), PARTNER_PEM),
        f"CVE-2016-10555; CVE-2017-11424 (PyJWT); {CONFUSION}",
    ),
    bearer_case(
        "jwt-hs256-with-public-pem-no-newline",
        hs(HS256, partner_claims(), PARTNER_PEM.rstrip(b"\n")),
        f"CVE-2022-29217 (PyJWT); {CONFUSION}",
    ),
    bearer_case(
        "jwt-hs256-with-public-der",
        hs(
            HS256,
            partner_claims(),
            PARTNER_KEY.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        f"{CONFUSION} (DER form)",
    ),
    bearer_case(
        "jwt-hs256-with-public-jwk",
        hs(HS256, partner_claims(), json.dumps(_pub_jwk(PARTNER_KEY)).encode()),
        f"{CONFUSION} (JWK form)",
    ),
    bearer_case(
        "jwt-hs256-with-pkcs1-pem",
        hs(
            HS256,
            partner_claims(),
            PARTNER_KEY.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
            ),
        ),
        f"{CONFUSION} (PKCS#1 form); CVE-2022-29217",
    ),
    cookie_case(
        "jwt-rs256-for-hmac-authenticator",
        rs(RS256, claims(), ATTACKER_KEY),
        f"{RFC8725} §3.1; {CONFUSION}",
    ),
    bearer_case(
        "jwt-es256-for-rs256-authenticator",
        es256(ES256, partner_claims()),
        f"{RFC8725} §3.1 (algorithm allow-list)",
    ),
    cookie_case(
        "jwt-hs384-not-allowed", hs({"alg": "HS384"}, claims(), KEY, "384"), RFC8725 + " §3.1"
    ),
    cookie_case(
        "jwt-hs512-not-allowed", hs({"alg": "HS512"}, claims(), KEY, "512"), RFC8725 + " §3.1"
    ),
    bearer_case("jwt-ps256-not-allowed", rs({"alg": "PS256"}, partner_claims()), RFC8725 + " §3.1"),
    bearer_case(
        "jwt-rs256-attacker-key",
        rs(RS256, partner_claims(), ATTACKER_KEY),
        "RFC 7515 §5.2 (signature validation)",
    ),
    # kid is a selector, never a path, a query or a command (RFC 8725 §2.9, §3.10).
    *(
        cookie_case(f"jwt-kid-{name}", hs({**HS256, "kid": kid}, claims(), key), source)
        for name, kid, key, source in (
            (
                "traversal-dev-null",
                "../../../../../../dev/null",
                b"",
                "PortSwigger 'JWT attacks' (kid path traversal)",
            ),
            ("absolute-dev-null", "/dev/null", b"", f"{RFC8725} §2.9"),
            ("proc-environ", "../../../../proc/self/environ", b"x", f"{RFC8725} §2.9"),
            (
                "sql-union",
                "x' UNION SELECT 'attacker-secret' -- ",
                b"attacker-secret",
                f"{RFC8725} §2.9 (SQL injection)",
            ),
            ("sql-tautology", "' OR '1'='1", b"", f"{RFC8725} §2.9"),
            ("command", "key.pem|id", b"", f"{RFC8725} §2.9 (command injection)"),
            ("url", "http://127.0.0.1:1/key", b"", f"{RFC8725} §3.10"),
        )
    ),
    cookie_case(
        "jwt-kid-number", hs({**HS256, "kid": 1}, claims()), "RFC 7515 §4.1.4 (kid is a string)"
    ),
    cookie_case(
        "jwt-kid-ignored-real-secret-still-verifies",
        hs({**HS256, "kid": "../../../../dev/null"}, claims()),
        f"{RFC8725} §3.10 (kid only selects among configured keys)",
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "alice"},
    ),
    # Keys carried by the token itself (RFC 7515 §4.1.2-4.1.6; RFC 8725 §3.10).
    bearer_case(
        "jwt-embedded-jwk-attacker",
        rs({**RS256, "jwk": _pub_jwk(ATTACKER_KEY)}, partner_claims(), ATTACKER_KEY),
        "CVE-2018-0114 (node-jose embedded jwk); PortSwigger 'JWT attacks' (jwk)",
    ),
    bearer_case(
        "jwt-embedded-jwk-real-signature",
        rs({**RS256, "jwk": _pub_jwk(PARTNER_KEY)}, partner_claims()),
        f"{RFC8725} §3.10; docs/policy.md (jwk refused)",
    ),
    bearer_case(
        "jwt-jku-attacker",
        rs({**RS256, "jku": "https://attacker.example/jwks.json"}, partner_claims(), ATTACKER_KEY),
        "PortSwigger 'JWT attacks' (jku); RFC 7515 §4.1.2",
    ),
    bearer_case(
        "jwt-jku-real-signature",
        rs({**RS256, "jku": "https://attacker.example/jwks.json"}, partner_claims()),
        f"{RFC8725} §3.10",
    ),
    bearer_case(
        "jwt-x5u-attacker",
        rs({**RS256, "x5u": "https://attacker.example/cert.pem"}, partner_claims(), ATTACKER_KEY),
        "RFC 7515 §4.1.5; PortSwigger 'JWT attacks'",
    ),
    bearer_case(
        "jwt-x5c-attacker",
        rs({**RS256, "x5c": [b64(b"not a certificate")]}, partner_claims(), ATTACKER_KEY),
        "RFC 7515 §4.1.6; CVE-2018-0114 class",
    ),
    cookie_case(
        "jwt-embedded-oct-jwk",
        hs({**HS256, "jwk": {"kty": "oct", "k": b64(b"attacker")}}, claims(), b"attacker"),
        "CVE-2018-0114 class (symmetric key in the header)",
    ),
    # crit names extensions the verifier must understand (RFC 7515 §4.1.11).
    cookie_case("jwt-crit-exp", hs({**HS256, "crit": ["exp"]}, claims()), "RFC 7515 §4.1.11"),
    cookie_case(
        "jwt-crit-b64",
        hs({**HS256, "b64": False, "crit": ["b64"]}, claims()),
        "RFC 7797 §6 (unencoded payload); RFC 7515 §4.1.11",
    ),
    cookie_case("jwt-crit-empty", hs({**HS256, "crit": []}, claims()), "RFC 7515 §4.1.11"),
    # Time (RFC 7519 §4.1.4-4.1.6).
    cookie_case("jwt-expired", hs(HS256, claims(exp=1)), "RFC 7519 §4.1.4"),
    cookie_case(
        "jwt-expired-recently", hs(HS256, claims(exp=claims()["iat"] - 1)), "RFC 7519 §4.1.4"
    ),
    cookie_case("jwt-exp-missing", hs(HS256, claims(exp=None)), f"{RFC8725} §3.10; docs/policy.md"),
    cookie_case("jwt-exp-string", hs(HS256, claims(exp="9999999999")), "RFC 7519 §2 (NumericDate)"),
    cookie_case("jwt-exp-true", hs(HS256, claims(exp=True)), "RFC 7519 §2 (NumericDate)"),
    cookie_case(
        "jwt-exp-infinite",
        hs(HS256, _raw(claims(exp=None))[:-1] + b',"exp":1e400}'),
        "RFC 7519 §2; RFC 8259 §6 (numbers)",
    ),
    cookie_case(
        "jwt-exp-nan",
        hs(HS256, _raw(claims(exp=None))[:-1] + b',"exp":NaN}'),
        "RFC 8259 §6 (NaN is not JSON)",
    ),
    cookie_case("jwt-nbf-future", hs(HS256, claims(nbf=claims()["iat"] + 600)), "RFC 7519 §4.1.5"),
    cookie_case("jwt-nbf-string", hs(HS256, claims(nbf="0")), "RFC 7519 §4.1.5"),
    cookie_case("jwt-iat-future", hs(HS256, claims(iat=claims()["iat"] + 600)), "RFC 7519 §4.1.6"),
    # Issuer and audience (RFC 8725 §3.8, §3.9).
    *(
        cookie_case(f"jwt-iss-{name}", hs(HS256, claims(iss=iss)), f"{RFC8725} §3.8; {source}")
        for name, iss, source in (
            ("foreign", "https://evil.example", "RFC 7519 §4.1.1"),
            ("extended", ISSUER + ".evil.example", "RFC 7519 §4.1.1"),
            ("substring", ISSUER[:-1], "CVE-2024-53861 (PyJWT partial iss match)"),
            ("list", [ISSUER], "CVE-2024-53861"),
            ("missing", None, "RFC 7519 §4.1.1"),
            ("partner", PARTNER_ISSUER, f"{RFC8725} §2.8 (cross-JWT confusion)"),
        )
    ),
    cookie_case(
        "jwt-partner-token-in-session-cookie",
        rs(RS256, partner_claims()),
        f"{RFC8725} §2.8 (cross-JWT confusion)",
    ),
    *(
        cookie_case(
            f"jwt-aud-{name}", hs(HS256, claims(aud=aud)), f"{RFC8725} §3.9; RFC 7519 §4.1.3"
        )
        for name, aud in (
            ("foreign", "other-api"),
            ("missing", None),
            ("list-without-ours", ["a", "b"]),
            ("number", 1),
            ("object", {AUDIENCE: True}),
            ("list-of-non-strings", [1, 2]),
            ("trailing-space", AUDIENCE + " "),
            ("prefix", AUDIENCE[:4]),
        )
    ),
    cookie_case(
        "jwt-aud-list-with-ours",
        hs(HS256, claims(aud=["other-api", AUDIENCE])),
        "RFC 7519 §4.1.3 (one of the audiences)",
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "alice"},
    ),
    # Claims of the wrong type or shape (RFC 7519 §4.1.2; CWE-113 for headers).
    *(
        cookie_case(f"jwt-claim-{name}", hs(HS256, claims(**change)), source)
        for name, change, source in (
            ("sub-number", {"sub": 1}, "RFC 7519 §4.1.2 (StringOrURI)"),
            ("sub-empty", {"sub": ""}, "RFC 7519 §4.1.2"),
            ("sub-missing", {"sub": None}, "RFC 7519 §4.1.2"),
            ("sub-object", {"sub": {"id": "root"}}, "RFC 7519 §4.1.2"),
            ("sub-crlf", {"sub": "alice\r\nx-user-role: admin"}, "CWE-113 (header injection)"),
            ("sub-nul", {"sub": "alice\u0000root"}, "CWE-158"),
            ("role-object", {"role": {"admin": True}}, "CWE-843 (type confusion)"),
            ("role-nested-list", {"role": [["admin"]]}, "CWE-843"),
            ("role-number", {"role": 1}, "CWE-843"),
            ("role-with-separator", {"role": "user,admin"}, "CWE-113 (role list injection)"),
            ("role-control", {"role": ["user\nadmin"]}, "CWE-113"),
        )
    ),
    # Not admin, and not a role at all: the credential is invalid (401) before
    # it is insufficient (403), on the admin rule as on any other.
    cookie_case(
        "jwt-role-with-separator-is-not-admin",
        hs(HS256, claims(role="user,admin")),
        "CWE-113; CWE-863",
        path=ADMIN_PATH,
    ),
    cookie_case(
        "jwt-role-case-is-not-admin",
        hs(HS256, claims(role=["Admin", "ADMIN"])),
        "CWE-178; CWE-863",
        path=ADMIN_PATH,
        status=403,
        code="forbidden",
    ),
    cookie_case(
        "jwt-non-ascii-subject-is-encoded",
        hs(HS256, claims(sub="ålice%")),
        "RFC 9110 §5.5 (field values); RFC 3986 §2.1",
        status=200,
        code=None,
        forwarded=True,
        upstream_has={"x-user-id": "%C3%A5lice%25"},
    ),
    # Duplicate members: parsers disagree on which wins (RFC 7515 §5.2, RFC 8725 §2.6).
    cookie_case(
        "jwt-duplicate-role",
        hs(HS256, _dup(claims(), "role", ["admin"])),
        "RFC 7515 §5.2; RFC 7519 §4; CVE-2022-39227 class",
        path=ADMIN_PATH,
    ),
    cookie_case(
        "jwt-duplicate-sub",
        hs(HS256, _dup(claims(), "sub", "root")),
        "RFC 7519 §4 (duplicate claim names)",
    ),
    cookie_case(
        "jwt-duplicate-role-escaped-name",
        hs(HS256, _raw(claims())[:-1] + b',"r\\u006fle":["admin"]}'),
        "RFC 8259 §4 (names compared after unescaping); RFC 7515 §5.2",
        path=ADMIN_PATH,
    ),
    cookie_case(
        "jwt-duplicate-alg",
        hs(b'{"alg":"none","alg":"HS256"}', claims()),
        "RFC 7515 §5.2; " + RFC8725 + " §2.1",
    ),
    # Encoding and structure (RFC 7515 §2, §7.1).
    cookie_case("jwt-padded-base64", _ALICE.replace(".", "=.", 1), "RFC 7515 §2 (no padding)"),
    cookie_case(
        "jwt-standard-base64",
        "+/" + _ALICE,
        "RFC 7515 §2 (base64url alphabet)",
    ),
    cookie_case("jwt-two-parts", _ALICE.rpartition(".")[0], "RFC 7515 §7.1"),
    cookie_case(
        "jwt-signature-stripped", _ALICE.rpartition(".")[0] + ".", f"{RFC8725} §2.1; CVE-2020-28042"
    ),
    cookie_case("jwt-signature-truncated", _ALICE[:-2], "RFC 7515 §5.2"),
    cookie_case("jwt-jwe-shaped", _ALICE + ".x.y", "RFC 7516 §7.1 (five parts)"),
    cookie_case(
        "jwt-signature-spliced",
        _ROOT.rpartition(".")[0] + "." + _ALICE.rpartition(".")[2],
        "RFC 7515 §5.2",
        path=ADMIN_PATH,
    ),
    cookie_case(
        "jwt-payload-swapped",
        _ALICE.partition(".")[0] + "." + _ROOT.split(".")[1] + "." + _ALICE.split(".")[2],
        "RFC 7515 §5.2",
        path=ADMIN_PATH,
    ),
    cookie_case("jwt-payload-array", hs(HS256, b"[1,2]"), "RFC 7519 §7.2 step 10"),
    cookie_case("jwt-payload-null", hs(HS256, b"null"), "RFC 7519 §7.2"),
    cookie_case("jwt-header-array", hs(b'["HS256"]', claims()), "RFC 7515 §5.2 step 3"),
    cookie_case(
        "jwt-payload-bom", hs(HS256, b"\xef\xbb\xbf" + _raw(claims())), "RFC 8259 §8.1 (no BOM)"
    ),
    cookie_case(
        "jwt-payload-utf16",
        hs(HS256, _raw(claims()).decode().encode("utf-16")),
        "RFC 7519 §7.2 (UTF-8)",
    ),
    cookie_case(
        "jwt-oversized",
        hs(HS256, claims(pad="x" * 9000)),
        "docs/policy.md (8 KiB); CWE-400",
    ),
    # Weak keys (RFC 8725 §2.2, §3.5).
    cookie_case("jwt-weak-secret", hs(HS256, claims(), b"secret"), f"{RFC8725} §3.5"),
    cookie_case("jwt-empty-secret", hs(HS256, claims(), b""), f"{RFC8725} §3.5; CVE-2019-7644"),
    # Psychic signatures and other ECDSA forms (RFC 8725 §2.5).
    bearer_case(
        "jwt-es256-psychic-zero",
        es256(ES256, es_claims(sub="root"), bytes(64)),
        "CVE-2022-21449 ('psychic signatures', r = s = 0)",
        path=ES,
    ),
    bearer_case(
        "jwt-es256-psychic-order",
        es256(ES256, es_claims(sub="root"), P256_ORDER.to_bytes(32, "big") * 2),
        "CVE-2022-21449 (r = s = n)",
        path=ES,
    ),
    bearer_case(
        "jwt-es256-empty-signature",
        es256(ES256, es_claims(), b""),
        f"{RFC8725} §2.5; CVE-2020-28042",
        path=ES,
    ),
    bearer_case(
        "jwt-es256-der-signature",
        f"{b64(_raw(ES256))}.{b64(_raw(es_claims()))}.{b64(_DER_SIGNED)}",
        "RFC 7518 §3.4 (raw r||s, not DER)",
        path=ES,
    ),
    bearer_case(
        "jwt-es256-short-signature",
        es256(ES256, es_claims(), bytes(32)),
        "RFC 7518 §3.4 (64 octets)",
        path=ES,
    ),
    # A token read from anywhere but its configured place is no credential.
    Attack(
        "jwt-session-as-bearer",
        PROTECTED,
        401,
        headers=(("authorization", f"Bearer {_ALICE}"),),
        code="missing_credentials",
        source=f"{RFC8725} §2.8; docs/policy.md ('from')",
    ),
    Attack(
        "jwt-session-in-other-header",
        PROTECTED,
        401,
        headers=(("x-session", _ALICE), ("x-access-token", _ALICE)),
        code="missing_credentials",
        source="docs/policy.md ('from')",
    ),
    Attack(
        "jwt-session-in-query",
        PROTECTED + b"?session=" + _ALICE.encode(),
        401,
        code="missing_credentials",
        source="RFC 6750 §2.3, §5.3 (no tokens in the URI)",
    ),
)
