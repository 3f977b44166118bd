"""Synthetic markets for the tick benchmarks: assets, prices as a random walk, and closed 1 s
candles written through the feed's own `CandleStore`, by a feeder process on the wall clock or
inline between ticks on a virtual one."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import random
from typing import Any

import redis

from bench.redis_server import bare
from bench.rig import PREFIX
from feed.store import Batch, CandleStore
from kernel.clock import wall_ms
from state import connection
from state.keys import Keys
from state.structs import Candle

HISTORY_S = 70  # seconds of candles written before the first tick


def synthetic_assets(n: int) -> list[str]:
    return [f"a{i:04d}" for i in range(n)]


class Prices:
    """A random walk per asset, rounded as exchange prices are (8 significant digits)."""

    def __init__(self, assets: list[str], seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.p = {a: 10.0 ** (i % 5) * (1.0 + (i % 7) / 10) for i, a in enumerate(assets)}

    def candle(self, asset: str, open_s: int) -> Any:
        o = self.p[asset]
        c = o * math.exp(self.rng.gauss(0.0, 0.0004))
        self.p[asset] = c
        digits = max(0, 7 - math.floor(math.log10(o)))
        r = lambda x: round(x, digits)  # noqa: E731
        hi, lo = (
            max(o, c) * (1 + abs(self.rng.gauss(0, 0.0001))),
            min(o, c) * (1 - abs(self.rng.gauss(0, 0.0001))),
        )
        return Candle(open_s * 1000, r(o), r(hi), r(lo), r(c), round(self.rng.uniform(0.1, 50.0), 3), True)


def feeder_main(
    url: str, assets: list[str], phase_ms: int, retention_s: int, ready: Any, stop: Any, failed: Any = None
) -> None:
    """One closed 1 s candle per asset every second, through the feed's own store (one
    feed_write.lua call per batch), `phase_ms` after the boundary that closes it. A write that
    fails (Redis too busy to answer in time) is counted in `failed` and the next second's
    goes on, as the feed goes on."""
    asyncio.run(_feeder(url, assets, phase_ms, retention_s, ready, stop, failed))


async def _feeder(
    url: str, assets: list[str], phase_ms: int, retention_s: int, ready: Any, stop: Any, failed: Any
) -> None:

    r = connection.async_client(bare(url), decoded=False)
    store = CandleStore(r, Keys(PREFIX), interval="1s", retention_s=retention_s, clock_ms=wall_ms)
    prices = Prices(assets)
    now_s = wall_ms() // 1000
    for first in range(now_s - HISTORY_S, now_s, 10):
        batch = Batch()
        for sec in range(first, min(first + 10, now_s)):
            for a in assets:
                store.accept(batch, a, prices.candle(a, sec))
        await store.write(batch)
    ready.set()
    sec = now_s
    while not stop.is_set():
        due_ms = (sec + 1) * 1000 + phase_ms
        left = due_ms - wall_ms()
        if left > 0:
            await asyncio.sleep(min(left, 200) / 1000)
            continue
        batch = Batch()
        for a in assets:
            store.accept(batch, a, prices.candle(a, sec))
        try:
            await store.write(batch)
        except (redis.RedisError, OSError):
            if failed is None:
                raise
            with failed.get_lock():
                failed.value += 1
        sec += 1
    await r.aclose()


class Feeder:
    def __init__(self, url: str, assets: list[str], phase_ms: int, retention_s: int = 3600) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.stop_evt = ctx.Event(), ctx.Event()
        # Writes that failed (Redis did not answer in time), for the benchmark's report.
        self.failed = ctx.Value("i", 0)
        self.proc = ctx.Process(
            target=feeder_main,
            args=(url, assets, phase_ms, retention_s, self.ready, self.stop_evt, self.failed),
            name="bench-feeder",
            daemon=True,
        )

    def __enter__(self) -> Feeder:
        self.proc.start()
        if not self.ready.wait(120):
            self.proc.kill()
            raise RuntimeError("the feeder wrote no history within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_evt.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


class InlineFeed:
    """The feed's writes between ticks on the virtual clock: one closed 1 s candle per asset for
    every second that has ended, through the feed's own CandleStore (feed_write.lua)."""

    def __init__(self, url: str, assets: list[str], clock: Any, retention_s: int) -> None:
        self.r = connection.async_client(bare(url), decoded=False)
        self.store = CandleStore(
            self.r, Keys(PREFIX), interval="1s", retention_s=retention_s, clock_ms=clock.now_ms
        )
        self.assets = assets
        self.clock = clock
        self.prices = Prices(assets)
        self.next_s = clock.now_ms() // 1000 - HISTORY_S

    async def catch_up(self) -> None:
        end_s = self.clock.now_ms() // 1000
        while self.next_s < end_s:
            batch = Batch()
            for sec in range(self.next_s, min(self.next_s + 10, end_s)):
                for a in self.assets:
                    self.store.accept(batch, a, self.prices.candle(a, sec))
            self.next_s = min(self.next_s + 10, end_s)
            await self.store.write(batch)

    async def close(self) -> None:
        await self.r.aclose()
