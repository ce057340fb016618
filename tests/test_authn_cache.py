"""TokenCache on its own and inside JwtAuthenticator."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from edgeauth.authn.base import CredentialSource
from edgeauth.authn.cache import TokenCache
from edgeauth.authn.jwt import JwtAuthenticator, StaticKeys
from edgeauth.errors import InvalidCredentials
from edgeauth.model import Identity
from tests.jwks_server import mint

NOW = 1_700_000_000.0
SECRET = b"0123456789abcdef0123456789abcdef"
ALICE = Identity("alice")


def always(tag: object) -> bool:
    return True


def test_miss_then_hit() -> None:
    """A stored identity comes back for the same authenticator and token only."""
    cache = TokenCache()
    assert cache.get("session", "t1", NOW) is None
    cache.put("session", "t1", ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert cache.get("session", "t1", NOW) is ALICE
    assert cache.get("session", "t2", NOW) is None
    assert cache.get("partner", "t1", NOW) is None


def test_entry_expires_at_expires_at() -> None:
    """An entry serves until just before expires_at, then is dropped."""
    cache = TokenCache()
    cache.put("session", "t1", ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert cache.get("session", "t1", NOW + 59.999) is ALICE
    assert cache.get("session", "t1", NOW + 60) is None
    assert len(cache) == 0
    assert cache.get("session", "t1", NOW) is None


def test_entry_dropped_when_its_key_leaves_the_key_set() -> None:
    """key_valid is asked with the entry's tag on every hit; False drops the entry."""
    current = {"k1"}
    asked: list[object] = []

    def key_valid(tag: object) -> bool:
        asked.append(tag)
        return tag in current

    cache = TokenCache()
    cache.put("session", "t1", ALICE, expires_at=NOW + 60, key_tag="k1", key_valid=key_valid)
    assert cache.get("session", "t1", NOW) is ALICE
    current.clear()
    assert cache.get("session", "t1", NOW) is None
    current.add("k1")
    assert cache.get("session", "t1", NOW) is None
    assert asked == ["k1", "k1"]


