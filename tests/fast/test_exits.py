"""Exits in the tick (kernel/entries.py, kernel/exits.py, kernel/decide.py, kernel/executor.py):
a strategy that declares EXITS is evaluated while it holds a position in its window, its Exit
becomes a SELL leg `exit-<n>` committed at most once, posted with its order type, booked
against the position; what the kernel refuses, and why, is in the decision log.

On the tick rig (tests/fast/rig.py) with the in-process StubVenue: every market exists, asks
0.05 and bids 0.04 on both sides, every order fills at its limit price.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from baton.errors import VenueError
from kernel.reconcile import reconcile_open
from kernel.strategy_api import MAX_EXIT_LEGS, Buy, Exit, Pass
from state.structs import Intent
from tests.fast.rig import Rig
from venues.stub import StubVenue

SLOT = "btc-15s"


class Recording:
    """The stub venue, with every post's (side, order type, size, order id) kept."""

    def __init__(self, venue: Any) -> None:
        self.venue = venue
        self.posts: list[tuple[str, str, float, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.venue, name)

    def post(self, signed: Any, order_type: str = "FOK", timeout_s: float | None = None) -> Any:
        self.posts.append((signed.side, order_type, signed.size, signed.order_id))
        return self.venue.post(signed, order_type)


def trader(
    shares: float = 0.0,
    order_type: str = "FAK",
    exits: bool = True,
    calls: list[Any] | None = None,
    buy_always: bool = False,
) -> type:
    """A strategy (a fresh class) for SLOT only: buys Up at the ask as soon as it can, then
    sells `shares` (0: all) at 0.04 each time it is asked while it holds; `calls` gets each
    input it is given. `buy_always`: answers Buy whether it holds or not."""

    class Trader:
        EXITS = exits

        @staticmethod
        def quotes_from_ms(start_ms: int, end_ms: int, params: Any) -> int:
            return start_ms

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id != SLOT:
                return None
            if calls is not None:
                calls.append(inp)
            if inp.position is None or buy_always:
                if inp.up_ask is None:
                    return Pass(reason="no book")
                return Buy(side="up", limit_price=inp.up_ask, stake_usd=5.0, reason="in")
            return Exit(limit_price=0.04, reason="out", shares=shares, order_type=order_type)

    return Trader


async def _start(rig: Rig, strategy: type, venue: Any = None) -> Recording:
    """Trade `strategy` on the stub venue from the start of the next window."""
    rec = Recording(venue or StubVenue())
    assert rig.runner is not None
    rig.runner.venue = rec
    rig.resolver = lambda name: strategy
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 - 500)
    return rec


async def _intents(rig: Rig) -> dict[str, Intent]:
    return {i.id: i for i in await rig.store.read_intents() if i.slot == SLOT}


async def _decisions(rig: Rig, slot: str = SLOT) -> list[Any]:
    page = await rig.store.read_decisions(slot, 100)
    return list(reversed(page.entries))  # oldest first


async def test_a_strategy_with_exits_sells_what_it_holds_once_and_the_books_say_so(rig):
    rec = await _start(rig, trader())
    outs = await rig.run_ticks(4)
    window = outs[0].record.started_ms // 15_000 * 15
    intents = await _intents(rig)
    assert sorted(intents) == [f"{SLOT}:{window}:entry", f"{SLOT}:{window}:exit-1"]
    sold = intents[f"{SLOT}:{window}:exit-1"]
    assert (sold.leg, sold.status, sold.order_type, sold.filled_size) == ("exit-1", "filled", "FAK", 100.0)
    assert sold.is_exit and sold.stake_usd == 0.0 and sold.side == "up" and sold.asset == "btc"
    # One BUY (FOK, the default) then one SELL of every share held (FAK): nothing more, though
    # the slot was asked again after its sale (it holds nothing: it is not).
    assert [(s, t, n) for s, t, n, _ in rec.posts] == [("BUY", "FOK", 100.0), ("SELL", "FAK", 100.0)]
    # (The window's first tick has no input yet: its open candle is not written.)
    assert [o.record.exits for o in outs] == [0, 0, 1, 0]
    assert [o.record.orders for o in outs] == [0, 1, 1, 0]
    assert all(o.record.errors == 0 and o.record.unfilled == 0 for o in outs)
    (p,) = [p for p in await rig.store.read_positions() if p.slot == SLOT]
    assert p.status == "closed" and p.shares_micros == 0 and p.exits == 1
    assert not await rig.store.read_positions(open_only=True)
    sells = [e for e in await rig.store.read_ledger() if e.kind == "sell"]
    assert [(e.ref, e.amount_micros) for e in sells] == [(f"sell:{sold.id}", 4_000_000)]
    log = await _decisions(rig)
    assert [(e.action, e.outcome, e.intent_id) for e in log] == [
        ("buy", "intent", f"{SLOT}:{window}:entry"),
        ("sell", "intent", sold.id),
    ]
    assert log[1].shares == 100.0 and log[1].figures["held_shares"] == 100.0
    # Every slot's evaluation is logged, passes included, with why.
    others = await _decisions(rig, "eth-15s")
    assert others and {(e.action, e.reason) for e in others} == {("pass", "no decision")}


