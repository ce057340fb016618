"""The middleware's short path (``Engine.settled``) answers exactly what the
whole path answers, and only where it may: for every request below, when it
settles, the app's scope is the one the whole path builds, or the denial is
the whole path's, audited alike; the requests it must leave to the whole path
(anything to strip, refuse otherwise, wait for or record) are left to it; and
the invariants hold on the repeated requests it serves."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from edgeauth import EdgeAuth, load_policy
from edgeauth.asgi import decide, settling_view, view_from_scope
from edgeauth.errors import BadRequest
from edgeauth.guard import inner_scope, settled_scope
from edgeauth.middleware import IdentityRequired
from edgeauth.model import Allow, Denial
from edgeauth.pipeline import Engine
from edgeauth.proxy import Proxy, request_headers
from edgeauth.revocation import revoke

from .helpers import (
    API_KEY,
    AUDIENCE,
    ISSUER,
    SEED_POLICY,
    RecordingAudit,
    call,
    echo_app,
    guarded,
    session_token,
    write_policy,
)

SERVICE_SECRET = "service-secret-for-the-settled-path-tests-0123456789"

POLICY = (
    SEED_POLICY.replace('[default]\naction = "deny"\n', "")
    + f"""
[authenticators.service]
type = "jwt"
from = "bearer"
algorithms = ["HS256"]
secret = "{SERVICE_SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
forward_credential = false

[[rules]]
id = "service"
match = "/svc/**"
authenticate = ["service"]

[[rules]]
id = "limited"
match = "/limited/**"
authenticate = ["session"]
rate_limit = "1000/minute per ip"

[[rules]]
id = "bounded"
match = "/bounded/**"
authenticate = ["session"]
max_body = 10

[[rules]]
id = "shared"
match = "/shared/**"
authenticate = ["session"]
cors = {{ origins = ["https://app.example.com"] }}

[[rules]]
id = "optional"
match = "/optional/**"
public = true
authenticate = ["session"]

[[rules]]
id = "optional-service"
match = "/optsvc/**"
public = true
authenticate = ["service"]

[[rules]]
id = "either"
match = "/either/**"
kind = "auto"
authenticate = ["session"]
login_url = "/login"

[server]
trusted_proxies = ["10.0.0.0/8"]
"""
)
# With a rule for one host, routes depend on Host: the short path reads it first.
HOSTS_POLICY = (
    POLICY
    + """
[[rules]]
id = "tenant"
match = "/tenant/**"
hosts = ["a.example"]
authenticate = ["session"]
"""
)

USER = session_token("alice", ("user",))
ADMIN = session_token("root", ("admin",))
SERVICE = session_token("svc", (), secret=SERVICE_SECRET)
NOT_SEEN = session_token("bob", ("user",))  # never presented before the comparison

PATHS = [
    b"/api/protected/x",
    b"/api/admin/x",
    b"/api/v1/x",
    b"/svc/x",
    b"/tenant/x",
    b"/limited/x",
    b"/bounded/x",
    b"/shared/x",
    b"/optional/x",
    b"/optsvc/x",
    b"/either/x",
    b"/dashboard/x",
    b"/public/x",
    b"/nowhere",
    b"/api/protected/./a/../x",
    b"/api/protected/%2e%2e/admin/x",
]
CREDENTIALS: list[list[tuple[bytes, bytes]]] = [
    [],
    [(b"cookie", b"session=" + USER.encode())],
    [(b"cookie", b"theme=dark; session=" + ADMIN.encode() + b"; lang=en")],
    [(b"cookie", b"session=" + USER.encode()), (b"cookie", b"session=" + ADMIN.encode())],
    [(b"cookie", b"session=" + NOT_SEEN.encode())],
    [(b"cookie", b"session=not-a-token")],
    [(b"authorization", b"Bearer " + SERVICE.encode())],
    [(b"authorization", b"Bearer " + USER.encode())],
    [(b"authorization", b"Basic dXNlcjpwYXNz")],
    [(b"authorization", b"Bearer")],
]
OTHERS: list[list[tuple[bytes, bytes]]] = [
    [(b"host", b"a.example")],
    [(b"host", b"b.example:8080"), (b"accept", b"application/json")],
    [(b"host", b"a.example"), (b"host", b"b.example")],
    [(b"host", b"a.example"), (b"origin", b"https://evil.example")],
    [(b"host", b"a.example"), (b"x-user-id", b"mallory")],
    [(b"host", b"a.example"), (b"X_User_Role", b"admin")],
    [(b"host", b"a.example"), (b"x-forwarded-for", b"203.0.113.9")],
    [(b"Host", b"A.EXAMPLE."), (b"User-Agent", b"curl/8")],
    [(b"host", b"not a host name")],
    [(b"host", b"a.example"), (b"accept", b"text/html"), (b"sec-fetch-mode", b"navigate")],
    [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.3"), (b"x-forwarded-for", b"10.0.0.2")],
    [(b"host", b"a.example"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"b.ex")],
]
METHODS = ["GET", "HEAD", "POST", "OPTIONS"]
PEERS = [("127.0.0.1", 5000), ("10.0.0.7", 5000)]


def scope_of(
    method: str, path: bytes, headers: list[tuple[bytes, bytes]], peer: tuple[str, int]
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": b"q=1",
        "root_path": "",
        "headers": headers,
        "client": peer,
        "server": ("127.0.0.1", 8080),
    }


async def nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def whole_path(app: EdgeAuth, scope: dict[str, Any]) -> dict[str, Any] | int:
    """What the whole path makes of ``scope``: the app's scope, or the status answered."""
    made = await whole_answer(app, scope)
    return made[0] if isinstance(made, tuple) else made


