"""Slot edits: enable, disable, change the stake and strategy parameters of one slot.

A slot is rewritten whole under WATCH, so two editors never lose each other's change, and
the control channel tells open dashboards at once (state/slots.py); workers read the slots
every tick anyway.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import msgspec

from baton.errors import BadRequest, Conflict, NotFound
from control import commands as c
from control import views
from control.audit import audited
from control.context import Context
from control.running import stack_settings
from state.slots import SlotsRepo
from state.structs import Slot


def set_enabled(ctx: Context, actor: c.Actor, slot_id: str, enabled: bool) -> c.SlotResult:
    action = "enable_slot" if enabled else "disable_slot"

    def change(slot: Slot) -> Slot:
        return msgspec.structs.replace(slot, enabled=enabled)

    return audited(ctx, actor, action, slot_id, None, lambda: _update(ctx, slot_id, change))


def patch(ctx: Context, actor: c.Actor, slot_id: str, body: c.SlotPatch) -> c.SlotResult:
    def run() -> c.SlotResult:
        # The running worker's limit (its kernel refuses entries above it), not this shell's.
        max_stake_usd = stack_settings(ctx.s, ctx.r).max_stake_usd
        return _update(ctx, slot_id, lambda slot: validate_patch(slot, body, max_stake_usd))

    return audited(ctx, actor, "patch_slot", slot_id, body, run)


def _update(ctx: Context, slot_id: str, change: Callable[[Slot], Slot]) -> c.SlotResult:
    try:
        edited = SlotsRepo(ctx.r, ctx.k).edit_slot(slot_id, change)
    except msgspec.DecodeError as e:
        raise Conflict(f"slot {slot_id!r} holds an unreadable value: {e}") from None
    if edited is None:
        raise NotFound(f"no slot {slot_id!r}; slots are {', '.join(views.slot_ids(ctx)) or 'none'}")
    slot, new = edited
    return c.SlotResult(changed=new != slot, slot=views.slot(ctx, slot_id))


def validate_patch(slot: Slot, patch: c.SlotPatch, max_stake_usd: float) -> Slot:
    """The slot with the patch applied, or BadRequest naming the bad field. Parameters must
    be ones the slot's strategy reads (its DEFAULTS), finite, and within its PARAM_BOUNDS."""
    if patch.stake_usd is None and patch.params is None:
        raise BadRequest("nothing to change: give stake_usd and/or params")
    new = slot
    if patch.stake_usd is not None:
        stake = patch.stake_usd
        if not math.isfinite(stake) or stake <= 0:
            raise BadRequest(f"stake_usd must be a positive number, not {stake}")
        if stake > max_stake_usd:
            raise BadRequest(f"stake_usd {stake} is above the risk limit BATON_MAX_STAKE_USD={max_stake_usd}")
        new = msgspec.structs.replace(new, stake_usd=stake)
    if patch.params is not None:
        try:
            mod = importlib.import_module(f"worker.strategies.{slot.strategy}")
        except Exception as e:
            raise Conflict(f"strategy {slot.strategy!r} of slot {slot.id!r} cannot be loaded: {e}") from None
        known = dict(getattr(mod, "DEFAULTS", {}))
        bounds = dict(getattr(mod, "PARAM_BOUNDS", {}))
        params = dict(new.params)
        for name, value in patch.params.items():
            if name not in known:
                raise BadRequest(
                    f"strategy {slot.strategy!r} has no parameter {name!r}; it has {', '.join(sorted(known))}"
                )
            if not math.isfinite(value):
                raise BadRequest(f"params.{name} must be a finite number, not {value}")
            lo, hi = bounds.get(name, (-math.inf, math.inf))
            if not lo <= value <= hi:
                raise BadRequest(f"params.{name}={value} is outside [{lo}, {hi}]")
            params[name] = float(value)
        check = getattr(mod, "check_params", None)
        if check is not None:
            problem = check({**known, **params})
            if problem:
                raise BadRequest(f"params: {problem}")
        new = msgspec.structs.replace(new, params=params)
    return new
