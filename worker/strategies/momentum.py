"""momentum: ride a short-term move measured on 15-second bars, and get out on the book's bid.

Entry: over the last `lookback` bars the price moved at least `min_move_bps` and most bars
(`min_agree` of them) moved the same way: buy that side, fill-or-kill, at its ask (or up to
`entry_slippage` above it when the best level is too thin for the stake). Exits, on
the bid of the side held: take profit when it is `take_profit` above what a share cost, stop
loss when it is `stop_loss` below, and (if `flat_s` > 0) sell what is left in the window's last
`flat_s` seconds. What is not sold is held to resolution like any position.

Prices of shares are in dollars per share (0 to 1), so take_profit=0.08 means 8 cents a share.
"""

from __future__ import annotations

import math
from types import MappingProxyType

from kernel.strategy_api import MAX_EXIT_LEGS, Bar, BookSide, Buy, Exit, Holding, Pass, Side, SlotInput

API = 2
EXITS = True
# 20 bars of 15 s: the last five minutes. `lookback` picks how many of them are read.
CANDLES = MappingProxyType({"15s": 20})
INTERVAL = "15s"

# Read-only on purpose: strategy modules hold no mutable state.
DEFAULTS = MappingProxyType(
    {
        "lookback": 8.0,  # bars of 15 s the move is measured over (2 minutes)
        "min_move_bps": 10.0,  # the move over them, in basis points of the price
        "min_agree": 0.6,  # the share of those bars that moved the same way
        "min_price": 0.10,  # never buy a side cheaper than this
        "max_price": 0.75,  # nor dearer than this: the move is often priced in already
        "max_spread": 0.06,  # skip a side whose ask is this far above its bid (a thin book)
        "entry_slippage": 0.02,  # an entry pays up to this far above the best ask for depth
        "entry_until_s": 60.0,  # no entry when this little of the window is left
        "take_profit": 0.08,  # sell when the bid is this far above the cost per share
        "stop_loss": 0.08,  # sell when the bid is this far below it
        "stop_slippage": 0.03,  # a stop sells down to this far under the best bid
        "flat_s": 0.0,  # sell what is left in the window's last flat_s seconds (0: hold)
    }
)
PARAM_BOUNDS = MappingProxyType(
    {
        "lookback": (2.0, 20.0),
        "min_move_bps": (0.0, 1000.0),
        "min_agree": (0.5, 1.0),
        "min_price": (0.01, 0.99),
        "max_price": (0.01, 0.99),
        "max_spread": (0.01, 1.0),
        "entry_slippage": (0.0, 0.2),
        "entry_until_s": (0.0, 3600.0),
        "take_profit": (0.01, 0.99),
        "stop_loss": (0.01, 0.99),
        "stop_slippage": (0.0, 0.5),
        "flat_s": (0.0, 3600.0),
    }
)
MIN_PRICE = 0.01  # the venue's tick: no order below it


def check_params(params: dict[str, float]) -> str:
    """A problem with the parameters taken together ("" when none)."""
    if params["min_price"] >= params["max_price"]:
        return f"min_price {params['min_price']} must be below max_price {params['max_price']}"
    if params["lookback"] != int(params["lookback"]):
        return f"lookback {params['lookback']} must be a whole number of bars"
    return ""


def _params(inp: SlotInput) -> dict[str, float]:
    return {**DEFAULTS, **inp.params}


def _zone_s(inp: SlotInput, seconds: float) -> float:
    # Short windows (tests run 15 s and 1 m ones) get a third of the window at most, so that
    # a window always has a part to enter in.
    return min(seconds, (inp.window_end_ms - inp.window_start_ms) / 3000.0)


def _book(inp: SlotInput, side: Side) -> BookSide | None:
    return inp.up_book if side == "up" else inp.down_book


def _ask(inp: SlotInput, side: Side) -> float | None:
    book = _book(inp, side)
    if book is not None and book.best_ask is not None:
        return book.best_ask
    # Version 1 inputs carry only the best asks.
    return inp.up_ask if side == "up" else inp.down_ask


def move(bars: tuple[Bar, ...], n: int) -> tuple[float, float]:
    """(the move over the last n bars in basis points, the share of them that went up)."""
    last = bars[-n:]
    first_open = last[0].open
    if first_open <= 0:
        return 0.0, 0.0
    bps = (last[-1].close / first_open - 1.0) * 10_000.0
    ups = sum(1 for b in last if b.close > b.open)
    return bps, ups / len(last)


def needs_quotes(inp: SlotInput) -> bool:
    """Books only for a slot that may enter now or holds something to sell."""
    if inp.position is not None:
        return True
    if inp.entered:
        return False
    p = _params(inp)
    return (
        inp.remaining_s > _zone_s(inp, p["entry_until_s"])
        and len(inp.bars.get(INTERVAL, ())) >= p["lookback"]
    )


def evaluate(inp: SlotInput) -> Buy | Exit | Pass:
    p = _params(inp)
    if inp.position is not None:
        return _exit(inp, inp.position, p)
    if inp.entered:
        return Pass(reason="entered this window already")
    return _entry(inp, p)