async def whole_decision(
    app: EdgeAuth | Proxy, scope: dict[str, Any]
) -> tuple[Allow, Any, list[tuple[bytes, bytes]]] | Answer:
    """The whole path's decision on ``scope``, or the answer it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    decided = await decide(scope, send, app.policy, app.engine)
    if decided is None:
        return int(sent[0]["status"]), sent[0]["headers"], sent[1]["body"]
    assert not sent
    return decided


async def whole_answer(app: EdgeAuth, scope: dict[str, Any]) -> dict[str, Any] | Answer:
    """What the whole path makes of ``scope``: the app's scope, or the answer sent."""
    decided = await whole_decision(app, scope)
    if not isinstance(decided[0], Allow):
        return cast("Answer", decided)
    allow, _, headers = cast("tuple[Allow, Any, list[tuple[bytes, bytes]]]", decided)
    inner = inner_scope(app, scope, allow, headers)
    # Nothing for the response either (CORS, RateLimit-*), nor a body to bound:
    # what the short path's caller takes for granted.
    inner["whole path watches"] = bool(allow.response_headers or allow.cors or allow.max_body)
    return inner


def comparable(inner: dict[str, Any]) -> dict[str, Any]:
    """An app scope without its request id (new for every request)."""
    return {
        k: v for k, v in inner.items() if k not in ("edgeauth.request_id", "whole path watches")
    }


def app_for(tmp_path: Path, **kwargs: Any) -> EdgeAuth:
    return guarded(tmp_path, POLICY, **kwargs)


async def middleware_answer(app: EdgeAuth | Proxy, scope: dict[str, Any]) -> Answer:
    """The answer the middleware (or proxy) sends itself (nothing is called)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, nothing, send)
    return int(sent[0]["status"]), sent[0]["headers"], sent[1]["body"]


def same_answer(short: Answer, whole: Answer, short_id: str, whole_id: str) -> None:
    """Two answers that differ only in their request ids."""
    assert short_id != whole_id
    assert short[0] == whole[0]
    assert short[1] == [(n, short_id.encode() if n == b"x-request-id" else v) for n, v in whole[1]]
    assert (b"x-request-id", short_id.encode()) in short[1]
    assert short[2] == whole[2].replace(whole_id.encode(), short_id.encode())


def same_event(short: dict[str, Any], whole: dict[str, Any]) -> None:
    """Two audit events of one decision that differ only in request id (and time)."""
    ignored = ("request_id", "time")
    assert {k: v for k, v in short.items() if k not in ignored} == {
        k: v for k, v in whole.items() if k not in ignored
    }
    assert list(short) == list(whole)


FILE_AUDIT = '[audit]\nfile = "audit.log"\n'
READ_FIELDS = (b"cookie", b"authorization", b"x-forwarded-for")


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


@pytest.mark.parametrize("policy", [POLICY, HOSTS_POLICY], ids=["any-host", "per-host"])
async def test_every_settled_request_gets_the_whole_paths_scope(
    tmp_path: Path, policy: str
) -> None:
    """Thousands of requests: where the short path answers, its scope for the
    app equals the whole path's (identity and headers included), or its
    denial is the whole path's answer, audited with the same event."""
    audit = RecordingAudit()
    app = guarded(tmp_path, policy, audit=audit)
    settled = left = denied = 0
    cases = itertools.product(METHODS, PATHS, CREDENTIALS, OTHERS, PEERS)
    for method, path, credentials, others, peer in cases:
        headers = [*others, *credentials]
        scope = scope_of(method, path, headers, peer)
        if NOT_SEEN.encode() not in b"".join(v for _, v in credentials):
            await whole_path(app, dict(scope))  # remembers the route, verifies the token
        events = len(audit.events)
        short = settled_scope(app, dict(scope))
        if isinstance(short, Denial):
            denied += 1
            assert len(audit.events) == events + 1  # audited once, by the short path
            answer = await middleware_answer(app, dict(scope))
            assert len(audit.events) == events + 2
            whole = await whole_answer(app, dict(scope))
            assert isinstance(whole, tuple), (method, path, headers, peer, whole)
            assert len(audit.events) == events + 3
            first, again, full = audit.events[-3:]
            same_answer(answer, whole, again["request_id"], full["request_id"])
            same_event(first, full)
            same_event(again, full)
            assert first["request_id"] == short.request_id
            continue
        assert len(audit.events) == events  # nothing audited but denials here
        whole = await whole_path(app, dict(scope))
        if short is None:
            left += 1
            continue
        settled += 1
        assert isinstance(whole, dict), (method, path, headers, peer, whole)
        assert comparable(short) == comparable(whole), (method, path, headers, peer)
        assert whole["whole path watches"] is False, (method, path, headers, peer)
        assert short["edgeauth"] is whole["edgeauth"]
        assert short["edgeauth.request_id"] != whole["edgeauth.request_id"]
    # Every kind occurs: the comparisons above are not vacuous.
    assert settled > 100 and denied > 100 and left > 1000, (settled, denied, left)


def upstream(proxy: Proxy, decided: tuple[Allow, Any, list[tuple[bytes, bytes]]], peer: str) -> Any:
    """What the proxy sends upstream for a decided request: the URL and the
    headers (or the 400 for a value that is not UTF-8), and the allow's fields
    but its request id."""
    allow, view, headers = decided
    try:
        sent: Any = request_headers(headers, view, allow, proxy.policy, peer)
    except BadRequest:
        sent = 400
    fields = {f.name: getattr(allow, f.name) for f in dataclasses.fields(allow)}
    fields["request_id"] = None
    return str(proxy._url("http://upstream", allow, view.query)), sent, fields, view.method


