"""`baton decisions [SLOT] [--limit N] [--json]`: the decision log (every evaluation of a slot:
buy, sell or pass, with its reason, what the kernel made of it and the figures the strategy
saw), read from Redis; the API's GET /decisions answers the same.

`--json` prints a list, newest first, each with at least slot, at_ms, action and reason
(the tools' contract, issue #25); the table lists them oldest first, like a log, so that the
newest is next to the prompt.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import msgspec

from baton.settings import Settings
from control import render
from control.decisions import LIMIT_DEFAULT
from control.ops import Ops
from state.decisions import READ_MAX
from state.structs import DecisionLogEntry


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= READ_MAX:
        raise argparse.ArgumentTypeError(f"{n} is not from 1 to {READ_MAX}")
    return n


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "decisions",
        help="the decision log: each evaluation (buy, sell, pass) with its reason, newest last",
    )
    p.add_argument("slot", nargs="?", help="one slot's log (default: every slot's, merged by time)")
    p.add_argument(
        "-n",
        "--limit",
        type=_limit,
        default=LIMIT_DEFAULT,
        help=f"how many evaluations, the newest (1 to {READ_MAX}, default {LIMIT_DEFAULT})",
    )
    json_flag(p)


def cmd_decisions(ops: Ops, args: argparse.Namespace) -> int:
    res = ops.decisions(args.slot, args.limit)
    for p in res.problems:
        print(f"baton: {p}", file=sys.stderr)
    if args.json:
        print(msgspec.json.encode(res.decisions).decode())
    else:
        print(table(res.decisions, one_slot=bool(args.slot)))
    return 0


def command(make_ops: Callable[[Settings], Ops]) -> Callable[[Settings, argparse.Namespace], int]:
    """The command as `baton`'s table wants it, over the CLI's Ops (its seam for tests)."""
    return lambda s, args: cmd_decisions(make_ops(s), args)


def _order(e: DecisionLogEntry) -> str:
    if e.action == "buy":
        return f"{e.side} @{e.price:g} ${e.stake_usd:g} {e.order_type}"
    if e.action == "sell":
        return f"{e.shares:g} sh {e.side} @{e.price:g} {e.order_type}"
    return "-"


def _seen(e: DecisionLogEntry) -> str:
    """The figures most often wanted beside a reason: time left and the asks/bids."""
    f = e.figures
    parts = [f"{f['remaining_s']:.0f}s left"] if "remaining_s" in f else []
    for side in ("up", "down"):
        ask, bid = f.get(f"{side}_ask"), f.get(f"{side}_bid")
        if ask is not None or bid is not None:
            parts.append(f"{side} {'-' if bid is None else f'{bid:g}'}/{'-' if ask is None else f'{ask:g}'}")
    return " ".join(parts) or "-"


def table(entries: list[DecisionLogEntry], one_slot: bool = False) -> str:
    if not entries:
        return "no decisions logged yet"
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at_ms / 1000)) + f".{e.at_ms % 1000:03d}",
            *([] if one_slot else [e.slot]),
            e.action,
            _order(e),
            e.outcome or "-",
            _seen(e),
            e.reason or "-",
        ]
        for e in reversed(entries)
    ]
    head = ["at (UTC)", *([] if one_slot else ["slot"]), "action", "order", "outcome", "bid/ask", "reason"]
    return render.table(head, rows)
