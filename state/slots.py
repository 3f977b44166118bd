"""Slots (an asset and timeframe each, with their strategy and settings) and each slot's
last decision.

The slots hash is the truth for which slots run: the worker follows it every tick
(kernel/snapshot.py SlotRefs.follow); the settings only seed a fresh Redis, and the removed
set keeps an operator's removals from being seeded again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
                    self._announce(pipe, slot_id)
                    pipe.execute()
                    return slot, new
                except WatchError:
                    continue  # another writer changed the slots hash: read again

    async def ensure_slots(self, slots: list[Slot]) -> int:
        """Seed the configured slots into a Redis that lacks them (state/lua/slots_seed.lua):
        operator edits survive, and a slot an operator removed is not seeded again. Returns
        how many were created."""
        args: list[str] = []
        for slot in slots:
            args += (slot.id, SLOT.encode(slot).decode())
        if not args:
            return 0
        return int(await self._call(self.scripts.slots_seed, [self.k.slots(), self.k.slots_removed()], args))

    def add_slot(self, slot: Slot, check: Callable[[], None] = lambda: None) -> bool:
        """Create a slot (and forget that its id was ever removed), under WATCH: False when
        the id is taken already. `check` runs inside the watch, before the write (raise to
        refuse). A sync client's (the control operations')."""
        key = self.k.slots()
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hexists(key, slot.id):
                        return False
                    check()
                    pipe.multi()
                    pipe.hset(key, slot.id, SLOT.encode(slot).decode())
                    pipe.srem(self.k.slots_removed(), slot.id)
                    self._announce(pipe, slot.id)
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def remove_slot(self, slot_id: str, check: Callable[[Any, str], None]) -> str | None:
        """Delete a slot and remember its id as removed (the configured defaults never seed it
        again), under WATCH of the slots and the open positions and intents: `check(pipe,
        raw)` reads what it needs through the watching pipeline and raises to refuse.
        Returns the removed slot's value as it was (an unreadable one goes too), or None when
        there is no such slot."""
        key = self.k.slots()
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, self.k.positions_open(), self.k.intents_open())
                    raw = pipe.hget(key, slot_id)
                    if raw is None:
                        return None
                    check(pipe, raw)
                    pipe.multi()
                    pipe.hdel(key, slot_id)
                    pipe.sadd(self.k.slots_removed(), slot_id)
                    pipe.hdel(self.k.slot_wakes(), slot_id)
                    self._announce(pipe, slot_id)
                    pipe.execute()
                    return str(raw)
                except WatchError:
                    continue

    def _announce(self, pipe: Any, slot_id: str) -> None:
        # Open dashboards redraw at once; workers read slots every tick anyway.
        pipe.publish(self.k.control_events(), json.dumps({"action": "slot", "seq": 0, "slot": slot_id}))

    def record_decisions(self, decisions: dict[str, DecisionRecord], pipeline: Any = None) -> Any:
        """Each slot's last decision (the dashboard and `baton slots` show it): one HSET, now
        (an awaitable on the asyncio client) or queued on `pipeline`."""
        compact = {sid: _JSON.encode(d) for sid, d in decisions.items()}
        return (pipeline if pipeline is not None else self.r).hset(self.k.decisions(), mapping=compact)
