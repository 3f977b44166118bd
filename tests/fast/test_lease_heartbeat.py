"""The lease heartbeat (kernel/lease_heartbeat.py): the holder renews on a cadence of its own,
beside the tick; a refused renewal drops the deadline (nothing is posted) and stands the worker
down even while it sleeps to a far boundary; a failed one drops the deadline until a renewal
succeeds; one the replicas did not acknowledge extends nothing; the standby takes the lease only
once its acquisition is acknowledged. And the lease log every new epoch lands in."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import msgspec
import pytest
import redis
import redis.asyncio

from baton.errors import LeaseDeadlinePassed
from baton.settings import load
from bench.redis_server import RedisServer
from kernel import executor, lease
from kernel.clock import SystemClock, VirtualClock, monotonic_ms
from kernel.lease import LeaseDeadline, fetch_lease
from kernel.lease_heartbeat import LeaseHeartbeat
from state import replication
from state.keys import Keys
from state.store import Store
from tests.fast.test_lease_deadline import Venue, intents, take_lease
from worker import standby
from worker.lifecycle import EXIT_LOST_LEASE, Worker

HOLDER = "blue:h1:1:x"


def settings(**env: str):
    return load({"BATON_LEASE_MS": "1000", "BATON_LEASE_RENEW_MS": "40", **env})


async def until(cond, timeout_s: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def unacknowledged(monkeypatch) -> None:
    """WAIT answers 0 replicas (fakeredis has no WAIT: ECHO stands in for it)."""

    def queue_wait(s, pipeline):
        if not replication.wanted(s):
            return False
        pipeline.execute_command("ECHO", "0")
        return True

    monkeypatch.setattr(replication, "queue_wait", queue_wait)


async def test_the_holder_renews_on_its_own_cadence_and_each_renewal_rearms_the_deadline(store):
    s = settings()
    epoch = await take_lease(store, HOLDER, ttl_ms=s.lease_ms)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch)
    assert d.passed()
    started = monotonic_ms()
    hb.start()
    try:
        await until(lambda: hb.renewed >= 6, what="six renewals")
        elapsed = monotonic_ms() - started
    finally:
        await hb.stop()
    # Six renewals, the first at once: five intervals of 40 ms at least, and not bunched up.
    assert elapsed >= 5 * 40 * 0.9, elapsed
    assert 0 < d.remaining_ms() <= s.lease_ms - s.lease_margin_ms
    held = await fetch_lease(store)
    assert held is not None and held.holder == HOLDER and held.live(int(time.time() * 1000))
    assert hb.failed == hb.unacked == 0 and not hb.lost.is_set()


async def test_a_refused_renewal_drops_the_deadline_at_once_and_nothing_is_posted(store):
    s = settings()
    epoch = await take_lease(store, HOLDER, ttl_ms=s.lease_ms)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch)
    hb.start()
    try:
        await until(lambda: hb.renewed >= 1, what="a renewal")
        assert not d.passed()
        # Another worker took over (a newer epoch): the next renewal is refused.
        await store.r.incr(store.k.lease_epoch())
        await store.r.hset(store.k.lease(), mapping={"holder": "green:h2:2:y", "epoch": epoch + 1})
        await asyncio.wait_for(hb.lost.wait(), 5)
    finally:
        await hb.stop()
    assert d.passed() and "no longer ours" in hb.why
    with pytest.raises(LeaseDeadlinePassed, match="no lease held"):
        d.check()
    venue = Venue()
    sent, problems = await executor.commit_and_submit(store, venue, epoch, intents(epoch, 2), deadline=d)
    assert sent == 0 and venue.posted == [] and all("lease deadline passed" in p for p in problems)


async def test_a_failed_renewal_drops_the_deadline_until_one_succeeds_again(store, fake_server):
    s = settings()
    epoch = await take_lease(store, HOLDER, ttl_ms=60_000)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch)
    assert (await hb.renew_once()).acked and not d.passed()
    fake_server.connected = False  # Redis unreachable
    try:
        assert await hb.renew_once() is None
    finally:
        fake_server.connected = True
    assert d.passed() and hb.failed == 1 and not hb.lost.is_set()
    assert (await hb.renew_once()).acked and not d.passed()


async def test_a_renewal_that_hangs_past_the_lease_is_given_up_and_the_deadline_dropped(store):
    # A partition: the renewal's packets go nowhere. Given up after the lease, not the
    # socket timeout; the deadline had passed on its own by then, and is now dropped.
    s = settings(BATON_LEASE_MS="200", BATON_LEASE_RENEW_MS="40")
    epoch = await take_lease(store, HOLDER, ttl_ms=60_000)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch)
    assert (await hb.renew_once()).acked

    async def hang(build):
        await asyncio.sleep(30)

    store.run_pipeline = hang
    started = monotonic_ms()
    assert await hb.renew_once() is None
    assert monotonic_ms() - started < 5_000 and d.passed() and hb.failed == 1
    with pytest.raises(LeaseDeadlinePassed, match="no lease held"):
        d.check()


async def test_an_unacknowledged_renewal_does_not_extend_the_deadline(store, monkeypatch):
    s = settings(BATON_REDIS_MIN_REPLICAS="1")
    epoch = await take_lease(store, HOLDER, ttl_ms=s.lease_ms)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch)
    # Acknowledged (ECHO 1 stands for one replica): armed.
    monkeypatch.setattr(replication, "queue_wait", lambda s, p: bool(p.execute_command("ECHO", "1")) or True)
    assert (await hb.renew_once()).acked
    armed = d.remaining_ms()
    unacknowledged(monkeypatch)
    await asyncio.sleep(0.02)
    got = await hb.renew_once()
    assert got is not None and got.ours and not got.acked and "acknowledged by 0 replica" in got.why
    # The renewal reached the primary (ours still), but the deadline kept its older stamp.
    assert d.remaining_ms() < armed and hb.unacked == 1 and not hb.lost.is_set()


async def test_an_unacknowledged_acquisition_is_held_but_not_traded_on(store, monkeypatch):
    s = settings(BATON_REDIS_MIN_REPLICAS="1")
    unacknowledged(monkeypatch)
    clock = VirtualClock(1_800_000_000_000)
    got = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000, s)
    assert got.held and not got.acked and got.epoch == 1 and "acknowledged by 0 replica" in got.why
    # Asked again, the same epoch (ours): no new epoch for a retry.
    got = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000, s)
    assert got.held and not got.acked and got.epoch == 1
    # Without replicas to wait for, every acquisition is acknowledged.
    got = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000, settings())
    assert got.held and got.acked


async def test_a_standby_looks_with_one_read_while_another_holds_a_live_lease(store):
    clock = VirtualClock(1_800_000_000_000)
    await lease.acquire(store, clock, HOLDER, "blue", "r1", 1000)
    seen: list[str] = []

    async def spy(*args, **kwargs):
        seen.append("script")
        raise AssertionError("no script while the lease is live elsewhere")

    real = store.run_pipeline
    store.run_pipeline = spy
    try:
        got = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000)
    finally:
        store.run_pipeline = real
    assert (got.held, got.holder, got.epoch, seen) == (False, HOLDER, 1, [])
    assert got.expires_ms == clock.now_ms() + 1000  # where the standby aims its next look
    clock.advance(1000)  # expired: taken with epoch + 1
    got = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000)
    assert got.held and got.epoch == 2 and got.before == HOLDER


async def test_every_new_epoch_is_logged_with_its_host_and_how(store):
    clock = VirtualClock(1_800_000_000_000)
    await lease.acquire(store, clock, HOLDER, "blue", "r1", 1000)
    await lease.acquire(store, clock, HOLDER, "blue", "r1", 1000)  # ours again: no new epoch
    clock.advance(1000)
    await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", 1000)
    await store.heartbeat("blue", {"holder": "blue:h1:3:z", "state": "ready"}, ttl_ms=60_000)
    await store.request_handover("d1", {"to_holder": "blue:h1:3:z", "to_color": "blue", "to_release": "r3"})
    request = await store.r.hgetall(store.k.handover())
    assert await lease.transfer(store, "green:h2:2:y", 2, request, 7, clock.now_ms() + 5, 1000) == (3, "")
    log = [f for _id, f in await store.r.xrange(store.k.lease_log())]
    assert [(f["epoch"], f["holder"], f["host"], f["color"], f["how"]) for f in log] == [
        ("1", HOLDER, "h1", "blue", "acquired"),
        ("2", "green:h2:2:y", "h2", "green", "acquired"),
        ("3", "blue:h1:3:z", "h1", "blue", "transferred"),
    ]
    assert log[1]["prev_holder"] == HOLDER and log[1]["at_ms"] == str(clock.now_ms())
    assert log[2]["prev_holder"] == "green:h2:2:y" and log[2]["prev_expires_ms"] == str(clock.now_ms() + 1000)


async def test_a_renewal_never_shortens_the_lease(store):
    await lease.acquire(store, VirtualClock(1_800_000_000_000), HOLDER, "blue", "r1", 1000)
    assert lease.renewed(await lease.renew(store, HOLDER, 1, 1_800_000_000_500, 1000))
    # An older renewal arriving last (another connection) leaves the later expiry.
    assert lease.renewed(await lease.renew(store, HOLDER, 1, 1_800_000_000_100, 1000))
    assert (await fetch_lease(store)).expires_ms == 1_800_000_001_500


class FarClock(VirtualClock):
    """Ticks never come: only the heartbeat can end the worker's sleep."""

    async def sleep_until_ms(self, t_ms: int) -> None:
        await asyncio.Event().wait()


