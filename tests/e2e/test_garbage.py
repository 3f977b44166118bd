"""Garbage never switches a limit off (issue #23 §2), hostile, on a real stack: while the worker
trades, each class of garbage is written with a raw Redis command; new entries in its scope
stop (read from the intents Redis holds: none committed after the worker first saw it), `baton
status`, the error journal and `/metrics` report it, and once it is repaired entries resume and
the ledger identity holds. A candle dated in the future blocks nothing: it is never read, and a
restarted feed neither trims the real candles behind it nor refuses them."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest

from baton import settings as settings_mod
from deploy.sandbox import TRADING, Stack, wait_for
from kernel.windows import slug
from state.ledger import utc_day
from state.structs import CANDLE, Candle
from tests.e2e import invariants

# seven classes in five rounds
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The rounds wait for entry zones, one a window: 10 s windows at 500 ms ticks (not TRADING's
# 15 s at 1 s) take a third off the test and keep six ticks in each zone to enter in.
TICK_MS = 500
TF = "10s"
WINDOW_MS = 10_000
# snipe's entry zone opens with a third of the window left: 6.7 s into a 10 s window.
ENTRY_PHASE_MS = WINDOW_MS * 2 // 3

# Sets a hash field and answers what it held, in one step: nothing can book between the two.
SWAP = (
    "local old = redis.call('HGET', KEYS[1], ARGV[1]); "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return old"
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Garbage:
    name: str
    key: str  # as status shows it (a prefix: the market key names a window)
    field: str
    scope: str  # as status shows it: 'all', 'slot <id>', 'asset <name>'
    write: Callable[[Any], Any]  # (redis) -> what the repair needs
    repair: Callable[[Any, Any], None]


def _swap(key: str, field: str, value: str) -> Callable[[Any], Any]:
    return lambda r: r.eval(SWAP, 1, key, field, value)


def _restore(key: str, field: str) -> Callable[[Any, Any], None]:
    def repair(r: Any, old: Any) -> None:
        if old is None:
            r.hdel(key, field)
        else:
            r.hset(key, field, old)

    return repair


def _classes(r: Any) -> list[Garbage]:
    day = f"baton:ledger:day:{utc_day(now_ms())}"
    eth = "baton:candles:eth:1s"

    def garbage_markets(r: Any) -> list[str]:
        # Cached markets the worker has not read yet: those of sol's slot's next windows.
        start_s = now_ms() // WINDOW_MS * WINDOW_MS // 1000
        markets = [f"baton:market:{slug('sol', TF, start_s + WINDOW_MS // 1000 * i)}" for i in range(1, 4)]
        for m in markets:
            r.set(m, '{"slug": "not-this-one", "condition_id": "0x1", "up_token": "1", "down_token": "2"}')
        return markets

    def garbage_candle(r: Any) -> None:
        r.zadd(eth, {"garbage, not a candle": now_ms()})

    return [
        Garbage(
            "day pnl",
            day,
            "realized_pnl_micros",
            "all",
            _swap(day, "realized_pnl_micros", "lots"),
            _restore(day, "realized_pnl_micros"),
        ),
        Garbage(
            "cash",
            "baton:ledger:totals",
            "cash_micros",
            "all",
            _swap("baton:ledger:totals", "cash_micros", "12e3"),
            _restore("baton:ledger:totals", "cash_micros"),
        ),
        Garbage(
            "open position",
            "baton:positions:open",
            f"btc-{TF}:1",
            "all",
            lambda r: r.hset("baton:positions:open", f"btc-{TF}:1", "{not json"),
            lambda r, _: r.hdel("baton:positions:open", f"btc-{TF}:1"),
        ),
        Garbage(
            "open intent",
            "baton:intents:open",
            f"eth-{TF}:1:entry",
            "all",
            lambda r: r.hset("baton:intents:open", f"eth-{TF}:1:entry", '{"id": 5}'),
            lambda r, _: r.hdel("baton:intents:open", f"eth-{TF}:1:entry"),
        ),
        Garbage(
            "slot",
            "baton:slots",
            f"btc-{TF}",
            f"slot btc-{TF}",
            _swap("baton:slots", f"btc-{TF}", "[garbage"),
            _restore("baton:slots", f"btc-{TF}"),
        ),
        Garbage(
            "candle", eth, "", "asset eth", garbage_candle, lambda r, _: r.zrem(eth, "garbage, not a candle")
        ),
        Garbage(
            "cached market",
            f"baton:market:sol-updown-{TF}-",
            "",
            f"slot sol-{TF}",
            garbage_markets,
            lambda r, markets: r.delete(*markets),
        ),
    ]


def _in_scope(scope: str, slot_id: str) -> bool:
    kind, _, name = scope.partition(" ")
    return (
        kind == "all"
        or (kind == "slot" and slot_id == name)
        or (kind == "asset" and slot_id.startswith(name + "-"))
    )


def _entries(st: Stack, scope: str, after_ms: int, before_ms: int | None = None) -> list[str]:
    """Intents in `scope` committed after `after_ms` (and before `before_ms`)."""
    return [
        i.id
        for i in invariants.redis_intents(st.redis)
        if _in_scope(scope, i.slot)
        and i.created_ms > after_ms
        and (before_ms is None or i.created_ms < before_ms)
    ]


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    text = http.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


def _shown(st: Stack, g: Garbage) -> dict[str, Any] | None:
    """The blocker `baton status --json` shows for `g`, or None."""
    return next(
        (b for b in st.status()["blocked"] if b["key"].startswith(g.key) and b["field"] == g.field), None
    )


def _first_blocked_tick(st: Stack, after_ms: int) -> int | None:
    """The start of the first tick journaled with a blocker after `after_ms`."""
    return min(
        (
            int(e["started_ms"])
            for e in invariants.journal(st.redis)
            if int(e["started_ms"]) >= after_ms and int(e.get("blocked", 0)) >= 1
        ),
        default=None,
    )


def _cleared(st: Stack, g: Garbage) -> bool:
    return _shown(st, g) is None


def _blocked_lines(st: Stack, key: str, word: str) -> list[str]:
    return [
        f["error"]
        for _, f in st.redis.xrange("baton:journal:errors")
        if f.get("source") == "blocked" and f["error"].startswith(word) and key in f["error"]
    ]


def _each_once(lines: list[str]) -> set[str]:
    """The values `lines` name ("entries blocked (scope): <key field>: why", "entries unblocked
    (scope): <key field> is readable again"), each named once; none when one is named twice.
    (The cached-market class is one value per window it is held across.)"""
    where = [line.split(": ")[1].removesuffix(" is readable again") for line in lines]
    return set(where) if len(set(where)) == len(where) else set()


def _hold_across_an_entry_zone(from_ms: int) -> int:
    """Sleeps until 500 ms before the end of the first window whose whole entry zone opens
    after `from_ms` (the zone ends then); answers the time then."""
    end = from_ms - from_ms % WINDOW_MS + WINDOW_MS - 500
    if from_ms % WINDOW_MS > ENTRY_PHASE_MS - 200:
        end += WINDOW_MS
    time.sleep(max(0, end - now_ms()) / 1000)
    return now_ms()


def _seen(st: Stack, g: Garbage) -> dict[str, Any]:
    """Once the tick that read `g` blocks, status names its key, field and scope."""
    # (a cached market is read when its window's entry zone opens: up to 17 s after it is written)
    b = wait_for(partial(_shown, st, g), 45, f"{g.name}: status reporting the garbage")
    assert b["scope"] == g.scope and b["problem"], b
    return b


def _write(st: Stack, g: Garbage) -> Any:
    """Writes `g` and sees it shown; answers what the repair needs."""
    old = g.write(st.redis)
    _seen(st, g)
    return old


def _held(st: Stack, g: Garbage, since_ms: int, repair_ms: int) -> None:
    """While only `g` blocked its scope (from `since_ms` to `repair_ms`), across an entry
    zone in which every slot in scope would have entered: none did, and `g` was journaled once."""
    assert not _entries(st, g.scope, since_ms, repair_ms), f"{g.name}: entries went on past the garbage"
    if g.scope == "all":
        held = [e for e in invariants.journal(st.redis) if since_ms <= int(e["started_ms"]) < repair_ms]
        assert held and all(e["evaluated"] == "0" and e["orders"] == "0" for e in held), held
    lines = _blocked_lines(st, g.key, "entries blocked")
    assert _each_once(lines), f"{g.name}: not journaled once: {lines}"
    assert all(g.field in line for line in lines), lines


def _repair(st: Stack, g: Garbage, old: Any, still: list[Garbage]) -> None:
    """Repairs `g`: it clears (journaled once) while the garbage in `still` keeps blocking."""
    g.repair(st.redis, old)
    wait_for(partial(_cleared, st, g), 20, f"{g.name}: the blocker clearing after the repair")
    cleared = _blocked_lines(st, g.key, "entries unblocked")
    assert _each_once(cleared) == _each_once(_blocked_lines(st, g.key, "entries blocked")), cleared
    for other in still:
        assert _shown(st, other), f"{other.name}: cleared by {g.name}'s repair"


def test_each_garbage_class_blocks_entries_is_reported_and_clears_after_a_repair():
    st = Stack(BATON_TICK_MS=str(TICK_MS), **{**TRADING, "BATON_TIMEFRAMES": TF})
    s = settings_mod.load(st.env)
    http = httpx.Client(base_url=f"http://{s.api_host}:{s.api_port}", timeout=30)
    slots = [f"{a}-{TF}" for a in TRADING["BATON_ASSETS"].split(",")]
    try:
        st.start()
        wait_for(lambda: len(invariants.redis_intents(st.redis)) >= 4, 90, "the worker trading")
        wait_for(lambda: http.get("/health").status_code == 200, 30, "the api")
        classes = _classes(st.redis)

        # Round 1: the scoped classes at once (their scopes do not overlap), held across an
        # entry zone; the slots outside every scope keep entering meanwhile. The worker reads a
        # window's cached market when its entry zone opens: the garbage one is the next window's
        # (and blocks until that window ends: it is repaired first, the others still showing).
        scoped = sorted((g for g in classes if g.scope != "all"), key=lambda g: g.name != "cached market")
        outside = [i for i in slots if not any(_in_scope(g.scope, i) for g in scoped)]
        assert outside, slots
        written_ms = now_ms()
        olds = [g.write(st.redis) for g in scoped]
        shown = [_seen(st, g) for g in scoped]
        market = next(b["key"] for b, g in zip(shown, scoped, strict=True) if g.name == "cached market")
        since_ms = int(market.rsplit("-", 1)[1]) * 1000  # all three block from that window on
        # (status may show it a moment before that tick's journal entry is written)
        first = wait_for(partial(_first_blocked_tick, st, written_ms), 10, "a blocked tick")
        assert _metric(http, "baton_entries_blocked", scope="slot") == 2
        assert _metric(http, "baton_entries_blocked", scope="asset") == 1
        assert _metric(http, "baton_entries_blocked", scope="all") == 0
        # Held across entry zones until every slot outside entered (the first, most often: a
        # slot may skip a window when no side's price is in range).
        for n in range(3):
            repair_ms = _hold_across_an_entry_zone(since_ms + n * WINDOW_MS)
            if all(_entries(st, f"slot {i}", first) for i in outside):
                break
        assert all(_entries(st, f"slot {i}", first) for i in outside), f"{outside} did not enter"
        for g in scoped:
            _held(st, g, first, repair_ms)
        for n, (g, old) in enumerate(zip(scoped, olds, strict=True)):
            _repair(st, g, old, scoped[n + 1 :])

        # Rounds 2-5: one account-wide class per entry zone, each written while the one before
        # still blocks (both shown), which is then repaired: it clears, the new one blocks on
        # alone across the next entry zone.
        prev: tuple[Garbage, Any] | None = None
        for g in (g for g in classes if g.scope == "all"):
            written_ms = now_ms()
            old = _write(st, g)
            if prev is None:
                since_ms = wait_for(
                    partial(_first_blocked_tick, st, written_ms), 10, f"{g.name}: a blocked tick"
                )
                assert _metric(http, "baton_entries_blocked", scope="all") == 1
            else:
                assert _metric(http, "baton_entries_blocked", scope="all") == 2
                _repair(st, *prev, still=[g])
                since_ms = now_ms()
            repair_ms = _hold_across_an_entry_zone(since_ms)
            _held(st, g, since_ms, repair_ms)
            prev = (g, old)
        assert prev is not None
        _repair(st, *prev, still=[])
        assert st.status()["blocked"] == []
        for kind in ("all", "slot", "asset"):
            assert _metric(http, "baton_entries_blocked", scope=kind) == 0

        # A candle dated in the future: never read, blocks nothing, and a restarted feed does
        # not trim the real candles behind it nor refuse the new ones as out of order.
        key = "baton:candles:xrp:1s"
        future = Candle(now_ms() + 3_600_000, 1e9, 1e9, 1e9, 1e9, 1.0, True)
        st.redis.zadd(key, {CANDLE.encode(future).decode(): future.open_ms})
        st.supervisor("stopProcess", "feed")
        st.supervisor("startProcess", "feed")
        restarted_ms = now_ms()
        wait_for(
            lambda: int(st.redis.zrangebyscore(key, "-inf", now_ms(), withscores=True)[-1][1]) > restarted_ms,
            30,
            "the restarted feed writing xrp candles again",
        )
        real = st.redis.zcount(key, "-inf", now_ms())
        assert real > 30, f"the real xrp candles were trimmed: {real} left"
        # Every slot enters again after the repairs (the scoped classes' and the account-wide
        # ones'), xrp past the future candle too: one entry zone for all of them.
        for i in slots:
            what = f"{i}: entries resuming after the repairs and the feed's restart"
            wait_for(partial(_entries, st, f"slot {i}", restarted_ms), 75, what)
        assert st.status()["blocked"] == []

        # Nothing half-booked: the ledger identity, every order once, every fill booked.
        invariants.check_ledger(st.redis)
        invariants.check_orders(st.redis, st.sim_orders())
        report = invariants.check_ticks(invariants.journal(st.redis))
        assert report.overruns_are_rare() and not report.missed_not_overrun, report
    except BaseException:
        print(st.logs())
        raise
    finally:
        http.close()
        st.stop()
