"""Outcomes edgeauth answers itself, rendered to status, headers and body.

API denials are JSON ``{"error", "code", "request_id"}``; page denials are a
login redirect (302 for GET/HEAD, 303 otherwise, RFC 9110 §15.4) or a small
HTML page. No response names a library or carries an exception's text.
"""

from __future__ import annotations

import html
import json
from json.encoder import encode_basestring_ascii

from .memo import remember
from .model import Code, Denial, Header, Preflight, encode_headers

__all__ = ["Rendered", "error_body", "render_denial", "render_preflight"]

Rendered = tuple[int, list[tuple[bytes, bytes]], bytes]

_REASON = {
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
_COMMON: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def error_body(code: Code, request_id: str, message: str | None = None) -> bytes:
    """The JSON error body of every ``api`` denial."""
    head = _BODY_HEADS.get((code, message))
    if head is None:
        head = json.dumps(
            {"error": message or code.message, "code": code.value, "request_id": ""},
            separators=(",", ":"),
        )[: -len('""}')].encode()
        if len(_BODY_HEADS) < 256:
            _BODY_HEADS[(code, message)] = head
    return head + _quote(request_id).encode() + b"}"


_quote = encode_basestring_ascii
# The constant part of each body, per (code, message): built once.
_BODY_HEADS: dict[tuple[Code, str | None], bytes] = {}


def render_denial(denial: Denial, method: str) -> Rendered:
    """Status, headers and body for ``denial`` answered to a ``method`` request."""
    location = denial.location if denial.page else None
    key = (denial.page, location is None, denial.headers)
    headers = _HEADERS.get(key)
    if headers is None:
        headers = remember(_HEADERS, key, _constant_headers(denial, location is None), 1024)
    headers = headers.copy()
    headers[_REQUEST_ID] = (b"x-request-id", denial.request_id.encode())
    if location is not None:
        status = 302 if method in ("GET", "HEAD") else 303
        headers.append((b"location", location.encode("ascii")))
        return status, headers, b""
    status = denial.status
    if denial.page:
        title = f"{status} {_REASON.get(status, 'Error')}"
        message = denial.message or denial.code.message
        page = (
            "<!doctype html>\n<html lang=en><meta charset=utf-8>"
            f"<title>{title}</title>"
            f"<h1>{title}</h1><p>{html.escape(message)}</p>"
            f"<p><small>Request id: {html.escape(denial.request_id)}</small></p></html>\n"
        )
        return status, headers, page.encode()
    return status, headers, error_body(denial.code, denial.request_id, denial.message)


def _constant_headers(denial: Denial, has_body: bool) -> list[tuple[bytes, bytes]]:
    """The headers every denial like ``denial`` gets, the request id's place
    left blank; a redirect adds its ``location``."""
    headers = [*_COMMON, (b"x-request-id", b""), *encode_headers(denial.headers)]
    if has_body:
        kind = b"text/html; charset=utf-8" if denial.page else b"application/json"
        headers.append((b"content-type", kind))
    return headers


_REQUEST_ID = len(_COMMON)
# The constant headers per (page, not a redirect, extra headers). Extra headers
# are challenges, CORS for the policy's origins and rate-limit seconds: few keys.
_HEADERS: dict[tuple[bool, bool, tuple[Header, ...]], list[tuple[bytes, bytes]]] = {}


def render_preflight(preflight: Preflight) -> Rendered:
    """204 with the CORS grant; no body."""
    headers = [(b"x-request-id", preflight.request_id.encode()), *encode_headers(preflight.headers)]
    return 204, headers, b""
