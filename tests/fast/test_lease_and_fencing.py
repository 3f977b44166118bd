"""The lease and the fenced writes, run as real Lua on fakeredis."""

from __future__ import annotations

import pytest

from baton.errors import SchemaMismatch
from state.schema import incompatibility
from state.structs import TickRecord
from tests.factories import NOW, intent


async def test_first_worker_gets_epoch_one_and_a_second_is_refused(store):
    assert await store.acquire_lease("blue:1", "blue", "r1", NOW, 15_000) == (True, 1, "blue:1")
    got, epoch, holder = await store.acquire_lease("green:2", "green", "r2", NOW + 1000, 15_000)
    assert (got, epoch, holder) == (False, 1, "blue:1")


async def test_an_expired_lease_is_taken_with_a_larger_epoch(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 15_000)
    got, epoch, _ = await store.acquire_lease("green:2", "green", "r2", NOW + 15_001, 15_000)
    assert got and epoch == 2
    lease = await store.read_lease()
    assert lease["holder"] == "green:2" and lease["color"] == "green" and lease["epoch"] == "2"


async def test_renewal_is_refused_once_another_holder_took_over(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    assert await store.renew_lease("blue:1", 1, NOW + 500, 1000) == 1
    await store.acquire_lease("green:2", "green", "r2", NOW + 5000, 1000)
    assert await store.renew_lease("blue:1", 1, NOW + 5001, 1000) == 0


async def test_a_stale_epoch_intent_commit_is_rejected(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    assert await store.commit_intent(1, intent("a:1:entry", 1)) == "OK"
    # green takes the lease with a new epoch; blue wakes up late and tries to commit
    got, epoch, _ = await store.acquire_lease("green:2", "green", "r2", NOW + 2000, 1000)
    assert got and epoch == 2
    assert await store.commit_intent(1, intent("b:1:entry", 1)) == "STALE_EPOCH"
    assert await store.r.hexists(store.k.intents(), "b:1:entry") == 0
    assert await store.commit_intent(2, intent("b:1:entry", 2)) == "OK"


async def test_an_intent_id_commits_once(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    assert await store.commit_intent(1, intent()) == "OK"
    assert await store.commit_intent(1, intent()) == "DUPLICATE"
    assert len(await store.read_intents(open_only=True)) == 1


async def test_the_halt_flag_blocks_commits_and_garbage_in_it_fails_safe(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    await store.set_halt("operator", NOW)
    assert await store.commit_intent(1, intent("a:1:entry")) == "HALTED"
    await store.clear_halt(NOW)
    assert await store.commit_intent(1, intent("b:1:entry")) == "OK"
    await store.r.hset(store.k.control(), "halted", "banana")
    assert await store.commit_intent(1, intent("c:1:entry")) == "HALTED"
    flags = await store.read_control()
    assert flags.halted and "banana" in flags.problems[0]


async def _ready(store, color: str, holder: str) -> None:
    await store.heartbeat(color, {"holder": holder, "state": "ready"}, ttl_ms=60_000)


async def test_planned_transfer_hands_the_lease_over_with_epoch_plus_one(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    await _ready(store, "green", "green:2")
    await store.request_handover("h1", {"to_holder": "green:2", "to_color": "green", "to_release": "r2"})
    assert await store.transfer_lease("blue:1", 1, "h1", "green:2", "green", 41, NOW + 10, 1000) == (2, "")
    assert await store.renew_lease("blue:1", 1, NOW + 20, 1000) == 0
    assert await store.renew_lease("green:2", 2, NOW + 20, 1000) == 1
    lease = await store.read_lease()
    assert (lease["holder"], lease["color"], lease["release"]) == ("green:2", "green", "r2")
    h = await store.r.hgetall(store.k.handover())
    assert (h["state"], h["tick"], h["epoch"], h["from_epoch"]) == ("done", "41", "2", "1")
    # The gap after tick 41 is a handover, not a crash; the successor was woken.
    assert await store.read_stop_marks() == (None, 41)
    assert await store.wait_wake("green:2", 0.1)
    # Carried out once: the old holder cannot repeat it, nor can anyone without a request.
    assert await store.transfer_lease("blue:1", 1, "h1", "green:2", "green", 42, NOW, 1000) == (
        0,
        "NOT_HOLDER",
    )
    assert await store.transfer_lease("green:2", 2, "h1", "blue:9", "blue", 42, NOW, 1000) == (
        0,
        "NO_REQUEST",
    )


async def test_transfer_to_a_successor_that_is_not_ready_is_refused_and_reported(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    await store.request_handover("h1", {"to_holder": "green:2", "to_color": "green", "to_release": "r2"})
    assert await store.transfer_lease("blue:1", 1, "h1", "green:2", "green", 5, NOW, 1000) == (0, "NOT_READY")
    assert (await store.read_lease())["holder"] == "blue:1"
    assert (await store.r.hget(store.k.handover(), "state")) == "refused"


async def test_a_cancelled_request_cannot_be_carried_out_and_a_done_one_cannot_be_cancelled(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    await _ready(store, "green", "green:2")
    await store.request_handover("h1", {"to_holder": "green:2", "to_color": "green", "to_release": "r2"})
    assert await store.cancel_handover("h1", "too slow", NOW) == "cancelled"
    assert await store.transfer_lease("blue:1", 1, "h1", "green:2", "green", 5, NOW, 1000) == (
        0,
        "NO_REQUEST",
    )
    await store.request_handover("h2", {"to_holder": "green:2", "to_color": "green", "to_release": "r2"})
    assert (await store.transfer_lease("blue:1", 1, "h2", "green:2", "green", 6, NOW, 1000))[0] == 2
    assert await store.cancel_handover("h2", "too slow", NOW) == "done"


async def test_a_dead_holder_named_by_the_caller_is_taken_over_before_expiry(store):
    await store.acquire_lease("blue:h:100:a", "blue", "r1", NOW, 60_000)
    got, _, holder = await store.acquire_lease("blue:h:101:b", "blue", "r1", NOW + 1, 60_000)
    assert not got and holder == "blue:h:100:a"
    # Naming another holder as dead does not help: only the current holder can be replaced.
    got, _, _ = await store.acquire_lease("blue:h:101:b", "blue", "r1", NOW + 1, 60_000, "blue:h:99:z")
    assert not got
    got, epoch, _ = await store.acquire_lease("blue:h:101:b", "blue", "r1", NOW + 1, 60_000, "blue:h:100:a")
    assert got and epoch == 2


async def test_schema_skew_rules(store):

    assert incompatibility(1, 1, 1, 1) is None
    assert incompatibility(1, 1, 2, 1) is None  # newer code reads older data
    assert "migrate" in incompatibility(1, 1, 3, 2)  # ...unless it dropped support for it
    assert incompatibility(3, 2, 2, 1) is None  # older code, declared able to read newer data
    assert "deploy a release of schema 3" in incompatibility(4, 3, 2, 1)
    assert await store.ensure_schema(version=2, reads_from=1, readable_by=1) == 2
    assert await store.adopt_schema(version=3, readable_by=2) == 3
    assert await store.ensure_schema(version=2, reads_from=1, readable_by=1) == 3
    with pytest.raises(SchemaMismatch, match="deploy a release of schema 2"):
        await store.ensure_schema(version=1, reads_from=1, readable_by=1)
    await store.r.set(store.k.schema_version(), "banana")
    with pytest.raises(SchemaMismatch, match="not version numbers"):
        await store.ensure_schema()


async def test_release_frees_the_lease_for_an_immediate_successor(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 60_000)
    assert await store.release_lease("blue:1", 1)
    got, epoch, _ = await store.acquire_lease("blue:2", "blue", "r1", NOW + 1, 60_000)
    assert got and epoch == 2


async def test_the_journal_takes_each_tick_once_and_never_from_a_stale_epoch(store):

    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)

    def rec(tick: int, epoch: int) -> TickRecord:
        return TickRecord(
            tick=tick,
            color="blue",
            release="r1",
            epoch=epoch,
            started_ms=NOW,
            duration_ms=3,
            jitter_ms=1,
            orders=0,
        )

    assert await store.append_tick(rec(10, 1)) == "OK"
    assert await store.append_tick(rec(10, 1)) == "DUPLICATE"
    await store.acquire_lease("green:2", "green", "r2", NOW + 5000, 1000)
    assert await store.append_tick(rec(11, 1)) == "STALE_EPOCH"
    entries = await store.r.xrange(store.k.journal_ticks())
    assert [e[1]["tick"] for e in entries] == ["10"]
    assert entries[0][1]["color"] == "blue" and entries[0][1]["epoch"] == "1"
