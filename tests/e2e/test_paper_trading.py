"""The walking skeleton, end to end: real redis-server, supervisord, sim, feed and worker;
orders through py-clob-client-v2; a window traded and settled; nothing left running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deploy.sandbox import TRADING, Stack, wait_for
from kernel.lease import process_alive
from tests.e2e.invariants import check_counts, check_ledger, check_orders

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_a_paper_stack_trades_and_settles_windows_then_stops_clean():
    st = Stack(
        BATON_TICK_MS="1000",
        **TRADING,
    )
    try:
        out = st.start()
        assert "worker is ticking" in out
        pids = [*st.program_pids(), st.supervisord_pid()]
        assert len(pids) == 7  # redis, sim, feed, settle, worker-blue, api, supervisord

        def traded_and_settled():
            s = st.status()
            return s if s["positions"]["settled"] >= 1 and s["ticks"]["done"] >= 10 else None

        s = wait_for(traded_and_settled, 120, "ten ticks and a settled position")
        assert s["active"]["color"] == "blue" and s["active"]["epoch"] >= 1
        assert s["ticks"]["done"] >= 10 and s["ticks"]["missed"] == 0
        assert s["orders"].get("filled", 0) >= 1
        assert not s["halted"] and len(s["slots"]) == 4
        # Settled by the settle program's rq jobs, one per closed window, none failed.
        assert s["settlement"]["settled"] >= 1 and s["settlement"]["failed"] == 0
        assert s["settlement"]["runs"] >= s["settlement"]["settled"]
        assert s["mode"] == "paper"

        # Every tick index journaled once, consecutive, by the one worker.
        entries = st.redis.xrange("baton:journal:ticks")
        ticks = [int(f["tick"]) for _, f in entries]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
        assert {f["color"] for _, f in entries} == {"blue"}

        # The venue saw each slot-window at most once, and every filled intent is there.
        orders = st.sim_orders()
        assert orders, "the sim has no orders"
        markets = Counter(o["market"] for o in orders)
        assert max(markets.values()) == 1, markets
        intents = st.redis.hvals("baton:intents")
        filled_ids = {json.loads(i)["order_id"] for i in intents if '"filled"' in i}
        assert filled_ids <= {o["id"] for o in orders}

        # The ledger adds up: cash + open cost = deposits + realised PnL, to the micro-dollar.
        totals = {k: int(v) for k, v in st.redis.hgetall("baton:ledger:totals").items()}
        open_cost = sum(json.loads(p)["cost_micros"] for p in st.redis.hvals("baton:positions:open"))
        realised = totals.get("realized_pnl_micros", 0)
        assert totals["cash_micros"] + open_cost == totals["deposit_micros"] + realised
        ledger = st.redis.xrange("baton:ledger")
        assert sum(int(f["amount_micros"]) for _, f in ledger) == totals["cash_micros"]
        assert any(f["kind"] == "payout" for _, f in ledger)
        # What status showed came from the counts the scripts keep (state/counts.py), and they
        # agree with a count of every record, through fills and the settle program's bookings.
        assert not any("counted the hashes" in p for p in s["problems"]), s["problems"]
        check_counts(st.redis)
        # And the invariants every e2e test judges by (tests/e2e/invariants.py): one order per
        # intent, every fill booked, the ledger exact with its fees, entry by entry.
        check_orders(st.redis, orders)
        check_ledger(st.redis)

        # supervisorctl, as an operator runs it, sees every program.
        ctl = subprocess.run(
            [
                str(Path(sys.executable).with_name("supervisorctl")),
                "-c",
                "supervisor.conf",
                "-s",
                f"unix://{st.home}/var/run/supervisor.sock",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for program in ("redis", "sim", "feed", "worker-blue", "api"):
            assert re.search(rf"^{program}\s+RUNNING", ctl.stdout, re.M), ctl.stdout
        assert re.search(r"^worker-green\s+STOPPED", ctl.stdout, re.M), ctl.stdout

        # Garbage in a control key: fails safe (halted), is reported, and nobody dies.
        st.redis.hset("baton:control", "halted", "{not-a-flag")
        halted = wait_for(
            lambda: (x := st.status())["halted"] and x, 10, "the garbage flag to read as halted"
        )
        orders_before = len(st.sim_orders())
        wait_for(
            lambda: st.status()["ticks"]["done"] >= halted["ticks"]["done"] + 5,
            30,
            "ticks to go on while halted",
        )
        assert len(st.sim_orders()) == orders_before
        errors = st.redis.xrange("baton:journal:errors")
        assert any("halted" in f["error"] and "not-a-flag" in f["error"] for _, f in errors)
        assert all(
            p["statename"] == "RUNNING"
            for p in st.supervisor("getAllProcessInfo")
            if p["name"] not in ("worker-green", "shadow")  # started by a deploy only
        )
    finally:
        logs = st.logs()
        st.stop(wait=True)
    assert not [p for p in pids if process_alive(p)], f"processes left behind after stop\n{logs}"
