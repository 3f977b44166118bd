"""Positions: opened by a fill, booked with its intent and the ledger in one fenced script
(their settlement is state/settlements.py's)."""

from __future__ import annotations

from typing import Any

from state.repo import Repo
from state.structs import INTENT, POSITION, Intent, Position


class PositionsRepo(Repo):
    def record_fills(self, epoch: int, fills: list[tuple[Intent, Position]], pipeline: Any = None) -> Any:
        """Book fills in one fenced call (record_fill.lua): one verdict per fill."""
        args: list[Any] = [epoch]
        for intent, position in fills:
            args += (
                intent.id,
                INTENT.encode(intent),
                position.id,
                POSITION.encode(position),
                position.cost_micros,
                position.opened_ms,
            )
        return self._call(
            self.scripts.record_fill,
            keys=[
                self.k.lease_epoch(),
                self.k.intents(),
                self.k.intents_open(),
                self.k.positions(),
                self.k.positions_open(),
                self.k.ledger(),
                self.k.ledger_totals(),
                self.k.ledger_refs(),
                self.k.counts(),
            ],
            args=args,
            pipeline=pipeline,
        )

    async def record_fill(self, epoch: int, intent: Intent, position: Position) -> str:
        return str((await self.record_fills(epoch, [(intent, position)]))[0])

    async def read_positions(self, open_only: bool = False) -> list[Position]:
        raw = await self.r.hgetall(self.k.positions_open() if open_only else self.k.positions())
        return [POSITION.decode(v) for v in raw.values()]
