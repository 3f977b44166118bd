"""Fixtures of the browser tests: a headless Chromium (skipped when none is installed:
`make test-browser` installs Debian's `chromium`), a real redis-server on a free port, and
the real api app on 127.0.0.1 served from the test's own event loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from aiohttp import web

from api import dashboard
from api.apitoken import ApiToken
from api.app import make_app
from api.context import ApiContext
from baton.settings import Settings, load
from control.ops import Ops
from deploy.ports import free_port
from state import connection
from tests.browser import seed
from tests.browser.cdp import Chromium, find_chromium

TOKEN = "browser-test-token-0123456789abcdef"


def unavailable(reason: str) -> NoReturn:
    """Skip, so that `make test` passes on a machine without a browser; but `make test-browser`
    (BATON_REQUIRE_BROWSER=1) fails instead: it installed one, and a skip would hide that it
    cannot be found or started."""
    if os.environ.get("BATON_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def chromium_exe() -> str:
    exe = find_chromium()
    if exe is None:
        unavailable("no Chromium installed: `make test-browser` installs it (apt-get install chromium)")
    return exe


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("no redis-server installed: `make bootstrap` installs it")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = connection.client(load({"BATON_HOME": str(tmp_path), "BATON_REDIS_URL": url}))
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Served:
    url: str
    s: Settings
    r: redis.Redis  # a sync client of the same Redis, for seeding and assertions
    token: ApiToken
    ops: Ops  # the app's operations: another door (the CLI's) onto the same system


@pytest.fixture
async def served(tmp_path: Path, redis_url: str) -> AsyncIterator[Served]:
    s = load(
        {
            "BATON_HOME": str(tmp_path),
            "BATON_REDIS_URL": redis_url,
            "BATON_ASSETS": "btc,eth",
            "BATON_TIMEFRAMES": "5m,15m",
            # The seeded lease names a worker that does not exist: do not wait for its answer.
            "BATON_HALT_ACK_TIMEOUT_MS": "200",
        }
    )
    r = connection.client(s, timeout_s=10)
    seed.seed(r)
    ar = connection.async_client(s, timeout_s=connection.BLOCKING)
    token = ApiToken(TOKEN, "test")
    ops = Ops(s, r, supervisor=lambda *a: [])
    ctx = ApiContext(s=s, ops=ops, token=token, redis=ar)
    app = make_app(ctx)
    dashboard.setup(app, ctx)  # (a second on_shutdown hook is harmless once make_app calls it)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Served(url=f"http://127.0.0.1:{runner.addresses[0][1]}", s=s, r=r, token=token, ops=ops)
    finally:
        await runner.cleanup()
        await ar.aclose()
        r.close()


@pytest.fixture
async def browser(chromium_exe: str, tmp_path: Path) -> AsyncIterator[Chromium]:
    async with Chromium(chromium_exe, tmp_path / "chromium") as b:
        yield b
