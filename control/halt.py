"""The control flags (halt, pause, resume) and the halt's acknowledgement protocol.

Control flags live in Redis, so `redis-cli` reads them and every worker version obeys the
same ground truth. A flag change goes through one Lua script (state/lua/control_set.lua)
that sets the flags, bumps `seq` and publishes on the control channel in one step. A halt
then waits for the lease holder's acknowledgement (`control_ack(seq)`: it posts nothing any
more), makes the ledger durable, and waits for the worker's report of its cancels.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from baton.errors import Conflict
from control import commands as c
from control import stops, views
from control.audit import audited
from control.context import Context
from control.lifecycle import flush_ledger
from kernel.lease import read_lease
from state.control import ControlRepo, parse_control


def halt(ctx: Context, actor: c.Actor, body: c.HaltBody, warnings: Sequence[str] = ()) -> c.HaltResult:
    """Never refused for its body: what was wrong with it (`warnings`, from the door, and a
    reason cut to REASON_MAX) is carried in the answer and the audit stream."""
    notes = list(warnings)
    # The audit stream records the body as kept (a valid UTF-8 line of at most REASON_MAX
    # characters) and, with it, what had to change.
    kept = c.HaltBody(reason=stops.reason_of(body.reason, "operator halt", notes))
    return audited(ctx, actor, "halt", "", kept, lambda: _halt(ctx, actor, kept.reason, notes))


def pause(ctx: Context, actor: c.Actor, body: c.PauseBody, warnings: Sequence[str] = ()) -> c.FlagResult:
    """Like the halt, a pause only makes the bot do less: never refused for its body."""

    notes = list(warnings)
    kept = c.PauseBody(reason=stops.reason_of(body.reason, "operator pause", notes))

    def run() -> c.FlagResult:
        _seq, _n, _was_halted, was_paused = set_flags(ctx, "pause", kept.reason, actor)
        return c.FlagResult(
            action="pause", changed=not was_paused, control=views.control(ctx), warnings=notes
        )

    return audited(ctx, actor, "pause", "", kept, run)


def resume(ctx: Context, actor: c.Actor) -> c.FlagResult:
    def run() -> c.FlagResult:
        flags = parse_control(ctx.r.hgetall(ctx.k.control()))
        if not flags.halted and not flags.paused:
            raise Conflict("nothing to resume: trading is neither halted nor paused")
        # The resume lifts what was looked at: if a halt (or anything) came in between,
        # it is refused rather than lifting a halt its caller never saw.
        set_flags(ctx, "resume", "", actor, expect_seq=flags.seq)
        return c.FlagResult(action="resume", changed=True, control=views.control(ctx))

    return audited(ctx, actor, "resume", "", None, run)


def set_flags(
    ctx: Context, action: str, reason: str, actor: c.Actor, expect_seq: int | None = None
) -> tuple[int, int, int, int]:
    """One flag change through control_set.lua: (seq, receivers, was_halted, was_paused).
    With `expect_seq`, refused (Conflict) when the flags changed since that seq. Each call
    carries a request id of its own, so that the client's retry after a lost reply answers
    as the change did rather than meeting its own seq (state/lua/control_set.lua)."""
    res = ControlRepo(ctx.r, ctx.k).set_flags(
        action,
        ctx.clock_ms(),
        reason,
        f"{actor.source}:{actor.who}",
        "" if expect_seq is None else expect_seq,
        request_id=secrets.token_hex(8),
    )
    if int(res[0]) == -1:
        raise Conflict(
            f"the control flags changed meanwhile (seq {expect_seq} -> {res[1]}): "
            "look at them again (GET /control) before resuming"
        )
    return int(res[0]), int(res[1]), int(res[2]), int(res[3])


def _halt(ctx: Context, actor: c.Actor, reason: str, warnings: list[str]) -> c.HaltResult:
    t0 = time.monotonic()
    seq, _receivers, _was, _p = set_flags(ctx, "halt", reason, actor)
    lease = read_lease(ctx.r, ctx.k)
    live = lease if lease is not None and lease.live(ctx.clock_ms()) else None
    worker = f"worker-{live.color}" if live is not None else ""
    acknowledged, ack_ms = False, None
    cancel = "no active worker: the next worker to take the lease cancels open orders at its first tick"
    timeout_s = ctx.s.halt_ack_timeout_ms / 1000
    if live is not None and timeout_s > 0:
        ack = _holder_ack(ctx, seq, live.holder, t0 + timeout_s)
        if ack is not None:
            acknowledged = True
            ack_ms = round((time.monotonic() - t0) * 1000)
        else:
            cancel = (
                f"{worker} did not acknowledge within {timeout_s:.1f} s: the flag stands and is "
                "checked at the top of every tick and when an order is committed"
            )
    flush = flush_ledger(ctx)
    if acknowledged:
        deadline = time.monotonic() + timeout_s
        cancel = f"{worker} is cancelling open orders"
        while (left := deadline - time.monotonic()) > 0:
            done = _pop_ack(ctx, seq, left)
            if done is None:
                break
            if "cancel" in done:
                cancel = str(done["cancel"])
                break
    return c.HaltResult(
        halted=True,
        seq=seq,
        acknowledged=acknowledged,
        ack_ms=ack_ms,
        worker=worker,
        cancel=cancel,
        flush=flush,
        control=views.control(ctx),
        warnings=warnings,
    )


def _holder_ack(ctx: Context, seq: int, holder: str, deadline: float) -> dict[str, Any] | None:
    """The acknowledgement of the lease holder (another worker — one that handed over a
    moment ago — may answer too, and does not count), once it has no post in flight."""
    while (left := deadline - time.monotonic()) > 0:
        ack = _pop_ack(ctx, seq, left)
        if ack is None:
            return None
        holder_ok = ack.get("holder") == holder
        if holder_ok and ack.get("halted") is True and not ack.get("inflight"):
            return ack
    return None


def _pop_ack(ctx: Context, seq: int, timeout_s: float) -> dict[str, Any] | None:
    got = ctx.r.blpop([ctx.k.control_ack(seq)], timeout=max(timeout_s, 0.01))
    if not got:
        return None
    try:
        value = json.loads(got[1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
