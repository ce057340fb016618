"""RemoteJwks against a real JWKS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from edgeauth.authn.base import CredentialSource
from edgeauth.authn.jwks import RemoteJwks
from edgeauth.authn.jwt import JwtAuthenticator
from edgeauth.errors import AuthUnavailable, InvalidCredentials
from tests.jwks_server import (
    FakeClock,
    JwksServer,
    mint,
    new_ec,
    new_rsa,
    public_jwk,
    served_in_thread,
)

NOW = 1_700_000_000.0
K1, K2 = new_rsa(), new_rsa()
JWK1, JWK2 = public_jwk(K1, "k1"), public_jwk(K2, "k2")

Remote = Callable[..., RemoteJwks]


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    async with JwksServer({"keys": [JWK1]}) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def remote(server: JwksServer, clock: FakeClock) -> AsyncIterator[Remote]:
    """Builds RemoteJwks clients for the server (or another URL) and closes them after."""
    made: list[RemoteJwks] = []

    def build(url: str | None = None, **options: Any) -> RemoteJwks:
        settings: dict[str, Any] = {"algorithms": ["RS256"], "clock": clock} | options
        jwks = RemoteJwks(url or server.url, **settings)
        made.append(jwks)
        return jwks

    yield build
    for jwks in made:
        await jwks.aclose()


async def test_first_fetch_then_cached(server: JwksServer, remote: Remote) -> None:
    """The first lookup fetches the key set; later lookups within the TTL do not."""
    jwks = remote()
    _, tag = await jwks.key_for("k1", "RS256", NOW)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 1
    assert jwks.key_valid(tag)


async def test_verifies_tokens_end_to_end(remote: Remote) -> None:
    """A JwtAuthenticator with RemoteJwks accepts a token signed by a published key."""
    auth = JwtAuthenticator(
        "partner",
        sources=(CredentialSource("bearer"),),
        algorithms=["RS256"],
        keys=remote(),
        issuer="https://idp.example/",
        audience=["edge-api"],
    )
    claims = {"iss": "https://idp.example/", "aud": "edge-api", "sub": "svc", "exp": NOW + 60}
    identity = await auth.authenticate(mint(claims, K1, "RS256", kid="k1"), NOW)
    assert identity is not None
    assert identity.key_id == "k1"
    await auth.aclose()


async def test_rotation_new_kid_is_fetched(server: JwksServer, remote: Remote) -> None:
    """A kid published after the first fetch is found through an unknown-kid refresh."""
    jwks = remote()
    await jwks.key_for("k1", "RS256", NOW)
    server.document = {"keys": [JWK1, JWK2]}
    await jwks.key_for("k2", "RS256", NOW)
    assert server.fetches == 2


async def test_removed_key_is_no_longer_valid(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """After a refresh without a key, its tag is invalid (the token cache drops it)."""
    jwks = remote()
    _, tag = await jwks.key_for("k1", "RS256", NOW)
    server.document = {"keys": [JWK2]}
    clock.advance(300)
    await jwks.key_for("k2", "RS256", NOW)
    assert not jwks.key_valid(tag)
    with pytest.raises(InvalidCredentials, match="no key matches"):
        await jwks.key_for("k1", "RS256", NOW)


async def test_refetch_of_the_same_keys_keeps_tags_valid(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """A regular refresh that returns the same keys keeps cached tokens valid."""
    jwks = remote()
    _, tag = await jwks.key_for("k1", "RS256", NOW)
    clock.advance(300)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 2
    assert jwks.key_valid(tag)


async def test_unknown_kids_do_not_amplify_fetches(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """Unknown kids cause at most one refresh per cooldown; the rest are 401 at once."""
    jwks = remote(cooldown=30)
    await jwks.key_for("k1", "RS256", NOW)
    for n in range(5):
        with pytest.raises(InvalidCredentials, match="no key matches"):
            await jwks.key_for(f"bogus-{n}", "RS256", NOW)
    assert server.fetches == 2
    clock.advance(29)
    with pytest.raises(InvalidCredentials):
        await jwks.key_for("bogus-5", "RS256", NOW)
    assert server.fetches == 2
    clock.advance(1)
    with pytest.raises(InvalidCredentials):
        await jwks.key_for("bogus-6", "RS256", NOW)
    assert server.fetches == 3


async def test_an_unknown_kid_when_a_fetch_is_due_fetches_once(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """A request that finds the regular fetch due and its kid unknown fetches
    the key set once, not once more to look for the kid."""
    jwks = remote(cooldown=30, default_ttl=60, ttl_min=60)
    await jwks.key_for("k1", "RS256", NOW)
    clock.advance(61)
    with pytest.raises(InvalidCredentials):
        await jwks.key_for("bogus", "RS256", NOW)
    assert server.fetches == 2
    server.status = 500
    clock.advance(61)
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("bogus-2", "RS256", NOW)
    assert server.fetches == 3


async def test_outage_with_a_warm_cache_serves_stale_keys(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """When a refresh fails, the keys held keep verifying, and retries wait the cooldown."""
    jwks = remote(cooldown=30)
    await jwks.key_for("k1", "RS256", NOW)
    server.status = 500
    clock.advance(300)
    _, tag = await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 2
    assert jwks.key_valid(tag)
    clock.advance(10)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 2


async def test_unknown_kid_while_the_idp_is_down_is_unavailable(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """An unknown kid that cannot be looked up (IdP down) is 503, not 401, until it answers."""
    jwks = remote(cooldown=30)
    await jwks.key_for("k1", "RS256", NOW)
    server.status = 503
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k2", "RS256", NOW)
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k3", "RS256", NOW)
    assert server.fetches == 2
    server.status = 200
    server.document = {"keys": [JWK1, JWK2]}
    clock.advance(30)
    await jwks.key_for("k2", "RS256", NOW)


async def test_outage_with_a_cold_cache_is_unavailable(
    server: JwksServer, remote: Remote, clock: FakeClock
) -> None:
    """No keys held and the fetch fails: AuthUnavailable; retried after the cooldown."""
    server.status = 503
    jwks = remote(cooldown=30)
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k1", "RS256", NOW)
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 1
    server.status = 200
    clock.advance(30)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 2


async def test_connection_refused_is_unavailable(remote: Remote) -> None:
    """A JWKS URL where nothing listens gives AuthUnavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    jwks = remote(f"http://127.0.0.1:{port}/jwks.json")
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k1", "RS256", NOW)


