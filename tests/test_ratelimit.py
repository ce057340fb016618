"""Rate limits and the failed-auth lockout with the memory store, under a controlled clock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeauth import ConfigError, EdgeAuth, load_policy
from edgeauth.ratelimit import Limit, Lockout, MemoryLimitStore, gcra_step
from edgeauth.state import parse_redis_url

from .helpers import (
    ADMIN_KEY,
    API_KEY,
    AUDIENCE,
    ISSUER,
    SECRET,
    RecordingAudit,
    call,
    guarded,
    session_token,
    write_policy,
)

START = float(int(time.time()))


class Clock:
    """A clock the test moves by hand; it starts a little ahead of real time so that
    tokens minted during the test are never issued in its future."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 300)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


AUTH = f"""
[authenticators.session]
type = "jwt"
from = "cookie:session"
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"

[authenticators.keys]
type = "api_key"
keys_file = "api-keys.toml"
"""


def policy_text(*rules: str, head: str = "") -> str:
    return head + AUTH + "".join(f"\n[[rules]]\n{r.strip()}\n" for r in rules)


def app_for(tmp_path: Path, *rules: str, head: str = "", **kwargs: Any) -> EdgeAuth:
    kwargs.setdefault("clock", Clock())
    return guarded(tmp_path, policy_text(*rules, head=head), **kwargs)


def cookie(token: str | None = None) -> tuple[str, str]:
    return ("cookie", f"session={token or session_token()}")


def errors_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_policy(write_policy(tmp_path, text))
    return [(i.location, i.message) for i in info.value.issues]


# The limit syntax ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "period", "scope"),
    [
        ("5/minute per ip", 5, 60, "ip"),
        ("1/second per subject", 1, 1, "subject"),
        (" 100 / hour  per  api_key ", 100, 3600, "api_key"),
        ("1000/second per ip", 1000, 1, "ip"),
    ],
)
def test_limit_parses_the_policy_spelling(text: str, count: int, period: int, scope: str) -> None:
    """N/second|minute|hour per ip|subject|api_key, spaces allowed around the parts."""
    limit = Limit.parse(text)
    assert (limit.count, limit.period, limit.scope) == (count, period, scope)
    assert Limit.parse(str(limit)) == limit


@pytest.mark.parametrize(
    "text",
    [
        "5/minute",
        "5 per ip",
        "0/minute per ip",
        "5/day per ip",
        "5/minute per user",
        "-1/minute per ip",
        "1001/second per ip",
        "five/minute per ip",
    ],
)
def test_limit_rejects_other_spellings(text: str) -> None:
    """Anything else is refused with what was expected."""
    with pytest.raises(ValueError, match=r"expected"):
        Limit.parse(text)


# GCRA --------------------------------------------------------------------------


async def test_burst_of_n_then_one_per_interval() -> None:
    """3/minute admits 3 at once, then one more every 20 s, with exact headers."""
    store, limit = MemoryLimitStore(), Limit.parse("3/minute per ip")
    t = START
    seen = [await store.hit("g", [limit], t) for _ in range(4)]
    assert [d.allowed for d in seen] == [True, True, True, False]
    assert [d.remaining for d in seen] == [2, 1, 0, 0]
    assert [d.reset_after for d in seen] == [20.0, 40.0, 60.0, 60.0]
    assert seen[3].retry_after == 20.0
    assert not (await store.hit("g", [limit], t + 19.9)).allowed
    again = await store.hit("g", [limit], t + 20.0)
    assert again.allowed and again.remaining == 0


def test_gcra_step_is_pure_arithmetic() -> None:
    """The step needs no clock: the same inputs give the same verdict."""
    assert gcra_step(None, 10, 3, 1) == gcra_step(None, 10, 3, 1)
    assert gcra_step(5, 10, 3, 1) == gcra_step(None, 10, 3, 1)  # a tat in the past is now


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    count=st.integers(1, 6),
    gaps=st.lists(st.integers(0, 30_000_000), min_size=1, max_size=60),
)
def test_gcra_bounds_every_window(count: int, gaps: list[int]) -> None:
    """Whatever the arrival times, a window of length w admits at most N + w/T (GCRA's bound)."""
    import asyncio

    limit = Limit(count, 60, "ip")
    store = MemoryLimitStore()
    admitted: list[int] = []
    t = 0

    async def run() -> None:
        nonlocal t
        for gap in gaps:
            t += gap
            if (await store.hit("g", [limit], START + t / 1_000_000)).allowed:
                admitted.append(t)

    asyncio.run(run())
    for i, first in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= count + (admitted[j] - first) // limit.interval


