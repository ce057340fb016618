"""The verified-token cache: skip re-verifying a token seen moments ago.

Per process and bounded. An entry is keyed by the BLAKE2b-512 digest of the
token, so the token itself is never stored; it holds the id of the
authenticator that verified the token, and serves that authenticator only.
It is dropped as soon as the token's ``exp`` (plus the authenticator's leeway)
has passed or the key that verified it has left the key set (rotation).
Revocation is not the cache's business: the pipeline checks it on every
request, hit or miss.

Eviction is nearly LRU, kept cheap on the path every cached request takes: a
put into a full cache evicts the entry least recently put or moved, and a hit
moves its entry to the young end only once at least ``young`` puts and moves
have happened since the entry's own, where ``young`` is half the cache
(``max(max_entries // 2, 1)``): most hits find a young entry and skip the
move. So an entry is evicted no sooner than ``max_entries - young + 1`` puts
and moves after its last hit, where exact LRU would wait ``max_entries``; an
entry hit at least once every ``max_entries - young`` puts and moves is never
evicted.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..model import Identity

__all__ = ["TokenCache"]


class _Entry:
    """A cached verification, read on every hit; only its serial changes
    (when a hit moves it to the young end)."""

    __slots__ = ("authenticator", "expires_at", "identity", "key_tag", "key_valid", "serial")

    def __init__(
        self,
        authenticator: str,
        identity: Identity,
        expires_at: float,
        key_tag: object,
        key_valid: Callable[[object], bool] | None,
        serial: int,
    ) -> None:
        self.authenticator = authenticator
        self.identity = identity
        self.expires_at = expires_at
        self.key_tag = key_tag
        self.key_valid = key_valid
        self.serial = serial  # when it was put or last moved to the young end


class TokenCache:
    """A bounded, nearly LRU map from a token's digest to the identity an
    authenticator verified it as.

    >>> cache = TokenCache(max_entries=2)
    >>> cache.put("session", "a.b.c", Identity("u1"), expires_at=100.0,
    ...           key_tag="k1", key_valid=lambda tag: True)
    >>> cache.get("session", "a.b.c", now=99.0).subject
    'u1'
    >>> cache.get("bearer", "a.b.c", now=99.0) is None
    True
    >>> cache.get("session", "a.b.c", now=100.0) is None
    True
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._young = max(max_entries // 2, 1)  # serials this close to the latest stay put
        self._serial = 0  # counts puts and moves
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, authenticator: str, token: str, now: float) -> Identity | None:
        """The identity ``authenticator`` verified ``token`` as, or None on a
        miss, after ``expires_at``, or when the entry's key is no longer in the
        key set."""
        try:  # _digest, inline on the path every cached request takes
            key = _hash(token.encode()).digest()
        except UnicodeEncodeError:
            key = _digest(token)
        entries = self._entries
        entry = entries.get(key)
        if entry is None or entry.authenticator != authenticator:
            return None
        key_valid = entry.key_valid
        if now >= entry.expires_at or (key_valid is not None and not key_valid(entry.key_tag)):
            del entries[key]
            return None
        if self._serial - entry.serial >= self._young:  # aged into the older half
            self._serial += 1
            entry.serial = self._serial
            entries.move_to_end(key)
        return entry.identity

    def put(
        self,
        authenticator: str,
        token: str,
        identity: Identity,
        *,
        expires_at: float,
        key_tag: object,
        key_valid: Callable[[object], bool] | None,
    ) -> None:
        """Remember that ``authenticator`` verified ``token`` as ``identity``,
        until ``expires_at``: the first instant at which it is no longer
        accepted (its ``exp`` plus the leeway), and as long as
        ``key_valid(key_tag)`` holds (None: keys that never change). It
        replaces the token's entry from any other authenticator."""
        key = _digest(token)
        self._serial += 1
        entries = self._entries
        entries[key] = _Entry(authenticator, identity, expires_at, key_tag, key_valid, self._serial)
        entries.move_to_end(key)
        if len(entries) > self._max:
            entries.popitem(last=False)


def _digest(token: str) -> bytes:
    try:
        raw = token.encode()
    except UnicodeEncodeError:
        # A header value decoded with surrogateescape must still hash, not raise.
        raw = token.encode("utf-8", "surrogatepass")
    return _hash(raw).digest()


# BLAKE2b-512: a cryptographic hash like SHA-256, implemented in the interpreter
# rather than through OpenSSL's per-call digest lookup, which costs more than
# hashing a token. Its full 64-byte digest: asking for a shorter one costs a
# keyword argument per call, more than the 32 bytes it would save per entry.
_hash: Final = hashlib.blake2b
