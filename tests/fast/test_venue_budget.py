"""The venues' request budgets (venues/budgets.py): their buckets, which budget each CLOB
request takes from, and their scale setting; and the venue client takes every request's cost
from the shared budgets in Redis before sending it: a request the budget refuses is never
sent, and says why."""

from __future__ import annotations

import fakeredis
import httpx
import msgspec
import pytest

from baton import settings
from baton.errors import SettingsError, VenueError
from baton.settings import SIM_PRIVATE_KEY, load
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from state.keys import Keys
from state.ratelimit import BucketSpec
from tests.simserver import Clock, ThreadServer
from venues.budgets import (
    BINANCE_REST_WEIGHT,
    BINANCE_WS_CONNECT,
    BUDGETS,
    CLOB_BOOKS,
    CLOB_MARKETS,
    CLOB_ORDER,
    CLOB_OTHER,
    CLOB_POST_ORDER,
    GAMMA_EVENTS,
    clob_budget,
    klines_weight,
    venue_throttle,
)
from venues.polymarket import ClobVenue


def test_a_window_bucket_never_lets_more_than_the_limit_through_in_any_window():
    for budget in BUDGETS.values():
        for b in budget.buckets:
            assert b.capacity > 0 and b.refill_per_s > 0
    spec = BucketSpec.window("x:1m", 6000, 60)
    assert (spec.capacity, spec.refill_per_s) == (3000, 50)
    assert spec.capacity + spec.refill_per_s * 60 == 6000
    assert BucketSpec.window("x", 300, 300, burst=30).refill_per_s == pytest.approx(0.9)


def test_the_known_budgets():
    names = {n: [b.name for b in budget.buckets] for n, budget in BUDGETS.items()}
    assert names[BINANCE_REST_WEIGHT] == ["binance:rest_weight:1m"]
    assert names[BINANCE_WS_CONNECT] == ["binance:ws_connect:5m"]
    assert names[CLOB_POST_ORDER] == ["clob:general:10s", "clob:post_order:10s", "clob:post_order:10m"]
    assert names[GAMMA_EVENTS] == ["gamma:general:10s", "gamma:events:10s"]
    rest = BUDGETS[BINANCE_REST_WEIGHT].buckets[0]
    assert rest.capacity + rest.refill_per_s * 60 == 6000  # REQUEST_WEIGHT per minute
    conn = BUDGETS[BINANCE_WS_CONNECT].buckets[0]
    assert conn.capacity + conn.refill_per_s * 300 == 300  # connections per 5 minutes
    sustained = BUDGETS[CLOB_POST_ORDER].buckets[2]
    assert sustained.capacity + sustained.refill_per_s * 600 == 36000
    assert klines_weight(1000) == 2


@pytest.mark.parametrize(
    ("method", "path", "budget"),
    [
        ("POST", "/order", CLOB_POST_ORDER),
        ("POST", "/books", CLOB_BOOKS),
        ("GET", "/data/order/0xabc", CLOB_ORDER),
        ("GET", "/markets/0xcond", CLOB_MARKETS),
        ("GET", "/auth/derive-api-key", "clob:auth"),
        ("GET", "/tick-size?token_id=1", "clob:tick_size"),
        ("DELETE", "/order", "clob:cancel_order"),
        ("GET", "/version", CLOB_OTHER),
        ("GET", "/neg-risk", CLOB_OTHER),
    ],
)
def test_clob_requests_map_to_their_budget(method, path, budget):
    assert clob_budget(method, path) == budget


def test_the_scale_setting():
    assert settings.load({}).rate_limit_scale == 1.0
    assert settings.load({"BATON_RATE_LIMIT_SCALE": "0.5"}).rate_limit_scale == 0.5
    assert settings.load({"BATON_RATE_LIMIT_SCALE": "0"}).rate_limit_scale == 0.0
    with pytest.raises(SettingsError, match="BATON_RATE_LIMIT_SCALE"):
        settings.load({"BATON_RATE_LIMIT_SCALE": "-1"})


@pytest.fixture
def sim():
    clock = Clock()
    with ThreadServer(create_app(ClobSim(PriceModel(4), seed=4, chain_id=137, clock_ms=clock))) as url:
        yield url, clock


def _venue(url: str, redis, scale: float) -> ClobVenue:
    s = msgspec.structs.replace(load({}), clob_url=url, gamma_url=url, rate_limit_scale=scale)
    return ClobVenue(url, url, SIM_PRIVATE_KEY, 137, throttle=venue_throttle(redis, s))


def test_requests_take_from_the_shared_buckets(sim):
    url, clock = sim
    redis = fakeredis.FakeRedis()
    venue = _venue(url, redis, 1.0)
    try:
        m = venue.discover(f"eth-updown-5m-{clock.ms // 1000 // 300 * 300}")
        assert m is not None
        assert venue.buy(m.up_token, 0.99, 5).status == "matched"
    finally:
        venue.close()
    buckets = {k.decode().removeprefix(Keys().ratelimit("")) for k in redis.keys(Keys().ratelimit("*"))}
    # Gamma discovery, the CLOB's market reads and the order each took from their budgets
    assert {"gamma:general:10s", "clob:general:10s", "clob:post_order:10s", "clob:post_order:10m"} <= buckets


def test_a_request_the_budget_refuses_is_never_sent(sim):
    url, clock = sim
    redis = fakeredis.FakeRedis()
    ok = ClobVenue(url, url, SIM_PRIVATE_KEY, 137)
    # a budget far too small for one request: refused at once, with the reason
    starved = _venue(url, redis, 1e-6)
    try:
        m = ok.discover(f"sol-updown-5m-{clock.ms // 1000 // 300 * 300}")
        signed = ok.sign_buy(m.up_token, 0.99, 5)
        with pytest.raises(VenueError) as info:
            starved.post(signed)
        assert info.value.kind == "rate_limited" and info.value.retryable
        # the first request it needed (the API key, then the order) was refused, not sent
        assert "not sent" in str(info.value) and "rate limit" in str(info.value)
        assert httpx.get(f"{url}/data/orders", timeout=5).json()["data"] == []
        with pytest.raises(VenueError, match="not sent"):
            starved.discover(m.slug)
    finally:
        ok.close()
        starved.close()
