"""One asset's candle history as a backtest tick reads it: only what had closed by the tick's
time (a 1 s candle opening at t closes at t + 1 s), handed to the kernel's input builder as a
view that ends there (`CandleView`), so that the future is never in what it is given.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, overload

from kernel.backtest.fills import PriceSeries
from kernel.windows import up_won
from state.structs import MAX_PRICE, Candle, FeedStatus

CANDLE_MS = 1000


class CandleView(Sequence[Candle]):
    """An asset's candles [lo, hi) as the kernel's input builder reads a window of them, made
    from the history's columns as they are read (a tick reads up to an hour of 1 s candles per
    asset, of which the bars memo aggregates only the newest: copying them every tick was
    most of a backtest's time, and holding them as objects most of its memory)."""

    __slots__ = ("_h", "_hi", "_lo")

    def __init__(self, history: AssetHistory, lo: int, hi: int) -> None:
        self._h, self._lo, self._hi = history, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, i: int) -> Candle: ...
    @overload
    def __getitem__(self, i: slice) -> list[Candle]: ...
    def __getitem__(self, i: Any) -> Any:
        n = self._hi - self._lo
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            return (
                self._h.candles_between(self._lo + start, self._lo + stop)
                if stop > start and step == 1
                else ([self._h.candle(self._lo + k) for k in range(start, stop, step)])
            )
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("candle view index out of range")
        return self._h.candle(self._lo + i)

    def __iter__(self) -> Iterator[Candle]:
        return iter(self._h.candles_between(self._lo, self._hi))

    @property
    def newest_open_ms(self) -> int:
        return self._h.open_ms[self._hi - 1] if self._hi > self._lo else -1


class AssetHistory:
    """An asset's 1 s candles, sorted, one per open time (the last given wins), without those
    that are not klines (state/structs.py candle_problem's rule: the feed would refuse them),
    held as columns of C numbers (a day of 8 assets is 691,200 candles: as objects, about
    250 bytes each; as columns, 48)."""

    def __init__(self, asset: str, candles: Sequence[Candle]) -> None:
        self.asset = asset
        self.refused = 0
        kept: list[Candle] = []
        ordered = True
        last = -1
        for c in candles:
            o, h, lo, cl = c.open, c.high, c.low, c.close
            # candle_problem's rule, inlined (a day is 86,400 candles an asset): prices in
            # (0, MAX_PRICE), the high and low bounding the open and close. NaN fails it.
            if not (0.0 < lo <= o <= h < MAX_PRICE and lo <= cl <= h):
                self.refused += 1
                continue
            if c.open_ms <= last:
                ordered = False
            last = c.open_ms
            kept.append(c)
        if not ordered:
            by_open = {c.open_ms: c for c in kept}
            kept = [by_open[t] for t in sorted(by_open)]
        self.open_ms = array("q", [c.open_ms for c in kept])
        self.opens = array("d", [c.open for c in kept])
        self.highs = array("d", [c.high for c in kept])
        self.lows = array("d", [c.low for c in kept])
        self.closes = array("d", [c.close for c in kept])
        self.volumes = array("d", [c.volume for c in kept])
        self.series = PriceSeries(self.open_ms, self.closes)

    def __len__(self) -> int:
        return len(self.open_ms)

    def digest(self) -> str:
        """A hash of the candles held (every column, as bytes: a day of an asset in a few
        milliseconds): a run's id includes it, so other history is another backtest."""
        h = hashlib.sha256(f"{self.asset}:{len(self)}".encode())
        for col in (self.open_ms, self.opens, self.highs, self.lows, self.closes, self.volumes):
            h.update(col.tobytes())
        return h.hexdigest()

    def candle(self, i: int) -> Candle:
        return Candle(
            self.open_ms[i], self.opens[i], self.highs[i], self.lows[i], self.closes[i], self.volumes[i], True
        )

    def candles_between(self, lo: int, hi: int) -> list[Candle]:
        return list(
            map(
                Candle,
                self.open_ms[lo:hi],
                self.opens[lo:hi],
                self.highs[lo:hi],
                self.lows[lo:hi],
                self.closes[lo:hi],
                self.volumes[lo:hi],
                [True] * (hi - lo),
            )
        )

    def closed_by(self, now_ms: int) -> int:
        """How many candles had closed by `now_ms` (the index after the newest of them)."""
        return bisect.bisect_right(self.open_ms, now_ms - CANDLE_MS)

    def since(self, from_ms: int) -> int:
        return bisect.bisect_left(self.open_ms, from_ms)

    def at(self, open_ms: int) -> Candle | None:
        i = bisect.bisect_left(self.open_ms, open_ms)
        return self.candle(i) if i < len(self.open_ms) and self.open_ms[i] == open_ms else None

    def window_open(self, start_ms: int, now_ms: int) -> Candle | None:
        """The candle a window opens with, once it has closed by `now_ms` (as the live feed
        has written it by then: at the tick on the window's very start it has not, and the
        live tick builds no input for the window yet; nor does this)."""
        c = self.at(start_ms)
        return c if c is not None and c.open_ms + CANDLE_MS <= now_ms else None

    def feed_status(self, hi: int) -> FeedStatus | None:
        """What the feed would have reported with candles[:hi] written: their newest, written
        as it closed (a gap in the history makes the data stale, as a feed outage would)."""
        if hi <= 0:
            return None
        return FeedStatus(
            updated_ms=self.open_ms[hi - 1] + CANDLE_MS,
            last_open_ms=self.open_ms[hi - 1],
            last_close=self.closes[hi - 1],
        )

    def resolve(self, start_ms: int, end_ms: int) -> bool | None:
        """Whether the window [start, end) resolved Up: the price at its end (the close of the
        candle ending then, else the open of the one starting then) against the open of its
        first candle (kernel/windows.py up_won); None when the candles are not there."""
        first = self.at(start_ms)
        if first is None:
            return None
        last = self.at(end_ms - CANDLE_MS)
        if last is not None:
            return up_won(first.open, last.close)
        nxt = self.at(end_ms)
        return up_won(first.open, nxt.open) if nxt is not None else None
