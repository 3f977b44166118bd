"""`baton deploy --shadow N [--promote]` (deploy/shadow.py does it) and `baton shadow diff`:
a new release's decisions beside the live ones, and the differences in words."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from baton.cli.output import fail
from baton.errors import DeployError
from baton.settings import Settings
from deploy import shadow as shadow_deploy
from state import connection
from state.keys import Keys
from state.shadow import Answer, Difference, ShadowDiff, ShadowRepo

# Differences printed in words (all of them are in --json).
SHOWN = 20


def add_parser(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("shadow", help="the shadow release's decisions that differ from the live ones")
    ss = p.add_subparsers(dest="shadow_cmd", required=True, metavar="command")
    d = ss.add_parser("diff", help="the running (or last) shadow's counters and differences")
    d.add_argument(
        "-n", type=int, default=SHOWN, help=f"differences to print (default {SHOWN}; --json has all)"
    )
    json_flag(d)


def add_deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shadow",
        type=int,
        metavar="N",
        help="run the release as a shadow beside the active worker for N ticks, print the decisions "
        "that differ, and stop it (it posts nothing)",
    )
    p.add_argument(
        "--promote",
        action="store_true",
        help="with --shadow: then deploy the release (hand over as a deploy does), unless the "
        "shadow compared 0 decisions or answered errors where live did not (exit 1)",
    )
    p.add_argument(
        "--shadow-decisions",
        type=int,
        default=0,
        metavar="D",
        help="with --shadow: follow past N ticks until at least D decisions were compared "
        "(strategies that evaluate only near a window's end compare none in most ticks)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --shadow --promote: promote even a shadow that compared nothing or erred",
    )


def _answer(a: Answer) -> str:
    if a.kind == "buy":
        head = f"buy {a.side} at {a.price:g} for ${a.stake_usd:g}"
    elif a.kind == "sell":
        head = f"sell {a.shares:g} at {a.price:g}"
    elif a.kind == "none":
        return "no order (no reason given)"
    else:
        head = a.kind
    return f"{head}: {a.reason}" if a.reason else head


def difference_lines(differences: list[Difference], shown: int) -> list[str]:
    out = []
    for d in differences[-shown:] if shown > 0 else []:
        out.append(f"  tick {d.tick} {d.slot} ({d.strategy}, window {d.window_start_s})")
        out.append(f"    live   {_answer(d.live)}")
        out.append(f"    shadow {_answer(d.shadow)}")
    if len(differences) > shown:
        out.insert(0, f"  (the last {shown} of {len(differences)}; --json lists all)")
    return out


def render_diff(diff: ShadowDiff, shown: int = SHOWN) -> str:
    st = diff.shadow
    if not st.release:
        return "no shadow has run (start one with `baton deploy --shadow N`)"
    lines = [
        f"shadow     release {st.release}, {st.state}" + (f": {st.error}" if st.error else ""),
        f"ticks      {st.ticks} (last {st.last_tick})",
        f"decisions  {st.decisions} compared: {diff.equal} equal, {st.differ} different"
        + (" (compared 0 decisions: this shadow shows nothing)" if st.decisions == 0 else ""),
        f"errors     {st.erred} where live had none; {st.refused_io} file/socket/process uses refused",
        f"orders     {st.orders_posted} posted by the shadow",
    ]
    lines += difference_lines(diff.differences, shown)
    lines += [f"problem    {p}" for p in diff.problems]
    return "\n".join(lines)


def cmd_shadow(s: Settings, args: argparse.Namespace) -> int:
    r = connection.client(s)
    try:
        diff = ShadowRepo(r, Keys(s.prefix)).diff()
    finally:
        r.close()
    print(msgspec.json.encode(diff).decode() if args.json else render_diff(diff, args.n))
    return 0


def cmd_deploy_shadow(s: Settings, args: argparse.Namespace) -> int:
    # With --json the steps go to stderr: stdout holds the one object.
    log: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        res = shadow_deploy.shadow_deploy(
            s,
            args.shadow,
            promote=args.promote,
            source=args.source,
            ref=args.ref,
            log=log,
            min_decisions=args.shadow_decisions,
            force=args.force,
        )
    except DeployError as e:
        return fail(f"deploy --shadow: {e}")
    if args.json:
        print(json.dumps(msgspec.to_builtins(res)))
    else:
        print_result(res)
    # A refused promotion fails the command (exit 1), its report printed all the same.
    return fail(f"deploy --shadow --promote: {res.promote_refused}") if res.promote_refused else 0


def print_result(res: shadow_deploy.ShadowResult) -> None:
    print(
        f"shadow of {res.release} beside {res.from_release}: {res.shadow_ticks} ticks, "
        f"{res.decisions} decisions compared, {res.equal} equal, {res.differ} different, "
        f"{res.erred} errors where live had none, {res.refused_io} file/socket/process uses refused, "
        f"{res.orders_posted} orders posted by the shadow"
    )
    if res.decisions == 0:
        print("compared 0 decisions: this shadow shows nothing")
    for line in difference_lines(res.differences, SHOWN):
        print(line)
    if res.promoted and res.deploy is not None:
        d = res.deploy
        print(
            f"promoted: worker-{d['color']} runs {d['release']} from tick {d['handover_tick'] + 1}; "
            f"{d['missed']} tick(s) missed, {res.total_s:.1f} s in all"
        )
