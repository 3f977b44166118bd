"""An entry tick's orders go out in a few chunks while the tick evaluates further slots
(kernel/entry_stream.py EntryStream, kernel/entries.py Entries): every slot-window still enters at
most once, the chunks' number (and so the tick's round trips) does not grow with the slots,
the first chunk reaches the venue before the last slots are evaluated, and a chunk that fails
does not cost the others their orders or their bookings."""

from __future__ import annotations

import time

import msgspec
import pytest

from kernel import entries as entries_mod
from kernel import entry_stream, executor, lanes
from kernel.halt import HaltGate, HaltResponder
from kernel.tick import TickRunner
from tests.fast.rig import enter_at_once
from venues.stub import StubVenue  # every order fills at its limit price, in process
from worker.lifecycle import configured_slots


async def with_assets(rig, n: int) -> StubVenue:
    """The rig's runner, rebuilt for `n` assets of 15 s windows against the in-process venue
    (the sim's CLOB knows only the rig's four assets); the exposure limit above their stakes."""
    many = msgspec.structs.replace(
        rig.settings, assets=tuple(f"x{i:02d}" for i in range(n)), max_exposure_usd=1000.0
    )
    rig.settings = many
    await rig.store.ensure_slots(configured_slots(many))
    venue = StubVenue()
    rig.runner = TickRunner(
        many, rig.store, venue, rig.clock, rig.runner.ident, settler=rig.settler, resolve=rig.resolve
    )
    return venue


