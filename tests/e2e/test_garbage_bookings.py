"""Hostile, on a real stack: garbage in a ledger running sum and in the journal's guard while
the worker trades. No program crash-loops; entries are blocked and reported; settlements that
could not be booked stay pending and are booked once after the repair; the ledger adds up;
the journal never falls silent and never holds a tick twice."""

from __future__ import annotations

import pytest

from deploy.sandbox import TRADING, Stack, wait_for
from kernel.lease import process_alive
from tests.e2e.invariants import check_ledger

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TOTALS = "baton:ledger:totals"
STATS = "baton:stats"


def _pid(st: Stack, name: str) -> int:
    info = st.supervisor("getProcessInfo", name)
    assert info["statename"] == "RUNNING", info
    return int(info["pid"])


def _ticks(st: Stack) -> list[int]:
    return [int(f["tick"]) for _, f in st.redis.xrange("baton:journal:ticks")]


def test_garbage_sums_and_journal_marks_block_entries_and_lose_nothing():
    st = Stack(BATON_TICK_MS="1000", **TRADING)
    pids: list[int] = []
    try:
        st.start()
        pids = [*st.program_pids(), st.supervisord_pid()]
        wait_for(lambda: st.redis.hlen("baton:positions:open") >= 1, 120, "an open position")
        worker, settle = _pid(st, "worker-blue"), _pid(st, "settle")

        # 1. A running sum the settlement adds to turns to garbage while positions are open.
        st.redis.hset(TOTALS, "realized_pnl_micros", "garbage")
        pending = set(st.redis.hkeys("baton:positions:open"))
        wait_for(lambda: st.status()["settlement"].get("unreadable", 0) >= 1, 90, "a settlement refused")
        s = st.status()
        assert any(b["key"] == TOTALS and b["field"] == "realized_pnl_micros" for b in s["blocked"]), s[
            "blocked"
        ]
        # Refused settlements wrote nothing: no payout entry for the positions still open.
        refs = {f["ref"] for _, f in st.redis.xrange("baton:ledger")}
        still_open = set(st.redis.hkeys("baton:positions:open"))
        assert not {f"settle:{p}" for p in still_open} & refs
        orders = len(st.sim_orders())
        ticks_done = s["ticks"]["done"]
        wait_for(lambda: st.status()["ticks"]["done"] >= ticks_done + 3, 30, "ticks while blocked")
        assert len(st.sim_orders()) == orders, "an order went out while entries were blocked"

        # 2. The repair: the running sum recomputed from the ledger stream. The pending
        # settlements are booked (rq retries them), each once.
        pnl = sum(int(f.get("pnl_micros", 0)) for _, f in st.redis.xrange("baton:ledger"))
        st.redis.hset(TOTALS, "realized_pnl_micros", pnl)
        wait_for(
            lambda: not (pending & set(st.redis.hkeys("baton:positions:open"))),
            120,
            "the pending settlements booked after the repair",
        )
        wait_for(lambda: st.status()["blocked"] == [], 30, "entries unblocked")
        check_ledger(st.redis)

        # 3. The journal's guard from the far future: the journal goes on (rebuilt from the
        # stream), that tick's entries are blocked, no tick is journaled twice.
        st.redis.hset(STATS, "last_tick", str(10**15))
        wait_for(lambda: int(st.redis.hget(STATS, "last_tick")) < 10**15, 30, "the guard rebuilt")
        rebuilt = [f for _, f in st.redis.xrange("baton:journal:ticks") if "last_tick_was" in f]
        assert [f["last_tick_was"] for f in rebuilt] == [str(10**15)]
        n = len(_ticks(st))
        wait_for(lambda: len(_ticks(st)) >= n + 3, 30, "the journal to go on")
        ticks = _ticks(st)
        assert ticks == sorted(set(ticks)), "a tick journaled twice or out of order"
        errors = [f["error"] for _, f in st.redis.xrange("baton:journal:errors")]
        assert any("guard was rebuilt" in e for e in errors)
        assert any(e.startswith(f"entries blocked (all): {STATS} last_tick") for e in errors)

        # Nobody restarted along the way.
        assert (_pid(st, "worker-blue"), _pid(st, "settle")) == (worker, settle)

        # 4. Garbage stop marks used to crash-loop a worker as it started: restarted over them,
        # it comes up, trades on, and stays up.
        st.supervisor("stopProcess", "worker-blue")
        st.redis.hset(STATS, mapping={"last_tick": "garbage", "clean_stop_tick": "garbage"})
        st.supervisor("startProcess", "worker-blue")
        restarted = _pid(st, "worker-blue")
        n = len(_ticks(st))
        wait_for(lambda: len(_ticks(st)) >= n + 5, 60, "the restarted worker to journal ticks")
        assert _pid(st, "worker-blue") == restarted
        assert st.redis.hget(STATS, "clean_stop_tick") is None  # cleared by the new holder
        ticks = _ticks(st)
        assert ticks == sorted(set(ticks))
        check_ledger(st.redis)
    finally:
        logs = st.logs()
        st.stop(wait=True)
    assert not [p for p in pids if process_alive(p)], f"processes left behind after stop\n{logs}"
