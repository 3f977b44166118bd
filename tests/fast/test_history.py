"""History retention (kernel/history.py, state/lua/history_prune.lua): settled positions, final
intents and ledger entries past BATON_HISTORY_DAYS leave Redis; nothing open, nothing recent,
nothing changed since it was judged and nothing unreadable does, and the ledger identity holds."""

from __future__ import annotations

import msgspec

from api.dashboard_data import pnl_series
from kernel import history
from kernel.history import DAY_MS, HistoryPruner
from state.structs import INTENT, POSITION, usd_to_micros
from tests.factories import intent as make_intent
from tests.factories import position as make_position

NOW_MS = 1_800_000_000_000
OLD_S = (NOW_MS - 10 * DAY_MS) // 1000  # a window ten days ago
NEW_S = (NOW_MS - 2 * DAY_MS) // 1000  # and one two days ago


async def lease(store) -> int:
    _, epoch, _ = await store.acquire_lease("blue:h:1:x", "blue", "r1", NOW_MS - 11 * DAY_MS, 60_000)
    return epoch


async def trade(store, epoch: int, slot: str, start_s: int, settle: bool = True) -> None:
    """An entry in slot's window at start_s, filled, and (settle) settled as a win, through the
    kernel's own fenced writes, at the window's own times."""
    at_ms = start_s * 1000
    i = msgspec.structs.replace(
        make_intent(f"{slot}:{start_s}:entry", epoch=epoch),
        slot=slot,
        window_start_s=start_s,
        window_end_s=start_s + 900,
        created_ms=at_ms,
        updated_ms=at_ms,
    )
    assert await store.commit_intent(epoch, i) == "OK"
    filled = msgspec.structs.replace(i, status="filled", filled_size=i.size, avg_price=i.limit_price)
    p = msgspec.structs.replace(
        make_position(),
        id=f"{slot}:{start_s}",
        slot=slot,
        window_start_s=start_s,
        window_end_s=start_s + 900,
        opened_ms=at_ms,
        intent_id=i.id,
    )
    assert await store.record_fill(epoch, filled, p) == "OK"
    if settle:
        raw = await store.r.hget(store.k.positions_open(), p.id)
        done = msgspec.structs.replace(
            p,
            status="settled",
            won=True,
            payout_micros=9_090_000,
            pnl_micros=4_090_000,
            settled_ms=at_ms + 901_000,
        )
        assert await store.settle_position(raw, done) == "OK"


async def identity(store) -> int:
    """cash + open cost - (initial + realised PnL): 0 when the ledger adds up."""
    totals = await store.read_ledger_totals()
    open_cost = sum(p.cost_micros for p in await store.read_positions(open_only=True))
    return totals["cash_micros"] + open_cost - (usd_to_micros(1000) + totals.get("realized_pnl_micros", 0))


async def run_pass(pruner: HistoryPruner, epoch: int, now_ms: int = NOW_MS) -> history.Pruned:
    total = history.Pruned()
    for _ in range(100):
        if not pruner.due(now_ms):
            return total
        step = await pruner.step(epoch, now_ms)
        total.positions += step.positions
        total.intents += step.intents
        total.ledger += step.ledger
        total.problems += step.problems
    raise AssertionError("the pass never went round")


async def test_old_settled_history_leaves_redis_and_the_ledger_still_adds_up(store, monkeypatch):
    monkeypatch.setattr(history, "PAGE", 3)  # several steps per pass
    epoch = await lease(store)
    # The ledger stream's ids are Redis's clock at each XADD (today): two entries of ten
    # days ago by that clock first, as a stream that has run for a while holds them.
    server_ms = (await store.r.time())[0] * 1000
    for k in (1, 2):
        await store.r.xadd(
            store.k.ledger(),
            {"kind": "buy", "amount_micros": 0, "ref": f"old{k}", "at_ms": 0, "epoch": 0, "pnl_micros": 0},
            id=f"{server_ms - 10 * DAY_MS}-{k}",
        )
    assert await store.deposit(epoch, "deposit:initial", usd_to_micros(1000), OLD_S * 1000 - 1000) == "OK"
    for a in ("btc", "eth", "sol", "xrp"):
        await trade(store, epoch, f"{a}-15m", OLD_S)  # old, settled: goes
        await trade(store, epoch, f"{a}-15m", NEW_S)  # recent: stays
    await trade(store, epoch, "doge-15m", OLD_S, settle=False)  # old but still open: stays
    kept_ledger = len(await store.read_ledger()) - 2
    assert await identity(store) == 0
    pruner = HistoryPruner(store, 7)
    pruned = await run_pass(pruner, epoch)
    assert (pruned.positions, pruned.intents, pruned.problems) == (4, 4, [])
    assert pruned.ledger == 2 and len(await store.read_ledger()) == kept_ledger
    positions = {p.id for p in await store.read_positions()}
    assert positions == {f"{a}-15m:{NEW_S}" for a in ("btc", "eth", "sol", "xrp")} | {f"doge-15m:{OLD_S}"}
    intents = {i.id for i in await store.read_intents()}
    assert intents == {f"{p}:entry" for p in positions}
    refs = await store.r.smembers(store.k.ledger_refs())
    assert not any(str(OLD_S) in ref and "doge" not in ref for ref in refs)
    assert await identity(store) == 0
    # The next pass is an hour away; a pass then finds nothing more.
    assert not pruner.due(NOW_MS) and pruner.due(NOW_MS + history.PASS_EVERY_MS)
    again = await run_pass(pruner, epoch, NOW_MS + history.PASS_EVERY_MS)
    assert (again.positions, again.intents, again.ledger) == (0, 0, 0)


