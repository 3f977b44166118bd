"""Garbage never switches a limit off (issue #23 §2), on the rig (tests/fast/rig.py): every
value the tick's entry checks read that cannot be read blocks new entries (for its slot, its
asset, or every slot), is kept in `baton:blocked` and journaled once, lets the rest of the tick
go on, and clears by itself once repaired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from redis.exceptions import ResponseError

from kernel.blocking import EntryBlocks
from kernel.candle_cache import VOL_LOOKBACK_S, CandleCache
from kernel.snapshot import int64, read_snapshot, slot_refs
from kernel.windows import slug, window_bounds
from state.ledger import utc_day
from state.structs import CANDLE, INTENT, MARKET, POSITION, Blocker, Candle, Intent, Market, Position
from tests.fast.rig import Rig

Write = Callable[[Rig], Awaitable[Any]]


@dataclass
class Garbage:
    """One class of garbage: how to write it, how to repair it, what it blocks ('' = every
    slot) and the blocker's key and field."""

    name: str
    write: Write
    repair: Write
    key: str
    field: str = ""
    slot: str = ""
    asset: str = ""
    # Found at every tick (a cached market is read only when its window's is looked for).
    every_tick: bool = True


def _day(rig: Rig) -> str:
    return rig.store.k.ledger_day(utc_day(rig.clock.now_ms()))


async def _hset(rig: Rig, key: str, field: str, value: Any) -> None:
    await rig.store.r.hset(key, field, value)


_NEG_POSITION = POSITION.encode(
    Position(
        id="btc-15s:1",
        slot="btc-15s",
        asset="btc",
        window_start_s=1,
        window_end_s=2_000_000_000,
        side="up",
        token_id="1",
        condition_id="0x1",
        shares_micros=1,
        cost_micros=-(10**12),
        opened_ms=1,
        intent_id="btc-15s:1:entry",
    )
)
_NAN_INTENT = INTENT.encode(
    Intent(
        id="eth-15s:1:entry",
        slot="eth-15s",
        window_start_s=1,
        window_end_s=2_000_000_000,
        leg="entry",
        side="up",
        limit_price=0.5,
        size=1.0,
        stake_usd=-1e9,
        epoch=1,
        created_ms=1,
    )
)


def _future_slugs(rig: Rig, asset: str, n: int) -> list[str]:
    start_s, _ = window_bounds(rig.clock.now_ms(), "15s")
    return [slug(asset, "15s", start_s + 15 * i) for i in range(n)]


async def _garbage_markets(rig: Rig) -> None:
    for s in _future_slugs(rig, "sol", 4):
        await rig.store.r.set(rig.store.k.market(s), "{garbage")


async def _repair_markets(rig: Rig) -> None:
    for s in _future_slugs(rig, "sol", 8):
        await rig.store.r.delete(rig.store.k.market(s))


async def _garbage_candle(rig: Rig) -> None:
    # Scored where the feed's candles are, so that it stays in the lookback while the test runs.
    for s in range(0, 40):
        await rig.store.r.zadd(
            rig.store.k.candles("xrp", "1s"), {f"garbage{s}": rig.clock.now_ms() + s * 1000}
        )


async def _repair_candle(rig: Rig) -> None:
    await rig.store.r.zrem(rig.store.k.candles("xrp", "1s"), *(f"garbage{s}" for s in range(40)))


