"""What the sim's maker is worth to `snipe`: how often it enters, how often it wins and what it
earns a trade, against makers of different lag and spread (docs/sim.md, "The maker").

No stack: the seeded price model, the maker's book (sim/book.py) and snipe's evaluate, called
as the kernel would at each tick of each window's entry zone. The strategy sees what the feed
holds at the tick: the 1 s candles closed by the second before it (the sim, as Binance,
pushes each 1 s candle once, closed; the candle closing at the tick arrives ~20 ms after the
tick has read), so its last price is a second old. Its FOK buy fills at
the ask of the book 100 ms after the tick, and the window resolves on the model. Fees are the
sim's default schedule (15m takers only).

    .venv/bin/python -m bench.sim_maker [--windows-5m 500] [--windows-15m 170]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from kernel.strategy_api import SlotInput
from sim.book import TICKS_PER_UNIT, BookParams, book
from sim.fees import DEFAULT_FEES
from sim.markets import Catalogue, Window
from sim.model import PriceModel
from worker.strategies import snipe

SEED = 42
START_S = 1_796_000_100  # an arbitrary day of the seeded model
ASSETS = ("btc", "eth", "sol", "xrp")
MAKERS = (
    BookParams(lag_ms=3000, spread=0.02),  # before #26
    BookParams(lag_ms=1000, spread=0.01),
    BookParams(),  # the default
)
ORDER_DELAY_MS = 100  # from the tick to the order at the venue
TICK_MS = 5000
STAKE_USD = 5.0


@dataclass
class Tally:
    windows: int = 0
    trades: int = 0
    won: int = 0
    pnl_usd: float = 0.0


def _window(cat: Catalogue, asset: str, timeframe: str, start_s: int) -> Window:
    w = cat.register(f"{asset}-updown-{timeframe}-{start_s}")
    assert w is not None
    return w


def _ask(model: PriceModel, w: Window, token: str, at_ms: int, maker: BookParams) -> float | None:
    asks = book(model, w, token, at_ms, maker, SEED)[1]
    return asks[0][0] / TICKS_PER_UNIT if asks else None


def one_window(model: PriceModel, w: Window, maker: BookParams, fee_rate: float, tally: Tally) -> None:
    """Snipe's one entry (or none) in window w, and what it earned."""
    tally.windows += 1
    end_ms = w.end_s * 1000
    t = snipe.quotes_from_ms(w.start_s * 1000, end_ms, {})
    t = -(-t // TICK_MS) * TICK_MS
    open_price = model.price(w.asset, w.start_s)
    while t < end_ms:
        now_s = t // 1000
        # The closes of the candles closed by the second before the tick (price(s) is the
        # close of the candle opening at s - 1).
        closes = tuple(model.price(w.asset, s) for s in range(now_s - 59, now_s))
        at_ms = t + ORDER_DELAY_MS
        inp = SlotInput(
            slot_id=f"{w.asset}-{w.timeframe}",
            asset=w.asset,
            timeframe=w.timeframe,
            now_ms=t,
            window_start_ms=w.start_s * 1000,
            window_end_ms=end_ms,
            open_price=open_price,
            last_price=closes[-1],
            closes=closes,
            stake_usd=STAKE_USD,
            params={},
            up_ask=_ask(model, w, w.up_token, at_ms, maker),
            down_ask=_ask(model, w, w.down_token, at_ms, maker),
        )
        d = snipe.evaluate(inp)
        if d is not None:
            shares = d.stake_usd / d.limit_price
            fee = shares * fee_rate * d.limit_price * (1.0 - d.limit_price)
            won = (d.side == "up") == model.outcome_up(w.asset, w.start_s, w.end_s)
            tally.trades += 1
            tally.won += won
            tally.pnl_usd += (shares if won else 0.0) - d.stake_usd - fee
            return
        t += TICK_MS


def run(maker: BookParams, timeframe: str, windows: int) -> Tally:
    tf_s = {"5m": 300, "15m": 900}[timeframe]
    fee = DEFAULT_FEES.get(timeframe)
    fee_rate = fee.rate if fee is not None and fee.exponent == 1.0 else 0.0
    model, cat, tally = PriceModel(SEED), Catalogue(ASSETS, (timeframe,)), Tally()
    first = START_S - START_S % tf_s
    for asset in ASSETS:
        for k in range(windows):
            one_window(model, _window(cat, asset, timeframe, first + k * tf_s), maker, fee_rate, tally)
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows-5m", type=int, default=500, help="5m windows per asset")
    ap.add_argument("--windows-15m", type=int, default=170, help="15m windows per asset")
    args = ap.parse_args()
    print("| maker | windows | entered | won | PnL a trade |")
    print("|---|---|---|---|---|")
    for timeframe, n in (("5m", args.windows_5m), ("15m", args.windows_15m)):
        for maker in MAKERS:
            r = run(maker, timeframe, n)
            per = r.pnl_usd / r.trades if r.trades else 0.0
            print(
                f"| {timeframe}: {maker.lag_ms} ms, {maker.spread:.2f} | {r.windows} "
                f"| {r.trades / r.windows:.0%} | {r.won / max(r.trades, 1):.0%} | {per:+.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
