"""The chaos harness (`make chaos`): a whole Baton stack with short ticks and short windows,
faults injected on a seeded schedule for a while, then a quiet drain and the invariant check.

    python -m tests.chaos.harness [--duration-s 600] [--seed N] [--json-out bench/results/chaos.json]
                                  [--tick-ms 1000] [--window 15s] [--assets btc,eth,sol,xrp]
                                  [--faults deploy,kill-worker,...] [--gap-s 5,15] [--bg-gap-s 4,12]
                                  [--exits-strategy momentum] [--exits-params k=v,...]

The stack is the real one (deploy/sandbox.py: redis-server with AOF, supervisord, sim, feed,
settle, both worker colours, api) in its own BATON_HOME with free ports. It trades both strategies:
snipe on the seeded slots (one per asset), and a strategy with exits (--exits-strategy,
momentum) on a second slot per asset, added with `baton slots add` once the stack runs, with
parameters that make it enter most windows and sell within them (--exits-params), so that
exit legs meet every fault too. The feed reaches the
sim's kline WebSocket through a proxy of the harness (tests/chaos/wsproxy.py), which
is how garbage frames get in. The fault catalogue is in faults.py, the lanes in lanes.py, what
the injectors work with (and the drain and snapshot that end a run) in context.py, the checker
in checker.py. Exit status: 0 when every invariant holds, 1 when one breaks (the seed
and a replay command are printed), 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from baton.settings import Settings
from control.commands import SlotNew
from control.slots import new_slot
from deploy.ports import free_port
from deploy.releases import PACKAGES
from deploy.sandbox import SLOT_PARAMS, STALE_MAKER, Stack, wait_for
from kernel.clock import wall_ms
from state.structs import Slot
from tests.chaos import checker
from tests.chaos import faults as F
from tests.chaos.context import Chaos, collect, drain
from tests.chaos.lanes import Outcome
from tests.chaos.wsproxy import WsProxy

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "bench" / "results" / "chaos.json"
# momentum, made to trade in 15 s windows: enter on any move of the last two bars at any ask
# but the extremes, take a cent of profit or stop a cent of loss (the sim's spread is two
# cents: most entries are sold a tick or two later), and sell what is left in the last 4 s.
EXITS_PARAMS = (
    "lookback=2,min_move_bps=0,min_agree=0.5,min_price=0.05,max_price=0.95,max_spread=0.2,"
    "entry_until_s=5,take_profit=0.01,stop_loss=0.01,flat_s=4"
)


def parse_timeframe_ms(tf: str) -> int:
    unit = {"s": 1000, "m": 60_000, "h": 3_600_000}[tf[-1]]
    return int(tf[:-1]) * unit


def source_trees(tmp: Path) -> list[Path]:
    """Two copies of the code to deploy from, differing by a comment in a strategy: the
    working tree may change under us (other people edit it), these do not."""
    out = []
    for n in ("a", "b"):
        src = tmp / f"src-{n}"
        for pkg in PACKAGES:
            shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        snipe = src / "worker" / "strategies" / "snipe.py"
        snipe.write_text(snipe.read_text() + f"\n# chaos release {n}\n")
        out.append(src)
    return out


def exit_slot_id(asset: str, window: str, strategy: str) -> str:
    """The exit strategy's slot of an asset: the asset first, as the checker reads a slot's
    asset from its id (tests/chaos/halts.py in_scope)."""
    return f"{asset}-{window}-{strategy}"


def add_exit_slots(st: Stack, assets: list[str], window: str, strategy: str, params: str) -> list[str]:
    """One slot per asset trading `strategy`, added through the CLI as an operator would."""
    ids = []
    flags = [a for kv in params.split(",") if kv.strip() for a in ("--param", kv.strip())]
    for asset in assets:
        sid = exit_slot_id(asset, window, strategy)
        out = st.baton(
            "slots", "add", sid, "--asset", asset, "--timeframe", window, "--strategy", strategy, *flags
        )
        if out.returncode != 0:
            raise RuntimeError(f"baton slots add {sid} failed: {out.stderr.strip() or out.stdout.strip()}")
        ids.append(sid)
    return ids


def exit_slots(assets: list[str], window: str, strategy: str, params: str, s: Settings) -> list[Slot]:
    """The exit strategy's slots (one per asset), validated as `baton slots add` validates
    them: for a harness that writes them with the admin's client (the cluster's)."""
    pairs = (kv.split("=", 1) for kv in params.split(",") if kv.strip())
    values = {k.strip(): float(v) for k, v in pairs}
    return [
        new_slot(
            SlotNew(
                id=exit_slot_id(a, window, strategy),
                asset=a,
                timeframe=window,
                strategy=strategy,
                params=values,
            ),
            s.max_stake_usd,
            s.stake_usd,
            s.timeframes,
        )
        for a in assets
    ]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Lane(threading.Thread):
    def __init__(
        self, ctx: Chaos, name: str, planned: list[F.Planned], seed: int, deadline: float, faults: list[dict]
    ) -> None:
        super().__init__(daemon=True, name=f"chaos-{name}")
        self.ctx, self.lane, self.planned, self.seed = ctx, name, planned, seed
        self.deadline = deadline  # time.monotonic() when no new fault may start
        self.faults = faults
        self.stop_flag = threading.Event()

    def run(self) -> None:
        # The first pass of the schedule holds every kind of the lane once: it runs to its end
        # even past the deadline, so that a run (the CI one above all) covers every fault.
        cover = len({p.kind for p in self.planned})
        for i, p in enumerate(self.planned):
            if self.stop_flag.wait(p.gap_s) or (i >= cover and time.monotonic() >= self.deadline):
                return
            kind = F.CATALOGUE[p.kind]
            with self.ctx.lock:
                self.ctx.seq += 1
                seq = self.ctx.seq
            rnd = random.Random(f"{self.seed}:{self.lane}:{i}")
            start = wall_ms()
            t0 = time.monotonic()
            error = ""
            try:
                out = kind.inject(self.ctx, rnd)
            except Exception as e:
                out = Outcome(recovered=False)
                error = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            end = wall_ms()
            took = time.monotonic() - t0
            recovered = out.recovered and took <= kind.max_effect_s
            planned, start = start, out.injected_ms or start
            rec = {
                "seq": seq,
                "lane": self.lane,
                "index": i,
                "kind": p.kind,
                "costs_ticks": kind.costs_ticks,
                "grace_ms": int(kind.grace_s * 1000),
                "max_effect_s": kind.max_effect_s,
                "planned_ms": planned,  # when the lane started it (before any wait for a moment)
                "start_ms": start,  # when the fault began
                "end_ms": end,
                "first_tick": (start - self.ctx.tick_ms) // self.ctx.tick_ms,
                "last_tick": (end + int(kind.grace_s * 1000)) // self.ctx.tick_ms,
                "recovered": recovered,
                "details": out.details,
                "problems": out.problems,
                "notes": out.notes,
                "error": error,
            }
            with self.ctx.lock:
                self.faults.append(rec)
            flag = (
                ""
                if recovered and not out.problems and not error
                else "  <-- "
                + "; ".join([*out.problems, error, "" if recovered else "NOT RECOVERED"]).strip("; ")
            )
            log(f"{self.lane:<10} #{seq:<3} {p.kind:<15} {end - start:>6} ms{flag}")


def run(args: argparse.Namespace) -> int:
    seed = args.seed
    kinds = args.faults
    tick_ms, window_ms = args.tick_ms, parse_timeframe_ms(args.window)
    schedule = F.plan(seed, kinds, args.gap_s, args.bg_gap_s)
    replay = f"python -m tests.chaos.harness --duration-s {args.duration_s:g} --seed {seed}" + (
        f" --faults {','.join(kinds)}" if kinds != F.DEFAULT_KINDS else ""
    )
    if (args.exits_strategy, args.exits_params) != ("momentum", EXITS_PARAMS):
        replay += f" --exits-strategy '{args.exits_strategy}' --exits-params '{args.exits_params}'"
    print(f"chaos: seed {seed}, {args.duration_s:g} s of faults, {tick_ms} ms ticks, {args.window} windows")
    print(f"chaos: replay with: {replay}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="baton-chaos-src-"))
    proxy_port = free_port()
    env = {
        "BATON_TICK_MS": str(tick_ms),
        "BATON_TIMEFRAMES": args.window,
        "BATON_ASSETS": args.assets,
        SLOT_PARAMS: "edge=0.0",  # enter whenever the estimate reaches the ask: every window trades
        **STALE_MAKER,  # and the maker's stale book makes it so (deploy/sandbox.py)
        "BATON_API_PORT": str(free_port()),
        # A loss limit would halt by itself; hundreds of resumes must not be rate limited.
        "BATON_DAILY_LOSS_LIMIT_USD": "1000000",
        "BATON_API_MUTATIONS_PER_MIN": "100000",
        # The checker reads the whole run's history (the ledger stream, every position):
        # nothing of it may be pruned, however long the run.
        "BATON_HISTORY_DAYS": "0",
        "BATON_BINANCE_WS_URL": f"ws://127.0.0.1:{proxy_port}",
    }
    st = Stack(**env)
    proxy = WsProxy(f"ws://127.0.0.1:{st.env['BATON_SIM_BINANCE_PORT']}", proxy_port)
    faults: list[dict[str, Any]] = []
    ctx: Chaos | None = None
    result: dict[str, Any] = {"seed": seed, "replay": replay, "home": str(st.home)}
    try:
        proxy.start()
        sources = source_trees(tmp)
        t_start = time.monotonic()
        log(f"starting a stack under {st.home}")
        st.start()
        ctx = Chaos(st, tick_ms, window_ms, proxy, sources)
        if args.exits_strategy:
            added = add_exit_slots(
                st, args.assets.split(","), args.window, args.exits_strategy, args.exits_params
            )
            log(f"added {', '.join(added)} ({args.exits_strategy}, exits on)")
        # Trading before the faults start: a few ticks in.
        wait_for(lambda: int(st.redis.hget("baton:stats", "last_tick") or 0) > 0, 60, "the first tick")
        first_tick = int(st.redis.hget("baton:stats", "last_tick")) + 1
        log(f"stack up in {time.monotonic() - t_start:.1f} s; chaos from tick {first_tick}")
        chaos_start = wall_ms()
        deadline = time.monotonic() + args.duration_s
        lanes = [
            Lane(ctx, lane, schedule[lane], seed, deadline, faults)
            for lane in (F.MAIN, F.BACKGROUND)
            if schedule[lane]
        ]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            # A lane stops starting faults at the deadline; the fault in hand runs to its end.
            while lane.is_alive():
                lane.join(1)
        chaos_end = wall_ms()
        log(f"faults off after {(chaos_end - chaos_start) / 1000:.0f} s: {len(faults)} injected; draining")
        drained = drain(ctx, args.quiet_s, args.settle_timeout_s)
        data = collect(st)
        faults.sort(key=lambda f: f["start_ms"])
        run_data = checker.RunData(
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
        )
        # The raw snapshot, for `python -m tests.chaos.checker` to judge again offline.
        data_file = st.home / "chaos-data.json"
        data_file.write_text(json.dumps(dataclasses.asdict(run_data), default=str))
        result["data"] = str(data_file)
        report = checker.check(run_data)
        # Under every fault, each program did its work as its own Redis user (state/acl.py):
        # a refusal is a right missing on some recovery path.
        denials = [d for d in st.acl_denials() if d.get("reason") != "auth"]
        planned_kinds = sorted({p.kind for lane in schedule.values() for p in lane})
        injected_kinds = sorted({f["kind"] for f in faults})
        result.update(
            {
                "ok": not report.broken and not denials,
                "acl_denials": denials,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(chaos_start / 1000)),
                "duration_s": args.duration_s,
                "tick_ms": tick_ms,
                "window": args.window,
                "assets": args.assets,
                "exits_strategy": args.exits_strategy,
                "exits_params": args.exits_params,
                "kinds": kinds,
                "kinds_injected": injected_kinds,
                "kinds_not_injected": sorted(set(planned_kinds) - set(injected_kinds)),
                "chaos_ms": [chaos_start, chaos_end],
                "drain": drained,
                "wall_s": round(time.monotonic() - t_start, 1),
                "report": report.to_json(),
                "faults": faults,
                "stats": data["stats"],
                "feed_stats": data["feed_stats"],
                "settle_stats": data["settle_stats"],
                "deploys": data["deploys"],
            }
        )
        print()
        print(checker.table(report))
        print()
        print(checker.fault_table(report))
        print()
        if denials:
            print(f"chaos: Redis refused a program (ACL LOG): {denials[:5]}")
        if report.broken or denials:
            print(f"chaos: BROKEN: {', '.join([r.name for r in report.broken] + ['acl'] * bool(denials))}")
            print(f"chaos: seed {seed}; replay with: {replay}")
            print(f"chaos: logs under {st.home}/var/log")
            rc = 1
        else:
            print(f"chaos: every invariant held (seed {seed}; replay with: {replay})")
            rc = 0
    except Exception as e:
        traceback.print_exc()
        result.update({"ok": False, "error": f"{type(e).__name__}: {e}", "faults": faults})
        print(f"chaos: the run failed: {e} (seed {seed}; replay with: {replay})")
        with contextlib.suppress(Exception):
            print(st.logs()[-6000:])
        rc = 2
    finally:
        if ctx is not None:
            ctx.close()
        with contextlib.suppress(Exception):
            st.stop()
        proxy.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json_out:
            write_results(Path(args.json_out), result, "chaos")
    return rc


def write_results(out: Path, result: dict[str, Any], who: str) -> None:
    """A run's results as JSON at `out` (--json-out), for the docs and a later re-check."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"{who}: results in {out}")


