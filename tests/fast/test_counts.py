"""Bounded reads (state/counts.py, state/lua/_counts.lua, api/dashboard_data.py's /pnl page): the
numbers `baton status`, /metrics and /pnl show from the counts equal those the full scans of
every record showed before, through trades, settlements, history pruning, a backfill of data
written before the counts and a release that did not keep them; and what those views read
does not grow with the history kept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fakeredis
import msgspec
import pytest
import redis

from api import dashboard_data
from api import metrics as m
from api.dashboard_data import PnlPoint, PnlQuery, PnlResult, _thin, pnl_series
from baton import settings
from control.context import to_int
from control.views import collect
from kernel.history import HistoryPruner
from state.counts import counts_from, queue_counts, recount_keys, recount_sync, scan_counts
from state.keys import Keys
from state.structs import INTENT, POSITION, micros_to_usd, usd_to_micros
from tests.factories import intent as make_intent
from tests.factories import position as make_position
from tests.fast.test_history import NEW_S, NOW_MS, OLD_S, lease, run_pass
from tests.fast.test_metrics import scrape

K = Keys("baton:")


# --- the reference: what the views computed before the counts, from every record ---------------
def old_status_numbers(r: Any) -> dict[str, Any]:
    """control/views.py's positions and orders, as computed from HGETALL of both hashes."""
    statuses: dict[str, int] = {}
    for raw in r.hgetall(K.intents()).values():
        st = INTENT.decode(raw).status
        statuses[st] = statuses.get(st, 0) + 1
    settled = won = closed = 0
    for raw in r.hgetall(K.positions()).values():
        p = POSITION.decode(raw)
        if p.status == "settled":
            settled += 1
            won += bool(p.won)
        closed += p.status == "closed"
    return {
        "positions": {"open": r.hlen(K.positions_open()), "settled": settled, "won": won, "closed": closed},
        "orders": {"total": sum(v for st, v in statuses.items() if st != "committed"), **statuses},
    }


async def old_pnl_series(ctx: Any) -> PnlResult:
    """api/dashboard_data.py's pnl_series before the counts: the whole ledger stream and every
    position."""
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.xrange(K.ledger())
    pipe.hvals(K.positions())
    pipe.hgetall(K.ledger_totals())
    ledger, positions, totals = await pipe.execute()
    realized = cash = deposits = 0
    moves = []
    for _id, f in ledger:
        amount, pnl = to_int(f.get("amount_micros")), to_int(f.get("pnl_micros"))
        cash += amount
        if f.get("kind") == "deposit":
            deposits += amount
        if pnl or f.get("kind") == "payout":
            realized += pnl
            moves.append((to_int(f.get("at_ms")), realized, pnl, f.get("ref", "")))

    def trimmed(name: str, in_stream: int) -> int:
        return to_int(totals[name]) - in_stream if name in totals else 0

    base = trimmed("realized_pnl_micros", realized)
    points = [
        PnlPoint(at_ms=at, pnl_usd=micros_to_usd(base + r), delta_usd=micros_to_usd(d), ref=ref)
        for at, r, d, ref in moves
    ]
    realized += base
    cash += trimmed("cash_micros", cash)
    deposits += trimmed("deposit_micros", deposits)
    entries = len(ledger) + max(0, trimmed("entries", len(ledger)))
    trades = opened = settled = wins = 0
    for raw in positions:
        p = POSITION.decode(raw)
        trades += 1
        opened += p.status == "open"
        if p.status == "settled":
            settled += 1
            wins += bool(p.won)
    return PnlResult(
        start_ms=to_int(ledger[0][1].get("at_ms")) if ledger else None,
        points=_thin(points, dashboard_data.PNL_POINTS_MAX),
        realized_usd=micros_to_usd(realized),
        cash_usd=micros_to_usd(cash),
        deposits_usd=micros_to_usd(deposits),
        ledger_entries=entries,
        trades=trades,
        open=opened,
        settled=settled,
        wins=wins,
        win_rate=round(wins / settled, 4) if settled else None,
    )


