"""CORS: reflected origins, ``null``, look-alike origins, wildcards with credentials.

Origins are compared exactly and never reflected: only the listed origin
gets ``Access-Control-Allow-Origin`` (and the credentials grant), a wildcard
rule answers ``*`` without credentials, and a preflight is answered at the
edge, never forwarded.
"""

from __future__ import annotations

from ..cases import ALICE
from .common import API_KEY, LISTED, Attack

KETTLE = "J. Kettle, 'Exploiting CORS misconfigurations for Bitcoins and bounties' (2016)"
V1 = b"/api/v1/reports"
OPEN = b"/api/open/x"
GRANT = ("access-control-allow-origin", "access-control-allow-credentials")
LOOK_ALIKES = {
    "suffix": "https://app.example.com.evil.example",
    "prefix": "https://evilapp.example.com",
    "other-tld": "https://app.example.co",
    "longer-tld": "https://app.example.comm",
    "http": "http://app.example.com",
    "explicit-port": "https://app.example.com:443",
    "other-port": "https://app.example.com:8443",
    "upper-case": "https://APP.example.com",
    "trailing-slash": "https://app.example.com/",
    "userinfo": "https://app.example.com@evil.example",
    "backtick": "https://app.example.com`.evil.example",
    "underscore": "https://app.example.com_.evil.example",
    "escaped-dot": "https://app%2eexample.com",
    "subdomain": "https://evil.app.example.com",
    "null": "null",
    "wildcard": "*",
    "empty": "",
}


def _actual(name: str, origin: str) -> Attack:
    return Attack(
        f"cors-actual-{name}",
        V1,
        200,
        headers=(("origin", origin), ("x-api-key", API_KEY)),
        forwarded=True,
        response_has={"vary": "Origin"},
        response_lacks=GRANT,
        # The app answers 'Access-Control-Allow-Origin: *': on a credentialed
        # rule edgeauth's answer replaces it.
        source=f"{KETTLE}; CWE-942; Fetch standard §3.2.5 ('*' with credentials)",
    )


def _preflight(name: str, origin: str) -> Attack:
    return Attack(
        f"cors-preflight-{name}",
        V1,
        403,
        method="OPTIONS",
        headers=(("origin", origin), ("access-control-request-method", "GET")),
        code="forbidden",
        response_lacks=(*GRANT, "access-control-allow-methods"),
        source=f"{KETTLE}; Fetch standard §3.2.3 (CORS-preflight)",
    )


CASES: tuple[Attack, ...] = (
    Attack(
        "cors-listed-origin-granted",
        V1,
        200,
        headers=(("origin", LISTED), ("x-api-key", API_KEY)),
        forwarded=True,
        response_has={
            "access-control-allow-origin": LISTED,
            "access-control-allow-credentials": "true",
            "vary": "Origin",
        },
        source="Fetch standard §3.2.5 (CORS protocol and credentials)",
    ),
    _actual("foreign", "https://evil.example"),
    *(_actual(name, origin) for name, origin in LOOK_ALIKES.items()),
    *(_preflight(name, origin) for name, origin in LOOK_ALIKES.items()),
    _preflight("foreign", "https://evil.example"),
    Attack(
        "cors-two-origins",
        V1,
        400,
        headers=(("origin", LISTED), ("origin", "https://evil.example"), ("x-api-key", API_KEY)),
        code="bad_request",
        source="RFC 6454 §7.3 (one Origin); RFC 9110 §5.3",
    ),
    Attack(
        "cors-preflight-listed-is-not-forwarded",
        V1,
        204,
        method="OPTIONS",
        headers=(
            ("origin", LISTED),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "x-user-id, x-api-key"),
            ("cookie", f"session={ALICE}"),
        ),
        response_has={
            "access-control-allow-origin": LISTED,
            # The grant lists the configured headers, never the requested ones.
            "access-control-allow-headers": "authorization, content-type",
        },
        source=f"{KETTLE} (reflected request headers); Fetch standard §3.2.3",
    ),
    Attack(
        "cors-preflight-unlisted-method",
        V1,
        403,
        method="OPTIONS",
        headers=(("origin", LISTED), ("access-control-request-method", "CONNECT")),
        code="forbidden",
        response_lacks=GRANT,
        source="Fetch standard §3.2.3; RFC 9110 §9.3.6",
    ),
    Attack(
        "cors-preflight-on-rule-without-cors-authenticates",
        b"/api/protected/me",
        401,
        method="OPTIONS",
        headers=(("origin", LISTED), ("access-control-request-method", "GET")),
        code="missing_credentials",
        response_lacks=GRANT,
        source="Fetch standard §3.2.3 (a preflight is no free pass); CWE-942",
    ),
    Attack(
        "cors-denial-to-listed-origin-keeps-grant-only-for-it",
        V1,
        401,
        headers=(("origin", LISTED),),
        code="missing_credentials",
        response_has={"access-control-allow-origin": LISTED, "vary": "Origin"},
        source="Fetch standard §3.2.5 (errors readable by the listed origin only)",
    ),
    # A wildcard rule answers '*', never the origin, and never with credentials.
    Attack(
        "cors-wildcard-not-reflected",
        OPEN,
        200,
        headers=(("origin", "https://evil.example"),),
        forwarded=True,
        response_has={"access-control-allow-origin": "*", "vary": "Origin"},
        response_lacks=("access-control-allow-credentials",),
        source=f"{KETTLE}; Fetch standard §3.2.5",
    ),
    Attack(
        "cors-wildcard-null-origin",
        OPEN,
        200,
        headers=(("origin", "null"),),
        forwarded=True,
        response_has={"access-control-allow-origin": "*"},
        response_lacks=("access-control-allow-credentials",),
        source=f"{KETTLE} (null origin); RFC 6454 §7.3",
    ),
    Attack(
        "cors-wildcard-preflight",
        OPEN,
        204,
        method="OPTIONS",
        headers=(("origin", "https://evil.example"), ("access-control-request-method", "GET")),
        response_has={"access-control-allow-origin": "*"},
        response_lacks=("access-control-allow-credentials",),
        source="Fetch standard §3.2.3; CWE-942",
    ),
)
