"""The backtest's fill model: which book an order meets, and what it fills against it.

Books: the books recorded in the input log for that market and time, where there are some
(`RecordedBooks`: what the live strategy was shown, at most a tick old), else a model book
(`model_books`): a market maker who prices the chance of Up from the reference series seen
`lag_ms` late (a driftless random walk: P(up) = Phi(ln(S/S0) / (sigma * sqrt(tau))), sigma the
per-second volatility of the last `vol_window_s` of 1 s closes before its view; the price at
its view linear between whole seconds, as the sim's maker reads its model), quotes
`spread` wide around it on the venue's 0.01 tick, `levels` levels a side, `depth_shares` at the
touch and `depth_step_shares` more per level further out. Fills do not deplete the book (the
sim's maker re-quotes every second the same way: sim/book.py).

Matching, as the sim's exchange matches (sim/orders.py, sim/resting.py): a BUY takes the asks
at or under its limit, best first, a SELL the bids at or over it; FOK fills whole or is
killed; FAK fills what is there and the rest is killed; GTC/GTD fill what crosses on arrival
(the taker, who pays the fee) and rest; what rests fills later at its own price, as the maker
(no fee), against the book of each later tick, at most what the crossing levels hold, until
its window ends (or a GTD's expiry). Pure: no I/O.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import math
import operator
from array import array
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from kernel.strategy_api import BookSide

TICKS_PER_UNIT = 100  # the venue's 0.01 tick
MIN_TICK, MAX_TICK = 1, TICKS_PER_UNIT - 1
MICRO = 1_000_000


class FillParams(msgspec.Struct, frozen=True, kw_only=True):
    """The model book's parameters (docs/evaluate.md "Backtest" says what each assumes)."""

    lag_ms: int = 500  # how late the maker sees the reference price
    spread: float = 0.01  # ask - bid around the maker's fair value, in dollars per share
    levels: int = 5  # price levels per side
    depth_shares: float = 100.0  # shares at the best level
    depth_step_shares: float = 50.0  # more shares per level further from the touch
    # Half-width of a seeded uniform noise on the maker's fair value (per market and second):
    # its disagreement with the model, which a taker can pick off, as the sim's maker has.
    noise: float = 0.0
    vol_window_s: int = 300  # seconds of 1 s closes the maker's volatility is taken over
    vol_floor: float = 1e-5  # per-second volatility floor (flat data)
    min_order_shares: float = 5.0  # the market's minimum order size (Polymarket: 5)
    recorded_max_age_ms: int = 5000  # a recorded book older than this is not used


def ladder(p: float, spread: float, levels: int) -> tuple[list[int], list[int]]:
    """(bid ticks, ask ticks), best first, of a maker quoting `spread` wide around the
    probability `p` on the 0.01 tick: the sim's maker's quotes too (sim/book.py calls this)."""
    bid0, ask0 = touch(p, spread)
    return _levels(bid0, ask0, levels)


def touch(p: float, spread: float) -> tuple[int, int]:
    """(best bid tick, best ask tick) of the ladder around `p`."""
    half = spread / 2.0 * TICKS_PER_UNIT
    # The epsilon keeps a price that is exactly on a tick from moving a whole tick.
    ask0 = min(MAX_TICK, max(MIN_TICK, math.ceil(p * TICKS_PER_UNIT + half - 1e-9)))
    bid0 = min(MAX_TICK, max(MIN_TICK, math.floor(p * TICKS_PER_UNIT - half + 1e-9)))
    if bid0 >= ask0:
        bid0 = ask0 - 1
    return bid0, ask0


def _levels(bid0: int, ask0: int, levels: int) -> tuple[list[int], list[int]]:
    asks = [t for t in range(ask0, ask0 + levels) if t <= MAX_TICK]
    bids = [t for t in range(bid0, bid0 - levels, -1) if t >= MIN_TICK]
    return bids, asks


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


