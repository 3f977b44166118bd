"""The kernel's tick on a virtual clock: fakeredis for state, the sim's CLOB over a real
socket (through py-clob-client-v2) for the venue, candles written as the feed writes them.

The sim and the worker share the virtual clock, so windows open, trade and resolve in
microseconds of real time, deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fakeredis
import msgspec
import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from baton.errors import LeaseLost, SnapshotError
from baton.settings import SIM_PRIVATE_KEY, load
from kernel import settlement
from kernel.clock import VirtualClock
from kernel.settlement import Enqueuer
from kernel.tick import Identity, TickRunner, resolve_strategy
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from state.structs import CANDLE, FEED_STATUS, Candle, FeedStatus, usd_to_micros
from tests.factories import intent as make_intent
from tests.simserver import ThreadServer
from venues.polymarket import ClobVenue
from worker import settle as settle_program
from worker.main import Worker, configured_slots

SEED = 5
ASSETS = "btc,eth,sol,xrp"


class Rig:
    def __init__(self, store, url: str, clock: VirtualClock, model: PriceModel, server=None) -> None:
        self.store = store
        # rq is synchronous: the settlement queue and its worker use a sync client on the
        # same fake server as the store.
        self.sync = fakeredis.FakeRedis(server=server) if server is not None else None
        self.clock = clock
        self.model = model
        self.settings = msgspec.structs.replace(
            load(
                {
                    "BATON_TICK_MS": "1000",
                    "BATON_TIMEFRAMES": "15s",
                    "BATON_ASSETS": ASSETS,
                    "BATON_SNIPE_EDGE": "0.0",
                }
            ),
            clob_url=url,
            gamma_url=url,
        )
        self.venue = ClobVenue(url, url, SIM_PRIVATE_KEY, 137)
        self.epoch = 0
        self.runner: TickRunner | None = None
        # The strategy resolver a test chose (None: the worker's, the slot's own module).
        self.resolver: Callable[[str], Any] | None = None

    def resolve(self, name: str) -> Any:
        """The runner's strategy resolver (injected): the test's, else the worker's."""
        return (self.resolver or resolve_strategy)(name)

    async def feed(self) -> None:
        """What the feed would have written by now: closed 1s candles and a fresh status."""
        now_s = self.clock.now_ms() // 1000
        pipe = self.store.r.pipeline(transaction=False)
        for a in self.settings.assets:
            members = {}
            for sec in range(now_s - 70, now_s):
                o, h, lo, c = self.model.candle(a, sec)
                members[CANDLE.encode(Candle(sec * 1000, o, h, lo, c, 1.0, True)).decode()] = sec * 1000
            pipe.zadd(self.store.k.candles(a, "1s"), members)
            status = FeedStatus(self.clock.now_ms(), (now_s - 1) * 1000, c)
            pipe.hset(self.store.k.feed_status(), f"{a}:1s", FEED_STATUS.encode(status))
        await pipe.execute()

    async def start(self) -> None:
        await self.store.ensure_schema()
        await self.store.ensure_slots(configured_slots(self.settings))
        _, self.epoch, _ = await self.store.acquire_lease("blue:t", "blue", "test", self.clock.now_ms(), 3000)
        await self.store.deposit(
            self.epoch, "deposit:paper-initial", usd_to_micros(1000), self.clock.now_ms()
        )
        self.settler = Enqueuer(self.sync, "baton:") if self.sync is not None else None
        settle_program.configure(self.venue, self.clock.now_ms)
        self.runner = TickRunner(
            self.settings,
            self.store,
            self.venue,
            self.clock,
            Identity("blue:t", "blue", "test", self.epoch),
            settler=self.settler,
            resolve=self.resolve,
        )

    def settle(self) -> int:
        """Run the settlement jobs enqueued so far, as the settle program would: jobs run."""
        if self.sync is None:
            return 0
        queue = settlement.settle_queue(self.sync, "baton:")
        n = queue.count
        if n:
            SimpleWorker([queue], connection=self.sync, serializer=JSONSerializer).work(burst=True)
        return n

    async def run_ticks(self, n: int) -> list:
        out = []
        first = self.clock.now_ms() // 1000 + 1
        for k in range(first, first + n):
            await self.clock.sleep_until_ms(k * 1000)
            await self.feed()
            assert self.runner is not None
            out.append(await self.runner.run(k))
            await self.runner.between_ticks((k + 1) * 1000)
            await self.runner.wait_prefetch()
            self.settle()
        return out


