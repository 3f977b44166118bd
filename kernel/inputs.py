"""A strategy's input (kernel/strategy_api.py SlotInput, version 2): built for a slot from the
tick's snapshot, its books added once they are read. What the inputs of one tick share (the
account's cash and room, the slots' positions, bars of an asset) is worked out once per tick,
and only when an awake slot asks for it: a slot asleep costs nothing here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import msgspec

from kernel.candle_cache import declared_candles
from kernel.risk import Account
from kernel.snapshot import SlotRef, Snapshot
from kernel.strategy_api import API_VERSION, INTERVALS_S, Bar, BookSide, Holding, SlotInput
from state.structs import EXIT_LEG_PREFIX, MICROS, Candle, Intent, Position, feed_stale


def account(snap: Snapshot, now_ms: int) -> Account:
    """The account the risk checks go by. Intents of past windows whose outcome is unknown
    wait for reconciliation; only those of live windows still hold cash back."""
    pending = sum(round(i.stake_usd * MICROS) for i in snap.open_intents if i.window_end_s * 1000 > now_ms)
    return Account(
        cash_micros=snap.totals.get("cash_micros", 0),
        open_exposure_micros=sum(p.cost_micros for p in snap.open_positions) + pending,
        day_pnl_micros=snap.day_pnl_micros,
        pending_micros=pending,
    )


def _open_ms(c: Candle) -> int:
    return c.open_ms


def bars_from_candles(candles: Sequence[Candle], interval_s: int, n: int, now_ms: int) -> tuple[Bar, ...]:
    """The last `n` bars of `interval_s` seconds up to `now_ms`, oldest first, aggregated from
    1 s candles sorted by open time. Bars are aligned on the epoch (a 1m bar opens on a whole
    minute) and cover the `n` intervals up to the one `now_ms` is in, which is still forming;
    an interval without candles has no bar (fewer bars, never a made-up one). A candle opening
    after `now_ms` is not data yet and is never in a bar."""
    if n <= 0 or not candles:
        return ()
    iv = interval_s * 1000
    hi = bisect.bisect_right(candles, now_ms, key=_open_ms)
    return tuple(_aggregate(candles, iv, now_ms - now_ms % iv - (n - 1) * iv, hi))


def _aggregate(candles: Sequence[Candle], iv: int, from_ms: int, hi: int) -> list[Bar]:
    """Bars of `iv` ms from the candles[:hi] opening at `from_ms` or later."""
    lo = bisect.bisect_left(candles, from_ms, 0, hi, key=_open_ms)
    if iv == 1000:
        return [
            Bar(c.open_ms - c.open_ms % iv, c.open, c.high, c.low, c.close, c.volume) for c in candles[lo:hi]
        ]
    out: list[Bar] = []
    start = -1
    o = h = low = cl = vol = 0.0
    for c in candles[lo:hi]:
        s = c.open_ms - c.open_ms % iv
        if s != start:
            if start >= 0:
                out.append(Bar(start, o, h, low, cl, vol))
            start, o, h, low, cl, vol = s, c.open, c.high, c.low, c.close, c.volume
        else:
            h = c.high if c.high > h else h
            low = c.low if c.low < low else low
            cl = c.close
            vol += c.volume
    if start >= 0:
        out.append(Bar(start, o, h, low, cl, vol))
    return out


def _bar_open_ms(b: Bar) -> int:
    return b.open_ms


class BarMemo:
    """Bars kept from tick to tick: a 1m series of an hour is 3,600 candles to aggregate, and
    only its newest bar changes in a second. Per asset, interval and count, the bars complete
    before the bucket of the newest candle are kept with the generation of the candle copy
    they were built from (kernel/candle_cache.py CandleCache.gen): while it is the same, only
    the newest candle changed and newer ones were added, so those bars still hold; the rest
    is aggregated again. Without a generation (a window the cache does not keep) every call
    builds from scratch. Equal to bars_from_candles, always (tests/fast/test_inputs.py)."""

    def __init__(self) -> None:
        # (asset, interval_s, n) -> (generation, complete bars, their end: the newest's bucket)
        self._done: dict[tuple[str, int, int], tuple[int, list[Bar], int]] = {}

    def bars(
        self, asset: str, gen: int | None, candles: Sequence[Candle], interval_s: int, n: int, now_ms: int
    ) -> tuple[Bar, ...]:
        if gen is None or n <= 0 or not candles:
            return bars_from_candles(candles, interval_s, n, now_ms)
        iv = interval_s * 1000
        oldest = now_ms - now_ms % iv - (n - 1) * iv
        hi = bisect.bisect_right(candles, now_ms, key=_open_ms)
        if hi == 0:
            return ()
        newest = candles[hi - 1].open_ms
        complete_to = newest - newest % iv  # buckets before the newest candle's are complete
        key = (asset, interval_s, n)
        kept: list[Bar] = []
        start = oldest
        got = self._done.get(key)
        if got is not None and got[0] == gen and got[2] <= complete_to:
            kept = got[1][bisect.bisect_left(got[1], oldest, key=_bar_open_ms) :]
            start = max(oldest, got[2])
        out = kept + _aggregate(candles, iv, start, hi)
        done = bisect.bisect_left(out, complete_to, key=_bar_open_ms)
        self._done[key] = (gen, out[:done], complete_to)
        return tuple(out)


def book_side(book: Any) -> BookSide | None:
    """A venue Book (kernel/venue.py) as a strategy sees it, every level kept; None: no book.
    The venues build levels as (price, size) tuples: the copy is of the two lists only."""
    if book is None:
        return None
    if isinstance(book, BookSide):
        return book
    return BookSide(tuple(book.bids), tuple(book.asks))  # (positional: bids, asks)


def with_asks(inp: SlotInput, up: Any, down: Any) -> SlotInput:
    """The input with the books read for its market: the best asks (version 1) and both
    books with their depth (version 2); None: no book."""
    # (book_side and BookSide.best_ask inlined: a tick does this for every slot it evaluates)
    up_side = None if up is None else up if type(up) is BookSide else book_side(up)
    down_side = None if down is None else down if type(down) is BookSide else book_side(down)
    return msgspec.structs.replace(
        inp,
        up_ask=up_side.asks[0][0] if up_side is not None and up_side.asks else None,
        down_ask=down_side.asks[0][0] if down_side is not None and down_side.asks else None,
        up_book=up_side,
        down_book=down_side,
    )


def holding(position: Position | None, exits: Sequence[Intent], legs: int | None = None) -> Holding | None:
    """The slot's position as a strategy sees it: what is held now, and its exit legs.

    `exits` are the slot-window's open (not final) exit intents; `legs` the exit legs the
    kernel knows were committed in the window (kernel/exits.py ExitLegs; None: not known).
    Without it, the highest leg number among the open ones and the legs booked on the
    position tell how many were committed, but a leg that ended without a fill leaves
    neither: the count is then a lower bound (the kernel numbers the next leg itself)."""
    if position is None or position.status != "open" or position.shares_micros <= 0:
        return None
    numbers = [_leg_number(i.leg) for i in exits]
    shares = position.shares_micros / MICROS
    cost = position.cost_micros / MICROS
    return Holding(
        side=position.side,
        shares=shares,
        cost_usd=cost,
        avg_price=cost / shares,
        opened_ms=position.opened_ms,
        exits=max([position.exits, *numbers, legs or 0]),
        exit_pending=bool(exits),
    )


def _leg_number(leg: str) -> int:
    tail = leg.removeprefix(EXIT_LEG_PREFIX)
    return int(tail) if tail.isdigit() else 0


_NO_BARS: dict[str, tuple[Bar, ...]] = {}  # a marker: each input gets a dict of its own


class TickInputs:
    """The inputs of one tick's slots, from its snapshot. What slots share is computed on first
    use and kept for the tick: the account's cash and exposure room, the open positions and
    exit intents by slot-window, each asset's bars per interval and count."""

    def __init__(
        self,
        snap: Snapshot,
        now_ms: int,
        stale_after_ms: int,
        max_exposure_usd: float | None = None,
        memo: BarMemo | None = None,
    ) -> None:
        self.snap = snap
        # Bars kept between ticks: the previous tick's TickInputs hands its memo on.
        self.memo = memo if memo is not None else BarMemo()
        self.now_ms = now_ms
        self.stale_after_ms = stale_after_ms
        self.max_exposure_usd = max_exposure_usd
        self._account: tuple[float, float] | None = None
        self._positions: dict[tuple[str, int], Position] | None = None
        self._exits: dict[tuple[str, int], list[Intent]] = {}
        self._entries: set[tuple[str, int]] = set()
        self._bars: dict[tuple[str, str, int], tuple[Bar, ...]] = {}
        self._candles: dict[int, dict[str, int]] = {}  # id(module) -> its CANDLES as served
        self._modules: list[Any] = []  # keeps the ids above from being reused within the tick
        # An input with what is the same for every slot of the tick (its time, the version,
        # the account's cash and room; no books yet); each slot's input replaces every other
        # field of it (slot()).
        self._template: SlotInput | None = None

    def slot(
        self, ref: SlotRef, strat: Any = None, entered: bool = False, exit_legs: int | None = None
    ) -> SlotInput | None:
        """The slot's input without books (with_asks adds them), or None when the slot is
        disabled and holds nothing in its window, or its data is missing or stale. `strat`
        is its strategy module (its CANDLES say which bars to build; None: none); `entered`:
        the caller knows the slot's entry intent of this window is in Redis (the snapshot's
        open records say so otherwise); `exit_legs`: the exit legs the caller knows were
        committed in the window (holding)."""
        snap = self.snap
        slot = snap.slots.get(ref.id)
        if slot is None:
            return None
        open_c = snap.opens.get(ref.id)
        recent = snap.recent.get(ref.asset) or []
        if open_c is None or not recent:
            return None
        if self._account is None:
            self._prepare()
        key = (ref.id, ref.window_start_s)
        position = self._positions.get(key)  # type: ignore[union-attr]
        if position is None and feed_stale(snap.feed.get(ref.asset), self.now_ms, self.stale_after_ms):
            # Stale data never opens a position; a position held is still evaluated, with
            # the candles there are (their open_ms say how old): a stop loss on the book's
            # bid must not wait for the price feed (kernel/exits.py).
            return None
        if not slot.enabled and position is None:
            return None  # a disabled slot only exits what it holds
        bars = _NO_BARS
        if strat is not None:
            declared = self._candles.get(id(strat))
            if declared is None:
                declared = self._declared(strat)
            if declared:
                bars = {iv: self.bars(ref.asset, iv, n) for iv, n in declared.items()}
        # The tick's template with every other field set: msgspec's replace() takes half the
        # time of a constructor given all 23 fields by keyword (a thousand inputs a tick).
        template = self._template
        assert template is not None  # (set by _prepare, with the account)
        return msgspec.structs.replace(
            template,
            slot_id=ref.id,
            asset=ref.asset,
            timeframe=ref.timeframe,
            window_start_ms=ref.window_start_s * 1000,
            window_end_ms=ref.window_end_s * 1000,
            open_price=open_c.open,
            last_price=recent[-1].close,
            closes=snap.closes(ref.asset),
            stake_usd=slot.stake_usd,
            params=dict(slot.params),
            strategy=slot.strategy,
            bars=bars if bars is not _NO_BARS else {},
            position=holding(position, self._exits.get(key, ()), exit_legs) if position is not None else None,
            entered=entered or position is not None or key in self._entries,
            # Until a reference feed (Chainlink) exists, the venue's open is the Binance one.
            open_ref_price=open_c.open,
        )

    def bars(self, asset: str, interval: str, n: int) -> tuple[Bar, ...]:
        """`n` bars of `interval` (a key of INTERVALS_S) of `asset`, memoised for the tick."""
        key = (asset, interval, n)
        got = self._bars.get(key)
        if got is None:
            candles = self.snap.recent.get(asset) or []
            gen = self.snap.candle_gens.get(asset)
            got = self._bars[key] = self.memo.bars(asset, gen, candles, INTERVALS_S[interval], n, self.now_ms)
        return got

    def _declared(self, strat: Any) -> dict[str, int]:
        declared = self._candles[id(strat)] = declared_candles(strat)
        self._modules.append(strat)
        return declared

    def _prepare(self) -> None:
        """What the tick's inputs share: the account's cash and room, and the open positions,
        entry intents and exit intents by slot-window (one pass over each)."""
        acct = account(self.snap, self.now_ms)
        room = 0.0
        if self.max_exposure_usd is not None and math.isfinite(self.max_exposure_usd):
            room = max(0.0, self.max_exposure_usd - acct.open_exposure_micros / MICROS)
        self._account = (acct.cash_micros / MICROS, room)
        self._template = SlotInput(
            slot_id="",
            asset="",
            timeframe="",
            now_ms=self.now_ms,
            window_start_ms=0,
            window_end_ms=0,
            open_price=0.0,
            last_price=0.0,
            closes=(),
            stake_usd=0.0,
            params={},
            api=API_VERSION,
            cash_usd=self._account[0],
            exposure_room_usd=room,
        )
        self._positions = {
            (p.slot, p.window_start_s): p for p in self.snap.open_positions if p.status == "open"
        }
        for i in self.snap.open_intents:
            key = (i.slot, i.window_start_s)
            if i.is_exit:
                self._exits.setdefault(key, []).append(i)
            else:
                self._entries.add(key)
