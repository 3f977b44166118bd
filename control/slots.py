"""Slot edits: add, remove, enable, disable, and change the strategy, stake and parameters of
one slot.

The slots hash is what the worker trades (it follows it every tick: a slot added runs from
the next tick, one removed stops). A slot is rewritten whole under WATCH, so two editors
never lose each other's change, and the control channel tells open dashboards at once
(state/slots.py). Every value is checked first (control/slot_rules.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from baton.errors import BadRequest, Conflict, NotFound
from control import commands as c
from control import slot_rules as rules
from control import views
from control.audit import audited
from control.context import Context
from control.running import stack_settings
from kernel.windows import window_bounds
from state.slots import SlotsRepo
from state.structs import SLOT, Slot


def strategies() -> c.StrategiesResult:
    """Every strategy of worker/strategies with its declarations (the dashboard's chooser)."""
    out = []
    for name in rules.strategy_names():
        try:
            d = rules.declarations(name)
        except BadRequest as e:
            out.append(c.StrategyView(name=name, defaults={}, bounds={}, exits=False, error=e.message))
            continue
        bounds = {p: (float(lo), float(hi)) for p, (lo, hi) in d.bounds.items()}
        out.append(c.StrategyView(name=name, defaults=dict(d.defaults), bounds=bounds, exits=d.exits))
    return c.StrategiesResult(strategies=out)


def add(ctx: Context, actor: c.Actor, body: c.SlotNew) -> c.SlotResult:
    def run() -> c.SlotResult:
        stack = stack_settings(ctx.s, ctx.r)
        slot = new_slot(body, stack.max_stake_usd, stack.stake_usd, stack.timeframes)
        if not SlotsRepo(ctx.r, ctx.k).add_slot(slot):
            raise Conflict(f"slot {slot.id!r} exists already: `baton slots set` changes it")
        return c.SlotResult(changed=True, slot=views.slot(ctx, slot.id))

    return audited(ctx, actor, "add_slot", body.id, body, run)


def new_slot(
    body: c.SlotNew, max_stake_usd: float, default_stake_usd: float, timeframes: tuple[str, ...] = ()
) -> Slot:
    """The slot `body` asks for, or BadRequest naming what is wrong with it."""
    decl = rules.declarations(body.strategy)
    return Slot(
        id=rules.check_id(body.id),
        asset=rules.check_asset(body.asset),
        timeframe=rules.check_timeframe(body.timeframe, timeframes),
        enabled=body.enabled,
        stake_usd=rules.check_stake(
            default_stake_usd if body.stake_usd is None else body.stake_usd, max_stake_usd
        ),
        strategy=body.strategy,
        params=decl.check(body.params),
    )


def remove(ctx: Context, actor: c.Actor, slot_id: str, body: c.SlotRemove) -> c.SlotRemoved:
    notes: list[str] = []

    def check(pipe: Any, raw: str) -> None:
        try:
            slot = SLOT.decode(raw)
        except msgspec.DecodeError:
            return  # an unreadable slot trades nothing: it may go
        busy = open_in_window(pipe, ctx, slot, ctx.clock_ms())
        if busy and not body.force:
            raise Conflict(
                f"slot {slot_id!r} holds {busy} in its current window: remove it after the window "
                "ends, or with --force (the position then settles, but no exit of it is made)"
            )
        if busy:
            notes.append(f"removed while it holds {busy}: it settles at the window's end")

    def run() -> c.SlotRemoved:
        removed = SlotsRepo(ctx.r, ctx.k).remove_slot(slot_id, check)
        if removed is None:
            raise NotFound(f"no slot {slot_id!r}; slots are {', '.join(views.slot_ids(ctx)) or 'none'}")
        return c.SlotRemoved(removed=slot_id, notes=notes)

    return audited(ctx, actor, "remove_slot", slot_id, body, run)


def open_in_window(pipe: Any, ctx: Context, slot: Slot, now_ms: int) -> str:
    """What the slot holds open in its current window ('' when nothing): its position, or an
    intent (entry or exit) not final yet. Read through `pipe` (a watching pipeline)."""
    start_s, _ = window_bounds(now_ms, slot.timeframe)
    prefix = f"{slot.id}:{start_s}"
    held = []
    if pipe.hexists(ctx.k.positions_open(), prefix):
        held.append(f"an open position ({prefix})")
    intents = [i for i in pipe.hkeys(ctx.k.intents_open()) if i.startswith(prefix + ":")]
    if intents:
        held.append(f"open intents ({', '.join(sorted(intents))})")
    return " and ".join(held)


def set_enabled(ctx: Context, actor: c.Actor, slot_id: str, enabled: bool) -> c.SlotResult:
    action = "enable_slot" if enabled else "disable_slot"

    def change(slot: Slot) -> Slot:
        return msgspec.structs.replace(slot, enabled=enabled)

    return audited(ctx, actor, action, slot_id, None, lambda: _update(ctx, slot_id, change))


def patch(ctx: Context, actor: c.Actor, slot_id: str, body: c.SlotPatch) -> c.SlotResult:
    def run() -> c.SlotResult:
        # The running worker's limit (its kernel refuses entries above it), not this shell's.
        max_stake_usd = stack_settings(ctx.s, ctx.r).max_stake_usd
        notes: list[str] = []

        def change(slot: Slot) -> Slot:
            new, dropped = validate_patch(slot, body, max_stake_usd)
            notes[:] = dropped
            return new

        res = _update(ctx, slot_id, change)
        res.notes = notes
        return res

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


def validate_patch(slot: Slot, patch: c.SlotPatch, max_stake_usd: float) -> tuple[Slot, list[str]]:
    """The slot with the patch applied, and notes on what else changed (parameters dropped
    by a switch of strategy); or BadRequest naming the bad field."""
    if patch.stake_usd is None and patch.params is None and patch.strategy is None and patch.enabled is None:
        raise BadRequest("nothing to change: give strategy, stake_usd, params and/or enabled")
    new = slot
    notes: list[str] = []
    if patch.stake_usd is not None:
        new = msgspec.structs.replace(new, stake_usd=rules.check_stake(patch.stake_usd, max_stake_usd))
    if patch.enabled is not None:
        new = msgspec.structs.replace(new, enabled=patch.enabled)
    if patch.strategy is not None or patch.params is not None:
        name = slot.strategy if patch.strategy is None else patch.strategy
        decl = rules.declarations(name)
        params = dict(slot.params)
        if name != slot.strategy:
            # The old strategy's parameters mean nothing to the new one: those it does not
            # declare go (and the answer says so); same-named ones are checked afresh below.
            dropped = sorted(p for p in params if p not in decl.defaults)
            for p in dropped:
                del params[p]
            if dropped:
                notes.append(
                    f"strategy {slot.strategy!r} -> {name!r}: dropped parameters it does not declare: "
                    + ", ".join(f"{p}={slot.params[p]:g}" for p in dropped)
                )
        params.update(patch.params or {})
        new = msgspec.structs.replace(new, strategy=name, params=decl.check(params))
    return new, notes
