"""Tests for edgeauth.paths: one canonical spelling, or 400 for an ambiguous path."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeauth.errors import BadRequest
from edgeauth.paths import CanonicalPath, _canonicalize_slow, canonicalize

# (input, merge_slashes, expected raw, expected decoded)
ACCEPTED: list[tuple[bytes, bool, str, str]] = [
    (b"/", True, "/", "/"),
    (b"/a/b", True, "/a/b", "/a/b"),
    (b"/a/b/", True, "/a/b/", "/a/b/"),
    (b"/API/Users", True, "/API/Users", "/API/Users"),
    (b"/.well-known/x.json", True, "/.well-known/x.json", "/.well-known/x.json"),
    (b"/.../x", True, "/.../x", "/.../x"),
    (b"/a/!$&'()*+,=:@", True, "/a/!$&'()*+,=:@", "/a/!$&'()*+,=:@"),
    # dot segments (RFC 3986 §5.2.4)
    (b"/a/./b", True, "/a/b", "/a/b"),
    (b"/a/b/..", True, "/a/", "/a/"),
    (b"/a/b/.", True, "/a/b/", "/a/b/"),
    (b"/a/b/../c", True, "/a/c", "/a/c"),
    (b"/a/b/../../c", True, "/c", "/c"),
    (b"/a/..", True, "/", "/"),
    (b"/.", True, "/", "/"),
    (b"/a/%2e%2e/b", True, "/b", "/b"),
    (b"/a/%2E/b", True, "/a/b", "/a/b"),
    (b"/a/.%2e/b", True, "/b", "/b"),
    (b"/%2e%2e%2e", True, "/...", "/..."),
    # slashes
    (b"/a//b", True, "/a/b", "/a/b"),
    (b"/a//b", False, "/a//b", "/a//b"),
    (b"//a///b//", True, "/a/b/", "/a/b/"),
    (b"//", True, "/", "/"),
    (b"//", False, "//", "//"),
    (b"/a//../b", True, "/b", "/b"),
    (b"/a//../b", False, "/a/b", "/a/b"),
    (b"//..", False, "/", "/"),
    # escapes of unreserved characters are decoded, in either hex case
    (b"/%7Euser", True, "/~user", "/~user"),
    (b"/%7euser", True, "/~user", "/~user"),
    (b"/%41%62%2D%5f%2E%7E%30", True, "/Ab-_.~0", "/Ab-_.~0"),
    # other escapes stay, upper-cased
    (b"/a%20b", True, "/a%20b", "/a b"),
    (b"/%40me", True, "/%40me", "/@me"),
    (b"/x%3a%3f%23", True, "/x%3A%3F%23", "/x:?#"),
    (b"/a/%5b%5D", True, "/a/%5B%5D", "/a/[]"),
    (b"/%25zz/%25", True, "/%25zz/%25", "/%zz/%"),
    (b"/caf%c3%a9", True, "/caf%C3%A9", "/café"),
    (b"/%e2%82%AC", True, "/%E2%82%AC", "/€"),
    (b"/%C2%A0", True, "/%C2%A0", "/\u00a0"),
    # raw bytes a path does not carry are percent-encoded
    ("/café".encode(), True, "/caf%C3%A9", "/café"),
    ("/\U0001f600/x".encode(), True, "/%F0%9F%98%80/x", "/\U0001f600/x"),
    ("/caf\u00e9/".encode() + b"%C3%A9", True, "/caf%C3%A9/%C3%A9", "/café/é"),
    (b"/%C3" + b"\xa9", True, "/%C3%A9", "/é"),
    (b"/a b", True, "/a%20b", "/a b"),
    (b'/{x}|"<>^`', True, "/%7Bx%7D%7C%22%3C%3E%5E%60", '/{x}|"<>^`'),
]

# (input, a fragment of the message)
REJECTED: list[tuple[bytes, str]] = [
    (b"", "start with '/'"),
    (b"*", "start with '/'"),
    (b"http://x/y", "start with '/'"),
    (b"a/b", "start with '/'"),
    (b"%2Fa", "start with '/'"),
    (b"/a%2Fb", "encoded '/'"),
    (b"/a%2fb", "encoded '/'"),
    (b"/a%5Cb", "encoded '/'"),
    (b"/a%5cb", "encoded '/'"),
    (b"/a\\b", "';'"),
    (b"/a;b", "';'"),
    (b"/a%3Bb", "';'"),
    (b"/a%3bb=1", "';'"),
    (b"/%252e", "double"),
    (b"/%252F", "double"),
    (b"/%25aB", "double"),
    (b"/%25%32%46", "double"),
    (b"/%25%41%42", "double"),
    (b"/%", "malformed"),
    (b"/a%", "malformed"),
    (b"/%4", "malformed"),
    (b"/%zz", "malformed"),
    (b"/%4g", "malformed"),
    (b"/%%41", "malformed"),
    (b"/a\x00b", "control"),
    (b"/%00", "control"),
    (b"/\t", "control"),
    (b"/a\r\nb", "control"),
    (b"/%1F", "control"),
    (b"/\x7f", "control"),
    (b"/%7f", "control"),
    (b"/%C2%80", "control"),
    (b"/%c2%9f", "control"),
    (b"/\xc2\x85", "control"),
    (b"/%C0%AF", "UTF-8"),
    (b"/%E0%80%AF", "UTF-8"),
    (b"/%ED%A0%80", "UTF-8"),
    (b"/%FF", "UTF-8"),
    (b"/\xff", "UTF-8"),
    (b"/\xc3", "UTF-8"),
    (b"/%C3(", "UTF-8"),
    (b"/%C3/%A9", "UTF-8"),
    (b"/a#b", "'#'"),
    (b"/#", "'#'"),
    (b"/a?b", "'?'"),
    (b"/..", "above the root"),
    (b"/../x", "above the root"),
    (b"/a/../..", "above the root"),
    (b"/%2e%2e/x", "above the root"),
    (b"/%2E%2E", "above the root"),
    (b"/.%2e", "above the root"),
    (b"//..", "above the root"),
]


@pytest.mark.parametrize(("raw", "merge", "expected_raw", "expected_decoded"), ACCEPTED)
def test_accepted(raw: bytes, merge: bool, expected_raw: str, expected_decoded: str) -> None:
    """An accepted path gets its one canonical spelling and its decoded form."""
    assert canonicalize(raw, merge_slashes=merge) == CanonicalPath(expected_raw, expected_decoded)


@pytest.mark.parametrize(("raw", "message"), REJECTED)
def test_rejected(raw: bytes, message: str) -> None:
    """An ambiguous or malformed path is refused with BadRequest saying why."""
    with pytest.raises(BadRequest, match=re.escape(message)):
        canonicalize(raw)


def test_rejected_message_does_not_echo_the_path() -> None:
    """The message never repeats the path, which may carry a secret (a reset token)."""
    with pytest.raises(BadRequest) as info:
        canonicalize(b"/reset/s3cr3t-t0ken/%2e%2e/%2e%2e/%2e%2e")
    assert "s3cr3t" not in str(info.value)


def test_fast_path_result_is_the_input() -> None:
    """An already canonical path comes back unchanged in both forms."""
    assert canonicalize(b"/api/v1/users/42/") == CanonicalPath(
        "/api/v1/users/42/", "/api/v1/users/42/"
    )


# Hypothesis: paths built from safe characters, "/", dots, escapes and non-ASCII text.
_SAFE = "abzAZ09-_~!$&'()*+,=:@"
_PCHAR_SAFE = "/!$&'()*+,=:@"  # what quote() must leave raw to match a canonical path
_ODD_ASCII = b' "<>[]^`{|}%?#;\\\x00\x1f\x7f/'
_HEX = "0123456789ABCDEFabcdef"


def _escape(data: bytes, upper: bool) -> bytes:
    text = "".join(f"%{b:02X}" for b in data)
    return (text if upper else text.lower()).encode()


_escaped_byte = st.one_of(
    st.sampled_from(b"AZaz09-._~!@:=+"),
    st.sampled_from(_ODD_ASCII),
    st.integers(0, 255),
).map(lambda b: bytes([b]))
_non_ascii = st.characters(min_codepoint=0xA0, exclude_categories=["Cs"]).map(lambda c: c.encode())
_tokens = st.one_of(
    st.sampled_from(_SAFE).map(str.encode),
    st.sampled_from([b"/", b"/", b"//", b".", b"..", b"/./", b"/../"]),
    st.builds(_escape, st.one_of(_escaped_byte, _non_ascii), st.booleans()),
    _non_ascii,
    st.sampled_from([b"%25", b"%", b"%4", b"%2e%2E", b"%252e"]),
)
paths = st.lists(_tokens, max_size=16).map(lambda parts: b"/" + b"".join(parts))
_canonical_shaped = st.lists(
    st.text(_SAFE + ".", min_size=1, max_size=4).filter(lambda s: s not in (".", "..")),
    max_size=6,
).map(lambda segs: ("/" + "/".join(segs)).encode())

_PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)


def _try(raw: bytes, merge: bool = True) -> CanonicalPath | None:
    try:
        return canonicalize(raw, merge_slashes=merge)
    except BadRequest:
        return None


def _rfc_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 as written (string buffers) for absolute paths: a reference."""
    out: list[str] = []
    while path:
        if path.startswith("/./") or path == "/.":
            path = "/" + path[3:]
        elif path.startswith("/../") or path == "/..":
            path = "/" + path[4:]
            if out:
                out.pop()
        else:
            end = path.find("/", 1)
            segment = path if end == -1 else path[:end]
            out.append(segment)
            path = path[len(segment) :]
    return "".join(out)


