"""Times as the evaluation commands take them (`--from`/`--to` of `baton replay`, `baton
backtest`): unix seconds (a whole or decimal number) or ISO 8601 (a time without a zone is
UTC). Returned as unix milliseconds."""

from __future__ import annotations

import datetime as dt


def parse_time_ms(text: str) -> int:
    """Unix ms of `text`; raises ValueError naming what is wrong."""
    raw = str(text).strip()
    if not raw:
        raise ValueError("a time is empty: give unix seconds or an ISO 8601 time")
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not seconds == seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
            raise ValueError(f"{raw!r} is not a time: unix seconds must be a finite number >= 0")
        return round(seconds * 1000)
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{raw!r} is not a time: give unix seconds (1765152000) or ISO 8601 (2026-12-07T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round(when.timestamp() * 1000)


def time_range_ms(start: str, end: str) -> tuple[int, int]:
    """(from_ms, to_ms) of two times; raises ValueError when either is wrong or to <= from."""
    lo, hi = parse_time_ms(start), parse_time_ms(end)
    if hi <= lo:
        raise ValueError(f"--to ({end}) must be after --from ({start})")
    return lo, hi
