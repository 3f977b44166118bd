"""From intents to orders (kernel/executor.py): what Redis holds afterwards, and which intents
the caller is told are entered (its memory of slots with nothing left to do this window)."""

from __future__ import annotations

import time

import msgspec

from kernel import executor
from state.structs import Intent
from tests.factories import intent as make_intent
from venues.stub import StubVenue  # every order fills at its limit price


def intents(epoch: int, n: int) -> list[Intent]:
    return [
        msgspec.structs.replace(
            make_intent(f"s{k}-15m:1700000000:entry", epoch=epoch),
            slot=f"s{k}-15m",
            token_id=str(1000 + k),
            limit_price=0.5,
            size=10.0,
            stake_usd=5.0,
        )
        for k in range(n)
    ]


async def lease(store) -> int:
    _, epoch, _ = await store.acquire_lease("blue:h:1:x", "blue", "r1", int(time.time() * 1000), 60_000)
    return epoch


async def test_committed_and_duplicate_intents_both_count_as_entered(store):
    epoch = await lease(store)
    venue = StubVenue()
    entered: set[str] = set()
    batch = intents(epoch, 5)
    sent, problems = await executor.commit_and_submit(store, venue, epoch, batch, entered=entered)
    assert (sent, problems) == (5, [])
    assert entered == {i.id for i in batch}
    assert {i.status for i in await store.read_intents()} == {"filled"}
    assert await store.read_intents(open_only=True) == []
    positions = await store.read_positions(open_only=True)
    assert sorted(p.intent_id for p in positions) == sorted(i.id for i in batch)
    totals = await store.read_ledger_totals()
    assert totals["cash_micros"] == -5 * 5_000_000 and totals["entries"] == 5
    assert len(await store.read_ledger()) == 5

    # The same intents again: refused as duplicates, nothing is posted, and they still count
    # as entered (Redis holds them).
    again: set[str] = set()
    sent, problems = await executor.commit_and_submit(store, venue, epoch, batch, entered=again)
    assert (sent, problems) == (0, []) and venue.calls["post"] == 5
    assert again == entered
