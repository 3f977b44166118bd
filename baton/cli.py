"""The `baton` command: run, stop and inspect the stack."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

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
    p_deploy = sub.add_parser("deploy", help="stage the code as a release and hand over to it (blue/green)")
    src = p_deploy.add_mutually_exclusive_group()
    src.add_argument("--ref", help="deploy this git ref instead of the working tree")
    src.add_argument("--source", type=Path, help="deploy the packages of this directory")
    p_deploy.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    p_rollback = sub.add_parser("rollback", help="hand back to the release before the last deploy")
    p_rollback.add_argument("--json", action="store_true")
    p_reload = sub.add_parser("reload", help="hot-reload strategy modules in the active worker")
    p_reload.add_argument(
        "--no-sync", action="store_true", help="do not copy the working tree's strategies into the release"
    )
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
        elif args.cmd in ("deploy", "rollback"):
            from deploy import orchestrate

            try:
                if args.cmd == "deploy":
                    res = orchestrate.deploy(s, source=args.source, ref=args.ref)
                else:
                    res = orchestrate.rollback(s)
            except orchestrate.DeployError as e:
                sys.exit(f"baton {args.cmd}: {e}")
            if args.json:
                print(json.dumps(dataclasses.asdict(res)))
            else:
                print(
                    f"{res.kind} done: worker-{res.color} runs {res.release} "
                    f"from tick {res.handover_tick + 1}; "
                    f"takeover {res.takeover_ms} ms after the boundary, {res.missed} tick(s) missed, "
                    f"{res.total_s:.1f} s in all"
                )
        elif args.cmd == "reload":
            from deploy import reload as hot

            try:
                res = hot.reload(s, sync=not args.no_sync)
            except hot.ReloadError as e:
                sys.exit(f"baton reload: {e}")
            if res.get("state") != "ok":
                sys.exit(f"baton reload: refused, the old code keeps running: {res.get('error')}")
            print(f"reloaded {res.get('modules') or 'nothing'} ({res.get('hashes')})")
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