CLASSES = [
    Garbage(
        "day pnl",
        lambda rig: _hset(rig, _day(rig), "realized_pnl_micros", "lots"),
        lambda rig: rig.store.r.hdel(_day(rig), "realized_pnl_micros"),
        "baton:ledger:day:",
        "realized_pnl_micros",
    ),
    Garbage(
        "day pnl past int64",
        lambda rig: _hset(rig, _day(rig), "realized_pnl_micros", "9" * 30),
        lambda rig: rig.store.r.hdel(_day(rig), "realized_pnl_micros"),
        "baton:ledger:day:",
        "realized_pnl_micros",
    ),
    Garbage(
        "cash",
        lambda rig: _hset(rig, rig.store.k.ledger_totals(), "cash_micros", "1000000000x"),
        lambda rig: _hset(rig, rig.store.k.ledger_totals(), "cash_micros", 1000 * 10**6),
        "baton:ledger:totals",
        "cash_micros",
    ),
    Garbage(
        "open position",
        lambda rig: _hset(rig, rig.store.k.positions_open(), "btc-15s:1", "{not json"),
        lambda rig: rig.store.r.hdel(rig.store.k.positions_open(), "btc-15s:1"),
        "baton:positions:open",
        "btc-15s:1",
    ),
    Garbage(
        "open position of negative cost",
        lambda rig: _hset(rig, rig.store.k.positions_open(), "btc-15s:1", _NEG_POSITION),
        lambda rig: rig.store.r.hdel(rig.store.k.positions_open(), "btc-15s:1"),
        "baton:positions:open",
        "btc-15s:1",
    ),
    Garbage(
        "open intent",
        lambda rig: _hset(rig, rig.store.k.intents_open(), "eth-15s:1:entry", "\x00"),
        lambda rig: rig.store.r.hdel(rig.store.k.intents_open(), "eth-15s:1:entry"),
        "baton:intents:open",
        "eth-15s:1:entry",
    ),
    Garbage(
        "open intent of negative stake",
        lambda rig: _hset(rig, rig.store.k.intents_open(), "eth-15s:1:entry", _NAN_INTENT),
        lambda rig: rig.store.r.hdel(rig.store.k.intents_open(), "eth-15s:1:entry"),
        "baton:intents:open",
        "eth-15s:1:entry",
    ),
    Garbage(
        "slot",
        lambda rig: _hset(rig, rig.store.k.slots(), "btc-15s", '{"id": 7}'),
        lambda rig: _hset(rig, rig.store.k.slots(), "btc-15s", _SLOT_BTC[0]),
        "baton:slots",
        "btc-15s",
        slot="btc-15s",
    ),
    Garbage("candle", _garbage_candle, _repair_candle, "baton:candles:xrp:1s", asset="xrp"),
    Garbage(
        "cached market",
        _garbage_markets,
        _repair_markets,
        "baton:market:sol-updown-15s-",
        slot="sol-15s",
        every_tick=False,
    ),
]
_SLOT_BTC: list[str] = []


def _in_scope(g: Garbage, slot_id: str) -> bool:
    if g.slot:
        return slot_id == g.slot
    if g.asset:
        return slot_id.startswith(g.asset + "-")
    return True


async def _intents(rig: Rig) -> dict[str, Intent]:
    return {i.id: i for i in await rig.store.read_intents()}


async def _journal(rig: Rig, word: str) -> list[str]:
    return [
        f["error"]
        for _, f in await rig.store.r.xrange(rig.store.k.journal_errors())
        if f["source"] == "blocked" and f["error"].startswith(word)
    ]


@pytest.mark.parametrize("g", CLASSES, ids=[g.name for g in CLASSES])
async def test_each_garbage_class_blocks_entries_is_reported_once_and_clears_when_repaired(rig, g):
    _SLOT_BTC[:] = [await rig.store.r.hget(rig.store.k.slots(), "btc-15s")]
    await g.write(rig)
    before = await _intents(rig)
    outs = await rig.run_ticks(32)  # two whole windows: every slot had its entry zone twice
    new = [i for iid, i in (await _intents(rig)).items() if iid not in before]
    assert not [i.id for i in new if _in_scope(g, i.slot)], "entries went on past the garbage"
    if g.slot or g.asset:
        assert new, "slots the garbage does not concern stopped trading too"
    blocked = [o.record.blocked >= 1 for o in outs[1:]]
    assert all(blocked) if g.every_tick else sum(blocked) > len(blocked) // 2
    blockers = [b for b in await rig.store.read_blocked() if b.key.startswith(g.key) and b.field == g.field]
    assert blockers, await rig.store.read_blocked()
    assert all((b.slot, b.asset) == (g.slot, g.asset) and b.problem and b.since_ms for b in blockers)
    # Journaled once per distinct value, not once per tick.
    found = await _journal(rig, "entries blocked")
    assert len(found) == len(blockers) if g.every_tick else len(found) <= 4
    # The tick went on: journaled every time, and settlement of earlier windows is not held up.
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 32

    await g.repair(rig)
    seen = await _intents(rig)
    outs = await rig.run_ticks(32)
    new = [i for iid, i in (await _intents(rig)).items() if iid not in seen]
    assert [i.id for i in new if _in_scope(g, i.slot)], "entries did not resume after the repair"
    assert outs[-1].record.blocked == 0 and await rig.store.read_blocked() == []
    assert len(await _journal(rig, "entries unblocked")) == len(found)
    totals = await rig.store.read_ledger_totals()
    positions = await rig.store.read_positions()
    open_cost = sum(p.cost_micros for p in positions if p.status == "open")
    assert totals["cash_micros"] + open_cost == 1000 * 10**6 + totals.get("realized_pnl_micros", 0)


async def test_a_daily_loss_past_the_limit_still_halts_and_garbage_does_not_hide_it(rig):
    day = _day(rig)
    await rig.store.r.hset(day, "realized_pnl_micros", -(10**12))
    outs = await rig.run_ticks(1)
    assert outs[0].record.halted and "daily loss limit" in (await rig.store.read_control()).halt_reason


