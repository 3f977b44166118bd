"""The backtest's venue: the markets of its windows, their books at a tick (the input log's where
it recorded some, else the model maker's: kernel/backtest/fills.py), the orders posted to them
and the resting ones, and the end of each window (its resting orders cancelled, its positions
settled by the reference candles). Its answers are booked by kernel/backtest/ledger.py as the
kernel books a venue's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from kernel.backtest.fills import MICRO, BookSource, fair_up, match, model_books, noise_unit, signed_size
from kernel.backtest.history import AssetHistory
from kernel.backtest.ledger import Ledger, Resting, result
from kernel.backtest.types import BacktestConfig
from kernel.slot_list import SlotRef
from kernel.venue import OrderResult
from state.structs import Intent, Market, Slot


class Venue:
    def __init__(
        self,
        config: BacktestConfig,
        hist: Mapping[str, AssetHistory],
        ledger: Ledger,
        slots: Mapping[str, Slot],
        books: BookSource | None,
    ) -> None:
        self.c = config
        self.fp = config.fills
        self.hist = hist
        self.ledger = ledger
        self.slots = slots
        self.recorded_books = books
        self.recorded = 0  # books handed to evaluations: from the input log,
        self.modelled = 0  # and from the model
        # The books of the current tick by market: slots of one market share them.
        self._tick: dict[tuple[str, str, int], tuple[Any, Any, bool]] = {}
        self._at = -1

    def market(self, ref: SlotRef) -> Market:
        fee = self.c.fees.get(ref.timeframe)
        return Market(
            slug=ref.slug,
            condition_id=ref.slug,
            up_token=f"{ref.slug}:up",
            down_token=f"{ref.slug}:down",
            min_size=self.fp.min_order_shares,
            fee_rate=fee.rate if fee is not None else 0.0,
        )

    def fee(self, timeframe: str) -> tuple[float, float]:
        fee = self.c.fees.get(timeframe)
        return (fee.rate, fee.exponent) if fee is not None else (0.0, 0.0)

    def books(self, asset: str, timeframe: str, start_s: int, end_s: int, now: int) -> tuple[Any, Any, bool]:
        """(up book, down book, recorded?) of a market at `now`: the input log's, else the model's
        (kept for the tick: the slots of one market share them)."""
        if self._at != now:
            self._tick, self._at = {}, now
        key = (asset, timeframe, start_s)
        got = self._tick.get(key)
        if got is None:
            got = self._tick[key] = self.book_at(asset, timeframe, start_s, end_s, now)
        return got

    def book_at(
        self, asset: str, timeframe: str, start_s: int, end_s: int, at_ms: int
    ) -> tuple[Any, Any, bool]:
        src = self.recorded_books
        rec = src.books(asset, timeframe, start_s, at_ms) if src is not None else None
        if rec is not None:
            return rec[0], rec[1], True
        h = self.hist[asset]
        first = h.at(start_s * 1000)
        p_up = fair_up(h.series, first.open if first else 0.0, start_s * 1000, end_s * 1000, at_ms, self.fp)
        if self.fp.noise > 0 and at_ms - self.fp.lag_ms >= start_s * 1000:
            u = noise_unit(asset, timeframe, start_s, at_ms // 1000)
            p_up = min(1.0, max(0.0, p_up + (2.0 * u - 1.0) * self.fp.noise))
        up, down = model_books(p_up, self.fp)
        return up, down, False

    def post(self, intent: Intent, book: Any, now: int, timeframe: str, window_end_s: int) -> bool:
        """Post `intent` against `book`: what crosses fills now (the taker, who pays the fee); a
        FOK that cannot fill whole, or a FAK that fills nothing, is killed; what a GTC/GTD does
        not fill rests. True when the book could not fill it (an outcome: unfilled)."""
        buy = not intent.is_exit
        want = round(signed_size(intent.size) * MICRO)
        got = match(book, buy, intent.limit_price, want)
        fee = self.fee(timeframe)
        if intent.order_type == "FOK" and got.shares_micro < want:
            got = match(None, buy, 0.0, 0)
        if intent.order_type not in ("GTC", "GTD") or got.shares_micro >= want:
            return self.ledger.answer(intent, result(intent, got, True, fee), now)
        ends = window_end_s * 1000
        if intent.order_type == "GTD" and intent.expires_s:
            ends = min(ends, intent.expires_s * 1000)
        fee_usd = result(intent, got, True, fee).fee_usd
        posted = msgspec.structs.replace(intent, status="posted")
        # Matched against the book of its arrival second on arrival: its walk starts after it.
        self.ledger.resting.append(
            Resting(posted, got.shares_micro, got.usd_micro, fee_usd, ends, now // 1000)
        )
        return False

    def match_resting(self, now: int) -> None:
        """The resting orders meet the book of every second since they last did, up to `now`
        (as the sim's exchange walks them: sim/resting.py), at their own price (the maker: no
        fee), at most what the crossing levels hold each second. One filled whole is booked
        now (the kernel learns it when it asks, at the tick); one whose window (or GTD
        expiry) has ended is cancelled, what it matched booked, at its end."""
        keep: list[Resting] = []
        for r in self.ledger.resting:
            i = r.intent
            tf = self.slots[i.slot].timeframe
            size = round(signed_size(i.size) * MICRO)
            last_s = min(now // 1000, r.ends_ms // 1000 - 1)
            while r.matched_micro < size and r.checked_s < last_s:
                r.checked_s += 1
                up, down, _ = self.book_at(i.asset, tf, i.window_start_s, i.window_end_s, r.checked_s * 1000)
                got = match(
                    up if i.side == "up" else down,
                    not i.is_exit,
                    i.limit_price,
                    size - r.matched_micro,
                    at_price=i.limit_price,
                )
                r.matched_micro += got.shares_micro
                r.usd_micro += got.usd_micro
            if r.matched_micro >= size:
                self._final(r, "matched", now)
            elif r.ends_ms <= now:
                self._final(r, "canceled", r.ends_ms)
            else:
                keep.append(r)
        self.ledger.resting = keep

    def _final(self, r: Resting, status: str, at_ms: int) -> None:
        shares = r.matched_micro / MICRO
        res = OrderResult(
            order_id=r.intent.id,
            status=status,
            size_matched=shares,
            price=r.intent.limit_price,
            avg_price=r.usd_micro / r.matched_micro if r.matched_micro else 0.0,
            fee_usd=r.fee_usd,
            error="" if shares else f"{r.intent.order_type}: ended unfilled",
        )
        if self.ledger.answer(r.intent, res, at_ms):
            self.ledger.slots[r.intent.slot].unfilled += 1

    def close_ended(self, now: int) -> None:
        """The resting orders walked up to `now` (match_resting: those whose window has ended
        are cancelled), then the positions whose window has ended settled, at its end."""
        if self.ledger.resting:
            self.match_resting(now)
        due = [p for p in self.ledger.positions.values() if p.window_end_s * 1000 <= now]
        for p in sorted(due, key=lambda p: (p.window_end_s, p.id)):
            up = self.hist[p.asset].resolve(p.window_start_s * 1000, p.window_end_s * 1000)
            self.ledger.settle(p, up, p.window_end_s * 1000)

    def finish(self, to_ms: int) -> None:
        """The period's end: windows that ended by then are settled; what still rests is
        cancelled; a position whose window ends later is settled when the candles reach its
        end, else it is unresolved (out of the PnL)."""
        self.close_ended(to_ms)
        for r in self.ledger.resting:
            self._final(r, "canceled", max(to_ms, r.intent.created_ms))
        self.ledger.resting = []
        for p in sorted(self.ledger.positions.values(), key=lambda p: (p.window_end_s, p.id)):
            up = self.hist[p.asset].resolve(p.window_start_s * 1000, p.window_end_s * 1000)
            self.ledger.settle(p, up, p.window_end_s * 1000)