@pytest.mark.parametrize("policy", [POLICY, HOSTS_POLICY], ids=["any-host", "per-host"])
async def test_every_settled_proxy_request_goes_upstream_as_the_whole_paths(
    tmp_path: Path, policy: str
) -> None:
    """The reverse proxy's short path, over the same thousands of requests:
    where it answers, the upstream gets the very URL and headers (identity and
    X-Forwarded-* included) the whole path sends, or the client the whole
    path's denial, audited with the same event."""
    text = policy.replace("[server]\n", '[server]\nupstream = "http://127.0.0.1:9"\n')
    loaded = load_policy(write_policy(tmp_path, text))
    audit = RecordingAudit()
    proxy = Proxy(loaded, Engine(loaded, audit=audit))
    settled = left = denied = 0
    cases = itertools.product(METHODS, PATHS, CREDENTIALS, OTHERS, PEERS)
    for method, path, credentials, others, peer in cases:
        scope = scope_of(method, path, [*others, *credentials], peer)
        if NOT_SEEN.encode() not in b"".join(v for _, v in credentials):
            await whole_decision(proxy, dict(scope))  # remembers the route, verifies the token
        events = len(audit.events)
        short = proxy._settled(dict(scope))
        if short is None:
            left += 1
            continue
        if isinstance(short, Denial):
            denied += 1
            answer = await middleware_answer(proxy, dict(scope))
            whole_denial = await whole_decision(proxy, dict(scope))
            assert isinstance(whole_denial[0], int), (method, path, others, credentials, peer)
            first, again, full = audit.events[-3:]
            assert len(audit.events) == events + 3
            same_answer(
                answer, cast("Answer", whole_denial), again["request_id"], full["request_id"]
            )
            same_event(first, full)
            continue
        settled += 1
        assert len(audit.events) == events
        whole = await whole_decision(proxy, dict(scope))
        assert isinstance(whole[0], Allow), (method, path, others, credentials, peer, whole)
        assert upstream(proxy, short, peer[0]) == upstream(proxy, cast(Any, whole), peer[0]), (
            method,
            path,
            others,
            credentials,
            peer,
        )
    assert settled > 100 and denied > 100 and left > 1000, (settled, denied, left)


