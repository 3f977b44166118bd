"""Adoption (kernel/adopt.py): an order the venue has and no intent in Redis knows — its intent
and its fill's booking lost in a Redis failover — is adopted as its slot-window's entry before
the slot trades again: no second order, the fill booked once, the adoption journaled; a venue
that cannot be asked holds the slots until it can; a planned handover owes no sweep."""

from __future__ import annotations

import threading

import msgspec
from redis.exceptions import ResponseError

from baton.errors import VenueError
from kernel import lease, snapshot
from kernel.adopt import HOLD, Adopter
from kernel.clock import VirtualClock
from kernel.tick import TickRunner
from kernel.windows import window_bounds
from state.primary import primary_id
from state.structs import MICROS
from tests.fast.rig import enter_at_once
from venues.clob_orders import account_orders
from venues.stub import StubVenue
from worker import takeover
from worker.lifecycle import Worker, configured_slots


async def stub_rig(rig, n: int = 4) -> StubVenue:
    """The rig's runner for `n` assets of 15 s windows against the in-process venue, on the
    rig's virtual clock; its strategy buys Up at the first chance in a window's last 5 s."""
    many = msgspec.structs.replace(
        rig.settings, assets=tuple(f"x{i:02d}" for i in range(n)), max_exposure_usd=1000.0
    )
    rig.settings = many
    await rig.store.ensure_slots(configured_slots(many))
    venue = StubVenue(now_s=lambda: rig.clock.now_ms() // 1000)
    rig.runner = TickRunner(
        many, rig.store, venue, rig.clock, rig.runner.ident, settler=rig.settler, resolve=rig.resolve
    )
    rig.resolver = lambda name: enter_at_once([])
    return venue


def lost_order(rig, venue: StubVenue, slot_asset: str = "x00") -> str:
    """An order of this window at the venue whose intent and booking Redis no longer has: what
    a failover to a replica that missed them leaves. Returns its id."""
    start, _ = window_bounds(rig.clock.now_ms(), "15s")
    m = venue.discover(f"{slot_asset}-updown-15s-{start}")
    assert m is not None
    return venue.post(venue.sign_buy(m.up_token, 0.05, 100.0)).order_id


async def window_ticks(rig, n: int = 16) -> list:
    return await rig.run_ticks(n)


async def adopted_journal(rig) -> list[dict]:
    entries = await rig.store.r.xrange(rig.store.k.journal_errors())
    return [f for _, f in entries if f["source"] == "adopted"]


async def test_an_order_no_intent_knows_is_adopted_and_its_slot_never_posts_again(rig):
    venue = await stub_rig(rig)
    oid = lost_order(rig, venue)
    rig.runner.adopter.owe("a test: the Redis primary changed")
    outs = await window_ticks(rig)
    # One order per slot-window: x00's was at the venue already, the three others enter now.
    assert venue.calls["post"] == 1 + 3
    assert sum(o.record.orders for o in outs) == 3
    start, _ = window_bounds(outs[0].record.started_ms, "15s")
    [intent] = [i for i in await rig.store.read_intents() if i.slot == "x00-15s"]
    assert (intent.id, intent.order_id, intent.status) == (f"x00-15s:{start}:entry", oid, "filled")
    assert intent.adopted_ms > 0 and intent.filled_size == 100.0 and intent.avg_price == 0.05
    positions = {p.slot: p for p in await rig.store.read_positions()}
    assert positions["x00-15s"].shares_micros == 100 * MICROS
    assert positions["x00-15s"].cost_micros == 5 * MICROS
    ledger = await rig.store.r.xrange(rig.store.k.ledger())
    refs = [f["ref"] for _, f in ledger]
    assert refs.count(f"buy:{intent.id}") == 1 and len(refs) == len(set(refs))
    totals = await rig.store.read_ledger_totals()
    cost = sum(p.cost_micros for p in positions.values())
    assert totals["cash_micros"] == 1000 * MICROS - cost  # every buy booked once, exactly
    journal = await adopted_journal(rig)
    assert len(journal) == 1 and oid in journal[0]["error"]
    assert int(await rig.store.r.hget(rig.store.k.stats(), "errors_adopted")) == 1
    assert not rig.runner.adopter.owed and not rig.runner.blocks.of(HOLD)


async def test_a_second_sweep_adopts_nothing_and_books_nothing(rig):
    venue = await stub_rig(rig)
    lost_order(rig, venue)
    rig.runner.adopter.owe("a test")
    await window_ticks(rig)
    before = await rig.store.r.xlen(rig.store.k.ledger())
    intents = await rig.store.read_intents()
    for _ in range(2):
        rig.runner.adopter.owe("a test, again")
        outs = await rig.run_ticks(1)
        assert outs[0].record.orders == 0
    assert await rig.store.r.xlen(rig.store.k.ledger()) == before
    assert sorted(i.id for i in await rig.store.read_intents()) == sorted(i.id for i in intents)
    assert len(await adopted_journal(rig)) == 1 and venue.calls["account_orders"] >= 3


async def test_a_venue_that_cannot_be_asked_holds_every_slot_until_it_can(rig):
    venue = await stub_rig(rig)
    oid = lost_order(rig, venue)
    venue.account_orders_error = VenueError("GET /data/trades: HTTP 503", retryable=True, kind="server")
    rig.runner.adopter.owe("a test")
    outs = await window_ticks(rig)
    # The entry zone passed with the venue unreadable: nothing posted, never blind.
    assert sum(o.record.orders for o in outs) == 0 and venue.calls["post"] == 1
    assert [b.source for b in rig.runner.blocks.current().values()] == [HOLD]
    blocked = await rig.store.read_blocked()
    assert [b.source for b in blocked] == [HOLD] and blocked[0].scope == "all"
    venue.account_orders_error = None
    outs = await window_ticks(rig)
    # The next window: the sweep done, x00's old order adopted, every slot enters its new window.
    assert sum(o.record.orders for o in outs) == 4 and venue.calls["post"] == 1 + 4
    assert not rig.runner.blocks.of(HOLD) and await rig.store.read_blocked() == []
    assert any(i.order_id == oid and i.adopted_ms for i in await rig.store.read_intents())


async def test_a_planned_handover_owes_no_sweep_and_any_other_takeover_does(rig):
    venue = await stub_rig(rig)
    lost_order(rig, venue)
    await takeover.adopt_orders(rig.runner, rig.store, rig.epoch, rig.clock, "")
    assert venue.calls["account_orders"] == 0
    await takeover.adopt_orders(rig.runner, rig.store, rig.epoch, rig.clock, "took the lease over from x")
    assert venue.calls["account_orders"] == 1 and not rig.runner.adopter.owed
    assert len(await adopted_journal(rig)) == 1
    outs = await window_ticks(rig)
    assert sum(o.record.orders for o in outs) == 3


async def test_an_order_whose_market_cannot_be_found_holds_its_slot_only(rig):
    venue = await stub_rig(rig)
    lost_order(rig, venue)
    found = venue.discover
    broken = {"on": True}

    def discover(slug):
        if broken["on"] and slug.startswith("x00-"):
            raise VenueError("GET /events: HTTP 503", retryable=True, kind="server")
        return found(slug)

    venue.discover = discover  # type: ignore[method-assign]
    rig.runner.adopter.owe("a test")
    outs = await window_ticks(rig)
    # x00's order is in a market the sweep could not map: x00 waits, the others enter.
    assert sum(o.record.orders for o in outs) == 3 and venue.calls["post"] == 1 + 3
    assert [(b.source, b.slot) for b in rig.runner.blocks.current().values()] == [(HOLD, "x00-15s")]
    assert rig.runner.adopter.owed
    broken["on"] = False
    await rig.run_ticks(1)
    assert not rig.runner.adopter.owed and not rig.runner.blocks.of(HOLD)
    assert len(await adopted_journal(rig)) == 1


async def test_a_slow_listing_holds_the_slots_and_is_waited_for_not_asked_again(rig):
    venue = await stub_rig(rig)
    oid = lost_order(rig, venue)
    gate = threading.Event()
    listing = venue.account_orders

    def slow(markets, since_s):
        gate.wait(10)
        return listing(markets, since_s)

    venue.account_orders = slow  # type: ignore[method-assign]
    rig.runner.adopter.owe("a test")
    outs = await rig.run_ticks(2)
    assert all(o.record.blocked == 1 for o in outs) and rig.runner.adopter.owed
    gate.set()
    outs = await window_ticks(rig)
    assert venue.calls["account_orders"] == 1  # the one listing, waited for across ticks
    assert not rig.runner.adopter.owed and venue.calls["post"] == 1 + 3
    assert any(i.order_id == oid and i.adopted_ms for i in await rig.store.read_intents())


async def test_a_sweep_that_cannot_read_redis_holds_the_slots_and_the_ticks_go_on(rig):
    venue = await stub_rig(rig)
    lost_order(rig, venue)
    await rig.store.r.set(rig.store.k.intents(), "garbage")
    rig.runner.adopter.owe("a test")
    outs = await rig.run_ticks(2)
    assert [o.record.tick for o in outs] and all(o.record.blocked == 1 for o in outs)
    assert rig.runner.adopter.owed and [b.source for b in rig.runner.blocks.current().values()] == [HOLD]
    await rig.store.r.delete(rig.store.k.intents())
    outs = await window_ticks(rig)
    assert not rig.runner.adopter.owed and venue.calls["post"] == 1 + 3


async def test_the_tick_that_first_reads_a_new_primary_sweeps_before_its_entries(rig, monkeypatch):
    venue = await stub_rig(rig)
    ids = iter(["8b3f"] * 3 + ["c0de"] * 100)
    monkeypatch.setattr(snapshot, "primary_id", lambda raw: next(ids))
    await rig.run_ticks(3)
    assert venue.calls["account_orders"] == 0 and rig.runner.adopter.primary == "8b3f"
    oid = lost_order(rig, venue)  # written by a holder whose writes the new primary lacks
    outs = await window_ticks(rig)
    assert venue.calls["account_orders"] == 1 and venue.calls["post"] == 1 + 3
    assert sum(o.record.orders for o in outs) == 3
    assert any(i.order_id == oid and i.adopted_ms for i in await rig.store.read_intents())


def test_the_replication_id_is_read_from_info_replication() -> None:
    raw = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_replid:c0de42\r\n"
    assert primary_id(raw) == primary_id(raw.encode()) == "c0de42"
    assert primary_id({"role": "master", "master_replid": "c0de42"}) == "c0de42"
    assert primary_id(ResponseError("unknown command 'info'")) is None
    assert primary_id({"role": "master"}) is None


async def test_a_predecessor_that_may_still_post_gets_a_second_sweep_after_its_grace(rig):
    venue = await stub_rig(rig)
    await takeover.adopt_orders(rig.runner, rig.store, rig.epoch, rig.clock, "its lease expired", 4000)
    assert venue.calls["account_orders"] == 1
    await rig.run_ticks(2)
    assert venue.calls["account_orders"] == 1
    oid = lost_order(rig, venue)  # its late post reaches the venue after the first sweep
    await rig.run_ticks(3)
    assert venue.calls["account_orders"] == 2 and rig.runner.adopter.later is None
    outs = await window_ticks(rig)
    assert sum(o.record.orders for o in outs) == 3 and venue.calls["post"] == 1 + 3
    assert any(i.order_id == oid and i.adopted_ms for i in await rig.store.read_intents())


async def test_a_worker_handed_the_lease_sweeps_nothing_one_taking_it_over_sweeps(rig, monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(rig.venue, "account_orders", lambda markets, since_s: asked.append(since_s) or [])
    clock = VirtualClock(rig.clock.now_ms())
    green = Worker(rig.settings, rig.store, rig.venue, clock, "green")
    await rig.store.heartbeat("green", {"holder": green.holder, "state": "ready"}, ttl_ms=60_000)
    await rig.store.request_handover(
        "h1", {"to_holder": green.holder, "to_color": "green", "to_release": "r2"}
    )
    request = await rig.store.r.hgetall(rig.store.k.handover())
    epoch, why = await lease.transfer(rig.store, "blue:t", rig.epoch, request, 1, clock.now_ms(), 3000)
    assert epoch == rig.epoch + 1, why
    assert await green.acquire() and green.takeover_reason == ""
    await green.become_active()
    assert asked == [] and not green.runner.adopter.owed
    # Its lease left to expire (a crash): the next holder owes and makes the sweep.
    clock.advance(60_000)
    blue = Worker(rig.settings, rig.store, rig.venue, clock, "blue")
    assert await blue.acquire() and blue.takeover_reason == f"took the lease over from {green.holder}"
    await blue.become_active()
    assert len(asked) == 1 and not blue.runner.adopter.owed


def test_a_new_primary_replication_id_owes_a_sweep() -> None:
    a = Adopter(None, None, None, None)  # type: ignore[arg-type]
    a.primary_seen(None)
    a.primary_seen("8b3f")
    assert not a.owed  # the first id seen is the baseline
    a.primary_seen("8b3f")
    a.primary_seen(None)  # a server that cannot say changes nothing
    assert not a.owed
    a.primary_seen("c0de")
    assert "primary changed" in a.owed and a.primary == "c0de"


def test_the_clob_listings_give_each_order_once_with_what_it_bought() -> None:
    me, key = "0xAbC", "key-1"
    trades = [
        # Our FOK, filled in two trades at two prices.
        {"market": "m1", "asset_id": "7", "side": "BUY", "taker_order_id": "0x1", "size": "3",
         "price": "0.5", "match_time": "100", "trader_side": "TAKER", "owner": key},
        {"market": "m1", "asset_id": "7", "side": "BUY", "taker_order_id": "0x1", "size": "1",
         "price": "0.7", "match_time": "100", "trader_side": "TAKER", "owner": key},
        # Our resting GTC, hit as a maker (its rest still open below).
        {"market": "m2", "asset_id": "9", "side": "SELL", "taker_order_id": "0xother",
         "size": "2", "price": "0.4", "match_time": "101", "trader_side": "MAKER", "owner": key,
         "maker_orders": [
             {"order_id": "0x2", "owner": key, "maker_address": me.lower(), "matched_amount": "2",
              "price": "0.4", "asset_id": "9", "side": "BUY"},
             {"order_id": "0xnotours", "owner": "k2", "maker_address": "0xdef",
              "matched_amount": "5", "price": "0.4", "asset_id": "9", "side": "BUY"},
         ]},
        {"market": "m3", "asset_id": "1", "side": "BUY", "taker_order_id": "0x3", "size": "5",
         "price": "0.1", "match_time": "99", "trader_side": "TAKER", "owner": key},
        # A match that failed on chain bought nothing.
        {"market": "m1", "asset_id": "7", "side": "BUY", "taker_order_id": "0x1", "size": "9",
         "price": "0.5", "match_time": "100", "trader_side": "TAKER", "owner": key,
         "status": "FAILED"},
        {"market": "m1", "asset_id": "7", "side": "BUY", "taker_order_id": "0x4", "size": "9",
         "price": "0.5", "match_time": "100", "trader_side": "TAKER", "owner": key,
         "status": "TRADE_STATUS_FAILED"},
    ]  # fmt: skip
    opens = [
        {"id": "0x2", "market": "m2", "asset_id": "9", "side": "BUY", "status": "LIVE", "owner": key,
         "maker_address": me, "original_size": "10", "size_matched": "2", "price": "0.4",
         "created_at": 90},
    ]  # fmt: skip
    got = {o.order_id: o for o in account_orders(trades, opens, key, me, markets=["m1", "m2"])}
    assert set(got) == {"0x1", "0x2"}
    one, two = got["0x1"], got["0x2"]
    assert (one.status, one.size_matched, one.original_size, one.created_s) == ("matched", 4.0, 4.0, 100)
    assert abs(one.avg_price - 0.55) < 1e-12 and one.token_id == "7" and one.side == "BUY"
    assert (two.status, two.size_matched, two.original_size, two.price) == ("live", 2.0, 10.0, 0.4)
    assert len(account_orders(trades, opens, key, me)) == 3  # no markets named: every market


async def test_the_clob_adapter_lists_this_accounts_orders_at_the_sim(rig):
    rig.resolver = lambda name: enter_at_once([])
    since_s = rig.clock.now_ms() // 1000 - 1
    outs = await window_ticks(rig)
    assert sum(o.record.orders for o in outs) == 4
    intents = await rig.store.read_intents()
    listed = rig.venue.account_orders([], since_s)
    assert sorted(o.order_id for o in listed) == sorted(i.order_id for i in intents)
    for o in listed:
        i = next(i for i in intents if i.order_id == o.order_id)
        assert (o.status, o.side, o.market, o.token_id) == ("matched", "BUY", i.condition_id, i.token_id)
        assert abs(o.size_matched - i.filled_size) < 1e-9 and abs(o.avg_price - i.avg_price) < 1e-9
    one = intents[0].condition_id
    assert [o.market for o in rig.venue.account_orders([one], since_s)] == [one]
    assert rig.venue.account_orders([], rig.clock.now_ms() // 1000 + 1) == []
