"""Slots (an asset and timeframe each, with their strategy and settings) and each slot's
last decision."""

from __future__ import annotations

import msgspec

from state.repo import Repo
from state.structs import SLOT, DecisionRecord, Slot

_JSON = msgspec.json.Encoder()


class SlotsRepo(Repo):
    async def ensure_slots(self, slots: list[Slot]) -> None:
        """Create configured slots that Redis does not know yet; operator edits survive."""
        pipe = self.r.pipeline(transaction=False)
        for slot in slots:
            pipe.hsetnx(self.k.slots(), slot.id, SLOT.encode(slot))
        await pipe.execute()

    async def record_decisions(self, decisions: dict[str, DecisionRecord]) -> None:
        """Each slot's last decision (the dashboard and `baton slots` show it)."""
        compact = {sid: _JSON.encode(d) for sid, d in decisions.items()}
        await self.r.hset(self.k.decisions(), mapping=compact)