@pytest.fixture
async def rig(store, fake_server):
    clock = VirtualClock((1_795_000_000 // 15) * 15 * 1000 + 500)
    model = PriceModel(SEED)
    sim = ClobSim(
        model,
        seed=SEED,
        chain_id=137,
        assets=tuple(ASSETS.split(",")),
        timeframes=("15s",),
        clock_ms=clock.now_ms,
    )
    with ThreadServer(create_app(sim)) as url:
        r = Rig(store, url, clock, model, fake_server)
        await r.start()
        yield r
        r.venue.close()


async def test_ticks_trade_once_per_slot_window_and_settle_each_closed_window(rig):
    outs = await rig.run_ticks(50)
    journal = await rig.store.r.xrange(rig.store.k.journal_ticks())
    ticks = [int(f["tick"]) for _, f in journal]
    assert ticks == [o.record.tick for o in outs] == list(range(ticks[0], ticks[0] + 50))
    intents = await rig.store.read_intents()
    assert intents, "no intent in 50 ticks with edge 0"
    assert len({(i.slot, i.window_start_s) for i in intents}) == len(intents)
    filled = [i for i in intents if i.status == "filled"]
    positions = await rig.store.read_positions()
    assert {p.intent_id for p in positions} == {i.id for i in filled}
    now_s = rig.clock.now_ms() // 1000
    for p in positions:
        # every window that closed before the last tick is settled, with the model's outcome
        if p.window_end_s < now_s:
            assert p.status == "settled"
            up = rig.model.outcome_up(p.asset, p.window_start_s, p.window_end_s)
            assert p.won == ((p.side == "up") == up)
    totals = await rig.store.read_ledger_totals()
    open_cost = sum(p.cost_micros for p in positions if p.status == "open")
    assert totals["cash_micros"] + open_cost == usd_to_micros(1000) + totals.get("realized_pnl_micros", 0)
    assert sum(o.record.orders for o in outs) == len([i for i in intents if i.status != "committed"])


async def test_a_tick_costs_the_same_round_trips_for_4_slots_as_for_64(rig):
    """Halted, so that only Redis is touched: the snapshot (one pipeline with the lease
    renewal riding along) and the fenced journal write."""
    trips = 0
    r = rig.store.r
    real_pipeline, real_command = r.pipeline, r.execute_command

    def pipeline(*a, **kw):
        nonlocal trips
        trips += 1
        return real_pipeline(*a, **kw)

    async def command(*a, **kw):
        nonlocal trips
        trips += 1
        return await real_command(*a, **kw)

    await rig.store.set_halt("count round trips", rig.clock.now_ms())
    many = msgspec.structs.replace(
        rig.settings, assets=tuple(f"x{i}" for i in range(32)), timeframes=("15s", "1m")
    )
    counts = []
    for settings in (rig.settings, many):
        runner = TickRunner(settings, rig.store, rig.venue, rig.clock, rig.runner.ident)
        await rig.clock.sleep_until_ms(rig.clock.now_ms() + 1000)
        r.pipeline, r.execute_command = pipeline, command
        trips = 0
        await runner.run(rig.clock.now_ms() // 1000)
        r.pipeline, r.execute_command = real_pipeline, real_command
        counts.append(trips)
    assert counts == [2, 2]


async def test_a_halted_worker_keeps_ticking_and_places_nothing(rig):
    await rig.store.set_halt("operator test", rig.clock.now_ms())
    outs = await rig.run_ticks(30)
    assert all(o.record.halted and o.record.orders == 0 for o in outs)
    assert await rig.store.read_intents() == []
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 30


async def test_paused_means_no_new_entries_but_open_positions_still_settle(rig):
    for _ in range(60):
        await rig.run_ticks(1)
        if await rig.store.read_positions(open_only=True):
            break
    assert await rig.store.read_positions(open_only=True), "no position opened"
    n_intents = len(await rig.store.read_intents())
    await rig.store.set_paused(True, rig.clock.now_ms())
    await rig.run_ticks(16)
    assert len(await rig.store.read_intents()) == n_intents
    assert await rig.store.read_positions(open_only=True) == []


async def test_garbage_in_a_control_key_fails_safe_is_reported_and_the_ticks_go_on(rig):
    await rig.store.r.hset(rig.store.k.control(), "paused", "\x00banana")
    outs = await rig.run_ticks(20)
    assert all(o.record.paused for o in outs) and await rig.store.read_intents() == []
    errors = await rig.store.r.xrange(rig.store.k.journal_errors())
    assert any("paused" in f["error"] and "banana" in f["error"] for _, f in errors)


async def test_stale_candles_block_new_entries(rig):
    rig.settings = msgspec.structs.replace(rig.settings, stale_after_ms=100)
    rig.runner = TickRunner(
        rig.settings,
        rig.store,
        rig.venue,
        rig.clock,
        rig.runner.ident,
        settler=rig.settler,
        resolve=rig.resolve,
    )

    async def stale_feed() -> None:
        await Rig.feed(rig)
        for a in rig.settings.assets:
            status = FeedStatus(rig.clock.now_ms() - 5000, 0, 1.0)
            await rig.store.r.hset(rig.store.k.feed_status(), f"{a}:1s", FEED_STATUS.encode(status))

    rig.feed = stale_feed
    outs = await rig.run_ticks(30)
    # Not one strategy call, not one intent committed, nothing at the venue.
    assert await rig.store.read_intents() == []
    assert all(o.record.evaluated == 0 and o.record.orders == 0 for o in outs)
    assert all(not o.record.halted and not o.record.paused for o in outs)
    # The same rig with fresh data does trade: staleness was what blocked it.
    del rig.feed
    for _ in range(60):
        await rig.run_ticks(1)
        if await rig.store.read_intents():
            break
    assert await rig.store.read_intents(), "no entry in 60 ticks once the data was fresh"


async def test_reaching_the_daily_loss_limit_halts_with_a_reason(rig):
    from state.ledger import utc_day

    day = rig.store.k.ledger_day(utc_day(rig.clock.now_ms()))
    await rig.store.r.hset(day, "realized_pnl_micros", -usd_to_micros(100))
    await rig.run_ticks(2)
    flags = await rig.store.read_control()
    assert flags.halted and "daily loss limit" in flags.halt_reason


async def test_a_worker_that_lost_its_lease_stops_before_journaling(rig):
    await rig.run_ticks(1)
    later = rig.clock.now_ms() + 10_000
    got, epoch, _ = await rig.store.acquire_lease("green:x", "green", "t", later, 3000)
    assert got and epoch == rig.epoch + 1
    with pytest.raises(LeaseLost):
        await rig.run_ticks(1)
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 1


class StoppingClock(VirtualClock):
    """Asks the worker to stop once it has slept through `ticks` boundaries."""

    def __init__(self, start_ms: int, worker_ref: list, ticks: int) -> None:
        super().__init__(start_ms)
        self.worker_ref = worker_ref
        self.left = ticks

    async def sleep_until_ms(self, t_ms: int) -> None:
        await super().sleep_until_ms(t_ms)
        self.left -= 1
        if self.left < 0:
            self.worker_ref[0].request_stop()


async def test_a_stopped_runtime_counts_no_missed_tick_but_a_stopped_worker_does(rig):
    ref: list = []
    clock = StoppingClock(rig.clock.now_ms() + 60_000, ref, ticks=5)
    await rig.store.release_lease("blue:t", rig.epoch)
    w = Worker(rig.settings, rig.store, rig.venue, clock, "blue")
    ref.append(w)
    assert await asyncio.wait_for(w.run(), 30) == 0
    assert w.epoch == rig.epoch + 1 and w.state == "stopped"
    assert await rig.store.read_lease() == {}
    last, clean = await rig.store.read_stop_marks()
    assert last == clean == w.last_tick
    # the paper deposit was booked once, whatever the number of worker starts
    assert (await rig.store.read_ledger_totals())["deposit_micros"] == usd_to_micros(1000)

    # `baton stop` marks the downtime of the whole runtime as on purpose: not missed.
    await rig.store.r.hset(rig.store.k.stats(), "stack_stopped_ms", clock.now_ms())
    clock2 = StoppingClock(clock.now_ms() + 30_000, ref, ticks=2)
    g = Worker(rig.settings, rig.store, rig.venue, clock2, "green")
    ref[0] = g
    assert await asyncio.wait_for(g.run(), 30) == 0
    assert g.epoch == w.epoch + 1
    assert int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed") or 0) == 0
    assert not await rig.store.stack_was_stopped()  # cleared by the new holder

    # A worker stopped (or restarted) by hand while the runtime runs: nobody traded at the
    # boundaries in between, and they are counted.
    clock3 = StoppingClock(clock2.now_ms() + 10_000, ref, ticks=1)
    b = Worker(rig.settings, rig.store, rig.venue, clock3, "blue")
    ref[0] = b
    assert await asyncio.wait_for(b.run(), 30) == 0
    missed = int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed"))
    assert missed == b.last_tick - g.last_tick - 1 >= 9


async def test_a_crashed_workers_gap_is_counted_as_missed_ticks(rig):
    await rig.run_ticks(1)
    last, _ = await rig.store.read_stop_marks()
    ref: list = []
    # no clean stop recorded: the holder "crashed"; its lease expires and green takes over
    clock = StoppingClock(rig.clock.now_ms() + 10_000, ref, ticks=1)
    g = Worker(rig.settings, rig.store, rig.venue, clock, "green")
    ref.append(g)
    assert await asyncio.wait_for(g.run(), 30) == 0
    journal = await rig.store.r.xrange(rig.store.k.journal_ticks())
    first_green = next(f for _, f in journal if f["color"] == "green")
    gap = int(first_green["tick"]) - last - 1
    assert gap >= 9 and int(first_green["missed_before"]) == gap
    assert int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed")) == gap


async def test_a_key_of_the_wrong_type_fails_the_tick_with_the_keys_name(rig):
    await rig.store.r.delete(rig.store.k.positions_open())
    await rig.store.r.set(rig.store.k.positions_open(), "garbage")
    with pytest.raises(SnapshotError, match="baton:positions:open"):
        await rig.run_ticks(1)


def last_five_seconds(asked: list[int]) -> type:
    """A strategy (a fresh class: tests change it) that wants quotes only in the last 5 s of a
    window, and never trades; `asked` gets the ms left at each needs_quotes call."""

    class LastFiveSeconds:
        @staticmethod
        def quotes_from_ms(start_ms, end_ms, params):
            return end_ms - 5000

        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.window_end_ms - inp.now_ms)
            return False

        @staticmethod
        def evaluate(inp):
            return None

    return LastFiveSeconds


async def test_slots_sleep_until_their_strategy_may_want_quotes(rig, monkeypatch):
    """A strategy's quotes_from_ms: before it, the slot's input is not even built."""

    asked: list[int] = []
    LastFiveSeconds = last_five_seconds(asked)
    rig.resolver = lambda name: LastFiveSeconds
    outs = await rig.run_ticks(30)
    awake = [o for o in outs if o.record.started_ms >= (o.record.started_ms // 15_000 + 1) * 15_000 - 5000]
    assert 0 < len(awake) < len(outs)
    assert len(asked) == 4 * len(awake), "a slot was asked outside its last 5 s, or one was skipped in them"
    assert all(0 < left <= 5000 for left in asked)
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]

    # Candle windows are read only where a slot may want them: at each tick of the last 5 s,
    # and at the first tick seen in a window (before its wake-up time is known).
    windows = {o.record.started_ms // 15_000 for o in outs}
    reads = rig.runner.candles.stats.whole + rig.runner.candles.stats.new
    assert reads == 4 * (len(awake) + len(windows)) < 4 * len(outs)

    # A reload that drops the hint (a module's functions change in place) wakes every slot
    # at once: each is asked at every tick, as without a hint.
    del LastFiveSeconds.quotes_from_ms
    asked.clear()
    outs = await rig.run_ticks(5)
    assert len(asked) == 4 * len(outs)


def feed_through_the_feeds_writer(rig, monkeypatch) -> None:
    """The rig's candles written by the feed's own writer (feed/store.py), not by plain ZADDs:
    feed_write.lua keeps the marks the worker's cached copies go by (kernel/candle_cache.py)."""
    from feed.store import Batch, CandleStore

    store = CandleStore(rig.store.r, rig.store.k, interval="1s", retention_s=3600, clock_ms=rig.clock.now_ms)

    async def feed() -> None:
        now_s = rig.clock.now_ms() // 1000
        batch = Batch()
        for a in rig.settings.assets:
            for sec in range(now_s - 70, now_s):
                o, h, lo, c = rig.model.candle(a, sec)
                store.accept(batch, a, Candle(sec * 1000, o, h, lo, c, 1.0, True))
        await store.write(batch)

    monkeypatch.setattr(rig, "feed", feed)


async def test_slots_about_to_wake_have_their_candles_read_between_ticks(rig, monkeypatch):
    """The tick that wakes sleeping slots reads only the candles written since the gap before
    it, not the ten seconds they slept through: those were read between the ticks."""

    strategy = last_five_seconds([])
    rig.resolver = lambda name: strategy
    feed_through_the_feeds_writer(rig, monkeypatch)
    runner = rig.runner
    decoded: dict[int, int] = {}
    run = runner.run

    async def counted(tick, missed_before=0):
        before = runner.candles.stats.decoded
        out = await run(tick, missed_before)
        decoded[out.record.started_ms // 1000 % 15] = runner.candles.stats.decoded - before
        return out

    monkeypatch.setattr(runner, "run", counted)
    warmed: dict[int, int] = {}
    between = runner.between_ticks

    async def counted_between(next_boundary_ms):
        before = runner.candles.stats.decoded
        out = await between(next_boundary_ms)
        warmed[(next_boundary_ms // 1000 - 1) % 15] = runner.candles.stats.decoded - before
        return out

    monkeypatch.setattr(runner, "between_ticks", counted_between)
    await rig.run_ticks(16)
    # Second 10 of each 15 s window is the first awake one: 4 assets, one new candle each
    # (the feed wrote one more second since the read between the ticks).
    assert decoded[10] <= 4, decoded
    # Asleep ticks read nothing; awake ones a candle per asset (and, now and then, a whole
    # window: the periodic refresh of kernel/candle_cache.py).
    assert all(decoded[s] == 0 for s in range(1, 10)), str(sorted(decoded.items()))
    assert all(decoded[s] >= 4 for s in range(10, 15)), str(sorted(decoded.items()))
    # The seconds the slots slept through were read between the ticks, right before the wake.
    assert warmed[9] >= 4 * 8, str(sorted(warmed.items()))
    assert all(warmed[s] == 0 for s in range(1, 9)), str(sorted(warmed.items()))


async def test_the_periodic_whole_reads_of_awake_windows_are_made_between_ticks(rig, monkeypatch):
    """A window awake at every tick is still read whole every FULL_EVERY_MS (kernel/
    candle_cache.py), but by the gap before the tick it falls due at: after the first one,
    no tick reads a window whole, and every window was read whole again between ticks."""
    from kernel import candle_cache

    class AlwaysAwake:  # no quotes_from_ms: awake at every tick; never trades
        @staticmethod
        def needs_quotes(inp):
            return False

        @staticmethod
        def evaluate(inp):
            return None

    rig.resolver = lambda name: AlwaysAwake
    feed_through_the_feeds_writer(rig, monkeypatch)
    runner = rig.runner
    stats = runner.candles.stats
    in_ticks: list[int] = []
    run, between = runner.run, runner.between_ticks

    async def counted(tick, missed_before=0):
        before = stats.whole
        out = await run(tick, missed_before)
        in_ticks.append(stats.whole - before)
        return out

    between_whole = {"n": 0}

    async def counted_between(next_boundary_ms):
        before = stats.whole
        out = await between(next_boundary_ms)
        between_whole["n"] += stats.whole - before
        return out

    monkeypatch.setattr(runner, "run", counted)
    monkeypatch.setattr(runner, "between_ticks", counted_between)
    n_ticks = candle_cache.FULL_EVERY_MS // 1000 + 5
    await rig.run_ticks(n_ticks)
    assets = len(rig.settings.assets)
    assert in_ticks[0] <= assets and sum(in_ticks[1:]) == 0, in_ticks
    assert between_whole["n"] >= assets, between_whole


async def set_enabled(rig, slot_id: str, enabled: bool) -> None:
    from state.structs import SLOT

    k = rig.store.k.slots()
    slot = SLOT.decode(await rig.store.r.hget(k, slot_id))
    await rig.store.r.hset(k, slot_id, SLOT.encode(msgspec.structs.replace(slot, enabled=enabled)))


async def test_a_disabled_slot_sleeps_and_wakes_when_enabled_again(rig, monkeypatch):
    """A disabled slot runs no strategy, so its asset's candles are not read for it, neither
    by the tick nor between ticks; enabled again, it is awake one tick later."""
    from kernel import housekeeping
    from kernel import tick as tick_mod

    asked: list[str] = []

    class Recording(last_five_seconds([])):
        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.slot_id)
            return False

    rig.resolver = lambda name: Recording
    read: list[set[str]] = []  # per snapshot, and per warm-up between ticks: the assets read
    snapshot, warm = tick_mod.read_snapshot, housekeeping.read_candles

    async def reading_snapshot(*args, candle_assets=None, **kwargs):
        read.append(set(candle_assets or ()))
        return await snapshot(*args, candle_assets=candle_assets, **kwargs)

    async def warming(store, assets, *args, **kwargs):
        read.append(set(assets))
        return await warm(store, assets, *args, **kwargs)

    monkeypatch.setattr(tick_mod, "read_snapshot", reading_snapshot)
    monkeypatch.setattr(housekeeping, "read_candles", warming)
    off = "btc-15s"
    await set_enabled(rig, off, False)
    await rig.run_ticks(1)  # the first tick learns that it is disabled
    read.clear()
    await rig.run_ticks(30)
    assert off not in asked and {"eth-15s", "sol-15s", "xrp-15s"} <= set(asked)
    assert not any("btc" in assets for assets in read), read
    assert any("eth" in assets for assets in read)

    await set_enabled(rig, off, True)
    await rig.run_ticks(16)
    assert off in asked
    assert any("btc" in assets for assets in read)


def enter_at_once(asked: list[str]) -> type:
    """last_five_seconds' strategy (a fresh class), but it buys Up at the first chance; `asked`
    gets the slot id at each needs_quotes call."""
    from kernel.strategy_api import Decision

    class EnterAtOnce(last_five_seconds([])):
        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.slot_id)
            return True

        @staticmethod
        def evaluate(inp):
            if inp.up_ask is None:
                return None
            return Decision(side="up", limit_price=inp.up_ask, stake_usd=5.0, p_up=0.9, reason="test")

    return EnterAtOnce


def venue_orders(rig) -> list[dict]:
    """Every order the sim's CLOB ever accepted (GET /data/orders, page by page)."""
    import httpx

    out, cursor = [], None
    while True:
        params = {"next_cursor": cursor} if cursor else {}
        page = httpx.get(f"{rig.settings.clob_url}/data/orders", params=params, timeout=5).json()
        out += page["data"]
        cursor = page.get("next_cursor")
        if not page["data"] or not cursor or cursor == "LTE=":
            return out


def watch_entry_lookups(runner, monkeypatch) -> list[int]:
    """Per tick, how many entry intents the tick itself asked Redis for (_entry_state's read;
    the look-up between ticks is not counted)."""
    asked: list[int] = []
    look = runner.markets.cached
    inside = {"tick": False}

    async def cached_markets(refs, problems, intents_of=None):
        if inside["tick"] and intents_of:
            asked[-1] += len(intents_of)
        return await look(refs, problems, intents_of)

    run = runner.run

    async def tick(k, missed_before=0):
        asked.append(0)
        inside["tick"] = True
        try:
            return await run(k, missed_before)
        finally:
            inside["tick"] = False

    monkeypatch.setattr(runner.markets, "cached", cached_markets)
    monkeypatch.setattr(runner, "run", tick)
    return asked


async def test_a_slot_that_entered_its_window_sleeps_until_the_next(rig, monkeypatch):
    """One entry per slot-window: after it, the slot is passed by like a sleeping one (no input
    built, its asset's candles not read), and the tick that wakes it does not ask Redis
    whether it entered already: that was looked up between the ticks."""

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    stats = rig.runner.candles.stats
    reads: list[int] = []
    run = rig.runner.run

    async def counted(k, missed_before=0):
        before = stats.whole + stats.new
        out = await run(k, missed_before)
        reads.append(stats.whole + stats.new - before)
        return out

    monkeypatch.setattr(rig.runner, "run", counted)
    # Start right after a window's entry zone: the next window is the first one seen whole.
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 - 1000)
    outs = await rig.run_ticks(31)
    entries = [o for o in outs if o.record.orders]
    assert [o.record.orders for o in entries] == [4, 4], [o.record.orders for o in outs]
    assert all(o.record.started_ms // 1000 % 15 == 10 for o in entries)
    # Each slot was asked once per window, at its first awake tick, and never again.
    assert sorted(asked) == sorted(2 * [f"{a}-15s" for a in ASSETS.split(",")]), asked
    # The ticks that entered asked Redis for no entry intent: the look-up between the ticks
    # before them found none. (The first tick knows nothing yet of its window.)
    assert all(n == 0 for o, n in zip(outs, lookups, strict=True) if o.record.orders), lookups
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]
    # After the entry the rest of the window reads no candle window: every slot of each asset
    # is done with it.
    for o, n in zip(outs, reads, strict=True):
        if o.record.started_ms // 1000 % 15 in (11, 12, 13, 14):
            assert n == 0, (o.record.started_ms // 1000 % 15, reads)
    # One order per slot-window at the venue.
    assert len(venue_orders(rig)) == 8


async def test_an_entry_made_before_this_worker_looked_is_found_between_ticks(rig, monkeypatch):
    """An entry intent already in Redis (a predecessor's) when the slot is about to wake: the
    slot is never evaluated in that window."""
    from kernel.snapshot import slot_refs

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 + 1000)
    ref = slot_refs([("btc-15s", "btc", "15s")], rig.clock.now_ms())[0]
    await rig.store.r.hset(rig.store.k.intents(), ref.entry_intent_id, '{"written":"by a predecessor"}')
    outs = await rig.run_ticks(13)
    assert sum(o.record.orders for o in outs) == 3
    assert "btc-15s" not in asked and len(asked) == 3, asked
    assert rig.runner.entries.entered["btc-15s"] == ref.window_start_s


@pytest.mark.parametrize("landed", [False, True])
async def test_a_commit_without_an_answer_makes_the_tick_ask_again(rig, monkeypatch, landed):
    """What was looked up between ticks holds only while every commit's answer is known: after
    one that raised, the next tick asks Redis itself. If the commit had landed, it finds the
    intents there and nothing enters again (the orders were never posted); if not, the slots
    enter then."""
    from kernel import executor

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    real = executor.submit_signed
    calls = {"n": 0}

    async def lost_answer(store, venue, epoch, ready, problems, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            if landed:
                await store.commit_intents(epoch, [i for i, _ in ready])
            raise ConnectionError("Redis went away before it answered")
        return await real(store, venue, epoch, ready, problems, **kw)

    monkeypatch.setattr(executor, "submit_signed", lost_answer)
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 + 1000)
    outs, asked_by_tick = [], []
    for _ in range(11):
        try:
            outs.extend(await rig.run_ticks(1))
        except ConnectionError:
            outs.append(None)
        asked_by_tick.append(len(asked))
    failed = outs.index(None)
    assert lookups[failed] == 0  # known from between the ticks
    assert rig.runner.entries.absent == {}
    assert lookups[failed + 1] == 4  # asked again: the failed commit might have landed
    assert outs[failed + 1].record.orders == (0 if landed else 4)
    # Either way the slots are known to have entered now: never asked again in the window.
    window = outs[failed + 1].record.started_ms // 15_000
    same = [i for i, o in enumerate(outs) if i > failed + 1 and o.record.started_ms // 15_000 == window]
    assert same and all(asked_by_tick[i] == asked_by_tick[failed + 1] for i in same)
    assert all(rig.runner.entries.entered[f"{a}-15s"] == window * 15 for a in ASSETS.split(","))
    assert len(venue_orders(rig)) == sum(o.record.orders for o in outs if o is not None)


async def test_what_was_looked_up_under_an_older_lease_is_asked_again(rig, monkeypatch):
    """The between-ticks look-up holds only for the epoch it was made under: another holder
    may have entered meanwhile. After the lease went elsewhere and came back, the tick asks
    Redis again, finds that holder's entry and does not enter that slot a second time."""
    from kernel.snapshot import slot_refs
    from kernel.tick import Identity

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    window_ms = (rig.clock.now_ms() // 15_000 + 1) * 15_000
    await rig.clock.sleep_until_ms(window_ms + 1000)
    await rig.run_ticks(8)  # through second 9: the look-up for the waking tick is made
    runner = rig.runner
    assert {runner.entries.absent[f"{a}-15s"] for a in ASSETS.split(",")} == {
        (window_ms // 1000, runner.ident.epoch)
    }

    # The lease lapses; another worker takes it and commits btc's entry; the lease comes back.
    await rig.clock.sleep_until_ms(window_ms + 12_500)
    got, other, _ = await rig.store.acquire_lease("green:t", "green", "test", rig.clock.now_ms(), 100)
    assert got
    ref = slot_refs([("btc-15s", "btc", "15s")], rig.clock.now_ms())[0]
    theirs = msgspec.structs.replace(
        make_intent(ref.entry_intent_id, epoch=other), slot="btc-15s", window_start_s=ref.window_start_s
    )
    assert await rig.store.commit_intent(other, theirs) == "OK"
    await rig.clock.sleep_until_ms(window_ms + 12_700)
    got, ours, _ = await rig.store.acquire_lease("blue:t", "blue", "test", rig.clock.now_ms(), 3000)
    assert got and ours > other
    runner.ident = Identity("blue:t", "blue", "test", ours)  # as the worker does (become_active)

    outs = await rig.run_ticks(1)
    assert lookups[-1] == 4  # asked again, all four
    assert (outs[0].record.orders, outs[0].record.evaluated) == (3, 3)  # btc not evaluated
    assert runner.entries.entered["btc-15s"] == ref.window_start_s


async def test_markets_kept_in_memory_are_pruned_in_amortised_time(rig):
    """Markets are kept in memory until their window is an hour gone. Short windows put more
    of them into an hour than the map's floor: it must not be copied on every new market (it
    was, and at 1,024 slots on 15 s windows that copying was most of the worker's CPU)."""
    from kernel.snapshot import SlotRef
    from state.structs import Market

    runner = rig.runner
    now_s = rig.clock.now_ms() // 1000
    floor = 4 * len(runner.configured) + 64
    copies, seen = 0, runner.markets.known

    def remember(i: int, end_s: int) -> None:
        nonlocal copies, seen
        ref = SlotRef(f"s{i}", f"a{i}", "15s", end_s - 15, end_s)
        runner.markets.remember(ref, Market(slug=ref.slug, condition_id="0x1", up_token="1", down_token="2"))
        if runner.markets.known is not seen:
            copies, seen = copies + 1, runner.markets.known

    for i in range(20 * floor):  # all within the last hour: none may go
        remember(i, now_s - 60)
    assert len(runner.markets.known) == 20 * floor
    assert copies <= 6  # doubling: about log2(20) looks, not one per market
    # An hour later they all go at the next look, and the map is small again.
    await rig.clock.sleep_until_ms((now_s + 3700) * 1000)
    for i in range(20 * floor, 60 * floor):
        remember(i, now_s + 3690)
    assert all(v[1] == now_s + 3690 for v in runner.markets.known.values())
    assert len(runner.markets.known) == 40 * floor