def old_metrics_numbers(r: Any) -> dict[str, float]:
    by_status = dict.fromkeys(("committed", "posted", "filled", "rejected", "failed"), 0)
    for raw in r.hvals(K.intents()):
        by_status[INTENT.decode(raw).status] += 1
    return {**{f"orders:{st}": n for st, n in by_status.items()}, "open": r.hlen(K.positions_open())}


# --- a store traded through the kernel's own scripts ----------------------------------------------
@pytest.fixture
def env(store, fake_server, tmp_path):
    s = settings.load({"BATON_HOME": str(tmp_path), "BATON_ASSETS": "btc,eth"})
    r = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ctx = SimpleNamespace(s=SimpleNamespace(prefix=K.p), redis=store.r)
    yield SimpleNamespace(s=s, r=r, store=store, ctx=ctx)
    r.close()


async def trade(store, epoch: int, slot: str, start_s: int, outcome: str) -> None:
    """An entry in slot's window at start_s through the kernel's fenced writes: `outcome` is
    committed, posted, rejected, failed (the intent ends there), open (filled), won or lost."""
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
    if outcome == "committed":
        return
    if outcome in ("posted", "rejected", "failed"):
        assert await store.update_intent(epoch, msgspec.structs.replace(i, status=outcome)) == "OK"
        return
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
    if outcome == "open":
        return
    won = outcome == "won"
    raw = await store.r.hget(K.positions_open(), p.id)
    done = msgspec.structs.replace(
        p,
        status="settled",
        won=won,
        payout_micros=9_090_000 if won else 0,
        pnl_micros=4_090_000 if won else -5_000_000,
        settled_ms=at_ms + 901_000,
    )
    assert await store.settle_position(raw, done) == "OK"


OUTCOMES = ("won", "lost", "open", "committed", "posted", "rejected", "failed", "won", "lost", "won")


async def trade_history(store, epoch: int) -> None:
    await store.deposit(epoch, "deposit:paper-initial", usd_to_micros(1000), NOW_MS - 20 * 86_400_000)
    for n, outcome in enumerate(OUTCOMES):
        await trade(store, epoch, f"btc-{n}", OLD_S, outcome)
        await trade(store, epoch, f"eth-{n}", NEW_S, outcome)


async def assert_views_equal_the_full_scans(e: Any) -> None:
    replies = await _counts_replies(e.store.r)
    counts = counts_from(replies)
    assert counts is not None and counts.source == "counts", "the counts must be usable"
    scanned = scan_counts(e.r.hvals(K.intents()), e.r.hvals(K.positions()), open_hash=replies[3])
    numbers = (
        "intents",
        "positions_open",
        "positions_settled",
        "positions_won",
        "positions_closed",
        "open_hash",
    )
    assert {f: getattr(counts, f) for f in numbers} == {f: getattr(scanned, f) for f in numbers}

    st = collect(e.s, e.r)
    assert {"positions": st["positions"], "orders": st["orders"]} == old_status_numbers(e.r)
    assert not [p for p in st["problems"] if "counts" in p or "intent" in p or "position" in p]

    got = _scrape(e.s, e.r)
    want = old_metrics_numbers(e.r)
    assert {f"orders:{st}": got[("baton_orders", (("status", st),))] for st in counts.intents} | {
        "open": got[("baton_positions_open", ())]
    } == want

    assert await pnl_series(e.ctx) == await old_pnl_series(e.ctx)


async def _counts_replies(ar: Any) -> list[Any]:
    pipe = ar.pipeline(transaction=False)
    queue_counts(pipe, K)
    return list(await pipe.execute())


