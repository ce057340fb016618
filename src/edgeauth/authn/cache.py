"""The verified-token cache: skip re-verifying a token seen moments ago.

Per process and bounded. An entry is keyed by (authenticator id, BLAKE2b-512
digest of the token), so the token itself is never stored, and it is dropped
as soon as the token's ``exp`` (plus the authenticator's leeway) has passed
or the key that verified it has left the key set (rotation). Revocation is not the cache's
business: the pipeline checks it on every request, hit or miss.

Eviction is LRU: a hit moves the entry to the young end, a put into a full
cache drops the least recently used entry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..model import Identity

__all__ = ["TokenCache"]


_Entry = tuple[Identity, float, object, Callable[[object], bool] | None]
"""(identity, expires_at, key_tag, key_valid): a tuple, unpacked in one step."""


class TokenCache:
    """A bounded LRU map from (authenticator, token digest) to a verified identity.

    >>> cache = TokenCache(max_entries=2)
    >>> cache.put("session", "a.b.c", Identity("u1"), expires_at=100.0,
    ...           key_tag="k1", key_valid=lambda tag: True)
    >>> cache.get("session", "a.b.c", now=99.0).subject
    'u1'
    >>> cache.get("session", "a.b.c", now=100.0) is None
    True
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, authenticator: str, token: str, now: float) -> Identity | None:
        """The identity cached for ``token``, or None on a miss, after
        ``expires_at``, or when the entry's key is no longer in the key set."""
        try:  # _digest, inline on the path every cached request takes
            key = (authenticator, _hash(token.encode()).digest())
        except UnicodeEncodeError:
            key = (authenticator, _digest(token))
        entry = self._entries.get(key)
        if entry is None:
            return None
        identity, expires_at, key_tag, key_valid = entry
        if now >= expires_at or (key_valid is not None and not key_valid(key_tag)):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return identity

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
        """Remember a verified ``token`` until ``expires_at``: the first instant at
        which it is no longer accepted (its ``exp`` plus the leeway), and as long as
        ``key_valid(key_tag)`` holds (None: keys that never change)."""
        key = (authenticator, _digest(token))
        self._entries[key] = (identity, expires_at, key_tag, key_valid)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)


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
