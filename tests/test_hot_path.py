"""The hot path's memos (routes, header names, identity headers, error headers)
never change a decision: every answer is the one the unmemoized path gives,
whatever came before it, and each memo stays bounded."""

from __future__ import annotations

from pathlib import Path

from edgeauth import EdgeAuth

from .helpers import API_KEY, SEED_POLICY, call, guarded, session_token

HOSTS_POLICY = (
    SEED_POLICY.replace('[default]\naction = "deny"\n', "")
    + """
[[rules]]
id = "tenant-a"
match = "/t/**"
hosts = ["a.example"]
public = true

[[rules]]
id = "tenant-other"
match = "/t/**"
authenticate = ["session"]

[server]
trusted_proxies = ["127.0.0.1/32"]
"""
)


def app_for(tmp_path: Path) -> EdgeAuth:
    return guarded(tmp_path, HOSTS_POLICY)


async def test_same_path_decided_per_host_every_time(tmp_path: Path) -> None:
    """One raw path, two hosts, alternating: the host rule holds each time."""
    app = app_for(tmp_path)
    for _ in range(3):
        a = await call(app, raw_path=b"/t/x", headers=[("host", "a.example")])
        b = await call(app, raw_path=b"/t/x", headers=[("host", "b.example")])
        assert (a.status, b.status) == (200, 401)


async def test_same_path_decided_per_method_every_time(tmp_path: Path) -> None:
    """POST /api/login is public, GET /api/login matches no rule: alternating keeps both."""
    app = app_for(tmp_path)
    for _ in range(3):
        post = await call(app, method="POST", raw_path=b"/api/login")
        get = await call(app, method="GET", raw_path=b"/api/login")
        assert (post.status, get.status) == (200, 404)


async def test_ambiguous_path_refused_every_time(tmp_path: Path) -> None:
    """A refused path is refused again (refusals are not remembered as routes)."""
    app = app_for(tmp_path)
    for _ in range(3):
        r = await call(app, raw_path=b"/public/%2e%2e/%2e%2e/etc")
        assert r.status == 400
        ok = await call(app, raw_path=b"/public/x")
        assert ok.status == 200


async def test_route_memo_stays_bounded(tmp_path: Path) -> None:
    """Distinct paths by the thousand (a scanner) do not grow memory without bound,
    and a long path is decided like a short one."""
    app = app_for(tmp_path)
    for i in range(5000):
        await call(app, raw_path=f"/public/{i}".encode())
    assert len(app.engine._routes) <= 4096  # the documented bound of the memo
    long = b"/public/" + b"a" * 3000
    assert (await call(app, raw_path=long)).status == 200
    assert (await call(app, raw_path=b"/api/protected/" + b"a" * 3000)).status == 401


async def test_forwarded_header_kept_or_dropped_per_peer_every_time(tmp_path: Path) -> None:
    """X-Forwarded-For from the trusted proxy reaches the app; the same header
    name from an untrusted peer never does, in any order."""
    app = app_for(tmp_path)
    for _ in range(3):
        trusted = await call(
            app,
            raw_path=b"/public/x",
            headers=[("x-forwarded-for", "203.0.113.9")],
            client=("127.0.0.1", 5000),
        )
        untrusted = await call(
            app,
            raw_path=b"/public/x",
            headers=[("x-forwarded-for", "203.0.113.9")],
            client=("198.51.100.7", 5000),
        )
        assert "x-forwarded-for" in {n for n, _ in trusted.json()["headers"]}
        assert "x-forwarded-for" not in {n for n, _ in untrusted.json()["headers"]}


async def test_identity_headers_follow_each_caller(tmp_path: Path) -> None:
    """Callers interleaved (a session user, an API key, another user): each
    request carries its own identity, never the previous one's."""
    app = app_for(tmp_path)
    alice = ("cookie", f"session={session_token('alice')}")
    bob = ("cookie", f"session={session_token('bob')}")
    key = ("authorization", f"Bearer {API_KEY}")
    for _ in range(50):
        for header, subject in ((alice, "alice"), (key, "svc-reporting"), (bob, "bob")):
            r = await call(app, raw_path=b"/api/v1/me", headers=[header])
            assert r.status == 200
            users = [v for n, v in r.json()["headers"] if n == "x-user-id"]
            assert users == [subject]


