"""Main-lane faults on the processes: blue/green deploys and rollbacks, killed and stopped
workers, Redis restarted or killed under the running stack."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import Any

from tests.chaos.lanes import (
    Outcome,
    at_tick_offset,
    last_json_line,
    tail,
)


def _handover(ctx: Any, args: list[str], kind: str) -> Outcome:
    out = Outcome()
    before = ctx.now_ms()
    res = ctx.st.baton(*args, "--json", timeout_s=240)
    got = last_json_line(res.stdout) if res.returncode == 0 else None
    if got is None:
        # A refused deploy is the runtime doing its job (the old worker trades on), but it is
        # reported: a chaos run where deploys never happen tests less than it claims.
        out.details = {"ok": False, "rc": res.returncode, "error": tail(res.stderr or res.stdout)}
        out.notes.append(f"{kind} refused: {tail(res.stderr or res.stdout, 200)}")
    else:
        out.details = {"ok": True, **got}
        if got.get("missed"):
            out.problems.append(
                f"{kind} to {got.get('color')} missed {got['missed']} tick(s) at its handover "
                f"(tick {got.get('handover_tick')})"
            )
    ctx.deploys_done += 1
    seen = ctx.wait_tick_after(max(before, ctx.now_ms()), 30)
    out.recovered = seen is not None
    return out


def inject_deploy(ctx: Any, rnd: random.Random) -> Outcome:
    # Two source trees that differ by a comment: consecutive deploys are different releases,
    # so a rollback really goes back to other code.
    src = ctx.sources[ctx.deploys_done % len(ctx.sources)]
    return _handover(ctx, ["deploy", "--source", str(src)], "deploy")


def inject_rollback(ctx: Any, rnd: random.Random) -> Outcome:
    return _handover(ctx, ["rollback"], "rollback")


def inject_kill_worker(ctx: Any, rnd: random.Random) -> Outcome:
    out = Outcome()
    active = ctx.active()
    if active is None:
        out.notes.append("no active worker to kill")
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    color, pid, epoch = active
    offset = at_tick_offset(ctx, rnd)
    killed_ms = out.injected_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    seen = ctx.wait_tick_after(killed_ms, 30, lambda e: int(e["epoch"]) > epoch)
    out.details = {
        "color": color,
        "pid": pid,
        "epoch": epoch,
        "offset_ms": round(offset, 1),
        "new_epoch": int(seen["epoch"]) if seen else None,
        "new_color": seen["color"] if seen else None,
        "first_tick_after": int(seen["tick"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def inject_stop_worker(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGSTOP the active worker for 1-3.5 ticks (past its lease when over 3), then SIGCONT."""
    out = Outcome()
    active = ctx.active()
    if active is None:
        out.notes.append("no active worker to stop")
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    color, pid, epoch = active
    hold_ms = rnd.uniform(1.0, 3.5) * ctx.tick_ms
    offset = at_tick_offset(ctx, rnd)
    out.injected_ms = ctx.now_ms()
    os.kill(pid, signal.SIGSTOP)
    stopped_ms = ctx.now_ms()
    try:
        time.sleep(hold_ms / 1000)
    finally:
        os.kill(pid, signal.SIGCONT)
    cont_ms = ctx.now_ms()
    seen = ctx.wait_tick_after(cont_ms, 30)
    out.details = {
        "color": color,
        "pid": pid,
        "epoch": epoch,
        "offset_ms": round(offset, 1),
        "stopped_ms": stopped_ms,
        "cont_ms": cont_ms,
        "held_ms": cont_ms - stopped_ms,
        "epoch_after": int(seen["epoch"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def _redis_back(ctx: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ctx.st.redis.ping():
                return True
        time.sleep(0.1)
    return False


def inject_redis_restart(ctx: Any, rnd: random.Random) -> Outcome:
    """A clean restart of the embedded Redis (SIGTERM: it writes its AOF and exits), down for
    0.5-2 s, then started again: every program must reconnect and lose nothing."""
    out = Outcome()
    down_s = rnd.uniform(0.5, 2.0)
    t0 = ctx.now_ms()
    ctx.st.supervisor("stopProcess", "redis", True)
    stopped_ms = ctx.now_ms()
    time.sleep(down_s)
    ctx.st.supervisor("startProcess", "redis", True)
    started_ms = ctx.now_ms()
    back = _redis_back(ctx, 30)
    seen = ctx.wait_tick_after(started_ms, 45) if back else None
    out.details = {
        "stop_took_ms": stopped_ms - t0,
        "down_ms": started_ms - stopped_ms,
        "redis_back": back,
        "first_tick_after": int(seen["tick"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def inject_redis_kill(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGKILL of redis-server; supervisor restarts it at once from its AOF. Every write was
    handed to the kernel before its reply (appendfsync everysec only delays the fsync), so a
    killed process loses nothing; only a crash of the machine could lose the last second."""
    out = Outcome()
    pid = int(ctx.st.supervisor("getProcessInfo", "redis")["pid"])
    killed_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    back = _redis_back(ctx, 30)
    seen = ctx.wait_tick_after(ctx.now_ms(), 45) if back else None
    out.details = {"pid": pid, "killed_ms": killed_ms, "redis_back": back}
    out.recovered = seen is not None
    return out
