"""The workers' lifecycle as operations: start and stop them through supervisord (deploy's
client), hot-reload their strategies (deploy/reload.py), and make the ledger durable (what a
halt does before it answers)."""

from __future__ import annotations

import redis

from baton.errors import Conflict, ReloadError, Unavailable
from control import commands as c
from control.audit import audited
from control.context import Context, to_int
from deploy import reload as hot
from kernel.lease import active_color
from state.control import parse_control
from state.keys import COLORS

WORKER_PROGRAMS = tuple(f"worker-{color}" for color in COLORS)
_RUNNING = ("RUNNING", "STARTING", "BACKOFF")


# --- supervisor ---------------------------------------------------------------------------
def programs(ctx: Context) -> dict[str, str]:
    try:
        return {p["name"]: p["statename"] for p in ctx.supervisor("getAllProcessInfo")}
    except (OSError, Exception) as e:  # xmlrpc Fault, socket errors
        raise Unavailable(
            f"supervisord is not reachable at {ctx.s.supervisor_socket}: {e} (is the stack running?)"
        ) from None


def start(ctx: Context, actor: c.Actor) -> c.LifecycleResult:
    def run() -> c.LifecycleResult:
        progs = programs(ctx)
        running = [p for p in WORKER_PROGRAMS if progs.get(p) in _RUNNING]
        if running:
            raise Conflict(f"{', '.join(running)} already running; stop first")
        name = f"worker-{active_color(ctx.r, ctx.k)}"
        try:
            ctx.supervisor("startProcess", name, True)
        except Exception as e:
            raise Unavailable(f"supervisor could not start {name}: {e}") from None
        return c.LifecycleResult(action="start", programs=_worker_states(ctx))

    return audited(ctx, actor, "start", "", None, run)


def stop(ctx: Context, actor: c.Actor) -> c.LifecycleResult:
    def run() -> c.LifecycleResult:
        progs = programs(ctx)
        running = [p for p in WORKER_PROGRAMS if progs.get(p) in _RUNNING]
        if not running:
            raise Conflict("no worker is running")
        for name in running:
            try:
                # Waits for the graceful stop: the worker finishes its tick, releases the lease.
                ctx.supervisor("stopProcess", name, True)
            except Exception as e:
                raise Unavailable(f"supervisor could not stop {name}: {e}") from None
        return c.LifecycleResult(action="stop", programs=_worker_states(ctx))

    return audited(ctx, actor, "stop", "", None, run)


def _worker_states(ctx: Context) -> dict[str, str]:
    progs = programs(ctx)
    return {p: progs.get(p, "UNKNOWN") for p in WORKER_PROGRAMS}


# --- reload -------------------------------------------------------------------------------
def reload(ctx: Context, actor: c.Actor, timeout_s: float = 30.0) -> c.ReloadResult:
    def run() -> c.ReloadResult:
        if parse_control(ctx.r.hgetall(ctx.k.control())).halted:
            # A reload imports and dry-evaluates strategy code: none runs under a halt.
            raise Conflict("halted: no strategy code runs, so no reload either; resume first")
        try:
            res = hot.reload_on(ctx.r, ctx.k, False, hot.REPO_ROOT, timeout_s, lambda _m: None)
        except ReloadError as e:
            if "no worker holds the lease" in str(e):
                raise Conflict(str(e)) from None
            raise Unavailable(str(e)) from None
        return c.ReloadResult(
            state=res.get("state", ""),
            color=res.get("color", ""),
            modules=res.get("modules", ""),
            error=res.get("error", ""),
            hashes=res.get("hashes", ""),
            at_ms=to_int(res.get("at_ms")),
        )

    return audited(ctx, actor, "reload", "", None, run)


# --- durability ---------------------------------------------------------------------------
def flush_ledger(ctx: Context) -> str:
    """Make what the ledger holds durable, as this Redis is configured: WAIT for
    replicas, WAITAOF (Redis 7.2+) or one everysec fsync period for the AOF, a BGSAVE
    without AOF. Returns what was done; never raises (a halt must not fail here)."""
    r = ctx.r
    parts = []
    try:
        repl = r.info("replication")
        replicas = to_int(repl.get("connected_slaves"))
        if replicas:
            n = r.execute_command("WAIT", replicas, 1000)
            parts.append(f"WAIT: {n} of {replicas} replica(s) have the ledger")
        pers = r.info("persistence")
        if to_int(pers.get("aof_enabled")):
            parts.append(_aof_flush(ctx))
        else:
            try:
                r.bgsave()
                parts.append("no AOF: RDB snapshot started (BGSAVE)")
            except redis.ResponseError as e:
                parts.append(f"no AOF: BGSAVE: {e}")
    except redis.RedisError as e:
        parts.append(f"not flushed: {type(e).__name__}: {e}")
    return "; ".join(parts)


def _aof_flush(ctx: Context) -> str:
    try:
        ctx.r.execute_command("WAITAOF", 1, 0, 1000)
        return "AOF: fsynced (WAITAOF)"
    except redis.ResponseError:
        pass  # Redis before 7.2
    if ctx.s.redis_user != "admin":
        # CONFIG is the admin's alone (state/acl.py): wait as for everysec, the embedded
        # Redis's policy, without asking.
        ctx.sleep(1.1)
        return "AOF: waited one fsync period (1.1 s; WAITAOF needs Redis 7.2)"
    policy = (ctx.r.config_get("appendfsync") or {}).get("appendfsync", "")
    if policy == "always":
        return "AOF appendfsync always: on disk already"
    if policy == "everysec":
        # Without WAITAOF the only promise is the background fsync once a second.
        ctx.sleep(1.1)
        return "AOF appendfsync everysec: waited one fsync period (1.1 s; WAITAOF needs Redis 7.2)"
    return f"AOF appendfsync {policy or 'unknown'}: left to the OS"
