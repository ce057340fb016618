"""Per-rule CORS (Fetch standard, "CORS protocol"). Pure.

Origins are compared exactly (no prefix, suffix or pattern), are never
reflected unless listed, and ``*`` is refused together with credentials at
load. Every CORS response carries ``Vary: Origin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import Header

__all__ = ["DEFAULT_HEADERS", "DEFAULT_METHODS", "CorsPolicy"]

DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_HEADERS = ("authorization", "content-type")
_VARY: Header = ("vary", "Origin")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]
    methods: tuple[str, ...] = DEFAULT_METHODS
    headers: tuple[str, ...] = DEFAULT_HEADERS
    credentials: bool = False
    max_age: int = 600

    @classmethod
    def build(
        cls,
        origins: Sequence[str],
        methods: Sequence[str] = DEFAULT_METHODS,
        headers: Sequence[str] = DEFAULT_HEADERS,
        credentials: bool = False,
        max_age: int = 600,
    ) -> CorsPolicy:
        return cls(
            frozenset(origins),
            tuple(m.upper() for m in methods),
            tuple(h.lower() for h in headers),
            credentials,
            max_age,
        )

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return False
        return origin in self.origins or ("*" in self.origins and not self.credentials)

    def _origin_headers(self, origin: str) -> list[Header]:
        allowed = "*" if origin not in self.origins else origin
        out: list[Header] = [("access-control-allow-origin", allowed)]
        if self.credentials:
            out.append(("access-control-allow-credentials", "true"))
        return out

    def response_headers(self, origin: str | None) -> tuple[Header, ...]:
        """Headers for an actual (non-preflight) response, allowed or denied."""
        if not self.allows(origin):
            return (_VARY,)
        assert origin is not None
        return (*self._origin_headers(origin), _VARY)

    def preflight(self, origin: str | None, method: str) -> tuple[Header, ...] | None:
        """The grant for a preflight, or None when it must be refused (403).

        Requested headers are not checked here: the grant lists the allowed
        ones and the browser refuses the request if it needs another.
        """
        if not self.allows(origin) or method.upper() not in self.methods:
            return None
        assert origin is not None
        return (
            *self._origin_headers(origin),
            ("access-control-allow-methods", ", ".join(self.methods)),
            ("access-control-allow-headers", ", ".join(self.headers)),
            ("access-control-max-age", str(self.max_age)),
            _VARY,
        )
