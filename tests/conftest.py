"""Shared fixtures: a fakeredis-backed Store for the fast suite. And the order and grouping of
the whole suite for pytest-xdist (tests/scheduling.py)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from state.keys import Keys
from state.store import Store
from tests import scheduling


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    scheduling.arrange(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` (`make test`): the units and order of tests/scheduling.py."""
    if config.getvalue("dist") == "loadgroup":
        return scheduling.SuiteScheduling(config, log)
    return None


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
