"""Venue request budgets: token buckets in Redis (state/lua/ratelimit.lua, state/ratelimit.py)
shared by every process: capacity, refill, all-or-nothing takes, queueing, corrupt buckets,
the sync limiter. The venues' budgets are tested in test_venue_budget.py, the feed's use of
them in tests/fast/feed_loop/test_budgets.py."""

from __future__ import annotations

import asyncio
import math
import time

import fakeredis
import pytest

from baton.errors import RateLimited
from kernel.clock import wall_ms
from state.keys import Keys
from state.ratelimit import AsyncLimiter, BucketSpec, Budget, SyncLimiter

KEYS = Keys("baton:")
T0 = 1_800_000_000_000

ONE = Budget("test:one", (BucketSpec("test:a", 3, 1),))  # 3 tokens, 1 per second
BOTH = Budget("test:both", (BucketSpec("test:burst", 5, 1), BucketSpec("test:sustained", 2, 0.1)))
BUDGETS_T = {b.name: b for b in (ONE, BOTH)}


class Clock:
    """Injected time; its sleep advances it, so a wait is observed without waiting."""

    def __init__(self) -> None:
        self.ms = T0
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.ms

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.ms += math.ceil(s * 1000)

    def sleep_sync(self, s: float) -> None:
        self.slept.append(s)
        self.ms += math.ceil(s * 1000)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server):
    r = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    yield r
    await r.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter(redis, clock: Clock, **kw) -> AsyncLimiter:
    kw.setdefault("budgets", BUDGETS_T)
    return AsyncLimiter(redis, KEYS, clock_ms=clock, sleep=clock.sleep, **kw)


async def tokens(redis, bucket: str) -> float:
    return float(await redis.hget(KEYS.ratelimit(bucket), "tokens"))


# --- the bucket ----------------------------------------------------------------------------


async def test_capacity_then_a_refusal_that_names_budget_cost_and_wait(redis, clock):
    lim = limiter(redis, clock)
    for _ in range(3):
        assert await lim.take("test:one") == 0
    with pytest.raises(RateLimited) as e:
        await lim.take("test:one", cost=1, max_wait_ms=200)
    err = e.value
    assert (err.budget, err.bucket, err.cost, err.wait_ms, err.allowed_ms) == (
        "test:one",
        "test:a",
        1,
        1000,
        200,
    )
    assert str(err) == (
        "rate limit test:one: refused a request of cost 1: bucket test:a needs a wait of 1000 ms, "
        "more than the 200 ms allowed; not sent"
    )
    # A refusal takes nothing and sleeps nothing.
    assert await tokens(redis, "test:a") == 0.0 and clock.slept == []


async def test_the_bucket_is_a_readable_hash_that_expires_when_full_again(redis, clock):
    lim = limiter(redis, clock)
    await lim.take("test:one", cost=2)
    h = await redis.hgetall(KEYS.ratelimit("test:a"))
    assert h == {"tokens": "1.0000", "updated_ms": str(T0), "capacity": "3.0000", "refill_per_s": "1.0000"}
    # Full again after 2 s; a second of slack.
    assert 2900 <= await redis.pttl(KEYS.ratelimit("test:a")) <= 3000


async def test_tokens_refill_with_time(redis, clock):
    lim = limiter(redis, clock)
    await lim.take("test:one", cost=3)
    clock.ms += 1500
    assert await lim.levels("test:one") == {"test:a": 1.5}
    assert await lim.take("test:one") == 0
    with pytest.raises(RateLimited):
        await lim.take("test:one")
    clock.ms += 10_000  # never above the capacity
    assert await lim.levels("test:one") == {"test:a": 3.0}
    await lim.take("test:one", cost=3)


async def test_a_missing_bucket_is_full(redis, clock):
    lim = limiter(redis, clock)
    await lim.take("test:one", cost=3)
    await redis.delete(KEYS.ratelimit("test:a"))  # as the TTL would
    assert await lim.take("test:one", cost=3) == 0


async def test_a_cost_above_the_capacity_is_refused_as_never_grantable(redis, clock):
    lim = limiter(redis, clock)
    with pytest.raises(RateLimited, match="exceeds bucket test:a's capacity of 3") as e:
        await lim.take("test:one", cost=4, max_wait_ms=10**9)
    assert e.value.wait_ms == -1
    assert not await redis.exists(KEYS.ratelimit("test:a"))


