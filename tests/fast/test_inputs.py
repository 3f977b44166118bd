"""A strategy's input, version 2 (kernel/inputs.py): bars aggregated from the feed's 1 s
candles at the declared intervals (aligned, never holding data from after the evaluation's
time), books with their depth, the slot's own holding, the account's cash and room; a
version 1 strategy decides exactly as before. And how far back each asset's candles are read
(kernel/candle_cache.py Lookbacks, kernel/snapshot.py)."""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace

import msgspec
import pytest

from baton.errors import NotReady
from kernel import tick as tick_mod
from kernel.candle_cache import VOL_LOOKBACK_S, CandleCache, Lookbacks, lookback_cap_s
from kernel.inputs import BarMemo, TickInputs, bars_from_candles, holding, with_asks
from kernel.snapshot import Snapshot, read_snapshot, slot_refs
from kernel.strategy_api import Bar, BookSide
from kernel.venue import Book
from state.structs import (
    CANDLE,
    FEED_STATUS,
    SLOT,
    Candle,
    ControlFlags,
    FeedStatus,
    Intent,
    Position,
    Slot,
    exit_leg,
)
from worker.strategies import snipe

T0 = 1_700_000_100_000  # a whole minute (and a whole 15 minutes)


def _candles(first_ms: int, n: int, price=lambda k: 100.0 + k) -> list[Candle]:
    """n one-second candles from first_ms; candle k closes at price(k), opens at price(k-1)."""
    out = []
    for k in range(n):
        o, c = price(k - 1), price(k)
        out.append(Candle(first_ms + k * 1000, o, max(o, c) + 0.5, min(o, c) - 0.5, c, 1.0 + k, True))
    return out


def test_bars_are_aligned_on_the_interval_and_aggregate_ohlcv():
    candles = _candles(T0 - 95_000, 200)  # from 95 s before a whole minute
    now = T0 + 70_500  # 10.5 s into the second minute after T0
    bars = bars_from_candles(candles, 60, 3, now)
    assert [b.open_ms for b in bars] == [T0 - 60_000, T0, T0 + 60_000]
    first = [c for c in candles if T0 - 60_000 <= c.open_ms < T0]
    assert bars[0] == Bar(
        T0 - 60_000,
        first[0].open,
        max(c.high for c in first),
        min(c.low for c in first),
        first[-1].close,
        sum(c.volume for c in first),
    )
    # The newest bar is still forming: up to the candle of now's second, none later.
    forming = [c for c in candles if T0 + 60_000 <= c.open_ms <= now]
    assert bars[-1].close == forming[-1].close and bars[-1].volume == sum(c.volume for c in forming)
    assert all(c.open_ms <= now for c in candles[: len(forming)])


def test_bars_never_hold_data_from_after_the_evaluation_time():
    candles = _candles(T0, 120)
    now = T0 + 30_000
    later = _candles(T0, 120, price=lambda k: 100.0 + k if k <= 30 else 1e6)
    for iv_s in (1, 5, 15, 60):
        assert bars_from_candles(candles, iv_s, 100, now) == bars_from_candles(later, iv_s, 100, now)
        bars = bars_from_candles(later, iv_s, 100, now)
        assert bars and all(b.open_ms <= now and b.high < 1e6 for b in bars)
    assert bars_from_candles(candles, 1, 5, now)[-1].open_ms == now


def test_bars_count_back_from_now_and_a_gap_is_no_bar():
    candles = [c for c in _candles(T0, 300) if not T0 + 60_000 <= c.open_ms < T0 + 120_000]
    bars = bars_from_candles(candles, 60, 5, T0 + 299_000)
    assert [b.open_ms for b in bars] == [T0, T0 + 120_000, T0 + 180_000, T0 + 240_000]
    assert bars_from_candles(candles, 60, 2, T0 + 299_000) == bars[-2:]
    assert bars_from_candles([], 60, 5, T0) == () and bars_from_candles(candles, 5, 0, T0) == ()
    # 1 s bars are the candles themselves.
    one = bars_from_candles(candles, 1, 3, T0 + 299_000)
    assert [(b.open_ms, b.close) for b in one] == [(c.open_ms, c.close) for c in candles[-3:]]


