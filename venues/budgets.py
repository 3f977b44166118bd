"""The venues' request budgets: their published rate limits as token buckets (`Budget`s of
`BucketSpec`s), for the limiter of state/ratelimit.py, which keeps the buckets in Redis.

    limiter = AsyncLimiter(
        redis, Keys(prefix), scale=settings.rate_limit_scale, budgets=BUDGETS, clock_ms=wall_ms
    )
    await limiter.take(BINANCE_REST_WEIGHT, cost=klines_weight(1000), max_wait_ms=60_000)
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from baton.errors import RateLimited
from baton.settings import Settings
from kernel.clock import wall_ms
from state.keys import Keys
from state.ratelimit import AsyncLimiter, BucketSpec, Budget, SyncLimiter
from venues.http import Throttle

log = logging.getLogger("venues.budgets")

# --- the venues' published limits --------------------------------------------------------
# Binance spot, per IP. REST: `REQUEST_WEIGHT` 6000 per minute (the `rateLimits` of
# GET /api/v3/exchangeInfo; https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits);
# GET /api/v3/klines weighs 2 whatever its `limit` (spot rest-api.md, "Kline/candlestick data";
# the futures klines' weight depends on `limit`, spot's does not). WebSocket streams: "a limit
# of 300 connections per attempt every 5 minutes per IP", and 5 incoming messages per second
# *per connection* (binance-spot-api-docs web-socket-streams.md, "WebSocket Limits"). The
# message limit is per connection, so it is not a shared budget: the feed sends nothing but
# the pongs websockets answers the server's pings with (one per 20 s).
BINANCE_REST_WEIGHT_LIMIT_1M = 6000
BINANCE_REST_WEIGHT_1M = BucketSpec.window("binance:rest_weight:1m", BINANCE_REST_WEIGHT_LIMIT_1M, 60)
BINANCE_WS_CONNECT_5M = BucketSpec.window("binance:ws_connect:5m", 300, 300)
KLINES_WEIGHT = 2

# Polymarket, per IP (Cloudflare throttling, sliding windows):
# https://docs.polymarket.com/api-reference/rate-limits — CLOB general 9,000 / 10 s; `/book`
# 1,500 / 10 s; `/books` 500 / 10 s; tick size 200 / 10 s; ledger "/trades, /orders,
# /notifications, /order" 900 / 10 s (we count GET /data/order/{id} there); `/data/orders`
# 500 / 10 s; `/data/trades` 500 / 10 s; API key endpoints 100 / 10 s; POST /order burst
# 3,500 / 10 s and sustained 36,000 / 10 min; DELETE /order 3,000 / 10 s and 30,000 / 10 min;
# POST /orders 1,000 / 10 s and 15,000 / 10 min. Gamma general 4,000 / 10 s, `/events`
# 500 / 10 s, `/markets` 300 / 10 s. (Polymarket's overall 15,000 / 10 s cannot bind: the CLOB
# and Gamma generals add up to 13,000.) Polymarket also announced per-signer order and cancel
# buckets whose size depends on a volume tier (https://docs.polymarket.com/api-reference/
# trading-rate-limits); their numbers are not modelled here: scale down if the tier needs it.
CLOB_GENERAL_10S = BucketSpec.window("clob:general:10s", 9000, 10)
_10S = 10
_10M = 600


def _clob(name: str, covers: str, *own: BucketSpec) -> Budget:
    return Budget(name, (CLOB_GENERAL_10S, *own), covers)


GAMMA_GENERAL_10S = BucketSpec.window("gamma:general:10s", 4000, _10S)

BINANCE_REST_WEIGHT = "binance:rest_weight"
BINANCE_WS_CONNECT = "binance:ws_connect"
CLOB_POST_ORDER = "clob:post_order"
CLOB_POST_ORDERS = "clob:post_orders"
CLOB_CANCEL_ORDER = "clob:cancel_order"
CLOB_BOOK = "clob:book"
CLOB_BOOKS = "clob:books"
CLOB_ORDER = "clob:order"
CLOB_ORDERS = "clob:orders"
CLOB_TRADES = "clob:trades"
CLOB_TICK_SIZE = "clob:tick_size"
CLOB_AUTH = "clob:auth"
CLOB_MARKETS = "clob:markets"
CLOB_OTHER = "clob:other"
GAMMA_EVENTS = "gamma:events"
GAMMA_MARKETS = "gamma:markets"

BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget(BINANCE_REST_WEIGHT, (BINANCE_REST_WEIGHT_1M,), "Binance REST, cost = request weight"),
        Budget(BINANCE_WS_CONNECT, (BINANCE_WS_CONNECT_5M,), "Binance WebSocket connection attempts"),
        _clob(
            CLOB_POST_ORDER,
            "POST /order",
            BucketSpec.window("clob:post_order:10s", 3500, _10S),
            BucketSpec.window("clob:post_order:10m", 36000, _10M),
        ),
        _clob(
            CLOB_POST_ORDERS,
            "POST /orders",
            BucketSpec.window("clob:post_orders:10s", 1000, _10S),
            BucketSpec.window("clob:post_orders:10m", 15000, _10M),
        ),
        _clob(
            CLOB_CANCEL_ORDER,
            "DELETE /order",
            BucketSpec.window("clob:cancel_order:10s", 3000, _10S),
            BucketSpec.window("clob:cancel_order:10m", 30000, _10M),
        ),
        _clob(CLOB_BOOK, "GET /book", BucketSpec.window("clob:book:10s", 1500, _10S)),
        _clob(CLOB_BOOKS, "POST /books", BucketSpec.window("clob:books:10s", 500, _10S)),
        _clob(CLOB_ORDER, "GET /data/order/{id}", BucketSpec.window("clob:ledger:10s", 900, _10S)),
        _clob(CLOB_ORDERS, "GET /data/orders", BucketSpec.window("clob:data_orders:10s", 500, _10S)),
        _clob(CLOB_TRADES, "GET /data/trades", BucketSpec.window("clob:data_trades:10s", 500, _10S)),
        _clob(CLOB_TICK_SIZE, "GET /tick-size", BucketSpec.window("clob:tick_size:10s", 200, _10S)),
        _clob(CLOB_AUTH, "/auth/* (API keys)", BucketSpec.window("clob:auth:10s", 100, _10S)),
        _clob(CLOB_MARKETS, "GET /markets, /markets/{condition_id}"),
        _clob(CLOB_OTHER, "any other CLOB request (/version, /neg-risk, ...)"),
        Budget(
            GAMMA_EVENTS,
            (GAMMA_GENERAL_10S, BucketSpec.window("gamma:events:10s", 500, _10S)),
            "Gamma GET /events",
        ),
        Budget(
            GAMMA_MARKETS,
            (GAMMA_GENERAL_10S, BucketSpec.window("gamma:markets:10s", 300, _10S)),
            "Gamma GET /markets",
        ),
    )
}


def klines_weight(limit: int) -> int:
    """The request weight of one spot GET /api/v3/klines (2, whatever `limit`, up to 1000)."""
    return KLINES_WEIGHT


async def align_rest_weight(limiter: AsyncLimiter, used: int) -> float:
    """Bring the shared Binance REST budget down to what the venue says is left this minute:
    `used` is its own count of the IP's weight (X-MBX-USED-WEIGHT-1M) out of
    BINANCE_REST_WEIGHT_LIMIT_1M. Weight spent from this IP outside the budget (another
    program, another host behind the same address) then delays our requests instead of
    earning a 429. Returns the tokens taken; never raises."""
    if not limiter.enabled:
        return 0.0
    try:
        [bucket] = limiter.buckets(BINANCE_REST_WEIGHT)
        level = (await limiter.levels(BINANCE_REST_WEIGHT))[bucket.name]
        excess = level - (BINANCE_REST_WEIGHT_LIMIT_1M - used)
        if excess < 1:
            return 0.0
        await limiter.take(BINANCE_REST_WEIGHT, excess, 0)
    except (RedisError, RateLimited, ValueError) as e:
        log.warning("REST budget not aligned with the venue's count (%d): %s", used, e)
        return 0.0
    log.info("the venue counts %d weight used this minute: %.0f taken from the budget", used, excess)
    return excess


def clob_budget(method: str, path: str) -> str:
    """The budget of a CLOB request, from its method and path (as py-clob-client-v2 sends them)."""
    method = method.upper()
    path = "/" + path.lstrip("/").split("?", 1)[0]
    if path == "/order":
        return CLOB_CANCEL_ORDER if method == "DELETE" else CLOB_POST_ORDER
    if path == "/orders" and method == "POST":
        return CLOB_POST_ORDERS
    if path.startswith("/data/order/"):
        return CLOB_ORDER
    exact = {
        "/book": CLOB_BOOK,
        "/books": CLOB_BOOKS,
        "/data/orders": CLOB_ORDERS,
        "/data/trades": CLOB_TRADES,
        "/tick-size": CLOB_TICK_SIZE,
        "/markets": CLOB_MARKETS,
    }
    if path in exact:
        return exact[path]
    if path.startswith("/auth/"):
        return CLOB_AUTH
    if path.startswith("/markets/"):
        return CLOB_MARKETS
    return CLOB_OTHER


# A request may wait this long for its budget; longer, it is refused (and not sent): a tick
# must not stall behind a budget, and the next tick will ask again.
THROTTLE_MAX_WAIT_MS = 1000


def venue_throttle(redis: Any, s: Settings) -> Throttle | None:
    """The venues' budgets as a Throttle, on a sync Redis client (the venue runs in threads)."""
    limiter = SyncLimiter(redis, Keys(s.prefix), scale=s.rate_limit_scale, budgets=BUDGETS, clock_ms=wall_ms)
    if not limiter.enabled:
        return None

    def take(method: str, path: str) -> None:
        # Gamma's only call is GET /events (the CLOB has no such path; the sim serves both
        # on one port, so the path tells them apart, not the host).
        budget = GAMMA_EVENTS if path == "/events" else clob_budget(method, path)
        limiter.take(budget, 1, THROTTLE_MAX_WAIT_MS)

    return take
