"""The venue client takes every request's cost from the shared budgets in Redis before
sending it; a request the budget refuses is never sent, and says why."""

from __future__ import annotations

import fakeredis
import httpx
import msgspec
import pytest

from baton.errors import VenueError
from baton.settings import SIM_PRIVATE_KEY, load
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from state.keys import Keys
from tests.simserver import Clock, ThreadServer
from venues.budgets import venue_throttle
from venues.polymarket import ClobVenue


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
