"""The audit stream: every mutating control call, carried out or refused, appended with who
asked, from which door, and what came of it; and its tail, newest first."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import redis

from baton.errors import OpError
from control import commands as c
from control.context import Context, to_int
from state.audit import AuditRepo

T = TypeVar("T")


def audited(ctx: Context, actor: c.Actor, action: str, target: str, args: Any, fn: Callable[[], T]) -> T:
    """Run one mutating call and record it, whether it was carried out or refused."""
    try:
        with ctx.redis_errors():
            res = fn()
    except OpError as e:
        record(ctx, actor, action, target, args, "refused", e.status, e.message)
        raise
    # A halt or pause carried out despite a bad body keeps what was wrong with it.
    record(ctx, actor, action, target, args, "ok", 200, _summary(res), getattr(res, "warnings", None))
    return res


def record(
    ctx: Context,
    actor: c.Actor,
    action: str,
    target: str,
    args: Any,
    result: str,
    status: int,
    detail: str,
    warnings: list[str] | None = None,
) -> None:
    fields = {
        "at_ms": ctx.clock_ms(),
        "source": actor.source,
        "who": actor.who,
        "token_id": actor.token_id,
        "action": action,
        "target": target,
        "args": msgspec.json.encode(args).decode() if args is not None else "",
        "result": result,
        "status": status,
        "detail": detail[:500],
    }
    if warnings:
        fields["warnings"] = msgspec.json.encode([w[:300] for w in warnings[:20]]).decode()
    # An audit line that cannot be written must not undo the call it records: the call
    # already happened. A Redis that refuses it refused the call too, and said so.
    with contextlib.suppress(redis.RedisError):
        AuditRepo(ctx.r, ctx.k).append(fields)


def tail(ctx: Context, count: int = 50) -> c.AuditResult:
    with ctx.redis_errors():
        rows = ctx.r.xrevrange(ctx.k.audit(), count=max(1, min(count, 1000)))
    out = []
    for entry_id, f in rows:
        out.append(
            c.AuditEntry(
                id=entry_id,
                at_ms=to_int(f.get("at_ms")),
                source=f.get("source", ""),
                who=f.get("who", ""),
                token_id=f.get("token_id", ""),
                action=f.get("action", ""),
                target=f.get("target", ""),
                args=f.get("args", ""),
                result=f.get("result", ""),
                status=to_int(f.get("status")),
                detail=f.get("detail", ""),
                warnings=_warnings(f.get("warnings")),
            )
        )
    return c.AuditResult(entries=out)


def _warnings(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        got = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return [raw]  # written by hand: shown as it is
    return [str(w) for w in got] if isinstance(got, list) else [str(got)]


def _summary(res: Any) -> str:
    if isinstance(res, c.HaltResult):
        return f"seq={res.seq} acknowledged={res.acknowledged} ack_ms={res.ack_ms} {res.worker}".strip()
    if isinstance(res, c.FlagResult):
        return f"changed={res.changed} seq={res.control.seq}"
    if isinstance(res, c.SlotResult):
        return f"changed={res.changed}"
    if isinstance(res, c.ReloadResult):
        return f"{res.state} {res.modules}".strip()
    if isinstance(res, c.LifecycleResult):
        return " ".join(f"{k}={v}" for k, v in res.programs.items())
    return ""