@_PROPERTY
@given(paths, st.booleans())
def test_idempotent(raw: bytes, merge: bool) -> None:
    """Canonicalizing a canonical path changes nothing."""
    c = _try(raw, merge)
    if c is not None:
        assert canonicalize(c.raw.encode(), merge_slashes=merge) == c


@_PROPERTY
@given(paths, st.booleans())
def test_output_shape(raw: bytes, merge: bool) -> None:
    """Output is ASCII, starts with "/", has no dot segment, no "//" when merging,
    no control, "\\" or ";", only upper-case escapes of bytes that need one, and
    ``decoded`` is ``raw`` decoded."""
    c = _try(raw, merge)
    if c is None:
        return
    assert c.raw.isascii()
    assert c.raw.startswith("/")
    assert c.decoded.startswith("/")
    assert not {".", ".."} & set(c.raw.split("/"))
    assert not {".", ".."} & set(c.decoded.split("/"))
    if merge:
        assert "//" not in c.raw
    for form in (c.raw, c.decoded):
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\\;]", form)
    for escape in re.findall(r"%(..)", c.raw):
        assert escape == escape.upper()
        assert not re.fullmatch(r"[A-Za-z0-9\-._~]", chr(int(escape, 16)))
    assert re.fullmatch(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*", c.raw)
    assert unquote(c.raw, errors="strict") == c.decoded


@_PROPERTY
@given(paths, st.booleans())
def test_decoded_reencodes_to_raw(raw: bytes, merge: bool) -> None:
    """Quoting ``decoded`` gives back ``raw``, unless raw escapes a character a path may
    carry raw ("%40" and "@" both decode to "@")."""
    c = _try(raw, merge)
    if c is None:
        return
    again = canonicalize(quote(c.decoded, safe=_PCHAR_SAFE).encode(), merge_slashes=merge)
    assert again.decoded == c.decoded
    if not any(unquote(e) in _PCHAR_SAFE for e in re.findall(r"%..", c.raw)):
        assert again.raw == c.raw


@_PROPERTY
@given(paths, st.booleans())
def test_same_meaning_as_the_input(raw: bytes, merge: bool) -> None:
    """``decoded`` is the decoded input with slashes merged and dots resolved per RFC 3986."""
    c = _try(raw, merge)
    if c is None:
        return
    decoded_input = unquote_to_bytes(raw).decode()
    if merge:
        decoded_input = re.sub("/+", "/", decoded_input)
    assert c.decoded == _rfc_remove_dot_segments(decoded_input)


@_PROPERTY
@given(st.binary(max_size=24).map(lambda b: b"/" + b))
def test_any_bytes_give_a_path_or_bad_request(raw: bytes) -> None:
    """Arbitrary bytes never raise anything but BadRequest, and a result is canonical."""
    c = _try(raw)
    if c is not None:
        assert canonicalize(c.raw.encode()) == c
        assert c.raw.isascii()


@_PROPERTY
@given(_canonical_shaped, st.booleans())
def test_fast_path_agrees_with_slow_path(raw: bytes, trailing_slash: bool) -> None:
    """The hot-path shortcut gives what the general algorithm gives."""
    raw += b"/" if trailing_slash and raw != b"/" else b""
    assert canonicalize(raw) == _canonicalize_slow(raw, merge_slashes=True)


def test_generated_paths_are_mostly_accepted() -> None:
    """The path strategy yields enough accepted inputs for the properties to bite."""
    accepted = 0

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(paths)
    def count(raw: bytes) -> None:
        nonlocal accepted
        accepted += _try(raw) is not None

    count()
    assert accepted >= 60
