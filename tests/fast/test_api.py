"""The control API over HTTP (aiohttp's test server) on fakeredis, with a stand-in for
supervisord's XML-RPC: every endpoint, its authentication, errors, rate limit and audit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.apitoken import ApiToken, token_id
from api.app import AccessLogger, make_app, served_routes
from api.auth import BURST, SESSION_COOKIE, MutationLimiter, session_cookie
from api.context import ApiContext
from baton.errors import TooManyRequests
from baton.settings import REPO_ROOT, load
from control import commands as c
from control.ops import Ops
from deploy.ports import free_port
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
        for secret in (TOKEN, session_cookie(self.ctx.token)):
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
    client = TestClient(test_server)
    await client.start_server()
    try:
        yield Api(client, server, sup, ctx)
    finally:
        await client.close()
        await ar.aclose()
        r.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as a:
        yield a


def example_path(path: str) -> str:
    return path.replace("{id}", "btc-15m")


# --- authentication -------------------------------------------------------------------------------
async def test_health_is_public_and_says_whether_redis_answers(api: Api):
    status, body, _ = await api.call("GET", "/health", token=None)
    assert (status, body) == (200, {"ok": True, "redis": True})
    api.server.connected = False
    status, body, _ = await api.call("GET", "/health", token=None)
    assert (status, body) == (200, {"ok": True, "redis": False})


async def test_every_route_behind_the_token_answers_401_without_it_or_with_a_wrong_one(api: Api):
    guarded = [r for r in served_routes(api.client.app) if not r.public]
    assert {("POST", "/halt"), ("PATCH", "/slots/{id}"), ("GET", "/openapi.json")} <= {
        (r.method, r.path) for r in guarded
    }
    for r in guarded:
        path = example_path(r.path)
        status, body, headers = await api.call(r.method, path, token=None)
        assert status == 401 and "no bearer token" in body["error"], (r.path, body)
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, headers = await api.call(r.method, path, token="not-the-token-at-all")
        assert (status, body["error"]) == (401, "wrong token"), r.path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, _ = await api.call(r.method, path, token=None, headers={"Authorization": "Basic eDp5"})
        assert status == 401 and "not a bearer token" in body["error"]
    # None of those calls did anything.
    assert api.control().get("halted", "0") == "0" and api.audit() == []
    assert api.sup.calls == []


async def test_the_session_cookie_opens_reads_and_same_origin_writes(api: Api):
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie(api.ctx.token)}"}
    status, body, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 200 and body["halted"] is False
    # curl with the cookie (no Origin) and the dashboard's own page (same origin) may write.
    status, body, _ = await api.call("POST", "/pause", {}, token=None, headers=cookie)
    assert status == 200 and body["changed"] is True
    own = f"http://{api.client.host}:{api.client.port}"
    status, _, _ = await api.call("POST", "/resume", {}, token=None, headers={**cookie, "Origin": own})
    assert status == 200
    assert api.audit()[0]["token_id"] == TOKEN_ID


async def test_a_cookie_sent_by_another_sites_page_cannot_write(api: Api):
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie(api.ctx.token)}"}
    status, body, _ = await api.call(
        "POST", "/halt", {}, token=None, headers={**cookie, "Origin": "https://evil.example"}
    )
    assert status == 403 and "Origin https://evil.example" in body["error"]
    status, body, _ = await api.call(
        "POST", "/slots/btc-15m/disable", token=None, headers={**cookie, "Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403 and "cross-site" in body["error"]
    assert api.control().get("halted", "0") == "0"
    assert api.audit() == []
    # Reads with the cookie stay open to the dashboard whatever the Origin (nothing changes).
    status, _, _ = await api.call(
        "GET", "/slots", token=None, headers={**cookie, "Origin": "https://x.example"}
    )
    assert status == 200


async def test_a_wrong_cookie_or_a_wrong_bearer_beside_a_good_cookie_is_401(api: Api):
    status, body, _ = await api.call(
        "GET", "/control", token=None, headers={"Cookie": f"{SESSION_COOKIE}=abc"}
    )
    assert status == 401 and "wrong session cookie" in body["error"]
    good = {"Cookie": f"{SESSION_COOKIE}={session_cookie(api.ctx.token)}"}
    status, body, _ = await api.call("GET", "/control", token="wrong-token-wrong-token", headers=good)
    assert (status, body["error"]) == (401, "wrong token")


def test_the_session_cookie_proves_the_token_without_being_it():
    a, b = ApiToken(TOKEN, "t"), ApiToken(TOKEN + "x", "t")
    assert session_cookie(a) == session_cookie(ApiToken(TOKEN, "u"))
    assert session_cookie(a) != session_cookie(b)
    assert TOKEN not in session_cookie(a) and len(session_cookie(a)) == 64


# --- reading --------------------------------------------------------------------------------------
async def test_read_endpoints_answer_their_declared_types(api: Api):
    status, body, _ = await api.call("GET", "/status")
    assert status == 200 and body["halted"] is False and {s["id"] for s in body["slots"]} >= {"btc-15m"}
    status, body, _ = await api.call("GET", "/control")
    assert status == 200 and msgspec.convert(body, c.ControlView).seq == 0
    status, body, _ = await api.call("GET", "/slots")
    slots = msgspec.convert(body, c.SlotsResult).slots
    assert [s.id for s in slots] == ["btc-15m", "eth-15m"] and all(s.configured for s in slots)
    status, body, _ = await api.call("GET", "/slots/eth-15m")
    view = msgspec.convert(body, c.SlotView)
    assert (view.asset, view.timeframe, view.enabled, view.position) == ("eth", "15m", True, None)


async def test_unknown_slots_are_404_and_the_refusals_are_audited(api: Api):
    status, body, _ = await api.call("GET", "/slots/doge-5m")
    assert status == 404 and "no slot 'doge-5m'" in body["error"] and "btc-15m" in body["error"]
    for method, path, payload in (
        ("POST", "/slots/doge-5m/enable", None),
        ("POST", "/slots/doge-5m/disable", None),
        ("PATCH", "/slots/doge-5m", {"stake_usd": 2}),
    ):
        status, body, _ = await api.call(method, path, payload)
        assert (status, body["status"]) == (404, 404), path
    assert [(e["action"], e["target"], e["result"], e["status"]) for e in api.audit()] == [
        ("patch_slot", "doge-5m", "refused", "404"),
        ("disable_slot", "doge-5m", "refused", "404"),
        ("enable_slot", "doge-5m", "refused", "404"),
    ]


async def test_audit_tail_returns_the_newest_entries_and_checks_count(api: Api):
    for _ in range(3):
        await api.call("POST", "/pause", {"reason": "look"})
    status, body, _ = await api.call("GET", "/audit?count=2")
    entries = msgspec.convert(body, c.AuditResult).entries
    assert status == 200 and len(entries) == 2 and entries[0].id > entries[1].id
    status, body, _ = await api.call("GET", "/audit")
    assert len(body["entries"]) == 3
    for bad in ("0", "1001", "many"):
        status, body, _ = await api.call("GET", f"/audit?count={bad}")
        assert status == 400 and "count" in body["error"], bad


# --- flags ----------------------------------------------------------------------------------------
async def test_halt_sets_the_flag_is_audited_and_with_no_worker_is_not_acknowledged(api: Api):
    status, body, _ = await api.call("POST", "/halt", {"reason": "venue looks wrong"})
    res = msgspec.convert(body, c.HaltResult)
    assert status == 200 and res.halted and not res.acknowledged and res.ack_ms is None
    assert "no active worker" in res.cancel
    assert (res.control.halted, res.control.halt_reason) == (True, "venue looks wrong")
    assert res.control.halted_by == f"api:token:{TOKEN_ID}"
    entry = api.audit()[0]
    assert (entry["action"], entry["result"], entry["status"], entry["source"]) == (
        "halt",
        "ok",
        "200",
        "api",
    )
    assert (entry["token_id"], entry["who"]) == (TOKEN_ID, f"token:{TOKEN_ID}")
    assert json.loads(entry["args"]) == {"reason": "venue looks wrong"}
    # An empty body is `{}`: the default reason.
    status, body, _ = await api.call("POST", "/halt")
    assert status == 200 and body["control"]["halt_reason"] == "operator halt"


async def test_halt_reports_the_active_workers_acknowledgement(api: Api):
    now_ms = int(time.time() * 1000)
    api.r.hset(K.lease(), mapping={"holder": "h1", "color": "green", "expires_ms": now_ms + 60_000})
    # The worker's answers to the halt that is about to get control seq 1.
    api.r.rpush(
        K.control_ack(1), json.dumps({"halted": True, "color": "green", "holder": "h1", "inflight": 0})
    )
    api.r.rpush(K.control_ack(1), json.dumps({"cancel": "cancelled 2 open orders"}))
    status, body, _ = await api.call("POST", "/halt", {"reason": "now"})
    assert status == 200 and body["acknowledged"] is True and body["ack_ms"] is not None
    assert (body["worker"], body["cancel"]) == ("worker-green", "cancelled 2 open orders")


async def test_pause_twice_is_not_an_error_and_resume_without_a_flag_is_409(api: Api):
    status, body, _ = await api.call("POST", "/pause", {"reason": "news at 14:00"})
    assert status == 200 and body["changed"] is True and body["control"]["pause_reason"] == "news at 14:00"
    status, body, _ = await api.call("POST", "/pause", {})
    assert status == 200 and body["changed"] is False
    status, body, _ = await api.call("POST", "/resume")
    assert status == 200 and body["control"]["paused"] is False
    status, body, _ = await api.call("POST", "/resume", {})
    assert status == 409 and "nothing to resume" in body["error"]
    assert [(e["action"], e["result"]) for e in api.audit()][:2] == [("resume", "refused"), ("resume", "ok")]


async def test_resume_lifts_a_halt(api: Api):
    await api.call("POST", "/halt", {"reason": "x"})
    status, body, _ = await api.call("POST", "/resume")
    assert status == 200 and body["control"]["halted"] is False


# --- lifecycle ------------------------------------------------------------------------------------
async def test_start_and_stop_go_through_supervisor_and_conflict_when_pointless(api: Api):
    status, body, _ = await api.call("POST", "/start")
    assert status == 200 and body == {
        "action": "start",
        "programs": {"worker-blue": "RUNNING", "worker-green": "STOPPED"},
    }
    assert ("startProcess", "worker-blue", True) in api.sup.calls
    status, body, _ = await api.call("POST", "/start")
    assert status == 409 and "worker-blue already running" in body["error"]
    status, body, _ = await api.call("POST", "/stop", {})
    assert status == 200 and body["programs"]["worker-blue"] == "STOPPED"
    assert ("stopProcess", "worker-blue", True) in api.sup.calls
    status, body, _ = await api.call("POST", "/stop")
    assert (status, body["error"]) == (409, "no worker is running")
    assert [(e["action"], e["result"]) for e in api.audit()] == [
        ("stop", "refused"),
        ("stop", "ok"),
        ("start", "refused"),
        ("start", "ok"),
    ]


async def test_start_runs_the_colour_that_traded_last(api: Api):
    api.r.hset(K.lease(), "color", "green")
    status, body, _ = await api.call("POST", "/start")
    assert status == 200 and body["programs"]["worker-green"] == "RUNNING"


async def test_supervisor_down_is_503(api: Api):
    api.sup.down = True
    status, body, _ = await api.call("POST", "/start")
    assert status == 503 and "supervisord is not reachable" in body["error"]


# --- reload ---------------------------------------------------------------------------------------
async def test_reload_without_a_worker_is_409(api: Api):
    status, body, _ = await api.call("POST", "/reload", {})
    assert status == 409 and "no worker holds the lease" in body["error"]


async def test_reload_reports_what_the_worker_did(api: Api):
    api.r.hset(K.lease(), "color", "blue")
    stop = threading.Event()

    def worker() -> None:  # answers the reload request between two ticks, as the active worker does
        while not stop.wait(0.01):
            if api.r.hget(K.control(), "reload_seq"):
                api.r.hset(
                    K.reload(), mapping={"state": "ok", "color": "blue", "modules": "snipe", "at_ms": 7}
                )
                return

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        status, body, _ = await api.call("POST", "/reload")
    finally:
        stop.set()
        t.join()
    res = msgspec.convert(body, c.ReloadResult)
    assert status == 200 and (res.state, res.color, res.modules, res.at_ms) == ("ok", "blue", "snipe", 7)
    assert api.audit()[0]["action"] == "reload" and api.audit()[0]["result"] == "ok"


# --- slots ----------------------------------------------------------------------------------------
async def test_disable_and_enable_a_slot(api: Api):
    status, body, _ = await api.call("POST", "/slots/btc-15m/disable")
    assert status == 200 and body["changed"] is True and body["slot"]["enabled"] is False
    assert "disabled" in body["slot"]["entries_blocked"]
    status, body, _ = await api.call("POST", "/slots/btc-15m/disable", {})
    assert body["changed"] is False
    status, body, _ = await api.call("POST", "/slots/btc-15m/enable")
    assert status == 200 and body["slot"]["enabled"] is True
    assert msgspec.json.decode(api.r.hget(K.slots(), "btc-15m"), type=Slot).enabled is True


async def test_patch_changes_stake_and_params(api: Api):
    status, body, _ = await api.call("PATCH", "/slots/btc-15m", {"stake_usd": 3.5, "params": {"edge": 0.05}})
    res = msgspec.convert(body, c.SlotResult)
    assert status == 200 and res.changed and res.slot.stake_usd == 3.5 and res.slot.params == {"edge": 0.05}
    stored = msgspec.json.decode(api.r.hget(K.slots(), "btc-15m"), type=Slot)
    assert (stored.stake_usd, stored.params) == (3.5, {"edge": 0.05})
    entry = api.audit()[0]
    assert (entry["action"], entry["target"], entry["result"]) == ("patch_slot", "btc-15m", "ok")


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ({"stake_usd": "lots"}, "$.stake_usd"),
        ({"stake_usd": -1}, "stake_usd must be a positive number"),
        ({"stake_usd": 1000}, "stake_usd 1000"),
        ({"params": {"nope": 1}}, "no parameter 'nope'"),
        ({"params": {"edge": 0.9}}, "params.edge=0.9 is outside"),
        ({"params": {"edge": "high"}}, "Expected `float`, got `str` - at `$.params[...]`"),
        ({"params": {"min_price": 0.9, "max_price": 0.5}}, "min_price 0.9 must be below max_price"),
        ({"stake": 3}, "unknown field `stake`"),
        ({}, "nothing to change"),
    ],
)
async def test_patch_validation_names_the_field(api: Api, patch: dict[str, Any], says: str):
    status, body, _ = await api.call("PATCH", "/slots/btc-15m", patch)
    assert status == 400 and says in body["error"], body
    assert msgspec.json.decode(api.r.hget(K.slots(), "btc-15m"), type=Slot).stake_usd == 5.0


# --- bad requests ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "data", "says"),
    [
        ("/halt", b"{not json", "not valid JSON"),
        ("/halt", b"[1, 2]", "Expected `object`"),
        ("/halt", b'{"reason": 5}', "Expected `str`, got `int` - at `$.reason`"),
        ("/halt", b'{"reasn": "x"}', "unknown field `reasn`"),
        ("/halt", json.dumps({"reason": "x" * 201}).encode(), "at most 200"),
        ("/pause", b"reason=lunch", "not valid JSON"),
        ("/resume", b'{"force": true}', "unknown field `force`"),
        ("/start", b'{"color": "green"}', "unknown field `color`"),
        ("/slots/btc-15m/enable", b"nope", "not valid JSON"),
    ],
)
async def test_bad_bodies_are_400_with_msgspecs_message(api: Api, path: str, data: bytes, says: str):
    status, body, _ = await api.call("POST", path, data=data, headers={"Content-Type": "application/json"})
    assert status == 400 and body["status"] == 400 and says in body["error"], body
    assert api.control().get("halted", "0") == "0" and api.sup.calls == []


async def test_a_json_body_is_read_whatever_the_content_type_says(api: Api):
    # `curl -d` sends application/x-www-form-urlencoded: in an emergency, that must still halt.
    status, body, _ = await api.call(
        "POST",
        "/halt",
        data=b'{"reason": "curl"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and body["control"]["halt_reason"] == "curl"


async def test_unknown_routes_wrong_methods_and_big_bodies_are_json_errors(api: Api):
    status, body, _ = await api.call("GET", "/nope")
    assert status == 404 and body == {
        "error": "no route GET /nope (GET /openapi.json lists the routes)",
        "status": 404,
    }
    status, body, headers = await api.call("DELETE", "/halt")
    assert status == 405 and "allowed: POST" in body["error"] and headers["Allow"] == "POST"
    status, body, _ = await api.call("GET", "/halt", token=None)
    assert status == 405
    status, body, _ = await api.call("POST", "/halt", data=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and body["status"] == 413
    assert api.control().get("halted", "0") == "0"


async def test_an_unexpected_exception_is_a_500_naming_it_without_the_token(api: Api, monkeypatch, caplog):
    def broken() -> None:
        raise RuntimeError(f"boom near {TOKEN}")

    monkeypatch.setattr(api.ctx.ops, "control", broken)
    with caplog.at_level(logging.INFO):
        status, body, _ = await api.call("GET", "/control")
    assert status == 500 and body["error"] == "internal error: RuntimeError: boom near <redacted>"
    assert "RuntimeError: boom near <redacted>" in caplog.text and TOKEN not in caplog.text


async def test_redis_down_is_503(api: Api):
    api.server.connected = False
    for method, path in (("GET", "/control"), ("GET", "/slots"), ("POST", "/pause"), ("GET", "/audit")):
        status, body, _ = await api.call(method, path)
        assert status == 503 and "cannot reach Redis" in body["error"], path


# --- rate limit -----------------------------------------------------------------------------------
async def test_mutations_are_rate_limited_after_the_burst_but_halt_and_reads_are_not(api: Api):
    for _ in range(BURST):
        status, _, _ = await api.call("POST", "/pause")
        assert status == 200
    status, body, headers = await api.call("POST", "/slots/btc-15m/disable")
    assert status == 429 and "at most 60 mutating calls a minute" in body["error"]
    assert int(headers["Retry-After"]) >= 1
    status, body, _ = await api.call("POST", "/halt", {"reason": "still possible"})
    assert status == 200 and body["halted"] is True
    status, _, _ = await api.call("GET", "/control")
    assert status == 200
    # The refused call never reached the operation: the slot is still enabled, and only the
    # calls carried out are in the audit stream.
    assert msgspec.json.decode(api.r.hget(K.slots(), "btc-15m"), type=Slot).enabled is True
    assert len(api.audit()) == BURST + 1


def test_the_bucket_refills_at_the_per_minute_rate_per_token():
    now = [0.0]
    lim = MutationLimiter(per_min=60, clock=lambda: now[0])
    for _ in range(BURST):
        lim.take("a")
    with pytest.raises(TooManyRequests) as e:
        lim.take("a")
    assert e.value.headers == {"Retry-After": "1"} and e.value.status == 429
    lim.take("b")  # another token has its own bucket
    now[0] = 1.0  # 60 a minute: one call a second
    lim.take("a")
    with pytest.raises(TooManyRequests):
        lim.take("a")
    slow = MutationLimiter(per_min=3, clock=lambda: now[0])
    for _ in range(3):  # the burst is never more than a minute's worth
        slow.take("a")
    with pytest.raises(TooManyRequests) as e:
        slow.take("a")
    assert e.value.headers == {"Retry-After": "20"}


# --- secrets --------------------------------------------------------------------------------------
async def test_the_token_is_in_no_answer_and_no_log_line(api: Api, caplog):
    caplog.set_level(logging.DEBUG)
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie(api.ctx.token)}"}
    await api.call("GET", "/status")
    await api.call("POST", "/halt", {"reason": "secrets check"})
    await api.call("POST", "/resume", token=None, headers=cookie)
    await api.call("GET", "/control", token=TOKEN + "x")
    await api.call("GET", "/audit?count=5")
    await api.call("GET", "/openapi.json")
    # The access log has a line per request, naming the token by its id only.
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 6 and any(
        "POST /halt 200" in line and f"token:{TOKEN_ID}" in line for line in access
    )
    for secret in (TOKEN, session_cookie(api.ctx.token)):
        assert secret not in caplog.text
        assert not any(secret in json.dumps(e) for e in api.audit())


# --- the program ----------------------------------------------------------------------------------
def _program_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    # No Redis listens there: the program must start (and answer /health) regardless.
    env.update(
        BATON_HOME=str(home), BATON_API_PORT=str(port), BATON_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    return env


def _wait_for_line(proc: subprocess.Popen[str], needle: str, out: list[str], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line and proc.poll() is not None:
            break
        out.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} in the output:\n{''.join(out)}")


def test_python_m_api_creates_its_token_serves_and_stops_on_sigterm(tmp_path: Path):
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=REPO_ROOT,
        env=_program_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out: list[str] = []
    try:
        _wait_for_line(proc, "listening on", out)
        token_file = tmp_path / "var" / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert json.loads(resp.read()) == {"ok": True, "redis": False}
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=15)
        out.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(out)
    assert proc.returncode == 0, text
    assert f"API token id {token_id(token)} (from {token_file})" in text and "stopping" in text
    assert token not in text


def test_python_m_api_refuses_a_taken_port_clearly(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_program_env(tmp_path, port), "BATON_API_TOKEN": TOKEN}
        res = subprocess.run(
            [sys.executable, "-m", "api"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken" in res.stdout
    assert TOKEN not in res.stdout + res.stderr


def test_the_log_scrubber_hides_the_token_from_every_logger(caplog):
    import logging

    from api.__main__ import Scrub
    from api.apitoken import ApiToken
    from api.auth import session_cookie

    token = ApiToken("t" * 40, "test")
    f = Scrub((token.reveal(), session_cookie(token)))
    handler = logging.StreamHandler()
    handler.addFilter(f)
    rec = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "bad header %s", ("Bearer " + "t" * 40,), None
    )
    try:
        raise ValueError(f"cookie {session_cookie(token)}")
    except ValueError:
        import sys

        rec.exc_info = sys.exc_info()
    f.filter(rec)
    text = logging.Formatter().format(rec)
    assert "t" * 40 not in text and session_cookie(token) not in text
    assert text.count("<redacted>") == 2
