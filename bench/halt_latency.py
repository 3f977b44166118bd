"""Halt latency and the halt's safety property, over HTTP against a real stack.

One stack (redis-server, supervisord, sim, feed, settle, the worker and the `api` program) with
1-second ticks and 15-second windows on eight assets, entering whenever the estimate reaches the
ask, so that every window's entry zone (its last third) opens with a tick that posts. Then
`--halts` times: POST /halt with the bearer token at a chosen moment, keep it a random 0.5-2 s
past the answer, POST /resume, go on.
The moments cycle through three kinds, so halts land everywhere a worker can be:

- random:       a uniformly random point of a tick;
- in-tick:      just after a tick boundary, within the time a tick takes (read from the journal);
- posting:      just after the boundary of the tick in a window where the worker posts its
                entries (read from the journal: snipe enters in the last third of a window),
                within the time such a tick takes, so that the halt races posts in flight.

For each halt it records the API's answer (`HaltResult`: `acknowledged`, `ack_ms` from the flag
being set to the worker's acknowledgement) and the HTTP round trip, which also holds the ledger
flush: with Redis before 7.2 and `appendfsync everysec` that is one fsync period (1.1 s), as no
WAITAOF exists to ask for less. Where the halt landed (inside a tick, inside a tick that posted) is
read afterwards from the tick journal.

Safety: an order created at the venue after the worker acknowledged a halt and before the resume
is a violation. A thread polls the sim's `GET /data/orders` every 20 ms for the whole run, so each
order's creation is known to lie between the start of the last poll that did not list it and the
end of the first one that did; the ack's wall time is the flag's `halted_ms` plus `ack_ms`. The
sim's own `created_at` (whole seconds, as the real CLOB's) gives a second, coarser count.

    python -m bench.halt_latency [--halts 60] [--tick-ms 1000] [--seed 1]
                                 [--json-out bench/results/halt_latency.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict
from typing import Any, NamedTuple

import httpx

from bench.halts import POLL_S, OrderWatch, Sample, place_in_journal, safety
from bench.machine import command_line, machine_info, publish, short_machine_line
from bench.numbers import rank
from bench.stack import KEYS, Api, add_run_options, save_logs, start_stack, stop
from deploy.ports import free_port
from deploy.sandbox import Stack, wait_for
from kernel.clock import wall_ms_precise

KINDS = ("random", "in-tick", "posting")
ASSETS = "btc,eth,sol,xrp,doge,bnb,hype,link"
WINDOW = "15s"
WINDOW_MS = 15_000


# --- timing ------------------------------------------------------------------------------------


class Timing(NamedTuple):
    tick_ms: float  # median duration of recent ticks
    posting_ms: float  # median duration of recent ticks that posted orders
    posting_phase_ms: int  # where in its window a tick that posts most often starts
    jitter_ms: float  # median delay of a tick's start after its boundary


def timing(st: Stack, tick_ms: int) -> Timing:
    rows = [f for _, f in st.redis.xrevrange(KEYS.journal_ticks(), count=120)]
    all_d = [int(f["duration_ms"]) for f in rows] or [1]
    posting = [f for f in rows if int(f.get("orders", 0))]
    phases = Counter(int(f["tick"]) * tick_ms % WINDOW_MS for f in posting)
    return Timing(
        tick_ms=statistics.median(all_d),
        posting_ms=statistics.median([int(f["duration_ms"]) for f in posting] or all_d),
        # Before any order: snipe's entry zone opens with a third of the window left.
        posting_phase_ms=phases.most_common(1)[0][0] if phases else WINDOW_MS * 2 // 3,
        jitter_ms=statistics.median([int(f.get("jitter_ms", 0)) for f in rows] or [0]),
    )


def plan(kind: str, rng: random.Random, tick_ms: int, t: Timing) -> tuple[float, float]:
    """The wall time (ms) to send the next halt at, and its offset after the tick boundary."""
    now = wall_ms_precise() + 20  # what the request needs to leave on time
    # Inside a tick: from its start (boundary + jitter) over its length, less ~1 ms for the
    # request to reach the API and set the flag.
    if kind == "random":
        period, phase, offset = tick_ms, 0, rng.uniform(0, tick_ms)
    elif kind == "in-tick":
        period, phase = tick_ms, 0
        offset = max(0.0, t.jitter_ms + rng.uniform(0, max(1.0, t.tick_ms)) - 1)
    else:
        period, phase = WINDOW_MS, t.posting_phase_ms
        offset = max(0.0, t.jitter_ms + rng.uniform(0, max(1.0, t.posting_ms)) - 1)
    at = now - now % period + phase + offset
    while at <= now:
        at += period
    return at, offset


def sleep_until(at_ms: float) -> None:
    while (left := at_ms - wall_ms_precise()) > 0:
        time.sleep(min(left, 50) / 1000)


# --- one halt ----------------------------------------------------------------------------------


def halt_once(api: Api, index: int, kind: str, rng: random.Random, tick_ms: int, st: Stack) -> Sample:
    at, offset = plan(kind, rng, tick_ms, timing(st, tick_ms))
    sleep_until(at)
    sent = wall_ms_precise()
    rtt, res = api.post("/halt", {"reason": f"bench halt {index} ({kind})"})
    # Held 0.5-2 s past the answer (which came after the 1.1 s flush): two or three boundaries.
    time.sleep(rng.uniform(0.5, 2.0))
    resume_sent = wall_ms_precise()
    api.post("/resume")
    return Sample(
        index=index,
        kind=kind,
        target_offset_ms=round(offset, 1),
        sent_ms=sent,
        halted_ms=int(res["control"]["halted_ms"]),
        acknowledged=bool(res["acknowledged"]),
        ack_ms=res["ack_ms"],
        rtt_ms=round(rtt, 2),
        worker=res["worker"],
        cancel=res["cancel"],
        flush=res["flush"],
        resume_sent_ms=resume_sent,
    )


# --- numbers -----------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": rank(values, 0.90),
        "p99": rank(values, 0.99),
        "max": max(values),
    }


def summarise(samples: list[Sample]) -> dict[str, Any]:
    acked = [s for s in samples if s.acknowledged]
    groups = {
        "between ticks": [s for s in samples if not s.in_tick],
        "inside a tick": [s for s in samples if s.in_tick],
        "inside a tick that posted": [s for s in samples if s.in_tick and s.tick_orders],
    }
    return {
        "ack_ms": stats([float(s.ack_ms) for s in acked if s.ack_ms is not None]),
        "rtt_ms": stats([s.rtt_ms for s in samples]),
        "not_acknowledged": len(samples) - len(acked),
        "by_landing": {
            name: {
                "n": len(g),
                "ack_ms": stats([float(s.ack_ms) for s in g if s.ack_ms is not None]),
                "not_acknowledged": sum(not s.acknowledged for s in g),
            }
            for name, g in groups.items()
        },
    }


def num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 or v == int(v) else f"{v:.1f}"


def render(summary: dict[str, Any], safe: dict[str, Any], tick_ms: int, n: int) -> str:
    p99 = "p99 (max)" if n < 100 else "p99"
    rows = [
        f"| halts over HTTP (tick {tick_ms} ms) | n | median | p90 | {p99} | max |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("ack_ms", "flag set → worker acknowledged, ms"),
        ("rtt_ms", "HTTP round trip (with ledger flush), ms"),
    ):
        v = summary[key]
        cells = [num(v.get(k)) for k in ("median", "p90", "p99", "max")] if v["n"] else ["-"] * 4
        rows.append(f"| {label} | {v['n']} | " + " | ".join(cells) + " |")
    rows += ["", "| landed | n | ack ms median | max | not acknowledged |", "|---|---|---|---|---|"]
    for name, g in summary["by_landing"].items():
        a = g["ack_ms"]
        rows.append(
            f"| {name} | {g['n']} | {num(a.get('median'))} | {num(a.get('max'))} | {g['not_acknowledged']} |"
        )
    lines = ["\n".join(rows), ""]
    ack, rtt = summary["ack_ms"], summary["rtt_ms"]
    if ack["n"] and rtt["n"]:
        lines.append(
            f"round trip / acknowledgement, medians: {rtt['median'] / max(ack['median'], 1):.0f}x "
            "(the rest is the ledger flush and the worker's cancels)"
        )
    lines.append(f"not acknowledged: {summary['not_acknowledged']} of {n}")
    lines.append(
        f"safety: orders created at the sim after an acknowledgement, before the resume: "
        f"{safe['orders_after_ack']} (polling every {POLL_S * 1000:.0f} ms; "
        f"{safe['orders_undecided']} undecided, created at most {safe['undecided_max_ms_after_ack']:.0f} ms "
        "after it: in flight, most likely), "
        f"{safe['orders_after_ack_by_created_at']} by created_at seconds; "
        f"posted between the flag and the ack (in flight, allowed): {safe['orders_in_flight_at_halt']}; "
        f"{safe['orders_seen']} orders in all"
    )
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    samples: list[Sample] = []
    errors: list[str] = []
    st = start_stack(
        args.tick_ms,
        f", {WINDOW} windows",
        BATON_TIMEFRAMES=WINDOW,
        BATON_ASSETS=ASSETS,
        BATON_API_PORT=str(free_port()),
        # A loss limit would halt by itself mid-run, and 120 resumes must not be rate-limited.
        BATON_DAILY_LOSS_LIMIT_USD="1000000",
        BATON_API_MUTATIONS_PER_MIN="100000",
    )
    watch: OrderWatch | None = None
    try:
        api = Api(st, timeout_s=30)
        wait_for(lambda: st.sim_orders(), 90, "the worker's first order at the sim")
        watch = OrderWatch(st.clob_url)
        watch.start()
        redis_info = st.redis.info("server")
        fsync = st.redis.config_get("appendfsync").get("appendfsync", "")
        since = wall_ms_precise()
        for i in range(args.halts):
            kind = KINDS[i % len(KINDS)]
            try:
                s = halt_once(api, i, kind, rng, args.tick_ms, st)
            except (RuntimeError, httpx.HTTPError) as e:
                errors.append(f"halt #{i}: {e}")
                print(f"halt #{i} ({kind}): FAILED {e}", flush=True)
                st.redis.hset(KEYS.control(), mapping={"halted": "0", "paused": "0"})  # go on trading
                continue
            samples.append(s)
            print(
                f"halt #{i} ({kind}, +{s.target_offset_ms:.0f} ms): "
                + (f"acknowledged in {s.ack_ms} ms" if s.acknowledged else "NOT acknowledged")
                + f", round trip {s.rtt_ms:.0f} ms",
                flush=True,
            )
            time.sleep(rng.uniform(0.2, 1.0))  # trading again for a moment
        time.sleep(1.0)  # the watch sees the last orders
        watch.stop()
        place_in_journal(st, samples, since)
        safe = safety(samples, watch)
        if safe["orders_after_ack"] or safe["orders_after_ack_by_created_at"] or errors or args.keep_logs:
            save_logs(st, args.json_out.parent / "halt_latency-logs")
    finally:
        if watch is not None and watch.is_alive():
            watch.stop()
        stop(st, args.keep_home)
    return {
        "benchmark": "halt_latency",
        "command": command_line("halt_latency"),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            timeframes=WINDOW,
            assets=ASSETS,
            redis_version=redis_info.get("redis_version"),
            appendfsync=fsync,
        ),
        "halts": args.halts,
        "seed": args.seed,
        "summary": summarise(samples),
        "safety": safe,
        "errors": errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.halt_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--halts", type=int, default=60)
    add_run_options(ap, "halt_latency", seed_help="seed of the moments and hold times")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    m = result["machine"]
    publish(
        result,
        render(result["summary"], result["safety"], args.tick_ms, len(result["samples"])),
        args.json_out,
        machine=short_machine_line(m, f"Redis {m['redis_version']} appendfsync {m['appendfsync']}"),
    )
    if result["safety"]["orders_after_ack"] or result["safety"]["orders_after_ack_by_created_at"]:
        sys.exit(f"SAFETY: order(s) created after an acknowledged halt; see {args.json_out}")
    if result["errors"]:
        sys.exit(f"{len(result['errors'])} halt(s) failed; see {args.json_out}")


if __name__ == "__main__":
    main()
