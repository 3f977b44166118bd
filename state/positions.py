"""Positions: opened by a fill, reduced or closed by exits (sales before resolution), each
booked with its intent and the ledger in one fenced script (their settlement is
state/settlements.py's).

A position's `shares_micros` and `cost_micros` are what is still held and what it cost, fees
included: a sale takes its shares' cost away pro rata (`sale`), so a settlement pays on the
shares still held and its PnL is against the cost still held.
"""

from __future__ import annotations

from typing import Any

import msgspec

from baton.errors import BookingError
from state.ledger import utc_day
from state.repo import Repo
from state.structs import INTENT, MICROS, POSITION, Intent, Position


class ExitBooking(msgspec.Struct, frozen=True, kw_only=True):
    """What one exit's fill does to its position and the ledger (`sale`)."""

    position: Position  # after the sale ("closed" when nothing is left)
    sold_shares_micros: int  # this sale's shares
    proceeds_micros: int  # what the sale brought in, net of its fee (the ledger's amount)
    fee_micros: int
    pnl_micros: int  # proceeds - what the shares sold had cost
    at_ms: int

    @property
    def shares_before_micros(self) -> int:
        """What the position held when the booking was computed (record_exit.lua's fence)."""
        return self.position.shares_micros + self.sold_shares_micros


def position_id(intent: Intent) -> str:
    """The id of the position an intent belongs to: its slot-window."""
    return f"{intent.slot}:{intent.window_start_s}"


def sale(position: Position, intent: Intent, now_ms: int) -> ExitBooking:
    """Book an exit intent's fill (filled_size at avg_price, fee_micros) against `position`.

    The shares sold take their cost with them pro rata, in integer micros: the cost taken is
    floored, and the last sale takes whatever is left, so costs taken plus cost held always
    add up to what was paid. Raises BookingError, naming what is wrong, for a fill that
    cannot be this position's sale; nothing is booked then.
    """
    where = f"exit {intent.id} of position {position.id}"
    if not intent.is_exit:
        raise BookingError(f"{where}: leg {intent.leg!r} is not an exit leg")
    if position_id(intent) != position.id:
        raise BookingError(f"{where}: the intent belongs to position {position_id(intent)}")
    if position.status != "open":
        raise BookingError(f"{where}: the position is {position.status}, not open")
    sold = round(intent.filled_size * MICROS)
    if sold <= 0:
        raise BookingError(f"{where}: filled size {intent.filled_size!r} sells nothing")
    if sold > position.shares_micros:
        raise BookingError(
            f"{where}: sells {sold / MICROS:g} shares, the position holds {position.shares_micros / MICROS:g}"
        )
    if not 0 < intent.avg_price < 1:
        raise BookingError(f"{where}: average price {intent.avg_price!r} is not in (0, 1)")
    gross = round(sold * intent.avg_price)
    fee = intent.fee_micros
    if not 0 <= fee <= gross:
        raise BookingError(f"{where}: fee of {fee} micros is not within the sale's {gross} micros")
    proceeds = gross - fee
    left = position.shares_micros - sold
    cost_sold = position.cost_micros if left == 0 else position.cost_micros * sold // position.shares_micros
    pnl = proceeds - cost_sold
    after = msgspec.structs.replace(
        position,
        status="closed" if left == 0 else "open",
        shares_micros=left,
        cost_micros=position.cost_micros - cost_sold,
        sold_shares_micros=position.sold_shares_micros + sold,
        proceeds_micros=position.proceeds_micros + proceeds,
        fees_micros=position.fees_micros + fee,
        exit_pnl_micros=position.exit_pnl_micros + pnl,
        exits=position.exits + 1,
    )
    return ExitBooking(
        position=after,
        sold_shares_micros=sold,
        proceeds_micros=proceeds,
        fee_micros=fee,
        pnl_micros=pnl,
        at_ms=now_ms,
    )


class PositionsRepo(Repo):
    def record_fills(self, epoch: int, fills: list[tuple[Intent, Position]], pipeline: Any = None) -> Any:
        """Book buy fills in one fenced call (record_fill.lua): one verdict per fill. The
        position's cost includes the intent's fee (fee_micros), which the ledger's entry names."""
        args: list[Any] = [epoch]
        for intent, position in fills:
            args += (
                intent.id,
                INTENT.encode(intent),
                position.id,
                POSITION.encode(position),
                position.cost_micros,
                position.opened_ms,
                intent.fee_micros,
            )
        return self._call(self.scripts.record_fill, keys=self._booking_keys(), args=args, pipeline=pipeline)

    def _booking_keys(self) -> list[str]:
        """The keys a fill's or a sale's booking writes (record_fill.lua, record_exit.lua:
        KEYS[1..9], in this order)."""
        k = self.k
        return [
            k.lease_epoch(),
            k.intents(),
            k.intents_open(),
            k.positions(),
            k.positions_open(),
            k.ledger(),
            k.ledger_totals(),
            k.ledger_refs(),
            k.counts(),
        ]

    async def record_fill(self, epoch: int, intent: Intent, position: Position) -> str:
        return str((await self.record_fills(epoch, [(intent, position)]))[0])

    def record_exits(self, epoch: int, exits: list[tuple[Intent, ExitBooking]], pipeline: Any = None) -> Any:
        """Book exits' fills in one fenced call (record_exit.lua): the intent (final), the
        position as the sale left it, and a `sell` ledger entry, at most once per intent.

        One verdict per exit: 'OK'; 'STALE_EPOCH'; 'ALREADY' (booked before: nothing changes);
        'SETTLED' (the position is no longer open: settled, or closed by other sales; nothing
        written); 'CHANGED' (the position is not the one the booking was computed from: read
        it again and compute again; nothing written, the intent stays open and is booked by
        reconciliation). Two exits of one position in one call: compute the second from the
        first's `position`. A value it cannot use raises UnreadableValue (or stands as one in
        a pipeline's results), having written nothing.
        """
        keys = self._booking_keys()
        args: list[Any] = [epoch]
        for intent, b in exits:
            keys.append(self.k.ledger_day(utc_day(b.at_ms)))
            args += (
                intent.id,
                INTENT.encode(intent),
                b.position.id,
                POSITION.encode(b.position),
                b.shares_before_micros,
                b.position.exits - 1,
                b.proceeds_micros,
                b.fee_micros,
                b.pnl_micros,
                b.at_ms,
            )
        return self._call(self.scripts.record_exit, keys=keys, args=args, pipeline=pipeline)

    async def record_exit(self, epoch: int, intent: Intent, booking: ExitBooking) -> str:
        return str((await self.record_exits(epoch, [(intent, booking)]))[0])

    async def read_positions(self, open_only: bool = False) -> list[Position]:
        raw = await self.r.hgetall(self.k.positions_open() if open_only else self.k.positions())
        return [POSITION.decode(v) for v in raw.values()]
