"""Shared state against a real redis-server: limits and revocations across instances,
outages and recovery, Sentinel and Cluster, and memory ≡ Redis under a controlled clock."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeauth import EdgeAuth, load_policy
from edgeauth.ratelimit import Limit, MemoryLimitStore, RedisLimitStore
from edgeauth.revocation import revoke, unrevoke
from edgeauth.state import RedisConnector, parse_redis_url

from .helpers import SEED_POLICY, Response, call, echo_app, session_token, write_policy
from .redis_server import (  # noqa: F401
    AppProcess,
    RedisServer,
    app_processes,
    free_port,
    redis_server,
)

START = 1_800_000_000.0


def shared_policy(url: str, *, state: str = "", protection: str = "") -> str:
    """DESIGN.md's example app with one rule limited to 4/hour per ip, state in Redis at ``url``."""
    return (
        f'[state]\nredis_url = "{url}"\n{state}\n[protection]\n{protection}\n\n'
        '[[rules]]\nid = "limited"\nmatch = "/limited"\npublic = true\nrate_limit = "4/hour per ip"\n'
        + SEED_POLICY
    )


def cookie(token: str) -> tuple[str, str]:
    return ("cookie", f"session={token}")


async def poll(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Wait until ``check()`` holds, at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def two_instances(tmp_path: Path, text: str) -> list[EdgeAuth]:
    """Two in-process instances (two policies, two Redis clients) of one policy file."""
    path = write_policy(tmp_path, text)
    return [EdgeAuth(echo_app, policy=load_policy(path)) for _ in range(2)]


@pytest.fixture
def instances(tmp_path: Path, redis_server: RedisServer) -> list[EdgeAuth]:  # noqa: F811
    return two_instances(tmp_path, shared_policy(redis_server.url))


async def close(*apps: EdgeAuth) -> None:
    for app in apps:
        await app.policy.aclose()


# Memory and Redis decide alike ------------------------------------------------

LIMITS = st.builds(Limit, st.integers(1, 5), st.sampled_from([60, 3600]), st.just("ip"))
OPS = st.tuples(
    st.integers(0, 40_000_000), st.sampled_from(["hit", "fail", "locked"]), st.sampled_from("ab")
)


@settings(
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    limits=st.lists(LIMITS, min_size=1, max_size=2, unique_by=lambda lim: lim.key),
    ops=st.lists(OPS, min_size=1, max_size=30),
)
def test_memory_and_redis_decide_identically(
    redis_server: RedisServer,  # noqa: F811
    limits: list[Limit],
    ops: list[tuple[int, str, str]],
) -> None:
    """Under one controlled clock, both stores give the same answer to every operation."""

    async def run() -> None:
        connector = RedisConnector(parse_redis_url(redis_server.url))
        stores: list[Any] = [
            MemoryLimitStore(),
            RedisLimitStore(connector, prefix=f"p{secrets.token_hex(6)}:"),
        ]
        t = START
        try:
            for gap, op, client in ops:
                t += gap / 1_000_000
                if op == "hit":
                    answers = [await s.hit(client, limits, t) for s in stores]
                elif op == "fail":
                    answers = [await s.fail(client, limits[0], t) for s in stores]
                else:
                    answers = [await s.locked(client, t) for s in stores]
                assert answers[0] == answers[1], (op, t - START)
        finally:
            await connector.aclose()

    asyncio.run(run())


# Across processes -----------------------------------------------------------------


def test_two_instances_share_one_limit(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """Two uvicorn processes running the middleware admit 4 requests between them, no more."""
    path = write_policy(tmp_path, shared_policy(redis_server.url))
    with app_processes(path, 2) as (a, b), httpx.Client(timeout=10) as client:
        statuses = [client.get(f"{(a, b)[i % 2].url}/limited").status_code for i in range(10)]
        last = client.get(f"{b.url}/limited")
    assert statuses.count(200) == 4
    assert statuses.count(429) == 6
    assert last.json()["code"] == "rate_limited"
    assert 0 < int(last.headers["retry-after"]) <= 900  # T = 1 hour / 4


def test_two_edgeauth_serve_instances_share_one_limit(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Two `edgeauth serve` proxies in front of one upstream admit exactly 4 requests between them."""
    from . import servers

    with servers.upstream("echo", tmp_path) as app:
        ports = [servers.free_port(), servers.free_port()]
        policies = []
        for port in ports:
            folder = tmp_path / str(port)
            folder.mkdir()
            text = servers.server_section(port, app.url) + shared_policy(redis_server.url)
            policies.append(write_policy(folder, text))
        with (
            servers.edgeauth(policies[0], ports[0]) as a,
            servers.edgeauth(policies[1], ports[1]) as b,
            httpx.Client(timeout=10) as client,
        ):
            statuses = [client.get(f"{(a, b)[i % 2].url}/limited").status_code for i in range(10)]
    assert statuses.count(200) == 4
    assert statuses.count(429) == 6


async def test_revocation_reaches_every_instance(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """A token revoked through Redis is refused by each running instance within a poll or two."""
    path = write_policy(tmp_path, shared_policy(redis_server.url))
    token = session_token(jti="shared-jti")
    with app_processes(path, 2) as (a, b):
        async with httpx.AsyncClient(timeout=10) as client:

            async def get(app: AppProcess) -> httpx.Response:
                headers = {"cookie": f"session={token}"}
                return await client.get(f"{app.url}/api/protected/x", headers=headers)

            assert [(await get(a)).status_code, (await get(b)).status_code] == [200, 200]
            admin = load_policy(path)
            try:
                await revoke(admin, jti="shared-jti", expires_at=time.time() + 3600)
            finally:
                await admin.aclose()
            for app in (a, b):

                async def refused(app: AppProcess = app) -> bool:
                    r = await get(app)
                    return r.status_code == 401 and r.json()["code"] == "revoked"

                await poll(refused, f"instance {app.url} to refuse the revoked token")


# Within one process, several instances ----------------------------------------------


async def test_subject_revocation_and_lift_through_redis(instances: list[EdgeAuth]) -> None:
    """Sign-out-everywhere and its lifting, written by one instance, reach the other."""
    a, b = instances
    token = session_token("alice", iat=int(time.time()) - 60)
    try:
        assert (await call(b, raw_path=b"/api/protected/x", headers=[cookie(token)])).status == 200
        await revoke(a.policy, subject="alice")

        async def status_is(code: int) -> bool:
            r = await call(b, raw_path=b"/api/protected/x", headers=[cookie(token)])
            return r.status == code

        await poll(lambda: status_is(401), "the subject revocation")
        await unrevoke(a.policy, subject="alice")
        await poll(lambda: status_is(200), "the lifted revocation")
    finally:
        await close(a, b)


async def test_lockout_is_shared(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """Failures seen by one instance lock the client out of the other."""
    text = shared_policy(redis_server.url, protection='failed_auth = "3/hour per ip"')
    a, b = two_instances(tmp_path, text)
    try:
        for _ in range(3):
            r = await call(a, raw_path=b"/api/protected/x", headers=[cookie("bad.bad.bad")])
            assert r.status == 401
        r = await call(b, raw_path=b"/api/protected/x", headers=[cookie(session_token())])
        assert (r.status, r.json()["code"]) == (429, "rate_limited")
    finally:
        await close(a, b)


async def test_scripts_are_reloaded_after_a_flush(
    instances: list[EdgeAuth],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """After SCRIPT FLUSH (NOSCRIPT), the next check loads the script again and counts on."""
    a, _ = instances
    try:
        assert (await call(a, raw_path=b"/limited")).header("ratelimit-remaining") == "3"
        assert redis_server.command("SCRIPT", "FLUSH").startswith(b"+OK")
        assert (await call(a, raw_path=b"/limited")).header("ratelimit-remaining") == "2"
    finally:
        await close(*instances)


# Outages ---------------------------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.name == "edgeauth")


async def test_outage_with_allow_skips_limits_and_recovers(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: limited requests pass without RateLimit fields, logged once; back: limited again."""
    app = EdgeAuth(
        echo_app, policy=load_policy(write_policy(tmp_path, shared_policy(redis_server.url)))
    )
    try:
        with caplog.at_level(logging.WARNING, logger="edgeauth"):
            assert (await call(app, raw_path=b"/limited")).header("ratelimit-remaining") == "3"
            redis_server.stop()
            during = [await call(app, raw_path=b"/limited") for _ in range(6)]
            assert [r.status for r in during] == [200] * 6
            assert all(r.header("ratelimit-limit") is None for r in during)
            assert messages(caplog, "state store unavailable") == 1
            redis_server.start()

            async def limited_again() -> bool:
                r = await call(app, raw_path=b"/limited")
                return r.header("ratelimit-limit") == "4"

            await poll(limited_again, "rate limiting to resume")
            assert messages(caplog, "state store available again") == 1
            assert messages(caplog, "state store unavailable") == 1
    finally:
        await close(app)


async def test_outage_with_deny_is_503_never_500(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """on_store_error = "deny": limited requests get 503 auth_unavailable with Retry-After."""
    text = shared_policy(redis_server.url, state='on_store_error = "deny"')
    app = EdgeAuth(echo_app, policy=load_policy(write_policy(tmp_path, text)))
    try:
        assert (await call(app, raw_path=b"/limited")).status == 200
        redis_server.stop()
        r = await call(app, raw_path=b"/limited")
        assert (r.status, r.json()["code"], r.header("retry-after")) == (
            503,
            "auth_unavailable",
            "1",
        )
        # Rules without limits, and without credentials, do not touch the store.
        assert (await call(app, raw_path=b"/public/x")).status == 200
        redis_server.start()

        async def admitted() -> bool:
            return (await call(app, raw_path=b"/limited")).status == 200

        await poll(admitted, "limited requests to be admitted again")
    finally:
        await close(app)


async def test_stale_revocations_fail_closed_then_recover(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Redis gone past revocation_max_staleness: credentials get 503, anonymous pass, then 200."""
    text = shared_policy(redis_server.url, state="revocation_max_staleness = 1")
    app = EdgeAuth(echo_app, policy=load_policy(write_policy(tmp_path, text)))
    token = session_token()

    async def status() -> tuple[int, str | None]:
        r: Response = await call(app, raw_path=b"/api/protected/x", headers=[cookie(token)])
        return r.status, r.json().get("code") if r.status != 200 else None

    try:
        assert await status() == (200, None)
        redis_server.stop()

        async def refused() -> bool:
            return await status() == (503, "auth_unavailable")

        await poll(refused, "the stale list to fail closed")
        assert (await call(app, raw_path=b"/public/x")).status == 200
        redis_server.start()

        async def accepted() -> bool:
            return await status() == (200, None)

        await poll(accepted, "tokens to be accepted again")
    finally:
        await close(app)


# Sentinel and Cluster ----------------------------------------------------------------


async def test_sentinel_url(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """redis+sentinel:// finds the master through Sentinel; limits and revocations work."""
    sentinel = RedisServer(tmp_path / "sentinel")
    sentinel.start(sentinel_of=redis_server.port)
    try:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/main"
        app = EdgeAuth(echo_app, policy=load_policy(write_policy(tmp_path, shared_policy(url))))
        try:
            await exercise(app)
        finally:
            await close(app)
    finally:
        sentinel.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three cluster-enabled redis-servers joined into one cluster (no replicas)."""
    nodes = [RedisServer(tmp_path / f"node{i}") for i in range(3)]
    try:
        for node in nodes:
            # The cluster bus port defaults to port + 10000, which may not exist: name one.
            bus = str(free_port())
            node.start("--cluster-enabled", "yes", "--cluster-port", bus)
        cli = shutil.which("redis-cli")
        assert cli is not None
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in nodes):
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def test_cluster_url(tmp_path: Path, cluster: list[RedisServer]) -> None:
    """redis+cluster:// spreads keys over the nodes; each check's keys share one slot."""
    hosts = ",".join(f"127.0.0.1:{n.port}" for n in cluster[:2])
    app = EdgeAuth(
        echo_app,
        policy=load_policy(write_policy(tmp_path, shared_policy(f"redis+cluster://{hosts}"))),
    )
    try:
        await exercise(app)
    finally:
        await close(app)


async def exercise(app: EdgeAuth) -> None:
    """Limits count, tokens pass, and a revocation written through the store is honoured."""
    statuses = [(await call(app, raw_path=b"/limited")).status for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    token = session_token(jti="topology")
    r = await call(app, raw_path=b"/api/protected/x", headers=[cookie(token)])
    assert r.status == 200
    await revoke(app.policy, jti="topology")

    async def revoked() -> bool:
        r = await call(app, raw_path=b"/api/protected/x", headers=[cookie(token)])
        return r.status == 401

    await poll(revoked, "the revocation")