async def test_several_buckets_are_taken_all_or_nothing(redis, clock):
    lim = limiter(redis, clock)
    assert await lim.take("test:both", cost=2) == 0
    assert await tokens(redis, "test:burst") == 3.0 and await tokens(redis, "test:sustained") == 0.0
    # The burst bucket could pay, the sustained one cannot: neither pays.
    with pytest.raises(RateLimited) as e:
        await lim.take("test:both", cost=1)
    assert e.value.bucket == "test:sustained" and e.value.wait_ms == 10_000
    assert await tokens(redis, "test:burst") == 3.0 and await tokens(redis, "test:sustained") == 0.0


async def test_a_wait_within_max_wait_is_slept_then_granted_and_later_callers_queue(redis, clock):
    lim = limiter(redis, clock)
    await lim.take("test:one", cost=3)
    # Both reserve at once (the buckets go into debt), the second behind the first.
    assert await lim.take("test:one", cost=1, max_wait_ms=5000) == 1000
    clock.ms = T0  # the second caller arrives at the same instant
    assert await lim.take("test:one", cost=1, max_wait_ms=5000) == 2000
    assert clock.slept == [1.0, 2.0]
    assert await tokens(redis, "test:a") == -2.0
    # A third would need 3 s: refused under a 2.5 s limit, and nothing is taken.
    clock.ms = T0
    with pytest.raises(RateLimited, match="3000 ms"):
        await lim.take("test:one", cost=1, max_wait_ms=2500)
    assert await tokens(redis, "test:a") == -2.0


async def test_no_reservation_waits_longer_than_one_full_refill(redis, clock):
    lim = limiter(redis, clock)
    await lim.take("test:one", cost=3)
    await lim.take("test:one", cost=3, max_wait_ms=60_000)  # 3 s: one refill
    clock.ms = T0
    with pytest.raises(RateLimited) as e:
        await lim.take("test:one", cost=1, max_wait_ms=60_000)
    assert (e.value.wait_ms, e.value.allowed_ms) == (4000, 3000)


async def test_the_default_sleep_really_waits(redis):
    lim = AsyncLimiter(
        redis, KEYS, budgets={"t": Budget("t", (BucketSpec("test:fast", 1, 20),))}, clock_ms=wall_ms
    )
    await lim.take("t")
    started = time.monotonic()
    waited = await lim.take("t", max_wait_ms=1000)
    assert 1 <= waited <= 50 and time.monotonic() - started >= waited / 1000 * 0.9


async def test_two_workers_share_one_budget(server, clock):
    blue_r = fakeredis.FakeAsyncRedis(server=server)
    green_r = fakeredis.FakeAsyncRedis(server=server)
    try:
        blue, green = limiter(blue_r, clock), limiter(green_r, clock)
        await blue.take("test:one", cost=2)
        await green.take("test:one", cost=1)
        for lim in (blue, green):  # a restarted or new worker finds the budget spent
            with pytest.raises(RateLimited):
                await lim.take("test:one")
        # The threads of a venue client share it too (sync client on the same server).
        sync = SyncLimiter(fakeredis.FakeRedis(server=server), KEYS, budgets=BUDGETS_T, clock_ms=clock)
        with pytest.raises(RateLimited):
            sync.take("test:one")
        clock.ms += 1000
        assert sync.take("test:one") == 0
        with pytest.raises(RateLimited):
            await blue.take("test:one")
    finally:
        await blue_r.aclose()
        await green_r.aclose()


async def test_two_workers_queue_in_order_for_the_same_tokens(server, clock):
    rs = [fakeredis.FakeAsyncRedis(server=server) for _ in range(2)]
    try:
        a, b = (limiter(r, clock) for r in rs)
        await a.take("test:one", cost=3)
        assert await a.take("test:one", max_wait_ms=10_000) == 1000
        clock.ms -= 1000
        assert await b.take("test:one", max_wait_ms=10_000) == 2000
    finally:
        for r in rs:
            await r.aclose()


