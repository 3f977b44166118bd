"""An intent lost in a Redis failover never yields a second order, on a real stack: the active
worker is frozen right after it posted an entry, everything Redis wrote about that entry is
deleted (the intent, its position, its ledger booking: the suffix of the write stream that a
replica promoted without it would lack), and the worker is killed. The standby that takes the
lease over sweeps the venue before it trades (kernel/adopt.py): the sim holds exactly one
order for that slot-window, and Redis holds its adopted intent, its position and its booking
once, the ledger exact. The same loss followed by a Redis restart (a new replication id, as a
promoted replica has) makes the holder itself sweep and book what was lost."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from deploy import releases
from deploy.sandbox import SLOT_PARAMS, STALE_MAKER, Stack, wait_for
from tests.e2e import invariants

# Its two tests share nothing: `make test` runs them on two workers at once (tests/scheduling.py).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# Slots of one-minute windows: snipe's entry zone is the last 20 s of each (a third of the
# window), so after the takeover the slot is still in its zone and would enter again. Four
# assets, not one: an entry the test can use (one made with LEFT_S of its window left) came in
# one window of three or four on one slot (130 s on average, 180 s not always enough); the
# first of four slots to make one is as good, and comes in the first or second window.
ENV = {
    "BATON_TICK_MS": "1000",
    "BATON_TIMEFRAMES": "1m",
    "BATON_ASSETS": "btc,eth,sol,xrp",
    SLOT_PARAMS: "edge=0.0,entry_s=20",
    **STALE_MAKER,  # entries in most windows: the pre-#26 maker's stale book (deploy/sandbox.py)
}
LEFT_S = 12  # at least this much of the window left when the entry is found


def _entry(st: Stack) -> dict | None:
    """A current window's entry intent, filled, with at least LEFT_S of the window left."""
    now_s = time.time()
    for raw in st.redis.hvals("baton:intents"):
        i = json.loads(raw)
        if i["status"] == "filled" and i["window_end_s"] - now_s >= LEFT_S:
            return i
    return None


def _lose(st: Stack, intent: dict) -> None:
    """Delete what Redis wrote about this entry, as a failover to a replica that missed it
    would: the intent, the position, the ledger's buy entry, and their counts and sums."""
    r = st.redis
    pos = f"{intent['slot']}:{intent['window_start_s']}"
    position = json.loads(r.hget("baton:positions", pos))
    ref = f"buy:{intent['id']}"
    [(entry_id, entry)] = [(eid, f) for eid, f in r.xrange("baton:ledger") if f["ref"] == ref]
    cost = position["cost_micros"]
    pipe = r.pipeline(transaction=True)
    pipe.hdel("baton:intents", intent["id"])
    pipe.hdel("baton:intents:open", intent["id"])
    pipe.hdel("baton:positions", pos)
    pipe.hdel("baton:positions:open", pos)
    pipe.xdel("baton:ledger", entry_id)
    pipe.srem("baton:ledger:refs", ref)
    pipe.hincrby("baton:ledger:totals", "cash_micros", cost)
    pipe.hincrby("baton:ledger:totals", "buy_micros", cost)
    pipe.hincrby("baton:ledger:totals", "entries", -1)
    pipe.hincrby("baton:ledger:totals", "fee_micros", -int(entry.get("fee_micros", 0)))
    pipe.hincrby("baton:counts", "intents:filled", -1)
    pipe.hincrby("baton:counts", "positions:open", -1)
    pipe.execute()


