"""Cookies: duplicates, case variants, empty and quoted values, cookies smuggled
in other places, and cross-site use of a cookie credential (CSRF).

Servers disagree on which of two same-named cookies wins and on how quotes
and separators nest, so edgeauth refuses the ambiguous ones (400) and never
reads a session from anywhere but its own ``Cookie`` pair.
"""

from __future__ import annotations

from ..cases import ADMIN, ALICE
from .common import HOST, LISTED, Attack

TOSSING = "GitHub, 'Yummy cookies across domains' (2013, cookie tossing); RFC 6265 §5.4"
PHANTOM = "PortSwigger Research, 'Bypassing WAFs with the phantom $Version cookie' (2024)"
SANDWICH = "PortSwigger Research, 'Stealing HttpOnly cookies with the cookie sandwich' (2025)"
PROTECTED = b"/api/protected/me"
ADMIN_PATH = b"/api/admin/users"


def sent(*values: str) -> tuple[tuple[str, str], ...]:
    """One Cookie header per value."""
    return tuple(("cookie", value) for value in values)


def alice(id: str, cookies: tuple[tuple[str, str], ...], source: str) -> Attack:
    """Cookies that still name alice's session, and only it: 200 as alice."""
    return Attack(
        id,
        PROTECTED,
        200,
        headers=cookies,
        forwarded=True,
        upstream_has={"x-user-id": "alice"},
        source=source,
    )


def ambiguous(id: str, cookies: tuple[tuple[str, str], ...], source: str) -> Attack:
    """Two different sessions in one request: 400, whichever a server would pick."""
    return Attack(id, ADMIN_PATH, 400, headers=cookies, code="bad_request", source=source)


def missing(
    id: str, headers: tuple[tuple[str, str], ...], source: str, path: bytes = ADMIN_PATH
) -> Attack:
    """No session cookie in its place: 401 missing_credentials."""
    return Attack(id, path, 401, headers=headers, code="missing_credentials", source=source)


def invalid(id: str, cookies: tuple[tuple[str, str], ...], source: str) -> Attack:
    """A session cookie whose value is no valid token: 401 invalid_token."""
    return Attack(id, ADMIN_PATH, 401, headers=cookies, code="invalid_token", source=source)


def csrf(id: str, headers: tuple[tuple[str, str], ...], source: str) -> Attack:
    """A cookie credential on an unsafe method from another site: 403 csrf."""
    return Attack(
        id,
        b"/api/protected/x",
        403,
        method="POST",
        headers=(("cookie", f"session={ALICE}"), *headers),
        code="csrf",
        source=source,
    )


