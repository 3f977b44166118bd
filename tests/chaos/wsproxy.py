"""A WebSocket proxy between the feed and the sim's Binance server, through which the chaos
harness pushes garbage frames into the feed's streams."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class WsProxy:
    """Forwards the feed's kline WebSockets to the sim's Binance server, frame for frame, and
    pushes garbage frames into them on demand. When the sim cuts a stream (socket-drop), the
    feed's side is cut too, without a close frame; a refused handshake is refused as well."""

    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.clients: set[Any] = set()
        self._thread = threading.Thread(target=self._run, name="chaos-ws-proxy", daemon=True)
        self._ready = threading.Event()
        self._runner: Any = None
        self._session: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import WSMsgType, web

        url = self.upstream + request.path_qs
        try:
            timeout = aiohttp.ClientWSTimeout(ws_close=2)
            up = await self._session.ws_connect(url, autoping=True, timeout=timeout)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status or 502, text=f"upstream refused: {e.message}")
        except (aiohttp.ClientError, OSError) as e:
            return web.Response(status=502, text=f"upstream unreachable: {e}")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.clients.add(ws)

        async def up_to_down() -> None:
            async for msg in up:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                else:
                    break

        async def down_to_up() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await up.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await up.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(up_to_down()), asyncio.ensure_future(down_to_up())]
        try:
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
        finally:
            self.clients.discard(ws)
            cut_by_upstream = up.closed or up.exception() is not None or tasks[0].done()
            await up.close()
            if cut_by_upstream and request.transport is not None:
                request.transport.abort()  # as the network failure upstream was: no close frame
            else:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _inject(self, frames: list[str | bytes]) -> int:
        sent = 0
        for ws in list(self.clients):
            for f in frames:
                try:
                    if isinstance(f, bytes):
                        await ws.send_bytes(f)
                    else:
                        await ws.send_str(f)
                    sent += 1
                except Exception:
                    break
        return sent

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WebSocket proxy did not start")

    def inject(self, frames: list[str | bytes]) -> int:
        """Push frames into every open stream; returns how many frames were sent."""
        return asyncio.run_coroutine_threadsafe(self._inject(frames), self.loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
