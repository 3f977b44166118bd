"""The interface between the kernel and strategy modules (docs/strategies.md is the guide).

A strategy is a module in worker/strategies/ with a pure function
`evaluate(inp: SlotInput) -> Buy | Exit | Pass | None` and, optionally:

- `needs_quotes(inp) -> bool`: asked before the kernel fetches order books, so that books are
  read only for slots that may trade;
- `quotes_from_ms(window_start_ms, window_end_ms, params) -> int`: the earliest time in a
  window at which `needs_quotes` may say yes. Before it the kernel passes the slot by without
  building its input (a slot that trades in the last seconds of a 15-minute window sleeps
  through the rest). The reload and readiness checks refuse a strategy whose
  `quotes_from_ms` says later than a time at which its `needs_quotes` wants quotes. A slot
  that holds a position in its window and whose strategy declares `EXITS = True` is awake
  whatever this says;
- declarations, all read-only: `API` (the input version it is written for, 1 when absent),
  `DEFAULTS` and `PARAM_BOUNDS` (its parameters: the only names a slot may set, and their
  bounds), `check_params(params) -> str` (a problem with them taken together, "" when none),
  `CANDLES` (interval -> bars of look-back it reads, bounded by `MAX_LOOKBACK_S` and the
  intervals in `INTERVALS_S`) and `EXITS` (True: evaluate is also called while the slot holds
  a position in its window, and may return an Exit).

No module-level mutable state and no I/O: every input is passed in, so a reload, a new worker
version or a replay sees the same world and makes the same decision.

Input versions: version 1 is the fields up to `down_ask`; version 2 adds the rest. Every field
added later has a default, so a strategy written for an older version keeps working unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Side = Literal["up", "down"]
OrderType = Literal["FOK", "FAK", "GTC", "GTD"]
ORDER_TYPES: tuple[str, ...] = ("FOK", "FAK", "GTC", "GTD")
# The input version this kernel builds.
API_VERSION = 2
# Bar intervals a strategy may declare in CANDLES, in seconds (bars are built from the feed's
# 1-second candles, aligned to the interval on the epoch).
INTERVALS_S: dict[str, int] = {"1s": 1, "5s": 5, "15s": 15, "1m": 60, "5m": 300, "15m": 900}
# How far back a strategy may look (interval x bars): the feed keeps an hour of 1 s candles.
MAX_LOOKBACK_S = 3600
# Exit legs per slot-window (intent ids slot:window:exit-1 .. exit-N), each at most once. A leg
# that sold nothing (a FAK on a thin book) still uses its number: enough of them that a stop
# loss selling level by level down a thin book does not run out inside one window.
MAX_EXIT_LEGS = 8
# GTD orders: the venue wants an expiry at least a minute ahead (Polymarket's security
# threshold); the kernel refuses earlier ones and any after the window's end.
GTD_MIN_AHEAD_MS = 61_000


class Bar(msgspec.Struct, frozen=True, array_like=True):
    """One OHLCV bar; the newest bar of a series may still be forming (its close is the last
    price so far). Only data from before the evaluation's time is ever in a bar."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


# (price, size in shares)
Level = tuple[float, float]


class BookSide(msgspec.Struct, frozen=True):
    """One outcome token's book, best level first: bids descending, asks ascending."""

    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """The slot's open position in this window, as the ledger has booked it."""

    side: Side
    shares: float  # held now (after any exits)
    cost_usd: float  # what the held shares cost (fees included)
    avg_price: float  # cost per share held
    opened_ms: int
    exits: int = 0  # exit legs committed in this window so far
    exit_pending: bool = False  # an exit order is still working at the venue


class SlotInput(msgspec.Struct, frozen=True, kw_only=True):
    # --- version 1
    slot_id: str
    asset: str
    timeframe: str
    now_ms: int
    window_start_ms: int
    window_end_ms: int
    open_price: float  # the asset's price at the window's start (Binance 1 s candle open)
    last_price: float
    closes: tuple[float, ...]  # the last minute of 1 s closes, oldest first
    stake_usd: float
    params: dict[str, float]
    up_ask: float | None = None
    down_ask: float | None = None
    # --- version 2
    api: int = 1  # the version of this input: 2 when the fields below are filled in
    strategy: str = ""
    # interval -> bars, oldest first, as many as the strategy's CANDLES asks (fewer while the
    # feed has less history)
    bars: dict[str, tuple[Bar, ...]] = msgspec.field(default_factory=dict)
    up_book: BookSide | None = None
    down_book: BookSide | None = None
    position: Holding | None = None
    entered: bool = False  # this window's entry leg was committed already
    cash_usd: float = 0.0
    exposure_room_usd: float = 0.0  # how much more may be staked before the exposure limit
    # The price the window is judged against, as the venue will judge it. Until the reference
    # feed exists (Chainlink) it is the Binance open, the same as open_price.
    open_ref_price: float = 0.0

    @property
    def remaining_s(self) -> float:
        return (self.window_end_ms - self.now_ms) / 1000.0


class Buy(msgspec.Struct, frozen=True, kw_only=True):
    """Enter the window: buy `side` up to `limit_price` for `stake_usd`. At most one entry per
    slot-window (the kernel refuses a second)."""

    side: Side
    limit_price: float
    stake_usd: float
    reason: str
    p_up: float = 0.5  # the strategy's estimate, for the decision log
    order_type: OrderType = "FOK"
    expires_ms: int = 0  # GTD only: when the venue cancels what is left


# The name of version 1, kept: existing strategies return Decision(...).
Decision = Buy


class Exit(msgspec.Struct, frozen=True, kw_only=True):
    """Sell (some of) the open position at `limit_price` or better before resolution."""

    limit_price: float
    reason: str
    shares: float = 0.0  # 0: all that is held
    order_type: OrderType = "FAK"
    expires_ms: int = 0  # GTD only


class Pass(msgspec.Struct, frozen=True, kw_only=True):
    """No order this time, and why (the decision log shows it; None is a pass without one)."""

    reason: str


Action = Buy | Exit | Pass


def remaining_s(inp: SlotInput) -> float:
    return (inp.window_end_ms - inp.now_ms) / 1000.0
