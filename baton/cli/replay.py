"""`baton replay --from T0 --to T1 [--slot S] [--strategy-file F [--strategy NAME] | --release R]
[--json]`: the recorded evaluations of a time range (the input log, docs/evaluate.md) evaluated
again (control/replay.py) and compared with the live decisions, per slot.

Exit codes: 0 with a report (differences are a report, not an error), 2 when an argument is
wrong (the message names it), 1 when Redis cannot be read.
`--json` prints one object with at least decisions, equal, differ and slots (issue #26).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from baton.cli.timespec import time_range_ms
from baton.errors import BadRequest
from baton.settings import Settings
from control import render
from control.input_archive import iter_evaluations
from control.replay import Answer, Code, ReplayReport, replay
from control.replay_value import RedisOutcomes
from control.slot_rules import check_id
from kernel.input_log import Evaluation
from state.keys import Keys

# Differences the table shows (--json lists them all, up to control/replay.py's cap per slot).
SHOWN = 5


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "replay",
        help="evaluate recorded inputs again (the code that made them, a file or a release) and "
        "compare the decisions",
    )
    p.add_argument("--from", dest="from_", required=True, metavar="T0", help="unix seconds or ISO 8601")
    p.add_argument("--to", metavar="T1", help="unix seconds or ISO 8601 (default: now)")
    p.add_argument("--slot", help="one slot's records (default: every slot's)")
    code = p.add_mutually_exclusive_group()
    code.add_argument("--strategy-file", type=Path, metavar="F", help="evaluate with this strategy file")
    code.add_argument("--release", metavar="R", help="evaluate with this release's strategies")
    p.add_argument(
        "--strategy",
        metavar="NAME",
        help="with --strategy-file: the strategy whose records it evaluates (default: the file's name)",
    )
    p.add_argument(
        "-n", "--differences", type=int, default=SHOWN, help=f"differences listed (default {SHOWN})"
    )
    json_flag(p)


def stored_evaluations(
    r: Any, k: Keys, home: Path, from_ms: int, to_ms: int, slot: str | None, problems: list[str]
) -> Iterable[Evaluation]:
    """The input log's records in the range, oldest first (files, then Redis)."""
    return iter_evaluations(r, k, home, from_ms, to_ms, slot, problems)


def usage(message: str) -> int:
    print(f"baton replay: {message}", file=sys.stderr)
    return 2


def command(client: Callable[[Settings], Any]) -> Callable[[Settings, argparse.Namespace], int]:
    """The command as `baton`'s table wants it, over the CLI's Redis client (its test seam)."""
    return lambda s, args: cmd_replay(s, args, client)


def cmd_replay(s: Settings, args: argparse.Namespace, client: Callable[[Settings], Any]) -> int:
    try:
        to = args.to if args.to is not None else f"{time.time():.3f}"
        from_ms, to_ms = time_range_ms(args.from_, to)
        if args.slot is not None:
            check_id(args.slot)
        code = Code(
            Path(s.home),
            release=args.release or "",
            strategy_file=args.strategy_file,
            strategy=args.strategy or "",
        )
    except ValueError as e:
        return usage(str(e))
    except BadRequest as e:
        return usage(e.message)
    r, k = client(s), Keys(s.prefix)
    problems: list[str] = []
    records = stored_evaluations(r, k, Path(s.home), from_ms, to_ms, args.slot, problems)
    report = replay(records, code, RedisOutcomes(r, k), from_ms, to_ms, args.slot)
    report.problems += problems
    if args.slot is not None and not report.decisions and not r.hexists(k.slots(), args.slot):
        known = sorted(str(x) for x in r.hkeys(k.slots()))
        return usage(
            f"unknown slot {args.slot!r}: not configured and nothing recorded for it in the range; "
            f"slots: {', '.join(known) or 'none'}"
        )
    for p in report.problems:
        print(f"baton: {p}", file=sys.stderr)
    print(msgspec.json.encode(report).decode() if args.json else text(report, max(0, args.differences)))
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def _usd(x: float) -> str:
    return f"{x:+.2f}"


def answer_text(a: Answer) -> str:
    if a.kind == "buy":
        order = f"buy {a.side} @{a.price:g} ${a.stake_usd:g} {a.order_type}"
    elif a.kind == "sell":
        order = f"sell {a.shares:g} sh {a.side} @{a.price:g} {a.order_type}"
    else:
        order = a.kind
    return f"{order}: {a.reason}" if a.reason else order


def text(report: ReplayReport, shown: int = SHOWN) -> str:
    lines = [f"replay {_when(report.from_ms)} .. {_when(report.to_ms)} UTC with {report.code}"]
    if not report.slots:
        lines.append("no recorded decisions in the range")
    rows = []
    for sid, s in sorted(report.slots.items()):
        pnl = _usd(s.pnl_delta_usd)
        if s.windows_unknown:
            pnl += f" ({s.windows_unknown} of {s.windows_differing} windows unknown)"
        rows.append([sid, str(s.decisions), str(s.equal), str(s.differ), pnl])
    if rows:
        r = report
        rows.append(["all", str(r.decisions), str(r.equal), str(r.differ), _usd(r.pnl_delta_usd)])
        lines.append(render.table(["slot", "decisions", "equal", "differ", "pnl delta (USD)"], rows))
    diffs = sorted(
        ((sid, d) for sid, s in report.slots.items() for d in s.differences), key=lambda x: (x[1].at_ms, x[0])
    )
    if diffs and shown:
        lines.append(f"first {min(shown, len(diffs))} of {report.differ} differences:")
        for sid, d in diffs[:shown]:
            lines.append(
                f"  {sid}  tick {d.tick}  {_when(d.at_ms)}  window {_when(d.window_start_s * 1000)[11:19]} "
                f"closed {d.window}  ({d.strategy}, release {d.release})"
            )
            lines.append(f"    live      {answer_text(d.live)}")
            lines.append(f"    replayed  {answer_text(d.replayed)}")
    if report.skipped:
        lines.append(f"{report.skipped} record(s) of other strategies not replayed")
    lines.append(f"pnl assumes: {report.assumptions}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
