"""The `baton` command: run, stop and inspect the stack, and control trading.

The control commands (halt, pause, resume, reload, start, stop-workers, slots) are the
operations of the HTTP API, carried out by the same code (control/) directly over Redis
and supervisord's socket: they work when the api program is down, which is when an operator
needs them most. Each is audited with source=cli and the unix user.

Exit codes: 0 done, 1 refused or failed (the reason on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import msgspec
import redis

from baton import settings as settings_mod
from baton.cli import (
    backtest,
    cluster,
    credentials,
    decisions,
    history,
    inputs,
    replay,
    shadow,
    slots,
    strategy,
)
from baton.cli.output import emit, fail
from baton.errors import (
    BadRequest,
    Conflict,
    DeployError,
    NotFound,
    OpError,
    ReloadError,
    SettingsError,
    StackError,
)
from baton.settings import Settings
from control import commands as c
from control import render
from control.ops import Ops, Supervisor
from deploy import logs, orchestrate, supervisord
from deploy import reload as hot
from kernel.lease import lease_color
from state import connection

# --- seams: the fast tests replace these two with fakeredis and a fake supervisor ----------------


def redis_client(s: Settings) -> redis.Redis:
    # The socket timeout must outlast a halt's two waits for the worker (ack, then cancel).
    return connection.client(s, timeout_s=2 * s.halt_ack_timeout_ms / 1000 + 10)


def supervisor_for(s: Settings) -> Supervisor | None:
    """None: Ops talks to the real supervisord over its unix socket."""
    return None


def make_ops(s: Settings) -> Ops:
    return Ops(s, redis_client(s), supervisor=supervisor_for(s))


def actor() -> c.Actor:
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (some containers)
        who = f"uid{os.getuid()}"
    return c.Actor(source="cli", who=who)


# --- arguments ---------------------------------------------------------------------------------


STOPS = {
    "halt": "emergency stop: no order is posted any more, open orders cancelled",
    "pause": "no new entries; open positions still settle",
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="baton", description="Baton trading runtime")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="command")

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")

    p = sub.add_parser("run", help="start everything under supervisord and wait for the first tick")
    p.add_argument("--wait-s", type=float, default=120.0)
    sub.add_parser("stop", help="stop supervisord and every program it runs (the whole stack)")
    json_flag(sub.add_parser("status", help="what the system is doing, read from Redis"))

    p = sub.add_parser("deploy", help="stage the code as a release and hand over to it (blue/green)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ref", help="deploy this git ref instead of the working tree")
    src.add_argument("--source", type=Path, help="deploy the packages of this directory")
    shadow.add_deploy_flags(p)
    json_flag(p)
    json_flag(sub.add_parser("rollback", help="hand back to the release before the last deploy"))
    p = sub.add_parser("reload", help="hot-reload strategy modules in the active worker")
    p.add_argument(
        "--no-sync", action="store_true", help="do not copy the working tree's strategies into the release"
    )
    json_flag(p)

    # The stops are never refused for their arguments: a reason too long, bytes that are not
    # UTF-8, an unknown option, words without --reason all still stop (what was wrong is
    # printed with the answer). Only a bad setting or an unreachable Redis can stop them.
    for name, text in STOPS.items():
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--reason", nargs="?", const="", default="", help="why (lands in the audit stream and status)"
        )
        p.add_argument("words", nargs="*", help="the reason, without --reason")
        json_flag(p)
    json_flag(sub.add_parser("resume", help="lift a halt and a pause"))
    json_flag(sub.add_parser("start", help="start the trading worker (the colour that traded last)"))
    json_flag(
        sub.add_parser("stop-workers", help="stop the trading workers after their tick; the rest runs on")
    )

    slots.add_parser(sub, json_flag)

    decisions.add_parser(sub, json_flag)
    backtest.add_parser(sub, json_flag)
    replay.add_parser(sub, json_flag)
    p = sub.add_parser("audit", help="the latest control calls: who did what, from which door")
    p.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    json_flag(p)
    p = sub.add_parser("logs", help="tail a program's log under var/log (default: the active worker)")
    p.add_argument("program", nargs="?", help="e.g. worker-blue, feed, sim, api, settle, redis")
    p.add_argument("-n", type=int, default=40, help="lines to show (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    p = sub.add_parser(
        "redis-cli",
        help="redis-cli on this stack's Redis as your Redis user (BATON_REDIS_USER, default cli); "
        "every redis-cli flag passes through",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="redis-cli's own flags and command")
    sub.add_parser(
        "redis-acl",
        help="write the Redis users (hashed passwords, rules) into var/secrets/redis/users.acl, "
        "for a Redis you run (BATON_REDIS_URL); `baton run` does it for the embedded one",
    )
    cluster.add_parser(sub, json_flag)
    strategy.add_parser(sub, json_flag)
    history.add_parser(sub, json_flag)
    inputs.add_parser(sub, json_flag)
    shadow.add_parser(sub, json_flag)
    p = sub.add_parser("token", help="print the API bearer token (for scripts; keep it secret)")
    p.add_argument("--id", action="store_true", help="print only the token's id, which names it safely")
    p.add_argument(
        "--metrics",
        action="store_true",
        help="the read-only token of GET /metrics instead (BATON_METRICS_AUTH=token; for Prometheus)",
    )
    return ap


# --- entry -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["redis-cli"]:
        # Before argparse: redis-cli's flags (--json, -r 3, -x) are its own, not ours.
        return credentials.cmd_redis_cli(argv[1:])
    ap = parser()
    args, extra = ap.parse_known_args(argv)
    if extra and args.cmd not in STOPS:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    args.ignored = extra
    try:
        s = settings_mod.load()
    except SettingsError as e:
        return fail(f"bad setting: {e}")
    try:
        return COMMANDS[args.cmd](s, args)
    except OpError as e:
        return fail(e.message)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        return fail(f"cannot reach Redis at {s.redis_url_shown}: {e} (is the stack running? `make run`)")
    except redis.RedisError as e:
        return fail(f"Redis error: {e}")
    except StackError as e:
        return fail(str(e))
    except BrokenPipeError:  # `baton logs | head`: the reader left, nothing is wrong
        # Python would complain flushing stdout at exit: point it at /dev/null first.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --- stack -------------------------------------------------------------------------------------


def cmd_run(s: Settings, args: argparse.Namespace) -> int:
    supervisord.start(s, wait_s=args.wait_s)
    print(render.status(make_ops(s).status()))
    print(f"\nstop with: make stop    keys: .venv/bin/baton redis-cli --scan --pattern '{s.prefix}*'")
    return 0


def cmd_stop(s: Settings, args: argparse.Namespace) -> int:
    supervisord.stop(s)
    return 0


def cmd_status(s: Settings, args: argparse.Namespace) -> int:
    st = make_ops(s).status()
    print(json.dumps(st, indent=2) if args.json else render.status(st))
    return 0


def cmd_deploy(s: Settings, args: argparse.Namespace) -> int:
    if args.cmd == "deploy" and args.shadow is not None:
        return shadow.cmd_deploy_shadow(s, args)
    if args.cmd == "deploy" and args.promote:
        return fail("deploy: --promote goes with --shadow N (a plain deploy hands over anyway)")
    if args.cmd == "deploy" and (args.force or args.shadow_decisions):
        return fail("deploy: --force and --shadow-decisions go with --shadow N")
    try:
        if args.cmd == "deploy":
            res = orchestrate.deploy(s, source=args.source, ref=args.ref)
        else:
            res = orchestrate.rollback(s)
    except DeployError as e:
        return fail(f"{args.cmd}: {e}")
    if args.json:
        print(json.dumps(dataclasses.asdict(res)))
    else:
        print(
            f"{res.kind} done: worker-{res.color} runs {res.release} "
            f"from tick {res.handover_tick + 1}; "
            f"takeover {res.takeover_ms} ms after the boundary, {res.missed} tick(s) missed, "
            f"{res.total_s:.1f} s in all"
        )
    return 0


def cmd_reload(s: Settings, args: argparse.Namespace) -> int:
    ops = make_ops(s)
    color = lease_color(ops.r, ops.k)
    # Without a lease holder, the audited operation below refuses (409) and says so.
    if not args.no_sync and color:
        # Check and copy the working tree's strategies into the running release first; the
        # audited operation (the API's POST /reload) then forces the worker's check.
        code_dir = cast(str | None, ops.r.hget(ops.k.worker(color), "code_dir"))
        if not code_dir:
            raise Conflict(f"worker-{color} does not report the directory it runs from")
        try:
            copied = hot.sync_strategies(Path(code_dir))
        except ReloadError as e:
            raise BadRequest(str(e)) from None
        if not args.json:
            print(f"copied into {code_dir}: {', '.join(copied) if copied else 'nothing changed'}")
    res = ops.reload(actor())
    if res.state != "ok":
        if args.json:
            print(msgspec.json.encode(res).decode())
        return fail(f"reload refused, the old code keeps running: {res.error}")
    return emit(
        args, res, lambda: f"reloaded {res.modules or 'nothing'} on worker-{res.color} ({res.hashes})"
    )


# --- control -----------------------------------------------------------------------------------


def stop_reason(args: argparse.Namespace) -> tuple[str, list[str]]:
    """A stop's reason from its arguments, and what was wrong with them (never an error)."""
    warnings = [f"unknown argument {a!r} ignored" for a in args.ignored]
    words = " ".join(args.words)
    if args.reason and words:
        warnings.append(f"words besides --reason ignored: {words[:100]!r}")
    return args.reason or words, warnings


