"""The lease deadline on a real stack: a worker stalled (SIGSTOP) in the middle of an entry
tick, after its lease renewal and before its commit, past its deadline (last renewal + lease -
margin, on its monotonic clock), posts nothing when it is continued:

(a) nobody else trades: it refuses the tick's entries (journaled, counted) unless its lease
    heartbeat, woken with it, renewed first (the lease was still its own: posting is then
    right), re-establishes the deadline, and trades on;
(b) a standby of the other colour took the lease meanwhile: it refuses, then loses the lease
    at its next renewal and stands down, while the new holder trades on without duplicates.

The sim's fault injection holds the entry tick's `POST /books` answer for a moment (the
rendezvous: the worker is then inside its entry tick), and the test stops the worker there.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest

from baton import settings as settings_mod
from deploy import releases
from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants

# Not `serial`: nothing here is judged by the wall clock. Each case waits on the worker itself
# (the held /books request, its stop, the lease's epoch, its journal), and either outcome of
# (a), refused or renewed in time, is checked; so it runs beside the other stacks.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TICK_MS = 1000
WINDOW_MS = 15_000  # TRADING's 15s windows
ENTRY_PHASE_MS = WINDOW_MS * 2 // 3  # snipe's entry tick, 10 s into a window
# The held /books answer: long enough for the test to see it and stop the worker.
BOOKS_HOLD_MS = 2000


def _orders_by_id(st: Stack) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in st.sim_orders()}


def _epoch_of_orders(st: Stack, ids: set[str]) -> dict[str, int]:
    by_order = {i.order_id: i.epoch for i in invariants.redis_intents(st.redis) if i.order_id}
    return {oid: by_order.get(oid, -1) for oid in ids}


def _lease_refusals(st: Stack) -> int:
    return int(st.redis.hget("baton:stats", "errors_lease") or 0)


def _worker_pid(st: Stack, color: str) -> int:
    return int(st.supervisor("getProcessInfo", f"worker-{color}")["pid"])


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0] == "T"


def _last_tick(st: Stack) -> int:
    last = st.redis.xrevrange("baton:journal:ticks", count=1)
    return int(last[0][1]["tick"]) if last else -1


def _stall_in_entry_tick(st: Stack, sim: httpx.Client, pid: int) -> tuple[int, int]:
    """Hold the next entry tick's /books answer, SIGSTOP the worker while it waits for it;
    returns (when the stop came, wall ms; the last tick journaled before the stalled one)."""
    now = time.time() * 1000
    at = now - now % WINDOW_MS + ENTRY_PHASE_MS - 400
    if at < now + 300:
        at += WINDOW_MS
    time.sleep((at - time.time() * 1000) / 1000)
    rule = {"app": "clob", "method": "POST", "path": "/books", "latency_ms": BOOKS_HOLD_MS, "times": 1}
    assert sim.post("/_sim/faults", json=[rule]).status_code == 200
    deadline = time.monotonic() + 30
    while sim.get("/_sim/faults").json()["rules"]:  # a `times: 1` rule leaves once it matched
        assert time.monotonic() < deadline, "no /books request reached the sim"
        time.sleep(0.01)
    os.kill(pid, signal.SIGSTOP)
    stopped_ms = int(time.time() * 1000)
    wait_for(lambda: _stopped(pid), 10, "the worker stopped")
    # The stalled tick is not journaled yet (that comes at its end): the one before it is.
    return stopped_ms, _last_tick(st)


def test_a_worker_stalled_past_its_lease_deadline_posts_nothing_when_it_wakes():
    # A lease of 3 ticks (the default is 1 s): room to stop the worker inside its entry tick
    # and wake it past the deadline before the lease expires. The margin is the default, a
    # third of the lease, so posting stops 2 ticks after a renewal.
    st = Stack(BATON_TICK_MS=str(TICK_MS), BATON_LEASE_MS="3000", **TRADING)
    s = settings_mod.load(st.env)
    assert (s.lease_ms, s.lease_margin_ms) == (3000, 1000)
    sim = httpx.Client(base_url=st.clob_url, timeout=30)
    stopped: list[int] = []
    try:
        st.start()
        wait_for(lambda: len(st.sim_orders()) >= 1, 90, "the worker trading")
        blue = _worker_pid(st, "blue")
        epoch = int(st.redis.hget("baton:lease", "epoch"))

        # (a) Nobody else trades: stalled past the deadline, it refuses, then re-establishes.
        refusals = _lease_refusals(st)
        stopped_ms, journaled = _stall_in_entry_tick(st, sim, blue)
        stopped.append(blue)
        before = set(_orders_by_id(st))
        # Past the deadline (the renewal was sent at the stalled tick's start, before the stop);
        # nobody takes the lease over, there is no standby.
        time.sleep(max(0.0, (stopped_ms + s.lease_ms - s.lease_margin_ms + 700 - time.time() * 1000) / 1000))
        os.kill(blue, signal.SIGCONT)
        stopped.remove(blue)

        def stalled_entry() -> dict[str, str] | None:
            got = [e for e in invariants.journal(st.redis) if int(e["tick"]) > journaled]
            return got[0] if got else None

        entry = wait_for(stalled_entry, 30, "the stalled tick's journal entry")
        stalled_tick = int(entry["tick"])
        assert int(entry["started_ms"]) <= stopped_ms, (entry, stopped_ms)
        if entry["orders"] == "0":
            # The deadline came first: refused, journaled, counted.
            assert int(entry["errors"]) >= 1, entry
            assert _lease_refusals(st) > refusals
            errors = st.redis.xrevrange("baton:journal:errors", count=200)
            refused = [f for _id, f in errors if f["source"] == "lease"]
            assert refused and all("lease deadline passed" in f["error"] for f in refused), refused
        # Either way the lease stayed blue's, of the same epoch: what it posted, it posted on
        # a lease nobody else held.
        # Re-established: the same worker, the same epoch, ticking and trading on.
        wait_for(
            lambda: any(int(e["tick"]) > stalled_tick + 2 for e in invariants.journal(st.redis)),
            30,
            "ticks after the stall",
        )
        assert int(st.redis.hget("baton:lease", "epoch")) == epoch and _worker_pid(st, "blue") == blue
        wait_for(lambda: len(set(_orders_by_id(st)) - before) >= 1, 60, "orders after the stall")

        # (b) A standby of the other colour (the same release) takes the lease meanwhile.
        releases.point(st.home, "green", releases.pointed(st.home, "blue") or "")
        st.supervisor("startProcess", "worker-green", True)
        wait_for(lambda: st.redis.hget("baton:worker:green", "state") == "ready", 90, "green in standby")
        refusals = _lease_refusals(st)
        _stall_in_entry_tick(st, sim, blue)
        stopped.append(blue)
        before = set(_orders_by_id(st))
        wait_for(lambda: int(st.redis.hget("baton:lease", "epoch")) > epoch, 30, "green taking the lease")
        green_epoch = int(st.redis.hget("baton:lease", "epoch"))
        assert st.redis.hget("baton:lease", "color") == "green"
        os.kill(blue, signal.SIGCONT)
        stopped.remove(blue)
        # Blue refuses its entries, then its next renewal finds the lease gone: it stands
        # down (exit 3) and supervisor starts it again, into standby.
        wait_for(
            lambda: _worker_pid(st, "blue") not in (0, blue), 60, "blue restarted after losing its lease"
        )
        assert _lease_refusals(st) > refusals
        wait_for(
            lambda: len([e for e in invariants.journal(st.redis) if int(e["epoch"]) == green_epoch]) >= 3,
            30,
            "green ticking",
        )
        wait_for(lambda: len(set(_orders_by_id(st)) - before) >= 1, 60, "green's orders")
        epochs = _epoch_of_orders(st, set(_orders_by_id(st)) - before)
        assert set(epochs.values()) == {green_epoch}, f"orders after blue's stall not from green: {epochs}"
        # One run per holder, epochs never going back, no tick twice: blue's stalled tick was
        # not journaled once green held the lease (the journal is fenced too).
        rep = invariants.check_ticks(invariants.journal(st.redis))
        assert [c for c, _, _ in rep.runs][-1] == "green" and green_epoch in rep.epochs, rep.runs
        invariants.check_orders(st.redis, st.sim_orders())
    finally:
        for pid in stopped:  # never leave a stopped process behind
            os.kill(pid, signal.SIGCONT)
        sim.close()
        st.stop()
