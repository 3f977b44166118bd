"""The control plane on a real stack: the api program under supervisor, an emergency halt over
HTTP while the worker posts orders, the halt standing across a worker restart, and the CLI
doing the same operations with the api program stopped."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from api import apitoken
from baton import settings as settings_mod
from deploy.ports import free_port
from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TICK_MS = 1000
WINDOW_MS = 15_000  # TRADING's 15s windows
# snipe enters once a third of a window is left: on a 15 s window, the tick 10 s in.
ENTRY_PHASE_MS = WINDOW_MS * 2 // 3


def _journal_since(st: Stack, since_ms: int) -> list[dict[str, str]]:
    return [e for e in invariants.journal(st.redis) if int(e["started_ms"]) > since_ms]


def _ids(st: Stack) -> set[str]:
    return {o["id"] for o in st.sim_orders()}


def test_halt_over_http_stops_orders_stands_across_a_restart_and_the_cli_needs_no_api():
    st = Stack(BATON_TICK_MS=str(TICK_MS), BATON_API_PORT=str(free_port()), **TRADING)
    s = settings_mod.load(st.env)
    http = httpx.Client(base_url=f"http://{s.api_host}:{s.api_port}", timeout=30)
    try:
        st.start()

        # (a) The api program runs under supervisor, answers /health, and wants the token.
        wait_for(lambda: http.get("/health").status_code == 200, 30, "the api program's /health")
        assert st.supervisor("getProcessInfo", "api")["statename"] == "RUNNING"
        assert http.get("/health").json()["ok"] is True
        refused = http.post("/halt", json={"reason": "no token"})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer not-the-token-0123456789abcdef"}
        assert http.post("/halt", json={}, headers=wrong).status_code == 401
        assert http.get("/slots").status_code == 401
        assert st.redis.hget("baton:control", "halted") in (None, "0")
        token = apitoken.load(s, env=st.env, create=False)
        assert st.baton("token", "--id").stdout.strip() == token.id
        auth = {"Authorization": f"Bearer {token.reveal()}"}

        # (b) Halt just after the tick where the worker posts its entries begins, racing its
        # posts. Whatever is new at the venue since `before` must predate the acknowledgement.
        now = time.time() * 1000
        at = now - now % WINDOW_MS + ENTRY_PHASE_MS + 3
        if at < now + 500:
            at += WINDOW_MS
        before = _ids(st)
        time.sleep((at - time.time() * 1000) / 1000)
        res = http.post("/halt", json={"reason": "e2e halt"}, headers=auth).json()
        assert res["halted"] and res["acknowledged"] is True, res
        assert isinstance(res["ack_ms"], int) and 0 <= res["ack_ms"] < s.halt_ack_timeout_ms, res
        assert res["worker"] == "worker-blue" and res["flush"] and res["cancel"], res
        ack_wall = res["control"]["halted_ms"] + res["ack_ms"]
        at_answer = _ids(st)

        # The worker ticks on, halted, through the rest of the entry zone: no order at all.
        wait_for(lambda: len(_journal_since(st, ack_wall)) >= 5, 30, "five ticks after the halt")
        halted_ticks = _journal_since(st, ack_wall)
        assert all(e["halted"] == "1" and e["orders"] == "0" for e in halted_ticks), halted_ticks
        orders = st.sim_orders()
        new = [o for o in orders if o["id"] not in before]
        # created_at is whole seconds (as the CLOB's): an order from after the ack's second fails.
        assert all(int(o["created_at"]) <= ack_wall // 1000 for o in new), (ack_wall, new)
        assert {o["id"] for o in orders} == at_answer  # and nothing since the answer, exactly

        # (c) The halt stands across a restart of the worker (through the CLI: Ops.stop/start).
        old_epoch = int(st.redis.hget("baton:lease", "epoch"))
        out = st.baton("stop-workers", timeout_s=60)
        assert out.returncode == 0 and "worker-blue STOPPED" in out.stdout, out.stderr
        out = st.baton("start", timeout_s=60)
        assert out.returncode == 0 and "worker-blue RUNNING" in out.stdout, out.stderr

        def new_worker_ticks() -> list[dict[str, str]]:
            mine = [e for e in invariants.journal(st.redis) if int(e["epoch"]) > old_epoch]
            return mine if len(mine) >= 3 else []

        restarted = wait_for(new_worker_ticks, 45, "three ticks of the restarted worker")
        assert all(e["halted"] == "1" and e["orders"] == "0" for e in restarted), restarted
        assert st.redis.hget("baton:control", "halted") == "1"
        assert _ids(st) == at_answer

        # (d) With the api program stopped, the CLI carries out the same operations itself.
        st.supervisor("stopProcess", "api", True)
        with pytest.raises(httpx.TransportError):
            http.get("/health")
        out = st.baton("resume", timeout_s=30)
        assert out.returncode == 0 and out.stdout.startswith("resumed"), out.stderr
        out = st.baton("pause", "--reason", "e2e pause", timeout_s=30)
        assert out.returncode == 0 and out.stdout.startswith("paused") and "e2e pause" in out.stdout
        status = st.status()
        assert status["paused"] and not status["halted"]
        out = st.baton("resume", "--json", timeout_s=30)
        assert out.returncode == 0 and json.loads(out.stdout)["control"]["paused"] is False
        out = st.baton("resume", timeout_s=30)
        assert out.returncode == 1 and "nothing to resume" in out.stderr and "Traceback" not in out.stderr
        audit = json.loads(st.baton("audit", "-n", "20", "--json").stdout)["entries"]
        doors = [(e["source"], e["action"], e["result"]) for e in reversed(audit)]
        assert ("api", "halt", "ok") in doors
        assert doors[-4:] == [
            ("cli", "resume", "ok"),
            ("cli", "pause", "ok"),
            ("cli", "resume", "ok"),
            ("cli", "resume", "refused"),
        ]
        assert token.reveal() not in json.dumps(audit)
        st.supervisor("startProcess", "api", True)
        wait_for(lambda: http.get("/health").json()["ok"], 30, "the api program back")

        # Trading goes on after the resume: the next entry zone posts orders again.
        wait_for(lambda: len(_ids(st) - at_answer) >= 1, 40, "an order after the resume")
    finally:
        http.close()
        st.stop(wait=True)
    # The token is never logged, by any program.
    logs = "".join(f.read_text(errors="replace") for f in (st.home / "var" / "log").glob("*.log*"))
    assert logs and token.reveal() not in logs
