"""The walking skeleton, end to end: real redis-server, supervisord, sim, feed and worker;
orders through py-clob-client-v2; a window traded and settled; nothing left running."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from tests.e2e.stack import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_paper_stack_trades_and_settles_windows_then_stops_clean():
    st = Stack(
        BATON_TICK_MS="1000",
        BATON_TIMEFRAMES="15s",
        BATON_ASSETS="btc,eth,sol,xrp",
        # Trade whenever the estimate is at least the ask, so a window trades within seconds.
        BATON_SNIPE_EDGE="0.0",
    )
    try:
        out = st.start()
        assert "worker is ticking" in out
        pids = st.program_pids() + [st.supervisord_pid()]
        assert len(pids) == 5  # redis, sim, feed, worker-blue, supervisord

        def traded_and_settled():
            s = st.status()
            return s if s["positions"]["settled"] >= 1 else None

        s = wait_for(traded_and_settled, 120, "a position to be settled")
        assert s["active"]["color"] == "blue" and s["active"]["epoch"] >= 1
        assert s["ticks"]["done"] >= 10 and s["ticks"]["missed"] == 0
        assert s["orders"].get("filled", 0) >= 1
        assert not s["halted"] and len(s["slots"]) == 4

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
        open_cost = sum(
            json.loads(p)["cost_micros"] for p in st.redis.hvals("baton:positions:open")
        )
        assert totals["cash_micros"] + open_cost == totals["deposit_micros"] + totals.get("realized_pnl_micros", 0)
        ledger = st.redis.xrange("baton:ledger")
        assert sum(int(f["amount_micros"]) for _, f in ledger) == totals["cash_micros"]
        assert any(f["kind"] == "payout" for _, f in ledger)
    finally:
        logs = st.logs()
        st.stop()
    assert not [p for p in pids if _alive(p)], f"processes left behind after stop\n{logs}"
