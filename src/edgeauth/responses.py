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

__all__ = ["IdAnswer", "Rendered", "error_body", "render_denial", "render_preflight"]

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
    if request_id.isascii():
        return _json_body(head, head + b'"', request_id, request_id.encode())
    return b"".join((head, _quote(request_id).encode(), b"}"))


def _json_body(head: bytes, opened: bytes, request_id: str, encoded: bytes) -> bytes:
    """:func:`_body`, given ``head`` with the id's opening quote (``opened``)
    and the id's UTF-8 bytes too."""
    if encoded.isalnum():  # ASCII letters and digits (edgeauth's ids): JSON as they are
        return opened + encoded + b'"}'
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
        prepared = _LAST_JSON[0]
        if not (
            prepared.extra is denial.headers
            and prepared.code is denial.code
            and prepared.message is denial.message
        ):  # not the same objects as the last one's (most denials share them)
            prepared = _prepared_json(denial)
        return prepared.render(denial.request_id)
    location = denial.location
    key = (location is None, denial.headers)
    page_headers = _PAGE_HEADERS.get(key)
    if page_headers is None:
        page_headers = remember(_PAGE_HEADERS, key, _constant_headers(denial, location), 1024)
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


class IdAnswer:
    """A JSON denial's answer prepared whole for one kind of denial, the
    content length included for request ids as long as ``denial``'s: what
    :func:`render_denial` answers, with that length added, built once.

    >>> answer = IdAnswer(Denial("0" * 16, Code.MISSING_CREDENTIALS))
    >>> status, headers, body = answer.render("0123456789abcdef")
    >>> status, headers[-1], len(body)
    (401, (b'content-length', b'96'), 96)
    """

    def __init__(self, denial: Denial) -> None:
        kind = _prepare(denial.code, denial.message, denial.headers)
        self._length = len(_body(kind.head, denial.request_id))
        length = (b"content-length", str(self._length).encode())
        self._prepared = _Prepared(
            kind.code, kind.message, kind.extra, kind.status, [*kind.headers, length], kind.head
        )

    def render(self, request_id: str) -> Rendered:
        """Status, headers (ending with the content length) and body for
        ``request_id``."""
        status, headers, body = self._prepared.render(request_id)
        if len(body) != self._length:  # an id of another length than the prepared one
            headers[-1] = (b"content-length", str(len(body)).encode())
        return status, headers, body


class _Prepared:
    """What every JSON denial of one kind answers: its status, its headers
    with the request id's place left blank, and its body up to the request
    id; with the code, message and extra headers that make the kind."""

    def __init__(
        self,
        code: Code,
        message: str | None,
        extra: tuple[Header, ...],
        status: int,
        headers: list[tuple[bytes, bytes]],
        head: bytes,
    ) -> None:
        self.code = code
        self.message = message
        self.extra = extra
        self.status = status
        self.headers = headers
        self.head = head
        self.opened = head + b'"'

    def render(self, request_id: str) -> Rendered:
        """Status, headers and body of this answer for ``request_id``."""
        headers = self.headers.copy()
        encoded = request_id.encode()
        headers[_REQUEST_ID] = (b"x-request-id", encoded)
        return self.status, headers, _json_body(self.head, self.opened, request_id, encoded)

    def held_by(self, denial: Denial) -> _Prepared:
        """This answer, holding ``denial``'s own message and headers objects
        (equal to its own), so that denials sharing them find it by identity."""
        if self.extra is denial.headers and self.message is denial.message:
            return self
        m, x = denial.message, denial.headers
        return _Prepared(self.code, m, x, self.status, self.headers, self.head)


def _prepare(code: Code, message: str | None, extra: tuple[Header, ...]) -> _Prepared:
    denial = Denial("", code, headers=extra, message=message)
    headers = _constant_headers(denial, None)
    return _Prepared(code, message, extra, denial.status, headers, _body_head(code, message))


def _prepared_json(denial: Denial) -> _Prepared:
    """The prepared answer of ``denial``'s kind, remembered per (code, message,
    extra headers), and kept as the last one used."""
    key = (denial.code, denial.message, denial.headers)
    prepared = _JSON.get(key)
    if prepared is None:
        prepared = remember(_JSON, key, _prepare(*key), 1024)
    prepared = prepared.held_by(denial)
    _LAST_JSON[0] = prepared
    return prepared


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
_JSON: Final[dict[tuple[Code, str | None, tuple[Header, ...]], _Prepared]] = {}
_LAST_JSON: Final = [_prepare(Code.MISSING_CREDENTIALS, None, ())]  # a list: one native slot
_PAGE_HEADERS: Final[dict[tuple[bool, tuple[Header, ...]], list[tuple[bytes, bytes]]]] = {}


def render_preflight(preflight: Preflight) -> Rendered:
    """204 with the CORS grant; no body."""
    headers = [(b"x-request-id", preflight.request_id.encode()), *encode_headers(preflight.headers)]
    return 204, headers, b""