def buy_up(seen: list[int] | None = None, venue: StubVenue | None = None, pause_s: float = 0.0) -> type:
    """enter_at_once's strategy (buys Up at the first chance in the last 5 s of a window); with
    `seen`, each evaluate first appends how many orders the venue has been posted so far, after
    a pause that lets the lanes' threads run (evaluate is synchronous: the loop waits for it)."""
    base = enter_at_once([])
    if seen is None or venue is None:
        return base

    class Watching(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def evaluate(inp):
            time.sleep(pause_s)
            seen.append(venue.calls["post"])
            return base.evaluate(inp)

    return Watching


def count_commits(rig, monkeypatch) -> list[int]:
    """The size of every commit call (one per chunk)."""
    sizes: list[int] = []
    real = rig.store.commit_intents

    def commit(epoch, intents, pipeline=None):
        sizes.append(len(intents))
        return real(epoch, intents, pipeline=pipeline)

    monkeypatch.setattr(rig.store, "commit_intents", commit)
    return sizes


async def entry_tick(rig) -> list:
    """Ticks up to and including the first one that posts orders (the zone's first second)."""
    outs = []
    for _ in range(20):
        outs += await rig.run_ticks(1)
        if outs[-1].record.orders:
            return outs
    raise AssertionError("no entry tick in 20 ticks")


@pytest.mark.parametrize("n_assets", [16, 64])
async def test_an_entry_ticks_orders_go_out_in_at_most_four_chunks_each_slot_once(
    rig,
    monkeypatch,
    n_assets,
):
    monkeypatch.setattr(entries_mod, "ENTRY_CHUNK_MIN", 2)
    venue = await with_assets(rig, n_assets)
    rig.resolver = lambda name: buy_up()
    sizes = count_commits(rig, monkeypatch)
    outs = await entry_tick(rig)
    assert outs[-1].record.orders == n_assets == venue.calls["post"]
    assert len(sizes) == entries_mod.ENTRY_CHUNKS and sum(sizes) == n_assets
    intents = await rig.store.read_intents()
    assert len(intents) == n_assets and len({i.slot for i in intents}) == n_assets
    assert {i.status for i in intents} == {"filled"}
    positions = await rig.store.read_positions(open_only=True)
    assert sorted(p.intent_id for p in positions) == sorted(i.id for i in intents)
    assert (await rig.store.read_ledger_totals())["entries"] == n_assets + 1  # and the deposit
    # The rest of the window: every slot has entered, nothing is committed or posted again.
    outs = await rig.run_ticks(3)
    assert sum(o.record.orders for o in outs) == 0 and venue.calls["post"] == n_assets


async def test_a_small_entry_tick_is_one_chunk(rig, monkeypatch):
    """Under ENTRY_CHUNK_MIN slots there is nothing to overlap: one commit, one booking."""
    venue = await with_assets(rig, 16)
    rig.resolver = lambda name: buy_up()
    sizes = count_commits(rig, monkeypatch)
    await entry_tick(rig)
    assert sizes == [16] and venue.calls["post"] == 16


async def test_the_first_chunk_is_posted_while_later_slots_are_still_evaluated(rig, monkeypatch):
    monkeypatch.setattr(entries_mod, "ENTRY_CHUNK_MIN", 2)
    monkeypatch.setattr(entries_mod, "ENTRY_YIELD_EVERY", 1)
    venue = await with_assets(rig, 64)
    seen: list[int] = []
    rig.resolver = lambda name: buy_up(seen, venue, pause_s=0.01)
    await entry_tick(rig)
    chunk = 64 // entries_mod.ENTRY_CHUNKS
    assert len(seen) == 64
    # 48 evaluations (and half a second) later, the first chunk is at the venue: it did not
    # wait for the tick's last evaluation.
    assert seen[-1] >= chunk, seen


async def test_a_chunk_that_fails_to_commit_costs_the_others_nothing(rig, monkeypatch):
    """The second chunk's commit raises (Redis went away before it answered): the other
    chunks are still posted and booked, the tick then raises, and the next tick asks Redis
    again about the slots of the failed chunk and enters them, once."""
    monkeypatch.setattr(entries_mod, "ENTRY_CHUNK_MIN", 2)
    venue = await with_assets(rig, 16)
    rig.resolver = lambda name: buy_up()
    real = rig.store.commit_intents
    calls = {"n": 0}

    async def commit(epoch, intents, pipeline=None):
        # The second chunk, once, by its content: the chunks' commits may come in any order.
        if not calls["n"] and any(i.slot == "x04-15s" for i in intents):
            calls["n"] += 1
            raise ConnectionError("Redis went away before it answered")
        return await real(epoch, intents, pipeline=pipeline)

    monkeypatch.setattr(rig.store, "commit_intents", commit)
    with pytest.raises(ConnectionError):
        for _ in range(20):
            await rig.run_ticks(1)
    assert venue.calls["post"] == 12  # three chunks of four
    assert len(await rig.store.read_positions(open_only=True)) == 12
    assert rig.runner.entries.absent == {}
    failed = {f"x{i:02d}-15s" for i in range(4, 8)}
    assert set(rig.runner.entries.entered) == {f"x{i:02d}-15s" for i in range(16)} - failed
    (out,) = await rig.run_ticks(1)
    assert out.record.orders == 4 and venue.calls["post"] == 16
    intents = await rig.store.read_intents()
    assert len(intents) == 16 and {i.status for i in intents} == {"filled"}
    assert (await rig.store.read_ledger_totals())["entries"] == 16 + 1  # and the deposit


async def test_the_last_chunk_posts_on_the_lanes_the_others_left_free(monkeypatch):
    """A share each while more chunks may follow; the last takes what is free, so a large last
    chunk does not post on two threads while six sit idle (a real venue's posts are slow)."""
    import asyncio

    got: list[int] = []
    release = asyncio.Event()

    async def sign(venue, intents, n_lanes=lanes.LANES):
        return [(i, None) for i in intents], []

    async def chunk(
        store,
        venue,
        epoch,
        ready,
        problems,
        gate=None,
        entered=None,
        n_lanes=lanes.LANES,
        deadline=None,
        blocks=None,
        replicas=None,
        tally=None,
        positions=None,
    ):
        got.append(n_lanes)
        if ready[0][0] == "held":
            await release.wait()
        return len(ready), []

    monkeypatch.setattr(executor, "sign_all", sign)
    monkeypatch.setattr(executor, "submit_signed", chunk)
    stream = entry_stream.EntryStream(None, None, 1, None, set(), chunks=4)
    await stream.send(["held"])
    await stream.send(["quick"])
    await asyncio.sleep(0.01)  # the quick one is done, the held one still posting
    await stream.send(["last"] * 3, last=True)
    release.set()
    assert await stream.finish() == (5, [])
    assert got == [2, 2, lanes.LANES - 2]
    alone = entry_stream.EntryStream(None, None, 1, None, set(), chunks=4)
    await alone.send(["only"], last=True)
    assert await alone.finish() == (1, []) and got[-1] == lanes.LANES


async def test_a_halt_heard_between_chunks_stops_the_tick_and_no_post_follows_its_acknowledgement(
    rig,
    monkeypatch,
):
    """The halt reaches the worker while an entry tick of 64 slots is still evaluating, after its
    first chunk went out: from then on no strategy runs, the slots evaluated since the last chunk
    commit nothing, every intent committed is either filled or failed unsent, and every post the
    venue received began before the halt was acknowledged (the acknowledgement waited for those
    in flight). The ticks after it, halted by the flag in Redis, trade nothing."""
    import asyncio
    import threading

    monkeypatch.setattr(entries_mod, "ENTRY_CHUNK_MIN", 2)
    monkeypatch.setattr(entries_mod, "ENTRY_YIELD_EVERY", 1)  # the halt can be heard after any slot
    venue = await with_assets(rig, 64)
    posts: list[float] = []  # when each post reached the venue
    real_post = venue.post

    first_post = threading.Event()

    def post(signed, order_type="FOK", timeout_s=None):
        posts.append(time.monotonic())
        first_post.set()
        time.sleep(0.002)  # a venue that takes a moment: posts are in flight when the halt lands
        return real_post(signed, order_type)

    venue.post = post
    gate = HaltGate()
    responder = HaltResponder(rig.store, venue, gate, lambda: {"color": "blue", "holder": "blue:t"})
    rig.runner = TickRunner(
        rig.settings,
        rig.store,
        venue,
        rig.clock,
        rig.runner.ident,
        settler=rig.settler,
        halt=responder,
        resolve=rig.resolve,
    )
    evaluated: list[str] = []
    inflight_at_24: list[int] = []
    reached = asyncio.Event()  # the 24th evaluation is done: the halt may come
    base = buy_up()

    class Counting(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def evaluate(inp):
            evaluated.append(inp.slot_id)
            if len(evaluated) == 24:
                # The first chunk's posts are on their way (its lanes hold their places in the
                # gate): wait for the first to reach the venue, so that the halt below lands
                # with posts in flight however slowly the lanes' threads run.
                inflight_at_24.append(gate.inflight)
                first_post.wait(10)
                reached.set()
            return base.evaluate(inp)

    rig.resolver = lambda name: Counting
    at_close: list[int] = []
    real_close = gate.close

    def close(seq):
        at_close.append(len(evaluated))
        real_close(seq)

    gate.close = close
    acked: list[float] = []
    seqs: list[int] = []

    async def halt_after() -> None:
        # What the control listener does when the halt's message arrives mid-tick.
        await reached.wait()
        seq = await rig.store.set_halt("test: halt mid-tick", rig.clock.now_ms())
        await responder.on_halt(seq, seq)
        acked.append(time.monotonic())
        seqs.append(seq)

    halting = asyncio.ensure_future(halt_after())
    outs = await entry_tick(rig)
    await asyncio.wait_for(halting, 10)
    await responder.close()

    assert inflight_at_24[0] > 0, "the first chunk was not posting by the 24th evaluation"
    assert len(at_close) == 1 and 24 <= at_close[0] < 64
    assert len(evaluated) == at_close[0], "a strategy ran after the halt was heard"
    assert any("no strategy code runs after the halt" in p for p in outs[-1].problems)
    assert posts and all(t < acked[0] for t in posts), "a post began after the acknowledgement"
    intents = await rig.store.read_intents()
    committed_slots = {i.slot for i in intents}
    assert committed_slots <= set(evaluated[: at_close[0]]) and len(intents) < 64
    filled = [i for i in intents if i.status == "filled"]
    unsent = [i for i in intents if i.status == "failed"]
    assert len(filled) + len(unsent) == len(intents), {i.status for i in intents}
    assert all("never sent" in i.error for i in unsent)
    assert len(filled) == len(posts) == venue.calls["post"]
    assert await rig.store.r.hlen(rig.store.k.intents_open()) == 0
    positions = await rig.store.read_positions(open_only=True)
    assert sorted(p.intent_id for p in positions) == sorted(i.id for i in filled)
    assert (await rig.store.read_ledger_totals())["entries"] == len(filled) + 1  # and the deposit
    (ack,) = [a for a in await rig.store.r.lrange(rig.store.k.control_ack(seqs[0]), 0, -1) if '"halted"' in a]
    assert '"halted": true' in ack and '"inflight": 0' in ack
    # Halted by the flag in Redis: the rest of the zone's ticks evaluate and post nothing.
    later = await rig.run_ticks(3)
    assert all(o.record.halted and o.record.orders == 0 for o in later)
    assert len(evaluated) == at_close[0] and venue.calls["post"] == len(posts)
    # The decision log says "intent" only of what was committed; the rest was refused by the halt.
    logged = []
    for sid in evaluated[: at_close[0]]:
        logged += (await rig.store.read_decisions(sid, 10)).entries
    buys = [e for e in logged if e.action == "buy"]
    assert len(buys) == at_close[0]
    assert {e.intent_id for e in buys if e.outcome == "intent"} == {i.id for i in intents}
    assert all("halted during the tick" in e.outcome for e in buys if e.outcome != "intent")
