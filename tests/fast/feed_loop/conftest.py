"""The feed loop's fixtures: the Binance stand-ins on local sockets, and fakeredis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from aiohttp import web
from websockets.asyncio.server import serve

from tests.fast.feed_loop.fakes import FakeBinance, FakeRest


@pytest.fixture
async def binance() -> AsyncIterator[FakeBinance]:
    fake = FakeBinance()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield fake


@pytest.fixture
async def rest() -> AsyncIterator[FakeRest]:
    fake = FakeRest()
    app = web.Application()
    app.router.add_get("/api/v3/klines", fake.klines)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server: fakeredis.FakeServer) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    r = fakeredis.FakeAsyncRedis(server=server)
    yield r
    await r.aclose()