async def test_a_lost_lease_stands_the_worker_down_while_it_sleeps_to_the_next_tick(rig):
    await rig.store.release_lease("blue:t", rig.epoch)
    s = msgspec.structs.replace(rig.settings, lease_renew_ms=30)
    w = Worker(s, rig.store, rig.venue, FarClock(rig.clock.now_ms()), "blue")
    run = asyncio.ensure_future(w.run())
    try:
        await until(lambda: w.state == "active" and w.heartbeat is not None and w.heartbeat.renewed >= 1)
        assert not w.deadline.passed()
        await rig.store.r.incr(rig.store.k.lease_epoch())
        await rig.store.r.hset(rig.store.k.lease(), mapping={"holder": "green:h2:2:y", "epoch": w.epoch + 1})
        assert await asyncio.wait_for(run, 10) == EXIT_LOST_LEASE
    finally:
        run.cancel()
    assert w.state == "lost-lease" and w.deadline.passed()
    assert (await fetch_lease(rig.store)).holder == "green:h2:2:y"  # left alone


# --- WAIT against a real replica ------------------------------------------------------------------
@pytest.fixture
def primary_and_replica():
    """A redis-server primary and its replica on loopback; the replica's process is the
    second item (SIGSTOP it: WAIT then times out with 0 acknowledgements)."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed: `make bootstrap` installs it")
    with RedisServer(aof=False) as primary, RedisServer(aof=False) as replica:
        sync = redis.Redis(port=replica.port, decode_responses=True)
        sync.replicaof("127.0.0.1", primary.port)
        try:
            deadline = time.monotonic() + 20
            while sync.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
            yield primary, replica.proc
        finally:
            sync.close()


async def test_with_a_real_replica_only_acknowledged_leases_and_renewals_count(primary_and_replica):
    primary, replica = primary_and_replica
    s = settings(BATON_REDIS_MIN_REPLICAS="1", BATON_REDIS_WAIT_MS="100")
    client = redis.asyncio.Redis(port=primary.port, decode_responses=True)
    store = Store(client, Keys("baton:"))
    try:
        await store.scripts.load()
        clock = SystemClock()
        got = await lease.acquire(store, clock, HOLDER, "blue", "r1", s.lease_ms, s)
        assert got.held and got.acked
        d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
        hb = LeaseHeartbeat(s, store, clock, d, HOLDER, got.epoch)
        assert (await hb.renew_once()).acked and not d.passed()
        armed = d.remaining_ms()
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            got_renewal = await hb.renew_once()
            assert got_renewal is not None and got_renewal.ours and not got_renewal.acked
            assert d.remaining_ms() < armed  # not extended
            # A standby taking the expired lease meanwhile holds it but may not trade on it.
            await store.r.hset(store.k.lease(), "expires_ms", 1)
            taken = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", s.lease_ms, s)
            assert taken.held and not taken.acked and taken.epoch == got.epoch + 1
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # The replica back: the standby's next look is acknowledged (same epoch), and the old
        # holder's renewal is refused.
        again = await lease.acquire(store, clock, "green:h2:2:y", "green", "r2", s.lease_ms, s)
        assert again.held and again.acked and again.epoch == taken.epoch
        refused = await hb.renew_once()
        assert refused is not None and not refused.ours and hb.lost.is_set() and d.passed()
    finally:
        await client.aclose()


async def test_a_standby_whose_redis_times_out_stands_by_and_takes_the_lease_after(rig, monkeypatch):
    # The primary cut off from the standby's host: its looks time out (no RST on a cut link)
    # or hang, then a new primary refuses writes until its replica caught up (NOREPLICAS).
    # Dying of it would cost the takeover a restart and a warm-up; hanging, the socket's
    # timeout (two ticks).
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    monkeypatch.setattr(standby, "STANDBY_LOOK_MS", 300)
    w = Worker(rig.settings, rig.store, rig.venue, rig.clock, "green")
    wakes: list[str] = []
    looks: list[str] = []
    beats: list[str] = []
    real_wake, real_acquire, real_heartbeat = rig.store.wait_wake, lease.acquire, rig.store.heartbeat

    async def cut_wake(holder, timeout_s):
        wakes.append("wake")
        if len(wakes) <= 2:
            raise RedisTimeoutError("Timeout reading from 10.78.2.11:7379")
        if len(wakes) == 3:
            await asyncio.Event().wait()  # no answer, no error: dropped after STANDBY_LOOK_MS
        return await real_wake(holder, timeout_s)

    async def cut_acquire(*args, **kwargs):
        looks.append("look")
        if len(looks) == 2:
            raise RedisConnectionError("Error 113 connecting to 10.78.2.11:7379. No route to host.")
        if len(looks) == 3:
            raise ResponseError("NOREPLICAS Not enough good replicas to write.")
        return await real_acquire(*args, **kwargs)

    async def refused_heartbeat(*args, **kwargs):
        beats.append("beat")
        if len(beats) == 1:
            raise ResponseError("NOREPLICAS Not enough good replicas to write.")
        return await real_heartbeat(*args, **kwargs)

    monkeypatch.setattr(rig.store, "wait_wake", cut_wake)
    monkeypatch.setattr(rig.store, "heartbeat", refused_heartbeat)
    monkeypatch.setattr(lease, "acquire", cut_acquire)
    task = asyncio.ensure_future(w.acquire())
    try:
        await until(lambda: len(wakes) >= 4 and len(looks) >= 4 and beats, what="the failed looks")
        assert not task.done() and w.state == "ready"  # still standing by
        await rig.store.release_lease("blue:t", rig.epoch)  # the holder is gone
        assert await asyncio.wait_for(task, 10) is True
    finally:
        task.cancel()
    assert w.state == "active" and w.epoch == rig.epoch + 1


async def test_a_handover_that_meets_a_redis_error_keeps_the_holder_renewing(rig, monkeypatch):
    # Mid-failover the transfer's round trip may fail: the worker neither dies of it nor
    # stops renewing (its lease would then run out while it is still the holder).
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def cut_transfer(*args, **kwargs):
        raise RedisConnectionError("Error 113 connecting to 10.78.2.11:7379. No route to host.")

    monkeypatch.setattr(lease, "transfer", cut_transfer)
    s = msgspec.structs.replace(rig.settings, lease_renew_ms=30)
    w = Worker(s, rig.store, rig.venue, rig.clock, "blue")
    w.holder, w.epoch = "blue:t", rig.epoch
    w.heartbeat = LeaseHeartbeat(s, rig.store, rig.clock, w.deadline, w.holder, w.epoch)
    w.heartbeat.start()
    try:
        req = {"id": "h1", "to_holder": "green:2", "to_color": "green", "state": "requested"}
        assert await w.hand_over(req, 41) is False
        before = w.heartbeat.renewed
        await until(lambda: w.heartbeat is not None and w.heartbeat.renewed > before, what="a renewal")
        assert not w.heartbeat.lost.is_set()
    finally:
        await w.heartbeat.stop()


async def test_a_hung_tick_loop_lets_the_lease_go(store):
    # The loop stops calling progress() (a tick that never returns): renewals stop after
    # stall_ms, the deadline is dropped and the lease expires for a standby.
    s = settings()
    epoch = await take_lease(store, HOLDER, ttl_ms=s.lease_ms)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch, stall_ms=600)
    hb.start()
    try:
        await until(lambda: hb.renewed >= 1, what="a first renewal")
        await until(lambda: hb.lost.is_set(), what="the lease let go")
        renewed = hb.renewed
        assert d.passed() and "no progress" in hb.why
        await asyncio.sleep(s.lease_renew_ms * 3 / 1000)
        assert hb.renewed == renewed  # no renewal after it
    finally:
        await hb.stop()


async def test_a_ticking_loop_keeps_its_lease_past_the_stall_limit(store):
    s = settings()
    epoch = await take_lease(store, HOLDER, ttl_ms=s.lease_ms)
    d = LeaseDeadline(s.lease_ms, s.lease_margin_ms)
    hb = LeaseHeartbeat(s, store, SystemClock(), d, HOLDER, epoch, stall_ms=600)
    hb.start()
    try:
        started = monotonic_ms()
        while monotonic_ms() - started < 1500:
            hb.progress()
            await asyncio.sleep(0.05)
        assert not hb.lost.is_set() and not d.passed()
    finally:
        await hb.stop()
