"""Fixtures of the fast suite beyond tests/conftest.py's fakeredis `store`: the tick rig and the
control API on a test server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.sandbox import STALE_MAKER
from kernel.clock import VirtualClock
from sim.book import BookParams
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.fast.api_rig import Api, running_api
from tests.fast.rig import ASSETS, SEED, Rig
from tests.simserver import ThreadServer


@pytest.fixture
async def rig(store, fake_server, request):
    # A test whose scenario needs snipe to find an edge in nearly every window asks for the
    # maker of before #26, 3 s behind and 2 cents wide (`@pytest.mark.stale_maker`, as test
    # stacks do with deploy/sandbox.py STALE_MAKER); the rest trade against the honest one.
    stale = request.node.get_closest_marker("stale_maker") is not None
    clock = VirtualClock((1_795_000_000 // 15) * 15 * 1000 + 500)
    model = PriceModel(SEED)
    sim = ClobSim(
        model,
        seed=SEED,
        chain_id=137,
        assets=tuple(ASSETS.split(",")),
        timeframes=("15s",),
        clock_ms=clock.now_ms,
        params=BookParams.from_env(STALE_MAKER) if stale else None,
    )
    with ThreadServer(create_app(sim)) as url:
        r = Rig(store, url, clock, model, fake_server)
        await r.start()
        yield r
        r.venue.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as a:
        yield a