def _scrape(s: Any, r: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return scrape(m.Metrics(s, r, clock_ms=lambda: NOW_MS))


async def test_the_views_show_the_numbers_of_the_full_scans_through_trades_settlements_and_pruning(env):
    epoch = await lease(env.store)
    assert await env.store.ensure_counts(NOW_MS) is True  # an empty store: counted (all zero)
    await trade_history(env.store, epoch)
    await assert_views_equal_the_full_scans(env)
    # A second booking of a fill is ALREADY and changes no count.
    await trade(env.store, epoch, "btc-0", OLD_S + 1, "open")
    before = env.r.hgetall(K.counts())
    p = POSITION.decode(env.r.hget(K.positions_open(), f"btc-0:{OLD_S + 1}"))
    filled = make_intent(p.intent_id, epoch=epoch, status="filled")
    assert await env.store.record_fill(epoch, filled, p) == "ALREADY"
    assert env.r.hgetall(K.counts()) == before
    await assert_views_equal_the_full_scans(env)

    pruned = await run_pass(HistoryPruner(env.store, 7), epoch)
    # The old windows' settled positions and final intents (not the open position's intent).
    assert (pruned.positions, pruned.intents) == (5, 7)
    await assert_views_equal_the_full_scans(env)
    assert await env.store.ensure_counts(NOW_MS) is False  # they agree: nothing to count


async def test_data_written_before_the_counts_is_counted_once_by_the_next_lease_holder(env):
    epoch = await lease(env.store)
    await trade_history(env.store, epoch)
    # As a release before the counts left it: the hashes, no counts.
    env.r.delete(K.counts())
    assert counts_from(await _counts_replies(env.store.r)) is None
    # Until then the views count the hashes themselves, say so, and show the same numbers.
    st = collect(env.s, env.r)
    assert {"positions": st["positions"], "orders": st["orders"]} == old_status_numbers(env.r)
    assert any("counted the hashes" in p for p in st["problems"])
    assert await pnl_series(env.ctx) == await old_pnl_series(env.ctx)

    assert await env.store.ensure_counts(NOW_MS) is True
    assert await env.store.ensure_counts(NOW_MS) is False  # idempotent
    await assert_views_equal_the_full_scans(env)


async def test_a_release_that_did_not_keep_the_counts_is_noticed_and_counted_again(env):
    epoch = await lease(env.store)
    await trade_history(env.store, epoch)
    # An older settle program settles an open position without counting it (its own script).
    pid = next(iter(env.r.hkeys(K.positions_open())))
    p = POSITION.decode(env.r.hget(K.positions_open(), pid))
    env.r.hset(K.positions(), pid, POSITION.encode(msgspec.structs.replace(p, status="settled", won=True)))
    env.r.hdel(K.positions_open(), pid)
    assert counts_from(await _counts_replies(env.store.r)) is None  # open no longer adds up
    assert await env.store.ensure_counts(NOW_MS) is True
    assert counts_from(await _counts_replies(env.store.r)) is not None
    assert collect(env.s, env.r)["positions"] == old_status_numbers(env.r)["positions"]


async def test_a_record_without_a_known_status_is_refused_and_nothing_is_written(env):
    epoch = await lease(env.store)
    i = make_intent("btc-15m:1:entry", epoch=epoch)
    bad = INTENT.encode(i).replace(b'"status":"committed"', b'"status":"exploded"')
    keys = [K.lease_epoch(), K.control(), K.intents(), K.intents_open(), K.counts()]
    with pytest.raises(redis.ResponseError, match="no known status"):
        await env.store.scripts.intent_commit(keys=keys, args=[epoch, i.id, bad])
    assert env.r.hlen(K.intents()) == 0 and env.r.hlen(K.intents_open()) == 0
    assert not env.r.exists(K.counts())


async def test_pnl_pages_back_through_the_whole_series_with_the_same_points(env):
    epoch = await lease(env.store)
    await trade_history(env.store, epoch)
    whole = await old_pnl_series(env.ctx)
    points, cursor, pages = [], "", 0
    while True:
        page = await pnl_series(env.ctx, PnlQuery(limit=3, cursor=cursor))
        pages += 1
        assert len(page.points) <= 3
        for f in ("realized_usd", "cash_usd", "deposits_usd", "ledger_entries", "trades", "wins"):
            assert getattr(page, f) == getattr(whole, f), f
        points = page.points + points
        if page.next is None:
            break
        cursor = page.next
    assert points == whole.points and pages > 3


# --- what the views read does not grow with the history kept --------------------------------------
class Recorder:
    """Every command a client sends (pipelines included) and how many items its replies held."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.items = 0

    def add(self, name: Any, reply: Any) -> None:
        self.commands.append(str(name).upper())
        self.items += _size(reply)


def _size(x: Any) -> int:
    if isinstance(x, dict):
        return sum(1 + _size(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_size(v) for v in x) or 1
    return 1


def _record(monkeypatch: pytest.MonkeyPatch, rec: Recorder) -> None:
    import redis.asyncio.client as aclient
    import redis.client as sclient

    def sync_exec(orig):
        def run(self, *a, **kw):
            stack = [c[0][0] for c in self.command_stack]
            out = orig(self, *a, **kw)
            for name, reply in zip(stack, out, strict=True):
                rec.add(name, reply)
            return out

        return run

    def async_exec(orig):
        async def run(self, *a, **kw):
            stack = [c[0][0] for c in self.command_stack]
            out = await orig(self, *a, **kw)
            for name, reply in zip(stack, out, strict=False):
                rec.add(name, reply)
            return out

        return run

    def sync_cmd(orig):
        def run(self, *a, **kw):
            out = orig(self, *a, **kw)
            rec.add(a[0], out)
            return out

        return run

    monkeypatch.setattr(sclient.Pipeline, "execute", sync_exec(sclient.Pipeline.execute))
    monkeypatch.setattr(aclient.Pipeline, "execute", async_exec(aclient.Pipeline.execute))
    monkeypatch.setattr(sclient.Redis, "execute_command", sync_cmd(sclient.Redis.execute_command))


def _history(r: Any, n: int) -> None:
    """n closed trades (a settled position, a filled intent, a buy and a payout each) as a
    week of history leaves them, written straight into the hashes, then counted once."""
    pipe = r.pipeline(transaction=False)
    for j in range(n):
        i = msgspec.structs.replace(make_intent(f"s{j}:1:entry"), status="filled")
        p = msgspec.structs.replace(
            make_position(), id=f"s{j}:1", intent_id=i.id, status="settled", won=j % 2 == 0
        )
        pipe.hset(K.intents(), i.id, INTENT.encode(i))
        pipe.hset(K.positions(), p.id, POSITION.encode(p))
        pipe.xadd(
            K.ledger(),
            {"kind": "buy", "amount_micros": -5, "ref": f"buy:{i.id}", "at_ms": j, "pnl_micros": 0},
        )
        pipe.xadd(
            K.ledger(),
            {"kind": "payout", "amount_micros": 9, "ref": f"settle:{p.id}", "at_ms": j, "pnl_micros": 4},
        )
    pipe.hset(
        K.ledger_totals(), mapping={"cash_micros": 4 * n, "realized_pnl_micros": 4 * n, "entries": 2 * n}
    )
    pipe.execute()
    assert recount_sync(r, K, NOW_MS)


@pytest.mark.parametrize("view", ["status", "metrics", "pnl"])
async def test_status_metrics_and_pnl_read_the_same_whatever_the_history_kept(env, monkeypatch, view):
    seen = []
    for n in (50, 500):
        env.r.flushall()
        _history(env.r, n)
        rec = Recorder()
        with monkeypatch.context() as mp:
            _record(mp, rec)
            if view == "status":
                got = collect(env.s, env.r)["positions"]["settled"]
            elif view == "metrics":
                got = _scrape(env.s, env.r)[("baton_orders", (("status", "filled"),))]
            else:
                got = (await pnl_series(env.ctx, PnlQuery(limit=40))).settled
        assert got == n and rec.commands  # the numbers are of the whole history ...
        seen.append((sorted(rec.commands), rec.items))
    # ... read with the same commands, returning as many items, at 50 and at 500 trades.
    assert seen[0] == seen[1]
    assert not {"HVALS", "HKEYS", "HSCAN"} & set(seen[0][0])


async def test_an_empty_store_needs_no_count_and_reports_no_problem(env):
    counts = counts_from(await _counts_replies(env.store.r))
    assert counts is not None and counts.source == "counts" and counts.orders() == {"total": 0}
    assert not any("counts" in p for p in collect(env.s, env.r)["problems"])


async def test_a_backfill_page_by_page_counts_a_settlement_made_between_its_pages(env):
    """The settle program may book between two pages of the backfill (the new lease holder has
    not begun to trade): positions settled before their page, and after it, are counted as
    they are at the end."""
    epoch = await lease(env.store)
    await trade_history(env.store, epoch)
    for n in range(6):
        await trade(env.store, epoch, f"sol-{n}", NEW_S, "open")
    open_ids = sorted(env.r.hkeys(K.positions_open()))
    run = env.store.scripts.counts_recount
    keys = recount_keys(K)
    assert await run(keys=keys, args=["begin", "1", NOW_MS]) == 1
    assert counts_from(await _counts_replies(env.store.r)) is None  # readers scan meanwhile
    settled_between = 0
    for name in ("intents", "positions"):
        cursor = "0"
        while True:
            cursor = await run(keys=keys, args=["page", name, cursor, 2])
            if name == "positions" and settled_between < len(open_ids):
                await settle(env, open_ids[settled_between], won=settled_between % 2 == 0)
                settled_between += 1
            if cursor == "0":
                break
    assert settled_between >= 3
    assert await run(keys=keys, args=["finish", NOW_MS]) == 1
    await assert_views_equal_the_full_scans(env)
    # Another count begun meanwhile makes this one's next page and finish say so.
    assert await run(keys=keys, args=["begin", "1", NOW_MS]) == 1
    await run(keys=keys, args=["begin", "0", NOW_MS])  # a count in progress does not agree: begun again
    env.r.delete(K.counts())
    assert await run(keys=keys, args=["page", "intents", "0", 2]) == "LOST"
    assert await run(keys=keys, args=["finish", NOW_MS]) == "LOST"


async def settle(env: Any, pid: str, won: bool) -> None:
    raw = env.r.hget(K.positions_open(), pid)
    p = POSITION.decode(raw)
    done = msgspec.structs.replace(
        p,
        status="settled",
        won=won,
        payout_micros=9_090_000 if won else 0,
        pnl_micros=4_090_000 if won else -5_000_000,
        settled_ms=p.window_end_s * 1000 + 1000,
    )
    assert await env.store.settle_position(raw, done) == "OK"


def test_the_scripts_classify_each_record_as_the_scan_does(env):
    """Compact JSON as msgspec writes it, whitespace, a status inside another string, garbage:
    counts_recount.lua (through _counts.lua) and scan_counts agree on every one."""
    intents = [
        '{"id":"a","status":"posted"}',
        '{"id":"b", "status" : "filled"}',
        '{"id":"c","error":"\\"status\\":\\"filled\\"","status":"failed"}',
        '{"id":"d","status":"exploded"}',
        '{"id":"e"}',
        "{not json",
    ]
    positions = [
        '{"id":"p","status":"settled","won":true}',
        '{"id":"q","status":"settled","won":false}',
        '{"id":"r","status": "settled", "won" : true}',
        '{"id":"s","status":"settled","won": true}',
        '{"id":"t","status":"settled","won":null}',
        '{"id":"u","status":"open"}',
        '{"id":"v","status":"lost"}',
    ]
    for n, raw in enumerate(intents):
        env.r.hset(K.intents(), f"i{n}", raw)
    for n, raw in enumerate(positions):
        env.r.hset(K.positions(), f"p{n}", raw)
    env.r.hset(K.positions_open(), "p5", positions[5])
    assert recount_sync(env.r, K, NOW_MS)
    pipe = env.r.pipeline(transaction=False)
    queue_counts(pipe, K)
    counts = counts_from(pipe.execute())
    scanned = scan_counts(intents, positions, open_hash=1)
    assert counts is not None
    fields = ("intents", "intents_unreadable", "positions_open", "positions_settled", "positions_won")
    assert {f: getattr(counts, f) for f in fields} == {f: getattr(scanned, f) for f in fields}
    assert counts.intents["failed"] == 1 and counts.intents_unreadable == 3 and counts.positions_won == 3
