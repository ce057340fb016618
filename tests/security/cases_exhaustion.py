"""Resource exhaustion: huge or many headers, huge cookies and tokens, long paths,
large bodies.

The proxy bounds the request head (431 ``headers_too_large``) and every rule's
``max_body`` (413 ``payload_too_large``). In process, the ASGI server in
front of the middleware owns head limits, so the middleware decides such a
request like any other; the forward-auth endpoint gets no body (a gateway
limits it, docs/deploy/README.md), so ``max_body`` is the gateway's there.
Slow heads are in test_proxy_security.py: only a socket can be slow.
"""

from __future__ import annotations

from ..cases import ALICE
from .common import Attack, b64, claims, hs, refused

RFC6585 = "RFC 6585 §5 (431 Request Header Fields Too Large)"
RFC9110_413 = "RFC 9110 §15.5.14 (413 Content Too Large)"
HEAD_TOO_LARGE = {"proxy": refused(431, "headers_too_large")}
NO_BODY_AT_THE_GATEWAY = {
    "forward_auth": {"status": 200, "code": None, "forwarded": True},
}

CASES: tuple[Attack, ...] = (
    Attack(
        "huge-header",
        b"/public/x",
        200,
        headers=(("x-filler", "a" * 20000),),
        forwarded=True,
        source=f"{RFC6585}; CWE-400",
        on=HEAD_TOO_LARGE,
    ),
    Attack(
        "many-headers",
        b"/public/x",
        200,
        headers=tuple((f"x-h{i}", "1") for i in range(150)),
        forwarded=True,
        source=f"{RFC6585}; CWE-770",
        on=HEAD_TOO_LARGE,
    ),
    Attack(
        "many-cookie-headers",
        b"/public/x",
        200,
        headers=tuple(("cookie", f"c{i}=1") for i in range(120)),
        forwarded=True,
        source=f"{RFC6585}; RFC 9113 §8.2.3 (split Cookie fields)",
        on=HEAD_TOO_LARGE,
    ),
    Attack(
        "huge-session-cookie",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session=" + hs({"alg": "HS256"}, claims(pad="x" * 20000))),),
        code="invalid_token",
        source=f"{RFC6585}; docs/policy.md (tokens over 8 KiB are refused)",
        on=HEAD_TOO_LARGE,
    ),
    Attack(
        "token-just-over-8kib",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session=" + hs({"alg": "HS256"}, claims(pad="x" * 6200))),),
        code="invalid_token",
        source="docs/policy.md (8 KiB); CWE-400",
    ),
    Attack(
        "many-cookies",
        b"/api/protected/me",
        200,
        headers=(("cookie", "; ".join(f"c{i}=v" for i in range(1500)) + f"; session={ALICE}"),),
        forwarded=True,
        upstream_has={"x-user-id": "alice"},
        source="RFC 6265 §6.1 (limits); CWE-400",
    ),
    Attack(
        "huge-api-key",
        b"/api/v1/reports",
        401,
        headers=(("x-api-key", "eak_" + "k" * 12000),),
        code="invalid_token",
        source="CWE-400",
    ),
    Attack(
        "deeply-nested-token",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session=" + hs({"alg": "HS256"}, b"[" * 4000 + b"]" * 4000)),),
        code="invalid_token",
        source="CWE-674 (uncontrolled recursion); RFC 8259 §9 (nesting limits)",
    ),
    Attack(
        "huge-token-header-segment",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session=" + b64(b"{" + b" " * 7000 + b"}") + ".e30.c2ln"),),
        code="invalid_token",
        source="CWE-400",
    ),
    Attack(
        "long-path",
        b"/public/" + b"a" * 20000,
        200,
        forwarded=True,
        source=f"RFC 9112 §3 (414/431 for long request lines); {RFC6585}",
        on=HEAD_TOO_LARGE,
    ),
    Attack(
        "many-segments",
        b"/public" + b"/a" * 3000,
        200,
        forwarded=True,
        upstream_path="/public" + "/a" * 3000,
        source="CWE-400 (dot-segment removal cost)",
    ),
    Attack(
        "many-dot-segments",
        b"/public" + b"/a/.." * 1500 + b"/x",
        200,
        forwarded=True,
        upstream_path="/public/x",
        source="CWE-400; RFC 3986 §5.2.4",
        on={"forward_auth": refused(400, "bad_request")},
    ),
    Attack(
        "climbing-dot-segments",
        b"/public" + b"/.." * 3000,
        400,
        code="bad_request",
        source="CWE-22; CWE-400",
    ),
    Attack(
        "thousands-of-slashes",
        b"/" * 5000 + b"public/x",
        200,
        forwarded=True,
        upstream_path="/public/x",
        source="CWE-50; CWE-400",
        on={"forward_auth": refused(400, "bad_request")},
    ),
    # Inputs shaped for catastrophic regex backtracking: refused like any other.
    Attack(
        "backtracking-shaped-host",
        b"/internal/x",
        400,
        headers=(("host", "a." * 3000 + "!"),),
        code="bad_request",
        source="CWE-1333 (regular expression denial of service)",
    ),
    Attack(
        "backtracking-shaped-path",
        b"/a" * 3000 + b"%",
        400,
        code="bad_request",
        source="CWE-1333",
    ),
    Attack(
        "backtracking-shaped-cookie",
        b"/api/protected/me",
        401,
        headers=(("cookie", "session=" + '"' * 5000 + "; a=" + "=" * 5000),),
        code="invalid_token",
        source="CWE-1333; RFC 6265 §5.4",
    ),
    # Bodies over the rule's max_body.
    Attack(
        "declared-body-too-large",
        b"/api/login",
        413,
        method="POST",
        body=b"x" * 11,
        code="payload_too_large",
        source=f"{RFC9110_413}; CWE-770",
        on=NO_BODY_AT_THE_GATEWAY,
    ),
    Attack(
        "streamed-body-too-large",
        b"/api/login",
        413,
        method="POST",
        headers=(("transfer-encoding", "chunked"),),
        body=b"x" * 5000,
        code="payload_too_large",
        forwarded=None,
        source=f"{RFC9110_413}; RFC 9112 §7.1 (chunked); CWE-770",
        on=NO_BODY_AT_THE_GATEWAY,
    ),
    Attack(
        "huge-declared-length",
        b"/api/login",
        413,
        method="POST",
        headers=(("content-length", "99999999999999999999"),),
        code="payload_too_large",
        source=f"{RFC9110_413}; CWE-190 (length overflow)",
        # llhttp refuses a length it cannot hold.
        on={"proxy": refused(400, "bad_request"), **NO_BODY_AT_THE_GATEWAY},
    ),
    Attack(
        "expect-continue-too-large",
        b"/api/login",
        413,
        method="POST",
        headers=(("expect", "100-continue"), ("content-length", "1000000")),
        code="payload_too_large",
        source=f"{RFC9110_413}; RFC 9110 §10.1.1 (no 100 for a refused body)",
        on=NO_BODY_AT_THE_GATEWAY,
    ),
)
