"""Main-lane faults at the venues: latency and errors injected into the sim's CLOB and Binance
servers, timed to meet the tick that posts a window's entries."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import httpx

from tests.chaos.lanes import (
    Outcome,
    sleep_until_ms,
)


def _sim_faults(ctx: Any, base: str, body: Any) -> None:
    url = f"{base}/_sim/faults"
    if body is None:
        httpx.delete(url, timeout=10).raise_for_status()
    else:
        httpx.post(url, json=body, timeout=10).raise_for_status()


def _sim_counters(base: str) -> list[dict[str, Any]]:
    with contextlib.suppress(Exception):
        got = httpx.get(f"{base}/_sim/faults", timeout=10).json()
        rules = got.get("rules", got) if isinstance(got, dict) else got
        return [
            {k: r.get(k) for k in ("method", "path", "matched", "errors", "drops")}
            for r in rules
            if isinstance(r, dict)
        ]
    return []


def _with_sim_rules(
    ctx: Any, rnd: random.Random, clob: list[dict[str, Any]], binance: list[dict[str, Any]], hold_s: float
) -> Outcome:
    out = Outcome()
    seed = rnd.randrange(1 << 30)
    out.injected_ms = ctx.now_ms()
    try:
        _sim_faults(ctx, ctx.st.clob_url, {"seed": seed, "rules": clob})
        _sim_faults(ctx, ctx.binance_url, {"seed": seed, "rules": binance})
        time.sleep(hold_s)
        counters = {"clob": _sim_counters(ctx.st.clob_url), "binance": _sim_counters(ctx.binance_url)}
    finally:
        _sim_faults(ctx, ctx.st.clob_url, None)
        _sim_faults(ctx, ctx.binance_url, None)
    cleared = ctx.now_ms()
    out.details = {"hold_s": round(hold_s, 2), "rules": clob + binance, "counters": counters}
    out.recovered = ctx.wait_tick_after(cleared, 30) is not None
    return out


def _before_entry(ctx: Any, rnd: random.Random) -> None:
    """Wait until 0.3-1.5 s before the boundary of the next tick that posts a window's entries
    (snipe enters with a third of the window left), so that venue faults meet real posts."""
    w, t = ctx.window_ms, ctx.tick_ms
    now = ctx.now_ms()
    entry = now - now % w + (w * 2 // 3) // t * t
    at = entry - rnd.uniform(300, 1500)
    if at < now:
        at += w
    sleep_until_ms(ctx, at)


def inject_sim_latency(ctx: Any, rnd: random.Random) -> Outcome:
    """Latency spikes on the venue's order, book, lookup and kline endpoints; the worst ones
    exceed a tick, so ticks overrun (and are counted as missed) while they last."""
    hi = rnd.choice([300, 800, 1500, 2500])
    lat = [hi // 4, hi]
    clob = [
        {"method": "POST", "path": "/order", "latency_ms": lat},
        {"method": "GET", "path": "/book", "latency_ms": lat},
        {"method": "GET", "path": "/data/order/*", "latency_ms": lat},
        {"method": "GET", "path": "/markets/*", "latency_ms": lat},
    ]
    binance = [{"method": "GET", "path": "/api/v3/klines", "latency_ms": lat}]
    hold_s = rnd.uniform(2.0, 6.0)
    if rnd.random() < 0.5:
        _before_entry(ctx, rnd)
    return _with_sim_rules(ctx, rnd, clob, binance, hold_s)


def inject_sim_errors(ctx: Any, rnd: random.Random) -> Outcome:
    """Error answers and lost answers from the venue. With phase=after an order *is* placed
    and its answer replaced or lost: reconciliation by order id must book it exactly once."""
    phase = rnd.choice(["before", "after"])
    status = rnd.choice([500, 502, 503, 429])
    clob = [
        {
            "method": "POST",
            "path": "/order",
            "error_rate": 0.4,
            "drop_rate": 0.2,
            "status": status,
            "phase": phase,
        },
        {"method": "GET", "path": "/data/order/*", "error_rate": 0.5, "status": 500},
        {"method": "GET", "path": "/book", "error_rate": 0.3, "status": 503},
        {"method": "GET", "path": "/markets/*", "error_rate": 0.5, "status": 500},
        {"method": "DELETE", "path": "/cancel-all", "error_rate": 0.5, "status": 500},
    ]
    binance = [
        {
            "method": "GET",
            "path": "/api/v3/klines",
            "error_rate": 0.5,
            "status": 429,
            "body": {"code": -1003, "msg": "Too many requests."},
        }
    ]
    hold_s = rnd.uniform(3.0, 8.0)
    _before_entry(ctx, rnd)
    return _with_sim_rules(ctx, rnd, clob, binance, hold_s)
