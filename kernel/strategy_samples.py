"""Synthetic but realistic inputs for a strategy's dry evaluation (kernel/strategy_check.py):
version 2 inputs, filled as the tick fills them. Bars are aggregated by the kernel's own code
(kernel/inputs.py) from an hour of 1 s candles that end in each input's closes; books have
depth on both sides; some inputs hold a position, for strategies that exit.
"""

from __future__ import annotations

import functools
import math

from kernel.clock import wall_ms
from kernel.inputs import bars_from_candles
from kernel.strategy_api import API_VERSION, INTERVALS_S, MAX_LOOKBACK_S, Bar, BookSide, Holding, SlotInput
from state.structs import Candle


def _path(first: float, last: float, n: int = 60) -> tuple[float, ...]:
    """n one-second closes from `first` to `last`: a steady drift with a ±0.01% zig-zag."""
    out = [first * (last / first) ** (i / (n - 1)) * (1 + 1e-4 * (-1) ** i) for i in range(n)]
    out[0], out[-1] = first, last
    return tuple(out)


def _candles(now_ms: int, start_ms: int, open_: float, closes: tuple[float, ...]) -> list[Candle]:
    """MAX_LOOKBACK_S of 1 s candles up to `now_ms`'s second: a slow swing (±0.2% over a
    quarter of an hour) before the window, a straight walk to the first of `closes` from the
    window's `open_` on, then `closes` themselves, one a second."""
    now_s = now_ms // 1000
    first_s = now_s - MAX_LOOKBACK_S + 1
    tail_s = now_s - len(closes) + 1  # the second of closes[0]
    start_s = start_ms // 1000
    prices: list[float] = []
    for t in range(first_s, now_s + 1):
        if t >= tail_s:
            p = closes[t - tail_s]
        elif t >= start_s:  # inside the window, before the closes: from its open to closes[0]
            p = open_ + (closes[0] - open_) * (t - start_s) / max(tail_s - start_s, 1)
        else:
            anchor = open_ if start_s < tail_s else closes[0]
            p = anchor * (1 + 0.002 * math.sin(2 * math.pi * (t - start_s) / 900))
        prices.append(p)
    out: list[Candle] = []
    prev = prices[0]
    for k, p in enumerate(prices):
        hi, lo = max(prev, p) * (1 + 5e-5), min(prev, p) * (1 - 5e-5)
        out.append(Candle((first_s + k) * 1000, prev, hi, lo, p, 1.0 + (k * 7919) % 13, True))
        prev = p
    return out


def _book(ask: float | None) -> BookSide | None:
    """A book around `ask`: three levels each side, thinner at the best price."""
    if ask is None:
        return None
    asks = tuple((round(ask + d, 2), size) for d, size in ((0.0, 150.0), (0.01, 400.0), (0.02, 900.0)))
    bids = tuple((round(ask - d, 2), size) for d, size in ((0.02, 200.0), (0.03, 500.0), (0.05, 1000.0)))
    return BookSide(bids=tuple(b for b in bids if b[0] > 0), asks=tuple(a for a in asks if a[0] < 1))


def _bars(candles: list[Candle], now_ms: int) -> dict[str, tuple[Bar, ...]]:
    """Every interval, as many bars as MAX_LOOKBACK_S holds (dry_evaluate keeps those the
    strategy declares)."""
    return {iv: bars_from_candles(candles, s, MAX_LOOKBACK_S // s, now_ms) for iv, s in INTERVALS_S.items()}


def sample_inputs(now_ms: int | None = None) -> list[SlotInput]:
    """Inputs for dry evaluations: 5m and 15m windows (those of `now_ms`), early in the
    window, in its last seconds and in its last half second; rising, falling and flat price
    paths of 60 closes; asks and books present and absent. A typical late-window strategy both
    trades (up on the rise, down on the fall) and passes on them. The last ones hold a
    position (gaining, losing, with an exit working, and one sold already), which the kernel
    gives only to strategies that declare EXITS."""
    return list(_samples(wall_ms() if now_ms is None else now_ms))


@functools.lru_cache(maxsize=4)
def _samples(now: int) -> tuple[SlotInput, ...]:
    # Cached per time: the readiness check asks once per slot, all at the same time. The
    # inputs are frozen; callers get a list of their own.
    def one(
        asset: str,
        tf_min: int,
        at_s: float,
        open_: float,
        first: float,
        last: float,
        asks: tuple[float | None, float | None],
        position: Holding | None = None,
        entered: bool = False,
        cash_usd: float = 1000.0,
        room_usd: float = 95.0,
    ) -> SlotInput:
        tf_ms = tf_min * 60_000
        start = now - now % tf_ms
        at = start + int(at_s * 1000)
        closes = _path(first, last)
        return SlotInput(
            slot_id=f"{asset}-{tf_min}m",
            asset=asset,
            timeframe=f"{tf_min}m",
            now_ms=at,
            window_start_ms=start,
            window_end_ms=start + tf_ms,
            open_price=open_,
            last_price=last,
            closes=closes,
            stake_usd=5.0,
            params={},
            up_ask=asks[0],
            down_ask=asks[1],
            api=API_VERSION,
            strategy="",
            bars=_bars(_candles(at, start, open_, closes), at),
            up_book=_book(asks[0]),
            down_book=_book(asks[1]),
            position=position,
            entered=entered or position is not None,
            cash_usd=cash_usd,
            exposure_room_usd=room_usd,
            open_ref_price=open_,
        )

    def held(
        tf_min: int,
        side: str,
        shares: float,
        price: float,
        at_s: float,
        exits: int = 0,
        pending: bool = False,
    ) -> Holding:
        start = now - now % (tf_min * 60_000)
        return Holding(
            side=side,  # type: ignore[arg-type]
            shares=shares,
            cost_usd=round(shares * price, 6),
            avg_price=price,
            opened_ms=start + int(at_s * 1000),
            exits=exits,
            exit_pending=pending,
        )

    return (
        one("btc", 5, 30, 64_000.0, 63_990.0, 64_050.0, (0.55, 0.47)),  # early, rising
        one("btc", 5, 290, 64_000.0, 64_030.0, 64_130.0, (0.82, 0.20)),  # last 10 s, risen
        one("btc", 5, 299.6, 64_000.0, 64_030.0, 64_130.0, (0.97, 0.04)),  # last half second
        one("xrp", 5, 285, 0.52, 0.52, 0.52, (0.50, 0.51)),  # last seconds, flat
        one("eth", 15, 120, 3_400.0, 3_402.0, 3_396.0, (0.45, 0.57)),  # early, falling
        one("eth", 15, 894, 3_400.0, 3_396.0, 3_390.0, (0.08, 0.90)),  # last 6 s, fallen
        one("sol", 15, 890, 150.0, 150.3, 150.1, (None, None), cash_usd=3.0, room_usd=0.0),  # no book
        # Holding: up bought at 0.55 and risen (take profit?), up bought at 0.60 and fallen
        # (stop?), an exit working, and the position sold already (entered, nothing held).
        one("btc", 5, 200, 64_000.0, 64_040.0, 64_110.0, (0.78, 0.24), held(5, "up", 9.09, 0.55, 60)),
        one("eth", 15, 600, 3_400.0, 3_398.0, 3_380.0, (0.21, 0.81), held(15, "up", 8.33, 0.60, 100)),
        one(
            "btc", 5, 240, 64_000.0, 64_050.0, 64_090.0, (0.70, 0.32), held(5, "down", 4.0, 0.45, 90, 1, True)
        ),
        one("xrp", 5, 250, 0.52, 0.521, 0.523, (0.66, 0.36), entered=True),
    )
