"""Market windows: aligned to wall-clock multiples of the timeframe; found by slug."""

from __future__ import annotations

from baton.settings import timeframe_seconds


def window_bounds(now_ms: int, timeframe: str) -> tuple[int, int]:
    """(start_s, end_s) of the window containing now."""
    tf_s = timeframe_seconds(timeframe)
    start = (now_ms // 1000) // tf_s * tf_s
    return start, start + tf_s


def slug(asset: str, timeframe: str, window_start_s: int) -> str:
    return f"{asset}-updown-{timeframe}-{window_start_s}"


def up_won(open_price: float, close_price: float) -> bool:
    """The venue's rule: "Up" wins when the price at the window's end is at or above the price
    at its start (the sim resolves so: sim/model.py outcome_up; live, Polymarket from
    Chainlink, for which the Binance series is the proxy)."""
    return close_price >= open_price
