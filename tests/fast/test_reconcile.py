"""Exactly-once across a crash: a worker dies between committing an intent and learning
what the venue did with its order; the next lease holder looks the order up by the id
signed into the intent, and never sends it again."""

from __future__ import annotations

import httpx
import pytest

from kernel.reconcile import reconcile_open
from kernel.tick import Identity, TickRunner
from tests.fast.rig import Rig


class DiesAtPost:
    """The venue as a dying worker sees it: the post reaches the venue (or not), and the
    process is gone before it reads the answer."""

    def __init__(self, venue, reaches: bool) -> None:
        self.venue = venue
        self.reaches = reaches
        self.posted: list[str] = []

    def __getattr__(self, name):
        return getattr(self.venue, name)

    def post(self, signed, order_type="FOK", timeout_s=None):
        if self.reaches:
            self.venue.post(signed, order_type)
            self.posted.append(signed.order_id)
        raise ConnectionError("the worker died here")


def venue_orders(r: Rig) -> list[dict]:
    return httpx.get(f"{r.settings.clob_url}/data/orders").json()["data"]


async def _until_an_intent_is_committed(r: Rig) -> None:
    for _ in range(60):
        await r.run_ticks(1)
        if await r.store.read_intents(open_only=True):
            return
    raise AssertionError("no entry in 60 ticks with edge 0")


async def _take_over(r: Rig) -> int:
    """A successor takes the lease after the dead holder's expiry (epoch + 1)."""
    r.clock.advance(r.settings.lease_ms + 1)
    got, epoch, _ = await r.store.acquire_lease("green:s", "green", "t2", r.clock.now_ms(), 3000)
    assert got
    return epoch


@pytest.mark.parametrize("reaches", [False, True], ids=["post-never-arrived", "answer-lost"])
async def test_crash_between_commit_and_post_is_reconciled_with_exactly_one_order(rig, reaches):
    dying = DiesAtPost(rig.venue, reaches)
    assert rig.runner is not None
    rig.runner.venue = dying
    await _until_an_intent_is_committed(rig)
    stuck = await rig.store.read_intents(open_only=True)
    for i in stuck:
        assert i.order_id and i.status == "committed" and "died" in i.error
    ids = {i.order_id for i in stuck}
    assert len([o for o in venue_orders(rig) if o["id"] in ids]) == (len(stuck) if reaches else 0)

    epoch = await _take_over(rig)
    done, _ = await reconcile_open(rig.store, rig.venue, epoch, rig.clock.now_ms())
    assert done == len(stuck)
    assert not await rig.store.read_intents(open_only=True)
    intents = {i.id: i for i in await rig.store.read_intents()}
    positions = {p.intent_id: p for p in await rig.store.read_positions()}
    for i in stuck:
        got = intents[i.id]
        if reaches:
            # A FOK either filled (the position is booked) or was killed (nothing to book).
            assert got.status in ("filled", "failed")
            assert (got.status == "filled") == (i.id in positions)
        else:
            assert got.status == "failed" and "not re-sent" in got.error
            assert i.id not in positions
    if reaches:
        assert any(intents[i.id].status == "filled" for i in stuck)

    # The successor trades on: no stuck slot-window is ever entered again.
    rig.runner = TickRunner(
        rig.settings, rig.store, rig.venue, rig.clock, Identity("green:s", "green", "t2", epoch)
    )
    rig.epoch = epoch
    await rig.run_ticks(3)
    orders = venue_orders(rig)
    for i in stuck:
        same_window = [o for o in orders if o["market"] == i.condition_id]
        assert len(same_window) == (1 if reaches and intents[i.id].status == "filled" else 0)


async def test_a_venue_that_cannot_be_asked_leaves_the_intent_open_for_later(rig):
    class Down:
        def __getattr__(self, name):
            return getattr(rig.venue, name)

        def order(self, order_id):
            raise ConnectionError("venue unreachable")

    dying = DiesAtPost(rig.venue, reaches=True)
    assert rig.runner is not None
    rig.runner.venue = dying
    await _until_an_intent_is_committed(rig)
    stuck = await rig.store.read_intents(open_only=True)
    epoch = await _take_over(rig)
    done, problems = await reconcile_open(rig.store, Down(), epoch, rig.clock.now_ms())
    assert done == 0 and len(problems) == len(stuck) and "venue unreachable" in problems[0]
    assert len(await rig.store.read_intents(open_only=True)) == len(stuck)
    done, _ = await reconcile_open(rig.store, rig.venue, epoch, rig.clock.now_ms())
    assert done == len(stuck) and not await rig.store.read_intents(open_only=True)


async def test_a_post_that_raised_is_reconciled_by_the_next_tick_of_the_same_worker(rig):
    # The post reached the venue but its answer was lost (a timeout): the intent stays open
    # with the error; the worker's own next tick asks the venue and books the fill.
    dying = DiesAtPost(rig.venue, reaches=True)
    assert rig.runner is not None
    rig.runner.venue = dying
    await _until_an_intent_is_committed(rig)
    stuck = await rig.store.read_intents(open_only=True)
    rig.runner.venue = rig.venue
    await rig.run_ticks(1)
    assert not await rig.store.read_intents(open_only=True)
    intents = {i.id: i for i in await rig.store.read_intents()}
    assert {intents[i.id].status for i in stuck} <= {"filled", "failed"}
    ids = {i.order_id for i in stuck}
    assert len([o for o in venue_orders(rig) if o["id"] in ids]) == len(dying.posted)