async def test_exit_legs_are_numbered_and_stop_at_the_limit(rig):
    # 100 shares bought, sold 10 at a time: the legs run out before the shares do.
    await _start(rig, trader(shares=10.0))
    await rig.run_ticks(MAX_EXIT_LEGS + 3)
    intents = await _intents(rig)
    legs = sorted((i.leg for i in intents.values() if i.is_exit), key=lambda leg: int(leg[5:]))
    assert legs == [f"exit-{n}" for n in range(1, MAX_EXIT_LEGS + 1)]
    assert all(i.filled_size == 10.0 for i in intents.values() if i.is_exit)
    (p,) = await rig.store.read_positions(open_only=True)
    assert p.shares_micros == (100 - 10 * MAX_EXIT_LEGS) * 1_000_000 and p.exits == MAX_EXIT_LEGS
    refused = [e for e in await _decisions(rig) if e.outcome.startswith("refused")]
    assert refused and all(f"{MAX_EXIT_LEGS} exit legs used" in e.outcome for e in refused)
    assert all(e.action == "sell" and not e.intent_id for e in refused)


async def test_an_exit_asks_never_more_than_is_held_rounded_down_to_a_hundredth(rig):
    await _start(rig, trader(shares=1e6))
    await rig.run_ticks(4)
    sold = [i for i in (await _intents(rig)).values() if i.is_exit]
    assert [i.size for i in sold] == [100.0]


async def test_a_new_worker_numbers_exit_legs_after_those_in_redis(rig):
    await _start(rig, trader(shares=10.0))
    await rig.run_ticks(4)  # nothing yet, entry, exit-1, exit-2
    assert rig.runner is not None
    rig.runner.entries.legs.known.clear()  # as a worker that took over knows nothing
    await rig.run_ticks(1)
    legs = sorted(i.leg for i in (await _intents(rig)).values() if i.is_exit)
    assert legs == ["exit-1", "exit-2", "exit-3"]


async def test_a_buy_while_entered_and_an_exit_without_a_position_are_refused(rig):
    class ExitFirst:
        EXITS = True

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id != SLOT:
                return None
            if inp.position is None and not inp.entered:
                return Exit(limit_price=0.5, reason="nothing held")
            return Buy(side="up", limit_price=0.05, stake_usd=5.0, reason="again")

    await _start(rig, ExitFirst)
    await rig.run_ticks(2)
    assert not await _intents(rig)
    (first,) = await _decisions(rig)
    assert (first.action, first.outcome) == ("sell", "refused: no position to exit in this window")
    # It has no entry yet: its exits are refused, and nothing is ever sent for them.
    assert rig.runner is not None
    rig.resolver = lambda name: trader(buy_always=True)
    await rig.run_ticks(3)
    intents = await _intents(rig)
    assert [i.leg for i in intents.values()] == ["entry"]
    log = await _decisions(rig)
    assert [e.outcome for e in log[1:]] == ["intent"] + [
        "refused: entered already: one entry per slot-window"
    ] * 2


async def test_a_gtd_order_is_refused_unless_it_expires_a_minute_ahead_and_within_the_window(rig):
    class Gtd:
        EXITS = False

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id != SLOT:
                return None
            return Buy(
                side="up",
                limit_price=0.05,
                stake_usd=5.0,
                reason="gtd",
                order_type="GTD",
                expires_ms=inp.now_ms + 5_000,
            )

    await _start(rig, Gtd)
    await rig.run_ticks(2)
    assert not await _intents(rig)
    (e,) = await _decisions(rig)
    assert e.action == "buy" and e.outcome.startswith("refused: GTD expires_ms") and "ahead" in e.outcome


