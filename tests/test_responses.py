"""Denials rendered to status, headers and body: exact bytes, in a fixed order."""

from __future__ import annotations

import json

import pytest

from edgeauth.model import Code, Denial
from edgeauth.responses import render_denial

REALM = ("www-authenticate", 'Bearer realm="edgeauth"')
CORS = (("access-control-allow-origin", "https://app.example"), ("vary", "Origin"))
COMMON = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


def test_api_denial_headers_and_body() -> None:
    """An API denial: common headers, request id, its own headers in order,
    then the JSON content type; the body names code and request id."""
    denial = Denial("rid-1", Code.MISSING_CREDENTIALS, "api", headers=(REALM, *CORS))
    status, headers, body = render_denial(denial, "GET")
    assert status == 401
    assert headers == [
        *COMMON,
        (b"x-request-id", b"rid-1"),
        (b"www-authenticate", b'Bearer realm="edgeauth"'),
        (b"access-control-allow-origin", b"https://app.example"),
        (b"vary", b"Origin"),
        (b"content-type", b"application/json"),
    ]
    assert (
        body
        == b'{"error":"Authentication required","code":"missing_credentials","request_id":"rid-1"}'
    )


@pytest.mark.parametrize(
    "request_id", ["0f3a9c1d2e4b5a69", "rid-1", 'a"b\\c', "\u00e91", "\uff11\uff12", "", "a b"]
)
def test_the_request_id_in_a_json_body_is_always_its_json_string(request_id: str) -> None:
    """Whatever the request id (edgeauth's hex digits written as they are,
    anything else escaped): the body is JSON, the same as ``json.dumps`` of
    the error, and ``error_body`` gives the same bytes."""
    from edgeauth.responses import error_body

    denial = Denial(request_id, Code.FORBIDDEN, "api")
    body = render_denial(denial, "GET")[2]
    expected = {"error": "Insufficient permissions", "code": "forbidden", "request_id": request_id}
    assert body == json.dumps(expected, separators=(",", ":")).encode()
    assert body == error_body(Code.FORBIDDEN, request_id)


@pytest.mark.parametrize(("method", "status"), [("GET", 302), ("HEAD", 302), ("POST", 303)])
def test_login_redirect_has_its_location_last_and_no_body(method: str, status: int) -> None:
    """A page denial with a login URL is a redirect: 302 for GET/HEAD, else 303."""
    denial = Denial(
        "rid-2", Code.MISSING_CREDENTIALS, "app", page=True, location="/login?next=%2Fa"
    )
    assert render_denial(denial, method) == (
        status,
        [*COMMON, (b"x-request-id", b"rid-2"), (b"location", b"/login?next=%2Fa")],
        b"",
    )


def test_page_denial_is_a_small_html_page() -> None:
    """A page denial without a login URL is an HTML page with the escaped request id."""
    denial = Denial("rid-<3>", Code.FORBIDDEN, "app", page=True, headers=CORS)
    status, headers, body = render_denial(denial, "GET")
    assert status == 403
    assert headers == [
        *COMMON,
        (b"x-request-id", b"rid-<3>"),
        (b"access-control-allow-origin", b"https://app.example"),
        (b"vary", b"Origin"),
        (b"content-type", b"text/html; charset=utf-8"),
    ]
    assert b"<title>403 Forbidden</title>" in body
    assert b"Request id: rid-&lt;3&gt;" in body


def test_each_denial_gets_its_own_headers_list() -> None:
    """Denials alike in all but the request id get fresh lists: changing one
    answer's headers changes no other."""
    first = render_denial(Denial("rid-a", Code.INVALID_TOKEN, "api", headers=(REALM,)), "GET")
    first[1].append((b"x-added", b"by the caller"))
    first[1][0] = (b"cache-control", b"public")
    second = render_denial(Denial("rid-b", Code.INVALID_TOKEN, "api", headers=(REALM,)), "GET")
    assert second[1] == [
        *COMMON,
        (b"x-request-id", b"rid-b"),
        (b"www-authenticate", b'Bearer realm="edgeauth"'),
        (b"content-type", b"application/json"),
    ]
    assert json.loads(second[2])["request_id"] == "rid-b"


def test_api_denial_ignores_a_location() -> None:
    """A location on a denial that is not a page is not a redirect."""
    denial = Denial("rid-4", Code.FORBIDDEN, "api", location="/login")
    status, headers, _ = render_denial(denial, "GET")
    assert status == 403
    assert (b"content-type", b"application/json") in headers
    assert all(name != b"location" for name, _ in headers)


def test_denials_of_different_kinds_in_turn_get_their_own_answers() -> None:
    """Each JSON denial is answered by its own code, message and headers
    whatever came before: kinds in turn, the same headers with another code,
    equal messages and headers held by different objects."""
    realm = (REALM,)
    kinds = [
        (Code.MISSING_CREDENTIALS, None, realm),
        (Code.INVALID_TOKEN, None, realm),
        (Code.INVALID_TOKEN, "token expired", realm),
        (Code.INVALID_TOKEN, "".join(["token ", "expired"]), tuple(list(realm))),
        (Code.FORBIDDEN, None, ()),
        (Code.RATE_LIMITED, "slow down", (("retry-after", "3"),)),
        (Code.MISSING_CREDENTIALS, None, (REALM, *CORS)),
    ]
    for n, (code, message, extra) in enumerate(kinds * 3):
        rid = f"{n:016x}"
        status, headers, body = render_denial(
            Denial(rid, code, "api", headers=extra, message=message), "GET"
        )
        assert status == code.status
        assert headers == [
            *COMMON,
            (b"x-request-id", rid.encode()),
            *((k.encode(), v.encode()) for k, v in extra),
            (b"content-type", b"application/json"),
        ]
        expected = {"error": message or code.message, "code": code.value, "request_id": rid}
        assert body == json.dumps(expected, separators=(",", ":")).encode()


def test_error_body_takes_any_request_id() -> None:
    """Even an id that is not valid UTF-8 text (a lone surrogate) is escaped,
    not an error."""
    from edgeauth.responses import error_body

    body = error_body(Code.BAD_REQUEST, "a\ud800")
    assert json.loads(body)["request_id"] == "a\ud800"
