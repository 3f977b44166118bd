"""Slots (an asset and timeframe each, with their strategy and settings) and each slot's
last decision."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
from redis.exceptions import WatchError

from state.repo import Repo
from state.structs import SLOT, DecisionRecord, Slot

_JSON = msgspec.json.Encoder()


class SlotsRepo(Repo):
    def edit_slot(self, slot_id: str, change: Callable[[Slot], Slot]) -> tuple[Slot, Slot] | None:
        """Rewrite one slot whole with `change` under WATCH, so that two editors never lose
        each other's change, and announce it on the control channel: (before, after), or None
        when there is no such slot; an unreadable value raises msgspec.DecodeError. A sync
        client's (the control operations')."""
        key = self.k.slots()
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, slot_id)
                    if raw is None:
                        return None
                    slot = SLOT.decode(raw)
                    new = change(slot)
                    pipe.multi()
                    pipe.hset(key, slot_id, SLOT.encode(new).decode())
                    # Open dashboards redraw at once; workers read slots every tick anyway.
                    pipe.publish(
                        self.k.control_events(), json.dumps({"action": "slot", "seq": 0, "slot": slot_id})
                    )
                    pipe.execute()
                    return slot, new
                except WatchError:
                    continue  # another writer changed the slots hash: read again

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
