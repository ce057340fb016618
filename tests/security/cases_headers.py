"""Header spoofing: identity headers in every spelling, hop-by-hop removal tricks,
forwarding headers from untrusted peers, internal-control headers, and Host.

The app must never receive a client's copy of an identity header in any
spelling, and no header a client sends (however trusted it is elsewhere) may
change which rule decides or who the caller is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cases import ADMIN, ALICE, cookie
from .common import API_KEY, HOST, INTERNAL_HOST, UNTRUSTED, Attack, refused

# docs/policy.md, "[identity]": stripped before anything else, in every spelling.
IDENTITY_NAMES: dict[str, str] = {
    "x-user-id": "RFC 3875 §4.1.18 ('-' and '_' meet in CGI names); CWE-290",
    "x-user-role": "RFC 3875 §4.1.18; CWE-290",
    "remote-user": "Django docs, 'Authentication using REMOTE_USER' (HTTP_REMOTE_USER spoofing)",
    "x-remote-user": "CWE-290; Apache mod_auth REMOTE_USER as a header",
    "x-forwarded-user": "oauth2-proxy pass_user_headers; CWE-290",
    "x-forwarded-email": "oauth2-proxy pass_user_headers; CWE-290",
    "x-forwarded-groups": "oauth2-proxy pass_user_headers; CWE-290",
    "x-auth-request-user": "oauth2-proxy set_xauthrequest (nginx auth_request); CWE-290",
    "x-auth-request-email": "oauth2-proxy set_xauthrequest; CWE-290",
    "x-original-url": "CVE-2018-14773 (Symfony X-Original-URL)",
    "x-rewrite-url": "CVE-2018-14773 (Symfony X-Rewrite-URL)",
    "x-http-method-override": "OWASP WSTG-CONF-06 (method override headers)",
    "x-http-method": "OWASP WSTG-CONF-06",
    "x-method-override": "OWASP WSTG-CONF-06",
    "x-internal-flag": "docs/policy.md [identity] strip; CWE-290",
}


def spellings(name: str) -> tuple[str, ...]:
    """``name`` in every spelling some server folds together: case, and '_' for '-'."""
    title = "-".join(part.capitalize() for part in name.split("-"))
    return (
        name,
        title,
        name.upper(),
        name.replace("-", "_"),
        title.replace("-", "_"),
        name.replace("-", "_", 1),
    )


def lowered(name: str) -> tuple[str, ...]:
    """The distinct lower-case spellings of ``name`` the app could see."""
    return tuple(dict.fromkeys(s.lower() for s in spellings(name)))


def _spoof(name: str, source: str) -> Attack:
    sent = tuple((s, "mallory") for s in spellings(name) for _ in range(2))
    return Attack(
        f"spoof-{name}",
        b"/public/x",
        200,
        headers=sent,
        forwarded=True,
        upstream_lacks=lowered(name),
        source=source,
    )


# A client's copy of a forward-auth dialect's request-line header: a gateway of
# that dialect replaces it with its own; any other gateway's request carries it
# as a foreign dialect's header, which is 403 untrusted_peer.
def _dialect_header(owner: str) -> dict[str, Mapping[str, Any]]:
    return {
        f"forward_auth:{d}": refused(403, "untrusted_peer")
        for d in ("nginx", "caddy", "envoy")
        if d != owner
    }


CSRF_POST = (cookie(ALICE), ("origin", f"https://{HOST}"), ("x-forwarded-proto", "https"))

CASES: tuple[Attack, ...] = (
    *(_spoof(name, source) for name, source in IDENTITY_NAMES.items()),
    Attack(
        "spoof-identity-replaced-by-verified",
        b"/api/protected/me",
        200,
        headers=(
            cookie(ALICE),
            *((s, "mallory") for s in spellings("x-user-id")),
            *((s, "admin") for s in spellings("x-user-role")),
        ),
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
        upstream_lacks=("x_user_id", "x_user_role", "x-user_id", "x-user_role"),
        source="CVE-2025-29927 class (trusting client-sent internal headers); CWE-290",
    ),
    Attack(
        "spoof-role-never-authorizes",
        b"/api/admin/users",
        403,
        headers=(cookie(ALICE), *((s, "admin") for s in spellings("x-user-role"))),
        code="forbidden",
        source="CWE-290; CWE-639 (authorization through user-controlled keys)",
    ),
    Attack(
        "spoof-without-credential-is-401",
        b"/api/admin/users",
        401,
        headers=(("x-user-id", "root"), ("x-user-role", "admin"), ("remote-user", "root")),
        code="missing_credentials",
        source="CWE-290",
    ),
    # Connection names headers to drop at the next hop (RFC 9110 §7.6.1).
    Attack(
        "connection-names-identity",
        b"/api/protected/me",
        200,
        headers=(cookie(ALICE), ("connection", "x-user-id, x-user-role")),
        forwarded=True,
        upstream_has={"x-user-id": "alice", "x-user-role": "user"},
        source="CVE-2024-45410 (Traefik: Connection removes proxy-set headers); RFC 9110 §7.6.1",
    ),
    Attack(
        "connection-names-identity-mixed-case",
        b"/api/admin/users",
        200,
        headers=(cookie(ADMIN), ("connection", "close, X-User-Role,X-USER-ID")),
        forwarded=True,
        upstream_has={"x-user-id": "root", "x-user-role": "admin"},
        source="CVE-2024-45410; RFC 9110 §7.6.1",
    ),
    Attack(
        "connection-names-forwarding-headers",
        b"/public/x",
        200,
        headers=(("connection", "x-forwarded-for, x-forwarded-proto, x-forwarded-host"),),
        forwarded=True,
        source="CVE-2024-45410 (X-Forwarded-* removed through Connection)",
        on={
            "proxy": {
                "upstream_has": {
                    "x-forwarded-for": "127.0.0.1",
                    "x-forwarded-proto": "http",
                    "x-forwarded-host": HOST,
                }
            }
        },
    ),
    Attack(
        "connection-names-host",
        b"/public/x",
        200,
        headers=(("connection", "host"),),
        forwarded=True,
        upstream_has={"host": HOST},
        source="RFC 9110 §7.6.1; PortSwigger 'Abusing HTTP hop-by-hop request headers' (2019)",
    ),
    Attack(
        "connection-names-cookie",
        b"/api/protected/me",
        200,
        headers=(cookie(ALICE), ("connection", "cookie")),
        forwarded=True,
        upstream_has={"x-user-id": "alice"},
        source="PortSwigger 'Abusing HTTP hop-by-hop request headers' (2019)",
    ),
    Attack(
        "connection-names-authorization",
        b"/api/v1/reports",
        200,
        headers=(("authorization", f"Bearer {API_KEY}"), ("connection", "authorization")),
        forwarded=True,
        upstream_has={"x-user-id": "svc-reporting"},
        upstream_lacks=("authorization",),
        source="PortSwigger 'Abusing HTTP hop-by-hop request headers' (2019)",
    ),
    # X-Forwarded-* and Forwarded are believed only from trusted proxies.
    Attack(
        "untrusted-x-forwarded-for",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "127.0.0.1")),
        forwarded=True,
        upstream_not_containing={"x-forwarded-for": "6.6.6.6"},
        source="GHSA-7x63-xv5r-3p2x (oauth2-proxy trusted spoofed X-Forwarded-*); CWE-348",
    ),
    Attack(
        "untrusted-x-forwarded-for-underscore",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("X_Forwarded_For", "6.6.6.6"),),
        forwarded=True,
        upstream_lacks=("x_forwarded_for",),
        upstream_not_containing={"x-forwarded-for": "6.6.6.6"},
        source="RFC 3875 §4.1.18 (HTTP_X_FORWARDED_FOR); CWE-348",
    ),
    Attack(
        "untrusted-x-forwarded-host",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("x-forwarded-host", "evil.example"),),
        forwarded=True,
        upstream_not_containing={"x-forwarded-host": "evil.example"},
        source="PortSwigger 'HTTP Host header attacks' (X-Forwarded-Host); CWE-348",
    ),
    Attack(
        "untrusted-x-forwarded-proto",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("x-forwarded-proto", "https"),),
        forwarded=True,
        upstream_not_containing={"x-forwarded-proto": "https"},
        source="CWE-348; docs/policy.md [server] trusted_proxies",
    ),
    *(
        Attack(
            f"untrusted-{name}",
            b"/public/x",
            200,
            peer=UNTRUSTED,
            headers=((name, value),),
            forwarded=True,
            upstream_lacks=(name,),
            source=f"docs/policy.md: X-Forwarded-* from untrusted peers are removed; {source}",
        )
        for name, value, source in (
            ("x-forwarded-port", "443", "CWE-348"),
            ("x-forwarded-prefix", "/api/admin", "Spring ForwardedHeaderFilter, Werkzeug ProxyFix"),
            ("x-forwarded-server", "internal.test", "Apache mod_proxy X-Forwarded-Server"),
            ("x-forwarded-ssl", "on", "Rack X-Forwarded-Ssl"),
            ("x-forwarded-scheme", "https", "Rack X-Forwarded-Scheme"),
            (
                "x-forwarded-client-cert",
                "By=spiffe://edge;URI=spiffe://cluster/ns/admin",
                "Envoy x-forwarded-client-cert (mTLS identity); CWE-290",
            ),
            ("x-real-ip", "6.6.6.6", "nginx realip module; CWE-348"),
        )
    ),
    *(
        Attack(
            f"untrusted-{name}",
            b"/public/x",
            200,
            peer=UNTRUSTED,
            headers=((name, value),),
            forwarded=True,
            upstream_lacks=(name,),
            source=f"docs/policy.md: X-Forwarded-* from untrusted peers are removed; {source}",
            on=_dialect_header("caddy"),
        )
        for name, value, source in (
            ("x-forwarded-uri", "/public/x", "GHSA-7x63-xv5r-3p2x (an app trusting it)"),
            ("x-forwarded-method", "GET", "GHSA-7x63-xv5r-3p2x class"),
        )
    ),
    Attack(
        "untrusted-forwarded",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("forwarded", "for=6.6.6.6;proto=https;host=internal.test"),),
        forwarded=True,
        upstream_lacks=("forwarded",),
        source="RFC 7239 §8.1 (Forwarded from untrusted hops); CWE-348",
    ),
    Attack(
        "untrusted-forwarded-upper",
        b"/public/x",
        200,
        peer=UNTRUSTED,
        headers=(("FORWARDED", "for=6.6.6.6"),),
        forwarded=True,
        upstream_lacks=("forwarded",),
        source="RFC 7239 §8.1; RFC 9110 §5.1 (names are case-insensitive)",
    ),
    Attack(
        "untrusted-proto-does-not-pass-csrf",
        b"/api/protected/x",
        403,
        method="POST",
        peer=UNTRUSTED,
        headers=CSRF_POST,
        code="csrf",
        source="CWE-352; CWE-348 (scheme from an untrusted X-Forwarded-Proto)",
    ),
    Attack(
        "trusted-proto-is-believed",
        b"/api/protected/x",
        200,
        method="POST",
        headers=CSRF_POST,
        body=b"{}",
        forwarded=True,
        source="docs/policy.md [server] trusted_proxies; Fetch Metadata (W3C)",
        # A gateway terminates the client connection and sends its own scheme.
        on={"forward_auth": refused(403, "csrf")},
    ),
    Attack(
        "x-forwarded-host-never-chooses-the-rule",
        b"/internal/x",
        404,
        headers=(("x-forwarded-host", INTERNAL_HOST),),
        code="not_found",
        source="PortSwigger 'HTTP Host header attacks'; CWE-348",
    ),
    Attack(
        "forwarded-host-never-chooses-the-rule",
        b"/internal/x",
        404,
        headers=(("forwarded", f"host={INTERNAL_HOST}"),),
        code="not_found",
        source="RFC 7239 §5.3; CWE-348",
    ),
    # Internal-control headers that other systems act on: no effect on edgeauth.
    *(
        Attack(
            f"internal-{name}-{index}",
            b"/api/admin/users",
            401,
            headers=((name, value),),
            code="missing_credentials",
            source=source,
        )
        for index, (name, value, source) in enumerate(
            (
                ("x-middleware-subrequest", "middleware", "CVE-2025-29927 (Next.js)"),
                (
                    "x-middleware-subrequest",
                    ":".join(["middleware"] * 5),
                    "CVE-2025-29927 (Next.js 15 recursion depth)",
                ),
                (
                    "x-middleware-subrequest",
                    ":".join(["src/middleware"] * 5),
                    "CVE-2025-29927 (src/ layout)",
                ),
                ("x-middleware-prefetch", "1", "CVE-2025-29927 class"),
                ("x-invoke-path", "/public/x", "CVE-2025-29927 class (Next.js internal routing)"),
                ("x-matched-path", "/public/x", "CVE-2025-29927 class"),
                ("x-original-url", "/public/x", "CVE-2018-14773 (Symfony)"),
                ("x-rewrite-url", "/public/x", "CVE-2018-14773 (Symfony)"),
                (
                    "x-envoy-original-path",
                    "/public/x",
                    "CWE-290; Envoy docs (x-envoy-original-path)",
                ),
                ("x-envoy-internal", "true", "CWE-290; Envoy docs (x-envoy-internal)"),
                ("x-edgeauth-status", "200", "CWE-290 (edgeauth's own gateway headers)"),
                ("x-edgeauth-withheld", "", "CWE-290 (edgeauth's own gateway headers)"),
                ("x-request-id", "0000000000000000", "CWE-290"),
            )
        )
    ),
    Attack(
        "client-x-forwarded-uri",
        b"/api/admin/users",
        401,
        headers=(("x-forwarded-uri", "/public/x"),),
        code="missing_credentials",
        source="GHSA-7x63-xv5r-3p2x (oauth2-proxy decided on a spoofed X-Forwarded-Uri)",
        on=_dialect_header("caddy"),
    ),
    Attack(
        "client-x-original-uri",
        b"/api/admin/users",
        401,
        headers=(("x-original-uri", "/public/x"),),
        code="missing_credentials",
        source="GHSA-7x63-xv5r-3p2x class (nginx auth_request's X-Original-URI)",
        on=_dialect_header("nginx"),
    ),
    Attack(
        "client-x-forwarded-method",
        b"/api/readonly/x",
        404,
        method="DELETE",
        headers=(("x-forwarded-method", "GET"),),
        code="not_found",
        source="GHSA-7x63-xv5r-3p2x class; OWASP WSTG-CONF-06",
        on=_dialect_header("caddy"),
    ),
    Attack(
        "client-x-original-method",
        b"/api/readonly/x",
        404,
        method="DELETE",
        headers=(("x-original-method", "GET"),),
        code="not_found",
        source="GHSA-7x63-xv5r-3p2x class; OWASP WSTG-CONF-06",
        on=_dialect_header("nginx"),
    ),
    *(
        Attack(
            f"client-{name.lower()}",
            b"/api/admin/users",
            401,
            headers=((name, "/public/x"),),
            code="missing_credentials",
            source="GHSA-7x63-xv5r-3p2x; RFC 3875 §4.1.18 ('_' for '-')",
            # A gateway keeps the underscore spelling next to its own header:
            # repeated or foreign, it is 403 untrusted_peer in every dialect.
            on={"forward_auth": refused(403, "untrusted_peer")},
        )
        for name in ("X_Forwarded_Uri", "X_Original_URI", "x_forwarded_method")
    ),
    # Host: rules bound to a host match the Host the request names, nothing else.
    Attack(
        "host-exact",
        b"/internal/x",
        200,
        headers=(("host", INTERNAL_HOST),),
        forwarded=True,
        source="RFC 9110 §7.2 (Host)",
    ),
    Attack(
        "host-trailing-dot",
        b"/internal/x",
        200,
        headers=(("host", INTERNAL_HOST + "."),),
        forwarded=True,
        source="RFC 1034 §3.1 (absolute names); PortSwigger 'HTTP Host header attacks'",
    ),
    Attack(
        "host-upper-case",
        b"/internal/x",
        200,
        headers=(("host", INTERNAL_HOST.upper()),),
        forwarded=True,
        source="RFC 9110 §4.2.3 (host is case-insensitive)",
    ),
    Attack(
        "host-with-port",
        b"/internal/x",
        200,
        headers=(("host", INTERNAL_HOST + ":8443"),),
        forwarded=True,
        source="RFC 9110 §7.2",
    ),
    *(
        Attack(
            f"host-{name}",
            b"/internal/x",
            400,
            headers=(("host", value),),
            code="bad_request",
            source="RFC 9112 §3.2 (invalid Host is 400); RFC 3986 §3.2.2; " + source,
        )
        for name, value, source in (
            ("userinfo", f"evil.example@{INTERNAL_HOST}", "PortSwigger Host header attacks"),
            ("with-path", f"{INTERNAL_HOST}/x", "PortSwigger Host header attacks"),
            ("with-space", f"{INTERNAL_HOST} evil.example", "PortSwigger Host header attacks"),
            ("dotless-i", "\xc4\xb1nternal.test", "Birch, Black Hat USA 2019 (U+0131)"),
            ("bad-port", f"{INTERNAL_HOST}:80:80", "RFC 3986 §3.2.3"),
        )
    ),
    Attack(
        "host-twice",
        b"/internal/x",
        400,
        headers=(("host", HOST), ("host", INTERNAL_HOST)),
        code="bad_request",
        source="RFC 9112 §3.2 (more than one Host is 400); PortSwigger Host header attacks",
        # A gateway forwards both as its host header: two are untrusted_peer.
        on={"forward_auth": refused(403, "untrusted_peer")},
    ),
    Attack(
        "host-suffix-look-alike",
        b"/internal/x",
        404,
        headers=(("host", f"{INTERNAL_HOST}.evil.example"),),
        code="not_found",
        source="PortSwigger Host header attacks (suffix match)",
    ),
    Attack(
        "host-prefix-look-alike",
        b"/internal/x",
        404,
        headers=(("host", f"evil{INTERNAL_HOST}"),),
        code="not_found",
        source="PortSwigger Host header attacks (prefix match)",
    ),
    Attack(
        "host-empty",
        b"/internal/x",
        404,
        headers=(("host", ""),),
        code="not_found",
        source="RFC 9112 §3.2",
    ),
)
