"""The canonical request path: one spelling for what is matched and what is forwarded.

A request path reaches edgeauth raw (ASGI ``raw_path``, or a forward-auth
header). Servers, routers and upstreams disagree on how to read escapes, dot
segments and repeated slashes, so a path that one of them reads two ways is
refused with 400, and every other path is rewritten into a single canonical
spelling (RFC 3986 §6.2.2) that the matcher, the upstream and the app all see.

>>> canonicalize(b"/api/%7Euser/./docs/../caf%c3%a9")
CanonicalPath(raw='/api/~user/caf%C3%A9', decoded='/api/~user/café')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from urllib.parse import unquote_to_bytes

from .errors import BadRequest

__all__ = ["CanonicalPath", "canonicalize"]

# RFC 3986 §2.3: escapes of these are decoded, they mean the same raw or escaped.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# RFC 3986 §3.3 pchar kept raw: unreserved, sub-delims except ";", ":" and "@".
_SAFE_CLASS = r"A-Za-z0-9\-._~!$&'()*+,=:@"

# The hot path: already canonical (safe ASCII only, so no "%", no "//", no dot segment).
_SEGMENT = rf"(?!\.\.?(?:/|\Z))[{_SAFE_CLASS}]+"
_CANONICAL = re.compile(rf"/(?:{_SEGMENT}(?:/{_SEGMENT})*/?)?".encode("ascii"))

# Escapes that cannot be canonicalized. %2F and %5C would become separators
# (or "\" that some servers take as one); "%" without two hex digits is malformed.
_BAD_ESCAPE = re.compile(r"%(?:(?P<separator>2[Ff]|5[Cc])|(?![0-9A-Fa-f]{2}))")
# Checked on the fully decoded text. "%XX" there is double encoding (from "%25XX",
# also when XX came from escapes); C0, DEL and the C1 controls; "\" and ";"
# (Tomcat/Jetty path parameters) in either spelling.
_BAD_DECODED = re.compile(r"(?P<double>%[0-9A-Fa-f]{2})|(?P<control>[\x00-\x1f\x7f-\x9f])|[\\;]")
# Tokens to respell: every escape, and every raw character a canonical path
# does not carry raw (non-ASCII bytes, space, "<", "{", ...).
_RESPELL = re.compile(rf"%[0-9A-Fa-f]{{2}}|[^/{_SAFE_CLASS}]")


def _respellings() -> dict[str, str]:
    """Canonical spelling of every escape (any hex case) and of every byte kept escaped.

    Keys are latin-1 text, one character per input byte. Fixed size (under 1300
    entries), built once at import.
    """
    table = {chr(b): f"%{b:02X}" for b in range(256)}
    for b in range(256):
        canonical = chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}"
        for hi, lo in product({f"{b >> 4:X}", f"{b >> 4:x}"}, {f"{b & 15:X}", f"{b & 15:x}"}):
            table[f"%{hi}{lo}"] = canonical
    return table


_RESPELLED = _respellings()


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    """A canonical request path in its two forms.

    ``raw`` is percent-encoded pure ASCII: what rules match and what is
    forwarded. ``decoded`` is ``raw`` with every escape decoded (UTF-8): what
    goes in an ASGI ``scope["path"]``.
    """

    raw: str
    decoded: str


def canonicalize(raw: bytes, *, merge_slashes: bool = True) -> CanonicalPath:
    """Canonicalize the path of a request target, as the client sent it (no query).

    Escapes of unreserved characters are decoded, other escapes upper-cased,
    raw non-ASCII bytes percent-encoded, dot segments removed (RFC 3986
    §5.2.4) and, with ``merge_slashes``, runs of "/" merged. Raises
    :class:`~edgeauth.errors.BadRequest` for a path that could be read two ways:
    an encoded "/" or "\\", a raw "\\", ";", double encoding, a malformed
    escape, a control character, invalid UTF-8, "#" or "?", or ".." above "/".

    >>> canonicalize(b"/a//b/%2e%2E/c").raw
    '/a/c'
    >>> canonicalize(b"/a/%2e%2E/%2E%2e")
    Traceback (most recent call last):
    ...
    edgeauth.errors.BadRequest: '..' above the root in path
    """
    if _CANONICAL.fullmatch(raw):
        text = raw.decode("ascii")
        return CanonicalPath(text, text)
    return _canonicalize_slow(raw, merge_slashes)


def _canonicalize_slow(raw: bytes, merge_slashes: bool) -> CanonicalPath:
    """The general case of :func:`canonicalize`; also correct for canonical input."""
    if not raw.startswith(b"/"):
        # "*" (OPTIONS), absolute-form and empty targets are not paths here.
        raise BadRequest("path must start with '/'")
    if raw.find(b"#") >= 0 or raw.find(b"?") >= 0:  # bytes.find: see server.on_url
        # The path part never holds a fragment (RFC 9112 §3.2) or the query.
        raise BadRequest("'#' or '?' in path")
    text = raw.decode("latin-1")  # one character per byte, never fails
    bad = _BAD_ESCAPE.search(text)
    if bad is not None:
        if bad["separator"]:
            raise BadRequest("encoded '/' or '\\' in path")
        raise BadRequest("malformed percent escape in path")
    try:
        # Strict UTF-8 also refuses overlong forms (%C0%AF) and surrogates (%ED%A0%80).
        decoded = (unquote_to_bytes(raw) if "%" in text else raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid UTF-8 in path") from None
    bad = _BAD_DECODED.search(decoded)
    if bad is not None:
        if bad["double"]:
            raise BadRequest("double percent-encoding in path")
        if bad["control"]:
            raise BadRequest("control character in path")
        raise BadRequest("'\\' or ';' in path")

    respelled = _RESPELL.sub(lambda m: _RESPELLED[m[0]], text)
    canonical = _remove_dot_segments(respelled, merge_slashes)
    # With %2F refused, the "/" of both forms are the same raw "/" and a segment is
    # ".", ".." or empty in both or in neither, so both resolve alike.
    return CanonicalPath(canonical, _remove_dot_segments(decoded, merge_slashes))


def _remove_dot_segments(path: str, merge_slashes: bool) -> str:
    """RFC 3986 §5.2.4 on an absolute path, refusing ".." above the root.

    An empty last segment is the trailing slash and is kept; with
    ``merge_slashes`` other empty segments (from "//") are dropped first.
    """
    segments = path[1:].split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == "..":
            if not out:
                raise BadRequest("'..' above the root in path")
            out.pop()
        elif segment != ".":
            if segment or not merge_slashes or i == last:
                out.append(segment)
            continue
        if i == last:
            out.append("")  # "/a/." and "/a/b/.." end in a slash (RFC 3986 §5.2.4 B, C)
    return "/" + "/".join(out)