def cmd_halt(s: Settings, args: argparse.Namespace) -> int:
    reason, warnings = stop_reason(args)
    res = make_ops(s).halt(actor(), c.HaltBody(reason=reason), warnings)
    return emit(args, res, lambda: render.halt(res))


def cmd_pause(s: Settings, args: argparse.Namespace) -> int:
    reason, warnings = stop_reason(args)
    res = make_ops(s).pause(actor(), c.PauseBody(reason=reason), warnings)

    def human() -> str:
        v = res.control
        line = (
            f"paused (seq {v.seq}): no new entries; open positions still settle ({v.pause_reason})"
            if res.changed
            else f"already paused ({v.pause_reason})"
        )
        line += "\nnote: trading is halted as well" if v.halted else ""
        return line + "".join(f"\nwarning  {w}" for w in res.warnings)

    return emit(args, res, human)


def cmd_resume(s: Settings, args: argparse.Namespace) -> int:
    res = make_ops(s).resume(actor())
    return emit(args, res, lambda: f"resumed (seq {res.control.seq}): trading is neither halted nor paused")


def cmd_lifecycle(s: Settings, args: argparse.Namespace) -> int:
    ops = make_ops(s)
    res = ops.start(actor()) if args.cmd == "start" else ops.stop(actor())
    return emit(args, res, lambda: ", ".join(f"{p} {state}" for p, state in res.programs.items()))


