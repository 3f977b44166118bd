"""Shared fixtures: a fakeredis-backed Store for the fast suite."""

from __future__ import annotations

import fakeredis
import pytest

from state.keys import Keys
from state.store import Store


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def store(fake_server: fakeredis.FakeServer):
    r = fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)
    s = Store(r, Keys("baton:"))
    await s.scripts.load()
    yield s
    await r.aclose()
