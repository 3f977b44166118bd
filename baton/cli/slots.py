"""`baton slots`: the slots as a table; add, remove, enable, disable or change one.

The slots hash in Redis is what the worker trades (it reads it every tick): a slot added here
trades from the worker's next tick, one removed stops. What is written persists there,
across restarts and deploys; BATON_ASSETS x BATON_TIMEFRAMES only seed a fresh Redis.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from baton.cli.output import emit
from control import commands as c
from control import render
from control.ops import Ops


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, e.g. edge=0.05, not {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name.strip()}: {value!r} is not a number") from None


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The `slots` command and its subcommands, on the `baton` parser's subparsers `sub`."""
    p = sub.add_parser("slots", help="the slots as a table; add, remove, enable, disable or change one")
    json_flag(p)
    ssub = p.add_subparsers(dest="slots_cmd", metavar="{add,remove,set,enable,disable}")

    def params(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--param",
            type=_param,
            action="append",
            default=[],
            metavar="NAME=NUMBER",
            help="a strategy parameter (repeatable), e.g. --param edge=0.05; one left out takes "
            "the strategy's declared default",
        )

    q = ssub.add_parser("add", help="a new slot; it trades from the worker's next tick")
    q.add_argument("slot", metavar="ID", help="free-form id, e.g. btc-15m or btc-15m.momentum")
    q.add_argument("--asset", required=True, help="e.g. btc")
    q.add_argument("--timeframe", required=True, help="the market window: 5m, 15m, 1h or 4h")
    q.add_argument("--strategy", required=True, help="a module of worker/strategies, e.g. snipe")
    q.add_argument("--stake", type=float, help="stake per entry, USD (default BATON_STAKE_USD)")
    q.add_argument("--disabled", action="store_true", help="add it disabled (it trades once enabled)")
    params(q)
    json_flag(q)

    q = ssub.add_parser("remove", help="remove a slot; refused while it holds a position in its window")
    q.add_argument("slot", metavar="ID")
    q.add_argument(
        "--force",
        action="store_true",
        help="remove it even while it holds a position or an order in its window (the position "
        "settles; no exit of it is made)",
    )
    json_flag(q)

    q = ssub.add_parser("set", help="change a slot's strategy, stake, parameters or state")
    q.add_argument("slot", metavar="ID")
    q.add_argument(
        "--strategy", help="another strategy; its parameters the new one does not declare are dropped"
    )
    q.add_argument("--stake", type=float, help="stake per entry, USD")
    params(q)
    on = q.add_mutually_exclusive_group()
    on.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    on.add_argument("--disable", dest="enabled", action="store_const", const=False)
    json_flag(q)

    for name in ("enable", "disable"):
        q = ssub.add_parser(name, help=f"{name} one slot")
        q.add_argument("slot", metavar="ID")
        json_flag(q)


def cmd_slots(ops: Ops, actor: c.Actor, args: argparse.Namespace) -> int:
    if args.slots_cmd is None:
        res = ops.slots()
        return emit(
            args, res, lambda: render.slots_table(res.slots) if res.slots else "no slots in Redis yet"
        )
    if args.slots_cmd == "remove":
        gone = ops.remove_slot(actor, args.slot, c.SlotRemove(force=args.force))
        return emit(args, gone, lambda: "\n".join([f"{args.slot}: removed", *gone.notes]))
    if args.slots_cmd == "add":
        body = c.SlotNew(
            id=args.slot,
            asset=args.asset,
            timeframe=args.timeframe,
            strategy=args.strategy,
            stake_usd=args.stake,
            params=dict(args.param),
            enabled=not args.disabled,
        )
        one = ops.add_slot(actor, body)
    elif args.slots_cmd in ("enable", "disable"):
        one = ops.set_slot_enabled(actor, args.slot, args.slots_cmd == "enable")
    else:
        patch = c.SlotPatch(
            stake_usd=args.stake,
            params=dict(args.param) if args.param else None,
            strategy=args.strategy,
            enabled=args.enabled,
        )
        one = ops.patch_slot(actor, args.slot, patch)
    verb = {"add": "added", "enable": "enabled", "disable": "disabled", "set": "changed"}[args.slots_cmd]
    return emit(args, one, lambda: _changed(args.slot, verb, one))


def _changed(slot_id: str, verb: str, one: c.SlotResult) -> str:
    lines = [f"{slot_id}: {verb if one.changed else 'unchanged'}", *one.notes]
    return "\n".join([*lines, render.slots_table([one.slot])])
