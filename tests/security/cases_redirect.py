"""Open redirect through the login return path.

A signed-out visit to a page rule is redirected to ``login_url`` with
``next`` = the canonical path and query, percent-encoded. Whatever the client
puts in the target, ``Location`` stays the configured relative URL and
``next`` decodes to a same-site path: one '/' then never '/' or '\\' (no
``//host``, ``/\\host``, scheme or control character). Every response of every
case also passes :func:`tests.security.harness.check_relative`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import FA_UNRESOLVED, HOST, PAGES_HOST, Attack

CWE601 = "CWE-601 (open redirect)"
WHATWG = "WHATWG URL Standard, special-scheme '\\' and scheme-relative parsing"


def to_login(
    id: str,
    target: bytes,
    next_: str,
    source: str,
    *,
    host: str = PAGES_HOST,
    on: Mapping[str, Mapping[str, Any]] | None = None,
) -> Attack:
    """A page visit without a session: 302 to /login with exactly this ``next``."""
    return Attack(
        id,
        target,
        302,
        headers=(("host", host),),
        response_has={"location": f"/login?next={next_}"},
        source=source,
        on=on or {},
    )


def ambiguous(id: str, target: bytes, source: str) -> Attack:
    """A target that is ambiguous before it is a redirect: 400."""
    return Attack(
        id, target, 400, headers=(("host", PAGES_HOST),), code="bad_request", source=source
    )


CASES: tuple[Attack, ...] = (
    to_login(
        "redirect-network-path",
        b"//evil.example",
        "%2Fevil.example",
        f"{CWE601}; RFC 3986 §4.2 (network-path reference)",
        on=FA_UNRESOLVED,
    ),
    to_login(
        "redirect-triple-slash",
        b"///evil.example/x",
        "%2Fevil.example%2Fx",
        f"{CWE601}; {WHATWG}",
        on=FA_UNRESOLVED,
    ),
    to_login(
        "redirect-dot-slash-slash",
        b"/.//evil.example",
        "%2Fevil.example",
        CWE601,
        on=FA_UNRESOLVED,
    ),
    to_login(
        "redirect-dotdot-slash-slash",
        b"/x/..//evil.example",
        "%2Fevil.example",
        CWE601,
        on=FA_UNRESOLVED,
    ),
    ambiguous("redirect-backslash", b"/\\evil.example", f"{CWE601}; {WHATWG}"),
    ambiguous("redirect-encoded-backslash", b"/%5Cevil.example", f"{CWE601}; {WHATWG}"),
    ambiguous("redirect-encoded-slashes", b"/%2F%2Fevil.example", CWE601),
    ambiguous("redirect-double-encoded-slashes", b"/%252F%252Fevil.example", f"{CWE601}; CWE-174"),
    ambiguous("redirect-tab-slash", b"/%09/evil.example", f"{CWE601}; {WHATWG} (tab removal)"),
    ambiguous("redirect-newline-slash", b"/%0a/evil.example", f"{CWE601}; {WHATWG}"),
    ambiguous(
        "redirect-header-injection",
        b"/x%0d%0aLocation:%20https://evil.example",
        "CWE-113 (CRLF in Location)",
    ),
    to_login(
        "redirect-scheme-relative",
        b"/https:evil.example",
        "%2Fhttps%3Aevil.example",
        f"{CWE601}; {WHATWG} ('https:host' with a special base)",
    ),
    to_login(
        "redirect-absolute-url-in-path",
        b"/https://evil.example",
        "%2Fhttps%3A%2Fevil.example",
        CWE601,
        on=FA_UNRESOLVED,
    ),
    to_login(
        "redirect-javascript",
        b"/javascript:alert(1)",
        "%2Fjavascript%3Aalert%281%29",
        f"{CWE601}; CWE-79 (javascript: URLs)",
    ),
    to_login(
        "redirect-data-url",
        b"/data:text/html,x",
        "%2Fdata%3Atext%2Fhtml%2Cx",
        f"{CWE601}; CWE-79 (data: URLs)",
    ),
    to_login(
        "redirect-userinfo",
        b"/@evil.example",
        "%2F%40evil.example",
        f"{CWE601}; RFC 3986 §3.2.1",
    ),
    to_login(
        "redirect-fullwidth-slashes",
        b"/%EF%BC%8F%EF%BC%8Fevil.example",
        "%2F%25EF%25BC%258F%25EF%25BC%258Fevil.example",
        f"{CWE601}; Birch, Black Hat USA 2019 (NFKC turns U+FF0F into '/')",
    ),
    to_login(
        "redirect-query-next-stays-inside",
        b"/dashboard?next=//evil.example",
        "%2Fdashboard%3Fnext%3D%2F%2Fevil.example",
        f"{CWE601} (a 'next' of its own is part of the encoded return path)",
        host=HOST,
    ),
    to_login(
        "redirect-query-absolute-url",
        b"/dashboard?r=https://evil.example",
        "%2Fdashboard%3Fr%3Dhttps%3A%2F%2Fevil.example",
        CWE601,
        host=HOST,
    ),
    Attack(
        "redirect-host-header-not-used",
        b"/dashboard",
        302,
        headers=(("host", "evil.example"), ("x-forwarded-host", "evil.example")),
        response_has={"location": "/login?next=%2Fdashboard"},
        source="PortSwigger 'HTTP Host header attacks' (redirects built from Host)",
    ),
    Attack(
        "redirect-post-is-303-same-target",
        b"//evil.example",
        303,
        method="POST",
        headers=(("host", PAGES_HOST),),
        response_has={"location": "/login?next=%2Fevil.example"},
        source="RFC 9110 §15.4.4 (303 after POST); CWE-601",
        on=FA_UNRESOLVED,
    ),
)