@pytest.mark.parametrize(
    "garbage",
    [
        {"tokens": "lots", "updated_ms": str(T0)},
        {"tokens": "1", "updated_ms": "yesterday"},
        {"tokens": "nan", "updated_ms": str(T0)},
        {"tokens": "inf", "updated_ms": str(T0)},
        {"tokens": "1", "updated_ms": str(T0 + 3_600_000)},  # an hour ahead: would never refill
        {"tokens": "1"},
        {"something": "else"},
    ],
)
async def test_a_corrupt_bucket_is_reset_to_full_and_reported(redis, clock, garbage):
    lim = limiter(redis, clock)
    await redis.hset(KEYS.ratelimit("test:a"), mapping=garbage)
    assert await lim.take("test:one", cost=3) == 0  # full
    assert await tokens(redis, "test:a") == 0.0
    errors = await redis.xrange(KEYS.journal_errors())
    assert len(errors) == 1
    fields = errors[0][1]
    assert fields["source"] == "ratelimit"
    assert (
        fields["error"] == "rate-limit bucket baton:ratelimit:test:a held an unreadable value; reset to full"
    )
    assert await redis.hget(KEYS.stats(), "errors_ratelimit") == "1"
    # Reported once: the bucket is sound again.
    clock.ms += 1000
    await lim.take("test:one")
    assert len(await redis.xrange(KEYS.journal_errors())) == 1


async def test_a_bucket_of_the_wrong_type_is_reset_and_reported(redis, clock):
    lim = limiter(redis, clock)
    await redis.set(KEYS.ratelimit("test:sustained"), "not a hash")
    with pytest.raises(RateLimited):  # reset to full (2), then refused: nothing taken
        await lim.take("test:both", cost=3)
    assert await redis.type(KEYS.ratelimit("test:sustained")) == "hash"
    assert await tokens(redis, "test:sustained") == 2.0
    assert not await redis.exists(KEYS.ratelimit("test:burst"))
    assert len(await redis.xrange(KEYS.journal_errors())) == 1


async def test_the_sync_limiter_waits_and_refuses_like_the_async_one(server, clock):
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    lim = SyncLimiter(r, "baton:", budgets=BUDGETS_T, clock_ms=clock, sleep=clock.sleep_sync)
    assert [lim.take("test:one") for _ in range(3)] == [0, 0, 0]
    assert lim.take("test:one", max_wait_ms=1000) == 1000 and clock.slept == [1.0]
    with pytest.raises(RateLimited, match="rate limit test:one: refused a request of cost 2"):
        lim.take("test:one", cost=2)
    assert lim.levels("test:one") == {"test:a": 0.0}
    r.set(KEYS.ratelimit("test:a"), "garbage")
    assert lim.take("test:one", cost=3) == 0
    assert r.hget(KEYS.stats(), "errors_ratelimit") == "1"


async def test_the_sync_limiter_is_safe_across_threads(server):
    r = fakeredis.FakeRedis(server=server)
    budget = Budget("t", (BucketSpec("test:threads", 20, 0.001),))
    lim = SyncLimiter(r, KEYS, budgets={"t": budget}, clock_ms=wall_ms)

    def take() -> bool:
        try:
            lim.take("t")
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(asyncio.to_thread(take) for _ in range(50)))
    assert sum(results) == 20


async def test_scale_multiplies_the_budgets_and_zero_turns_them_off(redis, clock):
    half = limiter(redis, clock, scale=0.5)
    assert half.buckets("test:one") == (BucketSpec("test:a", 1.5, 0.5),)
    await half.take("test:one")
    with pytest.raises(RateLimited, match="needs a wait of 1000 ms"):
        await half.take("test:one")
    off = limiter(redis, clock, scale=0)
    assert not off.enabled
    for _ in range(100):
        assert await off.take("test:one", cost=99) == 0
    assert await tokens(redis, "test:a") == 0.5  # untouched


async def test_bad_arguments_fail_loudly(redis, clock):
    lim = limiter(redis, clock)
    with pytest.raises(ValueError, match="unknown rate-limit budget 'nope'"):
        await lim.take("nope")
    with pytest.raises(ValueError, match="cost must be a positive number"):
        await lim.take("test:one", cost=0)
    with pytest.raises(ValueError, match="scale"):
        AsyncLimiter(redis, KEYS, scale=-1, clock_ms=wall_ms)
    with pytest.raises(ValueError, match="capacity must be a positive number"):
        BucketSpec("x", 0, 1)
    with pytest.raises(ValueError, match="bad bucket name"):
        BucketSpec("Has Spaces", 1, 1)


async def test_a_budget_object_can_be_passed_directly(redis, clock):
    lim = limiter(redis, clock, budgets={})
    assert await lim.take(ONE, cost=3) == 0
    with pytest.raises(RateLimited):
        await lim.take(ONE)
