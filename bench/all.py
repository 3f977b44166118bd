"""Every benchmark in sequence (`make bench`), then one summary table.

Each benchmark runs as its own process (`python -m bench.<name> ... --json-out DIR/<name>.json`),
prints its own table as it goes, and writes its JSON; a benchmark that fails is reported and the
next one runs. The summary reads the headline numbers back from the JSON files.

    python -m bench.all                 # the full suite: results in bench/results/ (about 30 min)
    python -m bench.all --quick         # a smoke run at tiny sizes (a few minutes): results in a
                                        # temp dir unless --out, so the published ones stay
    python -m bench.all --only tick_scale,redis_cost
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# name -> (full-run arguments, quick-run arguments); run in this order.
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "tick_scale": ([], ["--slots", "16,256", "--seconds", "15"]),
    "entry_burst": ([], ["--slots", "256", "--bursts", "1,4", "--cycles", "2"]),
    "redis_cost": ([], ["--slots", "16,256", "--ticks", "30", "--candles", "60,3600"]),
    "deploy_gap": ([], ["--deploys", "2"]),
    "failover": ([], ["--kills", "2", "--deploys", "1"]),
    # Needs root (network namespaces): a three-host cluster beside a single-host stack.
    "ha": ([], ["--runs", "1"]),
    "hot_reload": ([], ["--reloads", "2", "--deploys", "1"]),
    "feed_ingest": ([], ["--rates", "5000,20000", "--seconds", "2"]),
    "halt_latency": ([], ["--halts", "6"]),
    "venue_sign": ([], ["--orders", "20", "--burst", "16", "--rounds", "1"]),
    "reads": ([], ["--quick"]),
    "backtest": ([], ["--hours", "1", "--repeats", "1"]),
    "replay": ([], ["--hours", "1", "--repeats", "1"]),
}


def _f(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


# --- headlines, one per benchmark, read from its JSON ----------------------------------------------


def h_tick_scale(d: dict[str, Any]) -> str:
    parts = []
    for s in d["summary"]:
        a = s["all"]
        parts.append(
            f"{s['slots']:,} slots p99 {_f(a['duration_ms']['p99'], 1)} ms "
            f"(median {_f(a['duration_ms']['median'], 1)})"
        )
    target = next((s for s in d["summary"] if s["slots"] == d["target"]["slots"]), None)
    verdict = ""
    if target is not None:
        ok = target["all"]["duration_ms"]["p99"] < d["target"]["p99_ms"]
        verdict = f"; target {d['target']['p99_ms']:.0f} ms p99 at {d['target']['slots']:,}: " + (
            "met" if ok else "MISSED"
        )
    idle = [s["by_kind"]["idle"]["round_trips"].get("median") for s in d["summary"]]
    return "; ".join(parts) + verdict + f"; idle-tick round trips {', '.join(_f(x) for x in idle)}"


def h_entry_burst(d: dict[str, Any]) -> str:
    parts = []
    for s in d["summary"]:
        parts.append(
            f"{s['burst_slots']:,} of {s['slots']:,} slots in zone at entry rate {s['entry_rate']:g}: "
            f"{_f(s['wall_ms']['median'], 1)} ms (worker CPU {_f(s['worker_cpu_ms']['median'], 1)}, "
            f"Redis CPU {_f(s['redis_cpu_ms']['median'], 1)})"
        )
    return "; ".join(parts)


def h_redis_cost(d: dict[str, Any]) -> str:
    parts = [
        f"{c['slots']:,} slots: {_f(c['all']['executed_mean'])} commands, "
        f"{_f(c['all']['round_trips_mean'], 1)} round trips/tick"
        for c in d["commands"]
    ]
    cd = d["candle_day"]
    parts.append(
        f"{cd['bytes_per_candle']:.0f} B per candle "
        f"({cd['asset_day_untrimmed'] / 2**20:.1f} MB per asset-day untrimmed)"
    )
    day = d["per_day"][0]
    mb = day["unbounded_bytes_per_day"] / 2**20
    parts.append(f"{mb:.1f} MB/day of history (kept BATON_HISTORY_DAYS) at {day['slots']} slots")
    return "; ".join(parts)


def h_deploy_gap(d: dict[str, Any]) -> str:
    s = d["summary"]
    out = []
    for m in ("blue-green", "naive-restart"):
        if m in s:
            out.append(
                f"{m}: {s[m]['missed_mean']:.2f} missed ticks/op, "
                f"takeover {_f(s[m]['takeover_ms_median'], 1)} ms median"
            )
    return "; ".join(out)


def h_failover(d: dict[str, Any]) -> str:
    s = d["summary"]
    out = []
    if "sigkill" in s:
        k = s["sigkill"]
        out.append(
            f"SIGKILL: {k['missed_mean']:.2f} missed ticks/kill (max {k['missed_max']}), next tick "
            f"{_f(k['to_next_tick_ms_median'])} ms after the kill (p99 {_f(k['to_next_tick_ms_p99'])})"
        )
    if "blue-green" in s:
        out.append(f"blue-green: {s['blue-green']['missed_mean']:.2f} missed/op")
    return "; ".join(out)


def h_ha(d: dict[str, Any]) -> str:
    out = []
    for fault, v in d["summary"].items():
        if not v["runs"]:
            out.append(f"{fault}: no run completed")
            continue
        out.append(
            f"{fault}: {v['missed_mean']:.2f} missed ticks (max {v['missed_max']}), first tick "
            f"{_f(v['to_first_tick_ms_median'])} ms after the fault (p99 {_f(v['to_first_tick_ms_p99'])}), "
            f"goal {v['goal']}"
        )
    for name, m in d.get("money", {}).items():
        out.append(
            f"{name}: {m['duplicates']} duplicates, {m['lost_positions']} lost positions, "
            f"ledger off by {m['ledger_error_micros']} micro-USD"
        )
    return "; ".join(out)


def h_hot_reload(d: dict[str, Any]) -> str:
    s = d["summary"]
    out = []
    for m, label in (("edit", "edit"), ("api", "POST /reload"), ("blue-green", "deploy")):
        if m in s:
            out.append(
                f"{label}: first tick on new code {_f(s[m]['first_new_tick_ms_median'])} ms, "
                f"missed {s[m]['missed_total']}"
            )
    return "; ".join(out)


def h_feed_ingest(d: dict[str, Any]) -> str:
    rows = d["rows"]
    best = max((r.get("into_redis_per_s") or 0) for r in rows)
    lost = sum(r.get("lost", 0) for r in rows)
    at = next((r for r in rows if r["target"] == 20000), None)
    tail = (
        f"; at 20,000 msgs/s p99 {_f(at.get('delay_ms_p99'), 1)} ms, CPU {at.get('cpu_share', 0) * 100:.0f} %"
        if at
        else ""
    )
    return f"up to {_f(best)} msgs/s into Redis, {lost} lost{tail}"


def h_halt_latency(d: dict[str, Any]) -> str:
    a = d["summary"]["ack_ms"]
    return (
        f"ack median {_f(a.get('median'))} ms, p99 {_f(a.get('p99'))} ms over {a.get('n', 0)} halts; "
        f"orders after an ack: {d['safety']['orders_after_ack']}"
    )


def h_venue_sign(d: dict[str, Any]) -> str:
    rows = d["summary"]
    base = rows[0]
    parts = [
        f"{r['backend']}: sign {_f(r['sign_ms_median'], 2)} ms, post {_f(r['post_ms_median'], 2)} ms, "
        f"{d['burst']} orders on 8 lanes {_f(r['burst_ms_median'])} ms"
        for r in rows
    ]
    slow = rows[-1]
    ratio = slow["sign_ms_median"] / base["sign_ms_median"]
    parts.append(f"signing {ratio:.1f}x faster with {base['backend']}")
    return "; ".join(parts)


def h_reads(d: dict[str, Any]) -> str:
    parts = []
    for ph in d["phases"]:
        c = ph["conditions"]
        alone = c["alone"]["duration_ms"]
        row = [f"alone p99 {_f(alone['p99'], 1)} ms"]
        for name in ("new readers", "old readers"):
            if name in c:
                row.append(f"{name} {_f(c[name]['duration_ms']['p99'], 1)} ms")
        history = f"{ph['history_days']:g} d of {d['machine']['slots']:,}-slot history"
        parts.append(f"{history}: tick " + ", ".join(row))
    return "; ".join(parts)


def h_backtest(d: dict[str, Any]) -> str:
    hours = d["span_s"] / 3600
    by = {r["key"]: r for r in d["rows"]}
    parts = [
        f"{r['key']} {_f(r['wall_s']['median'], 1)} s ({_f(r['cpu_s_median'], 1)} s CPU)" for r in d["rows"]
    ]
    head = by.get("snipe-16")
    if head is not None:
        parts[0] += f", {_f(head['x_real_time'])}x real time"
    return f"{hours:g} h: " + "; ".join(parts)


def h_replay(d: dict[str, Any]) -> str:
    hours = d["span_s"] / 3600
    return "; ".join(
        f"{r['label']}: {r['evaluations']:,} in {_f(r['replay_s']['median'], 1)} s for {hours:g} h"
        + ("" if r["equal"] == r["decisions"] == r["evaluations"] else " (NOT parity)")
        for r in d["rows"]
        if r["store"] == "default"
    )


HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "tick_scale": h_tick_scale,
    "entry_burst": h_entry_burst,
    "redis_cost": h_redis_cost,
    "deploy_gap": h_deploy_gap,
    "failover": h_failover,
    "ha": h_ha,
    "hot_reload": h_hot_reload,
    "feed_ingest": h_feed_ingest,
    "halt_latency": h_halt_latency,
    "venue_sign": h_venue_sign,
    "reads": h_reads,
    "backtest": h_backtest,
    "replay": h_replay,
}


# --- the run -------------------------------------------------------------------------------------


def run_one(name: str, extra: list[str], out_dir: Path) -> dict[str, Any]:
    path = out_dir / f"{name}.json"
    cmd = [sys.executable, "-m", f"bench.{name}", *extra, "--json-out", str(path)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO, check=False).returncode
    wall = time.monotonic() - t0
    row: dict[str, Any] = {
        "name": name,
        "rc": rc,
        "wall_s": round(wall, 1),
        "json": str(path),
        "load_at_start": load,
    }
    try:
        row["headline"] = HEADLINES[name](json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        row["headline"] = f"(no result: {type(e).__name__}: {e})"
    return row


def render(rows: list[dict[str, Any]]) -> str:
    out = ["| benchmark | exit | wall s | load at start | headline |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['name']} | {r['rc']} | {r['wall_s']:.0f} | {r['load_at_start']:.2f} | {r['headline']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every benchmark")
    ap.add_argument("--out", type=Path, default=None, help="where the JSON files go")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(SUITE)}")
    out_dir = args.out or (
        Path(tempfile.mkdtemp(prefix="baton-bench-quick-")) if args.quick else REPO / "bench" / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rows = [run_one(n, SUITE[n][1] if args.quick else SUITE[n][0], out_dir) for n in names]
    print(
        f"\n=== summary ({'quick' if args.quick else 'full'} run, {time.monotonic() - t0:.0f} s; "
        f"results in {out_dir})\n"
    )
    print(render(rows))
    (out_dir / "all.json").write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=2) + "\n")
    failed = [r["name"] for r in rows if r["rc"] != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
