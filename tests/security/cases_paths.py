"""Path confusion: make edgeauth authorize one path while the app serves another.

Every spelling here is one that some server, router or framework reads
differently from another. edgeauth either refuses it (400 ``bad_request``) or
decides on, and forwards, one canonical path; with the default ``deny``, a
spelling no rule names is 404 and never reaches the app.
"""

from __future__ import annotations

from ..cases import ADMIN, ALICE, cookie
from .common import FA_NOT_ORIGIN_FORM, FA_UNRESOLVED, PROXY_RAW_BYTES, Attack, refused

ORANGE = "Orange Tsai, 'Breaking Parser Logic', Black Hat USA 2018"


def bad(id: str, target: bytes, source: str) -> Attack:
    """A spelling that is ambiguous somewhere: 400 on every front-end."""
    return Attack(id, target, 400, code="bad_request", source=source)


def admin_401(id: str, target: bytes, source: str) -> Attack:
    """A spelling with dot or empty segments that resolves to the admin rule:
    decided there (no credential: 401); forward-auth refuses it."""
    return Attack(id, target, 401, code="missing_credentials", source=source, on=FA_UNRESOLVED)


def unmatched(id: str, target: bytes, source: str) -> Attack:
    """A spelling no rule names: the default deny, never the app."""
    return Attack(id, target, 404, code="not_found", source=source)


