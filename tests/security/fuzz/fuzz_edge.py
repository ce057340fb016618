"""Fuzz targets over edgeauth's parsers, and the properties each must keep.

One entry point, :func:`run`, takes raw bytes: the first byte picks the
target, the rest is decoded into its arguments. The same ``check_*``
functions serve three callers:

- the hypothesis properties (tests/security/test_fuzz_properties.py), with
  structured inputs;
- the corpus replay (tests/security/test_fuzz_corpus.py), the deterministic
  gate CI runs: every file in ``corpus/`` and a fixed-seed, fixed-count
  mutation pass;
- atheris, for exploratory runs outside CI (coverage-guided, not repeatable)::

      .venv/bin/python -m tests.security.fuzz.fuzz_edge /tmp/found \\
          tests/security/fuzz/corpus -max_total_time=600

  New inputs go to /tmp/found, a failing one to ``crash-*``. Once the
  product is fixed, the input goes into ``corpus/`` (``regression-*``, named
  for what it found) so the gate keeps it. libFuzzer's ``-merge=1`` (to
  minimize what is added) re-executes ``argv[0]``, so run it through a small
  executable script that imports and calls :func:`main`.

Every property is a promise of DESIGN.md: the canonical path has one
spelling and no way back to an ambiguous one; a cookie or header parser
raises nothing but ``BadRequest``; client-sent identity headers go in every
spelling; a forged token never yields an identity; no input makes the engine
or the forward-auth endpoint fail with a 500 or let a forged credential
through; a login redirect stays on the site.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from edgeauth import load_policy
from edgeauth.asgi import Message
from edgeauth.authn.base import looks_like_jwt
from edgeauth.errors import BadRequest, InvalidCredentials
from edgeauth.forward_auth import ForwardAuthApp
from edgeauth.forwarded import client_address
from edgeauth.headers import header_map
from edgeauth.model import Allow, Code, Denial, Preflight, RequestView
from edgeauth.paths import canonicalize
from edgeauth.pipeline import Engine
from edgeauth.pipeline import _cookie as read_cookie
from edgeauth.policy import Policy

from ... import servers
from ..common import MIDDLEWARE_SETTINGS, forward_auth_section, write_security_policy
from ..harness import check_relative

T = TypeVar("T")

# Rules that let an anonymous request through (tests/security/common.py).
PUBLIC_RULES = frozenset({"public", "login", "readonly", "open", "internal"})
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRUSTED_PEERS = ipaddress.ip_network("10.0.0.0/8")


def sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits on I/O (static keys, memory state) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the coroutine waited on I/O")


@cache
def policy(dialect: str = "caddy") -> Policy:
    """The suite's policy, loaded once per process (with a forward-auth section)."""
    with tempfile.TemporaryDirectory() as folder:
        server = servers.server_section(0, None, **MIDDLEWARE_SETTINGS)
        return load_policy(
            write_security_policy(Path(folder), server, forward_auth_section(dialect))
        )


@cache
def engine() -> Engine:
    """An engine whose audit events go nowhere (the fuzzer makes millions)."""
    return Engine(policy(), audit=_Discard())


class _Discard:
    def emit(self, event: Any) -> None:
        pass


# The properties -----------------------------------------------------------------


def check_canonical(raw: bytes) -> None:
    """A path is refused (BadRequest) or has exactly one canonical spelling, which is
    stable, pure ASCII, free of dot and empty segments and of anything ambiguous."""
    try:
        path = canonicalize(raw)
    except BadRequest:
        return
    text = path.raw
    assert text.isascii() and text.startswith("/"), text
    assert "//" not in text, text
    assert all(s not in (".", "..") for s in text.split("/")), text
    assert not set(text) & set(";\\#? \t"), text
    for hex_digits in _ESCAPE.findall(text):
        assert hex_digits == hex_digits.upper(), text
        assert chr(int(hex_digits, 16)) not in _UNRESERVED, text
        assert hex_digits.upper() not in ("2F", "5C", "3B"), text
    assert "%" not in _ESCAPE.sub("", text), text  # every '%' starts an escape
    decoded = unquote(text, errors="strict")
    assert path.decoded == decoded, (text, path.decoded)
    assert not _CONTROL.search(decoded) and not re.search(r"%[0-9A-Fa-f]{2}", decoded), text
    assert canonicalize(text.encode()) == path, text  # idempotent


