"""`baton inputs roll`: copy the input log's new entries from Redis into this host's
var/inputs/<day>.jsonl.gz now, and delete the files older than BATON_INPUT_LOG_DAYS, as the
settle program does every few minutes (worker/input_files.py). What `baton replay` and the
backtest read is both places merged (control/input_archive.py); this only makes the files
current, e.g. before copying them elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError

from baton.cli.output import fail
from baton.settings import Settings
from kernel.clock import wall_ms
from state.keys import Keys
from worker import input_files


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("inputs", help="the input log: every evaluation's input and answer (var/inputs/)")
    isub = p.add_subparsers(dest="inputs_cmd", required=True, metavar="{roll}")
    q = isub.add_parser("roll", help="copy new entries from Redis into var/inputs/ now; delete old files")
    json_flag(q)


def cmd_inputs(s: Settings, args: argparse.Namespace, redis_client: Callable[[Settings], Any]) -> int:
    try:
        out = input_files.roll(redis_client(s), Keys(s.prefix), s.home, wall_ms(), s.input_log_days)
    except (RedisError, OSError) as e:
        return fail(f"inputs roll: {type(e).__name__}: {e}")
    for p in out.problems[:20]:
        print(f"baton: {p}", file=sys.stderr)
    if args.json:
        print(msgspec.json.encode(out).decode())
        return 0
    files = ", ".join(f"{name} (+{n})" for name, n in out.files.items()) or "none"
    print(f"{out.entries} entries ({out.evaluations} evaluations) rolled into {files}")
    print(f"deleted: {', '.join(out.deleted) or 'none'} (kept: {_kept(s.input_log_days)})")
    print(f"in {input_files.inputs_dir(s.home)}, up to stream id {out.cursor}")
    return 0


def _kept(days: float) -> str:
    return "forever" if days <= 0 else f"{days:g} days"
