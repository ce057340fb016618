"""The applications the benchmark serves: a raw ASGI app, the same app verifying
a JWT with PyJWT on every request, the same app behind EdgeAuth, and apps
answering as edgeauth answers a denial (without, then with, its audit line).

Each is selected by the environment (see ``bench/run.py``) and served by
uvicorn (uvloop, httptools, one worker, no access log).
"""

from __future__ import annotations

import asyncio
import os
import time
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


_AUDIT_TAIL = (
    '","method":"GET","path":"/api/session/x","rule":"session","outcome":"deny",'
    '"code":"missing_credentials","status":401,"reason":null,"subject":null,'
    '"client":"127.0.0.1","authenticator":null,"key_id":null,"fingerprint":null}'
)
_audit_fd: int | None = None
_audit_lines: list[str] = []
_ids: list[str] = []
_second: list[Any] = [0, ""]


def _write_audit_lines() -> None:
    data = "\n".join(_audit_lines) + "\n"
    _audit_lines.clear()
    assert _audit_fd is not None
    os.write(_audit_fd, data.encode("ascii"))


async def audited_denial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an audited denial can cost under this server, with no
    decision at all: a fresh random request id (drawn 256 at a time), an audit
    line (the same JSON line edgeauth writes, all but the time and request id
    fixed) queued and written to ``BENCH_AUDIT_FILE`` once per event-loop
    turn, and the denial's answer. The ceiling of the denied ratio: what is
    left of the raw app's throughput before anything is decided."""
    global _audit_fd
    if scope["type"] != "http":
        return
    if not _ids:
        raw = os.urandom(8 * 256).hex()
        _ids.extend(raw[i : i + 16] for i in range(0, len(raw), 16))
    rid = _ids.pop()
    now = int(time.time())
    if now != _second[0]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        _second[:] = [now, '{"time":"' + stamp + '","request_id":"']
    if not _audit_lines:
        if _audit_fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            _audit_fd = os.open(os.environ["BENCH_AUDIT_FILE"], flags, 0o640)
        asyncio.get_running_loop().call_soon(_write_audit_lines)
    _audit_lines.append(_second[1] + rid + _AUDIT_TAIL)
    rid_bytes = rid.encode()
    body = DENIAL_BODY % rid_bytes
    headers = [*DENIAL_HEADERS[:2], (b"x-request-id", rid_bytes), *DENIAL_HEADERS[3:]]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