# --- slots -------------------------------------------------------------------------------------


def cmd_slots(s: Settings, args: argparse.Namespace) -> int:
    return slots.cmd_slots(make_ops(s), actor(), args)


# --- audit, logs, token ------------------------------------------------------------------------


def cmd_audit(s: Settings, args: argparse.Namespace) -> int:
    res = make_ops(s).audit_tail(args.n)

    return emit(args, res, lambda: render.audit(res.entries))


def cmd_logs(s: Settings, args: argparse.Namespace) -> int:
    program = args.program or active_worker(s)
    path = s.log_dir / f"{program}.log"
    if not path.is_file():
        known = sorted(p.stem for p in s.log_dir.glob("*.log")) if s.log_dir.is_dir() else []
        raise NotFound(
            f"no log for {program!r} in {s.log_dir}; "
            + (f"programs with a log: {', '.join(known)}" if known else "nothing has run from here yet")
        )
    sys.stdout.write(logs.tail(path, max(0, args.n)))
    sys.stdout.flush()
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
            logs.follow(path, sys.stdout)
    return 0


def active_worker(s: Settings) -> str:
    """The lease holder's program; without Redis, the worker whose log changed last."""
    try:
        ops = make_ops(s)
        color = lease_color(ops.r, ops.k)
        if color:
            return f"worker-{color}"
    except redis.RedisError:
        print("baton: Redis is not reachable; showing the worker log written last", file=sys.stderr)
    logs = sorted(s.log_dir.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].stem if logs else "worker-blue"


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "stop": cmd_stop,
    "status": cmd_status,
    "deploy": cmd_deploy,
    "rollback": cmd_deploy,
    "reload": cmd_reload,
    "halt": cmd_halt,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "start": cmd_lifecycle,
    "stop-workers": cmd_lifecycle,
    "slots": cmd_slots,
    "audit": cmd_audit,
    "decisions": decisions.command(make_ops),
    "backtest": backtest.cmd_backtest,
    "replay": replay.command(lambda s: redis_client(s)),
    "logs": cmd_logs,
    "token": credentials.cmd_token,
    "redis-acl": credentials.cmd_redis_acl,
    "cluster": cluster.cmd_cluster,
    "strategy": strategy.cmd_strategy,
    "history": lambda s, args: history.cmd_history(s, args, redis_client),
    "inputs": lambda s, args: inputs.cmd_inputs(s, args, redis_client),
    "shadow": shadow.cmd_shadow,
}
