"""Test helpers for JWTs: a real JWKS server on 127.0.0.1, keys and a token minter.

The server is aiohttp.web on an ephemeral port; tests steer it through plain
attributes: ``document`` (served as JSON), ``status``, ``headers``, ``body`` (raw
bytes served instead of the document), ``delay`` (seconds before answering, cut
short when the server closes) and ``chunked`` (no Content-Length). ``fetches``
counts the requests for the key set and ``arrived`` is set by the first one;
``/moved`` redirects to the key set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

ALGORITHMS = get_default_algorithms()
JWKS_PATH = "/jwks.json"


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose answers a test controls."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document: dict[str, Any] = document if document is not None else {"keys": []}
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.delay = 0.0
        self.chunked = False
        self.paths: list[str] = []
        self.base = ""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()
        self._closing = asyncio.Event()

    @property
    def fetches(self) -> int:
        return self.paths.count(JWKS_PATH)

    async def start(self) -> JwksServer:
        app = web.Application()
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_get("/moved", self._moved)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + JWKS_PATH
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> JwksServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        self.arrived.set()
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)
        body = self.body if self.body is not None else json.dumps(self.document).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        if not self.chunked:
            return web.Response(status=self.status, body=body, headers=headers)
        response = web.StreamResponse(status=self.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 1024):
            await response.write(body[start : start + 1024])
        await response.write_eof()
        return response

    async def _moved(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        raise web.HTTPFound(JWKS_PATH)


@contextlib.contextmanager
def served_in_thread(server: JwksServer) -> Iterator[JwksServer]:
    """Run ``server`` on its own event loop in a thread (for tests that run several loops)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(
    payload: dict[str, Any] | bytes,
    key: Any,
    alg: str,
    *,
    kid: str | None = None,
    header: dict[str, Any] | bytes | None = None,
) -> str:
    """A compact JWS signed with PyJWT's algorithm object for ``alg``.

    ``header`` or ``payload`` given as bytes are used verbatim (malformed JSON).
    """
    if header is None:
        header = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid is not None else {})
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(raw_header)}.{b64(raw_payload)}"
    signature = ALGORITHMS[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def public_jwk(private_key: Any, kid: Any, **members: Any) -> dict[str, Any]:
    """The public JWK of a cryptography private key, with ``kid`` and extra members."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = ALGORITHMS["RS256"].to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ALGORITHMS["ES256"].to_jwk(public, as_dict=True)
    else:
        jwk = ALGORITHMS["EdDSA"].to_jwk(public, as_dict=True)
    return jwk | ({"kid": kid} if kid is not None else {}) | members


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def new_ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
