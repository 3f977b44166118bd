"""The CLOB contract's fixtures: one sim per test module on a real socket, a client of it,
and the faults injected by a test cleared after it."""

from __future__ import annotations

import httpx
import pytest

from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.fast.clob.contract import CHAIN_ID, PAGE_LIMIT, SEED, new_client
from tests.simserver import Clock, ThreadServer


@pytest.fixture(scope="module")
def env():
    clock = Clock()
    s = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID, clock_ms=clock, page_limit=PAGE_LIMIT)
    with ThreadServer(create_app(s)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield url, http, s, clock


@pytest.fixture(scope="module")
def client(env):
    return new_client(env[0])


@pytest.fixture(autouse=True)
def no_faults(env):
    yield
    env[1].delete("/_sim/faults")
