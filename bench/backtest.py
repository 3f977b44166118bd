"""Backtest speed: a day of 16 slots at the default tick (5000 ms) on one core, from a seeded
synthetic day of 1 s candles (bench/synthetic_day.py), reported as wall time and as a multiple
of real time (a day's 86,400 s over the wall seconds). Target (issue #26): under 60 s.

What runs is `baton backtest`'s path: the day is written into a history store of its own
(feed/history.py, a temp var/history/, not timed apart from its own line), read back with
`load_candles` (timed: it is part of every backtest), and given to the engine
(kernel/backtest/engine.py `run`: windows, wake rule, inputs, risk, fills, settlement on a
virtual clock) with the strategy module from worker/strategies/. Alternatives side by side, in
one run, round-robin so that the machine's drift touches each alike:

- snipe on the default 16 slots (8 assets x 5m, 15m), ticks where no slot is awake skipped;
- the same, evaluating every tick (the engine's `skip_idle=False`): the same report (checked),
  and what the skipping saves;
- snipe on 1 slot (btc-5m): what a slot costs;
- momentum on the 16 slots: no wake rule (awake from each window's start until it has entered), exits.

The process is pinned to one core (`os.sched_setaffinity`). Per alternative: ticks run,
evaluations, trades and PnL (the same every repeat: the engine is deterministic), wall s median
and p99 (nearest rank: the maximum with fewer than 100 repeats), CPU s, multiple of real time
and evaluations per second.

    python -m bench.backtest [--repeats 3] [--hours 24] [--seed 42] [--only snipe-16]
                             [--profile DIR]   # cProfile of one run of each alternative
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from baton import settings as settings_mod
from bench.machine import LoadSampler, command_line, machine_info, publish
from bench.numbers import stats
from bench.synthetic_day import ASSETS, asset_candles
from control import backtest as cli_backtest
from control import equity_chart
from feed import history
from kernel.backtest.engine import run as run_backtest
from kernel.backtest.types import BacktestConfig, BacktestReport

REPO = Path(__file__).resolve().parent.parent
DAY_START_S = 1_796_083_200  # 2026-12-01T00:00:00Z
TIMEFRAMES = ("5m", "15m")
TICK_MS = 5000
TARGET_S = 60.0
LEAD_S = 3600


class Alternative(msgspec.Struct, frozen=True):
    key: str
    label: str
    strategy: str
    slots: int
    skip_idle: bool = True


ALTERNATIVES = (
    Alternative("snipe-16", "snipe, 16 slots, asleep ticks skipped", "snipe", 16),
    Alternative("snipe-16-every", "snipe, 16 slots, every tick", "snipe", 16, skip_idle=False),
    Alternative("snipe-1", "snipe, 1 slot, asleep ticks skipped", "snipe", 1),
    Alternative("momentum-16", "momentum, 16 slots (no wake rule)", "momentum", 16),
)


def config_of(alt: Alternative, home: Path, from_ms: int, to_ms: int) -> BacktestConfig:
    """The configuration `baton backtest` would build on a default stack (its limits, fees and
    fill model: control/backtest.py build_config), on the first `alt.slots` default slots."""
    s = settings_mod.load({"BATON_HOME": str(home)})
    slots = cli_backtest.default_slots(s)[: alt.slots]
    config = cli_backtest.build_config(s, alt.strategy, from_ms, to_ms, slots, {}, None, None)
    # No daily loss limit: a strategy that loses against the honest maker would be halted for
    # the rest of the day, and the benchmark would time a day mostly not evaluated.
    return msgspec.structs.replace(config, skip_idle=alt.skip_idle, daily_loss_limit_usd=1e12)


def answers(report: BacktestReport) -> bytes:
    """The report without what may differ between equal runs (the wall time, the ticks run)."""
    return msgspec.json.encode(msgspec.structs.replace(report, wall_s=0.0, ticks_run=0))


def prepare(home: Path, hours: float, seed: int) -> dict[str, Any]:
    """The synthetic period written into `home`'s history store (var/history/)."""
    t = time.perf_counter()
    # The period, the hour before it (look-back) and the hour after it (the windows open at its end).
    span_s = round(hours * 3600)
    day = {a: asset_candles(a, DAY_START_S - LEAD_S, LEAD_S + span_s + LEAD_S, seed) for a in ASSETS}
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    for asset, candles in day.items():
        history.merge(home, asset, candles)
    write_s = time.perf_counter() - t
    from_ms = DAY_START_S * 1000
    return {
        "from_ms": from_ms,
        "to_ms": from_ms + span_s * 1000,
        "assets": len(ASSETS),
        "candles_stored": sum(len(c) for c in day.values()),
        "generate_s": round(gen_s, 3),
        "store_write_s": round(write_s, 3),
        "store_bytes": sum(p.stat().st_size for p in history.history_dir(home).rglob("*.csv.gz")),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    alts = [a for a in ALTERNATIVES if not args.only or a.key in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        home = Path(tmp)
        setup = prepare(home, args.hours, args.seed)
        print(
            f"synthetic day: {setup['candles_stored']:,} candles of {setup['assets']} assets; generated in "
            f"{setup['generate_s']:.1f} s, stored in {setup['store_write_s']:.1f} s "
            f"({setup['store_bytes'] / 1e6:.1f} MB)",
            flush=True,
        )
        configs = {a.key: config_of(a, home, setup["from_ms"], setup["to_ms"]) for a in alts}
        modules = {a.strategy: cli_backtest.load_strategy(a.strategy) for a in alts}
        # The candles as `baton backtest` reads them: its look-back before the period and an
        # hour after it, from the store (timed: part of every backtest, the same for each row).
        t = time.perf_counter()
        problems: list[str] = []
        widest = max(alts, key=lambda a: a.slots)
        candles = cli_backtest.load_candles(
            str(home), configs[widest.key], modules[widest.strategy], problems
        )
        setup["store_load_s"] = round(time.perf_counter() - t, 3)
        setup["candles_loaded"] = sum(len(c) for c in candles.values())
        if problems:
            raise SystemExit(f"the history store read back with problems: {problems[:3]}")
        samples: dict[str, list[dict[str, Any]]] = {a.key: [] for a in alts}
        reports: dict[str, BacktestReport] = {}
        pictures: dict[str, float] = {}
        for i in range(args.repeats):
            for alt in alts:
                cfg = configs[alt.key]
                prof = cProfile.Profile() if args.profile and i == 0 else None
                cpu0, t0 = time.process_time(), time.perf_counter()
                if prof is not None:
                    prof.enable()
                rep = run_backtest(cfg, candles, modules[alt.strategy], None)
                if prof is not None:
                    prof.disable()
                    args.profile.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(args.profile / f"backtest-{alt.key}.prof")
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                if alt.key in reports and answers(reports[alt.key]) != answers(rep):
                    raise SystemExit(f"{alt.key}: two runs of the same backtest gave different reports")
                reports[alt.key] = rep
                samples[alt.key].append(
                    {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "profiled": prof is not None}
                )
                print(f"  {alt.key:16s} run {i + 1}: {wall:6.2f} s wall, {cpu:6.2f} s CPU", flush=True)
                if alt.key not in pictures:
                    t = time.perf_counter()
                    equity_chart.write(rep, home / "var" / "backtests" / alt.key / "equity.html")
                    pictures[alt.key] = round(time.perf_counter() - t, 3)
    span_s = (setup["to_ms"] - setup["from_ms"]) / 1000
    rows = []
    for alt in alts:
        rep = reports[alt.key]
        timed = [s for s in samples[alt.key] if not s["profiled"]] or samples[alt.key]
        wall_s = stats([s["wall_s"] for s in timed])
        cpu = statistics.median(s["cpu_s"] for s in timed)
        rows.append(
            {
                "key": alt.key,
                "label": alt.label,
                "strategy": alt.strategy,
                "slots": alt.slots,
                "skip_idle": alt.skip_idle,
                "ticks": rep.ticks,
                "ticks_run": rep.ticks_run,
                "evaluations": rep.evaluations,
                "trades": rep.trades,
                "pnl_usd": rep.pnl_usd,
                "max_drawdown_usd": rep.max_drawdown_usd,
                "fees_usd": rep.fees_usd,
                "wall_s": wall_s,
                "cpu_s_median": round(cpu, 3),
                "x_real_time": round(span_s / wall_s["median"], 1),
                "evaluations_per_s": round(rep.evaluations / wall_s["median"]),
                "picture_s": pictures[alt.key],
                "samples": samples[alt.key],
            }
        )
    checks = {}
    if "snipe-16" in reports and "snipe-16-every" in reports:
        checks["skip_idle_same_report"] = answers(reports["snipe-16"]) == answers(reports["snipe-16-every"])
    fills = msgspec.to_builtins(next(iter(configs.values())).fills)
    return {"setup": setup, "span_s": span_s, "rows": rows, "checks": checks, "fill_model": fills}


def render(result: dict[str, Any]) -> str:
    hours = result["span_s"] / 3600
    head = (
        f"| alternative ({hours:g} h, tick {TICK_MS} ms) | ticks run | evaluations | trades | PnL $ "
        "| wall s median | p99 (max) | CPU s | x real time | evaluations/s | picture s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {r["key"]: r for r in result["rows"]}
    for r in result["rows"]:
        w = r["wall_s"]
        lines.append(
            f"| {r['label']} | {r['ticks_run']:,} of {r['ticks']:,} | {r['evaluations']:,} | {r['trades']:,} "
            f"| {r['pnl_usd']:+.2f} | {w['median']:.2f} | {w['p99']:.2f} | {r['cpu_s_median']:.2f} "
            f"| {r['x_real_time']:,.0f}x | {r['evaluations_per_s']:,} | {r['picture_s']:.2f} |"
        )
    notes = []
    if "snipe-16" in by and "snipe-16-every" in by:
        a, b = by["snipe-16"]["wall_s"]["median"], by["snipe-16-every"]["wall_s"]["median"]
        same = result["checks"].get("skip_idle_same_report")
        notes.append(
            f"every tick / asleep ticks skipped: {b / a:.1f}x the wall time; "
            f"the same report: {'yes' if same else 'NO'}"
        )
    if "snipe-16" in by:
        m = by["snipe-16"]["wall_s"]["median"]
        verdict = (
            "met" if m < TARGET_S and hours >= 24 else ("not met" if hours >= 24 else "(not a whole day)")
        )
        notes.append(f"target: a day of 16 slots in under {TARGET_S:.0f} s on one core: {m:.1f} s, {verdict}")
    s = result["setup"]
    notes.append(
        f"history: {s['candles_loaded']:,} candles (the period, the look-back before it, the windows "
        f"still open at its end) loaded from the store in {s['store_load_s']:.2f} s, as `baton backtest` "
        "loads them (part of every backtest; not in the wall times above)"
    )
    return "\n".join([*lines, "", *notes])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repeats", type=int, default=3, help="runs of each alternative (median and max reported)"
    )
    ap.add_argument("--hours", type=float, default=24.0, help="hours of the synthetic day backtested")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--only", default="", help=f"alternatives, comma-separated: {','.join(a.key for a in ALTERNATIVES)}"
    )
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="the core to pin to")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the first run of each into DIR")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "backtest.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or not 0 < args.hours <= 24:
        ap.error("--repeats must be at least 1 and --hours in (0, 24]")
    unknown = set(filter(None, args.only.split(","))) - {a.key for a in ALTERNATIVES}
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})  # one core: the target is "on one core"
    with LoadSampler() as load:
        result = measure(args)
    result["machine"] = machine_info(command=command_line("backtest"), pinned_cpu=args.cpu, **load.summary())
    publish(result, render(result), args.json_out)
    if args.profile:
        for r in result["rows"]:
            path = args.profile / f"backtest-{r['key']}.prof"
            print(f"\n--- {path} (top 12 by own time)")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
