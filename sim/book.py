"""The sim's market maker: order books quoted around a lagged view of the model's fair value.

The maker sees the price `lag_ms` late (plus a little seeded noise), so that a strategy that
reads fresh 1s candles sometimes finds the book behind the market: the edge a sniper hunts.
Prices are held as integer ticks (cents at the 0.01 tick) so that no float rounding decides
which level an order crosses.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from baton.errors import SettingsError
from sim.markets import TICK_SIZE, Window
from sim.model import PriceModel

# Derived from the one tick-size constant that /tick-size, /book, /markets and /clob-markets
# all publish, so that the matching can never disagree with what the venue announces.
TICKS_PER_UNIT = round(1 / TICK_SIZE)  # 100 at the 0.01 tick
MIN_TICK = 1
MAX_TICK = TICKS_PER_UNIT - 1

# One level: (price in ticks, size in shares). Lists are best first.
Level = tuple[int, float]


@dataclass(frozen=True)
class BookParams:
    lag_ms: int = 3000
    spread: float = 0.02
    levels: int = 5
    # Half-width of the uniform noise on the maker's fair value.
    noise: float = 0.01

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BookParams:
        raw_lag = env.get("BATON_SIM_BOOK_LAG_MS", "").strip() or "3000"
        raw_spread = env.get("BATON_SIM_SPREAD", "").strip() or "0.02"
        try:
            lag_ms = int(raw_lag)
        except ValueError:
            raise SettingsError(f"BATON_SIM_BOOK_LAG_MS={raw_lag!r} is not an integer") from None
        if lag_ms < 0:
            raise SettingsError(f"BATON_SIM_BOOK_LAG_MS={lag_ms} is below the minimum 0")
        try:
            spread = float(raw_spread)
        except ValueError:
            raise SettingsError(f"BATON_SIM_SPREAD={raw_spread!r} is not a number") from None
        if not 0.0 <= spread <= 0.5:
            raise SettingsError(f"BATON_SIM_SPREAD={spread} must be between 0 and 0.5")
        return cls(lag_ms=lag_ms, spread=spread)


def _unit(*parts: object) -> float:
    """A seeded number in [0, 1) from the parts."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def maker_fair_up(model: PriceModel, w: Window, now_ms: int, params: BookParams, seed: int) -> float:
    """The maker's (stale, noisy) probability that the window closes Up."""
    view_ms = now_ms - params.lag_ms
    fair = model.fair_up(w.asset, w.start_s, w.end_s, view_ms)
    if view_ms < w.start_s * 1000:
        return fair  # 0.5 before the window: nothing to be noisy about yet
    noise = (2.0 * _unit(seed, w.slug, now_ms // 1000, "noise") - 1.0) * params.noise
    return min(1.0, max(0.0, fair + noise))


def book(
    model: PriceModel, w: Window, token_id: str, now_ms: int, params: BookParams, seed: int
) -> tuple[list[Level], list[Level]]:
    """(bids, asks) for one outcome token at now_ms, best first; empty once the window ended."""
    if now_ms >= w.end_s * 1000:
        return [], []
    fair_up = maker_fair_up(model, w, now_ms, params, seed)
    p = fair_up if token_id == w.up_token else 1.0 - fair_up
    half = params.spread / 2.0 * TICKS_PER_UNIT
    # The epsilon keeps a price that is exactly on a tick from moving a whole tick.
    ask0 = min(MAX_TICK, max(MIN_TICK, math.ceil(p * TICKS_PER_UNIT + half - 1e-9)))
    bid0 = min(MAX_TICK, max(MIN_TICK, math.floor(p * TICKS_PER_UNIT - half + 1e-9)))
    if bid0 >= ask0:
        bid0 = ask0 - 1
    second = now_ms // 1000
    asks = []
    for i in range(params.levels):
        tick = ask0 + i
        if tick > MAX_TICK:
            break
        asks.append((tick, _size(seed, token_id, second, "ask", i)))
    bids = []
    for i in range(params.levels):
        tick = bid0 - i
        if tick < MIN_TICK:
            break
        bids.append((tick, _size(seed, token_id, second, "bid", i)))
    return bids, asks


def _size(seed: int, token_id: str, second: int, side: str, level: int) -> float:
    # A few hundred shares a level, deeper further from the touch.
    return float(100 + 50 * level + int(_unit(seed, token_id, second, side, level) * 300))


def tick_str(tick: int) -> str:
    return f"{tick / TICKS_PER_UNIT:.2f}"
