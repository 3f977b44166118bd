"""A halt is never refused, on a real stack: halts with each class of bad body — a reason over
200 characters, an unknown field, a body that is not JSON, a body over the 64 KiB limit —
through the API, the CLI and control.json, each sent while the worker trades, each halts it
(acknowledged; no order reaches the sim after the acknowledgement) and says what was wrong;
without the token the same bodies are 401 and halt nothing."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api import apitoken
from baton import settings as settings_mod
from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# Each case waits for an entry tick, one a window: 10 s windows at 500 ms ticks (not
# TRADING's 15 s at 1 s) make the six cases a minute instead of a minute and a half; each
# halted case still sees its three halted ticks before the next window's entry tick.
TICK_MS = 500
TIMEFRAME = "10s"
WINDOW_MS = 10_000
# snipe enters once a third of a window is left: the first tick after that, 7 s in.
ENTRY_PHASE_MS = math.ceil(WINDOW_MS * 2 / 3 / TICK_MS) * TICK_MS


def _ids(st: Stack) -> set[str]:
    return {o["id"] for o in st.sim_orders()}


def _journal_since(st: Stack, since_ms: int) -> list[dict[str, str]]:
    return [e for e in invariants.journal(st.redis) if int(e["started_ms"]) > since_ms]


def _sleep_to_entry_tick(lead_ms: int = 0) -> None:
    """Until `lead_ms` before the entry tick of the next window (the worker posts then)."""
    now = time.time() * 1000
    at = now - now % WINDOW_MS + ENTRY_PHASE_MS + 3 - lead_ms
    if at < now + 500:
        at += WINDOW_MS
    time.sleep((at - time.time() * 1000) / 1000)


def _halts_and_stands(st: Stack, res: dict[str, Any], before: set[str], label: str) -> None:
    """The halt was acknowledged, nothing reached the sim after the acknowledgement, and the
    worker ticks on halted with no order; then resume for the next case."""
    assert res["halted"] is True and res["acknowledged"] is True, (label, res)
    ack_wall = res["control"]["halted_ms"] + res["ack_ms"]
    at_answer = _ids(st)
    wait_for(lambda: len(_journal_since(st, ack_wall)) >= 3, 60, f"three ticks after the {label} halt")
    halted = _journal_since(st, ack_wall)
    assert all(e["halted"] == "1" and e["orders"] == "0" for e in halted), (label, halted)
    orders = st.sim_orders()
    new = [o for o in orders if o["id"] not in before]
    # created_at is whole seconds (as the CLOB's): an order from after the ack's second fails.
    assert all(int(o["created_at"]) <= ack_wall // 1000 for o in new), (label, ack_wall, new)
    assert {o["id"] for o in orders} == at_answer, label
    out = st.baton("resume", timeout_s=60)
    assert out.returncode == 0, (label, out.stderr)


def test_halts_with_bad_bodies_halt_through_every_door_and_say_what_was_wrong():
    st = Stack(BATON_TICK_MS=str(TICK_MS), **{**TRADING, "BATON_TIMEFRAMES": TIMEFRAME})
    s = settings_mod.load(st.env)
    http = httpx.Client(base_url=f"http://{s.api_host}:{s.api_port}", timeout=60)
    try:
        st.start()
        wait_for(lambda: http.get("/health").status_code == 200, 60, "the api program's /health")
        wait_for(lambda: len(_ids(st)) >= 1, 90, "the worker trading")
        token = apitoken.load(s, env=st.env, create=False)
        auth = {"Authorization": f"Bearer {token.reveal()}"}

        bodies: list[tuple[str, bytes, str, Callable[[str], bool]]] = [
            (
                "long reason",
                json.dumps({"reason": "r" * 300}).encode(),
                "reason truncated to 200 characters",
                lambda reason: reason == "r" * 200,
            ),
            (
                "unknown field",
                json.dumps({"reason": "bad feed", "force": True}).encode(),
                "unknown field 'force' ignored",
                lambda reason: reason == "bad feed",
            ),
            (
                "not JSON",
                b"venue looks wrong, halt!",
                "body is not JSON",
                lambda reason: reason == "venue looks wrong, halt!",
            ),
            (
                "over the limit",
                json.dumps({"reason": "flood", "pad": "p" * 200_000}).encode(),
                "body is over 65536 bytes",
                lambda reason: reason == "flood",
            ),
        ]
        # Without the token, none of them halts anything.
        for label, data, _, _ in bodies:
            refused = http.post("/halt", content=data)
            assert refused.status_code == 401, (label, refused.status_code, refused.text)
        assert st.redis.hget("baton:control", "halted") in (None, "0")

        # (a) The API, each bad body at the tick where the worker posts its entries.
        for label, data, warned, reason_ok in bodies:
            _sleep_to_entry_tick()
            before = _ids(st)
            resp = http.post("/halt", content=data, headers=auth)
            assert resp.status_code == 200, (label, resp.status_code, resp.text)
            res = resp.json()
            assert any(warned in w for w in res["warnings"]), (label, res["warnings"])
            assert reason_ok(res["control"]["halt_reason"]), (label, res["control"]["halt_reason"])
            _halts_and_stands(st, res, before, label)

        # (b) The CLI: an unknown option, a reason too long.
        _sleep_to_entry_tick()
        before = _ids(st)
        out = st.baton("halt", "--now", "--reason", "c" * 250, "--json", timeout_s=60)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert any("unknown argument '--now' ignored" in w for w in res["warnings"]), res["warnings"]
        assert any("reason truncated to 200" in w for w in res["warnings"]), res["warnings"]
        _halts_and_stands(st, res, before, "cli")

        # (c) control.json that is not JSON (applied after its settle second): it still halts.
        _sleep_to_entry_tick(lead_ms=1300)
        before = _ids(st)
        archive = st.home / "var" / "control.d"
        seen = set(archive.glob("*.json")) if archive.is_dir() else set()
        (st.home / "var" / "control.json").write_text('{"action": "halt", "reason": "file door", oops')
        done = wait_for(lambda: set(archive.glob("*-halt.json")) - seen, 30, "control.json applied")
        record = json.loads(next(iter(done)).read_text())
        result = record["result"]
        assert result["ok"] is True and any("body is not JSON" in w for w in result["warnings"]), result
        assert result["result"]["control"]["halt_reason"] == "file door"
        _halts_and_stands(st, result["result"], before, "control.json")

        # Every halt is in the audit stream with its warnings.
        audit = json.loads(st.baton("audit", "-n", "40", "--json").stdout)["entries"]
        halts = [e for e in audit if e["action"] == "halt" and e["result"] == "ok"]
        assert len(halts) == len(bodies) + 2 and all(e["warnings"] for e in halts), halts
        assert token.reveal() not in json.dumps(audit)

        # Trading goes on after the last resume, and nothing was ever posted twice.
        last = _ids(st)
        wait_for(lambda: len(_ids(st) - last) >= 1, 60, "an order after the last resume")
        invariants.check_orders(st.redis, st.sim_orders())
    finally:
        http.close()
        st.stop()