async def test_denial_headers_are_the_codes_own(tmp_path: Path) -> None:
    """Missing and invalid credentials, interleaved, keep their own challenges."""
    app = app_for(tmp_path)
    for _ in range(3):
        missing = await call(app, raw_path=b"/api/protected/x")
        bad = await call(app, raw_path=b"/api/protected/x", headers=[("cookie", "session=a.b.c")])
        assert missing.header("www-authenticate") == 'Bearer realm="edgeauth"'
        assert bad.header("www-authenticate") == 'Bearer realm="edgeauth", error="invalid_token"'
        assert missing.json()["request_id"] != bad.json()["request_id"]


async def test_verified_answers_only_for_tokens_verified_before(tmp_path: Path) -> None:
    """The synchronous cache lookup knows a token only after a full verification,
    and only until it expires; API keys always go through authenticate."""
    import time

    app = app_for(tmp_path)
    session = app.policy.authenticators["session"]
    keys = app.policy.authenticators["keys"]
    token = session_token("carol", lifetime=60)
    now = time.time()
    assert session.verified(token, now) is None
    identity = await session.authenticate(token, now)
    assert identity is not None and identity.subject == "carol"
    assert session.verified(token, now) is identity
    assert session.verified(token, now + 61) is None
    assert session.verified(token + "x", now) is None
    assert keys.verified(API_KEY, now) is None
    assert (await keys.authenticate(API_KEY, now)) is not None
    assert keys.verified(API_KEY, now) is None


async def test_route_memo_keeps_no_oversized_key(tmp_path: Path) -> None:
    """A huge Access-Control-Request-Method or Host is decided but not
    remembered: the memo's size in bytes stays bounded, not only its entries."""
    app = app_for(tmp_path)
    before = len(app.engine._routes)
    for i in range(20):
        huge = "X" * 4000 + str(i)
        r = await call(
            app,
            method="OPTIONS",
            raw_path=b"/api/v1/x",
            headers=[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", huge),
            ],
        )
        assert r.status == 403
        r = await call(app, raw_path=b"/t/x", headers=[("host", "a" * 4000 + ".example")])
        assert r.status == 401
    assert len(app.engine._routes) == before


async def test_identity_header_memo_stays_bounded(tmp_path: Path) -> None:
    """Headers built for ever new identities stay within the memo's size, and an
    identity built before the memo was emptied gets its own headers again."""
    from edgeauth.memo import MEMO_SIZE
    from edgeauth.model import Identity

    headers = app_for(tmp_path).policy.identity
    first = Identity("first", roles=("admin",))
    assert dict(headers.build(first))["x-user-id"] == "first"
    for i in range(MEMO_SIZE + 10):
        assert dict(headers.build(Identity(f"user-{i}")))["x-user-id"] == f"user-{i}"
    assert 0 < len(headers._built) <= MEMO_SIZE
    assert dict(headers.build(first)) == {"x-user-id": "first", "x-user-role": "admin"}
    assert headers.build(first) is headers._built[first]


async def test_a_view_with_another_mapping_is_read_alike(tmp_path: Path) -> None:
    """The engine reads a view's headers as a dict: a view built with another
    mapping of the same fields (read-only, say) gets the same answers."""
    from types import MappingProxyType

    from edgeauth.model import Allow, Denial, RequestView

    engine = app_for(tmp_path).engine
    cases = [
        ("/api/protected/x", {"cookie": (f"session={session_token('carol')}",)}, "carol"),
        ("/api/v1/x", {"authorization": (f"Bearer {API_KEY}",)}, "svc-reporting"),
        ("/api/v1/x", {"x-api-key": (API_KEY,), "authorization": ("Bearer b",)}, "bad_request"),
        ("/api/protected/x", {}, "missing_credentials"),
    ]
    for path, fields, expected in cases:
        for headers in (dict(fields), MappingProxyType(dict(fields))):
            outcome = await engine.evaluate(RequestView("GET", path.encode(), headers=headers))
            if isinstance(outcome, Allow):
                assert outcome.identity is not None
                assert outcome.identity.subject == expected, (path, headers)
            else:
                assert isinstance(outcome, Denial)
                assert outcome.code == expected, (path, headers)
