"""What every endpoint of the sim's CLOB (sim/clob.py, sim/clob_orders.py) shares: the app's
key to its ClobSim, the error shape, the L2 check (sim/auth.py: verified as the live CLOB
verifies it), and the market window of a token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from sim import auth
from sim.clob_state import ClobSim
from sim.markets import Window

SIM = web.AppKey("sim", ClobSim)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def l2_error(request: web.Request) -> str:
    """Why the request's L2 headers are refused ("" when they are good: sim/auth.py)."""
    body = (await request.read()).decode("utf-8", "replace")
    return auth.l2_error(request.headers, request.app[SIM].creds, request.method, request.path, body)


def l2(handler: Handler) -> Handler:
    """The endpoint answers only a request with good L2 headers; else 401, as the live CLOB."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        why = await l2_error(request)
        if why:
            return error(401, why)
        return await handler(request)

    return wrapped


def window_of_token(request: web.Request, token: str) -> Window | None:
    sim = request.app[SIM]
    return sim.catalogue.by_token(token, sim.clock_ms() // 1000) if token else None