async def test_a_refusal_counts_in_no_limit() -> None:
    """With two limits, a request one refuses is not counted by the other."""
    store = MemoryLimitStore()
    fast, slow = Limit.parse("1/second per ip"), Limit.parse("3/minute per ip")
    assert (await store.hit("g", [fast, slow], START)).allowed
    refused = await store.hit("g", [fast, slow], START + 0.5)
    assert not refused.allowed and refused.limit == 1
    # The slow limit counted one request, not two.
    assert (await store.hit("g", [slow], START + 0.6)).remaining == 1


async def test_memory_store_is_bounded_and_drops_idle_keys() -> None:
    """Past max_keys the least recently used entry goes; idle entries are dropped as time passes."""
    store = MemoryLimitStore(max_keys=50)
    limit = Limit.parse("2/second per ip")
    for i in range(500):
        await store.hit(f"client-{i}", [limit], START)
    assert len(store) == 50
    for i in range(20):
        await store.hit(f"late-{i}", [limit], START + 3600)
    assert len(store) < 50


async def test_failures_lock_out_until_the_window_passes() -> None:
    """3 failures in a burst lock the client out for one full minute, reported once."""
    store, limit = MemoryLimitStore(), Limit.parse("3/minute per ip")
    results = [await store.fail("1.2.3.4", limit, START + i) for i in range(3)]
    assert results[:2] == [None, None]
    assert results[2] == Lockout(START + 60, started=True)
    assert await store.locked("1.2.3.4", START + 59) == pytest.approx(1.0)
    assert await store.locked("5.6.7.8", START + 10) is None
    assert await store.locked("1.2.3.4", START + 60) is None
    # After the lockout the full allowance is back.
    assert [await store.fail("1.2.3.4", limit, START + 60) for _ in range(2)] == [None, None]


async def test_failures_at_the_allowed_rate_never_lock_out() -> None:
    """One failure per 20 s is exactly 3/minute: never locked out."""
    store, limit = MemoryLimitStore(), Limit.parse("3/minute per ip")
    for i in range(20):
        assert await store.fail("c", limit, START + 20 * i) is None


# In the pipeline ------------------------------------------------------------


async def test_over_the_limit_is_429_json_with_retry_after(tmp_path: Path) -> None:
    """Allowed responses carry RateLimit-*; the request over the limit is 429 rate_limited."""
    app = app_for(tmp_path, 'match = "/api/login"\npublic = true\nrate_limit = "3/minute per ip"')
    ok = [await call(app, raw_path=b"/api/login") for _ in range(3)]
    assert [r.status for r in ok] == [200, 200, 200]
    assert [r.header("ratelimit-remaining") for r in ok] == ["2", "1", "0"]
    assert {r.header("ratelimit-limit") for r in ok} == {"3"}
    assert [r.header("ratelimit-reset") for r in ok] == ["20", "40", "60"]
    assert ok[0].header("retry-after") is None
    r = await call(app, raw_path=b"/api/login")
    assert r.status == 429
    assert r.json()["code"] == "rate_limited"
    assert r.header("retry-after") == "20"
    assert r.header("ratelimit-remaining") == "0"
    assert r.header("content-type") == "application/json"


async def test_the_limit_frees_up_as_time_passes(tmp_path: Path) -> None:
    """After the emission interval one more request is admitted."""
    clock = Clock()
    app = app_for(
        tmp_path, 'match = "/x"\npublic = true\nrate_limit = "2/minute per ip"', clock=clock
    )
    assert [(await call(app, raw_path=b"/x")).status for _ in range(3)] == [200, 200, 429]
    clock.advance(30)
    assert (await call(app, raw_path=b"/x")).status == 200
    assert (await call(app, raw_path=b"/x")).status == 429


