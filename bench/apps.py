"""The applications the benchmark serves: a raw ASGI app, the same app verifying
a JWT with PyJWT on every request, the same app behind EdgeAuth, and an app
answering as edgeauth answers a denial.

Each is selected by the environment (see ``bench/run.py``) and served by
uvicorn (uvloop, httptools, one worker, no access log).
"""

from __future__ import annotations

import os
from typing import Any

import jwt

BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The fastest honest ASGI app: a fixed small JSON body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


DENIAL_BODY = b'{"error":"Authentication required","code":"missing_credentials","request_id":"%s"}'
DENIAL_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-request-id", b"0123456789abcdef"),
    (b"www-authenticate", b'Bearer realm="edgeauth"'),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(DENIAL_BODY % b"0123456789abcdef")).encode()),
]


async def denial_shaped_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw app answering what edgeauth answers a request without a
    credential: the same status, headers and body (a request id of the same
    length), and no decision. What the server charges for that answer."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 401, "headers": DENIAL_HEADERS})
    await send({"type": "http.response.body", "body": DENIAL_BODY % b"0123456789abcdef"})


_SECRET = os.environ.get("BENCH_SECRET", "")
_ISSUER = os.environ.get("BENCH_ISSUER", "")
_AUDIENCE = os.environ.get("BENCH_AUDIENCE", "")


async def pyjwt_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw app verifying an HS256 cookie token with PyJWT on every request:
    what a hand-written check in each route costs."""
    if scope["type"] != "http":
        return
    token = ""
    for name, value in scope["headers"]:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, val = pair.strip().partition("=")
                if key == "session":
                    token = val
    try:
        jwt.decode(
            token,
            _SECRET,
            algorithms=["HS256"],
            issuer=_ISSUER,
            audience=_AUDIENCE,
            options={"require": ["exp"]},
        )
    except jwt.PyJWTError:
        await send({"type": "http.response.start", "status": 401, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
        return
    await raw_app(scope, receive, send)


def guarded_app() -> Any:
    """The raw app behind EdgeAuth with the benchmark policy (``BENCH_POLICY``,
    whose ``[audit] file`` receives the denials)."""
    from edgeauth import EdgeAuth, load_policy

    return EdgeAuth(raw_app, policy=load_policy(os.environ["BENCH_POLICY"]))