CASES: tuple[Attack, ...] = (
    # Encoded "/" and "\": a separator for some, a character for others.
    bad("enc-slash-lower", b"/api%2fadmin/users", "CVE-2021-29492 (Envoy %2F); CVE-2016-9879"),
    bad("enc-slash-upper", b"/public/..%2Fapi/admin/users", "CVE-2021-29492; " + ORANGE),
    bad("enc-slash-everywhere", b"/public%2F..%2Fapi%2Fadmin", "CVE-2021-29492"),
    bad("enc-backslash-lower", b"/public/..%5capi/admin/users", "CVE-2000-0884 (IIS '\\')"),
    bad("enc-backslash-upper", b"/public/..%5Capi/admin/users", "CVE-2000-0884; CWE-22"),
    bad("raw-backslash", b"/public\\..\\api\\admin\\users", "CVE-2000-0884; WHATWG URL '\\'"),
    bad("raw-backslash-dot", b"/public/..\\api/admin", "CVE-2000-0884; " + ORANGE),
    # Double and nested encoding.
    bad("double-enc-slash", b"/public/..%252Fapi/admin", "CVE-2020-11989 (Shiro %25%32%66)"),
    bad("double-enc-dots", b"/public/%252e%252e/api/admin", "CVE-2021-42013 (httpd)"),
    bad("double-enc-backslash", b"/public/..%255capi/admin", "CVE-2001-0333 (IIS double decode)"),
    bad("triple-enc-dots", b"/public/%25252e%25252e/api/admin", "CWE-174 (double decoding)"),
    bad("escaped-escape", b"/public/%25%32%65%25%32%65/api/admin", "CVE-2020-11989; CWE-174"),
    bad("httpd-percent-percent", b"/public/.%%32%65/api/admin", "CVE-2021-42013 (.%%32%65)"),
    bad("iis-u-encoding", b"/public/%u002e%u002e/api/admin", "CWE-177 (IIS %u encoding)"),
    bad("lone-percent", b"/public/x%", "RFC 3986 §2.1 (pct-encoded is '%' HEXDIG HEXDIG)"),
    bad("bad-hex", b"/public/%zz", "RFC 3986 §2.1"),
    bad("short-escape", b"/public/%4", "RFC 3986 §2.1"),
    # Path parameters: Tomcat, Jetty and Spring strip ";...", others do not.
    bad("tomcat-dotdot-semicolon", b"/public/..;/api/admin/users", ORANGE + " ('..;/')"),
    bad("shiro-semicolon-root", b"/;/api/admin/users", "CVE-2020-1957 (Shiro '/;/')"),
    bad("encoded-semicolon", b"/api/admin%3b/users", "CVE-2020-13933 (Shiro %3b)"),
    bad("encoded-semicolon-upper", b"/public/x%3B/../../api/admin", "CVE-2020-13933"),
    bad("jsessionid", b"/public/x;jsessionid=abc", "CVE-2016-5007 class; RFC 3986 §3.3"),
    bad("double-enc-semicolon", b"/public/%253b/../api/admin", "CVE-2020-11989; CVE-2020-13933"),
    # NUL and control characters.
    bad("nul-escaped", b"/public/x%00.json", "CWE-158; CVE-2013-4547 (nginx)"),
    bad("nul-in-admin", b"/api/admin%00/users", "CWE-158"),
    bad("nul-raw", b"/public/x\x00", "CWE-158; CVE-2013-4547"),
    bad("newline", b"/api/admin%0a/users", "CVE-2022-22978 (Spring regex '.' vs '\\n')"),
    bad("carriage-return", b"/api/admin%0d/users", "CVE-2022-32532 (Shiro '\\r')"),
    bad("tab", b"/api/admin%09/users", "CWE-158 family; RFC 9112 §3.2"),
    bad("delete-char", b"/public/x%7f", "RFC 3986 §2 (no controls)"),
    bad("c1-next-line", b"/public/x%c2%85", "CWE-176 (U+0085 NEL)"),
    bad("raw-control", b"/public/\x01x", "RFC 9112 §3.2"),
    # Overlong and invalid UTF-8.
    bad("overlong-slash", b"/public/..%c0%afapi/admin", "CVE-2000-0884 (IIS Unicode %c0%af)"),
    bad("overlong-dots", b"/public/%c0%ae%c0%ae/api/admin", "CVE-2000-0884; CWE-176"),
    bad("overlong-3-byte", b"/public/..%e0%80%afapi", "RFC 3629 §3 (overlong forms)"),
    bad("overlong-4-byte", b"/public/..%f0%80%80%afapi", "RFC 3629 §3"),
    bad("overlong-backslash", b"/public/..%c1%9capi", "CVE-2000-0884"),
    bad("overlong-nul", b"/public/x%c0%80", "CWE-176 (modified UTF-8 NUL)"),
    bad("invalid-ff", b"/public/%ff", "RFC 3629 §3"),
    bad("invalid-truncated", b"/public/caf%c3", "RFC 3629 §3"),
    bad("invalid-continuation", b"/public/%c3%28", "RFC 3629 §3"),
    bad("surrogate", b"/public/%ed%a0%80", "RFC 3629 §3 (CESU-8 surrogates)"),
    bad("above-max-codepoint", b"/public/%f4%90%80%80", "RFC 3629 §3"),
    bad("raw-overlong", b"/public/\xc0\xaf", "CVE-2000-0884"),
    bad("raw-invalid", b"/public/\xff", "RFC 3629 §3"),
    # Dot segments above the root.
    bad("above-root", b"/../api/admin/users", "RFC 3986 §5.2.4; CWE-22"),
    bad("above-root-deep", b"/public/../../api/admin", "RFC 3986 §5.2.4"),
    bad("above-root-encoded", b"/%2e%2e/api/admin", "CVE-2021-41773"),
    # Fragments: never part of a request target (RFC 9112 §3.2).
    bad("fragment", b"/public/x#frag", "RFC 9112 §3.2; GHSA-pxq7-h93f-9jrg (oauth2-proxy '#')"),
    bad(
        "fragment-hides-admin",
        b"/api/admin/users#/../../public/x",
        "GHSA-pxq7-h93f-9jrg; RFC 3986 §3.5",
    ),
    bad("fragment-after-public", b"/public/x#/../../../api/admin", "GHSA-pxq7-h93f-9jrg"),
    # Dot segments and repeated slashes below the root: resolved, then decided.
    admin_401("dots-encoded", b"/public/%2e%2e/api/admin/users", "CVE-2021-41773 (%2e)"),
    admin_401("dots-mixed", b"/public/.%2e/api/admin/users", "CVE-2021-41773 ('.%2e')"),
    admin_401("dots-upper", b"/public/%2E%2E/api/admin/users", "CVE-2021-41773"),
    admin_401("dots-raw", b"/public/../api/admin/users", "CVE-2019-9901 (Envoy); CWE-57"),
    admin_401("single-dot", b"/api/./admin/users", "CWE-55 ('/./')"),
    admin_401("single-dot-encoded", b"/api/%2e/admin/users", "CWE-55; CVE-2021-41773"),
    admin_401("trailing-dotdot", b"/api/admin/users/..", "RFC 3986 §5.2.4"),
    admin_401("trailing-dot", b"/api/admin/.", "RFC 3986 §5.2.4"),
    admin_401("leading-slashes", b"//api/admin/users", "CWE-50 ('//multiple/leading/slash')"),
    admin_401("internal-slashes", b"/api//admin/users", "CWE-51 (internal '//')"),
    admin_401("trailing-slashes", b"/api/admin/users//", "CWE-52 (trailing '//')"),
    admin_401("many-slashes", b"/api////admin///users", "CWE-51; nginx merge_slashes"),
    admin_401("public-dot-slash-admin", b"/public/..//api/admin/users", ORANGE),
    Attack(
        "dots-forward-the-authorized-path",
        b"/public/%2e%2e/api/admin/users",
        200,
        headers=(cookie(ADMIN),),
        forwarded=True,
        upstream_path="/api/admin/users",
        upstream_has={"x-user-id": "root"},
        source="CVE-2021-41773; RFC 3986 §6.2.2.3",
        on=FA_UNRESOLVED,
    ),
    Attack(
        "slashes-forward-the-authorized-path",
        b"/public/..//api/protected//me",
        200,
        headers=(cookie(ALICE),),
        forwarded=True,
        upstream_path="/api/protected/me",
        upstream_has={"x-user-id": "alice"},
        source="CWE-51; " + ORANGE,
        on=FA_UNRESOLVED,
    ),
    Attack(
        "three-dots-is-a-name",
        b"/public/.../x",
        200,
        forwarded=True,
        upstream_path="/public/.../x",
        source="RFC 3986 §3.3 (only '.' and '..' are dot segments)",
    ),
    # Escapes of unreserved characters mean the character itself.
    Attack(
        "escaped-letter",
        b"/api/%61dmin/users",
        401,
        code="missing_credentials",
        source="RFC 3986 §2.3, §6.2.2.2",
    ),
    Attack(
        "escaped-letter-lower-hex",
        b"/api/admi%6e/users",
        401,
        code="missing_credentials",
        source="RFC 3986 §6.2.2.1 (hex case), §6.2.2.2",
    ),
    Attack(
        "escaped-whole-prefix",
        b"/%61%70%69/%61%64%6d%69%6e/users",
        401,
        code="missing_credentials",
        source="RFC 3986 §6.2.2.2; CWE-172",
    ),
    Attack(
        "escaped-tilde-decoded",
        b"/public/%7euser",
        200,
        forwarded=True,
        upstream_path="/public/~user",
        source="RFC 3986 §2.3",
    ),
    Attack(
        "reserved-escape-kept-upper",
        b"/public/a%2cb",
        200,
        forwarded=True,
        upstream_path="/public/a%2Cb",
        source="RFC 3986 §6.2.2.1 (upper-case hex), §2.2 (reserved kept)",
    ),
    Attack(
        "escaped-question-mark-stays-in-path",
        b"/public/x%3F/../../api/admin/users",
        401,
        code="missing_credentials",
        source="RFC 3986 §3.3; " + ORANGE,
        on=FA_UNRESOLVED,
    ),
    Attack(
        "escaped-hash-stays-in-path",
        b"/public/x%23y",
        200,
        forwarded=True,
        upstream_path="/public/x%23y",
        source="RFC 3986 §2.2 (gen-delims kept escaped); GHSA-pxq7-h93f-9jrg",
    ),
    # Unicode look-alikes are not separators: forwarded exactly as authorized.
    Attack(
        "fullwidth-solidus",
        b"/public/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fapi%EF%BC%8Fadmin",
        200,
        forwarded=True,
        upstream_path="/public/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fapi%EF%BC%8Fadmin",
        source="J. Birch, 'Host/Split: Unicode normalization', Black Hat USA 2019; CWE-176",
    ),
    unmatched("division-slash", b"/api%E2%88%95admin/users", "Birch, Black Hat USA 2019"),
    Attack(
        "one-dot-leader",
        b"/public/%E2%80%A4%E2%80%A4/x",
        200,
        forwarded=True,
        upstream_path="/public/%E2%80%A4%E2%80%A4/x",
        source="Birch, Black Hat USA 2019 (U+2024 ONE DOT LEADER)",
    ),
    Attack(
        "raw-utf8-encoded-for-the-app",
        b"/public/caf\xc3\xa9",
        200,
        forwarded=True,
        upstream_path="/public/caf%C3%A9",
        source="RFC 3987 §3.1 (IRI to URI: percent-encode UTF-8)",
        on=PROXY_RAW_BYTES,
    ),
    # Case, suffixes, trailing characters: matching is exact, unmatched is denied.
    unmatched("upper-prefix", b"/API/admin/users", "CWE-178 (case sensitivity)"),
    unmatched("upper-segment", b"/api/ADMIN/users", "CWE-178"),
    unmatched("mixed-case", b"/Api/Admin/Users", "CWE-178"),
    unmatched("suffix-extension", b"/api/admin.json", "CWE-41; Spring suffix pattern match"),
    unmatched("trailing-space", b"/api/admin%20/users", "CVE-2016-5007 (trimmed spaces); CWE-46"),
    unmatched("trailing-dot-name", b"/api/admin./users", "CWE-42 (trailing dot)"),
    unmatched("alternate-data-stream", b"/api/admin::$DATA/users", "CWE-69 (::$DATA)"),
    unmatched("short-name", b"/api/ADMINI~1/users", "CWE-58 (Windows 8.3 names)"),
    unmatched("wildcard-char", b"/api/admin*/users", "CWE-56 ('*' in a name)"),
    unmatched("prefix-without-boundary", b"/publicity/x", "CWE-41 (prefix match)"),
    Attack(
        "admin-without-trailing-slash",
        b"/api/admin",
        401,
        code="missing_credentials",
        source="CVE-2023-34034 ('**' and the bare prefix)",
    ),
    Attack(
        "admin-with-trailing-slash",
        b"/api/admin/",
        401,
        code="missing_credentials",
        source="CWE-49 (trailing slash)",
    ),
    Attack(
        "exact-rule-with-trailing-slash",
        b"/api/login/",
        200,
        method="POST",
        forwarded=True,
        upstream_path="/api/login/",
        source="CWE-49; Spring trailing-slash matching",
    ),
    # Request-target forms other than origin-form (RFC 9112 §3.2).
    Attack(
        "absolute-form-admin",
        b"http://app.test/api/admin/users",
        400,
        code="bad_request",
        source="RFC 9112 §3.2.2; PortSwigger 'HTTP Host header attacks'",
        # The proxy's server reads the path out of an absolute-form target;
        # the decision is then made on that path, as for origin-form.
        on={**FA_NOT_ORIGIN_FORM, "proxy": refused(401, "missing_credentials")},
    ),
    Attack(
        "absolute-form-foreign-authority",
        b"http://evil.example/public/x",
        400,
        code="bad_request",
        source="RFC 9112 §3.2.2; CWE-918",
        on={
            **FA_NOT_ORIGIN_FORM,
            "proxy": {
                "status": 200,
                "code": None,
                "forwarded": True,
                "upstream_path": "/public/x",
                "upstream_has": {"host": "app.test"},
            },
        },
    ),
    Attack(
        "asterisk-form",
        b"*",
        400,
        method="OPTIONS",
        code="bad_request",
        source="RFC 9112 §3.2.4",
        on=FA_NOT_ORIGIN_FORM,
    ),
    Attack(
        "authority-form",
        b"internal.test:80",
        400,
        method="CONNECT",
        code="bad_request",
        source="RFC 9112 §3.2.3; RFC 9110 §9.3.6",
        on=FA_NOT_ORIGIN_FORM,
    ),
)
