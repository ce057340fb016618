"""Methods: override headers and parameters never change the decision; HEAD and
OPTIONS are handled as their rules say.

Rules used: ``/api/login`` (POST only, public), ``/api/readonly/**`` (GET,
hence HEAD, public), ``/api/protected/**`` (any method, session).
"""

from __future__ import annotations

from .common import Attack, refused

WSTG = "OWASP WSTG-CONF-06 (HTTP method override)"
LOGIN = b"/api/login"
READONLY = b"/api/readonly/x"
PROTECTED = b"/api/protected/me"
# On the wire an answer to HEAD has no body (RFC 9110 §9.3.2), so no JSON code.
HEAD_ON_THE_WIRE = {"proxy": {"code": None}}
OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
OVERRIDES_SEEN = (
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x_http_method_override",
)


def denied(
    id: str, method: str, target: bytes, headers: tuple[tuple[str, str], ...], source: str
) -> Attack:
    """The real method matches no rule: 404, whatever the override says."""
    return Attack(id, target, 404, method=method, headers=headers, code="not_found", source=source)


def passed(
    id: str, method: str, target: bytes, headers: tuple[tuple[str, str], ...], source: str
) -> Attack:
    """The real method is allowed: forwarded, the override headers stripped."""
    return Attack(
        id,
        target,
        200,
        method=method,
        headers=headers,
        forwarded=True,
        upstream_lacks=OVERRIDES_SEEN,
        source=source,
    )


CASES: tuple[Attack, ...] = (
    *(
        denied(f"override-{name.lower()}-post-on-get", "GET", LOGIN, ((name, "POST"),), WSTG)
        for name in OVERRIDES
    ),
    denied(
        "override-underscore-spelling", "GET", LOGIN, (("X_HTTP_Method_Override", "POST"),), WSTG
    ),
    denied(
        "override-query-parameter",
        "GET",
        LOGIN + b"?_method=POST",
        (),
        f"{WSTG} (Rails/Laravel _method)",
    ),
    denied(
        "override-all-at-once",
        "DELETE",
        READONLY,
        tuple((name, "GET") for name in OVERRIDES),
        WSTG,
    ),
    denied("override-put-as-get", "PUT", READONLY, (("X-HTTP-Method-Override", "GET"),), WSTG),
    denied("override-patch-as-get", "PATCH", READONLY, (("X-HTTP-Method", "GET"),), WSTG),
    denied("override-post-as-get-query", "POST", READONLY + b"?_method=GET", (), WSTG),
    passed(
        "override-stripped-on-allowed-post",
        "POST",
        LOGIN,
        (*tuple((name, "GET") for name in OVERRIDES), ("X_HTTP_Method_Override", "GET")),
        WSTG,
    ),
    passed(
        "override-stripped-on-allowed-get",
        "GET",
        READONLY,
        tuple((name, "DELETE") for name in OVERRIDES),
        WSTG,
    ),
    Attack(
        "override-never-skips-authentication",
        PROTECTED,
        401,
        method="POST",
        headers=(("X-HTTP-Method-Override", "OPTIONS"),),
        code="missing_credentials",
        source=WSTG,
    ),
    # HEAD goes with GET, nothing else (RFC 9110 §9.3.2).
    passed("head-on-get-rule", "HEAD", READONLY, (), "RFC 9110 §9.3.2; docs/policy.md"),
    Attack(
        "head-on-post-rule",
        LOGIN,
        404,
        method="HEAD",
        code="not_found",
        source="RFC 9110 §9.3.2",
        on=HEAD_ON_THE_WIRE,
    ),
    Attack(
        "head-on-page-redirects",
        b"/dashboard",
        302,
        method="HEAD",
        response_has={"location": "/login?next=%2Fdashboard"},
        source="RFC 9110 §9.3.2, §15.4.3",
    ),
    Attack(
        "head-needs-credentials",
        PROTECTED,
        401,
        method="HEAD",
        code="missing_credentials",
        source="RFC 9110 §9.3.2 (HEAD is GET without body)",
        on=HEAD_ON_THE_WIRE,
    ),
    # OPTIONS is a method like the others unless it is a CORS preflight.
    denied("options-on-get-rule", "OPTIONS", READONLY, (), "RFC 9110 §9.3.7"),
    Attack(
        "options-needs-credentials",
        PROTECTED,
        401,
        method="OPTIONS",
        code="missing_credentials",
        source="RFC 9110 §9.3.7; CVE-2023-20860 class (methods skipped by matchers)",
    ),
    denied(
        "preflight-for-unlisted-method",
        "OPTIONS",
        LOGIN,
        (("origin", "https://evil.example"), ("access-control-request-method", "GET")),
        "Fetch standard §3.2.3 (preflight decided for the requested method)",
    ),
    # A preflight's shape is no way around a rule's methods: only a CORS rule
    # answers one, and to any other rule it is an OPTIONS request.
    denied(
        "preflight-shape-on-get-rule-without-cors",
        "OPTIONS",
        READONLY,
        (("origin", "https://app.example.com"), ("access-control-request-method", "GET")),
        "Fetch standard §3.2.3 (a preflight is answered for a CORS rule only); CWE-650",
    ),
    Attack(
        "request-method-header-without-origin-is-no-preflight",
        PROTECTED,
        401,
        method="OPTIONS",
        headers=(("access-control-request-method", "GET"),),
        code="missing_credentials",
        source="Fetch standard §3.2.3 (a preflight has an Origin)",
    ),
    # Other methods are decided like any method.
    Attack(
        "trace-needs-credentials",
        PROTECTED,
        401,
        method="TRACE",
        code="missing_credentials",
        source="RFC 9110 §9.3.8; Cross-Site Tracing (J. Grossman, 2003)",
    ),
    denied("trace-on-get-rule", "TRACE", READONLY, (), "RFC 9110 §9.3.8"),
    denied("webdav-on-get-rule", "PROPFIND", READONLY, (), "RFC 4918 §9.1"),
    Attack(
        "webdav-needs-credentials",
        PROTECTED,
        401,
        method="PROPFIND",
        code="missing_credentials",
        source="RFC 4918 §9.1",
    ),
    Attack(
        "lower-case-method-is-decided-as-upper",
        READONLY,
        404,
        method="delete",
        code="not_found",
        source="RFC 9110 §9.1 (methods are case-sensitive); CWE-178",
        # llhttp refuses a method it does not know, lower case included.
        on={"proxy": refused(400, "bad_request")},
    ),
)
