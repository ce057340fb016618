"""Rule patterns and first-match order."""

from __future__ import annotations

import pytest

from edgeauth.rules import HostPattern, Matcher, RuleSet, compile_pattern, normalize_methods


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/login", "/login", True),
        ("/login", "/login/", True),
        ("/login", "/login/x", False),
        ("/login", "/Login", False),
        ("/api/**", "/api", True),
        ("/api/**", "/api/", True),
        ("/api/**", "/api/a/b/c", True),
        ("/api/**", "/apix", False),
        ("/api/*", "/api/x", True),
        ("/api/*", "/api/x/y", False),
        ("/api/*", "/api/", False),
        ("/files/*.txt", "/files/a.txt", True),
        ("/files/*.txt", "/files/a.txt/b", False),
        ("/files/*.txt", "/files/a.md", False),
        ("/a/**/b", "/a/b", True),
        ("/a/**/b", "/a/x/y/b", True),
        ("/a/**/b", "/a/xb", False),
        ("/", "/", True),
        ("/", "/x", False),
        ("/**", "/anything/at/all", True),
        ("/users/@me", "/users/@me", True),
        ("/café", "/café", True),
        ("/a.b", "/aXb", False),
    ],
)
def test_pattern_semantics(pattern: str, path: str, matches: bool) -> None:
    """* stays in one segment, ** spans segments, exact paths allow a trailing slash."""
    assert bool(compile_pattern(pattern).fullmatch(path)) is matches


def rule(
    name: str, *patterns: str, methods: list[str] | None = None, hosts: list[str] | None = None
) -> Matcher[str]:
    return Matcher(
        tuple(compile_pattern(p) for p in patterns),
        normalize_methods(methods) if methods is not None else None,
        tuple(HostPattern.parse(h) for h in hosts) if hosts is not None else None,
        name,
    )


def test_first_match_wins_and_method_or_host_misses_fall_through() -> None:
    """The first rule whose path, method and host all fit decides."""
    rules = RuleSet(
        [
            rule("post-only", "/api/**", methods=["POST"]),
            rule("tenant", "/api/**", hosts=["*.tenant.example"]),
            rule("api", "/api/**"),
            rule("exact", "/api/x"),
            rule("multi", "/a", "/b/**"),
        ]
    )
    assert rules.match("POST", "h", "/api/x") == "post-only"
    assert rules.match("GET", "t1.tenant.example", "/api/x") == "tenant"
    assert rules.match("GET", "h", "/api/x") == "api"
    assert rules.match("HEAD", "h", "/b/c") == "multi"
    assert rules.match("GET", "h", "/c") is None
    assert RuleSet([]).match("GET", "h", "/") is None
    assert len(rules) == 5


def test_get_also_admits_head() -> None:
    """methods = ["GET"] matches HEAD too (RFC 9110 §9.3.2)."""
    assert normalize_methods(["get"]) == frozenset({"GET", "HEAD"})
    assert normalize_methods(["POST"]) == frozenset({"POST"})
