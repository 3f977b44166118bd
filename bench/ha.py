"""The failover table of issue #24: what each fault costs a three-host cluster (deploy/cluster:
network namespaces h1-h3 and a venue, Redis with Sentinel, a warm standby worker on another
host), side by side with today's single-host failover, in one run at the same tick length.

Each fault is dealt N times at seeded random phases of a tick, in turn:

- holder-host-kill: every process of the lease holder's host SIGKILLed (`Cluster.kill_host`);
- worker-kill: the active worker SIGKILLed, its standby on another host;
- primary-host-kill: the Redis primary's host SIGKILLed (a Sentinel failover);
- holder-host-cut: the lease holder's host cut off from the others and the venue (`cut`);
- and first, on a single-host sandbox stack (deploy/sandbox.py, as `make run` makes it), the
  active worker SIGKILLed and restarted by supervisor (bench/failover.py's kill).

Every figure is read back from Redis: the tick journal says which ticks ran under which epoch
and when they started, the lease hash who holds it, since when (`acquired_ms`) and until when
(`expires_ms`). Per fault: missed ticks (indices absent between the last tick started before
the fault and the first one after it), fault -> first tick of the new holder, fault -> lease
taken, the old holder's orders after its deadline, duplicate orders. At the end trading is
paused, every intent made final, and the money checked against the venue's (the sim's) orders:
no duplicate order, no filled order without its position, the ledger exact to the micro-dollar.

    python -m bench.ha [--runs 10] [--tick-ms 5000] [--single-runs N] [--only FAULT,...] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from baton.errors import OpFailed
from bench import failover
from bench.ha_cluster import ClusterFaults, Reader, drain_and_collect, measure
from bench.ha_numbers import (
    CUT,
    FAULTS,
    HOST_KILL,
    PRIMARY_KILL,
    SINGLE,
    WORKER_KILL,
    Money,
    Sample,
    after_deadline,
    attribute,
    duplicates,
    money_row,
    render,
    summarise,
)
from bench.machine import LoadSampler, command_line, machine_info
from bench.stack import (
    SETTLE_TICKS,
    Failures,
    add_run_options,
    finish,
    save_logs,
    start_stack,
    stop,
    wait_phase,
)
from deploy.cluster import Cluster
from deploy.sandbox import SLOT_PARAMS, STALE_MAKER, Stack, wait_for
from kernel.clock import wall_ms

CLUSTER_FAULTS = (HOST_KILL, WORKER_KILL, PRIMARY_KILL, CUT)
ERRORS = (OpFailed, TimeoutError, subprocess.TimeoutExpired, RuntimeError, OSError)
# The trading of the stacks of bench/stack.py: 4 assets, 15 s and 1 m windows, entries at edge 0
# against the pre-#26 stale maker (deploy/sandbox.py).
TRADING = {
    "BATON_TIMEFRAMES": "15s,1m",
    "BATON_ASSETS": "btc,eth,sol,xrp",
    SLOT_PARAMS: "edge=0.0",
    **STALE_MAKER,
}


def plan(runs: int, faults: tuple[str, ...]) -> list[str]:
    """Each fault `runs` times, in turn (so that a slow hour of the machine spreads over all)."""
    return [f for _ in range(runs) for f in faults]


# --- today: one host, supervisor restarts the killed worker ----------------------------------------


def single_kill(
    st: Stack, rd: Reader, index: int, rng: random.Random, tick_ms: int, timeout_s: float
) -> Sample:
    """bench/failover.py's kill, measured as the cluster's faults are."""
    _, pid, _ = failover.active(st)
    phase = wait_phase(rng, tick_ms)
    before = wait_for(rd.lease, timeout_s, "the lease")
    fault_ms = wall_ms()
    os.kill(pid, signal.SIGKILL)
    s = measure(rd, SINGLE, index, phase, "worker", before, fault_ms, True, tick_ms, timeout_s)
    s.missed_after, s.handoffs_after = rd.settle(s.new_first_tick, timeout_s)
    return s


def run_single(
    args: argparse.Namespace, rng: random.Random, failures: Failures
) -> tuple[list[Sample], Money | None]:
    timeout_s = 60 + 4 * args.tick_ms / 1000
    samples: list[Sample] = []
    money = None
    st = start_stack(args.tick_ms, " - today's single host")
    try:
        rd = Reader(lambda: st.client("admin"))
        rd.wait_ticks(wait_for(rd.lease, timeout_s, "the lease").epoch, SETTLE_TICKS, timeout_s)
        for i in range(args.single_runs):
            try:
                s = single_kill(st, rd, i, rng, args.tick_ms, timeout_s)
            except ERRORS as exc:
                failures.record(SINGLE, i, exc)
                continue
            samples.append(s)
            report(s)
        st.baton("pause", "--reason", "bench-ha: drain before the money check")
        money = drain_and_collect(rd, st.clob_url, timeout_s)
        if failures or args.keep_logs:
            save_logs(st, args.json_out.parent / "ha-logs-single")
    finally:
        stop(st, args.keep_home)
    return samples, money


# --- the cluster ----------------------------------------------------------------------------------


def run_cluster(
    args: argparse.Namespace, faults: tuple[str, ...], rng: random.Random, failures: Failures
) -> tuple[list[Sample], Money | None]:
    timeout_s = 90 + 4 * args.tick_ms / 1000
    home = Path(tempfile.mkdtemp(prefix="baton-ha-"))
    env = {"BATON_TICK_MS": str(args.tick_ms), **TRADING}
    c = Cluster.from_env(home=home, name=args.name, net=args.net, env=env)
    samples: list[Sample] = []
    money = None
    print(f"starting cluster {args.name} on {args.net} under {home} (tick {args.tick_ms} ms)", flush=True)
    try:
        c.start(timeout_s=300)
        ops = ClusterFaults(c, args.tick_ms, timeout_s)
        lease = wait_for(ops.rd.lease, timeout_s, "the lease")
        ops.rd.wait_ticks(lease.epoch, SETTLE_TICKS, timeout_s)
        counts = dict.fromkeys(faults, 0)
        for fault in plan(args.runs, faults):
            i = counts[fault]
            counts[fault] += 1
            try:
                s = ops.deal(fault, i, rng)
            except ERRORS as exc:
                failures.record(fault, i, exc)
                continue
            samples.append(s)
            report(s)
        money = ops.money()
    finally:
        if args.keep_logs or failures:
            keep_cluster_logs(home, args.json_out.parent / "ha-logs-cluster")
        c.stop()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
    return samples, money


def keep_cluster_logs(home: Path, dest: Path) -> None:
    """Every host's logs (nothing else: its var/ holds secrets) next to the JSON."""
    for log in home.glob("hosts/*/var/log/*.log"):
        (dest / log.parts[-4]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, dest / log.parts[-4] / log.name)
    print(f"logs copied to {dest}", flush=True)


