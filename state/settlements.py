"""Settlements: the claims that keep a window's settlement enqueued once, the settle job's
write (a position settled and its payout booked, at most once), and the settle counters.
The rq queue itself is rq's (kernel/settlement.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from state.keys import Keys
from state.ledger import utc_day
from state.repo import Repo
from state.structs import POSITION, Position, exit_leg

# The exit legs a settlement looks for (kernel/strategy_api.py MAX_EXIT_LEGS; state/ may not
# import the kernel, and a few more ids cost nothing).
EXIT_LEGS_CHECKED = 8


def settle_call(k: Keys, read_raw: str, position: Position) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of settle_position.lua."""
    keys = [
        k.lease_epoch(),
        k.positions(),
        k.positions_open(),
        k.ledger(),
        k.ledger_totals(),
        k.ledger_refs(),
        k.ledger_day(utc_day(position.settled_ms)),
        k.counts(),
        k.intents_open(),
    ]
    args: list[Any] = [
        read_raw,
        position.id,
        POSITION.encode(position),
        position.payout_micros,
        position.pnl_micros,
        position.settled_ms,
        *(f"{position.id}:{exit_leg(n)}" for n in range(1, EXIT_LEGS_CHECKED + 1)),
    ]
    return keys, args


class SettlementsRepo(Repo):
    def settle_position(self, read_raw: str, position: Position, pipeline: Any = None) -> Any:
        """Book a settlement computed from the position JSON `read_raw` (the script's fence):
        'OK', 'ALREADY', 'UNKNOWN' (not open: settled, closed by exits, or none), 'CHANGED',
        or 'PENDING' (an exit of it is still open: settle once it is booked)."""
        keys, args = settle_call(self.k, read_raw, position)
        return self._call(self.scripts.settle_position, keys=keys, args=args, pipeline=pipeline)

    def claim_settlement(self, position_id: str, now_ms: int, ttl_s: int, pipeline: Any = None) -> Any:
        """Claim a position's settlement for `ttl_s` (SET NX): true when the claim is ours."""
        return (self.r if pipeline is None else pipeline).set(
            self.k.settle_claim(position_id), now_ms, nx=True, ex=ttl_s
        )

    def give_back_claims(self, position_ids: Iterable[str], pipeline: Any = None) -> Any:
        return (self.r if pipeline is None else pipeline).delete(
            *(self.k.settle_claim(p) for p in position_ids)
        )

    def count_settle(self, name: str, n: int = 1, pipeline: Any = None) -> Any:
        """Add to one of the settle counters (runs, settled, already, enqueued, ...)."""
        return (self.r if pipeline is None else pipeline).hincrby(self.k.settle_stats(), name, n)