async def test_an_exit_order_type_and_a_buy_order_type_reach_the_venue(rig):
    class Typed:
        EXITS = True

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id != SLOT:
                return None
            if inp.position is None:
                return Buy(side="up", limit_price=0.05, stake_usd=5.0, reason="in", order_type="FAK")
            return Exit(limit_price=0.04, reason="out", order_type="FOK")

    rec = await _start(rig, Typed)
    await rig.run_ticks(3)
    assert [(s, t) for s, t, _, _ in rec.posts] == [("BUY", "FAK"), ("SELL", "FOK")]


async def test_a_strategy_without_exits_is_not_asked_again_once_it_entered(rig):
    calls: list[Any] = []
    await _start(rig, trader(exits=False, calls=calls))
    await rig.run_ticks(4)
    assert len(calls) == 1
    calls_with: list[Any] = []
    await _start(rig, trader(calls=calls_with))
    await rig.run_ticks(4)
    # Entered, then asked while it held (its input says what it holds), then no more.
    assert calls_with[0].position is None
    assert calls_with[1].position is not None and calls_with[1].entered
    assert calls_with[1].position.shares == 100.0 and calls_with[1].position.side == "up"
    assert len(calls_with) == 2


async def test_a_halt_stops_an_exit(rig):
    rec = await _start(rig, trader())
    await rig.run_ticks(2)
    assert [s for s, *_ in rec.posts] == ["BUY"]
    await rig.store.set_halt("test", rig.clock.now_ms(), who="test")
    outs = await rig.run_ticks(2)
    assert all(o.record.halted for o in outs)
    assert [s for s, *_ in rec.posts] == ["BUY"]
    assert not [i for i in (await _intents(rig)).values() if i.is_exit]
    (p,) = await rig.store.read_positions(open_only=True)
    assert p.shares_micros == 100_000_000


class Unfilled(StubVenue):
    """The book cannot fill any order: a FOK is refused as the CLOB refuses it."""

    def post(self, signed: Any, order_type: str = "FOK", timeout_s: float | None = None) -> Any:
        res = super().post(signed, order_type)
        return msgspec.structs.replace(
            res,
            status="rejected",
            size_matched=0.0,
            error="order couldn't be fully filled. FOK orders are fully filled or killed.",
        )


async def test_a_fok_the_book_cannot_fill_is_an_outcome_not_an_error(rig):
    await _start(rig, trader(), venue=Unfilled())
    outs = await rig.run_ticks(3)
    assert [o.record.unfilled for o in outs] == [0, 1, 0]  # one entry per window, killed
    assert all(o.record.errors == 0 and not o.problems for o in outs)
    (entry,) = (await _intents(rig)).values()
    assert entry.status == "rejected" and "fully filled" in entry.error


class DiesAtSell(StubVenue):
    """A worker that dies between committing an exit and learning of its post: the SELL
    reaches the venue (or not), and no answer comes back."""

    def __init__(self, reaches: bool) -> None:
        super().__init__()
        self.reaches = reaches

    def post(self, signed: Any, order_type: str = "FOK", timeout_s: float | None = None) -> Any:
        if signed.side == "SELL":
            if self.reaches:
                super().post(signed, order_type)
            raise ConnectionError("the worker died here")
        return super().post(signed, order_type)


@pytest.mark.parametrize("reaches", [False, True], ids=["post-never-arrived", "answer-lost"])
async def test_an_exit_committed_before_a_crash_is_reconciled_and_never_sent_again(rig, reaches):
    venue = DiesAtSell(reaches)
    rec = await _start(rig, trader(), venue=venue)
    await rig.run_ticks(3)
    (stuck,) = [i for i in (await _intents(rig)).values() if i.is_exit]
    assert stuck.status == "committed" and "died" in stuck.error and stuck.order_id
    # The successor takes the lease over and reconciles before anything else.
    rig.clock.advance(rig.settings.lease_ms + 1)
    got, epoch, _ = await rig.store.acquire_lease("green:s", "green", "t2", rig.clock.now_ms(), 3000)
    assert got
    positions = {p.id: p for p in await rig.store.read_positions(open_only=True)}
    done, problems = await reconcile_open(rig.store, venue, epoch, rig.clock.now_ms(), positions=positions)
    assert (done, problems) == (1, [])
    after = (await _intents(rig))[stuck.id]
    sells = [e for e in await rig.store.read_ledger() if e.ref == f"sell:{stuck.id}"]
    (p,) = [p for p in await rig.store.read_positions() if p.slot == SLOT]
    if reaches:
        assert after.status == "filled" and len(sells) == 1 and p.status == "closed"
    else:
        assert after.status == "failed" and "not re-sent" in after.error and not sells
        assert p.status == "open" and p.shares_micros == 100_000_000
    assert [oid for s, _, _, oid in rec.posts if s == "SELL"] == [stuck.order_id]


