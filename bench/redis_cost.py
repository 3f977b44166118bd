"""Redis cost: commands and round trips per tick, memory per slot, and memory per day of candle
windows, against a real redis-server in the production configuration (AOF everysec).

Three measurements, side by side in one run:

1. Commands per tick, at each slot count (default 16 and 1,024; `--slots`): the kernel's own
   `TickRunner` (as in bench/tick_scale.py: the stand-in venue, settlement through rq, the
   closed windows booked by the settle script between ticks) runs one whole cycle of its
   timeframes (default 15s,30s,1m,2m: 120 ticks of 1 s) on a virtual clock, so that nothing
   else touches Redis while a tick runs: candles are written between ticks by the feed's own
   `CandleStore`. For each tick: `INFO commandstats` before and after (the commands Redis
   executed, those run inside Lua scripts included; the INFO calls themselves left out), and
   what the clients sent (commands and round trips, counted in redis-py's connections).
2. Memory per slot: after the cycle, `MEMORY USAGE` (SAMPLES 0: every element) of every key,
   grouped by what it holds, divided by what it grows with (slots, traded slot-windows, ticks),
   plus the `INFO memory` total; then a day of it at the production configuration.
3. Candle windows: one asset's 1 s candle window written by the feed's `CandleStore` (realistic
   prices) at 60, 600, 3,600 (the default `BATON_CANDLE_RETENTION_S`) and 14,400 candles: bytes
   per candle as Redis stores it, and a day per asset with and without the retention trim.

    python -m bench.redis_cost [--slots 16,1024] [--json-out bench/results/redis_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from pathlib import Path
from typing import Any

from baton.settings import timeframe_seconds
from bench.machine import LoadSampler, command_line, machine_info, publish
from bench.redis_commands import commands_per_tick, summarise_commands
from bench.redis_memory import (
    DAY_S,
    FAMILIES,
    PROD_ASSETS,
    PROD_TICK_MS,
    PROD_TIMEFRAMES_S,
    candle_bytes,
    memory_per_unit,
    per_day,
)
from bench.redis_server import RedisServer
from bench.rig import STUB_VENUE
from bench.tick_scale import TIMEFRAMES
from bench.wire import Wire

REPO = Path(__file__).resolve().parent.parent
CANDLE_COUNTS = (60, 600, 3600, 14_400)


# --- rendering -----------------------------------------------------------------------------------


def human(b: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(b) >= size:
            return f"{b / size:,.1f} {unit}"
    return f"{b:,.0f} B"


def render(out: dict[str, Any]) -> str:
    lines = []
    cmds = out["commands"]
    base = cmds[0] if cmds else None
    rows = [
        "| slots | tick kind | ticks | Redis commands executed/tick mean | max | sent by the clients/tick "
        "| round trips/tick mean | max | most executed (per tick) |",
        "|" + "---|" * 9,
    ]
    for c in cmds:
        for kind in ("all", "idle", "settle", "entry", "failed"):
            g = c["all"] if kind == "all" else c["by_kind"][kind]
            if not g.get("n"):
                continue
            top = ", ".join(f"{k} {v:g}" for k, v in list(g["top_commands_per_tick"].items())[:4])
            rows.append(
                f"| {c['slots']:,} | {kind} | {g['n']} | {g['executed_mean']:,.1f} | {g['executed_max']:,} "
                f"| {g['sent_mean']:,.1f} | {g['round_trips_mean']:.1f} | {g['round_trips_max']} | {top} |"
            )
    lines += ["\n".join(rows), ""]
    if base is not None and len(cmds) > 1:
        last = cmds[-1]
        a, b = base["all"], last["all"]
        lines.append(
            f"{last['slots']:,} / {base['slots']:,} slots ({last['slots'] // base['slots']}x): "
            "commands executed "
            f"{b['executed_mean'] / a['executed_mean']:.1f}x, sent {b['sent_mean'] / a['sent_mean']:.1f}x, "
            f"round trips {b['round_trips_mean'] / a['round_trips_mean']:.1f}x (means over the cycle)"
        )
        for kind in ("idle", "settle", "entry"):
            ga, gb = base["by_kind"][kind], last["by_kind"][kind]
            if ga.get("n") and gb.get("n"):
                lines.append(
                    f"  {kind}: round trips {ga['round_trips_mean']:.1f} -> {gb['round_trips_mean']:.1f}, "
                    f"commands executed {ga['executed_mean']:,.0f} -> {gb['executed_mean']:,.0f}"
                )
        lines.append("")
    mem = out["memory"]
    rows = [
        "| state | grows with | kept | "
        + " | ".join(f"bytes at {m['slots']:,} slots" for m in mem)
        + " | bytes per unit |",
        "|" + "---|" * (4 + len(mem)),
    ]
    for name, _, grows, kept in FAMILIES:
        per = mem[-1]["per_unit"][name]["per_unit"]
        rows.append(
            f"| {name} | {grows} | {kept} | "
            + " | ".join(human(m["per_unit"][name]["bytes"]) for m in mem)
            + f" | {per:,.0f} |"
        )
    rows.append(
        "| **INFO used_memory − empty** | | | "
        + " | ".join(human(m["used_memory"] - m["used_memory_empty"]) for m in mem)
        + " | |"
    )
    lines += ["\n".join(rows), ""]
    for m in mem:
        lines.append(
            f"{m['slots']:,} slots ({m['assets']} assets): {m['traded_slot_windows']:,} slot-windows "
            f"traded in the cycle, {m['journal_entries']} ticks journaled; "
            "all state per slot (INFO, candles included): "
            f"{human((m['used_memory'] - m['used_memory_empty']) / m['slots'])}"
        )
    lines.append("")
    rows = [
        "| candles in one window | bytes (MEMORY USAGE) | bytes per candle | member bytes | encoding |",
        "|---|---|---|---|---|",
    ]
    for c in out["candles"]:
        rows.append(
            f"| {c['candles']:,} | {human(c['bytes'])} | {c['bytes_per_candle']:.1f} "
            f"| {c['member_bytes']:.0f} "
            f"| {c['encoding']} |"
        )
    lines += ["\n".join(rows), ""]
    cd = out["candle_day"]
    lines.append(
        f"candle windows: {cd['bytes_per_candle']:.0f} B per 1 s candle; an asset-day untrimmed "
        f"{human(cd['asset_day_untrimmed'])}; with the {cd['retention_s']:,} s retention an asset levels "
        f"off at {human(cd['asset_retained'])} ({human(cd['retained_default_assets'])} for the "
        f"{PROD_ASSETS} default assets)"
    )
    lines.append("")
    rows = [
        "| a day of trading (every slot trades every window) | "
        + " | ".join(f"{d['slots']:,} slots ({d['assets']} assets × 5m, 15m)" for d in out["per_day"])
        + " |",
        "|---|" + "---|" * len(out["per_day"]),
    ]
    rows.append(
        "| slot-windows per day | "
        + " | ".join(f"{d['slot_windows_per_day']:,.0f}" for d in out["per_day"])
        + " |"
    )
    rows.append(
        "| intents, positions, ledger added per day | "
        + " | ".join(human(d["unbounded_bytes_per_day"]) for d in out["per_day"])
        + " |"
    )
    for name in out["per_day"][0]["bounded_bytes"]:
        rows.append(
            f"| {name}, levels off at | "
            + " | ".join(human(d["bounded_bytes"][name]) for d in out["per_day"])
            + " |"
        )
    lines.append("\n".join(rows))
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.slots.split(",") if x]
    timeframes = tuple(t for t in args.timeframes.split(",") if t)
    tf_s = [timeframe_seconds(t) for t in timeframes]
    cycle_s = math.lcm(*tf_s)
    cycle_ticks = args.ticks or cycle_s * 1000 // args.tick_ms
    load = LoadSampler()
    results = []
    with load, RedisServer(aof=True) as server:
        wire = Wire().install()
        try:
            for n in sizes:
                print(f"{n} slots: {cycle_ticks} ticks on a virtual clock ...", flush=True)
                results.append(
                    await commands_per_tick(n, server.url, timeframes, args.tick_ms, cycle_ticks, wire)
                )
        finally:
            wire.uninstall()
        print("candle windows ...", flush=True)
        candles = await candle_bytes(server.url, tuple(int(x) for x in args.candles.split(",")))
        info = server.describe()
    retention = 3600
    at_retention = min(candles, key=lambda c: abs(c["candles"] - retention))
    bpc = at_retention["bytes_per_candle"]
    candle_day = {
        "bytes_per_candle": bpc,
        "retention_s": retention,
        "asset_day_untrimmed": bpc * DAY_S,
        "asset_retained": bpc * retention,
        "retained_default_assets": bpc * retention * PROD_ASSETS,
    }
    mem = []
    for res in results:
        mem.append(
            {
                "slots": res["slots"],
                "assets": res["assets"],
                "traded_slot_windows": res["traded_slot_windows"],
                "journal_entries": res["journal_entries"],
                "used_memory": res["used_memory"],
                "used_memory_empty": res["used_memory_empty"],
                "per_unit": memory_per_unit(res, cycle_s, tf_s),
            }
        )
    per_unit = mem[-1]["per_unit"]
    days = [
        per_day(
            per_unit,
            PROD_ASSETS * len(PROD_TIMEFRAMES_S),
            PROD_ASSETS,
            PROD_TIMEFRAMES_S,
            PROD_TICK_MS,
            retention,
            bpc,
        ),
        per_day(per_unit, 1024, PROD_ASSETS * 64, PROD_TIMEFRAMES_S, PROD_TICK_MS, retention, bpc),
    ]
    return {
        "benchmark": "redis_cost",
        "command": command_line("redis_cost"),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            timeframes=list(timeframes),
            venue=STUB_VENUE,
            clock="virtual (one tick at a time; nothing else touches Redis during a tick)",
            **load.summary(),
            **info,
        ),
        "commands": [summarise_commands(r) for r in results],
        "memory": mem,
        "candles": candles,
        "candle_day": candle_day,
        "per_day": days,
        "per_day_assumptions": {
            "timeframes_s": PROD_TIMEFRAMES_S,
            "tick_ms": PROD_TICK_MS,
            "every_slot_trades_every_window": True,
            "per_unit_costs_from_slots": results[-1]["slots"],
        },
        "sizes": [
            {k: v for k, v in r.items() if k != "samples"} | {"samples": r["samples"]} for r in results
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", default="16,1024", help="slot counts, comma-separated")
    ap.add_argument("--timeframes", default=",".join(TIMEFRAMES))
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument(
        "--ticks", type=int, default=0, help="ticks per size (default: one cycle of the timeframes)"
    )
    ap.add_argument("--candles", default=",".join(str(n) for n in CANDLE_COUNTS), help="candle window sizes")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "redis_cost.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the Redis server and the feeder of the run are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run_async(args))
    publish(result, render(result), args.json_out)


if __name__ == "__main__":
    main()
