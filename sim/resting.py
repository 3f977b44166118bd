"""The sim's resting orders (GTC, GTD): what they hold back of their makers' funds, and their
matching later, as the maker's book moves across them.

Why here and not in the maker's book: the sim's book is regenerated from the price model for
every second (sim/book.py), so a resting order is matched by walking the seconds it has rested
through, each second's book in turn, as if the venue had matched it then: a BUY takes the asks
at or below its price, a SELL the bids at or above it, at its own price (it is the maker: no
fee), at most what those levels hold that second (the rest waits for the next). The walk runs
before every request (sim/clob.py), so nothing reads balances or orders the walk has not
caught up with; it stops at the order's end (its market's end, a GTD order's expiry).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from sim.accounts import Accounts
from sim.book import TICKS_PER_UNIT
from sim.order_record import MICRO, SimOrder, trade

# (bids, asks) of a token at a time in ms, best first, as (tick, shares) levels.
BookAt = Callable[[SimOrder, int], tuple[list, list]]


class Resting:
    def __init__(self, accounts: Accounts, book_at: BookAt) -> None:
        self.accounts = accounts
        self._book_at = book_at
        # Resting orders by maker address (lowercase).
        self._by_maker: dict[str, dict[str, SimOrder]] = {}

    def add(self, order: SimOrder, now_s: int) -> None:
        order.checked_s = now_s  # its arrival second's book was matched on arrival
        self._by_maker.setdefault(order.maker.lower(), {})[order.id] = order

    def _all(self) -> list[SimOrder]:
        return [o for orders in self._by_maker.values() for o in orders.values()]

    def sweep(self, now_ms: int, trades: dict[str, dict]) -> None:
        """Match every resting order against the books of the seconds since it was last
        matched, up to `now_ms`, and forget the orders that rest no more."""
        now_s = now_ms // 1000
        for order in sorted(self._all(), key=lambda o: (o.received_ms, o.id)):
            last_s = min(now_s, order.live_until_s() - 1)
            while order.status == "LIVE" and order.checked_s < last_s:
                order.checked_s += 1
                self._match(order, order.checked_s, trades)
        for orders in self._by_maker.values():
            for oid in [k for k, o in orders.items() if not o.resting(now_s)]:
                del orders[oid]

    def _match(self, order: SimOrder, second: int, trades: dict[str, dict]) -> None:
        bids, asks = self._book_at(order, second * 1000)
        buy, tick = order.side == "BUY", order.price_tick
        levels = asks if buy else bids
        depth = sum(int(size * MICRO) for t, size in levels if (t <= tick if buy else t >= tick))
        take = min(order.original_micro - order.matched_micro, depth)
        if take <= 0:
            return
        value = round(Fraction(take * order.price_tick, TICKS_PER_UNIT))  # at the maker's own price
        if buy:
            self.accounts.buy(order.maker, order.window, order.token_id, take, value)
        else:
            self.accounts.sell(order.maker, order.token_id, take, value)
        order.matched_micro += take
        row = trade(order, len(order.trade_ids), order.price_tick, take, second * 1000, 0, maker=True)
        order.trade_ids.append(row["id"])
        trades[row["id"]] = row
        if order.matched_micro == order.original_micro:
            order.status = "MATCHED"

    def reserved(self, maker: str, now_s: int, side: str, token_id: str = "") -> int:
        """What the maker's resting orders on this side (and token, for SELL) hold back."""
        return sum(
            o.reserved()
            for o in self._by_maker.get(maker.lower(), {}).values()
            if o.resting(now_s) and o.side == side and (side == "BUY" or o.token_id == token_id)
        )

    def drop(self, order: SimOrder) -> None:
        self._by_maker.get(order.maker.lower(), {}).pop(order.id, None)

    def ids(self, maker: str, now_s: int, market: str = "", asset_id: str = "") -> list[str]:
        return [
            o.id
            for o in self._by_maker.get(maker.lower(), {}).values()
            if o.resting(now_s)
            and (not market or o.window.condition_id == market)
            and (not asset_id or o.token_id == asset_id)
        ]