def test_an_entry_lost_from_redis_is_adopted_by_the_standby_and_never_sent_twice():
    st = Stack(**ENV)
    try:
        st.start()
        # The warm standby: the other colour, ready before the active one is killed.
        active = st.redis.hget("baton:lease", "color")
        standby = "green" if active == "blue" else "blue"
        release = releases.pointed(st.home, active)
        assert release is not None
        releases.point(st.home, standby, release)  # the same release, warm on the other colour
        st.supervisor("startProcess", f"worker-{standby}", True)
        wait_for(lambda: st.redis.hget(f"baton:worker:{standby}", "state") == "ready", 120, "a ready standby")
        intent = wait_for(lambda: _entry(st), 180, f"an entry with {LEFT_S} s of its window left")
        pid = int(st.supervisor("getProcessInfo", f"worker-{active}")["pid"])
        epoch = int(st.redis.get("baton:lease:epoch"))
        os.kill(pid, signal.SIGSTOP)  # nothing it writes can race the loss below
        try:
            _lose(st, intent)
        finally:
            os.kill(pid, signal.SIGKILL)  # a stopped process dies of it as it is
        assert not st.redis.hexists("baton:intents", intent["id"])
        wait_for(
            lambda: int(st.redis.xrevrange("baton:journal:ticks", count=1)[0][1]["epoch"]) > epoch,
            60,
            "a new holder ticking",
        )
        taken_ms = time.time() * 1000
        holder = st.redis.hgetall("baton:lease")
        assert taken_ms < intent["window_end_s"] * 1000 - 1000, "the window ended before the takeover"
        # The rest of the window: the slot is still in its entry zone, and enters nothing.
        wait_for(lambda: time.time() > intent["window_end_s"] + 2, 90, "the window's end")

        orders = [o for o in st.sim_orders() if o["market"] == intent["condition_id"]]
        assert [o["id"] for o in orders] == [intent["order_id"]], orders
        # The window's one intent is still the lost order's: no second intent was committed,
        # so none was posted (a second FOK the venue killed would not be in its listing).
        adopted = json.loads(st.redis.hget("baton:intents", intent["id"]))
        assert adopted["order_id"] == intent["order_id"] and adopted["status"] == "filled"
        assert adopted["adopted_ms"] > 0 and adopted["epoch"] > epoch
        position = json.loads(
            st.redis.hget("baton:positions", f"{intent['slot']}:{intent['window_start_s']}")
        )
        assert position["shares_micros"] == round(float(orders[0]["size_matched"]) * 1e6)
        journal = [f for _, f in st.redis.xrange("baton:journal:errors") if f["source"] == "adopted"]
        assert len(journal) == 1 and intent["order_id"] in journal[0]["error"], journal
        invariants.check_orders(st.redis, st.sim_orders())
        invariants.check_ledger(st.redis)
        invariants.check_counts(st.redis)
        print(f"adopted by {holder['holder']} (epoch {holder['epoch']}) {intent['id']}")
    finally:
        st.stop()


def test_an_entry_lost_from_redis_is_adopted_by_the_holder_when_the_primary_changes():
    st = Stack(**ENV)
    try:
        st.start()
        intent = wait_for(lambda: _entry(st), 180, f"an entry with {LEFT_S} s of its window left")
        epoch = st.redis.get("baton:lease:epoch")
        _lose(st, intent)
        # A new primary: the embedded Redis restarted (from its AOF, which holds the loss).
        st.supervisor("stopProcess", "redis", True)
        st.supervisor("startProcess", "redis", True)
        wait_for(lambda: st.redis.hexists("baton:intents", intent["id"]), 60, "the entry adopted")
        assert st.redis.get("baton:lease:epoch") == epoch  # the same holder, no takeover
        wait_for(lambda: time.time() > intent["window_end_s"] + 2, 90, "the window's end")
        orders = [o for o in st.sim_orders() if o["market"] == intent["condition_id"]]
        assert [o["id"] for o in orders] == [intent["order_id"]], orders
        adopted = json.loads(st.redis.hget("baton:intents", intent["id"]))
        assert (adopted["order_id"], adopted["status"]) == (intent["order_id"], "filled")
        assert adopted["adopted_ms"] > 0
        pos = json.loads(st.redis.hget("baton:positions", f"{intent['slot']}:{intent['window_start_s']}"))
        assert pos["shares_micros"] == round(float(orders[0]["size_matched"]) * 1e6)
        log = (st.home / "var" / "log" / "worker-blue.log").read_text(errors="replace")
        assert "the Redis primary changed" in log
        invariants.check_orders(st.redis, st.sim_orders())
        invariants.check_ledger(st.redis)
        invariants.check_counts(st.redis)
    finally:
        st.stop()