async def test_a_record_changed_since_it_was_judged_is_kept(store):
    epoch = await lease(store)
    await trade(store, epoch, "btc-15m", OLD_S)
    pid = f"btc-15m:{OLD_S}"
    raw = await store.r.hget(store.k.positions(), pid)
    # Rewritten after the pruner read it (as a late reconciliation would): not what was judged.
    changed = POSITION.encode(msgspec.structs.replace(POSITION.decode(raw), pnl_micros=1)).decode()
    await store.r.hset(store.k.positions(), pid, changed)
    assert await store.prune_history(epoch, 7 * DAY_MS, [(pid, raw, f"{pid}:entry")], []) == [0, 0, 0]
    assert await store.r.hget(store.k.positions(), pid) == changed


async def test_unreadable_records_are_reported_and_kept_and_the_pass_goes_on(store):
    epoch = await lease(store)
    await trade(store, epoch, "btc-15m", OLD_S)
    await store.r.hset(store.k.positions(), "junk:1", "{not json")
    await store.r.hset(store.k.intents(), "junk:1:entry", "\x00\x01")
    pruned = await run_pass(HistoryPruner(store, 7), epoch)
    assert (pruned.positions, pruned.intents) == (1, 1)
    assert len(pruned.problems) == 2 and all("cannot decode" in p for p in pruned.problems)
    assert await store.r.hget(store.k.positions(), "junk:1") == "{not json"
    assert await store.r.hexists(store.k.intents(), "junk:1:entry")


async def test_nothing_is_pruned_with_retention_off_or_by_a_stale_epoch(store):
    epoch = await lease(store)
    await trade(store, epoch, "btc-15m", OLD_S)
    off = HistoryPruner(store, 0)
    assert not off.due(NOW_MS) and (await off.step(epoch, NOW_MS)).positions == 0
    _, newer, _ = await store.acquire_lease("green:h:2:x", "green", "r2", NOW_MS, 60_000)
    assert newer > epoch
    stale = await HistoryPruner(store, 7).step(epoch, NOW_MS)
    assert (stale.positions, stale.intents, stale.ledger) == (0, 0, 0)
    assert len(await store.read_positions()) == 1 and len(await store.read_intents()) == 1
    raw = await store.r.hget(store.k.positions(), f"btc-15m:{OLD_S}")
    assert (
        await store.prune_history(
            epoch, 7 * DAY_MS, [(f"btc-15m:{OLD_S}", raw, f"btc-15m:{OLD_S}:entry")], []
        )
        == "STALE_EPOCH"
    )


async def test_an_open_intent_is_never_pruned_whatever_its_age(store):
    epoch = await lease(store)
    i = msgspec.structs.replace(make_intent(f"btc-15m:{OLD_S}:entry", epoch=epoch), window_end_s=OLD_S + 900)
    assert await store.commit_intent(epoch, i) == "OK"
    posted = msgspec.structs.replace(i, status="posted")
    assert await store.update_intent(epoch, posted) == "OK"
    raw = await store.r.hget(store.k.intents(), i.id)
    # Even asked directly, with a status that looks final, the script keeps an open one.
    assert await store.prune_history(epoch, 7 * DAY_MS, [], [(i.id, raw, f"btc-15m:{OLD_S}")]) == [0, 0, 0]
    assert INTENT.decode(await store.r.hget(store.k.intents(), i.id)).status == "posted"


async def test_the_lease_holder_prunes_between_ticks_and_its_trading_goes_on(rig):
    """The worker's own loop: an old settled trade is gone after a tick, the ticks trade on."""
    now_ms = rig.clock.now_ms()
    old_s = (now_ms - 10 * DAY_MS) // 1000
    await trade(rig.store, rig.epoch, "btc-15m", old_s)
    assert len(await rig.store.read_positions()) == 1
    outs = await rig.run_ticks(20)
    assert f"btc-15m:{old_s}" not in {p.id for p in await rig.store.read_positions()}
    assert f"btc-15m:{old_s}:entry" not in {i.id for i in await rig.store.read_intents()}
    assert sum(o.record.orders for o in outs) > 0 and all(o.record.errors == 0 for o in outs)


