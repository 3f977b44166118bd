"""The candle windows' read: one candles_read.lua call for many assets, each as far back as its
look-back (kernel/candle_cache.py Lookbacks) and only for what the worker's copy lacks
(kernel/candle_cache.py CandleCache). The tick's snapshot queues it in its pipeline
(kernel/snapshot.py); between ticks, the windows of assets about to wake are brought up to
date with it alone (read_candles).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from baton.errors import SnapshotError
from baton.settings import CANDLE_INTERVAL
from kernel.candle_cache import VOL_LOOKBACK_S, CandleCache
from state.store import Store
from state.structs import Candle


def queue_candles_read(
    pipe: Any,
    store: Store,
    cache: CandleCache,
    assets: list[str],
    opens_wanted: dict[str, list[int]],
    since: dict[str, int],
    now_ms: int,
) -> None:
    """Queue one candles_read.lua call for `assets` on `pipe`: per asset, how far back to read
    (`since`), the window open times wanted and what `cache` holds already."""
    k = store.k
    args: list[Any] = [now_ms]
    for a in assets:
        opens = ",".join(str(t) for t in opens_wanted.get(a, ()))
        args += (f"{a}:{CANDLE_INTERVAL}", since[a], opens, *cache.held_args(a, since[a], now_ms))
    keys = [k.candle_marks(), *(k.candles(a, CANDLE_INTERVAL) for a in assets)]
    store.scripts.on(pipe, store.scripts.candles_read, keys, args)


def since_per_asset(assets: list[str], now_ms: int, lookback_s: int | Mapping[str, int]) -> dict[str, int]:
    """Per asset, the open time of the oldest candle to read: `lookback_s` seconds back, one
    number for every asset or one per asset (kernel/candle_cache.py Lookbacks; an asset it
    does not name is read VOL_LOOKBACK_S back)."""
    if isinstance(lookback_s, int):
        return dict.fromkeys(assets, now_ms - lookback_s * 1000)
    return {a: now_ms - lookback_s.get(a, VOL_LOOKBACK_S) * 1000 for a in assets}


def last_minute(candles: list[Candle], closes: tuple[float, ...], now_ms: int) -> tuple[float, ...]:
    """The closes of the last VOL_LOOKBACK_S of `candles` (an asset read further back for its
    strategies' bars): version 1 inputs' `closes` stay the last minute."""
    if not candles or candles[0].open_ms >= now_ms - VOL_LOOKBACK_S * 1000:
        return closes
    return closes[bisect.bisect_left(candles, now_ms - VOL_LOOKBACK_S * 1000, key=_open_ms) :]


def _open_ms(c: Candle) -> int:
    return c.open_ms


async def read_candles(
    store: Store, assets: list[str], now_ms: int, lookback_s: int | Mapping[str, int], cache: CandleCache
) -> list[str]:
    """Bring `cache`'s copies of these assets' candle windows up to date (one candles_read.lua
    call, as kernel/snapshot.py read_snapshot makes it, without the open candles): what a worker does between
    ticks for the assets whose slots wake at the next tick, so that that tick reads only the
    candles written since. Returns the problems: none for garbage in a window, which is not
    kept, so the tick that wakes its slots reads it whole and blocks them (kernel/blocking.py)
    while the journal hears of it once."""
    problems: list[str] = []
    if not assets:
        return problems
    since = since_per_asset(assets, now_ms, lookback_s)
    res = await store.run_pipeline(
        lambda pipe: queue_candles_read(pipe, store, cache, assets, {}, since, now_ms)
    )
    if isinstance(res[0], Exception):
        raise SnapshotError(f"reading candle windows: {res[0]}") from res[0]
    for a, (kind, members, mark, _) in zip(assets, res[0] or [], strict=True):
        if kind == "wrongtype":
            cache.forget(a)
            continue
        cache.update(a, since[a], now_ms, kind, members, mark, [])
    return problems
