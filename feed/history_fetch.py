"""Filling the candle history (feed/history.py) from the venue's klines REST: `baton history
fetch` (Binance's /api/v3/klines, or the sim's, which serves the same endpoint in paper mode),
a day file at a time, at its own pace, retrying what fails as the venue asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from baton.errors import BackfillError, BadFrame
from feed.backfill import BACKFILL_LIMIT, get_klines
from feed.history import INTERVAL, INTERVAL_MS, StoreCounts, day_name, merge
from state.structs import Candle

log = logging.getLogger("feed.history")

# The fetch's own pace: at most this many klines requests a second (weight 2 each: 1,200 of
# Binance's 6,000 per minute and IP), so that a fetch beside a running feed leaves the feed
# most of the budget. A day of one asset is 87 requests: about 9 s.
FETCH_MAX_PER_S = 10.0
# A request that failed (network, 5xx) is tried again this many times before the fetch stops.
FETCH_RETRIES = 5
# 429 / 418 without a Retry-After: wait this long (Binance bans for minutes after a 429 ignored).
RATE_LIMITED_WAIT_S = 60.0


class Pacer:
    """At most `per_s` calls a second (this process's own budget; see FETCH_MAX_PER_S)."""

    def __init__(self, per_s: float = FETCH_MAX_PER_S) -> None:
        self.gap_s = 1.0 / per_s if per_s > 0 else 0.0
        self.next_s = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if self.next_s > now:
            await asyncio.sleep(self.next_s - now)
        self.next_s = max(now, self.next_s) + self.gap_s


@dataclass
class FetchResult:
    asset: str
    from_ms: int
    to_ms: int
    requests: int = 0
    candles: int = 0
    counts: StoreCounts = field(default_factory=StoreCounts)
    # Seconds in [from_ms, to_ms) that the venue had no closed candle for (an outage, a
    # listing later than from_ms, or a time not yet past).
    missing: int = 0


async def fetch(
    http: aiohttp.ClientSession,
    rest_url: str,
    home: str | Path,
    asset: str,
    from_ms: int,
    to_ms: int,
    *,
    clock_ms: Callable[[], int],
    pace: Callable[[], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    problems: list[str] | None = None,
    on_day: Callable[[str, str, int], None] | None = None,
) -> FetchResult:
    """Fetch the closed 1 s candles of [from_ms, to_ms) from `rest_url`'s /api/v3/klines (Binance,
    or the sim) into the store, a day file at a time as the pages pass its end. Failed requests
    are retried (FETCH_RETRIES, with the venue's Retry-After on 429/418); then BackfillError.
    `on_day(asset, day, candles)` hears of each day stored (a month takes a while)."""
    res = FetchResult(asset, from_ms, to_ms)
    pending: list[Candle] = []
    pending_day = ""
    start = -(-from_ms // INTERVAL_MS) * INTERVAL_MS
    end = to_ms - 1
    pace = pace or Pacer().wait

    def flush() -> None:
        if on_day is not None:
            on_day(asset, day_name(pending[0].open_ms), len(pending))
        got = merge(home, asset, pending, problems)
        res.counts.added += got.added
        res.counts.replaced += got.replaced
        res.counts.refused += got.refused
        res.counts.days += got.days
        pending.clear()

    while start <= end:
        rows = await _page(http, rest_url, asset, start, end, clock_ms, pace, sleep, res)
        page = [c for c in rows if c.closed and start <= c.open_ms <= end]
        for c in page:
            day = day_name(c.open_ms)
            if day != pending_day and pending:
                flush()
            pending_day = day
            pending.append(c)
        res.candles += len(page)
        if len(rows) < BACKFILL_LIMIT or not rows:
            break
        nxt = rows[-1].open_ms + INTERVAL_MS
        if nxt <= start:
            break
        start = nxt
    if pending:
        flush()
    res.missing = max(0, (end // INTERVAL_MS - -(-from_ms // INTERVAL_MS) + 1)) - res.candles
    return res


async def _page(
    http: aiohttp.ClientSession,
    rest_url: str,
    asset: str,
    start: int,
    end: int,
    clock_ms: Callable[[], int],
    pace: Callable[[], Awaitable[None]],
    sleep: Callable[[float], Awaitable[Any]],
    res: FetchResult,
) -> list[Candle]:
    tries = 0
    while True:
        await pace()
        res.requests += 1
        try:
            return await get_klines(http, rest_url, asset, INTERVAL, start, end, clock_ms())
        except BadFrame:
            raise
        except BackfillError as e:
            if e.status in (429, 418):
                wait_s = e.retry_after_s or RATE_LIMITED_WAIT_S
            elif 400 <= e.status < 500:
                raise  # a bad request (unknown symbol...) does not get better by asking again
            else:
                wait_s = 2.0**tries
            err: Exception = e
        except aiohttp.ClientConnectorError as e:
            if res.requests == 1:
                # Nothing answers there at all: no point in waiting half a minute to say so.
                raise BackfillError(
                    f"cannot connect to {rest_url} ({e}); in paper mode the sim serves the klines: "
                    "is the stack running (`make run`)? Else set BATON_BINANCE_REST_URL"
                ) from None
            wait_s, err = 2.0**tries, e
        except (aiohttp.ClientError, TimeoutError) as e:
            wait_s, err = 2.0**tries, e
        tries += 1
        if tries > FETCH_RETRIES:
            raise BackfillError(f"{asset} klines from {start}: {type(err).__name__}: {err} ({tries} tries)")
        log.warning("history fetch %s from %d: %s; again in %.0f s", asset, start, err, wait_s)
        await sleep(wait_s)
