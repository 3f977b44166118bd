"""The Lease type and its owner (kernel/lease.py): decoding the hash, liveness at and around
the expiry, dead holders, and which colour should trade."""

from __future__ import annotations

import os
import subprocess
import sys

import fakeredis
import pytest

from kernel.lease import (
    Lease,
    active_color,
    dead_holder,
    decode_lease,
    holder_pid,
    lease_color,
    new_holder,
    process_alive,
    read_lease,
    this_host,
)
from state.keys import Keys
from tests.factories import NOW

K = Keys("baton:")
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


def test_a_holder_id_names_this_host_and_process():
    host, pid = holder_pid(new_holder("green"))
    assert (host, pid) == (this_host(), os.getpid())
    assert new_holder("green").startswith("green:")
    assert new_holder("green") != new_holder("green")


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
    holder = f"blue:{this_host()}:{_dead_pid()}:x"
    assert dead_holder(Lease(holder=holder), "green:h:2:y") == holder


def test_a_living_holder_ourselves_another_host_or_no_lease_is_not_dead():
    me = new_holder("green")
    dead = _dead_pid()
    assert dead_holder(Lease(holder=f"blue:{this_host()}:{os.getppid()}:x"), me) == ""
    assert dead_holder(Lease(holder=me), me) == ""
    assert dead_holder(Lease(holder=f"blue:elsewhere-{this_host()}:{dead}:x"), me) == ""
    assert dead_holder(Lease(holder="blue:1"), me) == ""
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
