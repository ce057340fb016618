"""Header hygiene: what is stripped from requests, and the identity headers set.

Client-sent copies of identity headers are removed in every spelling: header
names are compared case-insensitively with ``_`` read as ``-`` (some servers
and frameworks, e.g. CGI/WSGI environ, fold both to the same name), and every
repetition goes. The identity headers edgeauth sets are added after that, and
after hop-by-hop removal, so ``Connection: x-user-id`` cannot remove them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

from .errors import InvalidCredentials
from .forwarded import FORWARDING_HEADERS, UNTRUSTED_PREFIXES
from .memo import remember
from .model import Header, Identity, encode_headers

__all__ = [
    "DEFAULT_IDENTITY_HEADERS",
    "HOP_BY_HOP",
    "METHOD_OVERRIDE",
    "RESERVED",
    "WELL_KNOWN_IDENTITY",
    "HeaderField",
    "IdentityHeaders",
    "header_map",
    "normalize_name",
]

DEFAULT_IDENTITY_HEADERS: Mapping[str, str] = {"x-user-id": "subject", "x-user-role": "roles"}

WELL_KNOWN_IDENTITY = frozenset(
    {
        "remote-user",
        "x-remote-user",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-original-url",
        "x-rewrite-url",
    }
)
METHOD_OVERRIDE = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
RESERVED = frozenset({"authorization", "cookie", "host", "content-length", *HOP_BY_HOP})

_MEMO_NAME_BYTES: Final = 64  # longer header names are classified every time, not memoized
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_PRINTABLE_BUT_PERCENT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2


def normalize_name(name: str) -> str:
    """The spelling-insensitive form of a header name: lower case, ``_`` as ``-``."""
    return name.lower().replace("_", "-")


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, tuple[str, ...]]:
    """ASGI header pairs as {lower-case name: all values in order}."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        out[key] = (*out.get(key, ()), value.decode("latin-1"))
    return out


def is_token(text: str) -> bool:
    """RFC 9110 §5.6.2: what a method, a header name and a cookie name (RFC 6265
    §4.1.1) may hold: letters, digits and ``!#$%&'*+-.^_`|~``."""
    return _TOKEN.fullmatch(text) is not None