async def test_ipv6_clients_are_keyed_by_their_64(tmp_path: Path) -> None:
    """Two addresses in one /64 share a limit; another /64 has its own."""
    app = app_for(tmp_path, 'match = "/x"\npublic = true\nrate_limit = "1/hour per ip"')
    assert (await call(app, raw_path=b"/x", client=("2001:db8::1", 1))).status == 200
    assert (await call(app, raw_path=b"/x", client=("2001:db8::ffff:2", 1))).status == 429
    assert (await call(app, raw_path=b"/x", client=("2001:db8:0:1::1", 1))).status == 200
    assert (await call(app, raw_path=b"/x", client=("192.0.2.1", 1))).status == 200


async def test_trusted_proxy_clients_are_keyed_by_forwarded_address(tmp_path: Path) -> None:
    """Behind a trusted proxy the key is the X-Forwarded-For client, not the proxy."""
    app = app_for(
        tmp_path,
        'match = "/x"\npublic = true\nrate_limit = "1/hour per ip"',
        head='[server]\ntrusted_proxies = ["127.0.0.1"]\n',
    )
    for client, status in [("203.0.113.1", 200), ("203.0.113.2", 200), ("203.0.113.1", 429)]:
        r = await call(app, raw_path=b"/x", headers=[("x-forwarded-for", client)])
        assert r.status == status


async def test_rules_do_not_share_counters(tmp_path: Path) -> None:
    """The same limit on two rules counts separately."""
    app = app_for(
        tmp_path,
        'match = "/a"\npublic = true\nrate_limit = "1/hour per ip"',
        'match = "/b"\npublic = true\nrate_limit = "1/hour per ip"',
    )
    assert (await call(app, raw_path=b"/a")).status == 200
    assert (await call(app, raw_path=b"/b")).status == 200
    assert (await call(app, raw_path=b"/a")).status == 429


async def test_per_ip_limit_runs_before_authentication(tmp_path: Path) -> None:
    """Requests without credentials use up a per-ip limit: the third is 429, not 401."""
    app = app_for(
        tmp_path, 'match = "/x"\nauthenticate = ["session"]\nrate_limit = "2/hour per ip"'
    )
    statuses = [(await call(app, raw_path=b"/x")).status for _ in range(3)]
    assert statuses == [401, 401, 429]
    r = await call(app, raw_path=b"/x", headers=[cookie()])
    assert r.status == 429


async def test_per_subject_limit_runs_after_authentication(tmp_path: Path) -> None:
    """Each subject has its own count; an invalid credential uses up none."""
    app = app_for(
        tmp_path, 'match = "/x"\nauthenticate = ["session"]\nrate_limit = "2/hour per subject"'
    )
    bad = await call(app, raw_path=b"/x", headers=[cookie("not.a.token")])
    assert bad.status == 401
    alice = [(await call(app, raw_path=b"/x", headers=[cookie()])).status for _ in range(3)]
    assert alice == [200, 200, 429]
    bob = await call(app, raw_path=b"/x", headers=[cookie(session_token("bob"))])
    assert bob.status == 200
    assert bob.header("ratelimit-remaining") == "1"


async def test_per_api_key_limit_counts_each_key(tmp_path: Path) -> None:
    """A per-api_key limit counts per key id; a JWT on the same rule is not subject to it."""
    app = app_for(
        tmp_path,
        'match = "/x"\nauthenticate = ["keys", "session"]\nrate_limit = "1/hour per api_key"',
    )
    key = [("x-api-key", API_KEY)]
    assert (await call(app, raw_path=b"/x", headers=key)).status == 200
    assert (await call(app, raw_path=b"/x", headers=key)).status == 429
    assert (await call(app, raw_path=b"/x", headers=[("x-api-key", ADMIN_KEY)])).status == 200
    assert (await call(app, raw_path=b"/x", headers=[cookie()])).status == 200
    assert (await call(app, raw_path=b"/x", headers=[cookie()])).status == 200


