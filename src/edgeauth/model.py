"""Value types shared by the engine and the front-ends.

A front-end turns its wire request into a :class:`RequestView`, hands it to the
pipeline, and renders the :data:`Outcome` it gets back: an :class:`Allow` (forward,
with these headers), a :class:`Denial` (answer with this status and code) or a
:class:`Preflight` (a CORS preflight answered at the edge).

All are treated as immutable. :class:`Identity` is frozen (the verified-token
cache shares one object between requests); the per-request types are plain
slotted classes, because building a frozen dataclass costs several times as
much and there are two or three per request.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, final

__all__ = [
    "EMPTY_CLAIMS",
    "Allow",
    "Code",
    "Denial",
    "Header",
    "Identity",
    "Kind",
    "Outcome",
    "Preflight",
    "RequestView",
    "encode_headers",
]

Header = tuple[str, str]
"""A header as (lower-case name, value)."""


def encode_headers(headers: tuple[Header, ...]) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI byte pairs (values are Latin-1 at most; edgeauth's own
    are ASCII)."""
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


EMPTY_CLAIMS: Mapping[str, Any] = MappingProxyType({})


class Kind(enum.StrEnum):
    """How a rule answers a denial: JSON for APIs, a login redirect for pages."""

    API = "api"
    PAGE = "page"
    AUTO = "auto"


class Code(enum.StrEnum):
    """Stable reason codes: the JSON ``code``, the audit ``code``, the metric label."""

    BAD_REQUEST = "bad_request"
    MISSING_CREDENTIALS = "missing_credentials"
    INVALID_TOKEN = "invalid_token"
    REVOKED = "revoked"
    FORBIDDEN = "forbidden"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    CSRF = "csrf"
    UNTRUSTED_PEER = "untrusted_peer"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    HEADERS_TOO_LARGE = "headers_too_large"
    INTERNAL_ERROR = "internal_error"
    BAD_GATEWAY = "bad_gateway"
    GATEWAY_TIMEOUT = "gateway_timeout"
    AUTH_UNAVAILABLE = "auth_unavailable"

    # Set on every member below: plain attributes, read on every denial
    # (a property on an enum costs a Python call each time).
    status: int
    """The HTTP status a denial with this code answers with."""
    message: str
    """The human-readable ``error`` of the JSON body."""

    # A member hashes as its text, as the str it is equal to: Enum's own hash
    # (of the member's name) is a Python call on every dict lookup.
    __hash__ = str.__hash__


_STATUS: dict[Code, int] = {
    Code.BAD_REQUEST: 400,
    Code.MISSING_CREDENTIALS: 401,
    Code.INVALID_TOKEN: 401,
    Code.REVOKED: 401,
    Code.FORBIDDEN: 403,
    Code.INSUFFICIENT_SCOPE: 403,
    Code.CSRF: 403,
    Code.UNTRUSTED_PEER: 403,
    Code.NOT_FOUND: 404,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Code.HEADERS_TOO_LARGE: 431,
    Code.INTERNAL_ERROR: 500,
    Code.BAD_GATEWAY: 502,
    Code.GATEWAY_TIMEOUT: 504,
    Code.AUTH_UNAVAILABLE: 503,
}

_MESSAGE: dict[Code, str] = {
    Code.BAD_REQUEST: "Malformed or ambiguous request",
    Code.MISSING_CREDENTIALS: "Authentication required",
    Code.INVALID_TOKEN: "Invalid or expired credentials",
    Code.REVOKED: "Credentials have been revoked",
    Code.FORBIDDEN: "Insufficient permissions",
    Code.INSUFFICIENT_SCOPE: "Insufficient scope",
    Code.CSRF: "Cross-site request refused",
    Code.UNTRUSTED_PEER: "Untrusted peer",
    Code.NOT_FOUND: "Not found",
    Code.PAYLOAD_TOO_LARGE: "Request body too large",
    Code.RATE_LIMITED: "Too many requests",
    Code.HEADERS_TOO_LARGE: "Request headers too large",
    Code.INTERNAL_ERROR: "Internal error",
    Code.BAD_GATEWAY: "Upstream unavailable",
    Code.GATEWAY_TIMEOUT: "Upstream timed out",
    Code.AUTH_UNAVAILABLE: "Authentication temporarily unavailable",
}

for _code in Code:
    _code.status = _STATUS[_code]
    _code.message = _MESSAGE[_code]
