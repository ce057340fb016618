"""Outcomes edgeauth answers itself, rendered to status, headers and body.

API denials are JSON ``{"error", "code", "request_id"}``; page denials are a
login redirect (302 for GET/HEAD, 303 otherwise, RFC 9110 §15.4) or a small
HTML page. No response names a library or carries an exception's text.
"""

from __future__ import annotations

import html
import json
from json.encoder import encode_basestring_ascii
from typing import Final

from .memo import remember
from .model import Code, Denial, Header, Preflight, encode_headers

__all__ = ["Rendered", "error_body", "render_denial", "render_preflight"]

Rendered = tuple[int, list[tuple[bytes, bytes]], bytes]

_REASON: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_COMMON: Final[list[tuple[bytes, bytes]]] = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def error_body(code: Code, request_id: str, message: str | None = None) -> bytes:
    """The JSON error body of every ``api`` denial."""
    return _body(_body_head(code, message), request_id)


def _body(head: bytes, request_id: str) -> bytes:
    """``head`` (a body up to the request id), the id as a JSON string, the end."""
    if request_id.isascii() and request_id.isalnum():  # edgeauth's ids: JSON as they are
        return b"".join((head, b'"', request_id.encode(), b'"}'))
    return b"".join((head, _quote(request_id).encode(), b"}"))


def _body_head(code: Code, message: str | None) -> bytes:
    """The JSON error body up to the request id's text, built once per (code, message)."""
    head = _BODY_HEADS.get((code, message))
    if head is None:
        head = json.dumps(
            {"error": message or code.message, "code": code.value, "request_id": ""},
            separators=(",", ":"),
        )[: -len('""}')].encode()
        if len(_BODY_HEADS) < 256:
            _BODY_HEADS[(code, message)] = head
    return head


_quote: Final = encode_basestring_ascii
# The constant part of each body, per (code, message): built once.
_BODY_HEADS: Final[dict[tuple[Code, str | None], bytes]] = {}


def render_denial(denial: Denial, method: str) -> Rendered:
    """Status, headers and body for ``denial`` answered to a ``method`` request."""
    if not denial.page:  # JSON: all but the request id prepared once per kind
        key = (denial.code, denial.message, denial.headers)
        prepared = _JSON.get(key)
        if prepared is None:
            prepared = remember(_JSON, key, _prepare_json(denial), 1024)
        status, constant, head = prepared
        headers = constant.copy()
        headers[_REQUEST_ID] = (b"x-request-id", denial.request_id.encode())
        return status, headers, _body(head, denial.request_id)
    location = denial.location
    key2 = (location is None, denial.headers)
    page_headers = _PAGE_HEADERS.get(key2)
    if page_headers is None:
        page_headers = remember(_PAGE_HEADERS, key2, _constant_headers(denial, location), 1024)
    headers = page_headers.copy()
    headers[_REQUEST_ID] = (b"x-request-id", denial.request_id.encode())
    if location is not None:
        status = 302 if method in ("GET", "HEAD") else 303
        headers.append((b"location", location.encode("ascii")))
        return status, headers, b""
    status = denial.status
    title = f"{status} {_REASON.get(status, 'Error')}"
    message = denial.message or denial.code.message
    page = (
        "<!doctype html>\n<html lang=en><meta charset=utf-8>"
        f"<title>{title}</title>"
        f"<h1>{title}</h1><p>{html.escape(message)}</p>"
        f"<p><small>Request id: {html.escape(denial.request_id)}</small></p></html>\n"
    )
    return status, headers, page.encode()


def _prepare_json(denial: Denial) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """What every JSON denial like ``denial`` answers: its status, its headers
    with the request id's place left blank, and its body up to the request id."""
    return denial.status, _constant_headers(denial, None), _body_head(denial.code, denial.message)


def _constant_headers(denial: Denial, location: str | None) -> list[tuple[bytes, bytes]]:
    """The headers every denial like ``denial`` gets, the request id's place
    left blank; a redirect (``location``) has no body, so no content type."""
    headers = [*_COMMON, (b"x-request-id", b""), *encode_headers(denial.headers)]
    if location is None:
        kind = b"text/html; charset=utf-8" if denial.page else b"application/json"
        headers.append((b"content-type", kind))
    return headers


_REQUEST_ID: Final = len(_COMMON)
# Per (code, message, extra headers) and per (not a redirect, extra headers).
# Extra headers are challenges, CORS for the policy's origins and rate-limit
# seconds: few keys.
_JSON: Final[
    dict[tuple[Code, str | None, tuple[Header, ...]], tuple[int, list[tuple[bytes, bytes]], bytes]]
] = {}
_PAGE_HEADERS: Final[dict[tuple[bool, tuple[Header, ...]], list[tuple[bytes, bytes]]]] = {}


def render_preflight(preflight: Preflight) -> Rendered:
    """204 with the CORS grant; no body."""
    headers = [(b"x-request-id", preflight.request_id.encode()), *encode_headers(preflight.headers)]
    return 204, headers, b""
