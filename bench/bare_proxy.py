"""The baseline: a bare ASGI reverse proxy with one pooled aiohttp session and no
other work. It is the ceiling for proxying in Python on the same stack edgeauth
serve uses (uvicorn, uvloop, httptools, aiohttp).

    BENCH_UPSTREAM=http://127.0.0.1:9000 uvicorn bench.bare_proxy:app
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from yarl import URL

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9000")
HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"}
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    auto_decompress=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _session is not None
    url = URL(UPSTREAM + scope["raw_path"].decode("ascii"), encoded=True)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP]
    async with _session.request(scope["method"], url, headers=headers, allow_redirects=False) as r:
        out = [(k, v) for k, v in r.raw_headers if k.lower() not in HOP]
        await send({"type": "http.response.start", "status": r.status, "headers": out})
        async for chunk in r.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