def pair(raw: str) -> tuple[float, float]:
    """`lo,hi` (or one number for both) of a command-line range such as --gap-s."""
    lo, _, hi = raw.partition(",")
    return float(lo), float(hi or lo)


def _kinds(raw: str) -> list[str]:
    if raw in ("", "default"):
        return list(F.DEFAULT_KINDS)
    names = [k.strip() for k in raw.split(",") if k.strip()]
    if names and names[0] == "+":
        names = [*F.DEFAULT_KINDS, *names[1:]]
    bad = [k for k in names if k not in F.CATALOGUE]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {bad}; known: {', '.join(F.CATALOGUE)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos.harness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration-s", type=float, default=600, help="how long faults are injected (600)")
    ap.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random, printed)")
    ap.add_argument("--json-out", default=str(DEFAULT_JSON), help=f"where the results go ({DEFAULT_JSON})")
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument("--window", default="15s", help="the one timeframe traded (15s)")
    ap.add_argument("--assets", default="btc,eth,sol,xrp")
    ap.add_argument(
        "--faults",
        type=_kinds,
        default=list(F.DEFAULT_KINDS),
        help=f"fault kinds, comma-separated ('+,kind' adds to the default) ({', '.join(F.DEFAULT_KINDS)})",
    )
    ap.add_argument(
        "--exits-strategy",
        default="momentum",
        help="a strategy with exits traded on a second slot per asset ('' for snipe alone) (momentum)",
    )
    ap.add_argument(
        "--exits-params",
        default=EXITS_PARAMS,
        help=f"its parameters, name=value,... ({EXITS_PARAMS})",
    )
    ap.add_argument("--gap-s", type=pair, default=(5.0, 15.0), help="main-lane pause (5,15)")
    ap.add_argument("--bg-gap-s", type=pair, default=(4.0, 12.0), help="background pause (4,12)")
    ap.add_argument("--quiet-s", type=float, default=17.0, help="clean trading after the faults (17)")
    ap.add_argument("--settle-timeout-s", type=float, default=90.0)
    ap.add_argument("--settle-grace-s", type=int, default=10)
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