def check_cookies(header: str) -> None:
    """The credential-cookie reader agrees with a plain reading of RFC 6265 §5.4
    (split on ';', name and value stripped, one pair of quotes removed, empty
    values skipped, one name with two different values refused) for every name
    in the header, and returns a non-empty value free of separators."""
    names = {pair.partition("=")[0].strip() for pair in header.split(";")} | {"session"}
    for name in sorted(n for n in names if n):
        try:
            expected: str | None = _reference_cookie(header, name)
        except BadRequest:
            expected = "<refused>"
        try:
            found = read_cookie((header,), name)
        except BadRequest:
            found = "<refused>"
        assert found == expected, (header, name, found, expected)
        if found is not None and found != "<refused>":
            assert ";" not in found, (name, found)


def _reference_cookie(header: str, wanted: str) -> str | None:
    found: str | None = None
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        if not eq or name.strip() != wanted:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not value:
            continue
        if found is not None and found != value:
            raise BadRequest("two values")
        found = value
    return found


def check_strip(names: Sequence[bytes]) -> None:
    """No spelling of a stripped header survives, and every other header does."""
    identity = policy().identity
    kept = identity.strip([(n, b"v") for n in names])
    stripped = identity.stripped
    for name, _ in kept:
        assert name.lower().replace(b"_", b"-").decode("latin-1") not in stripped, name
    survivors = [
        n for n in names if n.lower().replace(b"_", b"-").decode("latin-1") not in stripped
    ]
    assert [n for n, _ in kept] == survivors


