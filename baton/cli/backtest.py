"""`baton backtest --strategy NAME --from T0 --to T1 [--slots ...] [--json]`: the strategy run by
the kernel's own tick path over candle history, on a virtual clock, against a fill model
(control/backtest.py, kernel/backtest/; docs/evaluate.md "Backtest" says what it assumes).

`--json` prints one object: the report's totals (trades, pnl_usd, win_rate, max_drawdown_usd,
fees_usd, ...), `slots` (the per-slot table), `equity`, `trade_list`, and `picture` (the
equity curve's page). It holds no timing, so that the same inputs print the same bytes; the
text report prints the wall time.

Exit codes (as `baton replay` and argparse): 0 for a backtest that ran, whatever it earned;
2 for bad arguments (a time that does not parse, --to not after --from, a bad or unknown
strategy name, a --slots item that is not a slot, --lag-ms or --spread out of range); 1 for
a backtest that could not run (no candle history, a strategy that cannot load or that reads
the future). The reason is on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import msgspec

from baton.cli.output import fail
from baton.cli.timespec import time_range_ms
from baton.errors import BacktestError, BadRequest
from baton.settings import Settings
from control import backtest as bt
from control import render


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "backtest",
        help="run a strategy over candle history on the kernel's tick path: trades, PnL, drawdown, a picture",
    )
    p.add_argument("--strategy", required=True, help="a module of worker/strategies (e.g. snipe)")
    p.add_argument("--from", dest="from_", required=True, metavar="T0", help="unix seconds or ISO 8601 (UTC)")
    p.add_argument("--to", required=True, metavar="T1", help="unix seconds or ISO 8601 (UTC)")
    p.add_argument(
        "--slots",
        help="comma-separated asset-timeframe (btc-5m) or asset:timeframe[:stake] (btc:5m:2.5); default: "
        "the stack's slots of the strategy, else one per BATON_ASSETS x BATON_TIMEFRAMES",
    )
    p.add_argument(
        "--lag-ms", type=int, help="the model maker's lag behind the reference price (default: the sim's)"
    )
    p.add_argument("--spread", type=float, help="the model maker's spread in $/share (default: the sim's)")
    p.add_argument(
        "--feed-delay-ms",
        type=int,
        help="how long after a 1 s candle closes the feed has it (default 100: a tick never sees "
        "the candle closing on its own boundary, as live)",
    )
    json_flag(p)


def usage(message: str) -> int:
    """Bad arguments: exit 2, as argparse and `baton replay` do."""
    print(f"baton backtest: {message}", file=sys.stderr)
    return 2


def cmd_backtest(s: Settings, args: argparse.Namespace) -> int:
    try:
        from_ms, to_ms = time_range_ms(args.from_, args.to)
    except ValueError as e:
        return usage(str(e))
    if args.lag_ms is not None and args.lag_ms < 0:
        return usage(f"--lag-ms {args.lag_ms} is below 0")
    if args.spread is not None and not 0.0 <= args.spread <= 0.5:
        return usage(f"--spread {args.spread} is not between 0 and 0.5")
    if args.feed_delay_ms is not None and not 0 <= args.feed_delay_ms < s.tick_ms:
        return usage(f"--feed-delay-ms {args.feed_delay_ms} is not between 0 and the tick ({s.tick_ms} ms)")
    try:
        res, problems = bt.backtest(
            s,
            args.strategy,
            from_ms,
            to_ms,
            args.slots,
            args.lag_ms,
            args.spread,
            feed_delay_ms=args.feed_delay_ms,
        )
    except BadRequest as e:
        return usage(e.message)
    except BacktestError as e:
        return fail(f"backtest: {e}")
    for p in problems[:20]:
        print(f"baton: {p}", file=sys.stderr)
    if args.json:
        out = msgspec.to_builtins(res.report)
        out.pop("wall_s", None)
        out["picture"] = res.picture
        out["report_file"] = res.report_file
        out["slots_from"] = res.slots_from
        print(msgspec.json.encode(out).decode())
    else:
        print(text(res))
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def text(res: bt.Result) -> str:
    r = res.report
    fm = r.fill_model
    head = [
        f"backtest of {r.strategy}: {_when(r.from_ms)} to {_when(r.to_ms)} UTC, {len(r.slots)} slot(s) "
        f"from {res.slots_from}, tick {r.tick_ms} ms",
        f"trades {r.trades}   won {r.wins}   win rate {r.win_rate:.1%}   PnL {r.pnl_usd:+.2f} USD   "
        f"fees {r.fees_usd:.2f} USD   max drawdown {r.max_drawdown_usd:.2f} USD",
        f"cash {r.start_cash_usd:.2f} -> {r.end_cash_usd:.2f} USD   unresolved {r.unresolved}   "
        f"daily-loss halts {r.halts}",
        f"ticks {r.ticks} ({r.ticks_run} evaluated, the rest idle)   evaluations {r.evaluations}   "
        f"wall {res.wall_s:.2f} s ({(r.to_ms - r.from_ms) / 1000 / max(res.wall_s, 1e-9):,.0f}x real time)",
        f"books: {r.books_recorded} recorded, {r.books_modelled} modelled (maker {fm.lag_ms} ms late, "
        f"spread {fm.spread:g}, noise {fm.noise:g}, {fm.levels} levels, "
        f"{fm.depth_shares:g}+{fm.depth_step_shares:g}/level shares); the feed's candles seen "
        f"{r.feed_delay_ms} ms after they close",
        "",
    ]
    rows = [
        [
            sid,
            str(s.trades),
            f"{s.win_rate:.0%}" if s.trades else "-",
            f"{s.pnl_usd:+.2f}",
            f"{s.fees_usd:.2f}",
            str(s.evaluations),
            str(s.entries),
            str(s.exits),
            str(s.unfilled),
            str(s.refused),
            str(s.errors),
        ]
        for sid, s in sorted(r.slots.items())
    ]
    table = render.table(
        [
            "slot",
            "trades",
            "won",
            "pnl_usd",
            "fees",
            "evals",
            "entries",
            "exits",
            "unfilled",
            "refused",
            "errors",
        ],
        rows,
    )
    tail = ["", f"picture: {res.picture}", f"report:  {res.report_file}"]
    return "\n".join([*head, table, *tail])
