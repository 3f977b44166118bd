"""Crash failover: SIGKILL of the active worker against a planned blue/green deploy, alternated on
one real stack in one run (`deploy/sandbox.py`: redis-server, supervisord, sim, feed, api,
settle, the workers).

A kill lands at a random (seeded) phase of a tick. Supervisor restarts the killed program; the new
process imports, passes its readiness check, sees that the lease holder's process is gone, takes
the lease with a new epoch, reconciles what was in flight and ticks on. Every number is read from
the tick journal (`baton:journal:ticks`) and the worker's heartbeat (`baton:worker:<colour>`):

- missed ticks: tick indices absent between the killed holder's last tick and the new holder's
  first one; `missed_before` of that first entry is what the runtime itself counted (they agree);
- kill -> next tick: from the SIGKILL to `started_ms` of the new holder's first tick;
- takeover delay: that tick's `started_ms` minus the boundary right after the old holder's last
  tick, as in bench/deploy_gap.py (a missed tick costs at least one tick length);
- kill -> ready: from the SIGKILL to the new process's `ready_ms` (boot, imports, readiness);
- the deploys are measured exactly as in bench/deploy_gap.py.

    python -m bench.failover [--tick-ms 1000] [--kills 10] [--deploys 5] [--json-out ...]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from baton.errors import OpFailed
from bench import deploy_gap
from bench.machine import LoadSampler, command_line, machine_info
from bench.numbers import cell, p99
from bench.stack import (
    KEYS,
    SETTLE_TICKS,
    Failures,
    add_run_options,
    entry_fields,
    finish,
    new_holder_entries,
    save_logs,
    settle_first,
    start_stack,
    stop,
    wait_phase,
    wait_ticks_by,
)
from deploy.sandbox import Stack, wait_for

KILL = "sigkill"
DEPLOY = deploy_gap.BLUE_GREEN


@dataclass
class Sample:
    method: str
    index: int
    phase_ms: int
    color: str
    old_epoch: int
    new_epoch: int
    old_last_tick: int
    new_first_tick: int
    missed: int  # from the journal's tick indices
    missed_before: int  # what the new holder's first journal entry says
    takeover_ms: int  # started_ms of the new first tick - boundary after the old last tick
    to_next_tick_ms: int  # from the kill (or the deploy's start) to the new holder's first tick
    to_ready_ms: int | None  # from the kill to the restarted worker's readiness (kills only)
    op_s: float  # the operation's own wall time (the kill: ~0; the deploy command)


def active(st: Stack) -> tuple[str, int, int]:
    lease = st.redis.hgetall(KEYS.lease())
    color = lease["color"]
    info = st.supervisor("getProcessInfo", f"worker-{color}")
    return color, int(info["pid"]), int(lease["epoch"])


def kill_once(st: Stack, index: int, rng: random.Random, tick_ms: int, timeout_s: float) -> Sample:
    color, pid, epoch = active(st)
    phase = wait_phase(rng, tick_ms)
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    op_s = time.time() - t0
    entries = wait_for(
        lambda: new_holder_entries(st, epoch), timeout_s, f"a new holder's first tick after kill {index}"
    )
    old_last = max(e.tick for e in entries if e.epoch == epoch)
    first = min((e for e in entries if e.epoch > epoch), key=lambda e: e.tick)
    fields = entry_fields(st, first.tick)
    hb = st.redis.hgetall(KEYS.worker(first.color))
    ready_ms = int(hb.get("ready_ms", 0) or 0)
    sample = Sample(
        method=KILL,
        index=index,
        phase_ms=phase,
        color=color,
        old_epoch=epoch,
        new_epoch=first.epoch,
        old_last_tick=old_last,
        new_first_tick=first.tick,
        missed=first.tick - old_last - 1,
        missed_before=int(fields.get("missed_before", -1)),
        takeover_ms=first.started_ms - (old_last + 1) * tick_ms,
        to_next_tick_ms=round(first.started_ms - t0 * 1000),
        to_ready_ms=round(ready_ms - t0 * 1000) if ready_ms and int(hb.get("pid", 0) or 0) != pid else None,
        op_s=round(op_s, 4),
    )
    wait_ticks_by(st, sample.new_epoch, first.tick + SETTLE_TICKS, timeout_s)
    return sample


def deploy_once(st: Stack, index: int, rng: random.Random, tick_ms: int, timeout_s: float) -> Sample:
    d = deploy_gap.measure(st, DEPLOY, index, rng, tick_ms, timeout_s)
    fields = entry_fields(st, d.new_first_tick)
    return Sample(
        method=DEPLOY,
        index=index,
        phase_ms=d.phase_ms,
        color=d.from_color,
        old_epoch=d.old_epoch,
        new_epoch=d.new_epoch,
        old_last_tick=d.old_last_tick,
        new_first_tick=d.new_first_tick,
        missed=d.missed,
        missed_before=int(fields.get("missed_before", -1)),
        takeover_ms=d.takeover_ms,
        to_next_tick_ms=round(d.first_tick_s * 1000),
        to_ready_ms=None,
        op_s=d.op_s,
    )


# --- numbers -------------------------------------------------------------------------------------


def summarise(samples: list[Sample], failures: dict[str, int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method in (KILL, DEPLOY):
        mine = [s for s in samples if s.method == method]
        if not mine:
            continue
        missed = [s.missed for s in mine]
        take = [float(s.takeover_ms) for s in mine]
        nxt = [float(s.to_next_tick_ms) for s in mine]
        ready = [float(s.to_ready_ms) for s in mine if s.to_ready_ms is not None]
        out[method] = {
            "n": len(mine),
            "failed": failures.get(method, 0),
            "missed_mean": statistics.fmean(missed),
            "missed_max": max(missed),
            "missed_total": sum(missed),
            "runtime_counted_agrees": all(s.missed_before == s.missed for s in mine),
            "takeover_ms_median": statistics.median(take),
            "takeover_ms_p99": p99(take),
            "to_next_tick_ms_median": statistics.median(nxt),
            "to_next_tick_ms_p99": p99(nxt),
            "to_ready_ms_median": statistics.median(ready) if ready else None,
            "to_ready_ms_p99": p99(ready) if ready else None,
            "op_s_median": statistics.median(s.op_s for s in mine),
        }
    return out


def render(summary: dict[str, dict[str, Any]], tick_ms: int) -> str:
    n_max = max((v["n"] for v in summary.values()), default=0)
    p99_label = "p99 (max)" if n_max < 100 else "p99"
    rows = [
        f"| operation (tick {tick_ms} ms) | n | missed ticks/op mean | max | runtime's count agrees "
        f"| op → next tick ms median | {p99_label} | takeover delay ms median | {p99_label} "
        f"| kill → ready ms median | op wall s median |",
        "|" + "---|" * 11,
    ]
    for method, v in summary.items():
        failed = f" ({v['failed']} failed)" if v["failed"] else ""
        rows.append(
            f"| {method} | {v['n']}{failed} | {v['missed_mean']:.2f} | {v['missed_max']} "
            f"| {'yes' if v['runtime_counted_agrees'] else 'NO'} "
            f"| {cell(v['to_next_tick_ms_median'])} | {cell(v['to_next_tick_ms_p99'])} "
            f"| {cell(v['takeover_ms_median'])} | {cell(v['takeover_ms_p99'])} "
            f"| {cell(v['to_ready_ms_median'])} | {v['op_s_median']:.2f} |"
        )
    out = "\n".join(rows)
    if KILL in summary and DEPLOY in summary:
        k, d = summary[KILL], summary[DEPLOY]
        parts = [
            f"takeover delay median {k['takeover_ms_median'] / max(d['takeover_ms_median'], 1):.0f}x "
            f"(deploy under the journal's 1 ms taken as 1 ms)",
            f"p99 {k['takeover_ms_p99'] / max(d['takeover_ms_p99'], 1):.0f}x",
        ]
        if d["missed_mean"]:
            parts.append(f"missed ticks {k['missed_mean'] / d['missed_mean']:.1f}x")
        else:
            parts.append(f"missed ticks {k['missed_mean']:.2f} per kill against none per deploy")
        out += "\n\nsigkill / blue-green: " + ", ".join(parts)
    return out


# --- the run -------------------------------------------------------------------------------------


def plan(kills: int, deploys: int) -> list[str]:
    """Kills and deploys interleaved evenly, a kill first."""
    ops: list[str] = []
    k = d = 0
    while k < kills or d < deploys:
        if k < kills and (d >= deploys or k * max(deploys, 1) <= d * max(kills, 1)):
            ops.append(KILL)
            k += 1
        else:
            ops.append(DEPLOY)
            d += 1
    return ops


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    timeout_s = 60 + 4 * args.tick_ms / 1000
    samples: list[Sample] = []
    failures = Failures()
    load = LoadSampler().__enter__()
    st = start_stack(args.tick_ms)
    try:
        settle_first(st, timeout_s)
        counts = {KILL: 0, DEPLOY: 0}
        for method in plan(args.kills, args.deploys):
            i = counts[method]
            counts[method] += 1
            op = kill_once if method == KILL else deploy_once
            try:
                s = op(st, i, rng, args.tick_ms, timeout_s)
            except (OpFailed, TimeoutError, subprocess.TimeoutExpired, RuntimeError) as exc:
                failures.record(method, i, exc)
                continue
            samples.append(s)
            print(
                f"{method} #{i}: phase {s.phase_ms} ms, missed {s.missed} (runtime: {s.missed_before}), "
                f"next tick after {s.to_next_tick_ms} ms, takeover {s.takeover_ms} ms"
                + (f", ready after {s.to_ready_ms} ms" if s.to_ready_ms is not None else ""),
                flush=True,
            )
        stats = st.redis.hgetall(KEYS.stats())
        counted = int(stats.get("ticks_missed", 0))
        if failures or args.keep_logs:
            save_logs(st, args.json_out.parent / f"failover-logs-{args.tick_ms}ms")
    finally:
        load.__exit__(None, None, None)
        stop(st, args.keep_home)
    summary = summarise(samples, failures)
    return {
        "benchmark": "failover",
        "command": command_line("failover"),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            **load.summary(),
        ),
        "kills": args.kills,
        "deploys": args.deploys,
        "seed": args.seed,
        "summary": summary,
        "ticks_missed_counted_by_runtime": counted,
        "errors": failures.errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--deploys", type=int, default=5, help="blue/green deploys, for comparison")
    add_run_options(ap, "failover")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    finish(result, render(result["summary"], args.tick_ms), args.json_out)


if __name__ == "__main__":
    main()
