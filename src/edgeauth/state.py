"""Where shared state lives: settings, the Redis connection and its health.

Without ``[state] redis_url`` rate-limit counters stay in the process and
revocations in a file; with it both go to Redis (standalone, Sentinel or
Cluster). This module holds the parts both users of Redis share:

- :func:`parse_redis_url`: the URL forms, checked at load;
- :class:`RedisConnector`: one client per event loop (a redis.asyncio client
  belongs to the loop that opened its connections), created on first use,
  every call bounded by ``[state] timeout`` and mapped to
  :class:`~edgeauth.errors.StoreUnavailable`;
- :class:`StoreHealth`: logs each outage and each recovery once, and makes
  callers fail fast for a second after a failure instead of waiting on a
  store that is down.

``redis`` is an optional dependency (``edgeauth[redis]``): it is imported only
when a Redis URL is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = [
    "RedisConnector",
    "RedisTarget",
    "StateSettings",
    "StoreHealth",
    "parse_redis_url",
]

log = logging.getLogger("edgeauth")

T = TypeVar("T")

Kind = Literal["standalone", "sentinel", "cluster"]
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``[state] redis_url``. ``repr`` never shows the password."""

    kind: Kind
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one of the documented forms; ValueError says what was expected.

    >>> parse_redis_url("redis+sentinel://10.0.0.1:26379,10.0.0.2/main").hosts
    (('10.0.0.1', 26379), ('10.0.0.2', 26379))
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(
            "expected redis://, rediss://, redis+sentinel://HOST:PORT,.../SERVICE "
            "or redis+cluster://HOST:PORT,..."
        )
    kind, tls = _SCHEMES[scheme.lower()]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(h, _DEFAULT_PORT[kind]) for h in hostlist.split(","))
    db = _db(query)
    if kind == "standalone":
        if len(hosts) != 1:
            raise ValueError("a redis:// URL names one host; use redis+cluster:// for several")
        if path:
            if not path.isdigit():
                raise ValueError("expected a database number after the host, like /0")
            db = int(path)
        return RedisTarget(kind, url, hosts, None, username, password, db, tls)
    if kind == "sentinel":
        if not path or "/" in path:
            raise ValueError("expected the service name after the hosts, like /mymaster")
        return RedisTarget(kind, url, hosts, unquote(path), username, password, db, tls)
    if path or db:
        raise ValueError("a cluster URL has no path or database (Redis Cluster has only db 0)")
    return RedisTarget(kind, url, hosts, None, username, password, 0, tls)


