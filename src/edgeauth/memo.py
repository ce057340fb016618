"""Bounded memos for the per-request hot path.

Header names, peers, routes and encoded headers repeat from request to
request, so their treatment is computed once and kept in a plain dict. Every
such dict is bounded the same way: a full memo is emptied before the next
entry goes in (cheap, and the entries that matter come straight back), so
clients sending ever new values cost a recomputation, never memory. Callers
also refuse to keep oversized keys.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["MEMO_SIZE", "remember"]

K = TypeVar("K")
V = TypeVar("V")

MEMO_SIZE = 4096
"""Entries per memo."""


def remember(memo: dict[K, V], key: K, value: V, size: int = MEMO_SIZE) -> V:
    """Keep ``value`` under ``key`` in ``memo`` (emptied first when full); return it.

    >>> memo: dict[str, int] = {}
    >>> remember(memo, "a", 1, size=1), remember(memo, "b", 2, size=1), memo
    (1, 2, {'b': 2})
    """
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
    return value
