"""Hot reload: how long a strategy change takes to run, and what it costs the trading loop, against
a blue/green deploy of the same change, alternated on one real stack in one run
(`deploy/sandbox.py`).

Three operations, each at a random (seeded) phase of a tick:

- edit: the strategy file in the running release is rewritten (a changed file: write beside,
  then rename, as editors do); the worker's own check between two ticks sees the new hash,
  validates the module on a fresh module object, dry-evaluates it and swaps it in;
- api: `POST /reload` to the `api` program (what `baton reload` ends with, and `make reload` when
  nothing changed): a forced reload through `control.reload_seq`, answered once the worker has
  written its verdict;
- blue-green: `baton deploy` of the working tree, measured as in bench/deploy_gap.py.

For the reloads, from Redis: the request's wall time (the file's rename, or the HTTP request
leaving), the worker's verdict in `baton:reload` (`state`, `at_ms`), and the tick journal:

- request -> reloaded: `at_ms` minus the request; the new code runs from the next tick on;
- request -> first tick on the new code: `started_ms` of the first tick after `at_ms`;
- swap: `at_ms` minus the end (`started_ms + duration_ms`) of the tick before it: what the check
  itself took between two ticks (with the heartbeat written in between);
- missed ticks: indices absent from the journal between the last tick before the request and
  two ticks after the new code's first one, and the `missed_before` those entries report.

    python -m bench.hot_reload [--tick-ms 1000] [--reloads 10] [--deploys 5] [--json-out ...]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from baton.errors import OpFailed
from bench import deploy_gap
from bench.machine import LoadSampler, command_line, machine_info
from bench.numbers import cell, p99
from bench.stack import (
    KEYS,
    SETTLE_TICKS,
    Api,
    Failures,
    add_run_options,
    finish,
    journal_fields,
    last_entry,
    save_logs,
    settle_first,
    start_stack,
    stop,
    wait_phase,
)
from deploy.sandbox import Stack, wait_for
from kernel.clock import wall_ms_precise

EDIT, API, DEPLOY = "edit", "api", deploy_gap.BLUE_GREEN
METHODS = (EDIT, API, DEPLOY)
STRATEGY = Path("worker") / "strategies" / "snipe.py"


@dataclass
class Sample:
    method: str
    index: int
    phase_ms: int
    state: str  # the worker's verdict (ok / refused); deploys: "deployed"
    reloaded_ms: int  # request -> verdict at_ms (deploys: -> the new holder's first tick)
    first_new_tick_ms: int  # request -> started_ms of the first tick on the new code
    swap_ms: int | None  # verdict at_ms - end of the tick before it (reloads)
    missed: int  # absent tick indices around the operation
    missed_before: int  # what the journal entries after it report
    op_s: float  # the request's own wall time (edit: the write; api: the HTTP round trip; deploy)


def reload_verdict_after(st: Stack, at_ms: int, timeout_s: float) -> dict[str, str]:
    return wait_for(
        lambda: (h := st.redis.hgetall(KEYS.reload())) and int(h.get("at_ms", 0)) > at_ms and h,
        timeout_s,
        "the worker's reload verdict",
    )


def around(
    st: Stack, before_tick: int, after_ms: int, timeout_s: float
) -> tuple[dict[str, str], int, int, int | None]:
    """Once SETTLE_TICKS more ticks ran after `after_ms`: (the first tick after it, absent indices
    since `before_tick`, their missed_before, the end of the last tick before `after_ms`)."""

    def ready() -> list[dict[str, str]] | None:
        fs = journal_fields(st)
        later = [f for f in fs if int(f["started_ms"]) > after_ms]
        return fs if len(later) > SETTLE_TICKS else None

    fs = wait_for(ready, timeout_s, "ticks after the operation")
    first = next(f for f in fs if int(f["started_ms"]) > after_ms)
    prev = [f for f in fs if int(f["started_ms"]) <= after_ms]
    prev_end = int(prev[-1]["started_ms"]) + int(prev[-1]["duration_ms"]) if prev else None
    span = [f for f in fs if int(f["tick"]) > before_tick]
    present = {int(f["tick"]) for f in span}
    last = max(present) if present else before_tick
    missed = sum(1 for t in range(before_tick + 1, last + 1) if t not in present)
    return first, missed, sum(int(f.get("missed_before", 0)) for f in span), prev_end


def reload_once(
    st: Stack, api: Api, method: str, index: int, rng: random.Random, tick_ms: int, timeout_s: float
) -> Sample:
    before = last_entry(st)
    prev_at = int(st.redis.hget(KEYS.reload(), "at_ms") or 0)
    phase = wait_phase(rng, tick_ms)
    if method == EDIT:
        code_dir = Path(st.redis.hget(KEYS.worker(before.color), "code_dir") or "")
        path = code_dir / STRATEGY
        text = path.read_text()
        tmp = path.with_name(f".{path.name}.bench")
        tmp.write_text(text + f"# bench.hot_reload edit {index} at {time.time_ns()}\n")
        t0 = wall_ms_precise()
        os.replace(tmp, path)
        op_s = (wall_ms_precise() - t0) / 1000
    else:
        t0 = wall_ms_precise()
        rtt, _ = api.post("/reload")
        op_s = rtt / 1000
    verdict = reload_verdict_after(st, prev_at, timeout_s)
    at = int(verdict["at_ms"])
    first, missed, missed_before, prev_end = around(st, before.tick, at, timeout_s)
    return Sample(
        method=method,
        index=index,
        phase_ms=phase,
        state=verdict.get("state", ""),
        reloaded_ms=round(at - t0),
        first_new_tick_ms=round(int(first["started_ms"]) - t0),
        swap_ms=at - prev_end if prev_end is not None else None,
        missed=missed,
        missed_before=missed_before,
        op_s=round(op_s, 4),
    )


def deploy_once(st: Stack, index: int, rng: random.Random, tick_ms: int, timeout_s: float) -> Sample:
    t_before = last_entry(st).tick
    d = deploy_gap.measure(st, DEPLOY, index, rng, tick_ms, timeout_s)
    first_ms = round(d.first_tick_s * 1000)
    fs = journal_fields(st)
    span = [f for f in fs if int(f["tick"]) > t_before]
    return Sample(
        method=DEPLOY,
        index=index,
        phase_ms=d.phase_ms,
        state="deployed",
        reloaded_ms=first_ms,
        first_new_tick_ms=first_ms,
        swap_ms=None,
        missed=d.missed,
        missed_before=sum(int(f.get("missed_before", 0)) for f in span),
        op_s=d.op_s,
    )


# --- numbers -------------------------------------------------------------------------------------


def summarise(samples: list[Sample], failures: dict[str, int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        mine = [s for s in samples if s.method == method]
        if not mine:
            continue
        rel = [float(s.reloaded_ms) for s in mine]
        first = [float(s.first_new_tick_ms) for s in mine]
        swap = [float(s.swap_ms) for s in mine if s.swap_ms is not None]
        out[method] = {
            "n": len(mine),
            "failed": failures.get(method, 0),
            "not_ok": sum(s.state not in ("ok", "deployed") for s in mine),
            "missed_total": sum(s.missed for s in mine),
            "missed_before_total": sum(s.missed_before for s in mine),
            "reloaded_ms_median": statistics.median(rel),
            "reloaded_ms_p99": p99(rel),
            "first_new_tick_ms_median": statistics.median(first),
            "first_new_tick_ms_p99": p99(first),
            "swap_ms_median": statistics.median(swap) if swap else None,
            "swap_ms_p99": p99(swap) if swap else None,
            "op_s_median": statistics.median(s.op_s for s in mine),
        }
    return out


LABELS = {
    EDIT: "edit (file changed, worker's own check)",
    API: "api (POST /reload, forced)",
    DEPLOY: "blue-green deploy",
}


def render(summary: dict[str, dict[str, Any]], tick_ms: int) -> str:
    n_max = max((v["n"] for v in summary.values()), default=0)
    p = "p99 (max)" if n_max < 100 else "p99"
    rows = [
        f"| operation (tick {tick_ms} ms) | n | request → new code in place ms median | {p} "
        f"| request → first tick on it ms median | {p} | swap between ticks ms median | {p} "
        f"| ticks missed | request wall s median |",
        "|" + "---|" * 10,
    ]
    for method, v in summary.items():
        bad = f" ({v['failed']} failed)" if v["failed"] else ""
        bad += f" ({v['not_ok']} refused)" if v["not_ok"] else ""
        rows.append(
            f"| {LABELS[method]} | {v['n']}{bad} "
            f"| {cell(v['reloaded_ms_median'])} | {cell(v['reloaded_ms_p99'])} "
            f"| {cell(v['first_new_tick_ms_median'])} | {cell(v['first_new_tick_ms_p99'])} "
            f"| {cell(v['swap_ms_median'])} | {cell(v['swap_ms_p99'])} "
            f"| {v['missed_total']} | {v['op_s_median']:.2f} |"
        )
    out = "\n".join(rows)
    if DEPLOY in summary:
        d = summary[DEPLOY]
        parts = [
            f"{m}: first tick on the new code "
            f"{d['first_new_tick_ms_median'] / summary[m]['first_new_tick_ms_median']:.1f}x "
            "sooner than a deploy (medians)"
            for m in (EDIT, API)
            if m in summary and summary[m]["first_new_tick_ms_median"] > 0
        ]
        if parts:
            out += "\n\n" + "; ".join(parts)
    return out


# --- the run -------------------------------------------------------------------------------------


def plan(reloads: int, deploys: int) -> list[str]:
    ops = []
    for i in range(max(reloads, deploys)):
        if i < reloads:
            ops += [EDIT, API]
        if i < deploys:
            ops.append(DEPLOY)
    return ops


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    timeout_s = 60 + 4 * args.tick_ms / 1000
    samples: list[Sample] = []
    failures = Failures()
    load = LoadSampler().__enter__()
    # The bench's reloads are not what is measured: no rate limit in their way.
    st = start_stack(args.tick_ms, BATON_API_MUTATIONS_PER_MIN="6000")
    try:
        api = Api(st, timeout_s=60)
        settle_first(st, timeout_s)
        counts = dict.fromkeys(METHODS, 0)
        for method in plan(args.reloads, args.deploys):
            i = counts[method]
            counts[method] += 1
            try:
                if method == DEPLOY:
                    s = deploy_once(st, i, rng, args.tick_ms, timeout_s)
                else:
                    s = reload_once(st, api, method, i, rng, args.tick_ms, timeout_s)
            except (OpFailed, TimeoutError, subprocess.TimeoutExpired, RuntimeError, httpx.HTTPError) as exc:
                failures.record(method, i, exc)
                continue
            samples.append(s)
            print(
                f"{method} #{i}: phase {s.phase_ms} ms, {s.state}, in place after {s.reloaded_ms} ms, "
                f"first tick on it after {s.first_new_tick_ms} ms"
                + (f", swap {s.swap_ms} ms" if s.swap_ms is not None else "")
                + f", missed {s.missed}",
                flush=True,
            )
        if failures or args.keep_logs:
            save_logs(st, args.json_out.parent / f"hot_reload-logs-{args.tick_ms}ms")
    finally:
        load.__exit__(None, None, None)
        stop(st, args.keep_home)
    return {
        "benchmark": "hot_reload",
        "command": command_line("hot_reload"),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            **load.summary(),
        ),
        "reloads_per_method": args.reloads,
        "deploys": args.deploys,
        "seed": args.seed,
        "summary": summarise(samples, failures),
        "errors": failures.errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.hot_reload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reloads", type=int, default=10, help="reloads of each kind (edit, api)")
    ap.add_argument("--deploys", type=int, default=5, help="blue/green deploys, for comparison")
    add_run_options(ap, "hot_reload")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    finish(result, render(result["summary"], args.tick_ms), args.json_out)


if __name__ == "__main__":
    main()
