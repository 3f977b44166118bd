"""A small, believable system state for the dashboard tests: four slots (one disabled), an
active blue worker and a ready green one, 20 journaled ticks, and a ledger with three
settled trades (two won) and one open position in btc-15m's current window.

Written straight into Redis with the documented key layout (docs/state.md), so the tests
need no worker. The numbers the tests check are the constants below.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kernel.windows import window_bounds
from state.decisions import DecisionsRepo
from state.keys import Keys
from state.structs import POSITION, SLOT, DecisionLogEntry, Position, Slot

K = Keys("baton:")
SLOTS = ("btc-5m", "btc-15m", "eth-5m", "eth-15m")
DISABLED = "eth-5m"
RELEASE = "20261121T150953-1ebabf9bca"
EPOCH = 3
TICKS = 20
TICK_MS = 5000
DEPOSIT = 100_000_000
# (slot, window start offset in windows before now, cost, payout): two wins and a loss.
SETTLED = (
    ("btc-15m", 3, 5_000_000, 9_090_000),
    ("eth-15m", 2, 5_000_000, 0),
    ("btc-5m", 1, 3_000_000, 5_450_000),
)
OPEN_COST = 5_000_000
# Ticks (index among the 20) with FOK orders the book could not fill (an outcome), and with
# errors (a fault): the page shows the first plainly, the second in red.
UNFILLED_TICK, UNFILLED = 12, 3
ERROR_TICK, ERRORS = 14, 2
# A slot whose strategy sleeps until a minute from now (keys.slot_wakes()).
ASLEEP = "btc-5m"
REALIZED_USD = (9.09 - 5) + (0 - 5) + (5.45 - 3)  # 1.54
CASH_USD = 100 - 5 + 9.09 - 5 + 0 - 3 + 5.45 - 5  # the open position's buy too: 96.54


def _position(slot: str, start: int, tf_s: int, cost: int, **kw: Any) -> Position:
    return Position(
        id=f"{slot}:{start}",
        slot=slot,
        asset=slot.split("-")[0],
        window_start_s=start,
        window_end_s=start + tf_s,
        side="up",
        token_id="1",
        condition_id="0xc",
        shares_micros=cost * 100 // 55,
        cost_micros=cost,
        opened_ms=start * 1000 + 1000,
        intent_id=f"{slot}:{start}:entry",
        **kw,
    )


def seed(r: Any, now_ms: int | None = None) -> int:
    """Writes the state through a redis-py client (decode_responses=True); returns its `now`."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    p = r.pipeline(transaction=False)
    for sid in SLOTS:
        asset, tf = sid.split("-")
        p.hset(K.slots(), sid, SLOT.encode(Slot(id=sid, asset=asset, timeframe=tf, enabled=sid != DISABLED)))
    p.hset(
        K.lease(),
        mapping={
            "holder": "host:4242:blue",
            "color": "blue",
            "release": RELEASE,
            "epoch": EPOCH,
            "expires_ms": now_ms + 3_600_000,
            "acquired_ms": now_ms - 600_000,
        },
    )
    last_tick = now_ms // TICK_MS
    for color, state, pid in (("blue", "active", 4242), ("green", "ready", 4343)):
        p.hset(
            K.worker(color),
            mapping={
                "color": color,
                "release": RELEASE,
                "pid": pid,
                "state": state,
                "epoch": EPOCH if color == "blue" else 0,
                "last_tick": last_tick if color == "blue" else 0,
                "heartbeat_ms": now_ms - 1000,
            },
        )
    for i in range(TICKS):
        tick = last_tick - TICKS + 1 + i
        p.xadd(
            K.journal_ticks(),
            {
                "tick": tick,
                "color": "blue",
                "release": RELEASE,
                "epoch": EPOCH,
                "started_ms": tick * TICK_MS + 3,
                "duration_ms": 20 + (i * 7) % 30,
                "jitter_ms": 3,
                "orders": 1 if i == 15 else UNFILLED if i == UNFILLED_TICK else 0,
                "missed_before": 1 if i == 10 else 0,
                "halted": 0,
                "paused": 0,
                "evaluated": 3,
                "settled": 0,
                "errors": ERRORS if i == ERROR_TICK else 0,
                "unfilled": UNFILLED if i == UNFILLED_TICK else 0,
                "exits": 0,
            },
        )
    p.hset(K.stats(), mapping={"ticks_done": 1234, "ticks_missed": 1, "last_tick": last_tick})

    ledger: list[tuple[str, int, str, int]] = [("deposit", DEPOSIT, "deposit:paper-initial", 0)]
    for slot, back, cost, payout in SETTLED:
        tf_s = 900 if slot.endswith("15m") else 300
        start = window_bounds(now_ms, slot.split("-")[1])[0] - back * tf_s
        ledger.append(("buy", -cost, f"buy:{slot}:{start}:entry", 0))
        ledger.append(("payout", payout, f"settle:{slot}:{start}", payout - cost))
        pos = _position(slot, start, tf_s, cost, status="settled", won=payout > 0)
        p.hset(K.positions(), pos.id, POSITION.encode(pos))
    start, _end = window_bounds(now_ms, "15m")
    pos = _position("btc-15m", start, 900, OPEN_COST)
    ledger.append(("buy", -OPEN_COST, f"buy:{pos.id}:entry", 0))
    p.hset(K.positions(), pos.id, POSITION.encode(pos))
    p.hset(K.positions_open(), pos.id, POSITION.encode(pos))
    # One entry a minute, ending now; the running sums as state/lua/_ledger.lua keeps them.
    for n, (kind, amount, ref, pnl) in enumerate(ledger):
        at = now_ms - (len(ledger) - n) * 60_000
        p.xadd(
            K.ledger(),
            {
                "kind": kind,
                "amount_micros": amount,
                "ref": ref,
                "at_ms": at,
                "epoch": EPOCH,
                "pnl_micros": pnl,
            },
        )
        p.hincrby(K.ledger_totals(), "cash_micros", amount)
        p.hincrby(K.ledger_totals(), f"{kind}_micros", amount)
        p.hincrby(K.ledger_totals(), "realized_pnl_micros", pnl)
        p.hincrby(K.ledger_totals(), "entries", 1)
    decision = {
        "tick": last_tick,
        "at_ms": now_ms - 2000,
        "window_start_s": window_bounds(now_ms, "15m")[0],
        "side": "up",
        "price": 0.55,
        "stake_usd": 5.0,
        "p_up": 0.61,
        "reason": "edge 0.06",
        "outcome": "entry",
    }
    p.hset(K.decisions(), "btc-15m", json.dumps(decision))
    p.hset(K.slot_wakes(), ASLEEP, now_ms + 60_000)
    p.execute()
    DecisionsRepo(r, K).append_decisions(decision_log(now_ms), 500)
    return now_ms


