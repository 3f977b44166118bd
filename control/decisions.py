"""The decision log as the doors show it: `baton decisions`, GET /decisions, and, beside each
slot in `baton status`, `baton slots`, GET /slots and the dashboard, its newest evaluation
and, for a slot whose strategy sleeps until later in its window, until when.

Read over the control context's synchronous client (state/decisions.py does the reading).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import msgspec

from baton.errors import BadRequest, NotFound
from control import commands as c
from control.context import Context, to_int
from state.decisions import READ_MAX, DecisionsRepo, check_limit, decode_decision
from state.keys import Keys
from state.structs import DecisionLogEntry

LIMIT_DEFAULT = 50


class DecisionsQuery(msgspec.Struct, kw_only=True):
    slot: Annotated[str, msgspec.Meta(max_length=64, description="One slot's log; all slots when empty")] = ""
    limit: Annotated[
        int, msgspec.Meta(ge=1, le=READ_MAX, description="How many evaluations, newest first")
    ] = LIMIT_DEFAULT


class DecisionsResult(msgspec.Struct, kw_only=True):
    """Evaluations, newest first: each buy, sell (exit) or pass with its reason, what the
    kernel made of it (`outcome`) and the figures the strategy saw."""

    decisions: list[DecisionLogEntry]
    # Entries that could not be read (stream and id): shown, not fatal.
    problems: list[str] = []


class SlotLatest(msgspec.Struct, kw_only=True):
    last: DecisionLogEntry | None = None
    # When the slot's strategy next wants quotes, while that is still ahead (None: awake).
    asleep_until_ms: int | None = None


def read(ctx: Context, slot: str | None, limit: int = LIMIT_DEFAULT) -> DecisionsResult:
    """One slot's newest evaluations, or every slot's merged by time. A slot that is neither
    configured, nor removed, nor in the log is an unknown name: NotFound naming the slots."""
    try:
        check_limit(limit)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    repo = DecisionsRepo(ctx.r, ctx.k)
    with ctx.redis_errors():
        page = repo.read_decisions(slot or None, limit)
        if slot and not page.entries and not page.problems:
            pipe = ctx.r.pipeline(transaction=False)
            pipe.hexists(ctx.k.slots(), slot)
            pipe.sismember(ctx.k.slots_removed(), slot)
            if not any(pipe.execute()):
                ids = sorted(ctx.r.hkeys(ctx.k.slots()))
                raise NotFound(f"no slot {slot!r}; slots are {', '.join(ids) or 'none'}")
    return DecisionsResult(decisions=page.entries, problems=page.problems)


def latest(r: Any, k: Keys, slot_ids: list[str], now_ms: int) -> dict[str, SlotLatest]:
    """Each slot's newest log entry and its wake time, in one round trip (a sync client)."""
    if not slot_ids:
        return {}
    pipe = r.pipeline(transaction=False)
    pipe.hmget(k.slot_wakes(), slot_ids)
    for sid in slot_ids:
        pipe.xrevrange(k.decision_log(sid), count=1)
    wakes, *logs = pipe.execute()
    out = {}
    for sid, wake, log in zip(slot_ids, wakes, logs, strict=True):
        last = None
        if log:
            with contextlib.suppress(ValueError):  # `baton decisions SLOT` names a bad entry
                last = decode_decision(log[0][1])
        wake_ms = to_int(wake)
        out[sid] = SlotLatest(last=last, asleep_until_ms=wake_ms if wake_ms > now_ms else None)
    return out


def annotate(ctx: Context, views: list[c.SlotView], now_ms: int) -> None:
    """Fill in each view's newest evaluation and sleep (SlotView's last_log, asleep_until_ms)."""
    found = latest(ctx.r, ctx.k, [v.id for v in views], now_ms)
    for v in views:
        got = found.get(v.id)
        if got is not None:
            v.last_log, v.asleep_until_ms = got.last, got.asleep_until_ms


def status_fields(got: SlotLatest | None) -> dict[str, Any]:
    """What `baton status --json` adds to a slot: asleep_until_ms and last_decision (the
    newest evaluation's at_ms, action, reason, outcome), each None when there is none."""
    last = got.last if got is not None else None
    return {
        "asleep_until_ms": got.asleep_until_ms if got is not None else None,
        "last_decision": None
        if last is None
        else {"at_ms": last.at_ms, "action": last.action, "reason": last.reason, "outcome": last.outcome},
    }
