"""The rate limiter: token buckets in Redis, shared by every process on one Redis.

A *bucket* (`BucketSpec`: capacity, refill per second) is one Redis hash,
`<prefix>ratelimit:<bucket>`; a *budget* (`Budget`) is the set of buckets one kind of request
counts against, taken all or nothing by `state/lua/ratelimit.lua` (a `POST /order` counts
against the CLOB's general limit, its 10 s burst and its 10 min sustained limit at once).
Every worker of every colour, and the feed, share the buckets through Redis, so that a
restart or a handover does not spend the budget twice.

    limiter = AsyncLimiter(
        redis, Keys(prefix), scale=settings.rate_limit_scale, budgets=BUDGETS, clock_ms=wall_ms
    )
    await limiter.take(BINANCE_REST_WEIGHT, cost=2, max_wait_ms=60_000)

`take` returns once the request may be sent (after sleeping the wait, when there is one), or
raises `RateLimited` — naming the budget, the cost and the wait it would have needed — and
then the request must not be sent. A grant that must wait is a reservation: the buckets go
into debt at once, so that waiters queue in order instead of racing for the refill.
`SyncLimiter` is the same for threads (the venue client's methods run in threads). The
venues' own budgets (their published limits) are in venues/budgets.py: a limiter knows the
budgets it is given, and reads the time from the clock it is given (kernel.clock.wall_ms in
production: the state layer reads no clock of its own).

Scale (`BATON_RATE_LIMIT_SCALE`, default 1.0) multiplies every capacity and refill rate;
0 turns the limiter off (nothing is read or written). A bucket whose hash holds garbage is
reset to full, logged and journaled (`journal:errors`, source `ratelimit`): the venue still
enforces its own limits, and a corrupt counter must not stop trading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from baton.errors import RateLimited
from state.journal import ERRORS_MAXLEN
from state.keys import Keys
from state.scripts import scripts_for

log = logging.getLogger("baton.ratelimit")

_NAME_RE = re.compile(r"^[a-z0-9_.\-]+(:[a-z0-9_.\-]+)*$")


@dataclass(frozen=True)
class BucketSpec:
    """One token bucket: holds at most `capacity` tokens, refilled at `refill_per_s`."""

    name: str
    capacity: float
    refill_per_s: float

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad bucket name {self.name!r}: lowercase words separated by ':'")
        for field in ("capacity", "refill_per_s"):
            v = getattr(self, field)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"bucket {self.name}: {field} must be a positive number, not {v!r}")

    @classmethod
    def window(cls, name: str, limit: float, window_s: float, burst: float | None = None) -> BucketSpec:
        """A bucket for a venue limit of `limit` per `window_s`, never exceeded however the
        venue's window is aligned (fixed or sliding): in any interval of `window_s` a bucket
        lets through at most capacity + refill * window_s = `limit`. `burst` (the capacity)
        defaults to half the limit; the rest comes back evenly over the window."""
        burst = limit / 2 if burst is None else burst
        if not 0 < burst < limit:
            raise ValueError(f"bucket {name}: burst {burst} must be between 0 and the limit {limit}")
        return cls(name, burst, (limit - burst) / window_s)

    def scaled(self, k: float) -> BucketSpec:
        return replace(self, capacity=self.capacity * k, refill_per_s=self.refill_per_s * k)

    @property
    def refill_ms(self) -> int:
        """How long an empty bucket takes to fill: also the longest wait a reservation may have."""
        return math.ceil(self.capacity * 1000 / self.refill_per_s)


@dataclass(frozen=True)
class Budget:
    """What one kind of request counts against: every bucket of it, all or nothing."""

    name: str
    buckets: tuple[BucketSpec, ...]
    covers: str = ""

    def __post_init__(self) -> None:
        if not self.buckets:
            raise ValueError(f"budget {self.name} has no bucket")
        names = [b.name for b in self.buckets]
        if len(set(names)) != len(names):
            raise ValueError(f"budget {self.name} names a bucket twice: {names}")


def _num(v: Any) -> int:
    return int(v.decode() if isinstance(v, bytes) else v)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


class _Base:
    def __init__(
        self,
        redis: Any,
        keys: Keys | str = "baton:",
        *,
        scale: float = 1.0,
        budgets: Mapping[str, Budget] | None = None,  # name -> Budget, for `take` by name
        clock_ms: Callable[[], int],
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
            raise ValueError(f"rate limit scale must be a finite number >= 0, not {scale!r}")
        self.redis = redis
        self.keys = Keys(keys) if isinstance(keys, str) else keys
        self.scale = float(scale)
        self.budgets: dict[str, Budget] = dict(budgets or {})
        self.clock_ms = clock_ms
        # asyncio.sleep for AsyncLimiter, time.sleep for SyncLimiter (tests inject a fake).
        self._sleep = sleep or self.default_sleep
        self._script = scripts_for(redis).ratelimit

    default_sleep: Callable[[float], Any] = staticmethod(time.sleep)

    @property
    def enabled(self) -> bool:
        """False when the scale is 0: `take` grants everything without touching Redis."""
        return self.scale > 0

    def budget(self, budget: str | Budget) -> Budget:
        if isinstance(budget, Budget):
            return budget
        try:
            return self.budgets[budget]
        except KeyError:
            raise ValueError(
                f"unknown rate-limit budget {budget!r}; known: {', '.join(sorted(self.budgets))}"
            ) from None

    def buckets(self, budget: str | Budget) -> tuple[BucketSpec, ...]:
        """The budget's buckets at this limiter's scale."""
        return tuple(b.scaled(self.scale) for b in self.budget(budget).buckets)

    def _prepare(
        self, budget: str | Budget, cost: float, max_wait_ms: int
    ) -> tuple[Budget, list[str], list[Any]]:
        b = self.budget(budget)
        if not (isinstance(cost, int | float) and math.isfinite(cost) and cost > 0):
            raise ValueError(f"rate limit {b.name}: cost must be a positive number, not {cost!r}")
        if max_wait_ms < 0:
            raise ValueError(f"rate limit {b.name}: max_wait_ms must be >= 0, not {max_wait_ms}")
        args: list[Any] = [self.clock_ms(), repr(float(cost)), int(max_wait_ms)]
        for spec in self.buckets(b):
            args += [repr(spec.capacity), repr(spec.refill_per_s)]
        return b, [self.keys.ratelimit(s.name) for s in b.buckets], args

    def _verdict(
        self, b: Budget, cost: float, max_wait_ms: int, res: Any
    ) -> tuple[int, list[str], RateLimited | None]:
        """(wait in ms before sending, buckets found corrupt, the refusal if refused)."""
        granted, wait, blocking, corrupt_ix = _num(res[0]), _num(res[1]), _num(res[2]), _text(res[3])
        specs = self.buckets(b)
        corrupt = [specs[int(i) - 1].name for i in corrupt_ix.split(",") if i]
        if granted:
            return wait, corrupt, None
        spec = specs[blocking - 1]
        allowed = min([max_wait_ms, *(s.refill_ms for s in specs)])
        return wait, corrupt, RateLimited(b.name, spec.name, cost, wait, allowed, spec.capacity)

    def _queue_levels(self, specs: tuple[BucketSpec, ...]) -> Any:
        pipe = self.redis.pipeline(transaction=False)
        for s in specs:
            pipe.hgetall(self.keys.ratelimit(s.name))
        return pipe

    def _levels(self, specs: tuple[BucketSpec, ...], raws: list[Any]) -> dict[str, float]:
        now = self.clock_ms()
        return {s.name: self._state(raw, s, now) for s, raw in zip(specs, raws, strict=True)}

    def _queue_report(self, corrupt: list[str]) -> Any:
        """The corrupt buckets' journal entries and count, on a pipeline to execute (the sync
        and asyncio limiters differ only in how they wait for it)."""
        pipe = self.redis.pipeline(transaction=False)
        for fields in self._corrupt_entries(corrupt):
            pipe.xadd(self.keys.journal_errors(), fields, maxlen=ERRORS_MAXLEN, approximate=True)
        pipe.hincrby(self.keys.stats(), "errors_ratelimit", len(corrupt))
        return pipe

    def _corrupt_entries(self, corrupt: list[str]) -> list[dict[str, Any]]:
        """journal:errors entries for buckets found corrupt (and reset to full by the script)."""
        at_ms = self.clock_ms()
        out = []
        for name in corrupt:
            error = f"rate-limit bucket {self.keys.ratelimit(name)} held an unreadable value; reset to full"
            log.error("%s", error)
            out.append({"source": "ratelimit", "error": error, "sample": "", "at_ms": at_ms})
        return out

    def _state(self, raw: dict[Any, Any], spec: BucketSpec, now_ms: int) -> float:
        """The tokens a bucket holds now, from its hash (missing or unreadable: full)."""
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            tokens, updated = float(fields["tokens"]), float(fields["updated_ms"])
        except (KeyError, ValueError):
            return spec.capacity
        if not (math.isfinite(tokens) and math.isfinite(updated)):
            return spec.capacity
        tokens += max(0.0, now_ms - updated) * spec.refill_per_s / 1000
        return max(-spec.capacity, min(spec.capacity, tokens))


class AsyncLimiter(_Base):
    """Budgets for asyncio code (redis.asyncio client): the feed."""

    default_sleep: Callable[[float], Awaitable[Any]] = staticmethod(asyncio.sleep)

    async def take(self, budget: str | Budget, cost: float = 1, max_wait_ms: int = 0) -> int:
        """Take `cost` from every bucket of `budget`, waiting up to `max_wait_ms` for them.
        Returns the ms waited; raises RateLimited (nothing taken: do not send) otherwise."""
        if not self.enabled:
            return 0
        b, keys, args = self._prepare(budget, cost, max_wait_ms)
        res = await self._script(keys=keys, args=args)
        wait, corrupt, refused = self._verdict(b, cost, max_wait_ms, res)
        await self._report(corrupt)
        if refused is not None:
            raise refused
        if wait > 0:
            await self._sleep(wait / 1000)
        return wait

    async def levels(self, budget: str | Budget) -> dict[str, float]:
        """Tokens each bucket of `budget` holds now (read only; negative: reserved ahead)."""
        specs = self.buckets(budget)
        pipe = self._queue_levels(specs)
        return self._levels(specs, await pipe.execute())

    async def _report(self, corrupt: list[str]) -> None:
        if not corrupt:
            return
        try:
            await self._queue_report(corrupt).execute()
        except Exception:
            log.exception("could not journal a corrupt rate-limit bucket")


class SyncLimiter(_Base):
    """Budgets for code that runs in threads (redis-py sync client): the venue client.
    Thread-safe: each call is one script run on the client's connection pool."""

    def take(self, budget: str | Budget, cost: float = 1, max_wait_ms: int = 0) -> int:
        """As AsyncLimiter.take, blocking the calling thread for the wait."""
        if not self.enabled:
            return 0
        b, keys, args = self._prepare(budget, cost, max_wait_ms)
        res = self._script(keys=keys, args=args)
        wait, corrupt, refused = self._verdict(b, cost, max_wait_ms, res)
        self._report(corrupt)
        if refused is not None:
            raise refused
        if wait > 0:
            self._sleep(wait / 1000)
        return wait

    def levels(self, budget: str | Budget) -> dict[str, float]:
        specs = self.buckets(budget)
        pipe = self._queue_levels(specs)
        return self._levels(specs, pipe.execute())

    def _report(self, corrupt: list[str]) -> None:
        if not corrupt:
            return
        try:
            self._queue_report(corrupt).execute()
        except Exception:
            log.exception("could not journal a corrupt rate-limit bucket")
