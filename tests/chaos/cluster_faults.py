"""The cluster chaos harness's faults: each kind, what it may cost (its missed-tick
allowance), how long it may take to be whole again, and its injector; plus the seeded schedule.

One fault at a time: each injector injects, waits until the system shows it is back (a tick
of a new lease holder, a failover, the host rejoined: `ClusterChaos.wait_whole`) and returns
an Outcome; then the schedule's pause. A missed tick therefore belongs to exactly one fault,
and a fault that costs more than its allowance is a broken invariant (cluster_checks.py).

Targets are roles, found just before the fault (`ClusterChaos.roles`): the lease holder's
host, a host with a warm standby, the Redis primary's host. One host may hold several roles
(at the start h1 holds the lease, h3 the primary): the fault log says which it held.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from baton.errors import BatonError
from tests.chaos.lanes import Outcome, at_tick_offset, tail

# Every host kill, partition and primary kill may cost one tick at most (the target).
HOST_FAULT_ALLOWANCE = 1


@dataclass(frozen=True)
class ClusterFault:
    name: str
    allowed_missed: int  # ticks it may cost (a pause's own length is added by its injector)
    max_effect_s: float  # back and whole within this, else a broken invariant
    grace_s: float  # missed ticks are still its own this long after its end
    tests: str
    inject: Callable[[Any, random.Random], Outcome]
    weight: float = 1.0
    available: Callable[[Any], bool] = lambda c: True  # the cluster can do it (an API landed)


def _whole_again(ctx: Any, out: Outcome, timeout_s: float) -> None:
    why = ctx.wait_whole(timeout_s)
    out.details["whole"] = why or "yes"
    out.recovered = out.recovered and not why
    if why:
        out.problems.append(f"not whole again within {timeout_s:g} s: {why}")


def _new_holder(ctx: Any, after_ms: int, epoch: int, timeout_s: float) -> dict[str, str] | None:
    return ctx.wait_tick_after(after_ms, timeout_s, lambda e: int(e["epoch"]) > epoch)


def _kill_host(ctx: Any, rnd: random.Random, role: str) -> Outcome:
    out = Outcome()
    roles = ctx.roles()
    target = {
        "holder": roles.holder_host,
        "primary": roles.primary_host,
        "standby": next((h for h in roles.standby_hosts if h != roles.holder_host), ""),
    }[role]
    if not target:
        out.notes.append(f"no {role} host to kill ({roles})")
        _whole_again(ctx, out, 90)
        return out
    down_s = rnd.uniform(1.0, 5.0)
    at_tick_offset(ctx, rnd)
    out.injected_ms = killed_ms = ctx.now_ms()
    ctx.c.kill_host(target)
    out.details.update(target=target, roles=roles.of(target), epoch=roles.epoch, primary=roles.primary_host)
    if target == roles.holder_host:
        seen = _new_holder(ctx, killed_ms, roles.epoch, 30)
        out.recovered = seen is not None
        out.details["takeover_ms"] = int(seen["started_ms"]) - killed_ms if seen else None
        out.details["new_epoch"] = int(seen["epoch"]) if seen else None
    else:
        out.recovered = ctx.wait_tick_after(killed_ms, 30) is not None
    if target == roles.primary_host:
        out.details["new_primary"] = (
            ctx.poll(lambda: ctx.c.primary_host() != target, 30) and ctx.c.primary_host()
        )
    time.sleep(down_s)
    up_ms = ctx.now_ms()
    ctx.c.up(target)
    out.details["down_ms"] = up_ms - killed_ms
    _whole_again(ctx, out, 120)
    return out


def inject_kill_holder_host(ctx: Any, rnd: random.Random) -> Outcome:
    return _kill_host(ctx, rnd, "holder")


def inject_kill_standby_host(ctx: Any, rnd: random.Random) -> Outcome:
    return _kill_host(ctx, rnd, "standby")


def inject_kill_primary_host(ctx: Any, rnd: random.Random) -> Outcome:
    return _kill_host(ctx, rnd, "primary")


def inject_kill_holder_worker(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGKILL of the active worker alone: the warm standby on another host takes over, or
    the holder's own supervisord restarts it first (the dead-holder check on its host)."""
    out = Outcome()
    roles = ctx.roles()
    target = roles.holder_host
    program = f"worker-{roles.color}"
    pid = ctx.host_pid(target, program)
    at_tick_offset(ctx, rnd)
    out.injected_ms = killed_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    out.details.update(target=target, roles=roles.of(target), program=program, pid=pid, epoch=roles.epoch)
    seen = _new_holder(ctx, killed_ms, roles.epoch, 30)
    out.recovered = seen is not None
    if seen is not None:
        out.details.update(takeover_ms=int(seen["started_ms"]) - killed_ms, new_epoch=int(seen["epoch"]))
        out.details["new_color"] = seen.get("color")
    _whole_again(ctx, out, 90)
    return out