async def test_the_reader_ignores_candles_dated_in_the_future(rig):
    await rig.feed()
    now = rig.clock.now_ms()
    key = rig.store.k.candles("btc", "1s")
    future = Candle(now + 3_600_000, 1e9, 1e9, 1e9, 1e9, 1.0, False)
    await rig.store.r.zadd(key, {CANDLE.encode(future).decode(): future.open_ms})
    refs = slot_refs([("btc-15s", "btc", "15s")], now)
    cache = CandleCache()
    for _ in range(3):  # a whole read, then reads of what is new
        snap = await read_snapshot(rig.store, refs, now, None, VOL_LOOKBACK_S, cache)
        assert snap.recent["btc"] and snap.recent["btc"][-1].close != 1e9
        assert all(c.open_ms <= now for c in snap.recent["btc"])
        now += 1000


def test_the_candle_cache_ignores_candles_dated_in_the_future():
    cache = CandleCache()
    members = [CANDLE.encode(Candle(t, t, t, t, float(t), 1, True)) for t in (1000, 2000, 9000)]
    recent, closes = cache.update("btc", 0, 2500, "all", members, "1:1:0", [])
    assert [c.open_ms for c in recent] == [1000, 2000] and closes == (1000.0, 2000.0)


def test_int64_reads_only_what_a_redis_counter_can_hold():
    assert [int64(v) for v in ("0", "-5", "9223372036854775807")] == [0, -5, 2**63 - 1]
    assert [int64(v) for v in ("", " 5", "1_0", "1e3", "9223372036854775808", "5.0", None)] == [None] * 7


def test_blockers_of_a_source_are_replaced_whole_and_scoped():
    blocks = EntryBlocks()
    everyone = Blocker(key="baton:ledger:totals", field="cash_micros", problem="x")
    one = Blocker(key="baton:slots", field="btc-5m", problem="y", slot="btc-5m")
    asset = Blocker(key="baton:candles:eth:1s", problem="z", asset="eth")
    blocks.found("tick", [one, asset])
    assert blocks.blocks_all() is None
    assert blocks.blocks("btc-5m", "btc") == one and blocks.blocks("btc-15m", "btc") is None
    assert blocks.blocks("eth-5m", "eth") == asset
    assert blocks.blocks("btc-5m", "btc", but_not="tick") is None
    blocks.found("other", [everyone])
    assert blocks.blocks_all() == everyone and blocks.blocks("sol-5m", "sol") == everyone
    blocks.found("tick", [])
    assert set(blocks.current()) == {everyone.id}
    blocks.found("other", [])
    assert blocks.current() == {} and blocks.blocks_all() is None


async def test_many_blockers_are_kept_and_journaled_bounded(store):
    await store.r.set(store.k.lease_epoch(), 3)
    many = [Blocker(key="baton:positions:open", field=f"p{i}", problem="bad") for i in range(500)]
    assert await store.sync_blocked(3, many, 1000) == "OK"
    assert await store.sync_blocked(3, many, 2000) == "OK"  # the same set: nothing new journaled
    kept = await store.read_blocked()
    assert len(kept) == 64 and any("more unreadable values" in b.problem for b in kept)
    assert len(await store.r.xrange(store.k.journal_errors())) == 64
    assert all(b.since_ms == 1000 for b in kept)
    assert await store.sync_blocked(2, [], 3000) == "STALE_EPOCH"  # fenced
    assert len(await store.read_blocked()) == 64


def test_a_market_that_is_not_its_keys_is_garbage():
    from kernel.markets import market_problem

    good = Market(slug="s", condition_id="0x1", up_token="12", down_token="34")
    assert market_problem(good, "s") == ""
    assert "holds the market" in market_problem(good, "t")
    bad_tokens = msgspec.structs.replace(good, up_token="0xabc")
    assert "decimal" in market_problem(bad_tokens, "s")
    assert "same" in market_problem(msgspec.structs.replace(good, down_token="12"), "s")
    assert MARKET.decode(MARKET.encode(good)) == good


