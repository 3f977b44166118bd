"""`baton cluster`: the simulated three-host deployment (deploy/cluster/, docs/ha.md) from the
command line: start, stop, status, exec on a host, a host up or down, deploys across hosts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from baton.cli.output import emit, fail
from baton.errors import DeployError, StackError
from baton.settings import Settings
from deploy import supervisord

if TYPE_CHECKING:
    from deploy.cluster import Cluster


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The `cluster` command and its subcommands, on the `baton` parser's subparsers `sub`."""
    p = sub.add_parser("cluster", help="the simulated three-host deployment (docs/ha.md)")
    csub = p.add_subparsers(
        dest="cluster_cmd", required=True, metavar="{start,stop,status,exec,up,down,deploy,rollback,handover}"
    )
    q = csub.add_parser(
        "start", help="namespaces, Redis, Sentinels and programs; returns once a worker trades"
    )
    q.add_argument("--wait-s", type=float, default=180.0)
    csub.add_parser("stop", help="stop every host and remove the namespaces, links and bridge")
    json_flag(csub.add_parser("status", help="hosts, lease, Redis primary and replicas, Sentinels, standbys"))
    q = csub.add_parser("exec", help="run a command inside a host's namespace with its environment")
    q.add_argument("host", help="h1, h2 or h3")
    q.add_argument("argv", nargs=argparse.REMAINDER, help="-- and the command, e.g. -- baton status")
    q = csub.add_parser("up", help="bring back a host whose processes were killed")
    q.add_argument("host", help="h1, h2 or h3")
    q.add_argument("--wait-s", type=float, default=90.0, help="how long to wait for its Redis and worker")
    q = csub.add_parser("down", help="stop a host for maintenance (its programs finish their work)")
    q.add_argument("host", help="h1, h2 or h3")
    q.add_argument("--force", action="store_true", help="even while it holds the lease or the Redis primary")
    q = csub.add_parser(
        "deploy",
        help="blue/green across hosts: the release to the standby's host, the handover, the old "
        "colour restarted on it as the standby",
    )
    src = q.add_mutually_exclusive_group()
    src.add_argument("ref", nargs="?", help="deploy this git ref instead of the working tree")
    src.add_argument("--source", type=Path, help="deploy the packages of this directory")
    json_flag(q)
    json_flag(csub.add_parser("rollback", help="deploy again the release the last cluster deploy replaced"))
    json_flag(
        csub.add_parser(
            "handover", help="move the lease to the other worker host, code unchanged (drain a host)"
        )
    )


def cmd_cluster(s: Settings, args: argparse.Namespace) -> int:
    # Here, not at the top: only this command needs it.
    from deploy.cluster import Cluster
    from deploy.cluster import status as cluster_status

    c = Cluster.from_env()
    if args.cluster_cmd == "start":
        try:
            c.start(timeout_s=args.wait_s)
        except StackError as e:
            raise StackError(
                f"{e}\nlogs: {c.home}/hosts/<host>/var/log/; what started is removed by `make cluster-stop`"
            ) from None
        print(cluster_status.render(c.status()))
        print("\nrun commands on a host: baton cluster exec h2 -- baton status    stop: make cluster-stop")
    elif args.cluster_cmd == "stop":
        c.stop()
    elif args.cluster_cmd == "status":
        res = c.status()
        return emit(args, res, lambda: cluster_status.render(res))
    elif args.cluster_cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            return fail("cluster exec: no command (baton cluster exec h2 -- baton status)")
        return c.exec(args.host, argv, capture=False, timeout_s=None).returncode
    elif args.cluster_cmd in ("deploy", "rollback", "handover"):
        return cluster_deploy(c, args)
    elif args.cluster_cmd == "down":
        c.down(args.host, force=args.force)
        print(f"{args.host} is down: bring it back with `baton cluster up {args.host}`")
    elif args.cluster_cmd == "up":
        c.up(args.host)

        def whole() -> bool:
            lacks = c.missing(args.host)
            if lacks:
                raise StackError(f"{args.host} lacks {lacks}")
            return True

        supervisord.wait_until(whole, args.wait_s, f"{args.host} to be whole")
        print(f"{args.host} is up: its Redis replicates from {c.primary_host() or '?'}, its workers stand by")
    return 0


def cluster_deploy(c: Cluster, args: argparse.Namespace) -> int:
    try:
        if args.cluster_cmd == "deploy":
            res = c.deploy(ref=args.ref, source=args.source)
        else:
            res = c.rollback() if args.cluster_cmd == "rollback" else c.handover()
    except DeployError as e:
        return fail(f"cluster {args.cluster_cmd}: {e}")
    return emit(
        args,
        res,
        lambda: (
            f"{res.kind} done: worker-{res.color} on {res.host} runs {res.release} from tick "
            f"{res.handover_tick + 1} (epoch {res.epoch_before} -> {res.epoch_after}); takeover "
            f"{res.takeover_ms} ms after the boundary, {res.missed} tick(s) missed; worker-{res.from_color} "
            f"on {res.from_host} stands by on it ({res.total_s:.1f} s in all)"
        ),
    )
