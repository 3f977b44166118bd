"""The lease and the fenced writes, run as real Lua on fakeredis."""

from __future__ import annotations

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


async def test_planned_transfer_hands_the_lease_over_with_epoch_plus_one(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    assert await store.transfer_lease("blue:1", 1, "green:2", "green", "r2", NOW + 10, 1000) == 2
    assert await store.renew_lease("blue:1", 1, NOW + 20, 1000) == 0
    assert await store.renew_lease("green:2", 2, NOW + 20, 1000) == 1
    assert await store.transfer_lease("blue:1", 1, "x", "blue", "r", NOW, 1000) == 0


async def test_release_frees_the_lease_for_an_immediate_successor(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 60_000)
    assert await store.release_lease("blue:1", 1)
    got, epoch, _ = await store.acquire_lease("blue:2", "blue", "r1", NOW + 1, 60_000)
    assert got and epoch == 2


async def test_the_journal_takes_each_tick_once_and_never_from_a_stale_epoch(store):
    from state.structs import TickRecord

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
