"""Revocation: refuse tokens before they expire, by token id or by subject.

Each worker checks a local copy of the revocation list, so a request costs no
store round trip. The copy comes from Redis when ``[state] redis_url`` is set
(a version key polled every half second, the whole list reloaded when it
changes) or else from a JSON file every worker reads (re-read when it
changes). Revocation fails closed: a copy older than
``[state] revocation_max_staleness`` is refused with
:class:`~edgeauth.errors.AuthUnavailable`, whatever ``on_store_error`` says.

Entries:

- by token id (the JWT ``jti``), until the token's ``exp``;
- by subject with a ``before`` time: every token of that subject issued
  before it (``iat < before``) is revoked ("sign out everywhere"); a credential
  without ``iat`` (API keys, JWTs without it) is revoked while the entry lasts.
  A subject entry lasts until lifted, or until its ``expires_at``.

An entry is honoured for :data:`GRACE` seconds past its ``expires_at``, the
largest ``leeway`` a JWT authenticator may have, so a token accepted under
leeway is still refused.

>>> await revoke(policy, jti="b7e1...", expires_at=1767225600)   # doctest: +SKIP
>>> await revoke(policy, subject="alice")                         # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import AuthUnavailable, StoreUnavailable
from .model import Identity
from .state import RedisConnector, in_task

if TYPE_CHECKING:
    from .policy import Policy

__all__ = [
    "DEFAULT_TOKEN_RETENTION",
    "EMPTY",
    "GRACE",
    "Change",
    "FileRevocations",
    "RedisRevocations",
    "RevocationList",
    "RevocationStore",
    "SubjectRevocation",
    "parse_time",
    "revoke",
    "unrevoke",
]

log = logging.getLogger("edgeauth")

GRACE = 600.0
"""Seconds an entry outlives its ``expires_at`` (the largest JWT ``leeway``)."""

DEFAULT_TOKEN_RETENTION = 30 * 86400.0
"""How long a token-id entry lasts when the token's ``exp`` is not given."""