def decision_log(now_ms: int) -> list[DecisionLogEntry]:
    """btc-15m passed, bought and sold in its window; eth-15m passed. Newest last."""
    start = window_bounds(now_ms, "15m")[0]
    common = {"window_start_s": start, "strategy": "momentum", "tick": now_ms // TICK_MS}
    saw = {"remaining_s": 120.0, "up_ask": 0.55, "down_ask": 0.47, "up_bid": 0.53, "down_bid": 0.45}
    return [
        DecisionLogEntry(
            slot="btc-15m",
            at_ms=now_ms - 9000,
            action="pass",
            reason="move 0.02% < 0.05%",
            figures=saw,
            **common,
        ),
        DecisionLogEntry(
            slot="eth-15m", at_ms=now_ms - 8000, action="pass", reason="no decision", figures=saw, **common
        ),
        DecisionLogEntry(
            slot="btc-15m",
            at_ms=now_ms - 7000,
            action="buy",
            reason="move 0.08%",
            outcome="intent",
            side="up",
            price=0.56,
            stake_usd=5.0,
            order_type="FOK",
            figures=saw,
            **common,
        ),
        DecisionLogEntry(
            slot="btc-15m",
            at_ms=now_ms - 3000,
            action="sell",
            reason="take profit at 0.70",
            outcome="intent",
            side="up",
            price=0.7,
            shares=9.09,
            order_type="FAK",
            figures={**saw, "held_shares": 9.09},
            **common,
        ),
    ]
