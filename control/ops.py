"""`Ops`: the control operations as one object, for the doors that hold one (the HTTP API,
the CLI, the control.json watcher). Every method hands over to the module that owns the
operation; `apply` carries out a tagged `Command` (control.json, scripts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from baton.errors import BadRequest
from control import audit, halt, lifecycle, slots, views
from control import commands as c
from control import decisions as decision_log
from control.context import Context, Supervisor

__all__ = ["Ops", "Supervisor"]


class Ops(Context):
    # --- reading ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return views.status(self)

    def control(self) -> c.ControlView:
        return views.control(self)

    def slots(self) -> c.SlotsResult:
        return views.slots(self)

    def slot(self, slot_id: str) -> c.SlotView:
        return views.slot(self, slot_id)

    def strategies(self) -> c.StrategiesResult:
        return slots.strategies()

    def audit_tail(self, count: int = 50) -> c.AuditResult:
        return audit.tail(self, count)

    def decisions(
        self, slot: str | None = None, limit: int = decision_log.LIMIT_DEFAULT
    ) -> decision_log.DecisionsResult:
        return decision_log.read(self, slot, limit)

    # --- flags --------------------------------------------------------------------------
    def halt(self, actor: c.Actor, body: c.HaltBody, warnings: Sequence[str] = ()) -> c.HaltResult:
        return halt.halt(self, actor, body, warnings)

    def pause(self, actor: c.Actor, body: c.PauseBody, warnings: Sequence[str] = ()) -> c.FlagResult:
        return halt.pause(self, actor, body, warnings)

    def resume(self, actor: c.Actor) -> c.FlagResult:
        return halt.resume(self, actor)

    # --- workers ------------------------------------------------------------------------
    def flush_ledger(self) -> str:
        return lifecycle.flush_ledger(self)

    def reload(self, actor: c.Actor, timeout_s: float = 30.0) -> c.ReloadResult:
        return lifecycle.reload(self, actor, timeout_s)

    def programs(self) -> dict[str, str]:
        return lifecycle.programs(self)

    def start(self, actor: c.Actor) -> c.LifecycleResult:
        return lifecycle.start(self, actor)

    def stop(self, actor: c.Actor) -> c.LifecycleResult:
        return lifecycle.stop(self, actor)

    # --- slots --------------------------------------------------------------------------
    def set_slot_enabled(self, actor: c.Actor, slot_id: str, enabled: bool) -> c.SlotResult:
        return slots.set_enabled(self, actor, slot_id, enabled)

    def patch_slot(self, actor: c.Actor, slot_id: str, patch: c.SlotPatch) -> c.SlotResult:
        return slots.patch(self, actor, slot_id, patch)

    def add_slot(self, actor: c.Actor, body: c.SlotNew) -> c.SlotResult:
        return slots.add(self, actor, body)

    def remove_slot(self, actor: c.Actor, slot_id: str, body: c.SlotRemove) -> c.SlotRemoved:
        return slots.remove(self, actor, slot_id, body)

    # --- control.json and other generic callers -----------------------------------------
    def apply(self, actor: c.Actor, cmd: c.Command, warnings: Sequence[str] = ()) -> msgspec.Struct:
        """Carry out one command (a control.json file, `baton` scripts): the same operation
        the API's endpoint of that name runs. `warnings`: what was wrong with a halt's or
        pause's text, which is carried out anyway."""
        if isinstance(cmd, c.HaltCommand):
            return self.halt(actor, c.HaltBody(reason=cmd.reason), warnings)
        if isinstance(cmd, c.PauseCommand):
            return self.pause(actor, c.PauseBody(reason=cmd.reason), warnings)
        if isinstance(cmd, c.ResumeCommand):
            return self.resume(actor)
        if isinstance(cmd, c.ReloadCommand):
            return self.reload(actor)
        if isinstance(cmd, c.StartCommand):
            return self.start(actor)
        if isinstance(cmd, c.StopCommand):
            return self.stop(actor)
        if isinstance(cmd, c.EnableSlotCommand):
            return self.set_slot_enabled(actor, cmd.slot, True)
        if isinstance(cmd, c.DisableSlotCommand):
            return self.set_slot_enabled(actor, cmd.slot, False)
        if isinstance(cmd, c.PatchSlotCommand):
            patch = c.SlotPatch(
                stake_usd=cmd.stake_usd, params=cmd.params, strategy=cmd.strategy, enabled=cmd.enabled
            )
            return self.patch_slot(actor, cmd.slot, patch)
        if isinstance(cmd, c.AddSlotCommand):
            fields = msgspec.structs.asdict(cmd)
            return self.add_slot(actor, c.SlotNew(**fields))
        if isinstance(cmd, c.RemoveSlotCommand):
            return self.remove_slot(actor, cmd.slot, c.SlotRemove(force=cmd.force))
        raise BadRequest(f"unknown command {type(cmd).__name__}")
