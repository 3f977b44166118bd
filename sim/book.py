"""The sim's market maker: order books quoted around a lagged view of the model's fair value.

The maker sees the price `lag_ms` late (plus a little seeded noise): by default about as late
as a live maker re-quotes, so that a strategy reading 1s candles rarely finds the book behind
the market (BookParams' defaults say why; a test stack may pin the old 3 s lag to trade).
Prices are held as integer ticks (cents at the 0.01 tick) so that no float rounding decides
which level an order crosses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from baton.errors import SettingsError
from kernel.backtest.fills import ladder
from sim.markets import TICK_SIZE, Window
from sim.model import PriceModel

# Derived from the one tick-size constant that /tick-size, /book, /markets and /clob-markets
# all publish, so that the matching can never disagree with what the venue announces.
TICKS_PER_UNIT = round(1 / TICK_SIZE)  # 100 at the 0.01 tick
MIN_TICK = 1
MAX_TICK = TICKS_PER_UNIT - 1
# The shared ladder (kernel/backtest/fills.py) quotes on the same tick: a changed TICK_SIZE
# must change it too (tests/fast/test_backtest_engine.py checks that they agree).

# One level: (price in ticks, size in shares). Lists are best first.
Level = tuple[int, float]


# The maker's defaults, chosen to resemble Polymarket's 5m/15m crypto books (docs/sim.md,
# "The maker": the sources): live makers re-quote within about a second of a Binance move and
# quote a cent wide on the 0.01 tick. Until #26 the maker saw prices 3 s late with a two-cent
# spread, a stale book that a strategy reading fresh candles could pick off every window;
# the test stacks that need orders in every window still pin that (deploy/sandbox.py).
LAG_MS = 500
SPREAD = 0.01
NOISE = 0.01
LEVELS = 5
DEPTH_SHARES = 100


@dataclass(frozen=True)
class BookParams:
    lag_ms: int = LAG_MS
    spread: float = SPREAD
    levels: int = LEVELS
    # Half-width of the uniform noise on the maker's fair value: its disagreement with the
    # model, which a taker can pick off when the noise makes an ask cheap.
    noise: float = NOISE
    # Shares at the touch; each level further out holds half as many more, plus a seeded
    # random extra of up to three times this (default: 100 to 400 at the touch).
    depth_shares: int = DEPTH_SHARES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BookParams:
        return cls(
            lag_ms=_int(env, "BATON_SIM_BOOK_LAG_MS", LAG_MS, 0, 600_000),
            spread=_float(env, "BATON_SIM_SPREAD", SPREAD, 0.0, 0.5),
            levels=_int(env, "BATON_SIM_BOOK_LEVELS", LEVELS, 1, 50),
            noise=_float(env, "BATON_SIM_BOOK_NOISE", NOISE, 0.0, 0.5),
            depth_shares=_int(env, "BATON_SIM_BOOK_DEPTH", DEPTH_SHARES, 1, 10_000_000),
        )


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} must be between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:  # also refuses nan
        raise SettingsError(f"{name}={value} must be between {lo} and {hi}")
    return value


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
    # The quoting rule is the kernel's (kernel/backtest/fills.py ladder): the backtest's model
    # maker and this one quote alike by construction.
    bid_ticks, ask_ticks = ladder(p, params.spread, params.levels)
    second = now_ms // 1000
    asks = [
        (t, _size(seed, token_id, second, "ask", i, params.depth_shares)) for i, t in enumerate(ask_ticks)
    ]
    bids = [
        (t, _size(seed, token_id, second, "bid", i, params.depth_shares)) for i, t in enumerate(bid_ticks)
    ]
    return bids, asks


def _size(seed: int, token_id: str, second: int, side: str, level: int, depth: int) -> float:
    # A few hundred shares a level (at the default depth), deeper further from the touch.
    return float(depth + depth // 2 * level + int(_unit(seed, token_id, second, side, level) * 3 * depth))


def tick_str(tick: int) -> str:
    return f"{tick / TICKS_PER_UNIT:.2f}"
