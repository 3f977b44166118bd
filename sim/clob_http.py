"""What every endpoint of the sim's CLOB (sim/clob.py, sim/clob_orders.py) shares: the app's
key to its ClobSim, the error shape, the check for the L2 headers (presence only), and the
market window of a token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from sim.clob_state import ClobSim
from sim.markets import Window

L1_HEADERS = ("POLY_ADDRESS", "POLY_SIGNATURE", "POLY_TIMESTAMP")
L2_HEADERS = (*L1_HEADERS, "POLY_API_KEY", "POLY_PASSPHRASE")

SIM = web.AppKey("sim", ClobSim)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def missing_headers(request: web.Request, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not request.headers.get(n)]


def l2(handler: Handler) -> Handler:
    """The endpoint answers only a request with the L2 headers (checked for presence only)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        missing = missing_headers(request, L2_HEADERS)
        if missing:
            return error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
        return await handler(request)

    return wrapped


def window_of_token(request: web.Request, token: str) -> Window | None:
    sim = request.app[SIM]
    return sim.catalogue.by_token(token, sim.clock_ms() // 1000) if token else None
