"""The backtest's account: cash, open positions, resting orders, the day's realised PnL, and
every trade. Bookings go through the kernel's own rules: a venue answer becomes a position or
a sale as kernel/outcomes.py makes it (cost = shares x average price + the taker fee), a sale
is booked as state/positions.py `sale` books it (its cost taken pro rata, proceeds net of the
fee), and a window is settled as kernel/settlement.py `settled` settles it (the winner pays
$1 a share), resolved by kernel/windows.py `up_won` from the reference candles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kernel.backtest.fills import MICRO, Match
from kernel.backtest.types import SlotReport, Trade
from kernel.fees import taker_fee_usd
from kernel.outcomes import Tally, outcome
from kernel.settlement import settled
from kernel.venue import OrderResult
from state.ledger import utc_day
from state.positions import sale
from state.structs import MICROS, Intent, Position


@dataclass
class Resting:
    """An order that rests at the venue (GTC/GTD): what it matched so far, and the taker fee
    of what it took on arrival (what it makes later pays none)."""

    intent: Intent
    matched_micro: int
    usd_micro: int
    fee_usd: float
    ends_ms: int  # the window's end, or a GTD's expiry
    checked_s: int = 0  # the last second whose book it was matched against


@dataclass
class _Open:
    """What a position's trade record needs beyond the position itself."""

    shares: float
    cost_usd: float
    fees_usd: float
    proceeds_usd: float = 0.0


@dataclass
class Ledger:
    cash_micros: int
    start_ms: int
    positions: dict[str, Position] = field(default_factory=dict)
    resting: list[Resting] = field(default_factory=list)
    day_pnl: dict[str, int] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    slots: dict[str, SlotReport] = field(default_factory=dict)
    equity: list[tuple[int, float]] = field(default_factory=list)
    unresolved: int = 0
    problems: list[str] = field(default_factory=list)
    _open: dict[str, _Open] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.equity.append((self.start_ms, self.cash_micros / MICROS))

    def day_pnl_micros(self, now_ms: int) -> int:
        return self.day_pnl.get(utc_day(now_ms), 0)

    def _mark(self, at_ms: int) -> None:
        """An equity point: cash plus what open positions cost (held at cost until they end)."""
        eq = (self.cash_micros + sum(p.cost_micros for p in self.positions.values())) / MICROS
        # Never back in time: what one tick books (a resting order cancelled at its window's
        # end, a settlement at another's) may be dated a little out of order.
        at_ms = max(at_ms, self.equity[-1][0]) if self.equity else at_ms
        if self.equity and self.equity[-1][0] == at_ms:
            self.equity[-1] = (at_ms, eq)
        elif not self.equity or self.equity[-1][1] != eq:
            self.equity.append((at_ms, eq))

    def answer(self, intent: Intent, res: OrderResult, now_ms: int) -> bool:
        """Book a final venue answer for `intent` as the kernel books one (kernel/outcomes.py):
        True when the book could not fill it (an outcome, counted as unfilled)."""
        updates: list[Intent] = []
        fills: list[tuple[Intent, Position]] = []
        sells: list[Intent] = []
        problems: list[str] = []
        tally = Tally()
        outcome(intent, res, now_ms, updates, fills, problems, sells, tally)
        self.problems += problems
        for done, p in fills:
            self.positions[p.id] = p
            self.cash_micros -= p.cost_micros
            self._open[p.id] = _Open(
                p.shares_micros / MICROS, p.cost_micros / MICROS, done.fee_micros / MICROS
            )
            self._mark(now_ms)
        for done in sells:
            self._sell(done, now_ms)
        return tally.unfilled > 0

    def _sell(self, done: Intent, now_ms: int) -> None:
        pid = f"{done.slot}:{done.window_start_s}"
        p = self.positions.get(pid)
        if p is None:
            self.problems.append(f"{done.id}: sold, but position {pid} is not open")
            return
        booked = sale(p, done, now_ms)
        self.cash_micros += booked.proceeds_micros
        self._book_pnl(now_ms, booked.pnl_micros)
        rec = self._open[pid]
        rec.fees_usd += booked.fee_micros / MICROS
        rec.proceeds_usd += booked.proceeds_micros / MICROS
        if booked.position.status == "closed":
            del self.positions[pid]
            self._end(booked.position, now_ms, "sold", None, 0.0)
        else:
            self.positions[pid] = booked.position
        self._mark(now_ms)

    def _book_pnl(self, at_ms: int, pnl_micros: int) -> None:
        day = utc_day(at_ms)
        self.day_pnl[day] = self.day_pnl.get(day, 0) + pnl_micros

    def settle(self, p: Position, up: bool | None, at_ms: int) -> None:
        """The window of `p` has ended: pay the winner (None: it cannot be resolved from the
        candles; the position leaves the account unpaid and out of the PnL)."""
        del self.positions[p.id]
        if up is None:
            self.unresolved += 1
            self.cash_micros += p.cost_micros  # out of the PnL: as if never bought
            self._end(p, at_ms, "unresolved", None, 0.0)
            self._mark(at_ms)
            return
        done = settled(p, up, at_ms)
        self.cash_micros += done.payout_micros
        self._book_pnl(at_ms, done.pnl_micros)
        self._end(done, at_ms, "settled", done.won, done.payout_micros / MICROS)
        self._mark(at_ms)

    def _end(self, p: Position, at_ms: int, end: str, won: bool | None, payout_usd: float) -> None:
        rec = self._open.pop(p.id)
        pnl = 0.0 if end == "unresolved" else rec.proceeds_usd + payout_usd - rec.cost_usd
        t = Trade(
            slot=p.slot,
            window_start_s=p.window_start_s,
            side=p.side,
            opened_ms=p.opened_ms,
            closed_ms=at_ms,
            shares=rec.shares,
            cost_usd=round(rec.cost_usd, 6),
            fees_usd=round(rec.fees_usd, 6),
            proceeds_usd=round(rec.proceeds_usd, 6),
            payout_usd=round(payout_usd, 6),
            pnl_usd=round(pnl, 6),
            end=end,
            won=won if end == "settled" else (pnl > 0 if end == "sold" else None),
        )
        self.trades.append(t)
        if end == "unresolved":
            return
        s = self.slots[p.slot]
        s.trades += 1
        s.pnl_usd += pnl
        s.fees_usd += rec.fees_usd
        if pnl > 0:
            s.wins += 1
        else:
            s.losses += 1


def result(
    intent: Intent, m: Match, final: bool, fee: tuple[float, float], taker: bool = True
) -> OrderResult:
    """The venue's answer to an order that took `m`: "matched" when it is all filled or the
    order is final (a FAK's rest killed), "unmatched" when nothing filled and it is final."""
    shares = m.shares_micro / MICRO
    avg = m.avg_price
    fee_usd = taker_fee_usd(shares, avg, *fee) if taker and shares > 0 else 0.0
    status = "matched" if shares > 0 else "unmatched"
    if not final and shares + 1e-9 < intent.size:
        status = "live"
    return OrderResult(
        order_id=intent.id,
        status=status,
        size_matched=shares,
        price=intent.limit_price,
        avg_price=avg,
        fee_usd=fee_usd,
        error="" if shares > 0 else f"{intent.order_type}: the book had nothing at {intent.limit_price:g}",
    )