def test_the_proxys_settling_view_is_the_whole_view_in_what_it_holds(tmp_path: Path) -> None:
    """settling_view gives what view_from_scope gives (client address and
    scheme included), but only the headers the short path and the upstream
    request read."""
    policy = load_policy(write_policy(tmp_path, POLICY))
    seen = 0
    for others, credentials, peer in itertools.product(OTHERS, CREDENTIALS, PEERS):
        scope = scope_of("GET", b"/api/protected/x", [*others, *credentials], peer)
        whole, _ = view_from_scope(dict(scope), policy)  # classifies the header names
        read = settling_view(dict(scope), policy)
        if read is None:
            continue
        seen += 1
        short, read_peer = read
        assert read_peer == peer[0]
        for name in ("method", "raw_path", "query", "scheme", "client", "websocket"):
            assert getattr(short, name) == getattr(whole, name), (name, others, peer)
        assert short.headers == {k: v for k, v in whole.headers.items() if k in short.headers}
        assert set(short.headers) >= {"cookie", "authorization", "host"} & set(whole.headers)
    assert seen > 50


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", b"/api/protected/x", [(b"cookie", b"session=" + USER.encode())]),
        ("HEAD", b"/api/protected/x", [(b"cookie", b"session=" + USER.encode())]),
        ("GET", b"/api/admin/x", [(b"cookie", b"a=1; session=" + ADMIN.encode())]),
        ("GET", b"/svc/x", [(b"authorization", b"Bearer " + SERVICE.encode())]),
        ("GET", b"/optional/x", [(b"cookie", b"session=" + USER.encode())]),
        ("GET", b"/api/protected/./x", [(b"cookie", b"session=" + USER.encode())]),
        ("GET", b"/public/x", []),
        ("GET", b"/public/x", [(b"cookie", b"session=" + USER.encode())]),
        ("GET", b"/optional/x", []),
    ],
)
async def test_the_common_allowed_requests_settle(
    tmp_path: Path, method: str, path: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """A repeated request on a plain rule, with a cached credential or with none
    where none is needed, takes the short path."""
    app = app_for(tmp_path)
    scope = scope_of(method, path, [(b"host", b"a.example"), *headers], PEERS[0])
    assert settled_scope(app, dict(scope)) is None  # the first time: nothing remembered yet
    assert isinstance(await whole_path(app, dict(scope)), dict)
    assert settled_scope(app, dict(scope)) is not None


COOKIE = [(b"cookie", b"session=" + USER.encode())]


@pytest.mark.parametrize(
    ("why", "method", "path", "headers", "peer"),
    [
        ("a POST is CSRF-checked", "POST", b"/api/protected/x", COOKIE, PEERS[0]),
        ("a preflight", "OPTIONS", b"/api/protected/x", COOKIE, PEERS[0]),
        ("lower-case method", "get", b"/api/protected/x", COOKIE, PEERS[0]),
        ("an identity header to strip", "GET", b"/api/protected/x",
         [*COOKIE, (b"x-user-id", b"mallory")], PEERS[0]),
        ("its underscore spelling", "GET", b"/api/protected/x",
         [*COOKIE, (b"x_user_id", b"mallory")], PEERS[0]),
        ("X-Forwarded-For from an untrusted peer", "GET", b"/api/protected/x",
         [*COOKIE, (b"x-forwarded-for", b"203.0.113.9")], PEERS[0]),
        ("Host twice", "GET", b"/api/protected/x",
         [*COOKIE, (b"host", b"b.example")], PEERS[0]),
        ("an Origin", "GET", b"/api/protected/x",
         [*COOKIE, (b"origin", b"https://a.example")], PEERS[0]),
        ("a rate-limited rule", "GET", b"/limited/x", COOKIE, PEERS[0]),
        ("a rule with a body limit", "GET", b"/bounded/x", COOKIE, PEERS[0]),
        ("a CORS rule", "GET", b"/shared/x", COOKIE, PEERS[0]),
        ("a rule reading three places", "GET", b"/api/v1/x", COOKIE, PEERS[0]),
        ("a role the identity lacks", "GET", b"/api/admin/x", COOKIE, PEERS[0]),
        ("no credential on a page rule", "GET", b"/dashboard/x", [], PEERS[0]),
        ("no credential on an auto rule", "GET", b"/either/x", [], PEERS[0]),
        ("no credential, and a header to strip", "GET", b"/api/protected/x",
         [(b"x-user-id", b"mallory")], PEERS[0]),
        ("no credential, and an Origin", "GET", b"/api/protected/x",
         [(b"origin", b"https://a.example")], PEERS[0]),
        ("no credential on a rate-limited rule", "GET", b"/limited/x", [], PEERS[0]),
        ("no credential on a CORS rule", "GET", b"/shared/x", [], PEERS[0]),
        ("no credential in a POST", "POST", b"/api/protected/x", [], PEERS[0]),
        ("the credential twice, different", "GET", b"/api/protected/x",
         [*COOKIE, (b"cookie", b"session=" + ADMIN.encode())], PEERS[0]),
        ("no rule matches", "GET", b"/nowhere", COOKIE, PEERS[0]),
        ("an invalid token on an optional rule", "GET", b"/optional/x",
         [(b"cookie", b"session=not-a-token")], PEERS[0]),
        ("Bearer without a token on an optional rule", "GET", b"/optsvc/x",
         [(b"authorization", b"Bearer")], PEERS[0]),
        ("a path that is refused", "GET", b"/api/protected/%2e%2e/admin", COOKIE, PEERS[0]),
        ("Bearer without a token", "GET", b"/svc/x", [(b"authorization", b"Bearer")], PEERS[0]),
    ],
)  # fmt: skip
async def test_what_the_short_path_leaves_to_the_whole_path(
    tmp_path: Path,
    why: str,
    method: str,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    peer: tuple[str, int],
) -> None:
    app = app_for(tmp_path)
    scope = scope_of(method, path, [(b"host", b"a.example"), *headers], peer)
    for _ in range(2):
        await whole_path(app, dict(scope))
    assert settled_scope(app, dict(scope)) is None, why


@pytest.mark.parametrize(
    ("method", "path", "headers", "peer", "client"),
    [
        ("GET", b"/api/protected/x", [], PEERS[0], "127.0.0.1"),
        ("HEAD", b"/api/protected/./x", [(b"accept", b"text/html")], PEERS[0], "127.0.0.1"),
        ("GET", b"/api/protected/x", [(b"authorization", b"Bearer " + USER.encode())],
         PEERS[0], "127.0.0.1"),
        ("GET", b"/svc/x", [(b"authorization", b"Basic dXNlcjpwYXNz")], PEERS[0], "127.0.0.1"),
        ("GET", b"/svc/x", [(b"cookie", b"session=" + USER.encode())], PEERS[0], "127.0.0.1"),
        ("GET", b"/api/protected/x", [(b"x-forwarded-for", b"203.0.113.9")], PEERS[1],
         "203.0.113.9"),
    ],
)  # fmt: skip
async def test_a_request_without_the_rules_credential_is_denied_on_the_short_path(
    tmp_path: Path,
    method: str,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    peer: tuple[str, int],
    client: str,
) -> None:
    """No credential where an ``api`` rule reads one (none at all, or only in
    a place the rule does not read): after the first time, the 401 comes from
    the short path, JSON with its challenge, audited with the client the
    whole path names (the forwarded one from a trusted proxy)."""
    audit = RecordingAudit()
    app = app_for(tmp_path, audit=audit)
    scope = scope_of(method, path, [(b"host", b"a.example"), *headers], peer)
    assert settled_scope(app, dict(scope)) is None  # the route is not known yet
    first = await middleware_answer(app, dict(scope))  # the whole path's
    denial = settled_scope(app, dict(scope))
    assert isinstance(denial, Denial) and denial.code == "missing_credentials"
    again = await middleware_answer(app, dict(scope))
    same_answer(again, first, audit.events[2]["request_id"], audit.events[0]["request_id"])
    assert again[0] == 401
    assert (b"www-authenticate", b'Bearer realm="edgeauth"') in again[1]
    assert (b"content-type", b"application/json") in again[1]
    assert json.loads(again[2])["code"] == "missing_credentials"
    assert [e["client"] for e in audit.events] == [client] * 3
    assert [e["code"] for e in audit.events] == ["missing_credentials"] * 3
    assert len({e["request_id"] for e in audit.events}) == 3


async def test_the_short_paths_denials_reach_the_audit_file(tmp_path: Path) -> None:
    """With ``[audit] file``, each settled denial is one line in the file, the
    same line the whole path writes but for the request id and time."""
    policy = load_policy(write_policy(tmp_path, POLICY + FILE_AUDIT))
    app = EdgeAuth(echo_app, policy=policy)
    scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a.example")], PEERS[0])
    for _ in range(3):
        assert (await middleware_answer(app, dict(scope)))[0] == 401
    assert isinstance(settled_scope(app, dict(scope)), str)  # on a lane: the request id alone
    await asyncio.sleep(0)  # the file is written on the loop's next turn
    lines = audit_lines(tmp_path)
    assert len(lines) == 4
    for line in lines[1:]:
        same_event(line, lines[0])
    await policy.aclose()


async def test_the_short_paths_audit_lines_are_per_client_and_path(tmp_path: Path) -> None:
    """Settled denials from two clients to two paths, one of them longer than
    an audit event holds once canonical (each raw byte becomes three
    characters): each line is the whole path's line for that client and path,
    the long path cut at 2,048 characters like the whole path cuts it."""
    policy = load_policy(write_policy(tmp_path, POLICY + FILE_AUDIT))
    app = EdgeAuth(echo_app, policy=policy)
    long_path = b"/api/protected/" + "\u00e9".encode() * 340  # 680 bytes, 2,055 characters
    requests = [(path, peer) for path in (b"/api/protected/x", long_path) for peer in PEERS]
    for path, peer in requests:
        scope = scope_of("GET", path, [(b"host", b"a.example")], peer)
        for _ in range(3):
            assert (await middleware_answer(app, dict(scope)))[0] == 401
        assert isinstance(settled_scope(app, dict(scope)), str)  # settled, then on a lane
    await asyncio.sleep(0)  # the file is written on the loop's next turn
    lines = audit_lines(tmp_path)
    assert len(lines) == 4 * 4
    for i, (path, peer) in enumerate(requests):
        whole, *short = lines[4 * i : 4 * i + 4]
        for line in short:
            same_event(line, whole)
        assert whole["client"] == peer[0]
        if path == long_path:
            assert whole["path"] == ("/api/protected/" + "%C3%A9" * 340)[:2048] + "..."
        else:
            assert whole["path"] == "/api/protected/x"
    await policy.aclose()


async def test_a_trusted_peers_forwarded_headers_settle_like_the_whole_path(
    tmp_path: Path,
) -> None:
    """From a trusted proxy X-Forwarded-For is kept: the short path keeps it too."""
    app = app_for(tmp_path)
    headers = [(b"host", b"a.example"), (b"x-forwarded-for", b"203.0.113.9"), *COOKIE]
    scope = scope_of("GET", b"/api/protected/x", headers, PEERS[1])
    whole = await whole_path(app, dict(scope))
    short = settled_scope(app, dict(scope))
    assert isinstance(whole, dict) and short is not None
    assert comparable(short) == comparable(whole)
    assert (b"x-forwarded-for", b"203.0.113.9") in short["headers"]


async def test_audited_allows_and_lockouts_are_never_settled(tmp_path: Path) -> None:
    """With allows audited, or a failed-auth lockout to consult, every request
    takes the whole path: the short path records and consults nothing."""
    for extra in ("[audit]\nallows = true\n", '[protection]\nfailed_auth = "5/minute per ip"\n'):
        policy = load_policy(write_policy(tmp_path, POLICY + extra))
        app = EdgeAuth(echo_app, policy=policy, audit=RecordingAudit())
        scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a"), *COOKIE], PEERS[0])
        for _ in range(2):
            assert isinstance(await whole_path(app, dict(scope)), dict)
        assert settled_scope(app, dict(scope)) is None, extra


class Clock:
    """A clock the test moves by hand. It starts at the next whole second, so
    that a token minted just after it (``iat``, a whole second) is never
    issued in its future."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 1)

    def __call__(self) -> float:
        return self.now


async def test_a_repeated_request_sees_a_revocation_at_once(tmp_path: Path) -> None:
    """Settled requests still consult the revocation list: revoking the subject
    turns the very next repeat into 401 revoked."""
    app = app_for(tmp_path)
    cookie = [("cookie", f"session={USER}")]
    for _ in range(3):
        assert (await call(app, raw_path=b"/api/protected/x", headers=cookie)).status == 200
    await revoke(app.policy, subject="alice", before=time.time() + 1)
    r = await call(app, raw_path=b"/api/protected/x", headers=cookie)
    assert (r.status, r.json()["code"]) == (401, "revoked")


async def test_a_repeated_request_expires_with_its_token(tmp_path: Path) -> None:
    """A cached token past its exp is no longer settled: the repeat is 401."""
    clock = Clock()
    app = app_for(tmp_path, clock=clock)
    token = session_token("alice", ("user",), lifetime=60)
    cookie = [("cookie", f"session={token}")]
    for _ in range(3):
        assert (await call(app, raw_path=b"/api/protected/x", headers=cookie)).status == 200
    clock.now += 3600
    r = await call(app, raw_path=b"/api/protected/x", headers=cookie)
    assert (r.status, r.json()["code"]) == (401, "invalid_token")


async def test_a_repeated_request_cannot_smuggle_an_identity_header(tmp_path: Path) -> None:
    """After the same request settled, adding a spoofed identity header still
    gets it stripped: the app sees exactly one, verified, copy."""
    app = app_for(tmp_path)
    cookie = [("cookie", f"session={USER}")]
    for _ in range(3):
        await call(app, raw_path=b"/api/protected/x", headers=cookie)
    spoofed = [*cookie, ("x-user-id", "mallory"), ("x-user-role", "admin")]
    r = await call(app, raw_path=b"/api/protected/x", headers=spoofed)
    seen = [tuple(h) for h in r.json()["headers"]]
    assert [v for n, v in seen if n == "x-user-id"] == ["alice"]
    assert [v for n, v in seen if n == "x-user-role"] == ["user"]


async def test_a_withheld_credential_stays_withheld_when_settled(tmp_path: Path) -> None:
    """forward_credential = false: the repeated, settled request reaches the app
    without its Authorization header, like the first."""
    app = app_for(tmp_path)
    bearer = [("authorization", f"Bearer {SERVICE}")]
    for _ in range(3):
        r = await call(app, raw_path=b"/svc/x", headers=bearer)
        assert r.status == 200
        names = [n for n, _ in r.json()["headers"]]
        assert "authorization" not in names and "x-user-id" in names


async def test_a_rule_read_by_an_api_key_authenticator_is_decided_the_whole_way(
    tmp_path: Path,
) -> None:
    """A rule whose one place is the Bearer token, read by an API key
    authenticator: the short path asks it (it keeps no verified identities)
    and leaves every request to the whole path, which answers each alike."""
    policy = (
        POLICY
        + """
[authenticators.bearer-keys]
type = "api_key"
from = "bearer"
keys_file = "api-keys.toml"

[[rules]]
id = "keyed"
match = "/keyed/**"
authenticate = ["bearer-keys"]
"""
    )
    app = guarded(tmp_path, policy)
    for _ in range(3):
        r = await call(app, raw_path=b"/keyed/x", headers=[("authorization", f"Bearer {API_KEY}")])
        assert r.status == 200
        seen = dict(r.json()["headers"])
        assert seen["x-user-id"] == "svc-reporting" and "authorization" not in seen
    for _ in range(3):
        r = await call(app, raw_path=b"/keyed/x", headers=[("authorization", "Bearer eak_unknown")])
        assert (r.status, r.json()["code"]) == (401, "invalid_token")


FORWARDING_SECRET = "forwarding-secret-for-the-settled-path-tests-0123"


@pytest.mark.parametrize("order", [("service", "forwarding"), ("forwarding", "service")])
async def test_the_withheld_credential_is_the_verifying_authenticators_choice(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    """Two JWT authenticators on one place (each its own issuer), one that
    keeps the credential from the app and one that forwards it, in either
    order: each token reaches the app with or without its Authorization
    header as its own authenticator says, on the first request and on its
    settled repeats."""
    policy = (
        POLICY
        + f"""
[authenticators.forwarding]
type = "jwt"
from = "bearer"
algorithms = ["HS256"]
secret = "{FORWARDING_SECRET}"
issuer = "https://forwarding.example"
audience = "{AUDIENCE}"

[[rules]]
id = "two"
match = "/two/**"
authenticate = ["{order[0]}", "{order[1]}"]
"""
    )
    app = guarded(tmp_path, policy)
    forwarded = session_token("fwd", (), secret=FORWARDING_SECRET, iss="https://forwarding.example")
    for token, subject, forwards in ((SERVICE, "svc", False), (forwarded, "fwd", True)):
        for _ in range(3):
            r = await call(app, raw_path=b"/two/x", headers=[("authorization", f"Bearer {token}")])
            assert r.status == 200
            seen = dict(r.json()["headers"])
            assert seen["x-user-id"] == subject
            assert ("authorization" in seen) is forwards, (order, subject)


async def test_a_settled_request_reaches_the_app_as_authorized(tmp_path: Path) -> None:
    """The app gets the canonical path, the identity and a fresh request id each time."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded_app = guarded(tmp_path, POLICY, app=app)
    for _ in range(3):
        r = await call(guarded_app, raw_path=b"/api/protected/a/../x", headers=[*_str(COOKIE)])
        assert r.status == 204
    assert [s["path"] for s in seen] == ["/api/protected/x"] * 3
    assert all(s["edgeauth"].subject == "alice" for s in seen)
    assert len({s["edgeauth.request_id"] for s in seen}) == 3


def _str(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in headers]


async def test_an_identity_that_cannot_be_sent_is_refused_on_every_repeat(tmp_path: Path) -> None:
    """A verified token whose subject cannot go into a header (a control
    character) is cached like any other; its repeats are still 401."""
    app = app_for(tmp_path)
    cookie = [("cookie", f"session={session_token('bob' + chr(1), ('user',))}")]
    for _ in range(3):
        r = await call(app, raw_path=b"/api/protected/x", headers=cookie)
        assert (r.status, r.json()["code"]) == (401, "invalid_token")


async def test_identity_required_on_a_settled_request_is_edgeauths_401(tmp_path: Path) -> None:
    """An app that needs an identity on a public route, asked again and again
    (settled after the first), answers edgeauth's 401 JSON each time."""

    async def needs_identity(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise IdentityRequired

    audit = RecordingAudit()
    app = guarded(tmp_path, POLICY, app=needs_identity, audit=audit)
    for i in range(3):
        r = await call(app, raw_path=b"/public/x")
        assert (r.status, r.json()["code"]) == (401, "missing_credentials")
        assert r.header("www-authenticate") == 'Bearer realm="edgeauth"'
        # A denial like any other: audited, each time.
        assert len(audit.events) == i + 1
        event = audit.events[-1]
        assert event["request_id"] == r.header("x-request-id")
        assert (event["path"], event["code"], event["status"]) == (
            "/public/x",
            "missing_credentials",
            401,
        )
        assert event["reason"] == "the app requires an identity"


async def test_a_settled_request_reaches_the_app_as_the_whole_path_sent_it(
    tmp_path: Path,
) -> None:
    """Through the middleware's call: the app gets, for the same request asked
    again (settled, and handed to the app without a coroutine of edgeauth's),
    the scope the whole path gave it the first time; a client's identity
    header is stripped every time."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await echo_app(scope, receive, send)

    guard = app_for(tmp_path, app=app)
    clean = scope_of("GET", b"/api/protected/x", [(b"host", b"a"), *COOKIE], PEERS[0])
    spoofed = scope_of(
        "GET", b"/api/protected/x", [(b"host", b"a"), (b"x-user-id", b"root"), *COOKIE], PEERS[0]
    )
    for scope in (clean, spoofed):
        seen.clear()
        for _ in range(3):
            assert (await middleware_answer(guard, dict(scope)))[0] == 200
        assert [comparable(s) for s in seen[1:]] == [comparable(seen[0])] * 2
        assert seen[0]["edgeauth"].subject == "alice"
        assert [v for n, v in seen[0]["headers"] if n == b"x-user-id"] == [b"alice"]
    assert isinstance(settled_scope(guard, dict(clean)), dict)  # its repeats were settled
    assert settled_scope(guard, dict(spoofed)) is None  # these went the whole way


@pytest.mark.parametrize("path", [b"/api/protected/x", b"/limited/x"])
async def test_identity_required_with_an_identity_is_the_apps_error(
    tmp_path: Path, path: bytes
) -> None:
    """An app raising IdentityRequired for a request that has an identity gets
    no 401 for a missing credential, the first time (the whole path; a rule
    with a rate limit, whose answer is watched) or again (settled where it
    can be): its error goes to the server, as any other."""

    async def needs_identity(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise IdentityRequired

    audit = RecordingAudit()
    guard = guarded(tmp_path, POLICY, app=needs_identity, audit=audit)
    for _ in range(3):
        with pytest.raises(IdentityRequired):
            await call(guard, raw_path=path, headers=[("cookie", f"session={USER}")])
    assert audit.events == []


async def test_headers_in_a_tuple_are_decided_the_whole_way(tmp_path: Path) -> None:
    """A server handing the headers as a tuple (not a list): still decided, the
    identity still added."""
    app = app_for(tmp_path)
    scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a"), *COOKIE], PEERS[0])
    scope["headers"] = tuple(scope["headers"])
    for _ in range(2):
        await whole_path(app, dict(scope))
    assert settled_scope(app, dict(scope)) is None
    inner = await whole_path(app, dict(scope))
    assert isinstance(inner, dict) and (b"x-user-id", b"alice") in inner["headers"]


async def routed_pair(app: EdgeAuth) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two requests to an ``api`` rule, with the cookie and without a
    credential, each decided twice the whole way (the short path's routes)."""
    allowed = scope_of("GET", b"/api/protected/x", [(b"host", b"a"), *COOKIE], PEERS[0])
    denied = scope_of("GET", b"/api/protected/x", [(b"host", b"a")], PEERS[0])
    for _ in range(2):
        await whole_path(app, dict(allowed))
        await middleware_answer(app, dict(denied))
    return allowed, denied


async def test_header_fields_given_as_lists_are_decided_the_whole_way(tmp_path: Path) -> None:
    """A server handing each field as a ``[name, value]`` list (the ASGI
    specification allows any two-item iterable): the short path, which takes
    only tuples of two, leaves the request alone; the whole path allows it
    with the identity, or denies it, as it does the same fields as tuples."""
    app = app_for(tmp_path)
    allowed, denied = await routed_pair(app)
    assert isinstance(settled_scope(app, dict(allowed)), dict)
    assert isinstance(settled_scope(app, dict(denied)), Denial)
    as_lists = [dict(s, headers=[list(f) for f in s["headers"]]) for s in (allowed, denied)]
    assert settled_scope(app, dict(as_lists[0])) is None
    assert settled_scope(app, dict(as_lists[1])) is None
    inner = await whole_path(app, dict(as_lists[0]))
    assert isinstance(inner, dict) and (b"x-user-id", b"alice") in inner["headers"]
    # A spoofed identity header in that form is stripped all the same.
    spoofed = [*as_lists[0]["headers"], [b"x-user-id", b"mallory"], [b"X_User_Id", b"eve"]]
    inner = await whole_path(app, dict(as_lists[0], headers=spoofed))
    assert isinstance(inner, dict)
    user = [
        bytes(v)
        for n, v in inner["headers"]
        if bytes(n).lower().replace(b"_", b"-") == b"x-user-id"
    ]
    assert user == [b"alice"]
    status, _, body = await middleware_answer(app, dict(as_lists[1]))
    assert (status, json.loads(body)["code"]) == (401, "missing_credentials")


async def test_a_scope_that_is_not_a_dict_is_decided_the_whole_way(tmp_path: Path) -> None:
    """A scope of another mapping type: the short path leaves it alone; the
    whole path decides it, allowed with the identity or denied alike."""

    class Scope(dict[str, Any]):
        pass

    app = app_for(tmp_path)
    allowed, denied = await routed_pair(app)
    assert isinstance(settled_scope(app, dict(allowed)), dict)  # settled as a plain dict
    assert settled_scope(app, Scope(allowed)) is None
    assert settled_scope(app, Scope(denied)) is None
    assert settling_view(Scope(allowed), app.policy) is None  # the proxy's short path too
    inner = await whole_path(app, Scope(allowed))
    assert isinstance(inner, dict) and (b"x-user-id", b"alice") in inner["headers"]
    status, _, body = await middleware_answer(app, Scope(denied))
    assert (status, json.loads(body)["code"]) == (401, "missing_credentials")


async def test_a_malformed_scope_is_the_documented_500(tmp_path: Path) -> None:
    """A scope without a method cannot be read: the whole path answers 500
    internal_error, the short path does not raise."""
    app = app_for(tmp_path)
    scope = scope_of("GET", b"/public/x", [(b"host", b"a")], PEERS[0])
    del scope["method"]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, nothing, send)
    assert sent[0]["status"] == 500
    assert b'"internal_error"' in sent[1]["body"]


@pytest.mark.parametrize("value", ["text/html", None, memoryview(b"text/html")])
async def test_a_header_value_that_is_not_bytes_is_refused_like_the_first_time(
    tmp_path: Path, value: Any
) -> None:
    """A scope whose header value is not bytes (another middleware's mistake)
    is the whole path's 500, also after the same request without it settled."""
    app = app_for(tmp_path)
    fields = [(b"host", b"a"), *COOKIE, (b"accept", b"application/json")]
    good = scope_of("GET", b"/api/protected/x", fields, PEERS[0])
    for _ in range(2):
        assert isinstance(await whole_path(app, dict(good)), dict)
    assert settled_scope(app, dict(good)) is not None
    bad = dict(good, headers=[*fields[:-1], (b"accept", value)])
    assert settled_scope(app, dict(bad)) is None
    assert await whole_path(app, dict(bad)) == 500


async def test_a_policy_that_watches_upstream_statuses_settles_nothing(tmp_path: Path) -> None:
    """Where the app's 401s are counted, every allowed request must be watched:
    none takes the short path, whichever rule counts them."""
    policy = load_policy(write_policy(tmp_path, POLICY))
    watching = dataclasses.replace(policy, upstream_401_rules=frozenset({"service"}))
    app = EdgeAuth(echo_app, policy=watching)
    scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a"), *COOKIE], PEERS[0])
    for _ in range(2):
        assert isinstance(await whole_path(app, dict(scope)), dict)
    assert settled_scope(app, dict(scope)) is None


async def test_a_lane_answers_exactly_the_short_paths_denials(tmp_path: Path) -> None:
    """Thousands of requests, with denials audited to a file (where lanes
    open): after a request has been seen twice, it is answered on a lane
    (the short path gives a request id alone) exactly when the short path of
    an engine without lanes denies it and it carries none of the fields the
    decision reads; the lane's 401 is the whole path's, and its audit line
    the whole path's line, but for the request id and time."""
    policy = load_policy(write_policy(tmp_path, POLICY + FILE_AUDIT))
    app = EdgeAuth(echo_app, policy=policy)
    plain = app_for(tmp_path)  # a recording audit: no lanes
    laned = 0
    cases = itertools.product(METHODS, PATHS, CREDENTIALS, OTHERS, PEERS)
    for method, path, credentials, others, peer in cases:
        scope = scope_of(method, path, [*others, *credentials], peer)
        for _ in range(2):
            await middleware_answer(app, dict(scope))
            await middleware_answer(plain, dict(scope))
        short = settled_scope(app, dict(scope))
        without = settled_scope(plain, dict(scope))
        reads = any(name.lower() in READ_FIELDS for name, _ in scope["headers"])
        assert isinstance(short, str) == (isinstance(without, Denial) and not reads), scope
        if not isinstance(short, str):
            continue
        laned += 1
        assert app.engine.lanes
        answer = await middleware_answer(app, dict(scope))
        whole = await whole_answer(app, dict(scope))
        assert isinstance(whole, tuple)
        await asyncio.sleep(0)  # the file is written on the loop's next turn
        first, again, full = audit_lines(tmp_path)[-3:]
        assert first["request_id"] == short
        same_answer(answer, whole, again["request_id"], full["request_id"])
        for line in (first, again):
            same_event(line, full)
        assert full["code"] == "missing_credentials" and full["client"] == peer[0]
    assert laned > 50, laned  # the comparisons above are not vacuous
    await policy.aclose()


async def test_no_lane_opens_where_routes_depend_on_host_or_denials_are_logged(
    tmp_path: Path,
) -> None:
    """Lanes are kept only for the audit file's lines, and only while a route
    is the raw path's alone: with a rule for some hosts, or denials going to
    the ``edgeauth.audit`` logger, each repeat is settled the usual way."""
    for app in (
        EdgeAuth(echo_app, policy=load_policy(write_policy(tmp_path, HOSTS_POLICY + FILE_AUDIT))),
        app_for(tmp_path),
    ):
        scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a.example")], PEERS[0])
        for _ in range(3):
            assert (await middleware_answer(app, dict(scope)))[0] == 401
        assert isinstance(settled_scope(app, dict(scope)), Denial)
        assert not app.engine.lanes
        await app.policy.aclose()


async def test_lanes_are_per_method_and_peer_and_bounded(tmp_path: Path) -> None:
    """A lane answers only the method and the peers it has seen denied
    (another peer, or HEAD after GET, is settled first and audited with its
    own client), and the lanes and their peers are bounded however many
    paths and clients come."""
    policy = load_policy(write_policy(tmp_path, POLICY + FILE_AUDIT))
    app = EdgeAuth(echo_app, policy=policy)
    get = scope_of("GET", b"/api/protected/x", [(b"host", b"a")], PEERS[0])
    for _ in range(2):
        await middleware_answer(app, dict(get))
    assert isinstance(settled_scope(app, dict(get)), str)
    for other in ({**get, "client": ("192.0.2.1", 1)}, {**get, "method": "HEAD"}):
        await middleware_answer(app, dict(other))  # the whole path, or settled
        short = [settled_scope(app, dict(other)) for _ in range(2)]
        assert isinstance(short[-1], str), short
    await asyncio.sleep(0)
    lines = audit_lines(tmp_path)
    assert [line["client"] for line in lines].count("192.0.2.1") == 3
    assert [(line["method"], line["client"]) for line in lines[-2:]] == [("HEAD", "127.0.0.1")] * 2
    for i in range(1100):
        scope = {**get, "raw_path": b"/api/protected/%d" % i, "client": (f"192.0.2.{i % 300}", 1)}
        for _ in range(2):
            await middleware_answer(app, dict(scope))
    assert 0 < len(app.engine.lanes) <= 1024
    for i in range(300):
        scope = {**get, "client": (f"198.51.100.{i}", 1)}
        for _ in range(2):
            await middleware_answer(app, dict(scope))
    assert 0 < len(app.engine.lanes[b"/api/protected/x"].tails) <= 256
    await policy.aclose()


async def test_a_lanes_denial_is_answered_and_audited_while_the_file_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed, nothing lost: while the audit file cannot be written, a
    request on a lane is still answered the 401, and its event, under the
    answer's request id, reaches the ``edgeauth.audit`` logger instead."""
    policy = load_policy(write_policy(tmp_path, POLICY + FILE_AUDIT))
    app = EdgeAuth(echo_app, policy=policy)
    scope = scope_of("GET", b"/api/protected/x", [(b"host", b"a.example")], PEERS[0])
    for _ in range(2):
        await middleware_answer(app, dict(scope))
    assert app.engine.lanes[b"/api/protected/x"].tails  # the next one rides the lane
    await asyncio.sleep(0)  # the lines so far are written

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with caplog.at_level(logging.INFO):
        answer = await middleware_answer(app, dict(scope))
        for _ in range(10):
            if any(r.name == "edgeauth.audit" for r in caplog.records):
                break
            await asyncio.sleep(0)
    assert answer[0] == 401
    rid = dict(answer[1])[b"x-request-id"].decode()
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgeauth.audit"]
    assert [(e["request_id"], e["code"], e["client"]) for e in logged] == [
        (rid, "missing_credentials", PEERS[0][0])
    ]
    monkeypatch.undo()
    await policy.aclose()