def _clocked(rig: Rig, **kw: Any) -> StubVenue:
    """The stub venue on the rig's virtual clock (resting orders move with it)."""
    return StubVenue(now_s=lambda: rig.clock.now_ms() // 1000, **kw)


async def test_a_resting_exit_is_asked_after_each_tick_and_booked_once_it_fills(rig):
    calls: list[Any] = []
    venue = _clocked(rig)
    rec = await _start(rig, trader(order_type="GTC", calls=calls), venue=venue)
    outs = await rig.run_ticks(4)  # no input, entry, the GTC sell at 0.04 over a 0.04 bid...
    # ...crosses at once: make it rest instead (the bid below it) and try again next window.
    assert [(s, t) for s, t, _, _ in rec.posts] == [("BUY", "FOK"), ("SELL", "GTC")]
    assert sum(o.record.exits for o in outs) == 1

    venue.bid = 0.01
    calls.clear()
    rec = await _start(rig, trader(order_type="GTC", calls=calls), venue=venue)
    await rig.run_ticks(4)  # entry, GTC rests, then two ticks in which the slot is not asked
    (resting,) = [i for i in (await _intents(rig)).values() if i.is_exit and i.status != "filled"]
    assert resting.status == "posted" and resting.order_type == "GTC"
    assert [c.position is None for c in calls] == [True, False], "asked while its exit was resting"
    venue.bid = 0.04  # the quote moves to cross it: the next look finds it filled
    outs = await rig.run_ticks(1)
    assert not outs[0].problems
    after = (await _intents(rig))[resting.id]
    assert after.status == "filled" and after.filled_size == 100.0
    (p,) = [p for p in await rig.store.read_positions() if p.id == f"{SLOT}:{resting.window_start_s}"]
    assert p.status == "closed"
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL"]


async def test_a_resting_exit_still_working_when_its_window_ends_is_cancelled_not_an_error(rig):
    venue = _clocked(rig, bid=0.01)
    rec = await _start(rig, trader(order_type="GTC", shares=40.0), venue=venue)
    await rig.run_ticks(3)
    (resting,) = [i for i in (await _intents(rig)).values() if i.is_exit]
    assert resting.status == "posted"
    outs = await rig.run_ticks(14)  # past the window's end
    after = (await _intents(rig))[resting.id]
    assert after.status == "rejected" and venue.calls["cancel"] == 1
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]
    assert sum(o.record.unfilled for o in outs) == 1
    # (and the next window's entry)
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL", "BUY"]
    assert not [e for e in await rig.store.read_ledger() if e.kind == "sell"]


async def test_a_resting_entry_opens_its_position_when_it_fills(rig):
    class RestingBuy:
        EXITS = False

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id != SLOT:
                return None
            return Buy(side="up", limit_price=0.03, stake_usd=3.0, reason="low", order_type="GTC")

    venue = _clocked(rig)
    await _start(rig, RestingBuy, venue=venue)
    await rig.run_ticks(3)
    (entry,) = (await _intents(rig)).values()
    assert entry.status == "posted" and entry.order_type == "GTC"
    assert not await rig.store.read_positions(open_only=True)
    venue.ask = 0.03
    outs = await rig.run_ticks(1)
    assert not outs[0].problems
    (p,) = await rig.store.read_positions(open_only=True)
    assert p.intent_id == entry.id and p.shares_micros == 100_000_000 and p.cost_micros == 3_000_000


async def test_a_partial_fak_exit_books_what_matched_and_the_next_leg_sells_the_rest(rig):
    venue = _clocked(rig)
    await _start(rig, trader(), venue=venue)
    await rig.run_ticks(2)
    venue.depth = 30.0  # the entry took what it wanted; now the book is thin for the sale
    outs = await rig.run_ticks(2)
    legs = {i.leg: i for i in (await _intents(rig)).values() if i.is_exit}
    assert [(k, i.filled_size) for k, i in sorted(legs.items())] == [("exit-1", 30.0), ("exit-2", 30.0)]
    (p,) = await rig.store.read_positions(open_only=True)
    assert p.shares_micros == 40_000_000 and p.exits == 2
    assert all(not o.problems for o in outs)