async def test_page_rule_gets_an_html_429(tmp_path: Path) -> None:
    """A page rule answers the limit with a small HTML page, same status and Retry-After."""
    app = app_for(
        tmp_path, 'match = "/p"\nkind = "page"\npublic = true\nrate_limit = "1/hour per ip"'
    )
    await call(app, raw_path=b"/p")
    r = await call(app, raw_path=b"/p")
    assert r.status == 429
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert r.header("retry-after") == "3600"


async def test_several_limits_report_the_tightest(tmp_path: Path) -> None:
    """With a list of limits, the headers describe the one closest to refusing."""
    app = app_for(
        tmp_path, 'match = "/x"\npublic = true\nrate_limit = ["10/second per ip", "3/hour per ip"]'
    )
    r = await call(app, raw_path=b"/x")
    assert (r.header("ratelimit-limit"), r.header("ratelimit-remaining")) == ("3", "2")
    assert r.header_all("ratelimit-limit") == ["3"]


async def test_cors_and_rate_headers_go_together(tmp_path: Path) -> None:
    """A limited CORS rule sends both its CORS grant and the RateLimit fields."""
    app = app_for(
        tmp_path,
        'match = "/x"\npublic = true\nrate_limit = "5/minute per ip"\n'
        'cors = { origins = ["https://app.example.com"] }',
    )
    r = await call(app, raw_path=b"/x", headers=[("origin", "https://app.example.com")])
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("ratelimit-limit") == "5"


async def test_unlimited_rules_send_no_rate_headers(tmp_path: Path) -> None:
    """Only limited rules carry RateLimit-* fields."""
    app = app_for(tmp_path, 'match = "/x"\npublic = true')
    r = await call(app, raw_path=b"/x")
    assert r.status == 200
    assert r.header("ratelimit-limit") is None


# Failed-auth lockout --------------------------------------------------------

LOCKOUT = '[protection]\nfailed_auth = "3/minute per ip"\n'
PROTECTED = 'id = "api"\nmatch = "/api/**"\nauthenticate = ["session", "keys"]'
PUBLIC = 'id = "open"\nmatch = "/open"\npublic = true'


async def test_failed_auth_locks_out_requests_with_credentials(tmp_path: Path) -> None:
    """After 3 invalid credentials, requests with any credential get 429 for the window."""
    clock = Clock()
    app = app_for(tmp_path, PROTECTED, PUBLIC, head=LOCKOUT, clock=clock)
    for _ in range(3):
        r = await call(app, raw_path=b"/api/x", headers=[cookie("bad.token.here")])
        assert r.json()["code"] == "invalid_token"
    r = await call(app, raw_path=b"/api/x", headers=[cookie()])
    assert r.status == 429
    assert r.json()["code"] == "rate_limited"
    assert r.header("retry-after") == "60"
    # No credential: not locked out (nothing to guess with).
    assert (await call(app, raw_path=b"/open")).status == 200
    assert (await call(app, raw_path=b"/api/x")).json()["code"] == "missing_credentials"
    # Another client is unaffected.
    other = await call(app, raw_path=b"/api/x", headers=[cookie()], client=("192.0.2.9", 1))
    assert other.status == 200
    clock.advance(59)
    assert (await call(app, raw_path=b"/api/x", headers=[cookie()])).status == 429
    clock.advance(1)
    assert (await call(app, raw_path=b"/api/x", headers=[cookie()])).status == 200


async def test_missing_credentials_do_not_count(tmp_path: Path) -> None:
    """A client that sends no credential has not failed to authenticate."""
    app = app_for(tmp_path, PROTECTED, head=LOCKOUT)
    for _ in range(5):
        assert (await call(app, raw_path=b"/api/x")).status == 401
    assert (await call(app, raw_path=b"/api/x", headers=[cookie()])).status == 200