def validate_header_name(name: str, purpose: str = "carry identity") -> str:
    """Normalize a configured header name; ValueError saying what was expected."""
    if not is_token(name):
        raise ValueError(f"expected a header name (letters, digits, '-'), got {name!r}")
    lowered = name.lower()
    if lowered in RESERVED:
        raise ValueError(f"{name!r} is reserved: it cannot {purpose}")
    return lowered


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One identity header: its name and what it carries."""

    name: str
    source: Literal["subject", "roles", "scopes", "claim"]
    claim: str = ""

    @classmethod
    def parse(cls, name: str, spec: str) -> HeaderField:
        if spec == "subject":
            return cls(name, "subject")
        if spec == "roles":
            return cls(name, "roles")
        if spec == "scopes":
            return cls(name, "scopes")
        if spec.startswith("claim:") and len(spec) > len("claim:"):
            return cls(name, "claim", spec[len("claim:") :])
        raise ValueError(f"expected 'subject', 'roles', 'scopes' or 'claim:NAME', got {spec!r}")

    def value(self, identity: Identity | None) -> str:
        """The header value for ``identity``; empty without one (or without the claim).

        Raises InvalidCredentials for a value that cannot be carried safely: a
        control character anywhere, or a role/scope holding its separator.
        """
        if identity is None:
            return ""
        if self.source == "subject":
            return _safe(identity.subject)
        if self.source == "roles":
            return _join(identity.roles, ",")
        if self.source == "scopes":
            return _join(identity.scopes, " ")
        raw = identity.claims.get(self.claim)
        if raw is None:
            return ""
        if isinstance(raw, str):
            return _safe(raw)
        return _safe(json.dumps(raw, separators=(",", ":"), ensure_ascii=False, sort_keys=True))


def _safe(value: str) -> str:
    if _CONTROL.search(value):
        raise InvalidCredentials("identity value holds a control character")
    if value.isascii() and "%" not in value:
        return value
    # Non-ASCII is percent-encoded as UTF-8 (RFC 9110 §5.5: field values are
    # ASCII in practice), and so is '%' itself, so that decoding is unambiguous:
    # the subjects "alié" and "ali%C3%A9" must not become the same header.
    return quote(value, safe=_PRINTABLE_BUT_PERCENT)


def _join(items: Sequence[str], separator: str) -> str:
    for item in items:
        if separator in item or not item:
            raise InvalidCredentials("identity value holds its separator")
    return _safe(separator.join(items))


class IdentityHeaders:
    """The configured identity headers and the set of names stripped on entry."""

    def __init__(
        self,
        fields: Sequence[HeaderField],
        extra_strip: Iterable[str] = (),
        credential_headers: Iterable[str] = (),
    ) -> None:
        self.fields = tuple(fields)
        self.credential_names = frozenset(
            normalize_name(n).encode("latin-1") for n in credential_headers
        )
        """Header names authenticators read (X-Api-Key). Spelled otherwise
        (X_Api_Key), edgeauth does not read them but an app that folds '_'
        into '-' would: they are stripped like identity headers."""
        self.stripped = frozenset(
            {
                *(normalize_name(f.name) for f in self.fields),
                *DEFAULT_IDENTITY_HEADERS,
                *WELL_KNOWN_IDENTITY,
                *METHOD_OVERRIDE,
                *(normalize_name(n) for n in extra_strip),
            }
        )
        self.stripped_bytes = frozenset(n.encode("latin-1") for n in self.stripped)
        """The stripped names as ASGI header names (lower case, '-' spelling)."""
        self.stripped_untrusted = self.stripped_bytes | FORWARDING_HEADERS
        """Also X-Forwarded-* and Forwarded: what untrusted peers may not send."""
        # build()'s memos (bounded), by identity object: the verified-token
        # cache shares one object between requests.
        self._built: dict[Identity | None, tuple[Header, ...]] = {}
        self._built_full: dict[Identity | None, tuple[Header, ...]] = {}
        self._encoded: dict[int, tuple[tuple[Header, ...], list[tuple[bytes, bytes]]]] = {}
        self.keys: tuple[dict[bytes, str], dict[bytes, str]] = ({}, {})
        """What :meth:`classify` found, per peer (``keys[0]`` trusted, ``keys[1]``
        untrusted): ASGI header name -> its key, or "" when it is stripped. One
        lookup per header on the hot path."""

    def keys_for(self, trusted: bool) -> dict[bytes, str]:
        """The memo of :attr:`keys` for a trusted or an untrusted peer (each
        item read by its own index: the compiled build would box the pair into
        a new tuple to index it by a value)."""
        return self.keys[0] if trusted else self.keys[1]

    def classify(self, name: bytes) -> tuple[str | None, str | None]:
        """How an incoming header ``name`` is treated: its lower-case text key
        when kept, None when stripped, for a trusted and for an untrusted peer.
        Names repeat from request to request, so the answer is memoized in
        :attr:`keys` (bounded; long names are not kept)."""
        key = name.lower()
        norm = key.replace(b"_", b"-")
        text = key.decode("latin-1")
        misspelled = norm != key and norm in self.credential_names
        trusted = None if misspelled or norm in self.stripped_bytes else text
        untrusted = (
            None
            if misspelled or norm in self.stripped_untrusted or norm.startswith(UNTRUSTED_PREFIXES)
            else text
        )
        if len(name) <= _MEMO_NAME_BYTES:
            remember(self.keys[0], name, trusted or "")
            remember(self.keys[1], name, untrusted or "")
        return trusted, untrusted

    def encoded(self, headers: tuple[Header, ...]) -> list[tuple[bytes, bytes]]:
        """``headers`` (from :meth:`build`) as ASGI pairs; memoized like :meth:`build`.
        The caller must not change the list."""
        memo = self._encoded.get(id(headers))
        if memo is not None and memo[0] is headers:
            return memo[1]
        # Values are ASCII: build() percent-encodes everything else.
        return remember(self._encoded, id(headers), (headers, encode_headers(headers)))[1]

    def strip(self, raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """ASGI header pairs without any spelling of a stripped name."""
        names = self.stripped_bytes
        return [(n, v) for n, v in raw if n.lower().replace(b"_", b"-") not in names]

    def build(
        self, identity: Identity | None, *, include_empty: bool = False
    ) -> tuple[Header, ...]:
        """The configured headers that have a value for ``identity``; with
        ``include_empty`` every configured header, empty where there is no value
        (so a gateway copying them overwrites any client copy)."""
        # Identities come back from the verified-token cache as the same object:
        # their headers are built once (bounded memos keyed by the object).
        memo = self._built_full if include_empty else self._built
        found = memo.get(identity)
        if found is not None:
            return found
        pairs = ((f.name, f.value(identity)) for f in self.fields)
        result = tuple(p for p in pairs if include_empty or p[1])
        return remember(memo, identity, result)