def test_bounded_with_lru_eviction() -> None:
    """A full cache drops its least recently used entry."""
    cache = TokenCache(max_entries=3)
    for token in ("t1", "t2", "t3"):
        cache.put("a", token, Identity(token), expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert cache.get("a", "t1", NOW) is not None  # t1 is now the most recent
    cache.put("a", "t4", Identity("t4"), expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert len(cache) == 3
    assert cache.get("a", "t2", NOW) is None
    assert [cache.get("a", t, NOW) is not None for t in ("t1", "t3", "t4")] == [True] * 3


def test_stays_bounded_under_many_tokens() -> None:
    """However many tokens go in, the size never passes max_entries."""
    cache = TokenCache(max_entries=100)
    for n in range(1000):
        cache.put("a", f"t{n}", ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert len(cache) == 100
    assert cache.get("a", "t999", NOW) is ALICE
    assert cache.get("a", "t899", NOW) is None


def test_token_itself_is_not_stored() -> None:
    """Entries are keyed by a digest: the token string appears nowhere in the cache."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"
    cache = TokenCache()
    cache.put("session", token, ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    digest, entry = next(iter(cache._entries.items()))
    assert isinstance(digest, bytes)
    assert digest == hashlib.blake2b(token.encode()).digest()
    assert token.encode() not in digest
    fields = ("authenticator", "identity", "expires_at", "key_tag", "key_valid", "serial")
    held = [getattr(entry, name) for name in fields]
    assert entry.authenticator == "session"
    assert not any(token in repr(value) for value in held)


def test_an_entry_serves_the_authenticator_that_verified_it_only() -> None:
    """The same token verified by two authenticators (two claim mappings, say)
    is never answered with the other's identity: the later put replaces the
    earlier, whose authenticator then misses and verifies again."""
    cache = TokenCache()
    bob = Identity("bob")
    cache.put("session", "t1", ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert cache.get("bearer", "t1", NOW) is None
    cache.put("bearer", "t1", bob, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert cache.get("bearer", "t1", NOW) is bob
    assert cache.get("session", "t1", NOW) is None
    assert len(cache) == 1


@pytest.mark.parametrize("size", [1, 2, 3, 10, 11])
def test_a_hit_keeps_its_entry_for_at_least_half_the_cache(size: int) -> None:
    """The documented bound, exactly: an entry hit when it was just young
    enough not to be moved (the worst case) is evicted by the
    (size - young + 1)th put after the hit, not before; one a put older is
    moved by its hit and waits a whole cache's size; an entry hit once every
    size - young puts stays however many tokens pass through."""
    young = max(size // 2, 1)
    cache = TokenCache(max_entries=size)

    def put(token: str) -> None:
        cache.put("a", token, Identity(token), expires_at=NOW + 60, key_tag="k", key_valid=always)

    def held(token: str) -> bool:  # without a get, which could move it
        return hashlib.blake2b(token.encode()).digest() in cache._entries

    for n in range(size):
        put(f"t{n}")
    hot = f"t{size - young}"  # put young puts before the hit: the oldest not moved
    assert cache.get("a", hot, NOW) is not None
    for n in range(size - young):
        put(f"u{n}")
    assert held(hot)
    put("one more")
    assert not held(hot)

    if size > young:  # one put older, the hit moves it: then it is the youngest
        cache = TokenCache(max_entries=size)
        for n in range(size):
            put(f"t{n}")
        moved = f"t{size - young - 1}"
        assert cache.get("a", moved, NOW) is not None
        for n in range(size - 1):
            put(f"w{n}")
        assert held(moved)
        put("one more")
        assert not held(moved)

    every = size - young  # 0 for a cache of one entry: any put evicts it
    put(hot)
    for n in range(1000 if every else 0):
        if n % every == 0:
            assert cache.get("a", hot, NOW) is not None, n
        put(f"v{n}")
    assert len(cache) == size


def test_an_entry_not_hit_is_evicted_in_put_order() -> None:
    """Entries never hit leave oldest first, one per put into a full cache."""
    cache = TokenCache(max_entries=4)
    for n in range(8):
        cache.put("a", f"t{n}", ALICE, expires_at=NOW + 60, key_tag="k", key_valid=always)
    assert [cache.get("a", f"t{n}", NOW) is not None for n in range(8)] == [False] * 4 + [True] * 4


def test_max_entries_must_be_positive() -> None:
    """A cache that can hold nothing is a configuration error."""
    with pytest.raises(ValueError, match="at least 1"):
        TokenCache(max_entries=0)


class CountingKeys:
    """A key provider that counts lookups and can drop its key (rotation)."""

    def __init__(self) -> None:
        self.inner = StaticKeys.from_secret(SECRET, ["HS256"])
        self.lookups = 0
        self.rotated = False

    async def key_for(self, kid: str | None, alg: str, now: float) -> tuple[Any, object]:
        self.lookups += 1
        return await self.inner.key_for(kid, alg, now)

    def key_valid(self, tag: object) -> bool:
        return not self.rotated and self.inner.key_valid(tag)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make(
    keys: CountingKeys, cache: TokenCache, *, leeway: float = 0.0, **options: Any
) -> JwtAuthenticator:
    return JwtAuthenticator(
        "session",
        sources=(CredentialSource("bearer"),),
        algorithms=["HS256"],
        keys=keys,
        issuer=None,
        audience=None,
        leeway=leeway,
        cache=cache,
        **options,
    )


def token(**claims: Any) -> str:
    return mint({"sub": "alice", "exp": NOW + 60} | claims, SECRET, "HS256")


async def test_hit_skips_verification() -> None:
    """A second presentation returns the same identity without a key lookup."""
    keys, cache = CountingKeys(), TokenCache()
    auth = make(keys, cache)
    first = await auth.authenticate(token(), NOW)
    second = await auth.authenticate(token(), NOW + 1)
    assert first is not None
    assert second is first
    assert keys.lookups == 1


async def test_hit_rechecks_exp_with_leeway() -> None:
    """A cached token is refused once exp plus the leeway has passed."""
    keys, cache = CountingKeys(), TokenCache()
    auth = make(keys, cache, leeway=5)
    assert await auth.authenticate(token(), NOW) is not None
    assert await auth.authenticate(token(), NOW + 64) is not None
    assert keys.lookups == 1
    with pytest.raises(InvalidCredentials, match="expired"):
        await auth.authenticate(token(), NOW + 65)
    assert keys.lookups == 2


async def test_rotated_key_forces_reverification() -> None:
    """When the provider no longer holds the key, the entry is dropped and the token
    is verified again."""
    keys, cache = CountingKeys(), TokenCache()
    auth = make(keys, cache)
    await auth.authenticate(token(), NOW)
    keys.rotated = True
    await auth.authenticate(token(), NOW)
    assert keys.lookups == 2


async def test_token_without_exp_is_not_cached() -> None:
    """A token that never expires is verified every time, never cached."""
    keys, cache = CountingKeys(), TokenCache()
    auth = make(keys, cache, required_claims=())
    never_expires = mint({"sub": "alice"}, SECRET, "HS256")
    await auth.authenticate(never_expires, NOW)
    await auth.authenticate(never_expires, NOW)
    assert keys.lookups == 2
    assert len(cache) == 0


async def test_rejected_token_is_not_cached() -> None:
    """A token that fails verification leaves nothing in the cache."""
    keys, cache = CountingKeys(), TokenCache()
    forged = mint({"sub": "alice", "exp": NOW + 60}, b"w" * 32, "HS256")
    with pytest.raises(InvalidCredentials):
        await make(keys, cache).authenticate(forged, NOW)
    assert len(cache) == 0


async def test_one_cache_serves_several_authenticators_apart() -> None:
    """Entries of one authenticator are not hits for another sharing the cache."""
    keys, cache = CountingKeys(), TokenCache()
    await make(keys, cache).authenticate(token(), NOW)
    other = JwtAuthenticator(
        "partner",
        sources=(CredentialSource("bearer"),),
        algorithms=["HS256"],
        keys=keys,
        issuer=None,
        audience=["partner-api"],
        cache=cache,
    )
    with pytest.raises(InvalidCredentials, match="aud missing"):
        await other.authenticate(token(), NOW)
