"""The cluster chaos harness (`make chaos-cluster`): the simulated three-host cluster
(deploy/cluster: network namespaces, Redis Sentinel, a warm standby on another host) with
short ticks, faults injected one at a time on a seeded schedule for a while, then a quiet
drain and the invariant check (cluster_checks.py).

    python -m tests.chaos.cluster_harness [--duration-s 600] [--seed N] [--name chaos]
        [--net 10.77.8.0/24] [--tick-ms 5000] [--window 30s] [--faults kill-holder-host,...]

The faults are in cluster_faults.py, the waits, drain and snapshot in cluster_context.py.
The cluster gets its own name and subnet (never `make cluster`'s "baton"), and every
namespace, link and process of it is removed at the end, also when the run fails. Exit
status: 0 when every invariant holds, 1 when one breaks (the seed and a replay command are
printed), 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from baton import settings as settings_mod
from deploy.sandbox import SLOT_PARAMS, STALE_MAKER
from kernel.clock import wall_ms
from state.keys import Keys
from state.slots import SlotsRepo
from tests.chaos import cluster_checks
from tests.chaos import cluster_faults as F
from tests.chaos.cluster_context import ClusterChaos, collect, drain
from tests.chaos.harness import (
    EXITS_PARAMS,
    exit_slots,
    log,
    pair,
    parse_timeframe_ms,
    source_trees,
    write_results,
)
from tests.chaos.lanes import Outcome
from tests.chaos.report import table

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "bench" / "results" / "chaos-cluster.json"
DEFAULT_NAME = "chaos"
DEFAULT_NET = "10.77.8.0/24"


def run_fault(ctx: Any, seed: int, i: int, p: F.Planned) -> dict[str, Any]:
    """Inject one fault to its end; its record for the fault log."""
    kind = F.CATALOGUE[p.kind]
    with ctx.lock:
        ctx.seq += 1
        seq = ctx.seq
    rnd = random.Random(f"{seed}:cluster:{i}")
    start = wall_ms()
    t0 = time.monotonic()
    error = ""
    try:
        out = kind.inject(ctx, rnd)
    except Exception as e:
        out = Outcome(recovered=False)
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    end = wall_ms()
    took = time.monotonic() - t0
    start = out.injected_ms or start
    allowed = int(out.details.pop("allowed_missed", kind.allowed_missed))
    return {
        "seq": seq,
        "lane": "cluster",
        "index": i,
        "kind": p.kind,
        "costs_ticks": True,
        "allowed_missed": allowed,
        "grace_ms": int(kind.grace_s * 1000),
        "max_effect_s": kind.max_effect_s,
        "start_ms": start,
        "end_ms": end,
        "first_tick": (start - ctx.tick_ms) // ctx.tick_ms,
        "last_tick": (end + int(kind.grace_s * 1000)) // ctx.tick_ms,
        "recovered": out.recovered and took <= kind.max_effect_s,
        "details": out.details,
        "problems": out.problems,
        "notes": out.notes,
        "error": error,
    }


def _describe(rec: dict[str, Any]) -> str:
    det = rec["details"]
    bits = [f"{k}={det[k]}" for k in ("target", "roles", "takeover_ms", "new_primary", "held_ms") if k in det]
    trouble = [*rec["problems"], rec["error"], "" if rec["recovered"] else "NOT RECOVERED"]
    flag = "; ".join(t for t in trouble if t)
    return " ".join(bits) + (f"  <-- {flag}" if flag else "")


def _leftovers(name: str, net: str) -> list[str]:
    from deploy.cluster import net as netmod

    return netmod.leftovers(netmod.network(name, net))


def run(args: argparse.Namespace) -> int:
    from deploy.cluster import Cluster

    seed = args.seed
    tick_ms, window_ms = args.tick_ms, parse_timeframe_ms(args.window)
    replay = (
        f"python -m tests.chaos.cluster_harness --duration-s {args.duration_s:g} --seed {seed}"
        f" --tick-ms {tick_ms} --window {args.window}"
        + (f" --faults {','.join(args.faults)}" if args.faults != F.DEFAULT_KINDS else "")
    )
    if (args.exits_strategy, args.exits_params) != ("momentum", EXITS_PARAMS):
        replay += f" --exits-strategy '{args.exits_strategy}' --exits-params '{args.exits_params}'"
    print(
        f"chaos-cluster: seed {seed}, {args.duration_s:g} s of faults, {tick_ms} ms ticks, {args.window} "
        f"windows, cluster {args.name} on {args.net}"
    )
    print(f"chaos-cluster: replay with: {replay}", flush=True)
    left = _leftovers(args.name, args.net)
    if left:
        print(f"chaos-cluster: a cluster named {args.name} exists ({', '.join(left)}): pick another --name")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="baton-chaos-src-"))
    home = Path(tempfile.mkdtemp(prefix=f"baton-chaos-cluster-{args.name}-"))
    env = {
        "BATON_TICK_MS": str(tick_ms),
        "BATON_TIMEFRAMES": args.window,
        "BATON_ASSETS": args.assets,
        SLOT_PARAMS: "edge=0.0",  # enter whenever the estimate reaches the ask: every window trades
        **STALE_MAKER,  # and the maker's stale book makes it so (deploy/sandbox.py)
        "BATON_DAILY_LOSS_LIMIT_USD": "1000000",
        # The checker reads the whole run's history: nothing of it may be pruned.
        "BATON_HISTORY_DAYS": "0",
    }
    c = Cluster.from_env(home=home, name=args.name, net=args.net, env=env)
    faults: list[dict[str, Any]] = []
    result: dict[str, Any] = {"seed": seed, "replay": replay, "home": str(home), "name": args.name}
    ctx: ClusterChaos | None = None
    rc = 2
    # A SIGTERM (a CI timeout, a kill of make) unwinds through the finally below, which
    # removes the cluster.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        t_start = time.monotonic()
        log(f"starting cluster {args.name} under {home}")
        c.start(timeout_s=args.start_timeout_s, log=log)
        sources = source_trees(tmp)
        ctx = ClusterChaos(c, tick_ms, window_ms, sources)
        why = ctx.wait_whole(120)
        if why:
            raise RuntimeError(f"the cluster never became whole: {why}")
        if args.exits_strategy:
            # Both strategies trade, as in the single-host run: a slot per asset with exits.
            s = settings_mod.load({**os.environ, **env})
            slots = exit_slots(args.assets.split(","), args.window, args.exits_strategy, args.exits_params, s)
            repo = SlotsRepo(ctx.redis, Keys(s.prefix))
            for slot in slots:
                ctx.retry(functools.partial(repo.add_slot, slot))
            log(f"added {', '.join(x.id for x in slots)} ({args.exits_strategy}, exits on)")
        last = ctx.retry(lambda: ctx.redis.hget("baton:stats", "last_tick"))
        first_tick = int(last or 0) + 1
        kinds = [k for k in args.faults if F.CATALOGUE[k].available(c)]
        result["kinds_unavailable"] = sorted(set(args.faults) - set(kinds))
        schedule = F.plan(seed, kinds, args.gap_s)
        log(f"cluster whole in {time.monotonic() - t_start:.1f} s; chaos from tick {first_tick}")
        if result["kinds_unavailable"]:
            log(f"not injected (the cluster cannot yet): {', '.join(result['kinds_unavailable'])}")
        chaos_start = wall_ms()
        deadline = time.monotonic() + args.duration_s
        for i, p in enumerate(schedule):
            # The first pass holds every kind once and runs to its end whatever the duration.
            if i >= len(kinds) and time.monotonic() >= deadline:
                break
            time.sleep(p.gap_s)
            rec = run_fault(ctx, seed, i, p)
            faults.append(rec)
            log(f"#{rec['seq']:<3} {p.kind:<20} {rec['end_ms'] - rec['start_ms']:>6} ms  {_describe(rec)}")
        chaos_end = wall_ms()
        log(f"faults off after {(chaos_end - chaos_start) / 1000:.0f} s: {len(faults)} injected; draining")
        drained = drain(ctx, args.quiet_s, args.settle_timeout_s)
        span = (chaos_start, wall_ms() - 5000)
        data = collect(
            ctx,
            f"http://{c.net.addr('venue')}:{c.host('h1').env['BATON_SIM_CLOB_PORT']}",
            args.assets.split(","),
            span,
        )
        run_data = cluster_checks.ClusterRunData(
            tick_ms=tick_ms,
            first_tick=first_tick,
            end_ms=data["end_ms"],
            settle_grace_ms=args.settle_grace_s * 1000,
            journal=data["journal"],
            venue_orders=data["venue_orders"],
            intents=data["intents"],
            open_intents=data["open_intents"],
            positions=data["positions"],
            open_positions=data["open_positions"],
            ledger=data["ledger"],
            ledger_totals=data["ledger_totals"],
            faults=faults,
            lease_log=data["lease_log"],
            candles=data["candles"],
            candle_span_ms=span,
            settle_stats=data["settle_stats"],
        )
        data_file = home / "chaos-cluster-data.json"
        data_file.write_text(json.dumps(dataclasses.asdict(run_data), default=str))
        report = cluster_checks.check(run_data)
        denials = [d for d in data["acl_log"] if d.get("reason") != "auth"]
        result.update(
            {
                "ok": not report.broken and not denials,
                "data": str(data_file),
                "acl_denials": denials,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(chaos_start / 1000)),
                "duration_s": args.duration_s,
                "tick_ms": tick_ms,
                "window": args.window,
                "assets": args.assets,
                "exits_strategy": args.exits_strategy,
                "kinds": kinds,
                "kinds_injected": sorted({f["kind"] for f in faults}),
                "chaos_ms": [chaos_start, chaos_end],
                "drain": drained,
                "wall_s": round(time.monotonic() - t_start, 1),
                "report": report.to_json(),
                "faults": faults,
                "stats": data["stats"],
                "feed_stats": data["feed_stats"],
                "settle_stats": data["settle_stats"],
            }
        )
        print()
        print(table(report))
        print()
        print(cluster_checks.fault_table(report, faults))
        print()
        if denials:
            print(f"chaos-cluster: Redis refused a program (ACL LOG of the primary): {denials[:5]}")
        if report.broken or denials:
            names = [r.name for r in report.broken] + ["acl"] * bool(denials)
            print(f"chaos-cluster: BROKEN: {', '.join(names)}")
            print(f"chaos-cluster: seed {seed}; replay with: {replay}")
            print(f"chaos-cluster: logs under {home}/hosts/*/var/log")
            rc = 1
        else:
            print(f"chaos-cluster: every invariant held (seed {seed}; replay with: {replay})")
            rc = 0
    except BaseException as e:
        traceback.print_exc()
        result.update({"ok": False, "error": f"{type(e).__name__}: {e}", "faults": faults})
        print(f"chaos-cluster: the run failed: {e} (seed {seed}; replay with: {replay}); logs under {home}")
        rc = 2
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if ctx is not None:
            with contextlib.suppress(Exception):
                ctx.redis.close()
        try:
            c.stop(log=log)
        except Exception as e:
            print(f"chaos-cluster: stopping the cluster failed: {e}")
            rc = 2
        left = _leftovers(args.name, args.net)
        result["left_behind"] = left
        if left:
            print(f"chaos-cluster: left behind: {', '.join(left)}")
            rc = 2
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json_out:
            write_results(Path(args.json_out), result, "chaos-cluster")
    return rc


def _kinds(raw: str) -> list[str]:
    if raw in ("", "default"):
        return list(F.DEFAULT_KINDS)
    names = [k.strip() for k in raw.split(",") if k.strip()]
    bad = [k for k in names if k not in F.CATALOGUE]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {bad}; known: {', '.join(F.CATALOGUE)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="python -m tests.chaos.cluster_harness", description=doc.split("\n\n")[0]
    )
    ap.add_argument("--duration-s", type=float, default=600, help="how long faults are injected (600)")
    ap.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random, printed)")
    ap.add_argument(
        "--name", default=DEFAULT_NAME, help=f"the cluster's name ({DEFAULT_NAME}; never 'baton')"
    )
    ap.add_argument("--net", default=DEFAULT_NET, help=f"its subnet ({DEFAULT_NET})")
    ap.add_argument("--json-out", default=str(DEFAULT_JSON), help=f"where the results go ({DEFAULT_JSON})")
    ap.add_argument("--tick-ms", type=int, default=5000, help="the tick (5000: the issue's targets' tick)")
    ap.add_argument("--window", default="30s", help="the one timeframe traded (30s)")
    ap.add_argument("--assets", default="btc,eth,sol,xrp")
    ap.add_argument(
        "--faults",
        type=_kinds,
        default=list(F.DEFAULT_KINDS),
        help=f"fault kinds, comma-separated ({', '.join(F.DEFAULT_KINDS)})",
    )
    ap.add_argument(
        "--exits-strategy",
        default="momentum",
        help="a strategy with exits traded on a second slot per asset ('' for snipe alone) (momentum)",
    )
    ap.add_argument("--exits-params", default=EXITS_PARAMS, help=f"its parameters ({EXITS_PARAMS})")
    ap.add_argument("--gap-s", type=pair, default=(3.0, 10.0), help="pause between faults (3,10)")
    ap.add_argument("--quiet-s", type=float, default=20.0, help="clean trading after the faults (20)")
    ap.add_argument("--settle-timeout-s", type=float, default=120.0)
    ap.add_argument("--settle-grace-s", type=int, default=15)
    ap.add_argument("--start-timeout-s", type=float, default=240.0)
    args = ap.parse_args(argv)
    if args.name == "baton":
        ap.error("--name baton is `make cluster`'s: the chaos run takes its own")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