def _trusts(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in _TRUSTED_PEERS
    except ValueError:
        return False


def check_client_address(peer: str, values: Sequence[str]) -> None:
    """An untrusted peer is the client; a trusted one hands over to an address that
    really is in its X-Forwarded-For, never to garbage."""
    client = client_address(peer, tuple(values), _trusts)
    if not _trusts(peer) or not values:
        assert client == peer, (peer, values, client)
        return
    listed = set()
    for entry in ",".join(values).split(","):
        with contextlib.suppress(ValueError):
            listed.add(str(ipaddress.ip_address(entry.strip())))
    assert client == peer or client in listed, (peer, values, client)


def check_token(token: str) -> None:
    """A forged credential never authenticates: every authenticator says 'not mine'
    (None) or refuses it (InvalidCredentials), and nothing else escapes."""
    looks_like_jwt(token)
    now = time.time()
    for authenticator in policy().authenticators.values():
        try:
            identity = sync(authenticator.authenticate(token, now))
        except InvalidCredentials:
            continue
        assert identity is None, (authenticator.id, token[:80])


def check_request(method: str, target: bytes, headers: Sequence[tuple[str, str]]) -> None:
    """Whatever the request, the engine decides it (never a 500), lets no forged
    credential through, forwards only the canonical path, and redirects on-site."""
    path, _, query = target.partition(b"?")
    raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    view = RequestView(
        method=method.upper(),
        raw_path=path,
        query=query,
        headers=header_map(policy().identity.strip(raw)),
        client="203.0.113.9",
    )
    outcome = sync(engine().evaluate(view))
    if isinstance(outcome, Denial):
        assert outcome.code is not Code.INTERNAL_ERROR, (method, target, headers)
        if outcome.location is not None:
            check_relative("fuzz", outcome.location)
    elif isinstance(outcome, Allow):
        assert outcome.identity is None, (method, target)
        assert outcome.rule_id in PUBLIC_RULES, (outcome.rule_id, target)
        assert outcome.raw_path == canonicalize(path).raw.encode(), target
    else:
        assert isinstance(outcome, Preflight)


def check_gateway(method: str, uri: str, headers: Sequence[tuple[str, str]]) -> None:
    """The forward-auth endpoint answers any decision request without a 500, and an
    anonymous 200 carries empty identity headers."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    pairs = [(n.lower(), v) for n, v in headers]
    pairs += [
        ("x-forwarded-uri", uri),
        ("x-forwarded-method", method),
        ("x-forwarded-host", "app.test"),
    ]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/_edgeauth/auth",
        "raw_path": b"/_edgeauth/auth",
        "query_string": b"",
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in pairs],
        "client": ("127.0.0.1", 40000),
    }
    sync(_gateway()(scope, receive, send))
    status = sent[0]["status"]
    assert status != 500, (method, uri, headers)
    if status == 200:
        identity = dict(sent[0]["headers"])
        assert identity.get(b"x-user-id") == b"", (method, uri)


@cache
def _gateway() -> ForwardAuthApp:
    return ForwardAuthApp(policy(), engine(), audit=_Discard())


# Bytes in, arguments out ----------------------------------------------------------


def _fields(data: bytes) -> list[bytes]:
    return data.split(b"\x00")


def _header_lines(fields: Sequence[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in fields:
        name, sep, value = line.partition(b":")
        if sep and name:
            out.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
    return out


def _canonical(data: bytes) -> None:
    check_canonical(data)


def _cookie(data: bytes) -> None:
    check_cookies(data.decode("latin-1"))


def _strip(data: bytes) -> None:
    check_strip(data.split(b"\n"))


def _client(data: bytes) -> None:
    peer, *values = (f.decode("latin-1") for f in _fields(data))
    check_client_address(peer, values)


def _token(data: bytes) -> None:
    check_token(data.decode("latin-1"))


def _request(data: bytes) -> None:
    method, target, *rest = [*_fields(data), b"", b""]
    check_request(method.decode("latin-1") or "GET", target, _header_lines(rest))


def _forward_auth(data: bytes) -> None:
    method, uri, *rest = [*_fields(data), b"", b""]
    check_gateway(method.decode("latin-1") or "GET", uri.decode("latin-1"), _header_lines(rest))


TARGETS: tuple[Callable[[bytes], None], ...] = (
    _canonical,
    _cookie,
    _strip,
    _client,
    _token,
    _request,
    _forward_auth,
)


def run(data: bytes) -> None:
    """One fuzz input: ``data[0]`` picks the target, the rest is its input."""
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])


_CREDENTIAL_HEADERS = frozenset({"cookie", "authorization", "x-api-key"})


def _spoiled(name: str, value: str) -> str:
    """A credential header made useless: the fuzzer must start from forgeries only."""
    if name.lower() not in _CREDENTIAL_HEADERS:
        return value
    if name.lower() == "cookie":
        return ";".join(_spoiled("x-api-key", pair) for pair in value.split(";"))
    return value[:-3] + "!!!" if len(value) > 16 else value


def seeds() -> dict[str, bytes]:
    """Inputs for every target, taken from the attack tables (credentials spoiled)."""
    from ..table import ALL

    out: dict[str, bytes] = {}

    def add(target: Callable[[bytes], None], name: str, data: bytes) -> None:
        out[f"{target.__name__.strip('_')}-{name}"] = bytes([TARGETS.index(target)]) + data

    for case in ALL:
        headers = [(n, _spoiled(n, v)) for n, v in case.request_headers]
        lines = b"\x00".join(f"{n}: {v}".encode("latin-1") for n, v in headers)
        add(_canonical, case.id, case.path)
        add(_request, case.id, case.method.encode() + b"\x00" + case.target + b"\x00" + lines)
        add(_forward_auth, case.id, case.method.encode() + b"\x00" + case.target + b"\x00" + lines)
        add(_strip, case.id, b"\n".join(n.encode("latin-1") for n, _ in headers))
        for name, value in headers:
            if name.lower() == "cookie":
                add(_cookie, case.id, value.encode("latin-1"))
                add(_token, case.id, value.partition("=")[2].encode("latin-1"))
            elif name.lower() == "authorization":
                add(_token, case.id, value.partition(" ")[2].encode("latin-1"))
            elif name.lower() in ("x-forwarded-for", "forwarded"):
                add(_client, case.id, b"10.0.0.1\x00" + value.encode("latin-1"))
    return out


def write_seeds(folder: Path) -> int:
    """Write :func:`seeds` into ``folder``; how many files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in sorted(seeds().items()):
        (folder / f"seed-{re.sub(r'[^A-Za-z0-9.-]', '_', name)}").write_bytes(data)
        written += 1
    return written


def main() -> None:
    """Run atheris over :func:`run` (exploratory; see the module docstring), or with
    ``--seeds DIR`` write the seed inputs into DIR."""
    if sys.argv[1:2] == ["--seeds"]:
        print(write_seeds(Path(sys.argv[2])), "seed inputs written")
        return
    import atheris  # type: ignore[import-untyped]  # optional: exploratory runs only

    policy(), engine(), _gateway()  # load before instrumenting: setup is not the target
    atheris.instrument_all()
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