class PriceSeries:
    """One asset's 1 s candles as the maker reads them: the price at a time (the close of the
    last candle closed by then) and the per-second volatility before it, from running sums
    (one bisect and a subtraction per question, whatever the window)."""

    def __init__(self, open_ms: Sequence[int], closes: Sequence[float]) -> None:
        self.open_ms = open_ms
        self.closes = closes
        # s1[i], s2[i]: sums of the log returns (and their squares) of closes[1..i].
        rets = [0.0, *map(math.log, map(operator.truediv, closes[1:], closes[:-1]))] if closes else []
        # (Arrays of C doubles: a day of 8 assets is 691,200 candles, and a list of floats
        # costs four times the memory.)
        self.s1 = array("d", itertools.accumulate(rets))
        self.s2 = array("d", itertools.accumulate(r * r for r in rets))

    def last_closed(self, at_ms: int) -> int:
        """Index of the last candle closed by `at_ms` (-1: none)."""
        return bisect.bisect_right(self.open_ms, at_ms - 1000) - 1

    def price_at(self, i: int, at_ms: int, now_ms: int) -> float:
        """The price at `at_ms`, candle `i` being the last closed by then: its close, moved
        toward the next candle's close by the part of that second gone by (the sim's maker
        reads its model's price so: linear between whole seconds). Never from a candle that
        closes after `now_ms`: with 1 s candles a 500 ms lag reads half a second back, not
        the whole second of the last candle closed by then."""
        price = self.closes[i]
        t = self.open_ms[i] + 1000  # when candle i closed
        if at_ms > t and i + 1 < len(self.closes) and self.open_ms[i + 1] == t and t + 1000 <= now_ms:
            price += (self.closes[i + 1] - price) * (at_ms - t) / 1000.0
        return price

    def vol_per_s(self, i: int, window_s: int, floor: float) -> float:
        lo = max(0, i - window_s)
        n = i - lo
        if n < 2:
            return floor
        s, q = self.s1[i] - self.s1[lo], self.s2[i] - self.s2[lo]
        var = (q - s * s / n) / (n - 1)
        return max(math.sqrt(var), floor) if var > 0 else floor


def noise_unit(*parts: object) -> float:
    """A seeded number in [0, 1) from the parts (the same parts, the same number: no random
    source, so a backtest repeats exactly)."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def fair_up(
    series: PriceSeries, open_price: float, start_ms: int, end_ms: int, now_ms: int, fp: FillParams
) -> float:
    """The model maker's chance that the window closes Up, as it sees it at `now_ms`."""
    view = now_ms - fp.lag_ms
    if view < start_ms or open_price <= 0:
        return 0.5
    i = series.last_closed(view)
    if i < 0:
        return 0.5
    price = series.price_at(i, view, now_ms)
    tau_s = max((end_ms - view) / 1000.0, 0.001)
    sigma = series.vol_per_s(i, fp.vol_window_s, fp.vol_floor)
    return _phi(math.log(price / open_price) / (sigma * math.sqrt(tau_s)))


def model_books(p_up: float, fp: FillParams) -> tuple[BookSide, BookSide]:
    """The model maker's (up, down) books at its chance of Up."""
    return _side(p_up, fp), _side(1.0 - p_up, fp)


def _side(p: float, fp: FillParams) -> BookSide:
    bid0, ask0 = touch(p, fp.spread)
    return _book(bid0, ask0, fp.levels, fp.depth_shares, fp.depth_step_shares)


# A book is a function of its touch and the depth parameters: made once for each (a model
# book for every evaluation was a quarter of a backtest's time). Frozen: shared safely.
@functools.lru_cache(maxsize=4096)
def _book(bid0: int, ask0: int, levels: int, depth: float, step: float) -> BookSide:
    bids, asks = _levels(bid0, ask0, levels)
    return BookSide(
        bids=tuple((t / TICKS_PER_UNIT, depth + step * k) for k, t in enumerate(bids)),
        asks=tuple((t / TICKS_PER_UNIT, depth + step * k) for k, t in enumerate(asks)),
    )