async def test_slow_server_times_out(server: JwksServer, remote: Remote) -> None:
    """A server slower than the timeout gives AuthUnavailable after the timeout."""
    server.delay = 60
    jwks = remote(timeout=0.2)
    async with asyncio.timeout(10):
        with pytest.raises(AuthUnavailable):
            await jwks.key_for("k1", "RS256", NOW)
        # The server shares this loop: on a busy machine the request it was
        # sent may be read only after the client has given up on it.
        await server.arrived.wait()
    assert server.fetches == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_response_is_a_failed_fetch(
    server: JwksServer, remote: Remote, chunked: bool
) -> None:
    """A response over max_bytes is refused, announced or not."""
    server.document = {"keys": [JWK1], "padding": "x" * 5000}
    server.chunked = chunked
    jwks = remote(max_bytes=4096)
    with pytest.raises(AuthUnavailable):
        await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 1


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        pytest.param(None, 300, id="default"),
        pytest.param("public, max-age=120", 120, id="max-age"),
        pytest.param("max-age=5", 60, id="clamped up to ttl_min"),
        pytest.param("max-age=100000", 3600, id="clamped down to ttl_max"),
        pytest.param('max-age="600"', 600, id="quoted"),
        pytest.param("max-age=soon", 300, id="unreadable"),
        pytest.param("no-store", 60, id="no-store"),
    ],
)
async def test_ttl_from_cache_control(
    server: JwksServer, remote: Remote, clock: FakeClock, cache_control: str | None, ttl: float
) -> None:
    """The key set is kept for max-age clamped to [ttl_min, ttl_max], default_ttl without it."""
    if cache_control is not None:
        server.headers["Cache-Control"] = cache_control
    jwks = remote(ttl_min=60, ttl_max=3600, default_ttl=300)
    await jwks.key_for("k1", "RS256", NOW)
    clock.advance(ttl - 1)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 1
    clock.advance(1)
    await jwks.key_for("k1", "RS256", NOW)
    assert server.fetches == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>not json</html>", id="not JSON"),
        pytest.param(b"\xff\xfe", id="not UTF-8"),
        pytest.param(b'["k1"]', id="not an object"),
        pytest.param(b'{"keys": {"k1": {}}}', id="keys not a list"),
        pytest.param(json.dumps({"keys": [public_jwk(new_ec(), "e1")]}).encode(), id="no RSA"),
    ],
)
async def test_unusable_document_is_a_failed_fetch(
    server: JwksServer, remote: Remote, body: bytes
) -> None:
    """A body that is not a JWK Set with a usable key counts as a failed fetch."""
    server.body = body
    with pytest.raises(AuthUnavailable):
        await remote().key_for("k1", "RS256", NOW)


