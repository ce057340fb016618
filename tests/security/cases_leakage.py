"""Error leakage: no answer edgeauth writes carries a trace, a library's name, an
exception's text, an upstream's words or a secret (CWE-209, CWE-497, CWE-532).

:func:`leaks` is applied by the runners to every answer edgeauth writes, for
every case of every class; the cases here are the requests most likely to
drag an internal message out: parse errors deep in the token, the path and
the headers.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..cases import ALICE, cookie
from .common import (
    ADMIN_KEY,
    API_KEY,
    PROXY_RAW_BYTES,
    SECRET,
    Attack,
    b64,
    claims,
    hs,
    refused,
)

# Words that only an exception, a stack trace or a library's own error page
# would put in an answer.
MARKERS = (
    "Traceback",
    'File "',
    "Exception",
    "Error:",
    "Error(",
    "aiohttp",
    "uvicorn",
    "httptools",
    "llhttp",
    "starlette",
    "pydantic",
    "PyJWT",
    "jwt.",
    "cryptography",
    "python",
    "Python",
    "asyncio",
    "yarl",
    "site-packages",
    "/work/",
    "Errno",
    "errno",
    "Connection refused",
    "UnicodeDecodeError",
    "JSONDecodeError",
    "Expecting value",
    "codec",
    "KeyError",
    "ValueError",
    "TypeError",
    "RuntimeError",
    "InvalidSignature",
    "DecodeError",
    "line 1 column",
)
# Secrets of the test deployment: never in an answer or an audit event.
SECRETS = (SECRET, API_KEY, ADMIN_KEY)


def leaks(text: str, credentials: Iterable[str] = (), *, markers: bool = True) -> list[str]:
    """What ``text`` gives away: markers of internals, secrets, and any of
    ``credentials`` (the ones the request carried)."""
    found = [m for m in MARKERS if m in text] if markers else []
    found += [f"secret {s[:6]}..." for s in SECRETS if s in text]
    found += [f"credential {c[:6]}..." for c in credentials if c in text]
    return found


NOT_JSON = ".".join(b64(part) for part in (b'{"alg":"HS256"}', b"not json {", b"x" * 32))
NESTED = hs({"alg": "HS256"}, b'{"sub":' + b"[" * 3000 + b"]" * 3000 + b"}")

CASES: tuple[Attack, ...] = (
    Attack(
        "leak-payload-not-json",
        b"/api/protected/me",
        401,
        headers=(cookie(NOT_JSON),),
        code="invalid_token",
        source="CWE-209; OWASP ASVS V7.4.1 (generic error messages)",
    ),
    Attack(
        "leak-recursion-in-token",
        b"/api/protected/me",
        401,
        headers=(cookie(NESTED),),
        code="invalid_token",
        source="CWE-674 (uncontrolled recursion); CWE-209",
    ),
    Attack(
        "leak-bad-base64",
        b"/api/protected/me",
        401,
        headers=(cookie("eyJhbGciOiJIUzI1NiJ9.e30!!.sig$"),),
        code="invalid_token",
        source="CWE-209; RFC 7515 §2 (base64url)",
    ),
    Attack(
        "leak-invalid-utf8-in-path",
        b"/public/%c3%28%ff",
        400,
        code="bad_request",
        source="CWE-209 (decoder messages); RFC 3629 §3",
    ),
    Attack(
        "leak-unknown-api-key-not-echoed",
        b"/api/v1/reports",
        401,
        headers=(("x-api-key", "eak_guessed-key-that-must-never-be-echoed-0123"),),
        code="invalid_token",
        source="CWE-532; OWASP ASVS V7.1.1 (no credentials in logs)",
    ),
    Attack(
        "leak-wrong-secret-token-not-echoed",
        b"/api/protected/me",
        401,
        headers=(cookie(hs({"alg": "HS256", "typ": "JWT"}, claims(), b"k" * 32)),),
        code="invalid_token",
        source="CWE-209; CWE-532",
    ),
    Attack(
        "leak-token-in-query-not-logged",
        b"/api/protected/me?access_token=" + ALICE.encode(),
        401,
        code="missing_credentials",
        source="RFC 6750 §5.3 (tokens in URLs get logged); CWE-598",
    ),
    Attack(
        "leak-header-not-utf8",
        b"/public/x",
        200,
        headers=(("x-note", "caf\xe9"),),
        forwarded=True,
        source="CWE-209 (encoding errors)",
        # The proxy's client library would re-encode the value, so it refuses it.
        on={"proxy": refused(400, "bad_request")},
    ),
    Attack(
        "leak-raw-bytes-in-path",
        b"/public/\xe9\xff",
        400,
        code="bad_request",
        source="CWE-209; RFC 3629 §3",
        on=PROXY_RAW_BYTES,
    ),
)
