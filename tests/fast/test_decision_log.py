"""The decision log: the kernel's entry builder (kernel/decision_log.py) and the per-slot
capped streams it is appended to and read from (state/decisions.py)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import fakeredis
import msgspec
import pytest

from baton.errors import SettingsError
from baton.settings import load
from kernel.decision_log import NO_DECISION, REASON_MAX, entry, figures
from kernel.strategy_api import BookSide as Book
from kernel.strategy_api import Buy, Exit, Holding, Pass, SlotInput
from state.decisions import READ_MAX, DecisionsRepo, decode_decision
from state.keys import Keys
from state.structs import DecisionLogEntry

NOW_MS = 1_795_000_000_500
START_S = 1_795_000_000 - 100


@dataclass
class Ref:
    id: str = "btc-5m"
    window_start_s: int = START_S


def inp(**kw) -> SlotInput:
    base = dict(
        slot_id="btc-5m",
        asset="btc",
        timeframe="5m",
        now_ms=NOW_MS,
        window_start_ms=START_S * 1000,
        window_end_ms=(START_S + 300) * 1000,
        open_price=100_000.0,
        last_price=100_050.5,
        closes=(100_000.0, 100_050.5),
        stake_usd=5.0,
        params={},
        up_ask=0.55,
        down_ask=0.47,
    )
    base.update(kw)
    return SlotInput(**base)


def v2(**kw) -> SlotInput:
    return inp(
        api=2,
        strategy="momentum",
        up_book=Book(bids=((0.53, 10.0),), asks=((0.55, 12.0),)),
        down_book=Book(bids=(), asks=((0.47, 3.0),)),
        cash_usd=995.0,
        **kw,
    )


HOLD = Holding(side="up", shares=9.09, cost_usd=5.0, avg_price=0.55, opened_ms=NOW_MS - 60_000)


def test_a_buy_logs_its_order_and_the_figures_it_saw():
    b = Buy(side="up", limit_price=0.56, stake_usd=5.0, reason="edge 0.04", order_type="FAK")
    e = entry(7, Ref(), NOW_MS, "momentum", v2(), b, "intent", "btc-5m:1794999900:entry")
    assert (e.slot, e.at_ms, e.tick, e.window_start_s, e.strategy) == (
        "btc-5m",
        NOW_MS,
        7,
        START_S,
        "momentum",
    )
    assert (e.action, e.reason, e.outcome, e.intent_id) == (
        "buy",
        "edge 0.04",
        "intent",
        "btc-5m:1794999900:entry",
    )
    assert (e.side, e.price, e.stake_usd, e.order_type) == ("up", 0.56, 5.0, "FAK")
    assert e.figures == {
        "last_price": 100_050.5,
        "open_price": 100_000.0,
        "remaining_s": 199.5,
        "up_ask": 0.55,
        "down_ask": 0.47,
        "up_bid": 0.53,
        "cash_usd": 995.0,
    }


def test_an_exit_of_everything_logs_a_sell_of_the_shares_held():
    x = Exit(limit_price=0.7, reason="take profit")
    e = entry(8, Ref(), NOW_MS, "momentum", v2(position=HOLD, entered=True), x, "intent", "i:exit-1")
    assert (e.action, e.side, e.shares, e.price, e.order_type) == ("sell", "up", 9.09, 0.7, "FAK")
    assert e.figures["held_shares"] == 9.09
    part = entry(
        8, Ref(), NOW_MS, "momentum", v2(position=HOLD), Exit(limit_price=0.7, reason="r", shares=2), ""
    )
    assert part.shares == 2.0


def test_a_pass_none_and_an_exception_are_all_passes_with_their_reasons():
    p = entry(1, Ref(), NOW_MS, "snipe", inp(), Pass(reason="edge 0.01 < 0.03"))
    assert (p.action, p.reason, p.outcome) == ("pass", "edge 0.01 < 0.03", "")
    n = entry(1, Ref(), NOW_MS, "snipe", inp(), None)
    assert (n.action, n.reason) == ("pass", NO_DECISION)
    err = entry(1, Ref(), NOW_MS, "snipe", inp(), ZeroDivisionError("division by zero"), "intent")
    assert (err.action, err.outcome) == ("pass", "error")
    assert err.reason == "ZeroDivisionError('division by zero')"


def test_a_kernel_refusal_is_the_outcome_and_long_reasons_are_cut():
    b = Buy(side="down", limit_price=0.5, stake_usd=50.0, reason="x" * 1000)
    e = entry(1, Ref(), NOW_MS, "snipe", inp(), b, "refused: stake 50.00 above the max 25.00")
    assert e.outcome == "refused: stake 50.00 above the max 25.00"
    assert len(e.reason) == REASON_MAX and e.reason.endswith("…")


def test_a_v1_input_has_no_bids_holding_or_cash_and_no_input_no_figures():
    f = figures(inp(up_ask=None))
    assert set(f) == {"last_price", "open_price", "remaining_s", "down_ask"}
    assert entry(1, Ref(), NOW_MS, "snipe", None, None).figures == {}


def test_non_finite_numbers_from_a_strategy_do_not_break_the_entry():
    b = Buy(side="up", limit_price=float("nan"), stake_usd=float("inf"), reason="oops")
    e = entry(1, Ref(), NOW_MS, "bad", inp(last_price=float("nan")), b, "refused: bad price")
    assert (e.price, e.stake_usd) == (0.0, 0.0)
    assert "last_price" not in e.figures


async def test_entries_are_flat_fields_in_redis_and_read_back_exactly(store):
    x = Exit(limit_price=0.61, reason="stop at 0.61", order_type="GTD", expires_ms=NOW_MS + 120_000)
    e = entry(3, Ref(), NOW_MS, "momentum", v2(position=HOLD), x, "intent", "btc-5m:1794999900:exit-1")
    b = entry(
        4, Ref(), NOW_MS + 1, "momentum", v2(), Buy(side="down", limit_price=0.47, stake_usd=2.5, reason="r")
    )
    assert await store.append_decisions([e, b], 500) == [2, 0, ""]
    [(_id, f), (_id2, g)] = await store.r.xrange(store.k.decision_log("btc-5m"))
    # What redis-cli shows: every field, in the struct's order, numbers as people write them.
    assert list(f) == list(DecisionLogEntry.__struct_fields__) and list(f)[-1] == "figures"
    assert (f["action"], f["side"], f["price"], f["shares"], f["at_ms"]) == (
        "sell",
        "up",
        "0.61",
        "9.09",
        str(NOW_MS),
    )
    assert (g["price"], g["stake_usd"], g["shares"], g["intent_id"]) == ("0.47", "2.5", "0.0", "")
    assert json.loads(f["figures"]) == e.figures
    assert (await store.read_decisions("btc-5m", 5)).entries == [b, e]


async def test_a_stream_key_of_another_type_loses_its_entry_only(store):
    await store.r.set(store.k.decision_log("eth-5m"), "garbage")
    got = await store.append_decisions(
        [_e("btc-5m", NOW_MS), _e("eth-5m", NOW_MS), _e("sol-5m", NOW_MS)], 500
    )
    assert got[:2] == [2, 1] and got[2].startswith("baton:decisions:log:eth-5m: WRONGTYPE")
    assert await store.r.xlen(store.k.decision_log("sol-5m")) == 1


def test_an_unreadable_entry_is_named_not_fatal():
    with pytest.raises(ValueError):
        decode_decision({"slot": "a", "at_ms": "soon", "tick": "1", "window_start_s": "1"})
    with pytest.raises(ValueError):
        decode_decision(
            {
                "slot": "a",
                "at_ms": "1",
                "tick": "1",
                "window_start_s": "1",
                "strategy": "s",
                "action": "hold",
                "reason": "",
            }
        )


def _e(slot: str, at_ms: int, tick: int = 1, action: str = "pass") -> DecisionLogEntry:
    return DecisionLogEntry(
        slot=slot,
        at_ms=at_ms,
        tick=tick,
        window_start_s=START_S,
        strategy="s",
        action=action,
        reason=f"r{tick}",
    )


async def test_appends_go_to_each_slots_stream_in_one_round_trip_and_read_back_newest_first(store):
    entries = [_e("btc-5m", NOW_MS, 1), _e("eth-5m", NOW_MS + 1, 1), _e("btc-5m", NOW_MS + 1000, 2, "buy")]
    await store.append_decisions(entries, 500)
    assert await store.r.xlen(store.k.decision_log("btc-5m")) == 2
    raw = await store.r.xrevrange(store.k.decision_log("btc-5m"), count=1)
    assert raw[0][1]["action"] == "buy" and raw[0][1]["reason"] == "r2"  # readable in redis-cli
    page = await store.read_decisions("btc-5m", 10)
    assert [(e.tick, e.action) for e in page.entries] == [(2, "buy"), (1, "pass")]
    assert page.entries[0] == entries[2]
    assert (await store.read_decisions("btc-5m", 1)).entries == [entries[2]]


async def test_appends_queue_on_a_callers_pipeline(store):
    pipe = store.r.pipeline(transaction=False)
    assert store.append_decisions([_e("btc-5m", NOW_MS)], 500, pipeline=pipe) is None
    assert await store.r.xlen(store.k.decision_log("btc-5m")) == 0
    await pipe.execute()
    assert await store.r.xlen(store.k.decision_log("btc-5m")) == 1
    assert await store.append_decisions([], 500) == [0, 0, ""]
    assert store.append_decisions([], 500, pipeline=pipe) is None


async def test_all_slots_merge_by_time_including_removed_slots(store):
    await store.r.hset(store.k.slots(), mapping={"btc-5m": "{}", "eth-5m": "{}", "quiet": "{}"})
    await store.r.sadd(store.k.slots_removed(), "old")
    await store.append_decisions(
        [
            _e("btc-5m", NOW_MS, 1),
            _e("eth-5m", NOW_MS + 5, 1),
            _e("old", NOW_MS - 5, 1),
            _e("btc-5m", NOW_MS + 9, 2),
        ],
        500,
    )
    page = await store.read_decisions(None, 10)
    assert [(e.slot, e.at_ms) for e in page.entries] == [
        ("btc-5m", NOW_MS + 9),
        ("eth-5m", NOW_MS + 5),
        ("btc-5m", NOW_MS),
        ("old", NOW_MS - 5),
    ]
    assert [e.slot for e in (await store.read_decisions(None, 2)).entries] == ["btc-5m", "eth-5m"]


@pytest.mark.parametrize("seed", range(6))
async def test_the_merged_read_is_the_newest_entries_of_all_slots(store, seed):
    """Whatever the spread (one busy slot, many quiet ones, slots with no log), reading every
    slot in rounds finds exactly what sorting every entry would."""
    rnd = random.Random(seed)
    slots = [f"s{i}" for i in range(rnd.choice((1, 3, 40)))]
    await store.r.hset(store.k.slots(), mapping=dict.fromkeys([*slots, "never"], "{}"))
    times = rnd.sample(range(1, 100_000), 400)  # distinct: the page is then one answer
    busy = rnd.choice(slots)
    made: list[DecisionLogEntry] = []
    for t in sorted(times):
        sid = busy if rnd.random() < rnd.choice((0.2, 0.9)) else rnd.choice(slots)
        made.append(_e(sid, NOW_MS + t, t))
    await store.append_decisions(made, 1000)
    for limit in (1, 7, 50, 1000):
        want = sorted(made, key=lambda e: -e.at_ms)[:limit]
        assert (await store.read_decisions(None, limit)).entries == want, limit


async def test_streams_are_capped_near_maxlen(store):
    for tick in range(30):
        await store.append_decisions([_e("btc-5m", NOW_MS + tick, tick)], 10)
    n = await store.r.xlen(store.k.decision_log("btc-5m"))
    # MAXLEN ~ trims whole nodes (Redis: up to 100 entries over); fakeredis trims exactly.
    assert 10 <= n <= 110
    assert (await store.read_decisions("btc-5m", 1)).entries[0].tick == 29


async def test_an_unreadable_entry_is_reported_and_the_rest_shown(store):
    await store.append_decisions([_e("btc-5m", NOW_MS, 1)], 500)
    bad = await store.r.xadd(store.k.decision_log("btc-5m"), {"slot": "btc-5m", "at_ms": "later"})
    page = await store.read_decisions("btc-5m", 10)
    assert [e.tick for e in page.entries] == [1]
    assert page.problems == [
        f"baton:decisions:log:btc-5m {bad}: unreadable entry: "
        + page.problems[0].split("unreadable entry: ")[1]
    ]


@pytest.mark.parametrize("limit", [0, -1, READ_MAX + 1, True, "5"])
def test_a_bad_limit_is_refused_by_name(limit):
    repo = DecisionsRepo(fakeredis.FakeRedis(decode_responses=True), Keys("baton:"))
    with pytest.raises(ValueError, match="limit must be"):
        repo.read_decisions(None, limit)


def test_a_sync_client_reads_the_same():
    r = fakeredis.FakeRedis(decode_responses=True)
    repo = DecisionsRepo(r, Keys("baton:"))
    repo.append_decisions([_e("btc-5m", NOW_MS, 1), _e("btc-5m", NOW_MS + 1, 2)], 500)
    r.hset(Keys("baton:").slots(), "btc-5m", "{}")
    assert [e.tick for e in repo.read_decisions(None, 5).entries] == [2, 1]
    assert repo.read_decisions("nope", 5).entries == []


def test_entries_encode_with_the_shared_codec():
    from state.structs import DECISION_LOG_ENTRY

    e = _e("btc-5m", NOW_MS)
    assert DECISION_LOG_ENTRY.decode(DECISION_LOG_ENTRY.encode(e)) == e
    assert msgspec.to_builtins(e)["action"] == "pass"


def test_the_log_length_setting_is_checked_by_name():
    assert load({}).decision_log_len == 500
    assert load({"BATON_DECISION_LOG_LEN": "50"}).decision_log_len == 50
    for bad in ("5", "lots"):
        with pytest.raises(SettingsError, match="BATON_DECISION_LOG_LEN"):
            load({"BATON_DECISION_LOG_LEN": bad})
