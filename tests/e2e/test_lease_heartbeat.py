"""The lease heartbeat on a real stack: the active worker stalls (SIGSTOP) inside an entry
tick, with a warm standby of the other colour waiting. The standby does not wait for a tick
of anyone's: it takes the lease about a second after the stalled holder's last renewal (the
lease, 1 s by default, plus its 100 ms look), and trades on. The stalled worker, resumed,
posts nothing (its deadline passed on its own monotonic clock, and its heartbeat finds the
lease lost) and stands down; supervisor starts it again, into standby.

The sim's fault injection holds the entry tick's `POST /books` answer for a moment (the
rendezvous of tests/e2e/test_lease_deadline.py): the worker is stopped inside its entry tick,
between its snapshot read and its commits.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from baton import settings as settings_mod
from deploy import releases
from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants
from tests.e2e.test_lease_deadline import _orders_by_id, _stall_in_entry_tick, _worker_pid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TICK_MS = 1000
# What the takeover may take after the stop: the lease (1 s) from the last renewal (at most a
# renewal interval before the stop) and the standby's look (0.1 s) make ~1.1-1.35 s; the rest
# is room for a loaded machine (2 cores shared by many stacks).
TAKEOVER_BOUND_MS = 2500


def _lease_log(st: Stack) -> list[dict[str, str]]:
    return [f for _id, f in st.redis.xrange("baton:lease:log")]


def test_a_stalled_holder_is_taken_over_within_its_lease_and_posts_nothing_when_resumed():
    st = Stack(BATON_TICK_MS=str(TICK_MS), **TRADING)
    s = settings_mod.load(st.env)
    assert (s.lease_ms, s.lease_renew_ms) == (1000, 250)
    sim = httpx.Client(base_url=st.clob_url, timeout=30)
    stopped: list[int] = []
    try:
        st.start()
        wait_for(lambda: len(st.sim_orders()) >= 1, 90, "the worker trading")
        releases.point(st.home, "green", releases.pointed(st.home, "blue") or "")
        st.supervisor("startProcess", "worker-green", True)
        wait_for(lambda: st.redis.hget("baton:worker:green", "state") == "ready", 90, "green in standby")
        blue = _worker_pid(st, "blue")
        epoch = int(st.redis.hget("baton:lease", "epoch"))
        assert _lease_log(st)[-1]["epoch"] == str(epoch) and _lease_log(st)[-1]["color"] == "blue"

        stopped_ms, journaled = _stall_in_entry_tick(st, sim, blue)
        stopped.append(blue)
        # The last renewal blue made before the stop (the lease runs lease_ms from it).
        renewed_ms = int(st.redis.hget("baton:lease", "expires_ms")) - s.lease_ms
        before = set(_orders_by_id(st))

        def taken() -> dict[str, str] | None:
            got = [f for f in _lease_log(st) if int(f["epoch"]) > epoch]
            return got[0] if got else None

        entry = wait_for(taken, 30, "green taking the lease")
        assert (entry["color"], entry["how"], entry["host"]) == ("green", "acquired", s.host), entry
        assert entry["prev_holder"].startswith("blue:")
        green_epoch = int(entry["epoch"])
        took_ms = int(entry["at_ms"]) - stopped_ms
        since_renewal_ms = int(entry["at_ms"]) - renewed_ms
        print(f"takeover {took_ms} ms after the stop, {since_renewal_ms} ms after the last renewal")
        # Never before the lease expired (blue was alive: no dead-holder shortcut) ...
        assert since_renewal_ms >= s.lease_ms, (since_renewal_ms, entry)
        # ... and not a tick's worth of waiting after it.
        assert took_ms <= TAKEOVER_BOUND_MS, (took_ms, since_renewal_ms)
        wait_for(
            lambda: len([e for e in invariants.journal(st.redis) if int(e["epoch"]) == green_epoch]) >= 3,
            30,
            "green ticking",
        )

        # Resumed: blue finds the lease lost (its heartbeat or its tick), posts nothing, and
        # stands down (exit 3); supervisor starts it again, into standby.
        os.kill(blue, signal.SIGCONT)
        stopped.remove(blue)
        wait_for(lambda: _worker_pid(st, "blue") not in (0, blue), 60, "blue restarted, its lease lost")
        wait_for(lambda: st.redis.hget("baton:worker:blue", "state") == "ready", 90, "blue in standby again")
        wait_for(lambda: len(set(_orders_by_id(st)) - before) >= 1, 60, "green's orders")
        by_order = {i.order_id: i for i in invariants.redis_intents(st.redis) if i.order_id}
        after = set(_orders_by_id(st)) - before
        late = {oid: by_order[oid].epoch if oid in by_order else None for oid in after}
        assert set(late.values()) == {green_epoch}, f"orders after blue's stall not from green: {late}"
        # Nothing of blue's epoch was committed after the stop (its fenced writes were refused).
        stale = [i.id for i in by_order.values() if i.epoch == epoch and i.created_ms > stopped_ms]
        assert not stale, stale
        # Blue's stalled tick was never journaled: the journal is fenced by the epoch too.
        rep = invariants.check_ticks(invariants.journal(st.redis))
        assert [c for c, _, _ in rep.runs][-1] == "green" and green_epoch in rep.epochs, rep.runs
        assert all(
            int(e["tick"]) <= journaled for e in invariants.journal(st.redis) if int(e["epoch"]) == epoch
        )
        invariants.check_orders(st.redis, st.sim_orders())
    finally:
        for pid in stopped:  # never leave a stopped process behind
            os.kill(pid, signal.SIGCONT)
        sim.close()
        st.stop()