async def test_a_strategy_that_raises_is_logged_as_a_pass_with_its_error(rig):
    class Raises:
        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.slot_id == SLOT:
                raise ValueError("bad day")
            return Buy(side="up", limit_price=1.5, stake_usd=5.0, reason="too dear")

    await _start(rig, Raises)
    outs = await rig.run_ticks(2)
    (e,) = await _decisions(rig)
    assert (e.action, e.outcome) == ("pass", "error") and "bad day" in e.reason
    assert any("bad day" in p for p in outs[1].problems)
    (bad,) = await _decisions(rig, "eth-15s")
    assert bad.action == "buy" and bad.outcome == "refused: limit_price 1.5 is not strictly between 0 and 1"
    assert not await rig.store.read_intents()


async def test_a_sale_books_the_venues_fee(rig):
    venue = _clocked(rig, fee_rate=0.02)
    await _start(rig, trader(), venue=venue)
    await rig.run_ticks(3)
    (sold,) = [i for i in (await _intents(rig)).values() if i.is_exit]
    assert sold.fee_micros > 0
    (entry,) = [e for e in await rig.store.read_ledger() if e.kind == "sell"]
    assert entry.fee_micros == sold.fee_micros
    assert entry.amount_micros == 4_000_000 - sold.fee_micros


async def test_an_unreadable_account_value_holds_entries_back_but_not_exits(rig):
    rec = await _start(rig, trader())
    await rig.run_ticks(2)
    assert [s for s, *_ in rec.posts] == ["BUY"]
    await rig.store.r.hset(rig.store.k.ledger_totals(), "cash_micros", "garbage")
    outs = await rig.run_ticks(1)
    assert outs[0].record.blocked >= 1
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL"]
    assert outs[0].record.exits == 1


async def test_a_sale_at_the_venue_that_no_intent_knows_is_adopted_as_the_next_exit_leg(rig):
    """A failover lost an exit leg's intent after its SELL reached the venue: the adoption
    sweep records it as the window's next leg and books the sale, once."""
    venue = _clocked(rig)
    await _start(rig, trader(exits=False), venue=venue)
    await rig.run_ticks(2)
    (p,) = await rig.store.read_positions(open_only=True)
    lost = venue.post(venue.sign("SELL", p.token_id, 0.04, 60.0), "FAK")
    assert lost.status == "matched"
    assert rig.runner is not None
    for _ in range(2):  # a second sweep finds it known
        rig.runner.adopter.owe("a test: the Redis primary changed")
        outs = await rig.run_ticks(1)
        assert not outs[0].problems, outs[0].problems
    (leg,) = [i for i in (await _intents(rig)).values() if i.is_exit]
    assert (leg.leg, leg.order_id, leg.status, leg.filled_size) == ("exit-1", lost.order_id, "filled", 60.0)
    assert leg.adopted_ms > 0
    (after,) = await rig.store.read_positions(open_only=True)
    assert after.shares_micros == 40_000_000 and after.exits == 1
    sells = [e for e in await rig.store.read_ledger() if e.kind == "sell"]
    assert [e.ref for e in sells] == [f"sell:{leg.id}"]
    # The worker numbers its own next exit after the adopted one.
    assert (
        rig.runner.entries.legs.count(next(r for r in rig.runner.refs.at(rig.clock.now_ms()) if r.id == SLOT))
        == 1
    )


async def test_a_slot_asked_every_tick_while_it_holds_finds_its_market_in_the_cache(rig):
    venue = _clocked(rig)
    await _start(rig, trader(shares=10.0), venue=venue)
    await rig.run_ticks(2)  # entered
    discovered = venue.calls["discover"]
    outs = await rig.run_ticks(3)
    assert [o.record.exits for o in outs] == [1, 1, 1]
    assert venue.calls["discover"] == discovered


async def test_a_pause_stops_new_entries_but_not_exits(rig):
    rec = await _start(rig, trader(shares=30.0))
    await rig.run_ticks(2)
    await rig.store.set_paused(True, rig.clock.now_ms())
    outs = await rig.run_ticks(2)
    assert all(o.record.paused for o in outs)
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL", "SELL"]
    # The next window, still paused: no entry.
    await _start(rig, trader(shares=30.0), venue=rec.venue)
    outs = await rig.run_ticks(4)
    assert sum(o.record.orders for o in outs) == 0