def report(s: Sample) -> None:
    lease = "kept" if s.to_lease_ms is None else f"{s.to_lease_ms} ms"
    print(
        f"{s.fault} #{s.index} ({s.target}, {s.old_host} -> {s.new_host}): phase {s.phase_ms} ms, "
        f"missed {s.missed}, first tick {s.to_first_tick_ms} ms after the fault, lease taken: {lease}; "
        f"until settled {s.missed_after} more missed, {s.handoffs_after} more handoffs",
        flush=True,
    )


# --- the run -------------------------------------------------------------------------------------


def judge(samples: list[Sample], money: Money | None, tick_ms: int) -> tuple[dict[int, int], dict[int, int]]:
    """Per sample (its position in `samples`): duplicate orders in its stretch of the run, and
    the old holder's orders after its deadline."""
    if money is None:
        return {}, {}
    dups = attribute(samples, duplicates(money), tick_ms)
    late = {n: len(after_deadline(money, s)) for n, s in enumerate(samples)}
    return dups, late


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    only = tuple(f for f in (args.only.split(",") if args.only else FAULTS) if f)
    failures = Failures()
    load = LoadSampler().__enter__()
    single: list[Sample] = []
    cluster: list[Sample] = []
    moneys: dict[str, Money] = {}
    dups: dict[int, int] = {}
    late: dict[int, int] = {}
    try:
        if SINGLE in only and args.single_runs:
            single, m = run_single(args, rng, failures)
            if m is not None:
                moneys["single host"] = m
        faults = tuple(f for f in CLUSTER_FAULTS if f in only)
        if faults and args.runs:
            cluster, m = run_cluster(args, faults, rng, failures)
            if m is not None:
                moneys["cluster"] = m
    finally:
        load.__exit__(None, None, None)
    for part, m in ((single, moneys.get("single host")), (cluster, moneys.get("cluster"))):
        d, lt = judge(part, m, args.tick_ms)
        offset = len(single) if part is cluster else 0
        dups.update({n + offset: v for n, v in d.items()})
        late.update({n + offset: v for n, v in lt.items()})
    samples = single + cluster
    summary = summarise(samples, failures, dups, late)
    money = {name: money_row(m) for name, m in moneys.items()}
    return {
        "benchmark": "ha",
        "command": command_line("ha"),
        "machine": machine_info(tick_ms=args.tick_ms, cluster=args.name, net=args.net, **load.summary()),
        "runs": args.runs,
        "single_runs": args.single_runs,
        "seed": args.seed,
        "summary": summary,
        "money": money,
        "errors": failures.errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="times each cluster fault is dealt")
    ap.add_argument("--single-runs", type=int, default=None, help="kills on the single host (default --runs)")
    ap.add_argument("--only", default="", help=f"comma-separated faults (default all: {','.join(FAULTS)})")
    ap.add_argument(
        "--quick", action="store_true", help="2 runs of each, results in a temp dir (a smoke run)"
    )
    ap.add_argument("--name", default="bbn", help="the cluster's name (its namespaces, links, bridge)")
    ap.add_argument("--net", default="10.78.3.0/24", help="the cluster's subnet")
    add_run_options(ap, "ha")
    ap.set_defaults(tick_ms=5000)
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 2)
        if args.json_out == ap.get_default("json_out"):
            args.json_out = Path(tempfile.mkdtemp(prefix="baton-bench-ha-")) / "ha.json"
    if args.single_runs is None:
        args.single_runs = args.runs
    unknown = [f for f in args.only.split(",") if f and f not in FAULTS]
    if unknown:
        ap.error(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    finish(result, render(result["summary"], args.tick_ms, result["money"]), args.json_out)


if __name__ == "__main__":
    main()
