"""The dashboard's routes without a browser (api/dashboard.py): the login form and its
cookie, the page behind it, the snapshot, the event stream and the PnL series, over the real
app on fakeredis. tests/browser drives the page itself in a headless Chromium."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from api import dashboard
from api.apitoken import ApiToken
from api.app import make_app
from api.auth import SESSION_COOKIE
from api.context import ApiContext, ctx_of
from baton.settings import load
from control import commands as c
from control.ops import Ops
from tests.browser import seed

TOKEN = "dashboard-test-token-0123456789"
ACTOR = c.Actor(source="cli", who="test")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    s = load(
        {
            "BATON_HOME": str(tmp_path),
            "BATON_ASSETS": "btc,eth",
            "BATON_TIMEFRAMES": "5m,15m",
            "BATON_HALT_ACK_TIMEOUT_MS": "100",
            "BATON_DASHBOARD_STREAMS_MAX": "3",
        }
    )
    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    seed.seed(r)
    ar = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    ctx = ApiContext(s=s, ops=Ops(s, r, supervisor=lambda *a: []), token=ApiToken(TOKEN, "test"), redis=ar)
    cl = TestClient(TestServer(make_app(ctx)))
    await cl.start_server()
    try:
        yield cl
    finally:
        await cl.close()
        await ar.aclose()
        r.close()


def ctx(cl: TestClient) -> ApiContext:
    return ctx_of(cl.app)


ISSUED: list[str] = []


async def signed_in(cl: TestClient) -> dict[str, str]:
    """The Cookie header of a fresh session, from the login form."""
    resp = await cl.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303
    sid = resp.cookies[SESSION_COOKIE].value
    ISSUED.append(sid)
    return {"Cookie": f"{SESSION_COOKIE}={sid}"}


async def text(resp: ClientResponse) -> str:
    body = await resp.text()
    assert TOKEN not in body and not any(sid in body for sid in ISSUED)
    return body


# --- the page and its login ----------------------------------------------------------------------
async def test_the_page_is_served_only_with_the_session_cookie(client: TestClient):
    resp = await client.get("/")
    body = await text(resp)
    assert resp.status == 200 and 'name="token"' in body and 'id="halt"' not in body
    assert "token changed" not in body
    # A cookie that is no session (the old HMAC-style cookie): the form again, saying why.
    resp = await client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={'ab' * 32}"})
    body = await text(resp)
    assert 'name="token"' in body and 'id="halt"' not in body and "not a session cookie" in body
    resp = await client.get("/", headers=await signed_in(client))
    body = await text(resp)
    assert resp.status == 200 and resp.content_type == "text/html"
    assert 'id="halt"' in body and 'name="token"' not in body
    # Its inline script runs under a fresh nonce, and no other site may frame the Halt button.
    csp = resp.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<script nonce="{nonce}">' in body and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"
    # A bearer token opens it too (curl, a monitoring probe).
    resp = await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert 'id="halt"' in await text(resp)


async def test_login_with_the_right_token_sets_an_httponly_samesite_cookie(client: TestClient):
    resp = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    sid = resp.cookies[SESSION_COOKIE].value
    assert cookie.startswith(f"{SESSION_COOKIE}={sid};") and len(sid) == 43
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and attrs["samesite"] == "SameSite=Strict" and attrs["path"] == "Path=/"
    # Lives as long as the session (12 h by default); not Secure over plain HTTP.
    assert attrs["max-age"] == "Max-Age=43200" and "secure" not in attrs
    # The cookie is not the token.
    assert TOKEN not in cookie
    # ... and it opens the JSON routes the page uses.
    resp = await client.get("/dashboard/data", headers={"Cookie": cookie.split(";")[0]})
    assert resp.status == 200


async def test_login_with_a_wrong_token_is_refused_and_not_logged(client: TestClient, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-" + TOKEN
    resp = await client.post("/login", data={"token": wrong}, allow_redirects=False)
    body = await text(resp)
    assert resp.status == 401 and "Set-Cookie" not in resp.headers
    assert "Wrong token" in body and 'name="token"' in body and wrong not in body
    assert "sign-in refused" in caplog.text and wrong not in caplog.text and TOKEN not in caplog.text
    resp = await client.post("/login", data={}, allow_redirects=False)
    assert resp.status == 401


async def test_logout_drops_the_cookie(client: TestClient):
    resp = await client.post("/logout", headers=await signed_in(client), allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f'{SESSION_COOKIE}="";') and "Max-Age=0" in cookie


# --- data ----------------------------------------------------------------------------------------------
async def test_the_snapshot_shows_flags_lease_workers_ticks_and_slots(client: TestClient):
    resp = await client.get("/dashboard/data", headers=await signed_in(client))
    d = await resp.json()
    assert resp.status == 200 and abs(d["server_ms"] - time.time() * 1000) < 10_000
    assert d["lease"]["active"] and (d["lease"]["color"], d["lease"]["epoch"]) == ("blue", seed.EPOCH)
    assert d["control"]["halted"] is False and d["mode"] == "paper"
    assert {(w["color"], w["state"]) for w in d["workers"]} == {("blue", "active"), ("green", "ready")}
    ticks = [t["tick"] for t in d["ticks"]]
    assert len(ticks) == seed.TICKS and ticks == sorted(ticks, reverse=True)
    assert (d["ticks_done"], d["ticks_missed"]) == (1234, 1)
    slots = {sl["id"]: sl for sl in d["slots"]}
    assert sorted(slots) == sorted(seed.SLOTS)
    assert slots[seed.DISABLED]["enabled"] is False and "disabled" in slots[seed.DISABLED]["entries_blocked"]
    btc = slots["btc-15m"]
    assert btc["position"]["cost_usd"] == seed.OPEN_COST / 1e6 and btc["last_decision"]["side"] == "up"
    assert btc["window_end_s"] - btc["window_start_s"] == 900
    assert d["pnl"]["realized_usd"] == pytest.approx(seed.REALIZED_USD)
    assert d["pnl"]["cash_usd"] == pytest.approx(seed.CASH_USD) and d["pnl"]["ledger_entries"] == 8


async def test_pnl_is_the_realised_pnl_after_each_settlement_with_win_rate(client: TestClient):
    resp = await client.get("/pnl", headers=await signed_in(client))
    p = await resp.json()
    assert resp.status == 200
    deltas = [round(pt["delta_usd"], 6) for pt in p["points"]]
    assert deltas == [4.09, -5.0, 2.45]
    assert [round(pt["pnl_usd"], 6) for pt in p["points"]] == [4.09, -0.91, 1.54]
    assert p["points"][0]["ref"].startswith("settle:btc-15m:")
    assert p["start_ms"] < p["points"][0]["at_ms"]
    assert p["realized_usd"] == pytest.approx(seed.REALIZED_USD)
    assert p["cash_usd"] == pytest.approx(seed.CASH_USD)
    assert (p["deposits_usd"], p["ledger_entries"]) == (100.0, 8)
    assert (p["trades"], p["open"], p["settled"], p["wins"]) == (4, 1, 3, 2)
    assert p["win_rate"] == pytest.approx(2 / 3, abs=1e-4)


async def test_pnl_pages_back_with_its_cursor_and_refuses_a_bad_one(client: TestClient):
    headers = await signed_in(client)
    whole = await (await client.get("/pnl", headers=headers)).json()
    assert whole["next"] is None and whole["from_usd"] == 0
    first = await (await client.get("/pnl?limit=3", headers=headers)).json()
    assert first["next"] and first["realized_usd"] == whole["realized_usd"]
    older = await (await client.get(f"/pnl?limit=100&cursor={first['next']}", headers=headers)).json()
    assert older["next"] is None
    assert older["points"] + first["points"] == whole["points"]
    assert first["from_usd"] == older["points"][-1]["pnl_usd"]
    for bad in ("cursor=garbage", "cursor=1-0~x", "limit=0", "limit=100001"):
        resp = await client.get(f"/pnl?{bad}", headers=headers)
        assert resp.status == 400, bad
        assert "cursor" in (await resp.json())["error"] or "limit" in (await resp.json())["error"]


async def test_pnl_of_an_empty_ledger(client: TestClient):
    ctx(client).ops.r.flushall()
    p = await (await client.get("/pnl", headers=await signed_in(client))).json()
    assert (p["points"], p["start_ms"], p["win_rate"], p["trades"]) == ([], None, None, 0)


# --- the event stream ------------------------------------------------------------------------------------
async def next_event(resp: ClientResponse, timeout_s: float = 10) -> tuple[str, Any]:
    """The next SSE event (name, JSON data); comments (heartbeats) and `retry:` are skipped."""
    event = "message"
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await resp.content.readline()).decode()
            assert line, "the stream ended"
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                return event, json.loads(line[6:])


async def test_events_push_a_snapshot_at_once_then_after_control_changes_and_ticks(client: TestClient):
    resp = await client.get("/events", headers=await signed_in(client))
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    name, first = await next_event(resp)
    assert name == "message" and first["control"]["halted"] is False and len(first["slots"]) == 4
    # A halt from another door (the CLI here) is pushed through the control channel.
    t0 = time.monotonic()
    await asyncio.to_thread(ctx(client).ops.halt, ACTOR, c.HaltBody(reason="test"))
    _, after = await next_event(resp)
    assert after["control"]["halted"] is True and after["control"]["halt_reason"] == "test"
    assert time.monotonic() - t0 < 5
    # A journaled tick is pushed too.
    newest = first["ticks"][0]["tick"]
    tick = {"tick": newest + 1, "color": "blue", "duration_ms": 9}
    await ctx(client).redis.xadd(seed.K.journal_ticks(), tick)
    _, ticked = await next_event(resp)
    assert ticked["ticks"][0]["tick"] == newest + 1 and ticked["ticks"][0]["duration_ms"] == 9
    resp.close()


async def test_events_say_when_redis_cannot_be_read(client: TestClient):
    resp = await client.get("/events", headers=await signed_in(client))
    await next_event(resp)
    ctx(client).ops.r.connection_pool.connection_kwargs["server"].connected = False
    name, data = await next_event(resp)
    assert name == "problem" and "Redis" in data["error"]
    resp.close()


async def test_a_stopping_app_ends_its_event_streams_at_once(client: TestClient):
    resp = await client.get("/events", headers=await signed_in(client))
    await next_event(resp)
    # What the app's on_shutdown runs (dashboard.setup): without it a stop would wait for
    # aiohttp's shutdown timeout while a dashboard is open.
    await dashboard.close_streams(client.app)
    async with asyncio.timeout(2):
        rest = await resp.content.read()  # returns at the end of the stream only
    assert rest.strip() == b""  # the blank line closing the first event, nothing more


async def test_events_beyond_the_stream_limit_are_refused_with_503_naming_the_setting(client: TestClient):
    limit = ctx(client).s.dashboard_streams_max
    headers = await signed_in(client)
    open_ = []
    for _ in range(limit):
        resp = await client.get("/events", headers=headers)
        await next_event(resp)
        open_.append(resp)
    refused = await client.get("/events", headers=headers)
    assert refused.status == 503
    assert "BATON_DASHBOARD_STREAMS_MAX" in (await refused.json())["error"]
    # A stream that ends gives its place back.
    open_.pop().close()
    async with asyncio.timeout(10):
        while True:
            resp = await client.get("/events", headers=headers)
            if resp.status == 200:
                break
            resp.close()
            await asyncio.sleep(0.05)
    await next_event(resp)
    for r in [*open_, resp]:
        r.close()


async def test_streams_that_wake_together_share_one_snapshot_read(client: TestClient, monkeypatch):
    from api import dashboard_stream

    reads = []
    real = dashboard_stream.snapshot

    async def counted(c):
        reads.append(1)
        return await real(c)

    monkeypatch.setattr(dashboard_stream, "snapshot", counted)
    got = await asyncio.gather(*(dashboard_stream.shared_snapshot(ctx(client)) for _ in range(5)))
    assert len(reads) == 1 and all(g is got[0] for g in got)
    # Once it is done, the next caller reads anew: nothing older than its wake-up is served.
    again = await dashboard_stream.shared_snapshot(ctx(client))
    assert len(reads) == 2 and again is not got[0]
