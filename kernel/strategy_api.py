"""The interface between the kernel and strategy modules.

A strategy is a module in worker/strategies/ with a pure function
`evaluate(inp: SlotInput) -> Decision | None` and, optionally,
`needs_quotes(inp: SlotInput) -> bool` (asked before the kernel fetches order books, so
that books are read only for slots that may trade) and
`quotes_from_ms(window_start_ms: int, window_end_ms: int, params: dict[str, float]) -> int`:
the earliest time in a window at which `needs_quotes` may say yes. Before it the kernel
passes the slot by without building its input (a slot that trades in the last seconds of a
15-minute window sleeps through the rest: at a thousand slots that is most of a tick's
work). The reload and readiness checks refuse a strategy whose `quotes_from_ms` says later
than a time at which its `needs_quotes` wants quotes. No module-level mutable state: every
input is passed in, so a reload or a new worker version sees the same world.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Side = Literal["up", "down"]


class SlotInput(msgspec.Struct, frozen=True, kw_only=True):
    slot_id: str
    asset: str
    timeframe: str
    now_ms: int
    window_start_ms: int
    window_end_ms: int
    open_price: float
    last_price: float
    closes: tuple[float, ...]
    stake_usd: float
    params: dict[str, float]
    up_ask: float | None = None
    down_ask: float | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    side: Side
    limit_price: float
    stake_usd: float
    p_up: float
    reason: str


def remaining_s(inp: SlotInput) -> float:
    return (inp.window_end_ms - inp.now_ms) / 1000.0