def _cut_host(ctx: Any, rnd: random.Random, role: str) -> Outcome:
    out = Outcome()
    roles = ctx.roles()
    target = roles.holder_host if role == "holder" else roles.primary_host
    if not target:
        out.notes.append(f"no {role} host to cut off ({roles})")
        _whole_again(ctx, out, 90)
        return out
    at_tick_offset(ctx, rnd)
    out.injected_ms = cut_ms = ctx.now_ms()
    ctx.c.cut(target)
    out.details.update(target=target, roles=roles.of(target), epoch=roles.epoch, primary=roles.primary_host)
    try:
        if target == roles.holder_host:
            # The others take over; the cut holder must have fenced itself before that.
            seen = _new_holder(ctx, cut_ms, roles.epoch, 30)
            out.recovered = seen is not None
            out.details["takeover_ms"] = int(seen["started_ms"]) - cut_ms if seen else None
            out.details["new_epoch"] = int(seen["epoch"]) if seen else None
        else:
            out.recovered = ctx.wait_tick_after(cut_ms, 30) is not None
        if target == roles.primary_host:
            moved = ctx.poll(lambda: ctx.c.primary_host() != target, 30)
            out.details["new_primary"] = moved and ctx.c.primary_host()
        # Cut off a while longer: the isolated host's programs keep trying meanwhile.
        time.sleep(rnd.uniform(0.5, 4.0))
    finally:
        heal_ms = ctx.now_ms()
        ctx.c.heal(target)
    out.details["cut_ms"] = heal_ms - cut_ms
    _whole_again(ctx, out, 120)
    return out


def inject_cut_holder_host(ctx: Any, rnd: random.Random) -> Outcome:
    return _cut_host(ctx, rnd, "holder")


def inject_cut_primary_host(ctx: Any, rnd: random.Random) -> Outcome:
    return _cut_host(ctx, rnd, "primary")


