"""The deploy gap: a blue/green `baton deploy` against the naive way, `supervisorctl restart` of the
active worker, alternated on one stack in one run.

Every operation is measured from the tick journal (`baton:journal:ticks`), not from what a CLI says:

- missed ticks: tick indices absent between the old lease holder's last tick and the new holder's
  first one (lease holders are told apart by their epoch);
- takeover delay: `started_ms` of the new holder's first tick minus the boundary of the first tick
  after the old holder's last one, so a missed tick costs at least one tick length;
- op wall time: how long the command itself ran (`baton deploy --json`, `supervisorctl restart`);
- new first tick: from the command's start to the start of the new holder's first tick.

Each operation starts at a random phase within a tick (seeded), as a person's would.

    python -m bench.deploy_gap [--tick-ms 1000] [--deploys 10] [--json-out bench/results/deploy_gap.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baton.errors import OpFailed
from bench.machine import command_line, machine_info, short_machine_line
from bench.numbers import p99
from bench.stack import (
    KEYS,
    SETTLE_TICKS,
    Failures,
    add_run_options,
    finish,
    last_entry,
    new_holder_entries,
    save_logs,
    settle_first,
    start_stack,
    stopped_after,
    wait_phase,
    wait_ticks_by,
)
from deploy.sandbox import BATON, Stack, wait_for

REPO = Path(__file__).resolve().parent.parent
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
BLUE_GREEN = "blue-green"
NAIVE = "naive-restart"
METHODS = (BLUE_GREEN, NAIVE)
RESOLUTION_MS = 1  # the journal's started_ms is in whole milliseconds


@dataclass
class Sample:
    method: str
    index: int
    phase_ms: int  # where in the tick the operation started
    from_color: str
    to_color: str
    old_epoch: int
    new_epoch: int
    old_last_tick: int
    new_first_tick: int
    missed: int
    takeover_ms: int
    op_s: float  # the command's wall time
    first_tick_s: float  # from the command's start to the start of the new holder's first tick
    counted_missed: int  # what the runtime added to baton:stats ticks_missed meanwhile
    cli: dict[str, Any] = field(default_factory=dict)  # `baton deploy --json`, for comparison


def counted_missed(st: Stack) -> int:
    return int(st.redis.hget(KEYS.stats(), "ticks_missed") or 0)


# --- the two operations --------------------------------------------------------------------------


def run_cmd(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[float, str]:
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise OpFailed(f"{' '.join(cmd[:4])} ... exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return wall, out.stdout


def blue_green_deploy(st: Stack, color: str) -> tuple[float, dict[str, Any]]:
    """`make deploy`: the deploy finds the active colour itself and hands over to the other."""
    wall, stdout = run_cmd([BATON, "deploy", "--json"], st.env, timeout_s=300)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return wall, json.loads(lines[-1]) if lines else {}


def naive_restart(st: Stack, color: str) -> tuple[float, dict[str, Any]]:
    """What a person does without blue/green: restart the active worker with supervisorctl."""
    cmd = [
        SUPERVISORCTL,
        "-c",
        str(REPO / "supervisor.conf"),
        "-s",
        f"unix://{st.home}/var/run/supervisor.sock",
        "restart",
        f"worker-{color}",
    ]
    wall, _ = run_cmd(cmd, st.env, timeout_s=300)
    return wall, {}


OPERATIONS = {BLUE_GREEN: blue_green_deploy, NAIVE: naive_restart}


def measure(st: Stack, method: str, index: int, rng: random.Random, tick_ms: int, timeout_s: float) -> Sample:
    """One operation at a random phase, measured from the journal once the new holder has ticked."""
    before = last_entry(st)
    old_epoch, color = before.epoch, before.color
    missed_before = counted_missed(st)
    phase = wait_phase(rng, tick_ms)
    t0 = time.time()
    op_s, cli = OPERATIONS[method](st, color)
    entries = wait_for(
        lambda: new_holder_entries(st, old_epoch),
        timeout_s,
        f"a new lease holder's first tick after {method}",
    )
    old_last = max(e.tick for e in entries if e.epoch == old_epoch)
    first = min((e for e in entries if e.epoch > old_epoch), key=lambda e: e.tick)
    new_first = first.tick
    sample = Sample(
        method=method,
        index=index,
        phase_ms=phase,
        from_color=color,
        to_color=first.color,
        old_epoch=old_epoch,
        new_epoch=first.epoch,
        old_last_tick=old_last,
        new_first_tick=new_first,
        missed=new_first - old_last - 1,
        takeover_ms=first.started_ms - (old_last + 1) * tick_ms,
        op_s=round(op_s, 3),
        first_tick_s=round(first.started_ms / 1000 - t0, 3),
        counted_missed=0,
        cli=cli,
    )
    wait_ticks_by(st, sample.new_epoch, new_first + SETTLE_TICKS, timeout_s)
    sample.counted_missed = counted_missed(st) - missed_before
    return sample


# --- numbers -------------------------------------------------------------------------------------


def summarise(samples: list[Sample], failures: dict[str, int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        mine = [s for s in samples if s.method == method]
        if not mine:
            continue
        missed = [s.missed for s in mine]
        takeover = [float(s.takeover_ms) for s in mine]
        out[method] = {
            "n": len(mine),
            "failed": failures.get(method, 0),
            "missed_mean": statistics.fmean(missed),
            "missed_max": max(missed),
            "missed_total": sum(missed),
            "counted_missed_total": sum(s.counted_missed for s in mine),
            "takeover_ms_median": statistics.median(takeover),
            "takeover_ms_p99": p99(takeover),
            "op_s_median": statistics.median(s.op_s for s in mine),
            "first_tick_s_median": statistics.median(s.first_tick_s for s in mine),
        }
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """naive / blue-green. The journal's times are whole milliseconds: a blue-green delay below
    that is divided as 1 ms, which makes the ratio a lower bound. No ratio against 0 missed ticks."""
    if BLUE_GREEN not in summary or NAIVE not in summary:
        return {}
    bg, naive = summary[BLUE_GREEN], summary[NAIVE]
    out: dict[str, Any] = {}
    for stat in ("takeover_ms_median", "takeover_ms_p99"):
        out[stat] = naive[stat] / max(bg[stat], RESOLUTION_MS)
        out[f"{stat}_is_lower_bound"] = bg[stat] < RESOLUTION_MS
    out["missed_mean"] = naive["missed_mean"] / bg["missed_mean"] if bg["missed_mean"] else None
    return out


def num(v: float) -> str:
    """A number as short as it reads: 1000, 1.5, 0.25."""
    return f"{v:.0f}" if v >= 100 or v == int(v) else f"{v:.2g}" if v < 1 else f"{v:.1f}"


def ratio_line(summary: dict[str, dict[str, Any]]) -> str:
    r = ratios(summary)
    if not r:
        return ""
    parts = []
    for stat, label in (("takeover_ms_median", "takeover delay median"), ("takeover_ms_p99", "p99")):
        bound = ">= " if r[f"{stat}_is_lower_bound"] else ""
        parts.append(f"{label} {bound}{num(r[stat])}x")
    if r["missed_mean"] is not None:
        parts.append(f"missed ticks {num(r['missed_mean'])}x")
    else:
        parts.append(f"missed ticks {num(summary[NAIVE]['missed_mean'])} per op against none")
    note = ""
    if r["takeover_ms_median_is_lower_bound"] or r["takeover_ms_p99_is_lower_bound"]:
        note = f" (>=: blue-green under the journal's {RESOLUTION_MS} ms resolution, taken as that)"
    return "naive / blue-green: " + ", ".join(parts) + note


def render(summary: dict[str, dict[str, Any]], tick_ms: int) -> str:
    p99_note = "max" if all(v["n"] < 100 for v in summary.values()) else "nearest rank"
    head = (
        f"| method (tick {tick_ms} ms) | n | missed ticks/op mean | max | takeover delay ms median "
        f"| p99 ({p99_note}) | op wall s median | new first tick s median |"
    )
    rows = [head, "|" + "---|" * 8]
    for method, v in summary.items():
        failed = f" ({v['failed']} failed)" if v["failed"] else ""
        rows.append(
            f"| {method} | {v['n']}{failed} | {v['missed_mean']:.2f} | {v['missed_max']} "
            f"| {num(v['takeover_ms_median'])} | {num(v['takeover_ms_p99'])} "
            f"| {v['op_s_median']:.2f} | {v['first_tick_s_median']:.2f} |"
        )
    line = ratio_line(summary)
    return "\n".join([*rows, "", line] if line else rows)


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    timeout_s = 60 + 4 * args.tick_ms / 1000
    samples: list[Sample] = []
    failures = Failures()
    with stopped_after(start_stack(args.tick_ms), args.keep_home) as st:
        settle_first(st, timeout_s)
        for i in range(args.deploys):
            for method in METHODS:
                try:
                    s = measure(st, method, i, rng, args.tick_ms, timeout_s)
                except (OpFailed, TimeoutError, subprocess.TimeoutExpired) as exc:
                    failures.record(method, i, exc)
                    continue
                samples.append(s)
                print(
                    f"{method} #{i}: {s.from_color} -> {s.to_color}, phase {s.phase_ms} ms, "
                    f"missed {s.missed}, takeover {s.takeover_ms} ms, op {s.op_s:.2f} s",
                    flush=True,
                )
        anomalies = failures or any(s.missed for s in samples if s.method == BLUE_GREEN)
        if anomalies or args.keep_logs:
            save_logs(st, args.json_out.parent / f"deploy_gap-logs-{args.tick_ms}ms")
    summary = summarise(samples, failures)
    return {
        "benchmark": "deploy_gap",
        "command": command_line("deploy_gap"),
        "machine": machine_info(tick_ms=args.tick_ms),
        "deploys_per_method": args.deploys,
        "seed": args.seed,
        "summary": summary,
        "ratios_naive_over_blue_green": ratios(summary),
        "errors": failures.errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.deploy_gap", description=__doc__.split("\n\n")[0])
    ap.add_argument("--deploys", type=int, default=10, help="operations of each method")
    add_run_options(ap, "deploy_gap")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    table = render(result["summary"], args.tick_ms)
    finish(result, table, args.json_out, machine=short_machine_line(result["machine"]))


if __name__ == "__main__":
    main()
