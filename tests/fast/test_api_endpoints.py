"""The control API's endpoints over HTTP (tests/fast/api_rig.py): reads, flags, lifecycle
through supervisord, reload, slot edits, and the JSON errors of bad requests."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import msgspec
import pytest

from control import commands as c
from state.structs import Slot
from tests.fast.api_rig import TOKEN, TOKEN_ID, Api, K


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


async def test_a_patch_that_is_not_utf8_is_a_400_not_a_500(api: Api):
    status, body, _ = await api.call("PATCH", "/slots/btc-15m", data=b'{"params": {"caf\xe9": 1}}')
    assert status == 400 and "not valid UTF-8" in body["error"], body


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
        ("/resume", b'{"force": true}', "unknown field `force`"),
        ("/resume", b"{not json", "not valid JSON"),
        ("/start", b'{"color": "green"}', "unknown field `color`"),
        ("/slots/btc-15m/enable", b"nope", "not valid JSON"),
        ("/slots/btc-15m/enable", b"[1, 2]", "Expected `object`"),
    ],
)
async def test_bad_bodies_are_400_with_msgspecs_message(api: Api, path: str, data: bytes, says: str):
    status, body, _ = await api.call("POST", path, data=data, headers={"Content-Type": "application/json"})
    assert status == 400 and body["status"] == 400 and says in body["error"], body
    assert api.control().get("halted", "0") == "0" and api.sup.calls == []


# --- a halt is never refused for its body ----------------------------------------------------------
LONG = "x" * 250


@pytest.mark.parametrize(
    ("data", "reason", "warned"),
    [
        (
            json.dumps({"reason": LONG}).encode(),
            "x" * 200,
            ["reason truncated to 200 characters (it had 250)"],
        ),
        (b'{"reason": "feed is wrong", "foo": 1}', "feed is wrong", ["unknown field 'foo' ignored"]),
        (b'{"reasn": "typo"}', "operator halt", ["unknown field 'reasn' ignored"]),
        (b"venue looks wrong", "venue looks wrong", ["body is not JSON"]),
        (b'{"reason": "cut off', "cut off", ["body is not JSON", "its reason field kept"]),
        (b"reason=lunch", "reason=lunch", ["body is not JSON"]),
        (b"[1, 2]", "[1, 2]", ["body is a JSON array, not an object"]),
        (b'{"reason": 5}', "5", ["reason is a JSON number, not a string"]),
        (b'{"reason": "caf\xe9 \xff"}', "caf\ufffd \ufffd", ["body is not valid UTF-8"]),
        (json.dumps({"reason": "a\nb\tc"}).encode(), "a b c", []),
        (b"[" * 30_000 + b"]" * 30_000, "[" * 200, ["body is not JSON (nested deeper than 64 levels)"]),
    ],
)
async def test_a_halt_with_a_bad_body_halts_and_says_what_was_wrong(
    api: Api, data: bytes, reason: str, warned: list[str]
):
    status, body, _ = await api.call("POST", "/halt", data=data, headers={"Content-Type": "application/json"})
    res = msgspec.convert(body, c.HaltResult)
    assert status == 200 and res.halted and res.control.halted, body
    assert res.control.halt_reason == reason
    for w in warned:
        assert any(w in x for x in res.warnings), (w, res.warnings)
    assert bool(warned) == bool(res.warnings)
    assert api.control()["halted"] == "1"
    # The audit stream keeps the warnings with the halt.
    entry = api.audit()[0]
    assert (entry["action"], entry["result"]) == ("halt", "ok")
    assert json.loads(entry.get("warnings", "[]")) == res.warnings
    status, tail, _ = await api.call("GET", "/audit?count=1")
    assert tail["entries"][0]["warnings"] == res.warnings


async def test_a_halt_bigger_than_the_body_limit_halts_with_a_warning(api: Api):
    data = json.dumps({"reason": "flood", "pad": "y" * 200_000}).encode()
    status, body, _ = await api.call("POST", "/halt", data=data)
    assert status == 200 and body["control"]["halted"] is True, body
    assert body["control"]["halt_reason"] == "flood"
    assert any("over 65536 bytes" in w for w in body["warnings"]), body["warnings"]
    # Other routes keep the app-wide limit.
    status, body, _ = await api.call("POST", "/resume", data=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and body["status"] == 413


async def test_a_pause_with_a_bad_body_pauses_and_says_so(api: Api):
    status, body, _ = await api.call("POST", "/pause", data=b"lunch, back at 2", headers={})
    res = msgspec.convert(body, c.FlagResult)
    assert status == 200 and res.control.paused and res.control.pause_reason == "lunch, back at 2"
    assert any("body is not JSON" in w for w in res.warnings), res.warnings
    assert not res.control.halted


@pytest.mark.parametrize("data", [b"{not json", b'{"reason": "' + b"z" * 300 + b'"}', b"\xff" * 100_000])
async def test_a_bad_halt_without_the_token_is_still_401(api: Api, data: bytes):
    for token in (None, "not-the-token-0123456789abcdef"):
        status, body, _ = await api.call("POST", "/halt", data=data, token=token)
        assert status == 401 and body["status"] == 401, body
    assert api.control().get("halted", "0") == "0"
    assert api.audit() == [] or all(e["action"] != "halt" or e["result"] != "ok" for e in api.audit())


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
    status, body, _ = await api.call("POST", "/resume", data=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and body["status"] == 413


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
