"""The control API on aiohttp's test server over fakeredis, with a stand-in for supervisord's
XML-RPC, and a client of it that checks every answer for the token. The `api` fixture is in
tests/fast/conftest.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from api.apitoken import ApiToken, token_id
from api.app import AccessLogger, make_app
from api.context import ApiContext
from api.sessions import SESSION_COOKIE
from baton.settings import load
from control.ops import Ops
from state.keys import Keys
from state.structs import SLOT, Slot

TOKEN = "test-token-0123456789abcdef-do-not-leak"
TOKEN_ID = token_id(TOKEN)
K = Keys("baton:")


class FakeSupervisor:
    """A test double for supervisord's XML-RPC (getAllProcessInfo, startProcess, stopProcess);
    the end-to-end suite runs the real one."""

    def __init__(self) -> None:
        self.states = {"feed": "RUNNING", "worker-blue": "STOPPED", "worker-green": "STOPPED"}
        self.calls: list[tuple[Any, ...]] = []
        self.down = False

    def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append((method, *args))
        if self.down:
            raise ConnectionRefusedError(2, "No such file or directory")
        if method == "getAllProcessInfo":
            return [{"name": n, "statename": s} for n, s in self.states.items()]
        if method == "startProcess":
            self.states[args[0]] = "RUNNING"
            return True
        if method == "stopProcess":
            self.states[args[0]] = "STOPPED"
            return True
        raise AssertionError(f"unexpected supervisor call {method}")


class Api:
    """A client of the test server. Every answer is checked for the token and the session
    cookie: neither may ever be in a body or a header."""

    def __init__(
        self, client: TestClient, server: fakeredis.FakeServer, sup: FakeSupervisor, ctx: ApiContext
    ):
        self.client, self.server, self.sup, self.ctx = client, server, sup, ctx
        self.r = ctx.ops.r
        # Session ids issued to this client: secrets like the token.
        self.session_ids: list[str] = []

    async def sign_in(self, token: str = TOKEN, headers: dict[str, str] | None = None) -> dict[str, str]:
        """Sign in through the login form; returns the Cookie header of the new session."""
        resp = await self.client.post("/login", data={"token": token}, headers=headers, allow_redirects=False)
        assert resp.status == 303, (resp.status, await resp.text())
        sid = resp.cookies[SESSION_COOKIE].value
        self.session_ids.append(sid)
        return {"Cookie": f"{SESSION_COOKIE}={sid}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        resp = await self.client.request(method, path, data=data, headers=hdrs)
        raw = await resp.read()
        for secret in (TOKEN, *self.session_ids):
            assert secret not in raw.decode(errors="replace"), f"{method} {path} answered a secret"
            assert secret not in str(resp.headers), f"{method} {path} answered a secret in a header"
        parsed = json.loads(raw) if resp.content_type == "application/json" else raw
        return resp.status, parsed, resp.headers

    def audit(self) -> list[dict[str, str]]:
        return [f for _id, f in self.r.xrevrange(K.audit())]

    def control(self) -> dict[str, str]:
        return self.r.hgetall(K.control())


def settings(home: Path, **env: str) -> Any:
    return load(
        {
            "BATON_HOME": str(home),
            "BATON_ASSETS": "btc,eth",
            "BATON_TIMEFRAMES": "15m",
            "BATON_HALT_ACK_TIMEOUT_MS": "100",
            **env,
        }
    )


@contextlib.asynccontextmanager
async def running_api(home: Path, **env: str) -> AsyncIterator[Api]:
    """The app on a fresh fakeredis with slots btc-15m and eth-15m, and a stopped worker."""
    s = settings(home, **env)
    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    for sid in s.slot_ids():
        asset, tf = sid.split("-")
        r.hset(K.slots(), sid, SLOT.encode(Slot(id=sid, asset=asset, timeframe=tf)))
    ar = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    sup = FakeSupervisor()
    ctx = ApiContext(s=s, ops=Ops(s, r, supervisor=sup), token=ApiToken(TOKEN, "test"), redis=ar)
    test_server = TestServer(make_app(ctx))
    await test_server.start_server(access_log_class=AccessLogger)
    # No cookie jar: every call says which session (if any) it brings.
    client = TestClient(test_server, cookie_jar=DummyCookieJar())
    await client.start_server()
    try:
        yield Api(client, server, sup, ctx)
    finally:
        await client.close()
        await ar.aclose()
        r.close()


def example_path(path: str) -> str:
    return path.replace("{id}", "btc-15m")
