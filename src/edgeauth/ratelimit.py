"""Rate limits and the failed-auth lockout: GCRA over a memory or Redis store.

GCRA (the generic cell rate algorithm, ITU-T I.371; the algorithm of
redis-cell and throttled) keeps one number per limit and client, the
theoretical arrival time ``tat``. A limit of N per period P has the emission
interval ``T = P / N`` and admits a request at ``now`` when
``max(tat, now) + T - N*T <= now``; admitting it moves ``tat`` on by ``T``.
A burst of N passes at once, then one request per ``T``: never more than N
in any window of length P.

Every function takes ``now`` as an argument (the Redis script too: it never
calls ``TIME``), so tests drive the clock. Times are whole microseconds, and
the Redis script does the same integer arithmetic as :func:`gcra_step`, so
both stores decide identically. ``T`` is rounded down to a whole microsecond
and the burst is ``N*T``: bursts are exactly N, and the sustained rate is at
most one part in ``T`` (0.1 % at the fastest allowed limit, 1000/second)
above nominal.

The failed-auth lockout uses the same state: each failure is a GCRA step
(failures are never refused, only counted); the failure that uses up the
allowance locks the client out until the allowance is whole again, which for
N failures in a burst is one full period after the first.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from .model import Header
from .state import RedisConnector

__all__ = [
    "Limit",
    "LimitStore",
    "Lockout",
    "MemoryLimitStore",
    "RateDecision",
    "RedisLimitStore",
    "Scope",
    "Step",
    "failure_step",
    "gcra_step",
    "retry_after_header",
]

Scope = Literal["ip", "subject", "api_key"]

_PERIODS = {"second": 1, "minute": 60, "hour": 3600}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour)\s+per\s+(ip|subject|api_key)\s*")
_MAX_PER_SECOND = 1000  # keeps T >= 1 ms, so rounding T costs at most 0.1 %
_MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """``N/second|minute|hour per ip|subject|api_key``.

    >>> Limit.parse("5/minute per ip")
    Limit(count=5, period=60, scope='ip')
    """

    count: int
    period: int
    scope: Scope

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse the policy spelling; ValueError says what was expected."""
        m = _SPEC.fullmatch(text)
        if m is None:
            raise ValueError(
                f"expected 'N/second|minute|hour per ip|subject|api_key', got {text!r}"
            )
        count, period = int(m.group(1)), _PERIODS[m.group(2)]
        if not 1 <= count <= period * _MAX_PER_SECOND:
            raise ValueError(f"expected 1 to {_MAX_PER_SECOND} requests per second, got {text!r}")
        scope: Scope = m.group(3)  # type: ignore[assignment]
        return cls(count, period, scope)

    @property
    def interval(self) -> int:
        """Emission interval T in microseconds."""
        return self.period * _MICROS // self.count

    @property
    def tolerance(self) -> int:
        """Burst tolerance N*T in microseconds."""
        return self.interval * self.count

    @property
    def key(self) -> str:
        return f"{self.count}/{self.period}"

    def __str__(self) -> str:
        unit = next(u for u, s in _PERIODS.items() if s == self.period)
        return f"{self.count}/{unit} per {self.scope}"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer of one check: allowed or not, and what the headers say."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float

    def headers(self) -> tuple[Header, ...]:
        """``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (draft-ietf-httpapi-ratelimit-headers),
        and ``Retry-After`` (RFC 9110 §10.2.3) when refused; delays round up to whole seconds."""
        out: tuple[Header, ...] = (
            ("ratelimit-limit", str(self.limit)),
            ("ratelimit-remaining", str(self.remaining)),
            ("ratelimit-reset", str(math.ceil(self.reset_after))),
        )
        if not self.allowed:
            out = (*out, retry_after_header(self.retry_after))
        return out

    @staticmethod
    def tightest(decisions: Sequence[RateDecision]) -> RateDecision | None:
        """The decision the headers should describe: a refusal with the longest
        wait, else the fewest remaining (the longest reset on a tie)."""
        refused = [d for d in decisions if not d.allowed]
        if refused:
            return max(refused, key=lambda d: d.retry_after)
        if not decisions:
            return None
        return min(decisions, key=lambda d: (d.remaining, -d.reset_after))