async def test_the_pnl_chart_adds_up_the_same_after_the_ledger_was_trimmed(store):
    """/pnl sums the ledger stream; what was trimmed from it is still in the running totals,
    so cash, deposits, realised PnL and the entry count read the same before and after."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(s=SimpleNamespace(prefix=store.k.p), redis=store.r)
    epoch = await lease(store)
    server_ms = (await store.r.time())[0] * 1000
    # An old deposit and an old settled trade's entries, by Redis's clock (as a week-old stream
    # holds them), booked into the totals as the ledger scripts book them.
    old = [("deposit", 1_000_000_000, 0), ("buy", -5_000_000, 0), ("payout", 9_090_000, 4_090_000)]
    for n, (kind, amount, pnl) in enumerate(old, 1):
        await store.r.xadd(
            store.k.ledger(),
            {
                "kind": kind,
                "amount_micros": amount,
                "ref": f"old{n}",
                "at_ms": 0,
                "epoch": 0,
                "pnl_micros": pnl,
            },
            id=f"{server_ms - 10 * DAY_MS}-{n}",
        )
        await store.r.hincrby(store.k.ledger_totals(), "cash_micros", amount)
        await store.r.hincrby(store.k.ledger_totals(), f"{kind}_micros", amount)
        await store.r.hincrby(store.k.ledger_totals(), "realized_pnl_micros", pnl)
        await store.r.hincrby(store.k.ledger_totals(), "entries", 1)
    await trade(store, epoch, "btc-15m", NEW_S)
    before = await pnl_series(ctx)
    pruned = await run_pass(HistoryPruner(store, 7), epoch)
    assert pruned.ledger == 3
    after = await pnl_series(ctx)
    for f in ("realized_usd", "cash_usd", "deposits_usd", "ledger_entries"):
        assert getattr(after, f) == getattr(before, f), f
    assert (after.realized_usd, after.deposits_usd, after.ledger_entries) == (4.09 + 4.09, 1000.0, 5)
    assert after.points[-1].pnl_usd == before.points[-1].pnl_usd


async def test_a_position_whose_intent_is_open_again_is_kept(store):
    """Pruning it (and its settle ref) while its intent is open would let a fill book it anew."""
    epoch = await lease(store)
    await trade(store, epoch, "btc-15m", OLD_S)
    pid = f"btc-15m:{OLD_S}"
    raw = await store.r.hget(store.k.positions(), pid)
    await store.r.hset(store.k.intents_open(), f"{pid}:entry", "{}")
    assert await store.prune_history(epoch, 7 * DAY_MS, [(pid, raw, f"{pid}:entry")], []) == [0, 0, 0]
    assert await store.r.hget(store.k.positions(), pid) == raw


async def test_the_ledger_is_trimmed_a_thousand_entries_per_call_and_a_long_retention_is_no_error(store):
    epoch = await lease(store)
    server_ms = (await store.r.time())[0] * 1000
    pipe = store.r.pipeline(transaction=False)
    for n in range(1, 1501):
        pipe.xadd(store.k.ledger(), {"kind": "buy", "amount_micros": 0}, id=f"{server_ms - 10 * DAY_MS}-{n}")
    await pipe.execute()
    assert await store.prune_history(epoch, 100_000 * DAY_MS, [], []) == [0, 0, 0]  # before year 0
    assert await store.prune_history(epoch, 7 * DAY_MS, [], []) == [0, 0, 1000]
    assert await store.prune_history(epoch, 7 * DAY_MS, [], []) == [0, 0, 500]
    assert await store.prune_history(epoch, 7 * DAY_MS, [], []) == [0, 0, 0]
    assert await store.r.xlen(store.k.ledger()) == 0


async def test_an_old_position_sold_out_by_exits_goes_with_its_exit_intents_and_their_refs(store):
    from state.positions import sale
    from state.structs import exit_leg

    epoch = await lease(store)
    assert await store.deposit(epoch, "deposit:initial", usd_to_micros(1000), OLD_S * 1000 - 1000) == "OK"
    for start_s in (OLD_S, NEW_S):
        await trade(store, epoch, "btc-15m", start_s, settle=False)
        (p,) = [x for x in await store.read_positions(open_only=True) if x.window_start_s == start_s]
        entry = INTENT.decode(await store.r.hget(store.k.intents(), p.intent_id))
        x = msgspec.structs.replace(entry, id=f"{p.id}:{exit_leg(1)}", leg=exit_leg(1), status="committed")
        assert await store.commit_intent(epoch, x) == "OK"
        sold = msgspec.structs.replace(
            x, status="filled", filled_size=9.09, avg_price=0.6, updated_ms=start_s * 1000
        )
        assert await store.record_exit(epoch, sold, sale(p, sold, start_s * 1000 + 60_000)) == "OK"
    assert await identity(store) == 0
    pruned = await run_pass(HistoryPruner(store, 7), epoch)
    assert (pruned.positions, pruned.intents, pruned.problems) == (1, 2, [])
    assert {p.id for p in await store.read_positions()} == {f"btc-15m:{NEW_S}"}
    refs = await store.r.smembers(store.k.ledger_refs())
    assert refs == {"deposit:initial", f"buy:btc-15m:{NEW_S}:entry", f"sell:btc-15m:{NEW_S}:exit-1"}
    assert await identity(store) == 0
