"""Hypothesis properties over the canonicalizer, the cookie and header parsers, the
token pre-parser, the engine and the forward-auth endpoint.

The properties are the ``check_*`` functions of the fuzz targets
(tests/security/fuzz/fuzz_edge.py); here they get structured inputs built
from the pieces attacks are made of. Derandomized with a bounded number of
examples, so the run is the same on every machine.
"""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import fuzz_edge

PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CHEAP = settings(PROPERTY, max_examples=500)

# The pieces of path confusion: separators, dots, escapes of each, and bytes
# that decode badly.
PATH_PIECES = [
    "/",
    "//",
    ".",
    "..",
    "...",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    ";",
    "%3b",
    "%3B",
    "%25",
    "%252e",
    "%252f",
    "%",
    "%4",
    "%zz",
    "%00",
    "%0a",
    "%09",
    "%7f",
    "%c0%af",
    "%c0%ae",
    "%e0%80%af",
    "%ed%a0%80",
    "%ff",
    "%c3",
    "%c3%a9",
    "é",
    "%7e",
    "%7E",
    "~",
    "%41",
    "%61",
    "a",
    "api",
    "admin",
    "public",
    "x",
    "#",
    "?",
    "%23",
    "%3f",
    "@",
    ":",
    "%20",
    " ",
    "+",
    "%EF%BC%8F",
    "\x00",
    "\x7f",
]
paths = st.lists(st.sampled_from(PATH_PIECES), max_size=12).map(
    lambda p: "".join(p).encode("utf-8")
)
raw_paths = st.one_of(paths.map(lambda p: b"/" + p), paths, st.binary(max_size=64))


@CHEAP
@given(raw_paths)
def test_canonical_paths_have_one_unambiguous_spelling(raw: bytes) -> None:
    """A path is refused, or its canonical form is stable, ASCII and unambiguous."""
    fuzz_edge.check_canonical(raw)


COOKIE_NAMES = [
    "session",
    "Session",
    "SESSION",
    " session",
    "session ",
    "$Version",
    "a",
    "",
    "=",
    "theme",
]
COOKIE_VALUES = ["", '""', '"x"', "x", "y", '"x', 'x"', "a=b", "x; session=y", "\\", ",", " ", "\t"]
cookie_pairs = st.tuples(
    st.sampled_from(COOKIE_NAMES), st.sampled_from(COOKIE_VALUES), st.sampled_from(["=", "", "=="])
)
cookie_headers = st.one_of(
    st.lists(cookie_pairs, max_size=6).flatmap(
        lambda pairs: st.sampled_from([";", "; ", ",", ";;", " ; "]).map(
            lambda sep: sep.join(n + eq + v for n, v, eq in pairs)
        )
    ),
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=60),
)


@CHEAP
@given(cookie_headers)
def test_cookie_reader_agrees_with_rfc_6265_reading(header: str) -> None:
    """The credential-cookie reader finds what a plain RFC 6265 reading finds,
    refuses what it finds twice with different values, and nothing else."""
    fuzz_edge.check_cookies(header)


IDENTITY = [
    "x-user-id",
    "x-user-role",
    "remote-user",
    "x-forwarded-user",
    "x-original-url",
    "x-http-method-override",
    "x-internal-flag",
]


@st.composite
def spelled(draw: st.DrawFn) -> bytes:
    """A header name in a random spelling: case per letter, '_' or '-'."""
    name = draw(st.sampled_from([*IDENTITY, "x-user", "user-id", "x-user-idx", "accept"]))
    out = []
    for char in name:
        if char == "-":
            out.append(draw(st.sampled_from(["-", "_"])))
        else:
            out.append(char.upper() if draw(st.booleans()) else char)
    return "".join(out).encode()


@PROPERTY
@given(st.lists(spelled(), max_size=8))
def test_identity_headers_go_in_every_spelling(names: list[bytes]) -> None:
    """No spelling of an identity header survives the strip; every other header does."""
    fuzz_edge.check_strip(names)


addresses = st.sampled_from(
    [
        "10.0.0.1",
        "10.9.9.9",
        "203.0.113.7",
        "198.51.100.1",
        "::1",
        "fe80::1",
        "unknown",
        "",
        " 10.0.0.2 ",
        "1.2.3.4:80",
        "[::1]",
    ]
)