async def test_each_lockout_is_one_audit_event(tmp_path: Path) -> None:
    """The failure that starts a lockout emits one lockout event, without secrets."""
    audit, clock = RecordingAudit(), Clock()
    app = app_for(tmp_path, PROTECTED, head=LOCKOUT, audit=audit, clock=clock)
    bad = [("x-api-key", "eak_wrong-guess")]
    for _ in range(4):
        await call(app, raw_path=b"/api/x", headers=bad)
    lockouts = [e for e in audit.events if e.get("event") == "lockout"]
    assert len(lockouts) == 1
    assert lockouts[0]["client"] == "127.0.0.1"
    assert lockouts[0]["limit"] == "3/minute per ip"
    assert lockouts[0]["rule"] == "api"
    assert "eak_wrong-guess" not in repr(audit.events)
    assert [e["code"] for e in audit.events if e.get("event") is None][-1] == "rate_limited"
    clock.advance(60)
    for _ in range(3):
        await call(app, raw_path=b"/api/x", headers=bad)
    assert len([e for e in audit.events if e.get("event") == "lockout"]) == 2


async def test_upstream_401s_count_on_marked_rules(tmp_path: Path) -> None:
    """The app's 401s on a count_upstream_401 rule lock the client out of that rule."""
    reached: list[str] = []

    async def login_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        status = 401 if scope["path"] in ("/login", "/other") else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = app_for(
        tmp_path,
        'match = "/login"\npublic = true\ncount_upstream_401 = true',
        'match = "/other"\npublic = true',
        PUBLIC,
        head=LOCKOUT,
        app=login_app,
    )
    for _ in range(5):
        assert (await call(app, method="POST", raw_path=b"/other")).status == 401
    assert [(await call(app, method="POST", raw_path=b"/login")).status for _ in range(4)] == [
        401,
        401,
        401,
        429,
    ]
    assert reached.count("/login") == 3
    assert (await call(app, raw_path=b"/open")).status == 200


async def test_revoked_tokens_count_as_failures(tmp_path: Path) -> None:
    """A revoked credential is a failed authentication like an invalid one."""
    from edgeauth.revocation import revoke

    app = app_for(tmp_path, PROTECTED, head=LOCKOUT)
    token = session_token(jti="t-1")
    await revoke(app.policy, jti="t-1")
    for _ in range(3):
        r = await call(app, raw_path=b"/api/x", headers=[cookie(token)])
        assert r.json()["code"] == "revoked"
    assert (await call(app, raw_path=b"/api/x", headers=[cookie()])).status == 429


async def test_middleware_without_limits_is_unchanged(tmp_path: Path) -> None:
    """A policy with no limits and no protection needs no state at all."""
    app = guarded(tmp_path, policy_text(PUBLIC), clock=Clock())
    assert not app.policy.counters
    assert (await call(app, raw_path=b"/open")).status == 200
    await app.policy.aclose()


# Policy keys ------------------------------------------------------------------


def test_state_and_protection_errors_are_reported_together(tmp_path: Path) -> None:
    """Every problem in [state], [protection] and rate_limit is reported at once, with its key."""
    text = policy_text(
        'match = "/a"\npublic = true\nrate_limit = ["5/minute per ip", "5/fortnight per ip"]',
        'match = "/b"\npublic = true\nrate_limit = "1/second per subject"',
        'match = "/c"\nauthenticate = ["session"]\nrate_limit = "1/second per api_key"',
        'match = "/d"\npublic = true\nrate_limit = ["1/hour per ip", "1/hour per ip"]',
        head=(
            '[state]\nredis_url = "memcached://x"\non_store_error = "maybe"\n'
            'revocation_max_staleness = 0\nkey_prefix = "{x}"\ncolour = 1\n'
            '[protection]\nfailed_auth = "3/minute per subject"\n'
        ),
    )
    errors = dict(errors_of(tmp_path, text))
    assert set(errors) == {
        "state.on_store_error",
        "state.revocation_max_staleness",
        "state.colour",
        "protection.failed_auth",
        "rules[0].rate_limit[1]",
        "rules[1].rate_limit",
        "rules[2].rate_limit",
        "rules[3].rate_limit[1]",
    }
    assert "per ip" in errors["protection.failed_auth"]
    assert "authenticate" in errors["rules[1].rate_limit"]
    assert "api_key authenticator" in errors["rules[2].rate_limit"]