async def test_broken_and_private_keys_are_skipped(
    server: JwksServer, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    """Broken or private JWKs are left out and logged without their material."""
    private = public_jwk(K2, "k2", d="cHJpdmF0ZS1tYXRlcmlhbA")
    server.document = {"keys": [JWK1, private, {"kty": "RSA", "kid": "k3", "n": 1, "e": "AQAB"}]}
    jwks = remote()
    with caplog.at_level(logging.DEBUG, logger="edgeauth.authn.jwks"):
        await jwks.key_for("k1", "RS256", NOW)
        with pytest.raises(InvalidCredentials):
            await jwks.key_for("k2", "RS256", NOW)
    assert "private key material" in caplog.text
    assert "cHJpdmF0ZS1tYXRlcmlhbA" not in caplog.text
    assert JWK1["n"] not in caplog.text


async def test_logs_hide_url_credentials(
    server: JwksServer, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed fetch is logged with the URL's host and path, not its user info or query."""
    server.status = 500
    url = server.url.replace("http://", "http://user:s3cret-pass@") + "?token=qu3ry-secret"
    with (
        caplog.at_level(logging.WARNING, logger="edgeauth.authn.jwks"),
        pytest.raises(AuthUnavailable),
    ):
        await remote(url).key_for("k1", "RS256", NOW)
    assert "HTTP status 500" in caplog.text
    assert server.url in caplog.text
    assert "s3cret-pass" not in caplog.text
    assert "qu3ry-secret" not in caplog.text


async def test_redirects_are_not_followed(server: JwksServer, remote: Remote) -> None:
    """A 302 is a failed fetch; its target is never requested."""
    with pytest.raises(AuthUnavailable):
        await remote(server.base + "/moved").key_for("k1", "RS256", NOW)
    assert server.paths == ["/moved"]


async def test_concurrent_callers_share_one_fetch(server: JwksServer, remote: Remote) -> None:
    """Callers arriving during a fetch wait for it instead of starting their own."""
    server.delay = 0.3
    jwks = remote()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(jwks.key_for("k1", "RS256", NOW) for _ in range(10)))
    assert len({tag for _, tag in results}) == 1
    assert server.fetches == 1


async def test_concurrent_unknown_kid_callers_share_the_refresh(
    server: JwksServer, remote: Remote
) -> None:
    """During a rotation, every caller with the new kid gets it from one refresh."""
    jwks = remote()
    await jwks.key_for("k1", "RS256", NOW)
    server.document = {"keys": [JWK1, JWK2]}
    server.delay = 0.3
    async with asyncio.timeout(10):
        await asyncio.gather(*(jwks.key_for("k2", "RS256", NOW) for _ in range(10)))
    assert server.fetches == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    server: JwksServer, remote: Remote
) -> None:
    """When one waiting caller goes away, the others still get the fetched keys."""
    server.delay = 0.3
    jwks = remote()
    async with asyncio.timeout(10):
        first = asyncio.create_task(jwks.key_for("k1", "RS256", NOW))
        await server.arrived.wait()
        second = asyncio.create_task(jwks.key_for("k1", "RS256", NOW))
        await asyncio.sleep(0)
        first.cancel()
        _, tag = await second
    assert first.cancelled()
    assert jwks.key_valid(tag)
    assert server.fetches == 1


async def test_aclose_cancels_a_fetch_in_flight(server: JwksServer, remote: Remote) -> None:
    """aclose does not wait for a slow IdP: the pending lookup is cancelled."""
    server.delay = 60
    jwks = remote()
    lookup = asyncio.create_task(jwks.key_for("k1", "RS256", NOW))
    async with asyncio.timeout(10):
        await server.arrived.wait()
        await jwks.aclose()
        with pytest.raises(asyncio.CancelledError):
            await lookup


def test_usable_from_another_event_loop() -> None:
    """One RemoteJwks keeps working when later called from a new event loop."""
    clock = FakeClock()
    with served_in_thread(JwksServer({"keys": [JWK1]})) as server:
        jwks = RemoteJwks(server.url, algorithms=["RS256"], clock=clock)
        asyncio.run(jwks.key_for("k1", "RS256", NOW))
        clock.advance(300)
        asyncio.run(jwks.key_for("k1", "RS256", NOW))
        asyncio.run(jwks.aclose())
        assert server.fetches == 2


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        pytest.param("ftp://idp.example/jwks", {}, "http:// or https://", id="ftp"),
        pytest.param("/jwks.json", {}, "http:// or https://", id="relative"),
        pytest.param("http://idp.example:99999/", {}, "not a valid URL", id="bad port"),
        pytest.param("https://idp.example/", {"algorithms": ["HS256"]}, "need a secret", id="HS"),
        pytest.param("https://idp.example/", {"ttl_min": 600, "ttl_max": 60}, "ttl_min", id="ttl"),
        pytest.param("https://idp.example/", {"timeout": 0}, "must be positive", id="timeout"),
    ],
)
def test_constructor_validates(url: str, options: dict[str, Any], message: str) -> None:
    """Unusable URLs and settings raise ValueError at load."""
    with pytest.raises(ValueError, match=message):
        RemoteJwks(url, **({"algorithms": ["RS256"]} | options))
