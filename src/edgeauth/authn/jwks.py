"""Verification keys fetched from an identity provider's JWKS URL (RFC 7517 §5).

:class:`RemoteJwks` is a :class:`~edgeauth.authn.jwt.KeyProvider` with its own
asynchronous cache (PyJWT's ``PyJWKClient`` blocks the event loop):

- the key set is fetched with aiohttp, http or https only, no redirects
  followed, within ``timeout`` seconds and ``max_bytes`` bytes, and kept for the
  response's ``Cache-Control: max-age`` clamped to [``ttl_min``, ``ttl_max``]
  (``default_ttl`` without one);
- one fetch is in flight at a time; concurrent callers await the same one;
- when a fetch fails, the keys already held keep being served, and the next try
  waits ``cooldown`` seconds, so an outage does not turn into a fetch per request;
- a token whose ``kid`` is unknown triggers a refresh (a rotated key), at most
  once per ``cooldown`` seconds; the regular fetches do not start that window,
  so a key published just after a fetch is still picked up at once;
- :class:`~edgeauth.errors.AuthUnavailable` (503) when no key can be had: a cold
  cache and a failed fetch, or an unknown ``kid`` while the last fetch failed
  (the key may well exist; the provider cannot say). An unknown ``kid`` while
  the provider answers is :class:`~edgeauth.errors.InvalidCredentials` (401).

Logs name the URL without its query or user info, never key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

from ..errors import AuthUnavailable, InvalidCredentials
from .jwt import HMAC_ALGORITHMS, KeySet, VerifyKey, check_algorithms, parse_jwks

__all__ = ["RemoteJwks"]

_log = logging.getLogger(__name__)
_ACCEPT = "application/jwk-set+json, application/json"


class _FetchFailed(Exception):
    """One fetch went wrong; the message says how (no key material)."""


class RemoteJwks:
    """The keys published at ``url``, cached and refreshed as described above.

    >>> jwks = RemoteJwks("https://idp.example/.well-known/jwks.json", algorithms=["RS256"])
    >>> jwks.key_valid(object())
    False
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Sequence[str],
        ttl_min: float = 60,
        ttl_max: float = 3600,
        default_ttl: float = 300,
        cooldown: float = 30,
        timeout: float = 5.0,
        max_bytes: int = 512 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("jwks_url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("jwks_url must be an http:// or https:// URL")
        self._algorithms = check_algorithms(algorithms)
        if self._algorithms <= HMAC_ALGORITHMS:
            raise ValueError("a JWKS URL publishes public keys; HS* algorithms need a secret")
        if not 0 < ttl_min <= ttl_max:
            raise ValueError("expected 0 < ttl_min <= ttl_max")
        if default_ttl <= 0 or cooldown < 0 or timeout <= 0 or max_bytes < 1:
            raise ValueError("default_ttl, timeout and max_bytes must be positive, cooldown >= 0")
        self._url = url
        self._where = f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}{parts.path}"
        self._ttl_min, self._ttl_max, self._default_ttl = ttl_min, ttl_max, default_ttl
        self._cooldown = cooldown
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: KeySet | None = None
        self._failed = False  # the last fetch failed
        self._next_fetch = -math.inf  # clock time of the next regular fetch
        self._last_forced: float | None = None  # clock time of the last unknown-kid refresh
        self._inflight: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None, alg: str, now: float) -> tuple[Any, object]:
        """The key for ``kid`` and ``alg``; fetches or refreshes the key set when due.

        Raises InvalidCredentials when no key matches, AuthUnavailable when the
        key set cannot be obtained.
        """
        fetched = self._clock() >= self._next_fetch
        if fetched:
            await self._fetch()
        if self._keys is None:
            raise AuthUnavailable("JWKS cannot be fetched and no keys are cached")
        found = self._keys.find(kid, alg)
        if found is None:
            if fetched:  # the key set was just asked for: asking again says nothing new
                self._raise_no_key()
            found = await self._find_after_refresh(kid, alg)
        return found.key, found.tag

    def key_valid(self, tag: object) -> bool:
        """Whether the key with this tag is in the key set held now."""
        keys = self._keys
        return keys is not None and tag in keys.tags

    async def aclose(self) -> None:
        """Cancel a fetch in flight; each fetch opens and closes its own session."""
        task = self._running()
        self._inflight = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _find_after_refresh(self, kid: str | None, alg: str) -> VerifyKey:
        # An unknown kid may be a key published since the last fetch (rotation).
        # Join a fetch already in flight; otherwise refresh at most once per
        # cooldown, so that made-up kids cannot turn every request into a fetch.
        if self._running() is None:
            now = self._clock()
            if self._last_forced is not None and now - self._last_forced < self._cooldown:
                self._raise_no_key()
            self._last_forced = now
        await self._fetch()
        found = self._keys.find(kid, alg) if self._keys is not None else None
        if found is None:
            self._raise_no_key()
        return found

    def _raise_no_key(self) -> NoReturn:
        if self._failed:
            raise AuthUnavailable("unknown kid and the JWKS cannot be fetched")
        raise InvalidCredentials("no key matches the token's kid and alg")

    def _running(self) -> asyncio.Task[None] | None:
        """The fetch in flight in this event loop (a task of a loop since closed is forgotten)."""
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    async def _fetch(self) -> None:
        task = self._running()
        if task is None:
            task = self._inflight = asyncio.get_running_loop().create_task(self._refresh())
        # shield: a caller that goes away does not cancel the others' fetch.
        await asyncio.shield(task)

    async def _refresh(self) -> None:
        try:
            keys, ttl = await self._download()
        except _FetchFailed as exc:
            self._failed = True
            self._next_fetch = self._clock() + self._cooldown
            held = "serving the keys held" if self._keys is not None else "no keys held"
            _log.warning("JWKS fetch from %s failed: %s; %s", self._where, exc, held)
        else:
            self._keys, self._failed = keys, False
            self._next_fetch = self._clock() + ttl
            _log.debug("JWKS from %s: %d keys, next fetch in %s s", self._where, len(keys), ttl)

    async def _download(self) -> tuple[KeySet, float]:
        try:
            async with (
                asyncio.timeout(self._timeout),
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
                session.get(self._url, allow_redirects=False, headers={"Accept": _ACCEPT}) as resp,
            ):
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP status {resp.status}")
                body = await self._read(resp)
                cache_control = resp.headers.get("Cache-Control")
        except TimeoutError:
            raise _FetchFailed(f"no complete answer within {self._timeout} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _FetchFailed(type(exc).__name__) from None
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchFailed("the response is not JSON") from None
        try:
            keys, problems = parse_jwks(document, self._algorithms)
        except ValueError as exc:
            raise _FetchFailed(str(exc)) from None
        for problem in problems:
            _log.warning("JWKS from %s: key skipped: %s", self._where, problem)
        if not keys:
            raise _FetchFailed(f"no key fits {', '.join(sorted(self._algorithms))}")
        return KeySet(keys), self._ttl(cache_control)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        too_large = _FetchFailed(f"the response is larger than {self._max_bytes} bytes")
        if response.content_length is not None and response.content_length > self._max_bytes:
            raise too_large
        # Counted after decompression, so a compressed bomb is cut short too.
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_bytes:
                raise too_large
        return bytes(body)

    def _ttl(self, cache_control: str | None) -> float:
        max_age = _max_age(cache_control) if cache_control else None
        ttl = self._default_ttl if max_age is None else max_age
        return min(max(ttl, self._ttl_min), self._ttl_max)


def _max_age(cache_control: str) -> float | None:
    """``max-age`` from a Cache-Control value (RFC 9111 §5.2.2.1); no-store and
    no-cache count as 0 (clamped up to ``ttl_min``)."""
    directives: dict[str, str] = {}
    for directive in cache_control.split(","):
        name, _, value = directive.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    value = directives.get("max-age", "")
    return float(value) if value.isascii() and value.isdigit() else None
