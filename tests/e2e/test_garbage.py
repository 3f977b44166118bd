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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # seven classes, a window or two each

TICK_MS = 1000
WINDOW_MS = 15_000  # TRADING's 15s windows
# snipe's entry zone opens with a third of the window left: 10 s into a 15 s window.
ENTRY_PHASE_MS = WINDOW_MS * 2 // 3

# Sets a hash field and answers what it held, in one step: nothing can book between the two.
SWAP = (
    "local old = redis.call('HGET', KEYS[1], ARGV[1]); "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return old"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def sleep_until_phase(phase_ms: int) -> None:
    """Until `phase_ms` into a window, at least 300 ms from now."""
    now = now_ms()
    at = now - now % WINDOW_MS + phase_ms
    if at < now + 300:
        at += WINDOW_MS
    time.sleep((at - now) / 1000)


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
        # Cached markets the worker has not read yet: those of sol-15s's next windows.
        start_s = now_ms() // WINDOW_MS * WINDOW_MS // 1000
        markets = [f"baton:market:{slug('sol', '15s', start_s + 15 * i)}" for i in range(1, 4)]
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
            "btc-15s:1",
            "all",
            lambda r: r.hset("baton:positions:open", "btc-15s:1", "{not json"),
            lambda r, _: r.hdel("baton:positions:open", "btc-15s:1"),
        ),
        Garbage(
            "open intent",
            "baton:intents:open",
            "eth-15s:1:entry",
            "all",
            lambda r: r.hset("baton:intents:open", "eth-15s:1:entry", '{"id": 5}'),
            lambda r, _: r.hdel("baton:intents:open", "eth-15s:1:entry"),
        ),
        Garbage(
            "slot",
            "baton:slots",
            "btc-15s",
            "slot btc-15s",
            _swap("baton:slots", "btc-15s", "[garbage"),
            _restore("baton:slots", "btc-15s"),
        ),
        Garbage(
            "candle", eth, "", "asset eth", garbage_candle, lambda r, _: r.zrem(eth, "garbage, not a candle")
        ),
        Garbage(
            "cached market",
            "baton:market:sol-updown-15s-",
            "",
            "slot sol-15s",
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


def test_each_garbage_class_blocks_entries_is_reported_and_clears_after_a_repair():
    st = Stack(BATON_TICK_MS=str(TICK_MS), **TRADING)
    s = settings_mod.load(st.env)
    http = httpx.Client(base_url=f"http://{s.api_host}:{s.api_port}", timeout=30)
    try:
        st.start()
        wait_for(lambda: len(invariants.redis_intents(st.redis)) >= 4, 90, "the worker trading")
        wait_for(lambda: http.get("/health").status_code == 200, 30, "the api")
        for g in _classes(st.redis):
            sleep_until_phase(ENTRY_PHASE_MS - 3000)
            written_ms = now_ms()
            old = g.write(st.redis)

            # The first tick that read it blocks: status names the key, field and scope.
            b = wait_for(partial(_shown, st, g), 20, f"{g.name}: status reporting the garbage")
            assert b["scope"] == g.scope and b["problem"], b
            # (status may show it a moment before that tick's journal entry is written)
            first = wait_for(partial(_first_blocked_tick, st, written_ms), 10, f"{g.name}: a blocked tick")
            assert _metric(http, "baton_entries_blocked", scope=g.scope.split(" ")[0]) >= 1
            # Held past the window's entry zone: every slot in scope would have entered.
            sleep_until_phase(WINDOW_MS - 500)
            repair_ms = now_ms()
            assert not _entries(st, g.scope, first, repair_ms), f"{g.name}: entries went on past the garbage"
            if g.scope == "all":
                held = [e for e in invariants.journal(st.redis) if first <= int(e["started_ms"]) < repair_ms]
                assert held and all(e["evaluated"] == "0" and e["orders"] == "0" for e in held), held
            lines = _blocked_lines(st, g.key, "entries blocked")
            assert len(lines) == 1, f"{g.name}: journaled {len(lines)} times, not once: {lines}"
            assert g.field in lines[0]

            g.repair(st.redis, old)
            wait_for(partial(_cleared, st, g), 20, f"{g.name}: the blocker clearing after the repair")
            assert len(_blocked_lines(st, g.key, "entries unblocked")) == 1
            wait_for(
                partial(_entries, st, g.scope, repair_ms), 75, f"{g.name}: entries resuming after the repair"
            )
        assert st.status()["blocked"] == []
        assert _metric(http, "baton_entries_blocked", scope="all") == 0

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
        wait_for(lambda: _entries(st, "asset xrp", restarted_ms), 75, "xrp trading on past the future candle")
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
