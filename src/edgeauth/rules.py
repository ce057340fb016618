"""Rule patterns, compiled once at load; first match wins.

Patterns are matched against the decoded canonical path (:mod:`edgeauth.paths`),
the very string the app routes on: ``/users/%40me`` and ``/users/@me`` are one
path to the app, so they must be one path to the rules too (the canonicalizer
refuses the escapes whose decoding would be ambiguous: ``%2F``, ``%5C``, ``%00``).
``*`` matches within one segment, ``**`` (a whole segment) across segments.
``/x/**`` matches ``/x``, ``/x/`` and everything below; an exact ``/x`` also
matches ``/x/``. Matching is case-sensitive.

>>> p = compile_pattern("/api/**")
>>> bool(p.fullmatch("/api")), bool(p.fullmatch("/api/a/b")), bool(p.fullmatch("/apix"))
(True, True, False)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["HostPattern", "Matcher", "RuleSet", "compile_pattern"]

T = TypeVar("T")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one path pattern; raises ValueError saying what was expected."""
    if not pattern.startswith("/"):
        raise ValueError(f"a path pattern must start with '/', got {pattern!r}")
    if any(c in pattern for c in "?#;\\%") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        raise ValueError(
            f"a path pattern may not contain '?', '#', ';', '\\', '%' or controls: {pattern!r}"
        )
    segments = pattern[1:].split("/")
    if any(seg in (".", "..") for seg in segments):
        raise ValueError(f"a path pattern may not contain '.' or '..' segments: {pattern!r}")
    if any(seg == "" for seg in segments[:-1]):
        raise ValueError(f"a path pattern may not contain '//': {pattern!r}")
    if pattern == "/":
        return re.compile("/")
    out: list[str] = []
    for seg in segments:
        if seg == "**":
            out.append("(?:/.*)?")
        elif "**" in seg:
            raise ValueError(f"'**' must be a whole segment, as in '/x/**': {pattern!r}")
        elif seg == "*":
            out.append("/[^/]+")
        elif seg == "":  # trailing slash in the pattern: optional, like an exact path
            continue
        else:
            parts = [re.escape(part) for part in seg.split("*")]
            out.append("/" + "[^/]*".join(parts))
    regex = "".join(out)
    if segments[-1] != "**":
        regex += "/?"
    return re.compile(regex)


@dataclass(frozen=True, slots=True)
class HostPattern:
    """``app.example.com`` exactly, or ``*.example.com`` for any subdomain (not the apex)."""

    suffix: str
    wildcard: bool

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        host = text.strip().lower()
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        if not name or not re.fullmatch(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]", name) or "*" in name:
            raise ValueError(
                f"expected a host name like 'app.example.com' or '*.example.com', got {text!r}"
            )
        return cls("." + name if wildcard else name, wildcard)

    def matches(self, host: str) -> bool:
        return host.endswith(self.suffix) if self.wildcard else host == self.suffix


@dataclass(frozen=True, slots=True)
class Matcher(Generic[T]):
    """One rule's match conditions, carrying the rule as ``target``."""

    patterns: tuple[re.Pattern[str], ...]
    methods: frozenset[str] | None
    hosts: tuple[HostPattern, ...] | None
    target: T

    def accepts(self, method: str, host: str) -> bool:
        """Do the method and host fit (the path aside)?"""
        if self.methods is not None and method not in self.methods:
            return False
        return self.hosts is None or any(h.matches(host) for h in self.hosts)

    def matches(self, method: str, host: str, path: str) -> bool:
        return self.accepts(method, host) and any(p.fullmatch(path) for p in self.patterns)


class RuleSet(Generic[T]):
    """Rules in file order; :meth:`match` returns the first that matches.

    All patterns are also compiled into one alternation, so the common case
    costs a single regex call: the leftmost alternative that matches the whole
    path is the first rule whose path matches; only when that rule's method or
    host does not fit are the rules after it tried one by one.
    """

    def __init__(self, matchers: Sequence[Matcher[T]]) -> None:
        self._matchers = tuple(matchers)
        alternatives = [
            f"(?P<r{i}>{'|'.join(p.pattern for p in m.patterns)})"
            for i, m in enumerate(self._matchers)
        ]
        self._combined = re.compile("|".join(alternatives)) if alternatives else None
        self.needs_host = any(m.hosts is not None for m in self._matchers)
        """Whether any rule looks at the host (else callers may pass '')."""

    def __len__(self) -> int:
        return len(self._matchers)

    def match(self, method: str, host: str, path: str) -> T | None:
        """The first rule matching ``method`` (upper-case), ``host`` (lower-case,
        no port) and the decoded canonical ``path``, or None."""
        if self._combined is None:
            return None
        found = self._combined.fullmatch(path)
        if found is None:
            return None
        first = int(found.lastgroup[1:]) if found.lastgroup else 0
        if self._matchers[first].accepts(method, host):
            return self._matchers[first].target  # its path matched already
        for m in self._matchers[first + 1 :]:
            if m.matches(method, host, path):
                return m.target
        return None


def normalize_methods(methods: Sequence[str]) -> frozenset[str]:
    """Upper-case method names; GET also admits HEAD (RFC 9110 §9.3.2)."""
    result = {m.upper() for m in methods}
    if "GET" in result:
        result.add("HEAD")
    return frozenset(result)