def _host_port(text: str, default: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else after
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError("expected HOST or HOST:PORT for every host")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected a port number, got {port_text!r}")
    return host, int(port_text)


def _db(query: str) -> int:
    values = parse_qs(query).get("db")
    if not values:
        return 0
    if not values[-1].isdigit():
        raise ValueError("expected db=N with a number")
    return int(values[-1])


@dataclass(frozen=True, slots=True)
class StateSettings:
    """``[state]``: where counters and revocations live, and how outages are handled."""

    redis: RedisTarget | None = None
    on_store_error: Literal["allow", "deny"] = "allow"
    revocation_max_staleness: float = 30.0
    revocation_file: str | None = None
    timeout: float = 0.5
    key_prefix: str = "edgeauth:"


class StoreHealth:
    """Whether the store answered last time; logs each change of state once.

    After a failure, :meth:`usable` is False for ``retry_after`` seconds so
    that requests do not each wait for a timeout; the revocation poller keeps
    probing regardless, and its first success makes the store usable again.
    """

    def __init__(
        self, *, retry_after: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._retry_after = retry_after
        self._monotonic = monotonic
        self._down_since: float | None = None
        self._last_failure = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def usable(self) -> bool:
        """Worth trying now: up, or the fail-fast pause after the last failure is over."""
        return (
            self._down_since is None or self._monotonic() - self._last_failure >= self._retry_after
        )

    def failed(self, exc: BaseException, *, unexpected: bool = False) -> None:
        now = self._monotonic()
        self._last_failure = now
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "state store unavailable (%s): rate limits follow on_store_error, "
                "revocations are served from the local copy until it is too old",
                _describe(exc),
                exc_info=exc if unexpected else None,
            )

    def recovered(self) -> None:
        if self._down_since is not None:
            outage = self._monotonic() - self._down_since
            self._down_since = None
            log.warning("state store available again after %.1f s", outage)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


class _LoopClient:
    """The client of one event loop, its registered scripts, and how to close it."""

    def __init__(self, client: Any, extra: tuple[Any, ...]) -> None:
        self.client = client
        self.extra = extra  # Sentinel's own connections to close as well
        self._scripts: dict[str, AsyncScript] = {}

    def script(self, source: str) -> AsyncScript:
        """``source`` as an EVALSHA-first script (redis-py reloads it on NOSCRIPT)."""
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.client.register_script(source)
        return found

    async def aclose(self) -> None:
        for client in (self.client, *self.extra):
            with contextlib.suppress(Exception):
                await client.aclose()


class RedisConnector:
    """Redis clients for ``target``, one per event loop, created on first use.

    >>> connector = RedisConnector(parse_redis_url("redis://127.0.0.1:6379/0"))
    >>> value = await connector.call(lambda c: c.client.get("k"))   # doctest: +SKIP
    """

    def __init__(self, target: RedisTarget, *, timeout: float = 0.5) -> None:
        self.target = target
        self.timeout = timeout
        self.health = StoreHealth()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    async def call(
        self, operation: Callable[[_LoopClient], Awaitable[T]], *, probe: bool = False
    ) -> T:
        """Run ``operation`` on this loop's client within the timeout.

        Raises :class:`StoreUnavailable` on any store or network failure, and at
        once while the store is known to be down (unless ``probe``).
        """
        from redis.exceptions import RedisError  # optional dependency: imported on use

        if not probe and not self.health.usable():
            raise StoreUnavailable("state store unavailable")
        await in_task()
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation(self._current())
        except (RedisError, OSError, TimeoutError) as exc:
            self.health.failed(exc)
            raise StoreUnavailable("state store unavailable") from None
        except Exception as exc:
            # Anything else from the client library is an outage too, never a 500;
            # its traceback goes to the log with the outage.
            self.health.failed(exc, unexpected=True)
            raise StoreUnavailable("state store unavailable") from None
        self.health.recovered()
        return result

    def _current(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            for old in [lp for lp in self._loops if lp.is_closed()]:
                del self._loops[old]
            found = self._loops[loop] = _open(self.target, self.timeout)
        return found

    async def aclose(self) -> None:
        """Close the clients: this loop's directly, a running other loop's on that loop."""
        current = asyncio.get_running_loop()
        loops, self._loops = self._loops, {}
        for loop, entry in loops.items():
            if loop is current:
                await entry.aclose()
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(entry.aclose(), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(future), self.timeout + 1)


async def in_task() -> None:
    """Make sure the caller runs in an asyncio task, as ``asyncio.timeout`` (and,
    from Python 3.12, ``asyncio.wait_for``) need. ``edgeauth serve`` starts
    forward-auth decisions outside any task (see :mod:`edgeauth.server`); one
    that gets here moves into its task at this first wait."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


def _open(target: RedisTarget, timeout: float) -> _LoopClient:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    # No retries inside the client: the caller's timeout bounds each check and
    # StoreHealth decides when to try again.
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.kind == "standalone":
        return _LoopClient(Redis.from_url(target.url, **options), ())
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        auth["ssl"] = True
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        client = RedisCluster(startup_nodes=nodes, **options, **auth)
        return _LoopClient(client, ())
    assert target.service is not None
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis 8.2
        list(target.hosts),
        sentinel_kwargs={**options, "ssl": target.tls} if target.tls else options,
        db=target.db,
        **options,
        **auth,
    )
    master = sentinel.master_for(target.service)
    return _LoopClient(master, tuple(sentinel.sentinels))
