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