class BookSource(Protocol):
    """Books that were really there (the input log's), for a market at a time, or None."""

    def books(
        self, asset: str, timeframe: str, window_start_s: int, now_ms: int
    ) -> tuple[BookSide | None, BookSide | None] | None: ...


class RecordedBooks:
    """The books the input log recorded, by market (asset, timeframe, window): each
    evaluation's input holds the up and down books the live strategy was shown at its tick.
    A backtest tick uses the newest recorded at or before its time, at most `max_age_ms`
    old; none (a time no live slot of that market was evaluated at): the model's."""

    def __init__(
        self,
        records: Iterable[tuple[str, str, int, int, BookSide | None, BookSide | None]],
        max_age_ms: int = 5000,
    ) -> None:
        # (asset, timeframe, window start s) -> (times, books), sorted by time
        by_market: dict[tuple[str, str, int], dict[int, tuple[BookSide | None, BookSide | None]]] = {}
        for asset, tf, ws, at_ms, up, down in records:
            if up is None and down is None:
                continue
            by_market.setdefault((asset, tf, ws), {})[at_ms] = (up, down)
        self._times: dict[tuple[str, str, int], list[int]] = {}
        self._books: dict[tuple[str, str, int], list[tuple[BookSide | None, BookSide | None]]] = {}
        for key, got in by_market.items():
            times = sorted(got)
            self._times[key] = times
            self._books[key] = [got[t] for t in times]
        self.max_age_ms = max_age_ms

    def __len__(self) -> int:
        return sum(len(t) for t in self._times.values())

    def digest(self) -> str:
        """A hash of every book held and when (a run's id includes it: other recorded books,
        another backtest)."""
        h = hashlib.sha256()
        for key in sorted(self._times):
            h.update(msgspec.msgpack.encode([key, self._times[key], self._books[key]]))
        return h.hexdigest()

    def books(
        self, asset: str, timeframe: str, window_start_s: int, now_ms: int
    ) -> tuple[BookSide | None, BookSide | None] | None:
        key = (asset, timeframe, window_start_s)
        times = self._times.get(key)
        if not times:
            return None
        i = bisect.bisect_right(times, now_ms) - 1
        if i < 0 or now_ms - times[i] > self.max_age_ms:
            return None
        return self._books[key][i]


def signed_size(size: float) -> float:
    """The size the venue client signs for an order of `size` shares: py-clob-client-v2's
    order builder rounds it down to 2 decimals in float arithmetic (round_down: floor(size *
    100) / 100), which takes a size like 8.62 (862.0000... stored as 861.999...) to 8.61. The
    venue fills what was signed, so the backtest does too (the paper run's trades match)."""
    return math.floor(size * 100) / 100


class Match(msgspec.Struct, frozen=True):
    """What an order took: shares (micro), their cost in micro-USDC (at the levels' prices)."""

    shares_micro: int
    usd_micro: int

    @property
    def avg_price(self) -> float:
        return self.usd_micro / self.shares_micro if self.shares_micro > 0 else 0.0


NOTHING = Match(0, 0)


def match(
    book: BookSide | None, buy: bool, limit_price: float, shares_micro: int, at_price: float | None = None
) -> Match:
    """What an order of `shares_micro` at `limit_price` takes from `book` (the asks for a
    BUY, the bids for a SELL), best level first; `at_price` (a resting order, the maker) fills
    at its own price instead of the levels'."""
    if book is None or shares_micro <= 0:
        return NOTHING
    limit = round(limit_price * TICKS_PER_UNIT)
    left = shares_micro
    usd = 0
    for price, size in book.asks if buy else book.bids:
        t = round(price * TICKS_PER_UNIT)
        if (t > limit) if buy else (t < limit):
            break
        take = min(left, int(size * MICRO))
        px = at_price if at_price is not None else price
        usd += round(take * px)
        left -= take
        if left == 0:
            break
    return Match(shares_micro - left, usd)