def _entry(inp: SlotInput, p: dict[str, float]) -> Buy | Pass:
    until_s = _zone_s(inp, p["entry_until_s"])
    if inp.remaining_s <= until_s:
        return Pass(reason=f"{inp.remaining_s:.0f}s left: no entries in the last {until_s:.0f}s")
    n = int(p["lookback"])
    bars = inp.bars.get(INTERVAL, ())
    if len(bars) < n:
        return Pass(reason=f"{len(bars)} bars of {INTERVAL}, {n} needed")
    bps, up_share = move(bars, n)
    if abs(bps) < p["min_move_bps"]:
        return Pass(reason=f"moved {bps:+.1f} bps over {n} bars, under {p['min_move_bps']:g}")
    side: Side = "up" if bps > 0 else "down"
    agree = up_share if side == "up" else 1.0 - up_share
    if agree < p["min_agree"]:
        return Pass(reason=f"moved {bps:+.1f} bps but only {agree:.0%} of {n} bars agree")
    ask = _ask(inp, side)
    if ask is None:
        return Pass(reason=f"no ask for {side}")
    if not p["min_price"] <= ask <= p["max_price"]:
        return Pass(reason=f"{side} ask {ask:.2f} outside {p['min_price']:.2f}..{p['max_price']:.2f}")
    book = _book(inp, side)
    bid = book.best_bid if book is not None else None
    if bid is not None and ask - bid > p["max_spread"]:
        return Pass(reason=f"{side} spread {ask - bid:.2f} over {p['max_spread']:.2f}")
    limit = ask
    if book is not None and book.asks:
        # Fill-or-kill buys all or nothing: pay as far up the asks as the stake needs.
        cap = min(p["max_price"], round(ask + p["entry_slippage"], 2))
        deep = buy_price_for(book.asks, inp.stake_usd, cap)
        if deep is None:
            return Pass(reason=f"{side} asks up to {cap:.2f} hold less than {inp.stake_usd:g} USD")
        limit = deep
    return Buy(
        side=side,
        limit_price=limit,
        stake_usd=inp.stake_usd,
        p_up=ask if side == "up" else 1.0 - ask,  # the market's view: momentum has no model
        reason=f"moved {bps:+.1f} bps over {n} bars ({agree:.0%} agree): buy {side} at {limit:.2f}",
    )


def buy_price_for(asks: tuple[tuple[float, float], ...], stake_usd: float, cap: float) -> float | None:
    """The lowest limit price, at most `cap`, at which the asks (best first) hold the shares
    `stake_usd` buys at that limit; None when they do not."""
    shares = 0.0
    for price, size in asks:
        if price > cap or price <= 0:
            break
        shares += size
        if shares >= stake_usd / price:
            return price
    return None


def sell_price_for(bids: tuple[tuple[float, float], ...], shares: float, floor: float) -> float:
    """The lowest price at or above `floor` to which the bids must be taken to sell `shares`
    (the book's depth, best first); `floor` when the book runs out before that."""
    left = shares
    for level_price, size in bids:
        if level_price < floor:
            break
        left -= size
        if left <= 0:
            return level_price
    # Not enough bids shown: down to the floor, so that what arrives there is taken too.
    return floor


def _exit(inp: SlotInput, pos: Holding, p: dict[str, float]) -> Exit | Pass:
    if pos.exit_pending:
        return Pass(reason="an exit order is still working")
    if pos.exits >= MAX_EXIT_LEGS:
        return Pass(reason=f"{pos.exits} exits used, holding {pos.shares:g} shares to resolution")
    book = _book(inp, pos.side)
    bid = book.best_bid if book is not None else None
    if bid is None or book is None:
        return Pass(reason=f"holding {pos.shares:g} {pos.side}: no bid to sell into")
    target = pos.avg_price + p["take_profit"]
    stop = pos.avg_price - p["stop_loss"]
    what = f"{pos.side} bid {bid:.2f} vs cost {pos.avg_price:.3f}"
    if bid >= target:
        # Take profit only at the target (up to the tick) or better: FAK sells what the bids
        # there take, and the rest is tried again at the next tick as another exit leg.
        limit = min(math.ceil(round(target * 100, 6)) / 100, bid)
        return Exit(limit_price=limit, reason=f"take profit: {what}")
    flat_s = _zone_s(inp, p["flat_s"]) if p["flat_s"] > 0 else 0.0
    if bid <= stop or inp.remaining_s <= flat_s:
        why = "stop loss" if bid <= stop else f"{inp.remaining_s:.0f}s left, flat"
        # Get out: as deep into the bids as the shares need, at most stop_slippage under the best.
        floor = max(MIN_PRICE, round(bid - p["stop_slippage"], 2))
        return Exit(limit_price=sell_price_for(book.bids, pos.shares, floor), reason=f"{why}: {what}")
    return Pass(reason=f"holding: {what}, take profit at {target:.2f}, stop at {stop:.2f}")
