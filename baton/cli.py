"""The `baton` command: run, stop and inspect the stack."""

from __future__ import annotations

import argparse
import json
import sys

import redis

from baton import settings as settings_mod
from baton import stack, status


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="baton", description="Baton trading runtime")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="start everything under supervisord and wait for the first tick")
    p_run.add_argument("--wait-s", type=float, default=120.0)
    sub.add_parser("stop", help="stop supervisord and every program it runs")
    p_status = sub.add_parser("status", help="what the system is doing, read from Redis")
    p_status.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    try:
        s = settings_mod.load()
    except settings_mod.SettingsError as e:
        sys.exit(f"baton: bad setting: {e}")
    try:
        if args.cmd == "run":
            stack.start(s, wait_s=args.wait_s)
            st = status.collect(s, redis.Redis.from_url(s.redis_url, decode_responses=True))
            print(status.render(st))
            print(
                f"\nstop with: make stop    keys: redis-cli -p {s.redis_port} --scan --pattern '{s.prefix}*'"
            )
        elif args.cmd == "stop":
            stack.stop(s)
        elif args.cmd == "status":
            r = redis.Redis.from_url(s.redis_url, decode_responses=True, socket_timeout=5)
            try:
                st = status.collect(s, r)
            except redis.ConnectionError as e:
                sys.exit(f"baton: cannot reach Redis at {s.redis_url}: {e}")
            print(json.dumps(st, indent=2) if args.json else status.render(st))
    except stack.StackError as e:
        sys.exit(f"baton: {e}")


if __name__ == "__main__":
    main()