def retry_after_header(seconds: float) -> Header:
    """``Retry-After`` in whole seconds, rounded up and at least 1."""
    return ("retry-after", str(max(1, math.ceil(seconds))))


@dataclass(frozen=True, slots=True)
class Lockout:
    """A failed-auth lockout: until when (caller's clock), and whether this
    failure started it (each start is one audit event)."""

    until: float
    started: bool


class Step(NamedTuple):
    """One limit's verdict, in microseconds; ``tat`` is the value to store if admitted."""

    allowed: bool
    remaining: int
    retry: int
    reset: int
    tat: int


def gcra_step(tat: int | None, now: int, tolerance: int, interval: int) -> Step:
    """One GCRA decision (all times in microseconds).

    >>> gcra_step(None, 0, 3_000, 1_000)
    Step(allowed=True, remaining=2, retry=0, reset=1000, tat=1000)
    >>> gcra_step(3_000, 0, 3_000, 1_000)
    Step(allowed=False, remaining=0, retry=1000, reset=3000, tat=3000)
    """
    base = now if tat is None or tat < now else tat
    new_tat = base + interval
    if new_tat - tolerance > now:
        return Step(False, 0, new_tat - tolerance - now, base - now, base)
    return Step(True, (tolerance - (new_tat - now)) // interval, 0, new_tat - now, new_tat)


def failure_step(
    tat: int | None, lock: int | None, now: int, tolerance: int, interval: int
) -> tuple[int, int | None, bool]:
    """Count one failure: (new tat, lockout end or None, whether it starts now)."""
    base = now if tat is None or tat < now else tat
    new_tat = min(base + interval, now + tolerance)
    if new_tat + interval - tolerance <= now:
        return new_tat, None, False  # room for another failure: no lockout
    if lock is None or lock <= now:
        return new_tat, new_tat, True
    return new_tat, max(lock, new_tat), False


def _decision(limits: Sequence[Limit], steps: Sequence[Step]) -> RateDecision:
    """Combine per-limit steps: admitted only if every limit admits."""
    decisions = [
        RateDecision(s.allowed, lim.count, s.remaining, s.retry / _MICROS, s.reset / _MICROS)
        for lim, s in zip(limits, steps, strict=True)
    ]
    chosen = RateDecision.tightest(decisions)
    assert chosen is not None
    return chosen


def _micros(now: float) -> int:
    return int(now * _MICROS)


class LimitStore(Protocol):
    """Where GCRA state lives. ``now`` is seconds since the epoch, from the caller."""

    async def hit(self, group: str, limits: Sequence[Limit], now: float) -> RateDecision:
        """Check and count one request against every limit of ``group`` at once:
        admitted only if all admit, and then counted in all; a refusal counts in none."""
        ...

    async def fail(self, client: str, limit: Limit, now: float) -> Lockout | None:
        """Count one failed authentication of ``client``; the lockout if it is locked out."""
        ...

    async def locked(self, client: str, now: float) -> float | None:
        """Seconds until ``client``'s lockout ends, or None when it is not locked out."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimitStore:
    """GCRA state in this process: a dict, bounded in size.

    Every stored value is the instant it stops mattering (a ``tat`` or the end
    of a lockout), so idle entries are dropped as they are met at the old end;
    past ``max_keys`` the least recently used entry goes (that client's counter
    starts afresh). No awaits inside a check: atomic on the event loop.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._values: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    async def hit(self, group: str, limits: Sequence[Limit], now: float) -> RateDecision:
        t = _micros(now)
        self._expire(t)
        keys = [("rl", group, lim.key) for lim in limits]
        steps = [
            gcra_step(self._values.get(k), t, lim.tolerance, lim.interval)
            for k, lim in zip(keys, limits, strict=True)
        ]
        if all(s.allowed for s in steps):
            for k, s in zip(keys, steps, strict=True):
                self._put(k, s.tat)
        return _decision(limits, steps)

    async def fail(self, client: str, limit: Limit, now: float) -> Lockout | None:
        t = _micros(now)
        self._expire(t)
        counter, lock_key = ("fa", client), ("fl", client)
        lock = self._values.get(lock_key)
        tat, until, started = failure_step(
            self._values.get(counter), lock, t, limit.tolerance, limit.interval
        )
        self._put(counter, tat)
        if until is None:
            return None
        self._put(lock_key, until)
        return Lockout(until / _MICROS, started)

    async def locked(self, client: str, now: float) -> float | None:
        t = _micros(now)
        until = self._values.get(("fl", client))
        return (until - t) / _MICROS if until is not None and until > t else None

    async def aclose(self) -> None:
        return None

    def _put(self, key: tuple[str, ...], value: int) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.max_keys:
            self._values.popitem(last=False)

    def _expire(self, now: int) -> None:
        # A few entries per call at the old end: amortized O(1), no sweeps.
        for _ in range(4):
            oldest = next(iter(self._values.items()), None)
            if oldest is None or oldest[1] > now:
                return
            del self._values[oldest[0]]


# KEYS: one per limit. ARGV[1] = now; then per limit: tolerance, interval (all µs).
# Returns {all admitted, then per limit: admitted, remaining, retry, reset}.
# Stored values expire a second after they stop mattering; decisions never
# depend on expiry, since a tat in the past counts as now.
_HIT = """
local now = tonumber(ARGV[1])
local out, tats = {1}, {}
for i, key in ipairs(KEYS) do
  local tolerance, interval = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - tolerance > now then
    out[1] = 0
    for _, v in ipairs({0, 0, new_tat - tolerance - now, tat - now}) do out[#out + 1] = v end
  else
    local remaining = math.floor((tolerance - (new_tat - now)) / interval)
    for _, v in ipairs({1, remaining, 0, new_tat - now}) do out[#out + 1] = v end
  end
  tats[i] = new_tat
end
if out[1] == 1 then
  for i, key in ipairs(KEYS) do
    local ttl = math.ceil((tats[i] - now) / 1000) + 1000
    redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl)
  end
end
return out
"""

# KEYS: counter, lock. ARGV: now, tolerance, interval. Returns {lock end or 0, started}.
_FAIL = """
local now, tolerance, interval = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = math.min(tat + interval, now + tolerance)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
  math.ceil((new_tat - now) / 1000) + 1000)
if new_tat + interval - tolerance <= now then return {0, 0} end
local lock = tonumber(redis.call('GET', KEYS[2]) or 0)
local started = 0
local untl = math.max(lock, new_tat)
if lock <= now then started = 1; untl = new_tat end
redis.call('SET', KEYS[2], string.format('%.0f', untl), 'PX',
  math.ceil((untl - now) / 1000) + 1000)
return {untl, started}
"""


class RedisLimitStore:
    """GCRA state in Redis: one ``EVALSHA`` per check, keys ``PREFIX rl:{GROUP}:N/P``.

    The ``{...}`` hash tag puts every key of one check in one Cluster slot, so
    the script may touch them all atomically.
    """

    def __init__(self, connector: RedisConnector, prefix: str = "edgeauth:") -> None:
        self._connector = connector
        self._prefix = prefix

    async def hit(self, group: str, limits: Sequence[Limit], now: float) -> RateDecision:
        keys = [f"{self._prefix}rl:{{{group}}}:{lim.key}" for lim in limits]
        args: list[int] = [_micros(now)]
        for lim in limits:
            args += [lim.tolerance, lim.interval]
        reply = await self._connector.call(lambda c: c.script(_HIT)(keys=keys, args=args))
        values = [int(v) for v in reply]
        steps = [
            Step(bool(values[i]), values[i + 1], values[i + 2], values[i + 3], 0)
            for i in range(1, len(values), 4)
        ]
        return _decision(limits, steps)

    async def fail(self, client: str, limit: Limit, now: float) -> Lockout | None:
        keys = self._failure_keys(client)
        args = [_micros(now), limit.tolerance, limit.interval]
        reply = await self._connector.call(lambda c: c.script(_FAIL)(keys=keys, args=args))
        until, started = (int(v) for v in reply)
        return Lockout(until / _MICROS, bool(started)) if until else None

    async def locked(self, client: str, now: float) -> float | None:
        key = self._failure_keys(client)[1]
        raw = await self._connector.call(lambda c: c.client.get(key))
        t = _micros(now)
        until = int(raw) if raw is not None else None
        return (until - t) / _MICROS if until is not None and until > t else None

    async def aclose(self) -> None:
        return None  # the connector is closed by its owner

    def _failure_keys(self, client: str) -> list[str]:
        base = f"{self._prefix}fa:{{{client}}}"
        return [base, f"{base}:lock"]