def inject_redis_primary_kill(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGKILL of the primary's redis-server alone: its supervisord restarts it from its AOF
    at once; a Sentinel failover happens only if that took longer than down-after."""
    out = Outcome()
    roles = ctx.roles()
    target = roles.primary_host
    pid = ctx.host_pid(target, "redis")
    at_tick_offset(ctx, rnd)
    out.injected_ms = killed_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    out.details.update(target=target, roles=roles.of(target), pid=pid)
    out.recovered = ctx.wait_tick_after(killed_ms, 45) is not None
    _whole_again(ctx, out, 90)
    out.details["primary_after"] = ctx.c.primary_host()
    return out


def inject_redis_primary_pause(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGSTOP of the primary's redis-server for 0.3-4 s (past Sentinel's down-after at
    times: then a failover, and the old primary wakes up to be demoted), then SIGCONT."""
    out = Outcome()
    roles = ctx.roles()
    target = roles.primary_host
    hold_s = rnd.uniform(0.3, 4.0)
    at_tick_offset(ctx, rnd)
    out.injected_ms = stopped_ms = ctx.now_ms()
    ctx.c.pause(target, "redis")
    try:
        time.sleep(hold_s)
    finally:
        ctx.c.resume(target, "redis")
    held_ms = ctx.now_ms() - stopped_ms
    # A stalled primary costs what a stall of that length costs, at most what a failover
    # does: the pause's own ticks (up to a failover's worth) plus the tick it hit.
    out.details.update(
        target=target,
        roles=roles.of(target),
        held_ms=held_ms,
        allowed_missed=HOST_FAULT_ALLOWANCE + math.ceil(min(held_ms, 3000) / ctx.tick_ms),
    )
    out.recovered = ctx.wait_tick_after(ctx.now_ms(), 45) is not None
    _whole_again(ctx, out, 90)
    out.details["primary_after"] = ctx.c.primary_host()
    return out


def inject_sentinel_restart(ctx: Any, rnd: random.Random) -> Outcome:
    """One Sentinel stopped (SIGTERM) for 0.5-3 s and started again: two still make a
    quorum; no tick may be lost."""
    out = Outcome()
    target = rnd.choice(list(ctx.hosts))
    host = ctx.c.host(target)
    down_s = rnd.uniform(0.5, 3.0)
    out.injected_ms = t0 = ctx.now_ms()
    host.supervisor("stopProcess", "sentinel", True)
    time.sleep(down_s)
    host.supervisor("startProcess", "sentinel", True)
    out.details.update(target=target, down_ms=ctx.now_ms() - t0)
    out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
    _whole_again(ctx, out, 60)
    return out


def _can_deploy(c: Any) -> bool:
    return callable(getattr(c, "deploy", None))


def _can_roll_back(c: Any) -> bool:
    return callable(getattr(c, "rollback", None))


def inject_deploy(ctx: Any, rnd: random.Random) -> Outcome:
    """A cluster deploy (`Cluster.deploy`: the new release to the standby colour's host, the
    handover at a tick boundary, the old colour restarted on it as the warm standby) of one of
    two frozen copies of the code, so that each deploy is a new release."""
    src = ctx.sources[ctx.deploys_done % len(ctx.sources)]
    ctx.deploys_done += 1
    return _handover(ctx, "deploy", lambda: ctx.c.deploy(source=src, log=lambda *_: None))


def inject_rollback(ctx: Any, rnd: random.Random) -> Outcome:
    """`Cluster.rollback`: back to the release before the last deploy, the same way."""
    return _handover(ctx, "rollback", lambda: ctx.c.rollback(log=lambda *_: None))


def _handover(ctx: Any, kind: str, call: Callable[[], Any]) -> Outcome:
    out = Outcome()
    before = ctx.now_ms()
    try:
        res = call()
    except BatonError as e:
        # A refused deploy is the runtime doing its job (the old holder trades on), but it is
        # reported: a run where deploys never happen tests less than it claims.
        out.details = {"ok": False, "error": tail(str(e), 300)}
        out.notes.append(f"{kind} refused: {tail(str(e), 300)}")
    else:
        got = msgspec.to_builtins(res)
        out.details = {"ok": True, **{k: v for k, v in got.items() if k != "hosts"}}
        if got.get("missed"):
            out.problems.append(
                f"{kind} to {got.get('color')} on {got.get('host')} missed {got['missed']} tick(s) at its "
                f"handover (tick {got.get('handover_tick')})"
            )
    out.details["target"] = out.details.get("host", "")
    out.recovered = ctx.wait_tick_after(max(before, ctx.now_ms()), 30) is not None
    _whole_again(ctx, out, 120)
    return out


CATALOGUE: dict[str, ClusterFault] = {
    k.name: k
    for k in [
        ClusterFault(
            "kill-holder-host",
            HOST_FAULT_ALLOWANCE,
            180,
            2.0,
            "every process of the lease holder's host SIGKILLed: the standby on another host "
            "takes over within about a second; the host comes back with `up` as a standby",
            inject_kill_holder_host,
        ),
        ClusterFault(
            "kill-standby-host",
            HOST_FAULT_ALLOWANCE,
            180,
            2.0,
            "every process of a standby's host SIGKILLed (and of its Redis, maybe the primary): "
            "trading goes on; the host comes back with `up`",
            inject_kill_standby_host,
        ),
        ClusterFault(
            "kill-primary-host",
            HOST_FAULT_ALLOWANCE,
            180,
            2.0,
            "every process of the Redis primary's host SIGKILLed: Sentinel fails over, every "
            "program follows the new primary; the old one rejoins as a replica",
            inject_kill_primary_host,
        ),
        ClusterFault(
            "kill-holder-worker",
            HOST_FAULT_ALLOWANCE,
            90,
            2.0,
            "SIGKILL of the active worker alone: the warm standby on another host (or the "
            "holder's supervisord restart) takes over with a larger epoch, nothing sent twice",
            inject_kill_holder_worker,
        ),
        ClusterFault(
            "cut-holder-host",
            HOST_FAULT_ALLOWANCE,
            180,
            2.0,
            "the lease holder's host cut off from the others and the venue, then healed: it "
            "fences itself before its lease can expire, another host takes over",
            inject_cut_holder_host,
        ),
        ClusterFault(
            "cut-primary-host",
            HOST_FAULT_ALLOWANCE,
            180,
            2.0,
            "the Redis primary's host cut off, then healed: the majority fails over, the "
            "isolated primary is demoted when it is back",
            inject_cut_primary_host,
        ),
        ClusterFault(
            "redis-primary-kill",
            HOST_FAULT_ALLOWANCE,
            120,
            2.0,
            "SIGKILL of the primary's redis-server alone: restarted from its AOF by its "
            "supervisord, or failed over when that takes longer than down-after",
            inject_redis_primary_kill,
        ),
        ClusterFault(
            "redis-primary-pause",
            HOST_FAULT_ALLOWANCE,
            120,
            2.0,
            "SIGSTOP of the primary's redis-server for 0.3-4 s, then SIGCONT: a stall below "
            "Sentinel's down-after, a failover above it",
            inject_redis_primary_pause,
        ),
        ClusterFault(
            "sentinel-restart",
            0,
            90,
            1.0,
            "one Sentinel stopped and started again: two keep the quorum, nothing is lost",
            inject_sentinel_restart,
            weight=0.5,
        ),
        ClusterFault(
            "deploy",
            0,
            300,
            2.0,
            "a cluster deploy while trading: handover at a tick boundary, nothing missed",
            inject_deploy,
            available=_can_deploy,
        ),
        ClusterFault(
            "rollback",
            0,
            300,
            2.0,
            "a cluster rollback to the release before the last deploy, the same way",
            inject_rollback,
            weight=0.5,
            available=_can_roll_back,
        ),
    ]
}

DEFAULT_KINDS = list(CATALOGUE)


@dataclass(frozen=True)
class Planned:
    kind: str
    gap_s: float  # the pause before it


def plan(seed: int, kinds: list[str], gap_s: tuple[float, float], n: int = 200) -> list[Planned]:
    """`n` faults in a seeded order: the first len(kinds) are every kind once, then kinds drawn
    by weight; a rollback never before the first deploy. The same seed and kinds give the same
    schedule."""
    rnd = random.Random(f"{seed}:cluster")
    first = list(kinds)
    rnd.shuffle(first)
    if "rollback" in first and "deploy" in first and first.index("rollback") < first.index("deploy"):
        i, j = first.index("rollback"), first.index("deploy")
        first[i], first[j] = first[j], first[i]
    weights = [CATALOGUE[k].weight for k in kinds]
    out = []
    deployed = False
    for i in range(n):
        kind = first[i] if i < len(first) else rnd.choices(kinds, weights)[0]
        if kind == "rollback" and not deployed and "deploy" in kinds:
            kind = "deploy"  # nothing to roll back to yet
        deployed = deployed or kind == "deploy"
        out.append(Planned(kind, round(rnd.uniform(*gap_s), 2)))
    return out