def test_key_prefix_and_file_errors(tmp_path: Path) -> None:
    """A key prefix with braces, and revocation_file next to redis_url, are errors."""
    text = policy_text(
        PUBLIC,
        head=(
            '[state]\nredis_url = "redis://127.0.0.1:6379"\nkey_prefix = "{x}"\n'
            'revocation_file = "r.json"\n'
        ),
    )
    assert {loc for loc, _ in errors_of(tmp_path, text)} == {
        "state.key_prefix",
        "state.revocation_file",
    }
    text = policy_text(PUBLIC, head='[state]\nredis_url = "memcached://x"\n')
    assert [loc for loc, _ in errors_of(tmp_path, text)] == ["state.redis_url"]


def test_count_upstream_401_needs_failed_auth(tmp_path: Path) -> None:
    """count_upstream_401 without [protection] failed_auth would count nothing: an error."""
    text = policy_text('match = "/login"\npublic = true\ncount_upstream_401 = true')
    assert errors_of(tmp_path, text)[0][0] == "rules[0].count_upstream_401"


def test_workers_with_memory_counters_are_refused(tmp_path: Path) -> None:
    """[server] workers > 1 with counters in memory is a load error; check_workers refuses too."""
    limited = 'match = "/x"\npublic = true\nrate_limit = "1/second per ip"'
    text = policy_text(limited, head="[server]\nworkers = 4\n")
    ((location, message),) = errors_of(tmp_path, text)
    assert location == "server.workers"
    assert "redis_url" in message
    policy = load_policy(write_policy(tmp_path, policy_text(limited)))
    policy.check_workers(1)
    with pytest.raises(ConfigError, match="redis_url"):
        policy.check_workers(2)


def test_workers_are_fine_without_counters_or_with_redis(tmp_path: Path) -> None:
    """No counters, or counters in Redis: any number of workers."""
    load_policy(write_policy(tmp_path, policy_text(PUBLIC))).check_workers(8)
    text = policy_text(
        'match = "/x"\npublic = true\nrate_limit = "1/second per ip"',
        head='[state]\nredis_url = "redis://127.0.0.1:1/0"\n',
    )
    policy = load_policy(write_policy(tmp_path, text))
    policy.check_workers(8)
    assert policy.state.shared


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "extra"),
    [
        ("redis://127.0.0.1:6379/2", "standalone", [("127.0.0.1", 6379)], {"db": 2}),
        ("rediss://:pw@cache.internal", "standalone", [("cache.internal", 6379)], {"tls": True}),
        (
            "redis+sentinel://u:p%40ss@10.0.0.1:26380,10.0.0.2,[::1]:26379/main?db=1",
            "sentinel",
            [("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26379)],
            {"service": "main", "db": 1, "username": "u", "password": "p@ss"},
        ),
        (
            "rediss+cluster://10.0.0.1:7000,10.0.0.2:7001",
            "cluster",
            [("10.0.0.1", 7000), ("10.0.0.2", 7001)],
            {"tls": True},
        ),
    ],
)
def test_redis_url_forms(url: str, kind: str, hosts: list[Any], extra: dict[str, Any]) -> None:
    """Standalone, TLS, Sentinel and Cluster URLs parse; the password never shows in repr."""
    target = parse_redis_url(url)
    assert target.kind == kind
    assert list(target.hosts) == hosts
    for key, value in extra.items():
        assert getattr(target, key) == value
    assert "p@ss" not in repr(target) and "pw" not in repr(target).replace("password", "")


@pytest.mark.parametrize(
    "url",
    [
        "memcached://x",
        "redis://a:1,b:2",
        "redis://host/zero",
        "redis+sentinel://10.0.0.1:26379",
        "redis+cluster://10.0.0.1:7000/0",
        "redis://host:99999",
        "redis+sentinel://:26379/main",
    ],
)
def test_bad_redis_urls(url: str) -> None:
    """Other URLs are refused with what was expected."""
    with pytest.raises(ValueError, match=r"expected|names one host|no path"):
        parse_redis_url(url)