CASES: tuple[Attack, ...] = (
    # Duplicates.
    alice("cookie-same-value-twice", sent(f"session={ALICE}; session={ALICE}"), TOSSING),
    ambiguous("cookie-two-sessions", sent(f"session={ALICE}; session={ADMIN}"), TOSSING),
    ambiguous("cookie-two-sessions-reversed", sent(f"session={ADMIN}; session={ALICE}"), TOSSING),
    ambiguous(
        "cookie-two-sessions-two-headers",
        sent(f"session={ALICE}", f"session={ADMIN}"),
        TOSSING + "; RFC 9113 §8.2.3 (split Cookie headers)",
    ),
    ambiguous(
        "cookie-two-sessions-among-others",
        sent(f"a=1; session={ALICE}; b=2", f"c=3; session={ADMIN}"),
        TOSSING,
    ),
    ambiguous(
        "cookie-quoted-and-plain-differ",
        sent(f'session="{ALICE}"; session={ADMIN}'),
        PHANTOM,
    ),
    # Case variants: cookie names are case-sensitive (RFC 6265 §5.4 step 1).
    missing("cookie-name-upper-case", sent(f"SESSION={ADMIN}"), "RFC 6265 §4.1.1; CWE-178"),
    missing("cookie-name-title-case", sent(f"Session={ADMIN}"), "RFC 6265 §4.1.1; CWE-178"),
    Attack(
        "cookie-case-variant-never-chosen",
        ADMIN_PATH,
        403,
        headers=sent(f"session={ALICE}; Session={ADMIN}; SESSION={ADMIN}"),
        code="forbidden",
        source="RFC 6265 §5.4; CWE-178",
    ),
    # Empty values count as absent; quotes are part of the syntax.
    missing("cookie-empty", sent("session="), "RFC 6265 §4.1.1 (empty cookie-value)"),
    missing("cookie-empty-quoted", sent('session=""'), "RFC 6265 §4.1.1 (DQUOTE cookie-value)"),
    missing("cookie-name-only", sent("session"), "RFC 6265 §5.2 (no '=')"),
    alice("cookie-empty-then-valid", sent(f"session=; session={ALICE}"), "RFC 6265 §5.4"),
    alice("cookie-valid-then-empty", sent(f"session={ALICE}; session="), "RFC 6265 §5.4"),
    alice("cookie-quoted", sent(f'session="{ALICE}"'), "RFC 6265 §4.1.1 (DQUOTE cookie-value)"),
    alice("cookie-spaces", sent(f" session = {ALICE} ;"), "RFC 6265 §5.2 (whitespace trimmed)"),
    # Injection through quoting, separators and legacy syntax.
    invalid(
        "cookie-injected-in-quoted-value",
        sent(f'theme="dark; session={ADMIN}"'),
        SANDWICH,
    ),
    ambiguous(
        "cookie-sandwich-second-session",
        sent(f'session={ALICE}; theme="x; session={ADMIN}"'),
        SANDWICH,
    ),
    ambiguous(
        "cookie-phantom-version",
        sent(f'$Version=1; session="{ALICE}\\"; session={ADMIN}"'),
        PHANTOM,
    ),
    alice("cookie-phantom-version-harmless", sent(f"$Version=1; session={ALICE}"), PHANTOM),
    invalid(
        "cookie-comma-separated",
        sent(f"session={ALICE}, session={ADMIN}"),
        "RFC 2965 §3.3.4 (',' separators); RFC 6265 §4.2.1",
    ),
    # Cookies anywhere else are no cookies.
    missing("cookie2-header", (("cookie2", f"session={ADMIN}"),), "RFC 2965 §3.3.5 (Cookie2)"),
    missing(
        "cookie-in-set-cookie",
        (("set-cookie", f"session={ADMIN}"),),
        "RFC 6265 §4.1 (Set-Cookie is a response header)",
    ),
    missing(
        "cookie-underscore-header",
        (("x_cookie", f"session={ADMIN}"), ("x-cookie", f"session={ADMIN}")),
        "RFC 3875 §4.1.18 (HTTP_COOKIE look-alikes)",
    ),
    missing(
        "cookie-in-query",
        (),
        "RFC 6265 §5.4; CWE-598",
        path=ADMIN_PATH + b"?session=" + ADMIN.encode(),
    ),
    missing(
        "cookie-in-authorization",
        (("authorization", f"Cookie session={ADMIN}"),),
        "RFC 9110 §11.6.2 (Authorization schemes)",
    ),
    missing(
        "cookie-in-forwarded-header",
        (("x-forwarded-cookie", f"session={ADMIN}"),),
        "CWE-290",
    ),
    # CSRF: a cookie credential on an unsafe method from a foreign origin.
    csrf(
        "csrf-foreign-origin",
        (("origin", "https://evil.example"),),
        "OWASP CSRF cheat sheet; CWE-352",
    ),
    csrf(
        "csrf-null-origin", (("origin", "null"),), "RFC 6454 §7.3 (opaque origin 'null'); CWE-352"
    ),
    csrf(
        "csrf-look-alike-origin",
        (("origin", f"http://{HOST}.evil.example"),),
        "CWE-352; CWE-942 (suffix match)",
    ),
    csrf(
        "csrf-other-port",
        (("origin", f"http://{HOST}:8080"),),
        "RFC 6454 §4 (port is part of the origin)",
    ),
    csrf(
        "csrf-other-scheme",
        (("origin", f"https://{HOST}"),),
        "RFC 6454 §4 (scheme is part of the origin)",
    ),
    csrf(
        "csrf-fetch-metadata",
        (("sec-fetch-site", "cross-site"),),
        "W3C Fetch Metadata Request Headers",
    ),
    csrf(
        "csrf-origin-wins-over-fetch-metadata",
        (("origin", "https://evil.example"), ("sec-fetch-site", "same-origin")),
        "W3C Fetch Metadata; OWASP CSRF cheat sheet (verify Origin)",
    ),
    Attack(
        "csrf-same-origin-passes",
        b"/api/protected/x",
        200,
        method="POST",
        headers=(("cookie", f"session={ALICE}"), ("origin", f"http://{HOST}")),
        body=b"{}",
        forwarded=True,
        source="OWASP CSRF cheat sheet (Origin verification)",
    ),
    Attack(
        "csrf-listed-cors-origin-passes",
        b"/api/v1/reports",
        200,
        method="POST",
        headers=(("cookie", f"session={ALICE}"), ("origin", LISTED)),
        body=b"{}",
        forwarded=True,
        source="Fetch standard, CORS protocol (credentialed requests)",
    ),
)
