"""The feed loop's stand-ins, in-process: a local websockets server for Binance's kline stream
(FakeBinance), a local aiohttp app for its klines REST (FakeRest), and the helpers that run a
feed against them and read what it wrote. The fixtures are in conftest.py."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from feed.client import Feed
from state.keys import Keys
from state.structs import CANDLE, Candle

KEYS = Keys("baton:")
ASSETS = ("btc", "eth")
BASE = {"btc": 95_000.0, "eth": 3_500.0}
DROP = "<drop>"  # outbox marker: abort the socket, as a network failure would
# Generous: these run beside a loaded end-to-end stack on 2-core CI machines.
DEADLINE_S = 30.0


def prices(asset: str, open_ms: int) -> tuple[float, float, float, float]:
    s = open_ms // 1000
    o, c = BASE[asset] + s % 50, BASE[asset] + (s + 1) % 50
    return o, max(o, c) + 1, min(o, c) - 1, c


def kline(asset: str, open_ms: int, closed: bool = True, close: float | None = None) -> str:
    o, h, lo, c = prices(asset, open_ms)
    if close is not None:
        c, h, lo = close, max(h, close), min(lo, close)
    sym = f"{asset.upper()}USDT"
    return json.dumps(
        {
            "stream": f"{sym.lower()}@kline_1s",
            "data": {
                "e": "kline",
                "E": open_ms + 500,
                "s": sym,
                "k": {
                    "t": open_ms,
                    "T": open_ms + 999,
                    "s": sym,
                    "i": "1s",
                    "f": 1,
                    "L": 2,
                    "o": str(o),
                    "c": str(c),
                    "h": str(h),
                    "l": str(lo),
                    "v": "1.5",
                    "n": 2,
                    "x": closed,
                    "q": "0",
                    "V": "0",
                    "Q": "0",
                    "B": "0",
                },
            },
        }
    )


def expected(asset: str, open_ms: int) -> Candle:
    o, h, lo, c = prices(asset, open_ms)
    return Candle(open_ms, o, h, lo, c, 1.5, True)


class FakeBinance:
    """Sends what the test puts in `outbox`, in order, across connections.

    Only the newest connection sends, and a message leaves the outbox only once it is sent,
    so that none is lost to a connection that is closing."""

    def __init__(self) -> None:
        self.outbox: collections.deque[str] = collections.deque()
        self._more = asyncio.Event()
        self._sender: asyncio.Task[bool] | None = None
        self.paths: list[str] = []
        self.conns: list[ServerConnection] = []
        self.closed_by_client = 0
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        self.conns.append(ws)
        if self._sender is not None:
            self._sender.cancel()
        sender = self._sender = asyncio.create_task(self._send(ws))
        await ws.wait_closed()
        sender.cancel()
        try:
            dropped = await sender
        except asyncio.CancelledError:
            dropped = False
        if not dropped:
            self.closed_by_client += 1

    async def _send(self, ws: ServerConnection) -> bool:
        """Returns True after a DROP, False once the connection closes."""
        while True:
            while not self.outbox:
                self._more.clear()
                await self._more.wait()
            if ws.state is not State.OPEN:
                return False
            msg = self.outbox[0]
            if msg == DROP:
                self.outbox.popleft()
                ws.transport.abort()
                return True
            try:
                await ws.send(msg)
            except ConnectionClosed:
                return False
            self.outbox.popleft()

    def send(self, *msgs: str) -> None:
        self.outbox.extend(msgs)
        self._more.set()


class FakeRest:
    """GET /api/v3/klines: rows from `rows_from_ms` on (none while it is None)."""

    def __init__(self) -> None:
        self.rows_from_ms: int | None = None
        self.status = 200
        self.delay_s = 0.0
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append(q)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.Response(status=self.status, text="venue unavailable")
        if self.rows_from_ms is None:
            return web.json_response([])
        asset = q["symbol"].removesuffix("USDT").lower()
        start = max(int(q["startTime"]), self.rows_from_ms)
        start += -start % 1000
        rows = []
        for t in range(start, int(q["endTime"]) + 1, 1000)[: int(q["limit"])]:
            o, h, lo, c = prices(asset, t)
            rows.append([t, str(o), str(h), str(lo), str(c), "1.5", t + 999, "0", 2, "0", "0", "0"])
        return web.json_response(rows)


def make_feed(redis, binance: FakeBinance, rest: FakeRest, **kw) -> Feed:
    kw.setdefault("backoff_initial_s", 0.02)
    kw.setdefault("backoff_max_s", 0.2)
    return Feed(redis, assets=ASSETS, ws_url=binance.url, rest_url=rest.url, **kw)


@contextlib.asynccontextmanager
async def running(feed: Feed) -> AsyncIterator[Feed]:
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        feed.stop()
        await asyncio.wait_for(task, DEADLINE_S)


async def wait_for(cond: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def candles(redis, asset: str = "btc") -> list[Candle]:
    return [CANDLE.decode(m) for m in await redis.zrange(KEYS.candles(asset, "1s"), 0, -1)]


async def stats(redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(KEYS.feed_stats())).items()}


def now_s() -> int:
    return int(time.time())