def _position(slot="btc-15m", start_s=T0 // 1000, **kw) -> Position:
    fields = {
        "id": f"{slot}:{start_s}",
        "slot": slot,
        "asset": "btc",
        "window_start_s": start_s,
        "window_end_s": start_s + 900,
        "side": "up",
        "token_id": "tu",
        "condition_id": "c",
        "shares_micros": 10_000_000,
        "cost_micros": 5_500_000,
        "opened_ms": T0 + 5_000,
        "intent_id": f"{slot}:{start_s}:entry",
    }
    return Position(**{**fields, **kw})


def _intent(leg: str, slot="btc-15m", start_s=T0 // 1000) -> Intent:
    return Intent(
        id=f"{slot}:{start_s}:{leg}",
        slot=slot,
        window_start_s=start_s,
        window_end_s=start_s + 900,
        leg=leg,
        side="up",
        limit_price=0.6,
        size=10.0,
        stake_usd=0.0,
        epoch=1,
        created_ms=T0 + 100_000,
        status="posted",
    )


def _snap(now: int, positions=(), intents=(), slots=None, candles=None) -> Snapshot:
    refs = slot_refs([("btc-15m", "btc", "15m"), ("eth-15m", "eth", "15m")], now)
    candles = candles or {a: _candles(now - 59_000, 60) for a in ("btc", "eth")}
    return Snapshot(
        lease_ok=True,
        control=ControlFlags(),
        refs=refs,
        slots=slots or {r.id: Slot(r.id, r.asset, r.timeframe, params={"edge": 0.0}) for r in refs},
        opens={r.id: candles[r.asset][0] for r in refs},
        recent=candles,
        feed={a: FeedStatus(now, now - 1000, 1.0) for a in candles},
        open_positions=list(positions),
        open_intents=list(intents),
        totals={"cash_micros": 250_000_000},
        day_pnl_micros=0,
    )


def test_a_v2_input_has_the_slots_holding_its_legs_the_cash_and_the_room():
    now = T0 + 600_000
    snap = _snap(
        now,
        positions=[_position(exits=1, shares_micros=6_000_000, cost_micros=3_300_000)],
        intents=[_intent(exit_leg(2)), _intent("entry", slot="eth-15m")],
    )
    ctx = TickInputs(snap, now, 10_000, max_exposure_usd=20.0)
    btc, eth = (ctx.slot(r) for r in snap.refs)
    assert btc is not None and eth is not None
    assert btc.api == 2 and btc.strategy == "snipe" and btc.open_ref_price == btc.open_price
    assert btc.position is not None and btc.entered
    assert (btc.position.side, btc.position.shares, btc.position.cost_usd) == ("up", 6.0, 3.3)
    assert abs(btc.position.avg_price - 0.55) < 1e-12
    assert btc.position.exits == 2 and btc.position.exit_pending
    # A leg that ended unfilled leaves no trace in the snapshot: the kernel's count says it.
    told = ctx.slot(snap.refs[0], exit_legs=3)
    assert told is not None and told.position is not None and told.position.exits == 3
    assert eth.position is None and eth.entered  # its entry intent is open, not filled yet
    assert btc.cash_usd == 250.0
    # Room: 20 USD less the open cost; the open intents stake nothing here.
    assert btc.exposure_room_usd == 20.0 - 3.3
    assert btc.bars == {}  # no strategy module given: no bars built
    crowded = TickInputs(snap, now, 10_000, max_exposure_usd=1.0).slot(snap.refs[0])
    assert crowded is not None and crowded.exposure_room_usd == 0.0


def test_a_closed_or_other_windows_position_is_no_holding():
    now = T0 + 600_000
    assert holding(_position(status="closed", shares_micros=0, cost_micros=0), []) is None
    snap = _snap(now, positions=[_position(start_s=T0 // 1000 - 900)])
    inp = TickInputs(snap, now, 10_000).slot(snap.refs[0])
    assert inp is not None and inp.position is None and not inp.entered
    assert inp.exposure_room_usd == 0.0  # no limit known: no room claimed


def test_a_stale_feed_stops_entries_but_not_the_exit_of_a_position_held():
    now = T0 + 600_000
    snap = _snap(now, positions=[_position()])
    snap.feed = {a: FeedStatus(now - 60_000, now - 61_000, 1.0) for a in snap.feed}
    btc, eth = (TickInputs(snap, now, 10_000).slot(r) for r in snap.refs)
    assert btc is not None and btc.position is not None  # it may still sell what it holds
    assert eth is None  # nothing held: no entry on stale data


def test_bars_are_built_only_for_what_the_strategy_declares_once_per_tick():
    now = T0 + 3_599_000
    candles = {a: _candles(T0, 3600) for a in ("btc", "eth")}
    snap = _snap(now, candles=candles)
    ctx = TickInputs(snap, now, 10_000)
    strat = SimpleNamespace(CANDLES={"1m": 30, "5s": 12, "2m": 5})  # 2m unknown: left out
    btc = ctx.slot(snap.refs[0], strat)
    assert btc is not None and set(btc.bars) == {"1m", "5s"}
    assert len(btc.bars["1m"]) == 30 and len(btc.bars["5s"]) == 12
    assert btc.bars["1m"] == bars_from_candles(candles["btc"], 60, 30, now)
    again = ctx.slot(snap.refs[0], strat)
    assert again is not None and again.bars["1m"] is btc.bars["1m"]  # memoised for the tick
    assert len(btc.closes) == 3600  # the snapshot trims closes (read_snapshot); not this


def test_books_keep_their_depth_and_give_the_asks_of_version_1():
    now = T0 + 600_000
    snap = _snap(now)
    inp = TickInputs(snap, now, 10_000).slot(snap.refs[0])
    up = Book("tu", asks=[(0.55, 10.0), (0.56, 200.0)], bids=[(0.53, 5.0), (0.5, 80.0)])
    out = with_asks(inp, up, None)
    assert out.up_ask == 0.55 and out.down_ask is None and out.down_book is None
    assert out.up_book == BookSide(bids=((0.53, 5.0), (0.5, 80.0)), asks=((0.55, 10.0), (0.56, 200.0)))
    assert out.up_book.best_bid == 0.53


def test_a_version_1_strategy_decides_the_same_on_a_version_2_input():
    now = T0 + 895_000  # in snipe's entry zone
    rising = {a: _candles(now - 59_000, 60, price=lambda k: 100.0 + 0.01 * k) for a in ("btc", "eth")}
    snap = _snap(now, candles=rising)
    inp = TickInputs(snap, now, 10_000).slot(snap.refs[0], snipe)
    assert inp is not None
    books = (Book("u", asks=[(0.6, 50.0)], bids=[(0.58, 50.0)]), Book("d", asks=[(0.42, 50.0)], bids=[]))
    v2 = with_asks(inp, *books)
    v1_fields = {f: getattr(v2, f) for f in v2.__struct_fields__[: v2.__struct_fields__.index("api")]}
    v1 = msgspec.convert(v1_fields, type(v2))
    assert v1.api == 1 and v1.position is None and v1.up_book is None
    assert snipe.evaluate(v2) == snipe.evaluate(v1) is not None


def test_the_lookback_of_an_asset_is_the_longest_its_enabled_slots_declare():
    modules = {
        "snipe": snipe,
        "long": SimpleNamespace(CANDLES={"1m": 30, "5s": 60}),
        "huge": SimpleNamespace(CANDLES={"15m": 4}),
    }

    def resolve(name):
        return modules[name]

    refs = slot_refs([("a", "btc", "5m"), ("b", "btc", "5m"), ("c", "eth", "5m"), ("d", "sol", "5m")], T0)
    slots = {
        "a": Slot("a", "btc", "5m", strategy="snipe"),
        "b": Slot("b", "btc", "5m", strategy="long"),
        "c": Slot("c", "eth", "5m", strategy="long", enabled=False),
        "d": Slot("d", "sol", "5m", strategy="huge"),
    }
    lb = Lookbacks(resolve, cap_s=1800)
    assert lb.of(refs, slots, {"btc", "eth", "sol"}) == {"btc": 1800, "eth": VOL_LOOKBACK_S, "sol": 1800}
    assert Lookbacks(resolve).of(refs, slots, {"sol"}) == {"sol": 3600}
    assert lb.of(refs, {}, {"btc"}) == {"btc": VOL_LOOKBACK_S}  # slots not read yet
    assert lb.of(refs, {"b": Slot("b", "btc", "5m", strategy="gone")}, {"btc"}) == {"btc": VOL_LOOKBACK_S}
    assert lookback_cap_s(SimpleNamespace(candle_retention_s=600)) == 600
    assert lookback_cap_s(SimpleNamespace(candle_retention_s=86_400)) == 3600


async def test_each_asset_is_read_as_far_back_as_its_lookback_and_closes_stay_a_minute(store):
    now = T0 + 1_800_500
    k = store.k
    written = _candles(now - 3_000_500, 3001)
    body = b"[" + b",".join(CANDLE.encode(c) for c in written) + b"]"
    for a in ("btc", "eth"):  # as the feed writes them (feed/store.py), marks and all
        await store.scripts.feed_write(
            keys=[k.feed_status(), k.feed_stats(), k.journal_errors(), k.candle_marks(), k.candles(a, "1s")],
            args=[0, 0, 100, "", 10**14, 0, f"{a}:1s", "{}", body],
        )
    refs = slot_refs([("btc-5m", "btc", "5m"), ("eth-5m", "eth", "5m")], now)
    for r in refs:
        await store.r.hset(k.slots(), r.id, SLOT.encode(Slot(r.id, r.asset, r.timeframe)))
    cache = CandleCache()
    for _ in range(2):  # a whole read, then one of what is new (nothing: a second later)
        snap = await read_snapshot(store, refs, now, None, {"btc": 900}, cache)
        assert snap.recent["btc"] == [c for c in written if now - 900_000 <= c.open_ms <= now]
        assert snap.recent["eth"] == [c for c in written if now - 60_000 <= c.open_ms <= now]
        assert snap.closes("btc") == tuple(c.close for c in written if now - 60_000 <= c.open_ms <= now)
        assert snap.closes("eth") == tuple(c.close for c in snap.recent["eth"])
        assert snap.opens["btc-5m"] is not None and snap.opens["eth-5m"] is not None
        now += 1000
    assert cache.stats.whole == 2 and cache.stats.new == 2


async def test_the_tick_gives_a_strategy_the_bars_it_declares_and_reads_far_enough_back(rig, monkeypatch):
    seen: list = []

    class Bars:
        API = 2
        CANDLES = MappingProxyType({"1m": 8, "5s": 12})

        @staticmethod
        def evaluate(inp):
            seen.append(inp)

    async def feed() -> None:  # ten minutes of history, not the rig's seventy seconds
        now_s = rig.clock.now_ms() // 1000
        pipe = rig.store.r.pipeline(transaction=False)
        for a in rig.settings.assets:
            members = {}
            for sec in range(now_s - 600, now_s):
                o, h, lo, c = rig.model.candle(a, sec)
                members[CANDLE.encode(Candle(sec * 1000, o, h, lo, c, 1.0, True)).decode()] = sec * 1000
            pipe.zadd(rig.store.k.candles(a, "1s"), members)
            pipe.hset(
                rig.store.k.feed_status(),
                f"{a}:1s",
                FEED_STATUS.encode(FeedStatus(now_s * 1000, now_s * 1000 - 1000, c)),
            )
        await pipe.execute()

    lookbacks: list = []
    read = tick_mod.read_snapshot

    async def reading(store, refs, now, lease, lookback_s, *a, **kw):
        if lease is not None:  # the tick's read, not the readiness check's
            lookbacks.append(lookback_s)
        return await read(store, refs, now, lease, lookback_s, *a, **kw)

    monkeypatch.setattr(tick_mod, "read_snapshot", reading)
    monkeypatch.setattr(rig, "feed", feed)
    rig.resolver = lambda name: Bars
    await rig.feed()
    assert await rig.runner.dry_run() == 4
    seen.clear()  # the samples of the readiness check
    outs = await rig.run_ticks(3)
    assert all(not o.problems for o in outs), [o.problems for o in outs]
    assert len(seen) == 4 * 3
    for inp in seen:
        assert inp.api == 2 and inp.cash_usd == 1000.0
        assert inp.exposure_room_usd == rig.settings.max_exposure_usd
        assert set(inp.bars) == {"1m", "5s"} and len(inp.bars["5s"]) == 12
        assert len(inp.bars["1m"]) == 8 and all(b.open_ms % 60_000 == 0 for b in inp.bars["1m"])
        assert inp.bars["1m"][-1].open_ms <= inp.now_ms < inp.bars["1m"][-1].open_ms + 60_000
        assert inp.bars["5s"][-1].close == inp.last_price and len(inp.closes) <= 60
        assert inp.up_book is not None and inp.up_book.best_ask == inp.up_ask
    # Each asset read as far back as the bars need (8 minutes), not an hour.
    assert lookbacks and all(lb == dict.fromkeys(rig.settings.assets, 480) for lb in lookbacks)


def test_bars_kept_between_ticks_are_reused_while_the_copy_is_the_same_and_rebuilt_after():
    candles = _candles(T0, 3600)
    memo = BarMemo()
    now = T0 + 3_000_500
    first = memo.bars("btc", 7, candles[:3001], 60, 60, now)
    assert first == bars_from_candles(candles[:3001], 60, 60, now)
    # A second later, one more candle: the complete bars are the same objects, not rebuilt.
    later = memo.bars("btc", 7, candles[:3002], 60, 60, now + 1000)
    assert later == bars_from_candles(candles[:3002], 60, 60, now + 1000)
    assert later[0] is first[0] and later[-2] is first[-2]
    # Another copy (a whole read: a new generation) of changed candles: built again.
    changed = [*candles[:100], msgspec.structs.replace(candles[100], high=1e6), *candles[101:3002]]
    again = memo.bars("btc", 8, changed, 60, 60, now + 1000)
    assert again == bars_from_candles(changed, 60, 60, now + 1000) != later
    # Without a generation (a window the cache does not keep), always built afresh.
    assert memo.bars("btc", None, candles[:3002], 60, 60, now + 1000) == later


async def test_the_readiness_check_refuses_bars_beyond_the_look_back_naming_them(rig):
    class TooLong:
        API = 2
        CANDLES = MappingProxyType({"15m": 5})  # 75 minutes: the feed keeps an hour

        @staticmethod
        def evaluate(inp):
            return None

    rig.resolver = lambda name: TooLong
    await rig.feed()
    with pytest.raises(NotReady, match=r"CANDLES\['15m'\] = 5 bars is 4500 s of look-back"):
        await rig.runner.dry_run()