@CHEAP
@given(addresses, st.lists(st.lists(addresses, max_size=4).map(", ".join), max_size=3))
def test_client_address_comes_from_trusted_hops_only(peer: str, values: list[str]) -> None:
    """The client is the peer, unless a trusted peer names a real address."""
    fuzz_edge.check_client_address(peer, values)


def _segment(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
headers_json = st.fixed_dictionaries(
    {
        "alg": st.sampled_from(
            ["HS256", "RS256", "ES256", "none", "None", "HS384", "PS256", "", "hs256"]
        )
    },
    optional={
        "kid": st.sampled_from(["../../dev/null", "' OR 1=1", "k", 1]),
        "jku": st.just("http://127.0.0.1:1/"),
        "crit": st.just(["exp"]),
        "typ": st.just("JWT"),
    },
)
claims_json = st.fixed_dictionaries(
    {},
    optional={
        "sub": json_values,
        "iss": st.sampled_from(
            ["https://issuer.test", "https://partner.test", "https://es.test", "x"]
        ),
        "aud": st.sampled_from(["edge-api", ["edge-api"], "other", 1]),
        "exp": st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
        "role": json_values,
    },
)
signatures = st.one_of(
    st.binary(max_size=80).map(lambda b: _segment(b)), st.sampled_from(["", "=", "AA", "+/"])
)
tokens = st.one_of(
    st.tuples(headers_json, claims_json, signatures).map(
        lambda t: f"{_segment(t[0])}.{_segment(t[1])}.{t[2]}"
    ),
    st.text(alphabet="abcAB019-_.=+/ ", max_size=80),
    st.text(max_size=40),
)


@PROPERTY
@given(tokens)
def test_forged_tokens_never_authenticate(token: str) -> None:
    """No forged credential yields an identity; the only errors are refusals."""
    fuzz_edge.check_token(token)


header_names = st.sampled_from(
    [
        "cookie",
        "authorization",
        "x-api-key",
        "host",
        "origin",
        "accept",
        "sec-fetch-mode",
        "sec-fetch-dest",
        "sec-fetch-site",
        "content-length",
        "access-control-request-method",
        "x-user-id",
        "X_User_Role",
        "forwarded",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        [
            "session=x",
            "Bearer x",
            "Bearer",
            "Basic eA==",
            "app.test",
            "internal.test.",
            "pages.test",
            "https://app.example.com",
            "null",
            "text/html",
            "navigate",
            "document",
            "cross-site",
            "11",
            "-1",
            "POST",
            "admin",
            "",
            "a@b",
            "[::1]:80",
        ]
    ),
    tokens.map(lambda t: f"session={t}"),
    tokens.map(lambda t: f"Bearer {t}"),
    st.text(alphabet=st.characters(max_codepoint=0xFF, exclude_categories=["Cc"]), max_size=30),
).map(lambda value: value.encode("utf-8").decode("latin-1"))  # header values are bytes
requests_headers = st.lists(st.tuples(header_names, header_values), max_size=6)
methods = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "get", "G E T"]
)
targets = st.tuples(
    st.sampled_from(
        [
            "/api/admin",
            "/api/protected",
            "/api/v1",
            "/api/login",
            "/dashboard",
            "/public",
            "/internal",
            "/api/readonly",
            "/api/open",
            "/api/partner",
            "/api/es",
            "",
            "/",
        ]
    ),
    paths,
    st.sampled_from(["", "?next=//evil.example", "?a=%2F", "?session=x"]),
).map(lambda t: t[0].encode() + t[1] + t[2].encode())


@PROPERTY
@given(methods, targets, requests_headers)
def test_engine_never_fails_open_or_with_a_500(
    method: str, target: bytes, headers: list[tuple[str, str]]
) -> None:
    """Any request is decided: never a 500, never a forged identity, only public rules
    let it through, and only ever to the canonical path."""
    fuzz_edge.check_request(method, target, headers)


@PROPERTY
@given(methods, targets.map(lambda t: t.decode("utf-8", "replace")), requests_headers)
def test_forward_auth_never_fails_with_a_500(
    method: str, uri: str, headers: list[tuple[str, str]]
) -> None:
    """Any decision request gets an answer, never a 500; an allowed anonymous request
    carries empty identity headers."""
    fuzz_edge.check_gateway(method, uri, headers)