async def test_status_and_metrics_show_what_blocks_entries(rig, fake_server, tmp_path):
    import fakeredis
    from prometheus_client.parser import text_string_to_metric_families

    from api.metrics import Metrics
    from baton import settings
    from control import render
    from control.views import collect

    await rig.store.r.hset(rig.store.k.positions_open(), "eth-15s:9", "{garbage")
    await rig.store.r.hset(rig.store.k.slots(), "btc-15s", "[]")
    await rig.run_ticks(2)
    s = settings.load(
        {"BATON_HOME": str(tmp_path), "BATON_ASSETS": "btc,eth,sol,xrp", "BATON_TIMEFRAMES": "15s"}
    )
    r = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    st = collect(s, r)
    got = {(b["key"], b["field"]): b for b in st["blocked"]}
    assert set(got) == {("baton:positions:open", "eth-15s:9"), ("baton:slots", "btc-15s")}
    assert got[("baton:positions:open", "eth-15s:9")]["scope"] == "all"
    assert got[("baton:slots", "btc-15s")]["scope"] == "slot btc-15s"
    assert all("cannot decode" in b["problem"] and b["since_ms"] for b in got.values())
    slots = {x["id"]: x["entries_blocked"] for x in st["slots"] if "entries_blocked" in x}
    assert "unreadable value: baton:positions:open eth-15s:9" in slots["eth-15s"]
    text = render.status(st)
    assert "blocked    all: no new entries: baton:positions:open eth-15s:9: cannot decode" in text
    samples = {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for fam in text_string_to_metric_families(Metrics(s, r, clock_ms=rig.clock.now_ms).render().decode())
        for smp in fam.samples
    }
    assert samples[("baton_entries_blocked", (("scope", "all"),))] == 1
    assert samples[("baton_entries_blocked", (("scope", "slot"),))] == 1
    assert samples[("baton_entries_blocked", (("scope", "asset"),))] == 0


def test_a_feed_status_dated_in_the_future_is_stale():
    from state.structs import FeedStatus, feed_stale

    assert not feed_stale(FeedStatus(10_000, 9_000, 1.0), 10_500, 5_000)
    assert feed_stale(FeedStatus(10_000 + 3_600_000, 9_000, 1.0), 10_500, 5_000)


def test_a_candle_no_kline_could_be_is_garbage():
    from state.structs import candle_problem

    assert candle_problem(Candle(0, 10.0, 11.0, 9.0, 10.5, 1.0, True)) == ""
    for bad in (
        Candle(0, 10.0, 11.0, 9.0, 1e16, 1.0, True),  # past any price
        Candle(0, 10.0, 11.0, 0.0, 10.5, 1.0, True),  # not positive
        Candle(0, 10.0, 11.0, 9.0, 12.0, 1.0, True),  # close above high
        Candle(0, 10.0, 11.0, 10.5, 10.2, 1.0, True),  # low above open
    ):
        assert candle_problem(bad), bad
    recent, _ = CandleCache().update("btc", 0, 5000, "all", [CANDLE.encode(bad)], "1:1:0", problems := [])
    assert recent == [] and "inconsistent" in problems[0]


@pytest.mark.parametrize(
    "key",
    [
        "baton:slots",
        "baton:feed:status",
        "baton:positions:open",
        "baton:intents:open",
        "baton:ledger:totals",
        "day",
        "baton:control",
        "baton:candles:btc:1s",
        "baton:candles:marks",
    ],
)
async def test_a_key_of_the_wrong_type_blocks_entries_and_the_ticks_go_on(rig, key):
    """A hash or window replaced by a string: read as nothing it would be a zero or an absence
    (a daily PnL of 0, no open position); it blocks entries instead, and every tick is still
    journaled (settlement and reconciliation go on). The control hash fails safe: halted."""
    key = _day(rig) if key == "day" else key
    feed = rig.feed

    async def feed_past_it() -> None:  # the rig's feed writes these keys too: it fails on them
        with contextlib.suppress(ResponseError):
            await feed()

    rig.feed = feed_past_it  # type: ignore[method-assign]
    before = await rig.store.r.dump(key)
    await rig.store.r.delete(key)
    await rig.store.r.set(key, "a string")
    outs = await rig.run_ticks(20)
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 20
    if key == "baton:candles:marks":  # no marks: every window is read whole, nothing is wrong
        assert await rig.store.read_blocked() == [] and await rig.store.read_intents()
        return
    only = "btc-" if key.startswith("baton:candles:") else ""  # a window blocks its asset only
    assert [i.id for i in await rig.store.read_intents() if i.slot.startswith(only)] == []
    blocked = {b.key for b in await rig.store.read_blocked()}
    assert key in blocked and all(o.record.blocked >= 1 for o in outs[1:]), blocked
    if key == "baton:control":
        assert all(o.record.halted for o in outs)
    await rig.store.r.delete(key)
    if before is not None:
        await rig.store.r.restore(key, 0, before)
    await rig.run_ticks(16)  # a window: the feed status and candles are read in its entry zone
    assert key not in {b.key for b in await rig.store.read_blocked()}