async def test_two_lost_sales_of_one_position_are_adopted_as_two_legs_and_both_booked(rig):
    venue = _clocked(rig)
    await _start(rig, trader(exits=False), venue=venue)
    await rig.run_ticks(2)
    (p,) = await rig.store.read_positions(open_only=True)
    first = venue.post(venue.sign("SELL", p.token_id, 0.04, 30.0), "FAK")
    second = venue.post(venue.sign("SELL", p.token_id, 0.04, 20.0), "FAK")
    assert rig.runner is not None
    rig.runner.adopter.owe("a test: the Redis primary changed")
    outs = await rig.run_ticks(1)
    assert not outs[0].problems, outs[0].problems
    legs = sorted((i.leg, i.order_id) for i in (await _intents(rig)).values() if i.is_exit)
    assert legs == [("exit-1", first.order_id), ("exit-2", second.order_id)]
    (after,) = await rig.store.read_positions(open_only=True)
    assert after.shares_micros == 50_000_000 and after.exits == 2


async def test_a_needs_quotes_that_raises_is_in_the_decision_log_as_an_error(rig):
    class Broken:
        @staticmethod
        def needs_quotes(inp: Any) -> bool:
            raise RuntimeError("needs_quotes broke")

        @staticmethod
        def evaluate(inp: Any) -> Any:
            return None

    await _start(rig, Broken)
    outs = await rig.run_ticks(2)
    assert any("needs_quotes broke" in p for p in outs[1].problems)
    (e,) = await _decisions(rig)
    assert (e.action, e.outcome) == ("pass", "error") and "needs_quotes broke" in e.reason
    assert e.figures == {}


class MinFive(StubVenue):
    """Markets whose minimum order is 5 shares (Polymarket's usual)."""

    def discover(self, slug: str) -> Any:
        m = super().discover(slug)
        return msgspec.structs.replace(m, min_size=5.0) if m is not None else None


async def test_an_exit_of_fewer_shares_than_the_markets_minimum_order_is_refused(rig):
    rec = await _start(rig, trader(shares=3.0), venue=MinFive(now_s=lambda: rig.clock.now_ms() // 1000))
    await rig.run_ticks(3)
    assert [s for s, *_ in rec.posts] == ["BUY"]
    (e,) = [e for e in await _decisions(rig) if e.action == "sell"]
    assert e.outcome == "refused: 3 shares to sell, under the market's minimum order of 5"
    assert not [i for i in (await _intents(rig)).values() if i.is_exit]


async def test_an_adoption_sweep_owed_holds_exits_until_it_is_done(rig):
    venue = _clocked(rig)
    rec = await _start(rig, trader(shares=10.0), venue=venue)
    await rig.run_ticks(2)
    assert [s for s, *_ in rec.posts] == ["BUY"]
    assert rig.runner is not None
    venue.account_orders_error = VenueError("GET /data/trades: HTTP 503", retryable=True, kind="server")
    rig.runner.adopter.owe("a test: the Redis primary changed")
    outs = await rig.run_ticks(2)
    assert [s for s, *_ in rec.posts] == ["BUY"], "an exit went out before the sweep"
    assert all(o.record.exits == 0 for o in outs)
    venue.account_orders_error = None
    outs = await rig.run_ticks(1)
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL"]


async def test_a_disabled_slot_opens_nothing_but_still_exits_what_it_holds(rig):
    rec = await _start(rig, trader(shares=30.0))
    await rig.run_ticks(2)
    assert [s for s, *_ in rec.posts] == ["BUY"]

    async def set_enabled(on: bool) -> None:
        key = rig.store.k.slots()
        slot = msgspec.json.decode(await rig.store.r.hget(key, SLOT))
        slot["enabled"] = on
        await rig.store.r.hset(key, SLOT, msgspec.json.encode(slot))

    await set_enabled(False)
    await rig.run_ticks(2)
    # Switching the slot off stranded no exit: it went on selling what it held.
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL", "SELL"]
    # The next window, still disabled: it holds nothing there, so it is not asked at all.
    await _start(rig, trader(shares=30.0), venue=rec.venue)
    outs = await rig.run_ticks(4)
    assert sum(o.record.orders for o in outs) == 0
    assert [s for s, *_ in rec.posts] == ["BUY", "SELL", "SELL"]