del _code


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """A verified caller.

    ``claims`` holds the verified JWT claims (empty for API keys). ``key_id`` is
    the API key's id or the JWT ``kid``; ``token_id`` the JWT ``jti``.
    """

    subject: str
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=lambda: EMPTY_CLAIMS)
    authenticator: str = ""
    credential_type: Literal["jwt", "api_key"] = "jwt"
    key_id: str | None = None
    token_id: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None

    def __reduce__(self) -> tuple[Callable[..., Identity], tuple[Any, ...]]:
        if not isinstance(self.claims, MappingProxyType):
            return type(self), _fields(self)
        # A mapping proxy cannot be pickled: its dict goes instead, read-only again.
        return _read_only_claims, _fields(dataclasses.replace(self, claims=dict(self.claims)))


def _read_only_claims(*values: Any) -> Identity:
    identity = Identity(*values)
    return dataclasses.replace(identity, claims=MappingProxyType(identity.claims))


def _fields(obj: Any) -> tuple[Any, ...]:
    """The field values of a dataclass, in its constructor's order: what copy
    and pickle rebuild the model's classes from (``__reduce__``), since the
    compiled build's classes (slots, some frozen) refuse the state-setting way."""
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


@dataclass(slots=True, eq=False)
class RequestView:
    """What the engine sees of a request.

    ``headers`` maps lower-case names to all their values in order, after the
    front-end has removed spoofable headers. ``raw_path`` is the request target's
    path exactly as sent (percent-escapes intact), without the query.
    """

    method: str
    raw_path: bytes
    query: bytes = b""
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    scheme: str = "http"
    client: str | None = None
    websocket: bool = False

    # The constructors of the classes built for every request are written out:
    # the one @dataclass generates stays interpreted in the compiled build.
    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query: bytes = b"",
        headers: Mapping[str, tuple[str, ...]] | None = None,
        scheme: str = "http",
        client: str | None = None,
        websocket: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query = query
        self.headers = {} if headers is None else headers
        self.scheme = scheme
        self.client = client
        self.websocket = websocket

    def __reduce__(self) -> tuple[type[RequestView], tuple[Any, ...]]:
        return type(self), _fields(self)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        values = self.headers.get(name)
        return values[0] if values else None


@final
@dataclass(slots=True, eq=False)
class Allow:
    """Forward the request: to ``raw_path`` (canonical), with ``upstream_headers`` set.

    ``withheld`` names credential places (``"authorization"``, ``"x-api-key"``,
    ``"cookie:NAME"``) whose credential must not reach the upstream.
    ``response_headers`` go on the response to the client (CORS).
    """

    request_id: str
    rule_id: str
    path: str
    raw_path: bytes
    identity: Identity | None = None
    upstream_headers: tuple[Header, ...] = ()
    withheld: tuple[str, ...] = ()
    response_headers: tuple[Header, ...] = ()
    max_body: int | None = None
    cors: bool = False
    """The rule has CORS: ``Access-Control-*`` from the app are replaced."""

    def __init__(
        self,
        request_id: str,
        rule_id: str,
        path: str,
        raw_path: bytes,
        identity: Identity | None = None,
        upstream_headers: tuple[Header, ...] = (),
        withheld: tuple[str, ...] = (),
        response_headers: tuple[Header, ...] = (),
        max_body: int | None = None,
        cors: bool = False,
    ) -> None:
        self.request_id = request_id
        self.rule_id = rule_id
        self.path = path
        self.raw_path = raw_path
        self.identity = identity
        self.upstream_headers = upstream_headers
        self.withheld = withheld
        self.response_headers = response_headers
        self.max_body = max_body
        self.cors = cors

    def __reduce__(self) -> tuple[type[Allow], tuple[Any, ...]]:
        return type(self), _fields(self)


@final
@dataclass(slots=True, eq=False)
class Denial:
    """Answer the request here with ``code``.

    ``page`` says the request is rendered as a page: a login redirect when
    ``location`` is set, otherwise a small HTML page; else it is JSON.
    """

    request_id: str
    code: Code
    rule_id: str | None = None
    page: bool = False
    location: str | None = None
    headers: tuple[Header, ...] = ()
    message: str | None = None

    def __init__(
        self,
        request_id: str,
        code: Code,
        rule_id: str | None = None,
        page: bool = False,
        location: str | None = None,
        headers: tuple[Header, ...] = (),
        message: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.code = code
        self.rule_id = rule_id
        self.page = page
        self.location = location
        self.headers = headers
        self.message = message

    def __reduce__(self) -> tuple[type[Denial], tuple[Any, ...]]:
        return type(self), _fields(self)

    @property
    def status(self) -> int:
        return self.code.status


@dataclass(slots=True, eq=False)
class Preflight:
    """A CORS preflight granted at the edge: 204 with these headers."""

    request_id: str
    rule_id: str
    headers: tuple[Header, ...]


Outcome = Allow | Denial | Preflight