POLL_INTERVAL = 0.5

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SubjectRevocation:
    """Tokens of a subject issued before ``before`` are revoked, until ``expires_at``."""

    before: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class RevocationList:
    """An immutable snapshot: token ids with their expiry, subjects with their cut-off."""

    tokens: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    subjects: Mapping[str, SubjectRevocation] = field(default_factory=lambda: _EMPTY)

    def revoked(self, identity: Identity, now: float) -> bool:
        """Is ``identity``'s credential revoked at ``now``?

        >>> RevocationList(tokens={"t1": 200.0}).revoked(Identity("u", token_id="t1"), 100.0)
        True
        """
        if identity.token_id is not None:
            expires = self.tokens.get(identity.token_id)
            if expires is not None and now < expires + GRACE:
                return True
        entry = self.subjects.get(identity.subject)
        if entry is None or (entry.expires_at is not None and now >= entry.expires_at + GRACE):
            return False
        return identity.issued_at is None or identity.issued_at < entry.before

    def changed(self, change: Change, now: float) -> RevocationList:
        """This list with ``change`` applied and entries that no longer matter dropped."""
        cutoff = now - GRACE
        tokens = {k: v for k, v in self.tokens.items() if v > cutoff}
        subjects = {
            k: v for k, v in self.subjects.items() if v.expires_at is None or v.expires_at > cutoff
        }
        if change.kind == "token":
            assert change.expires_at is not None
            tokens[change.name] = max(tokens.get(change.name, change.expires_at), change.expires_at)
        elif change.kind == "subject":
            old = subjects.get(change.name)
            new = SubjectRevocation(change.before, change.expires_at)
            if old is not None:
                expires = (
                    None
                    if old.expires_at is None or new.expires_at is None
                    else max(old.expires_at, new.expires_at)
                )
                new = SubjectRevocation(max(old.before, new.before), expires)
            subjects[change.name] = new
        elif change.kind == "lift_token":
            tokens.pop(change.name, None)
        else:
            subjects.pop(change.name, None)
        return RevocationList(MappingProxyType(tokens), MappingProxyType(subjects))

    def to_json(self) -> bytes:
        document = {
            "tokens": dict(sorted(self.tokens.items())),
            "subjects": {
                k: {"before": v.before, "expires_at": v.expires_at}
                for k, v in sorted(self.subjects.items())
            },
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RevocationList:
        """Parse the revocation file; ValueError when it is not one."""
        document = json.loads(data)
        if not isinstance(document, dict) or set(document) - {"tokens", "subjects"}:
            raise ValueError("expected an object with 'tokens' and 'subjects'")
        tokens_in = document.get("tokens", {})
        subjects_in = document.get("subjects", {})
        if not isinstance(tokens_in, dict) or not isinstance(subjects_in, dict):
            raise ValueError("'tokens' and 'subjects' must be objects")
        tokens = {str(k): _number(v) for k, v in tokens_in.items()}
        subjects: dict[str, SubjectRevocation] = {}
        for name, entry in subjects_in.items():
            if not isinstance(entry, dict) or set(entry) - {"before", "expires_at"}:
                raise ValueError(f"subject {name!r}: expected before and expires_at")
            expires = entry.get("expires_at")
            subjects[str(name)] = SubjectRevocation(
                _number(entry.get("before")), None if expires is None else _number(expires)
            )
        return cls(MappingProxyType(tokens), MappingProxyType(subjects))


EMPTY = RevocationList()


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a time in seconds since the epoch, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Change:
    """One write to the revocation list."""

    kind: Literal["token", "subject", "lift_token", "lift_subject"]
    name: str
    before: float = 0.0
    expires_at: float | None = None


class RevocationStore(Protocol):
    """Where the revocation list lives; the pipeline reads :meth:`current`,
    then :meth:`snapshot` when that cannot answer."""

    def current(self) -> RevocationList | None:
        """The local copy when it is fresh enough, without waiting; else None."""
        ...

    async def snapshot(self) -> RevocationList:
        """The local copy (waiting for the first load); raises AuthUnavailable
        when it is too old to trust."""
        ...

    async def apply(self, change: Change, now: float) -> None:
        """Write ``change``; raises StoreUnavailable when the store cannot be written."""
        ...

    async def aclose(self) -> None: ...


class FileRevocations:
    """The revocation list in a JSON file that every worker reads.

    The file is checked (``stat``) at most every ``check_interval`` seconds, on
    use, and re-read when it changed; writers replace it atomically under a
    lock file. A missing file is an empty list. A file that cannot be read or
    parsed keeps the last good copy, which fails closed once it is older than
    ``max_staleness``. ``path=None`` is a list that is always empty.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        max_staleness: float = 30.0,
        check_interval: float = POLL_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._max_staleness = max_staleness
        self._interval = check_interval
        self._monotonic = monotonic
        self._list = EMPTY
        self._signature: tuple[int, int, int] | None = None
        self._checked: float | None = None
        self._fresh: float | None = None
        self._failing = False

    def current(self) -> RevocationList | None:
        if self.path is None:
            return EMPTY
        now = self._monotonic()
        if self._checked is None or now - self._checked >= self._interval:
            self._refresh(self.path, now)
        if self._fresh is None or now - self._fresh > self._max_staleness:
            return None
        return self._list

    async def snapshot(self) -> RevocationList:
        found = self.current()
        if found is None:
            raise AuthUnavailable("revocation list is older than revocation_max_staleness")
        return found

    def _refresh(self, path: Path, now: float) -> None:
        self._checked = now
        try:
            st = path.stat()
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature != self._signature:
                self._list = RevocationList.from_json(path.read_bytes())
                self._signature = signature
        except FileNotFoundError:
            self._list, self._signature = EMPTY, None
        except (OSError, ValueError) as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot read the revocation file %s (%s): keeping the last copy; "
                    "tokens are refused once it is older than %.0f s",
                    path,
                    _reason(exc),
                    self._max_staleness,
                )
            return
        if self._failing:
            self._failing = False
            log.warning("revocation file %s readable again", path)
        self._fresh = now

    async def apply(self, change: Change, now: float) -> None:
        if self.path is None:
            raise StoreUnavailable("no revocation file is configured")
        try:
            _rewrite(self.path, change, now)
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot update the revocation file {self.path}: {_reason(exc)}"
            ) from None
        self._checked = None  # this process sees its own write at once

    async def aclose(self) -> None:
        return None


def _rewrite(path: Path, change: Change, now: float) -> None:
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = RevocationList.from_json(path.read_bytes())
        except FileNotFoundError:
            current = EMPTY
        data = current.changed(change, now).to_json()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, path)  # readers see the old file or the new one, never half
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# KEYS: tokens (zset jti -> exp), before (zset subject -> before),
# expires (zset subject -> expires_at or +inf), version.
_READ = """
return {redis.call('GET', KEYS[4]) or '',
        redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'),
        redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
        redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')}
"""

# ARGV: operation, cutoff (entries expired before it are dropped), new version,
# name, then the operation's scores. GT keeps the later cut-off and expiry.
_WRITE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, subject in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])) do
  redis.call('ZREM', KEYS[2], subject)
  redis.call('ZREM', KEYS[3], subject)
end
local op, name = ARGV[1], ARGV[4]
if op == 'token' then
  redis.call('ZADD', KEYS[1], 'GT', ARGV[5], name)
elseif op == 'subject' then
  redis.call('ZADD', KEYS[2], 'GT', ARGV[5], name)
  redis.call('ZADD', KEYS[3], 'GT', ARGV[6], name)
elseif op == 'lift_token' then
  redis.call('ZREM', KEYS[1], name)
else
  redis.call('ZREM', KEYS[2], name)
  redis.call('ZREM', KEYS[3], name)
end
redis.call('SET', KEYS[4], ARGV[3])
return 1
"""


class _Poller:
    __slots__ = ("first", "task")

    def __init__(self, task: asyncio.Task[None], first: asyncio.Event) -> None:
        self.task = task
        self.first = first


class RedisRevocations:
    """The revocation list in Redis, copied into this process by a poller.

    The poller (one per event loop, started on first use) reads a version key
    every ``poll_interval`` seconds and reloads the whole list, atomically with
    its version, when the version changed; writers change the version after
    the data. The copy is fresh as of the last poll that reached Redis.
    """

    def __init__(
        self,
        connector: RedisConnector,
        *,
        prefix: str = "edgeauth:",
        max_staleness: float = 30.0,
        poll_interval: float = POLL_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        base = f"{prefix}{{rev}}:"
        self._keys = [base + "tokens", base + "before", base + "expires", base + "version"]
        self._max_staleness = max_staleness
        self._interval = poll_interval
        self._monotonic = monotonic
        self._list: RevocationList = EMPTY
        self._version: bytes | None = None
        self._fresh: float | None = None
        self._pollers: dict[asyncio.AbstractEventLoop, _Poller] = {}
        self._broken = False

    def current(self) -> RevocationList | None:
        self._poller()
        if self._fresh is None or self._monotonic() - self._fresh > self._max_staleness:
            return None
        return self._list

    async def snapshot(self) -> RevocationList:
        poller = self._poller()
        if self._fresh is None:
            # Before the first load: wait for it, bounded by the store timeouts.
            await in_task()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poller.first.wait(), 2 * self._connector.timeout + 0.5)
        if self._fresh is None or self._monotonic() - self._fresh > self._max_staleness:
            raise AuthUnavailable("revocation list is older than revocation_max_staleness")
        return self._list

    async def apply(self, change: Change, now: float) -> None:
        args: list[str | float] = [change.kind, now - GRACE, secrets.token_hex(16), change.name]
        if change.kind == "token":
            args.append(repr(change.expires_at))
        elif change.kind == "subject":
            expires = "+inf" if change.expires_at is None else repr(change.expires_at)
            args += [repr(change.before), expires]
        await self._connector.call(
            lambda c: c.script(_WRITE)(keys=self._keys, args=args), probe=True
        )

    async def refresh(self) -> None:
        """Poll once now (the background poller does this every ``poll_interval``)."""
        started = self._monotonic()
        version = await self._connector.call(lambda c: c.client.get(self._keys[3]), probe=True)
        if self._version is None or (version or b"") != self._version:
            reply = await self._connector.call(
                lambda c: c.script(_READ)(keys=self._keys), probe=True
            )
            self._list, self._version = _from_redis(reply)
        self._fresh = started

    async def aclose(self) -> None:
        """Stop the pollers: this loop's awaited, other loops' cancelled there."""
        current = asyncio.get_running_loop()
        pollers, self._pollers = self._pollers, {}
        for loop, poller in pollers.items():
            if loop is current:
                poller.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller.task
            elif not loop.is_closed():
                loop.call_soon_threadsafe(poller.task.cancel)

    def _poller(self) -> _Poller:
        loop = asyncio.get_running_loop()
        found = self._pollers.get(loop)
        if found is None or found.task.done():
            for old in [lp for lp in self._pollers if lp.is_closed()]:
                del self._pollers[old]
            first = asyncio.Event()
            found = self._pollers[loop] = _Poller(loop.create_task(self._run(first)), first)
        return found

    async def _run(self, first: asyncio.Event) -> None:
        while True:
            try:
                await self.refresh()
                self._broken = False
            except StoreUnavailable:
                pass  # StoreHealth logged it
            except Exception:
                if not self._broken:  # e.g. foreign data under our keys: say so once
                    self._broken = True
                    log.exception("cannot load the revocation list from Redis")
            first.set()
            await asyncio.sleep(self._interval)


def _from_redis(reply: list[Any]) -> tuple[RevocationList, bytes]:
    version, tokens, before, expires = reply

    def pairs(flat: list[bytes]) -> dict[str, float]:
        return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}

    until = pairs(expires)
    subjects = {
        name: SubjectRevocation(cut, None if math.isinf(until.get(name, math.inf)) else until[name])
        for name, cut in pairs(before).items()
    }
    return RevocationList(MappingProxyType(pairs(tokens)), MappingProxyType(subjects)), bytes(
        version
    )


def parse_time(text: str) -> float:
    """A time for ``before`` / ``expires_at``: ISO 8601 with an offset, or seconds
    since the epoch; ValueError otherwise.

    >>> parse_time("2026-01-01T00:00:00Z")
    1767225600.0
    """
    text = text.strip()
    try:
        return _number(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time like 2026-01-01T00:00:00Z, got {text!r}"
        ) from None
    return _seconds(moment)


def _seconds(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time needs a UTC offset (like Z or +02:00)")
        return value.timestamp()
    return _number(value)


async def revoke(
    policy: Policy,
    *,
    jti: str | None = None,
    subject: str | None = None,
    before: float | datetime | None = None,
    expires_at: float | datetime | None = None,
    now: float | None = None,
) -> None:
    """Revoke one token by ``jti`` or every token of ``subject`` issued before ``before``.

    ``expires_at`` is the token's ``exp`` for a ``jti`` (default: now + 30 days)
    and, for a subject, when the entry lapses (default: never). ``before``
    defaults to now. Times are seconds since the epoch or aware datetimes.
    Raises ValueError for bad arguments and
    :class:`~edgeauth.errors.StoreUnavailable` when the store cannot be written.

    >>> await revoke(policy, subject="alice")   # sign out everywhere  # doctest: +SKIP
    """
    current = time.time() if now is None else now
    if (jti is None) == (subject is None):
        raise ValueError("give exactly one of jti and subject")
    if jti is not None:
        if before is not None:
            raise ValueError("before applies to a subject, not a jti")
        if not jti:
            raise ValueError("jti is empty")
        expires = current + DEFAULT_TOKEN_RETENTION if expires_at is None else _seconds(expires_at)
        change = Change("token", jti, expires_at=expires)
    else:
        assert subject is not None
        if not subject:
            raise ValueError("subject is empty")
        cut = current if before is None else _seconds(before)
        lapse = None if expires_at is None else _seconds(expires_at)
        change = Change("subject", subject, before=cut, expires_at=lapse)
    await policy.state.revocations.apply(change, current)


async def unrevoke(
    policy: Policy, *, jti: str | None = None, subject: str | None = None, now: float | None = None
) -> None:
    """Lift the revocation of a ``jti`` or of a ``subject``."""
    if (jti is None) == (subject is None):
        raise ValueError("give exactly one of jti and subject")
    change = Change("lift_token", jti) if jti is not None else Change("lift_subject", subject or "")
    await policy.state.revocations.apply(change, time.time() if now is None else now)
