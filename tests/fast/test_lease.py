"""The Lease type and its owner (kernel/lease.py): decoding the hash, liveness at and around
the expiry, dead holders, which colour should trade, and taking, renewing, handing over and
releasing the lease through the real Lua scripts on fakeredis."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import fakeredis
import pytest

from baton.settings import load
from control.views import collect
from kernel.clock import VirtualClock
from kernel.lease import (
    Lease,
    acquire,
    active_color,
    dead_holder,
    decode_lease,
    fetch_lease,
    holder_pid,
    lease_color,
    new_holder,
    process_alive,
    read_lease,
    release,
    renew,
    renewed,
    trades_elsewhere,
    transfer,
)
from state.keys import Keys
from tests.factories import NOW

K = Keys("baton:")
HOST = "h1"  # Settings.host (BATON_HOST)
FULL = {
    "holder": "blue:h:1:x",
    "color": "blue",
    "release": "r1",
    "epoch": "7",
    "expires_ms": str(NOW + 3000),
    "acquired_ms": str(NOW),
}


@pytest.fixture
def r(fake_server):
    return fakeredis.FakeRedis(server=fake_server, decode_responses=True)


def test_a_lease_is_live_until_its_expiry_and_not_at_it():
    lease = Lease(holder="blue:h:1:x", color="blue", release="r1", epoch=1, expires_ms=NOW)
    assert lease.live(NOW - 1)
    assert not lease.live(NOW)
    assert not lease.live(NOW + 1)


def test_a_lease_without_a_holder_is_never_live():
    assert not Lease(expires_ms=NOW + 60_000).live(NOW)


def test_a_whole_hash_decodes_to_every_field():
    assert decode_lease(FULL) == Lease(
        holder="blue:h:1:x", color="blue", release="r1", epoch=7, expires_ms=NOW + 3000, acquired_ms=NOW
    )


def test_no_hash_decodes_to_none():
    assert decode_lease({}) is None
    assert decode_lease(None) is None


@pytest.mark.parametrize("garbage", ["", "banana", "2.5", "1e3"])
def test_numbers_that_are_not_integers_decode_to_zero_and_an_expiry_of_zero_is_not_live(garbage):
    lease = decode_lease({**FULL, "epoch": garbage, "expires_ms": garbage})
    assert lease is not None and (lease.epoch, lease.expires_ms) == (0, 0)
    assert lease.holder == "blue:h:1:x" and not lease.live(NOW)


def test_missing_fields_decode_to_empty_and_zero():
    assert decode_lease({"color": "green"}) == Lease(color="green")
    assert not decode_lease({"color": "green"}).live(NOW)


def test_the_lease_is_read_from_its_hash(r):
    assert read_lease(r, K) is None
    r.hset(K.lease(), mapping=FULL)
    assert read_lease(r, K) == decode_lease(FULL)


def test_a_holder_id_names_the_configured_host_and_this_process():
    host, pid = holder_pid(new_holder("green", HOST))
    assert (host, pid) == (HOST, os.getpid())
    assert new_holder("green", HOST).startswith("green:h1:")
    assert new_holder("green", HOST) != new_holder("green", HOST)
    # Network namespaces share the machine's host name: the setting names the host.
    assert load({"BATON_HOST": "h2"}).host == "h2"


@pytest.mark.parametrize("holder", ["", "blue:1", "blue:h:notapid:x", "a:b:c:d:e"])
def test_holder_ids_of_another_form_name_no_process(holder):
    assert holder_pid(holder) is None


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid


def test_a_process_is_alive_until_it_has_exited():
    assert process_alive(os.getpid())
    assert not process_alive(_dead_pid())


def test_a_holder_whose_process_is_gone_from_this_host_is_dead():
    holder = f"blue:{HOST}:{_dead_pid()}:x"
    assert dead_holder(Lease(holder=holder), new_holder("green", HOST)) == holder


def test_a_living_holder_ourselves_another_host_or_no_lease_is_not_dead():
    me = new_holder("green", HOST)
    dead = _dead_pid()
    assert dead_holder(Lease(holder=f"blue:{HOST}:{os.getppid()}:x"), me) == ""
    assert dead_holder(Lease(holder=me), me) == ""
    # Another host's process table is not ours to look at (the same pid may exist here).
    assert dead_holder(Lease(holder=f"blue:h2:{dead}:x"), me) == ""
    assert dead_holder(Lease(holder="blue:1"), me) == ""
    assert dead_holder(Lease(holder=f"blue:{HOST}:{dead}:x"), "green:1") == ""
    assert dead_holder(None, me) == ""


def test_the_lease_names_its_colour_live_or_expired(r):
    assert lease_color(r, K) == ""
    r.hset(K.lease(), mapping={**FULL, "expires_ms": "1"})
    assert lease_color(r, K) == "blue"


def test_the_active_colour_is_the_leases_else_the_last_good_deploys_else_blue(r):
    assert active_color(r, K) == "blue"
    r.xadd(K.deploys(), {"kind": "deploy", "color": "green", "result": "ok"})
    r.xadd(K.deploys(), {"kind": "deploy", "color": "blue", "result": "failed"})
    assert active_color(r, K) == "green"
    r.hset(K.lease(), "color", "blue")
    assert active_color(r, K) == "blue"
    r.hset(K.lease(), "color", "purple")
    assert active_color(r, K) == "green"


def test_another_live_holder_trades_elsewhere_unless_it_is_us_expired_or_dead():
    other = Lease(holder="blue:h2:1:x", expires_ms=NOW + 1)
    assert trades_elsewhere(other, "green:h1:2:y", NOW)
    assert not trades_elsewhere(other, other.holder, NOW)
    assert not trades_elsewhere(other, "green:h1:2:y", NOW + 1)
    assert not trades_elsewhere(None, "green:h1:2:y", NOW)
    dead = Lease(holder=f"blue:{HOST}:{_dead_pid()}:x", expires_ms=NOW + 60_000)
    assert not trades_elsewhere(dead, "green:h1:2:y", NOW)


async def test_the_first_worker_takes_the_lease_with_epoch_one_and_names_nobody_before(store):
    got = await acquire(store, VirtualClock(NOW), "blue:h:1:x", "blue", "r1", 3000)
    assert (got.held, got.epoch, got.holder, got.before, got.dead) == (True, 1, "blue:h:1:x", "", "")
    assert await fetch_lease(store) == Lease(
        holder="blue:h:1:x", color="blue", release="r1", epoch=1, expires_ms=NOW + 3000, acquired_ms=NOW
    )


async def test_a_live_holder_keeps_the_lease_and_a_later_taker_sees_it_until_it_expires(store):
    clock = VirtualClock(NOW)
    await acquire(store, clock, "blue:elsewhere:1:x", "blue", "r1", 3000)
    clock.advance(2999)
    got = await acquire(store, clock, "green:h:2:y", "green", "r2", 3000)
    assert (got.held, got.epoch, got.holder) == (False, 1, "blue:elsewhere:1:x")
    clock.advance(1)
    got = await acquire(store, clock, "green:h:2:y", "green", "r2", 3000)
    assert (got.held, got.epoch, got.before, got.dead) == (True, 2, "blue:elsewhere:1:x", "")


async def test_a_holder_dead_on_this_host_is_taken_over_before_its_expiry(store):
    clock = VirtualClock(NOW)
    holder = f"blue:{HOST}:{_dead_pid()}:x"
    await acquire(store, clock, holder, "blue", "r1", 60_000)
    got = await acquire(store, clock, f"blue:{HOST}:3:z", "blue", "r1", 60_000)
    assert (got.held, got.epoch, got.before, got.dead) == (True, 2, holder, holder)


async def test_a_renewal_queued_on_a_pipeline_extends_the_lease_in_the_same_round_trip(store):
    await acquire(store, VirtualClock(NOW), "blue:h:1:x", "blue", "r1", 3000)

    def build(pipe):
        renew(store, "blue:h:1:x", 1, NOW + 1000, 3000, pipeline=pipe)
        pipe.hgetall(store.k.control())

    reply, control = await store.run_pipeline(build)
    assert renewed(reply) and control == {}
    assert (await fetch_lease(store)).expires_ms == NOW + 4000


async def test_a_renewal_of_a_lease_taken_over_is_refused(store):
    clock = VirtualClock(NOW)
    await acquire(store, clock, "blue:h:1:x", "blue", "r1", 1000)
    clock.advance(1000)
    await acquire(store, clock, "green:h:2:y", "green", "r2", 1000)
    assert not renewed(await renew(store, "blue:h:1:x", 1, clock.now_ms(), 1000))
    assert (await fetch_lease(store)).holder == "green:h:2:y"


async def test_a_handover_request_as_read_with_the_tick_moves_the_lease_with_epoch_plus_one(store):
    await acquire(store, VirtualClock(NOW), "blue:h:1:x", "blue", "r1", 1000)
    await store.heartbeat("green", {"holder": "green:h:2:y", "state": "ready"}, ttl_ms=60_000)
    await store.request_handover("h1", {"to_holder": "green:h:2:y", "to_color": "green", "to_release": "r2"})
    request = await store.r.hgetall(store.k.handover())
    assert await transfer(store, "blue:h:1:x", 1, request, 41, NOW + 10, 1000) == (2, "")
    lease = await fetch_lease(store)
    assert (lease.holder, lease.color, lease.release, lease.epoch) == ("green:h:2:y", "green", "r2", 2)
    assert lease.expires_ms == NOW + 1010 and lease.live(NOW + 1009)
    assert await transfer(store, "blue:h:1:x", 1, request, 42, NOW + 20, 1000) == (0, "NOT_HOLDER")


async def test_a_handover_to_a_successor_that_is_not_ready_is_refused(store):
    await acquire(store, VirtualClock(NOW), "blue:h:1:x", "blue", "r1", 1000)
    await store.request_handover("h1", {"to_holder": "green:h:2:y", "to_color": "green", "to_release": "r2"})
    request = await store.r.hgetall(store.k.handover())
    assert await transfer(store, "blue:h:1:x", 1, request, 5, NOW, 1000) == (0, "NOT_READY")
    assert (await fetch_lease(store)).holder == "blue:h:1:x"


async def test_release_gives_up_only_our_own_lease(store):
    clock = VirtualClock(NOW)
    await acquire(store, clock, "blue:h:1:x", "blue", "r1", 60_000)
    assert not await release(store, "green:h:2:y")
    assert (await fetch_lease(store)).holder == "blue:h:1:x"
    assert await release(store, "blue:h:1:x")
    assert await fetch_lease(store) is None
    assert not await release(store, "blue:h:1:x")
    got = await acquire(store, clock, "green:h:2:y", "green", "r2", 60_000)
    assert got.held and got.epoch == 2


def test_status_shows_the_live_lease_and_no_active_worker_for_an_expired_or_garbage_one(r, tmp_path):
    s = load({"BATON_HOME": str(tmp_path)})
    now_ms = int(time.time() * 1000)
    r.hset(K.lease(), mapping={**FULL, "expires_ms": str(now_ms + 60_000)})
    active = {"color": "blue", "release": "r1", "epoch": 7, "holder": "blue:h:1:x"}
    assert collect(s, r)["active"] == active
    r.hset(K.lease(), "epoch", "banana")
    assert collect(s, r)["active"] == {**active, "epoch": 0}
    for expires in (str(now_ms - 1), "banana", ""):
        r.hset(K.lease(), "expires_ms", expires)
        assert collect(s, r)["active"] is None
