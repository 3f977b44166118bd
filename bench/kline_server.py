"""The feed benchmark's load generator: a local WebSocket server serving a Binance combined
stream (`/stream?streams=<sym>usdt@kline_1s/...`) of kline frames shaped like Binance's, paced at
a target rate, built from pre-encoded templates and written to the socket in bursts of about a
millisecond; and the REST klines endpoint, empty, so that the feed's backfill is over at once."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

END_ASSET = "zzend"  # its one candle, after the step's last frame, tells the feed to stop
START_MS = 1_700_000_000_000  # open time of every asset's first candle
WARMUP_S = 1.0  # after the connection, before the first frame: the feed's backfill is done
BURST_S = 0.001  # pacing granularity of the sender
MAX_BURST = 2000  # frames per write at most
HIGH_WATER = 1 << 20  # bytes queued in the server's transport before it waits (back-pressure)


def _template(asset: str) -> bytes:
    """The frame of one asset with %-slots for E, t, T, f, L, o, c, h, l, v, n, q, V, Q."""
    sym = f"{asset.upper()}USDT"
    return (
        (
            '{"stream":"<stream>@kline_1s","data":{"e":"kline","E":%d,"s":"<SYM>","k":{"t":%d,"T":%d,'
            '"s":"<SYM>","i":"1s","f":%d,"L":%d,"o":"%s","c":"%s","h":"%s","l":"%s","v":"%.6f",'
            '"n":%d,"x":true,"q":"%s","V":"%s","Q":"%s","B":"0"}}}'
        )
        .replace("<stream>", sym.lower())
        .replace("<SYM>", sym)
        .encode()
    )


def _prices(i: int) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """A few (o, c, h, l) quadruples per asset, as Binance prints them (8 decimals)."""
    base = 10.0 + 37.0 * i
    out: list[tuple[bytes, bytes, bytes, bytes]] = []
    for j in range(16):
        o, c = base * (1 + 0.0003 * (j % 5)), base * (1 + 0.0003 * ((j + 2) % 5))
        h, lo = max(o, c) * 1.0002, min(o, c) * 0.9998
        out.append((f"{o:.8f}".encode(), f"{c:.8f}".encode(), f"{h:.8f}".encode(), f"{lo:.8f}".encode()))
    return out


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked text frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes([n]) + payload
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Stream:
    """Frames for one connection: asset i % n, each asset's open time advancing by a second."""

    def __init__(self, assets: list[str]) -> None:
        self.assets = assets
        self.templates = [_template(a) for a in assets]
        self.prices = [_prices(i) for i in range(len(assets))]
        self.i = 0

    def frames(self, n: int, send_s: float) -> bytes:
        e_ms = int(send_s * 1000)
        na = len(self.assets)
        out = []
        for _ in range(n):
            a, k = self.i % na, self.i // na
            self.i += 1
            t = START_MS + k * 1000
            o, c, h, lo = self.prices[a][k % 16]
            payload = self.templates[a] % (
                e_ms,
                t,
                t + 999,
                1000 * k,
                1000 * k + 99,
                o,
                c,
                h,
                lo,
                send_s,
                100,
                b"1.0",
                b"0.5",
                b"0.5",
            )
            out.append(_ws_frame(payload))
        return b"".join(out)


async def _pump(transport: asyncio.WriteTransport, stream: Stream, rate: int, secs: float) -> dict[str, Any]:
    """Send at `rate` frames/s (0: as fast as the feed takes them) for `secs`."""
    cpu0, t0 = time.process_time(), time.monotonic()
    sent = waits = 0
    while (elapsed := time.monotonic() - t0) < secs:
        if transport.is_closing():
            break
        due = MAX_BURST if rate == 0 else min(MAX_BURST, int(rate * elapsed) - sent)
        if transport.get_write_buffer_size() > HIGH_WATER:
            waits += 1
            await asyncio.sleep(BURST_S)
            continue
        if due <= 0:
            await asyncio.sleep(BURST_S)
            continue
        transport.write(stream.frames(due, time.time()))
        sent += due
        await asyncio.sleep(0)
    return {
        "sent": sent,
        "send_s": time.monotonic() - t0,
        "server_cpu_s": time.process_time() - cpu0,
        "backpressure_waits": waits,
    }


def server_main(assets: list[str], cpu: int | None, ports: Any, reports: Any) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(assets, ports, reports))


async def _serve(assets: list[str], ports: Any, reports: Any) -> None:
    async def handler(ws: ServerConnection) -> None:
        # /bench/<rate>/<seconds>/stream?streams=...
        parts = (ws.request.path if ws.request else "").split("?")[0].split("/")
        rate, secs = int(parts[2]), float(parts[3])
        await asyncio.sleep(WARMUP_S)
        stream = Stream(assets)
        report = await _pump(ws.transport, stream, rate, secs)
        one = b"1"
        end = _template(END_ASSET) % (
            0,
            START_MS,
            START_MS + 999,
            0,
            0,
            one,
            one,
            one,
            one,
            0.0,
            1,
            one,
            one,
            one,
        )
        ws.transport.write(_ws_frame(end))
        reports.put(report)
        await ws.wait_closed()

    async def klines(request: web.Request) -> web.Response:
        return web.json_response([])  # nothing to backfill: the window starts with the stream

    app = web.Application()
    app.router.add_get("/api/v3/klines", klines)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rest_port = runner.addresses[0][1]
    # No permessage-deflate (frames travel uncompressed), no server pings in the way of the raw
    # frames the pump writes.
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        ports.put((server.sockets[0].getsockname()[1], rest_port))
        await asyncio.Future()  # until terminated
