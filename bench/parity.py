"""Replay parity over a paper run: a real stack trades for `--duration-s` (30 minutes by
default) with both strategies (snipe on one slot per asset, momentum with exits on a second),
is deployed once half-way (so the log holds the decisions of two releases), and then `baton
replay` re-evaluates every recorded input with the code that made it. The target: 100 % of the
live decisions reproduced.

    python -m bench.parity [--duration-s 1800] [--tick-ms 1000]      (make bench-parity)

Prints decisions, equal, differ per slot and in all, the replay's wall time, and the machine;
exits non-zero when any decision differs or nothing was decided.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.machine import LoadSampler, command_line, machine_info
from bench.stack import KEYS, add_run_options, finish, start_stack, stopped_after
from deploy.sandbox import Stack
from kernel.clock import wall_ms

ASSETS = ("btc", "eth", "sol", "xrp")
WINDOW = "15s"
# momentum made to trade in 15 s windows (as the chaos harness trades it): enter on any move of
# the last two bars, take or stop a cent, sell what is left in the last 4 s.
MOMENTUM_PARAMS = (
    "lookback=2,min_move_bps=0,min_agree=0.5,min_price=0.05,max_price=0.95,max_spread=0.2,"
    "entry_until_s=5,take_profit=0.01,stop_loss=0.01,flat_s=4"
)


def add_momentum_slots(st: Stack) -> list[str]:
    flags = [a for kv in MOMENTUM_PARAMS.split(",") for a in ("--param", kv)]
    ids = []
    for asset in ASSETS:
        sid = f"{asset}-{WINDOW}-momentum"
        out = st.baton(
            "slots", "add", sid, "--asset", asset, "--timeframe", WINDOW, "--strategy", "momentum", *flags
        )
        if out.returncode != 0:
            raise RuntimeError(f"baton slots add {sid} failed: {out.stderr.strip() or out.stdout.strip()}")
        ids.append(sid)
    return ids


def replay(st: Stack, from_ms: int, to_ms: int) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = st.baton(
        "replay", "--from", f"{from_ms / 1000:.3f}", "--to", f"{to_ms / 1000:.3f}", "--json", timeout_s=900
    )
    wall_s = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(
            f"baton replay failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
        )
    return json.loads(out.stdout), wall_s


def unlogged_ticks(st: Stack, from_ms: int, to_ms: int) -> list[int]:
    """Ticks the tick journal has in the run whose input log entry is missing (every tick of
    the lease holder gets one, evaluations or not: the handover's last tick included)."""
    journaled = {
        int(f["tick"])
        for _, f in st.redis.xrange(KEYS.journal_ticks())
        if from_ms <= int(f.get("started_ms", 0)) <= to_ms
    }
    raw = st.client("admin", decoded=False)
    try:
        logged = {int(f[b"tick"]) for _, f in raw.xrange(KEYS.input_log())}
    finally:
        raw.close()
    # The last tick's entry is appended after it: it may be on its way when the run stops.
    return sorted(t for t in journaled if t not in logged and t < max(journaled))


def table(
    report: dict[str, Any], wall_s: float, duration_s: float, deployed: bool, unlogged: list[int]
) -> str:
    rows = [f"{'slot':<24} {'decisions':>10} {'equal':>10} {'differ':>8}"]
    for sid, s in sorted(report.get("slots", {}).items()):
        rows.append(f"{sid:<24} {s['decisions']:>10} {s['equal']:>10} {s['differ']:>8}")
    total, equal = report["decisions"], report["equal"]
    share = 100.0 * equal / total if total else 0.0
    rows.append(f"{'all':<24} {total:>10} {equal:>10} {report['differ']:>8}")
    rows.append(
        f"\nparity {share:.2f} % over a {duration_s / 60:.1f}-minute paper run"
        f"{' with a deploy half-way' if deployed else ''}; replay took {wall_s:.2f} s"
    )
    rows.append(f"ticks journaled without an input log entry: {len(unlogged)}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=1800.0, help="paper run length (30 min)")
    ap.add_argument("--no-deploy", action="store_true", help="skip the deploy half-way")
    add_run_options(ap, "parity")
    args = ap.parse_args()
    st = start_stack(args.tick_ms, " for replay parity", BATON_TIMEFRAMES=WINDOW)
    with stopped_after(st, args.keep_home), LoadSampler() as load:
        add_momentum_slots(st)
        started_ms = wall_ms()
        deployed = False
        half = time.monotonic() + args.duration_s / 2
        end = time.monotonic() + args.duration_s
        while time.monotonic() < end:
            if not args.no_deploy and not deployed and time.monotonic() >= half:
                out = st.baton("deploy", timeout_s=300)
                if out.returncode != 0:
                    raise RuntimeError(f"baton deploy failed: {out.stderr.strip() or out.stdout.strip()}")
                deployed = True
                print("deployed half-way", flush=True)
            time.sleep(5)
        stopped_ms = wall_ms()
        report, wall_s = replay(st, started_ms, stopped_ms)
        unlogged = unlogged_ticks(st, started_ms, stopped_ms)
    result: dict[str, Any] = {
        "command": command_line("bench.parity"),
        "machine": machine_info(tick_ms=args.tick_ms, **load.summary()),
        "duration_s": args.duration_s,
        "deployed_half_way": deployed,
        "replay_wall_s": round(wall_s, 3),
        "decisions": report["decisions"],
        "equal": report["equal"],
        "differ": report["differ"],
        "slots": {k: {n: v[n] for n in ("decisions", "equal", "differ")} for k, v in report["slots"].items()},
        "unlogged_ticks": unlogged,
        "errors": [],
    }
    if unlogged:
        result["errors"].append(f"{len(unlogged)} tick(s) without an input log entry: {unlogged[:10]}")
    if report["differ"] or not report["decisions"]:
        result["errors"].append(
            f"parity broken: {report['differ']} of {report['decisions']} decisions differ"
        )
    finish(result, table(report, wall_s, args.duration_s, deployed, unlogged), args.json_out)


if __name__ == "__main__":
    main()
