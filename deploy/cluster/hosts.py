"""The simulated hosts' homes, environments and supervisords.

Each host is `$BATON_HOME/hosts/<host>`: its own var/ (logs, Redis data, supervisor socket,
releases, secrets), and its own supervisord started inside its namespace from the repo's
supervisor.conf. Which programs start is the host's environment (the autostart variables) and
its include fragments (redis, sentinel). The secrets are made once in the cluster's own home
(`$BATON_HOME/hosts/cluster/var/secrets`) and copied owner-only into each host's var/secrets.
The venue's namespace runs the sim alone, as a plain process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from baton.errors import StackError
from baton.secretfiles import ensure_secret, secrets_dir, write_secret
from baton.settings import API_TOKEN_FILE, PRIVATE_KEY_FILE, Settings, load
from deploy import releases
from deploy.cluster import redis as ha
from deploy.cluster.net import HOSTS, VENUE, Network
from deploy.supervisord import (
    SUPERVISOR_CONF,
    UMASK,
    owner_only_dir,
    scrubbed_env,
    supervisor_call,
    supervisor_env,
)
from state import acl

API_PORT = 7390
# Which programs each host's supervisord starts (supervisor.conf's autostart variables); feed
# and settle run everywhere, Redis and Sentinel come from the host's fragments.
ROLES: dict[str, dict[str, bool]] = {
    "h1": {"api": True, "blue": True, "green": False},
    "h2": {"api": False, "blue": False, "green": True},
    "h3": {"api": True, "blue": False, "green": False},
}
# The colour each host's worker runs (h3 has none).
COLORS = {"h1": "blue", "h2": "green"}
# Variables of the caller's that no host may inherit: they say how the single-host stack
# reaches its Redis and sim, which the cluster sets itself.
NOT_INHERITED = (
    "BATON_HOME",
    "BATON_REDIS_URL",
    "BATON_REDIS_PORT",
    "BATON_REDIS_BIND",
    "BATON_REDIS_USER",
    "BATON_API_HOST",
    "BATON_API_PORT",
    "BATON_BINANCE_WS_URL",
    "BATON_BINANCE_REST_URL",
    "BATON_CLOB_URL",
    "BATON_GAMMA_URL",
)


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    addr: str
    netns: str
    home: Path
    settings: Settings
    # What its supervisord and `exec` run with: no secret in it.
    env: Mapping[str, str]

    @property
    def socket(self) -> Path:
        return self.settings.supervisor_socket

    def supervisor(self, method: str, *args: object) -> object:
        return supervisor_call(self.socket, method, *args)


def cluster_home(home: Path) -> Path:
    """Where the cluster's secrets are made once (and its own notes are kept)."""
    return home / "hosts" / "cluster"


def host_home(home: Path, host: str) -> Path:
    return home / "hosts" / host


def node_env(net: Network, home: Path, node: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a host's programs (or the venue's sim): the caller's BATON_*
    settings, with what the cluster decides set here."""
    env = {k: v for k, v in scrubbed_env(environ).items() if k not in NOT_INHERITED}
    venue = net.addr(VENUE)
    binance_port = environ.get("BATON_SIM_BINANCE_PORT", "").strip() or "7301"
    clob_port = environ.get("BATON_SIM_CLOB_PORT", "").strip() or "7302"
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PATH=bin_dir + os.pathsep + environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        BATON_HOME=str(host_home(home, node)),
        BATON_HOST=node,
        BATON_SIM_BINANCE_PORT=binance_port,
        BATON_SIM_CLOB_PORT=clob_port,
    )
    if node == VENUE:
        env["BATON_SIM_BIND"] = venue
        return env
    # The host's own Sentinel first: a client asks them in this order, and waits out the
    # connect timeout of one it cannot reach. With h1 cut off, h2's programs asked h1's Sentinel
    # first at every reconnect; bounded by the lease (1 s), the standby's look never got past it
    # and never took the lease (12 s, measured). The own Sentinel is always on the program's
    # side of a partition; on the cut-off side it names the old primary, which refuses writes
    # (min-replicas-to-write).
    order = [node, *(h for h in HOSTS if h != node)]
    sentinels = ",".join(f"{net.addr(h)}:{ha.SENTINEL_PORT}" for h in order)
    env.update(
        BATON_REDIS_SENTINELS=sentinels,
        BATON_REDIS_MIN_REPLICAS=environ.get("BATON_REDIS_MIN_REPLICAS", "").strip() or "1",
        BATON_BINANCE_WS_URL=f"ws://{venue}:{binance_port}",
        BATON_BINANCE_REST_URL=f"http://{venue}:{binance_port}",
        BATON_CLOB_URL=f"http://{venue}:{clob_port}",
        BATON_GAMMA_URL=f"http://{venue}:{clob_port}",
        BATON_API_HOST=net.addr(node),
        BATON_API_PORT=str(API_PORT),
    )
    return env


def make_host(net: Network, home: Path, node: str, environ: Mapping[str, str]) -> Host:
    env = node_env(net, home, node, environ)
    return Host(node, net.addr(node), net.netns(node), host_home(home, node), load(env), env)


# --- secrets -----------------------------------------------------------------------------------


def make_secrets(home: Path, prefix: str, environ: Mapping[str, str]) -> Path:
    """The cluster's secrets, made once: every Redis user's password and the ACL file, the
    paper signing key and the API token (a key or token given in `environ` wins, as for
    `baton run`). Returns the folder they are in."""
    root = cluster_home(home)
    owner_only_dir(root)
    acl.write_acl_file(root, prefix, ha=True)
    folder = secrets_dir(root)
    for var, name in (("BATON_PRIVATE_KEY", PRIVATE_KEY_FILE), ("BATON_API_TOKEN", API_TOKEN_FILE)):
        value = environ.get(var, "").strip()
        if value:
            write_secret(folder / name, value)
    if not (folder / PRIVATE_KEY_FILE).exists():
        # A paper account of this cluster's own at the sim (any key signs paper orders).
        write_secret(folder / PRIVATE_KEY_FILE, "0x" + secrets.token_hex(32))
    ensure_secret(folder / API_TOKEN_FILE)
    return folder


def copy_secrets(src: Path, host: Host) -> None:
    """Every file of the cluster's secrets into the host's var/secrets, owner-only."""
    dst = secrets_dir(host.home)
    for f in sorted(src.rglob("*")):
        if f.is_file() and not f.name.startswith("."):  # a dot file: a write in progress
            write_secret(dst / f.relative_to(src), f.read_text().rstrip("\n"))


# --- a host's supervisord ----------------------------------------------------------------------


def prepare(host: Host, secrets_src: Path, primary_addr: str) -> None:
    """The host's folders, secrets, Redis and Sentinel config, and the release its worker
    colour points at."""
    s = host.settings
    for d in (s.var_dir, s.log_dir, s.run_dir, s.run_dir / "supervisor.d"):
        owner_only_dir(d)
    copy_secrets(secrets_src, host)
    # Sentinel promotes a host without a worker first (h3): a worker host's loss then costs
    # the lease or the primary, seldom both (deploy/cluster/cluster.py FIRST_PRIMARY).
    ha.render(host.settings, host.addr, primary_addr, replica_priority=100 if host.name in COLORS else 50)
    color = COLORS.get(host.name)
    if color and releases.pointed(host.home, color) is None:
        rel = releases.stage(host.home)
        releases.point(host.home, color, rel.id)


def supervisord_env(host: Host, hold_standby: bool = False) -> dict[str, str]:
    """`hold_standby`: the host's worker stays stopped until started (a fresh cluster's
    standby starts once worker-blue holds the lease, so that blue trades first)."""
    env = supervisor_env(host.settings, host.env)
    roles = dict(ROLES[host.name])
    if hold_standby:
        roles.update(blue=False, green=False)
    env.update(
        BATON_SIM_AUTOSTART="false",
        BATON_API_AUTOSTART=str(roles["api"]).lower(),
        BATON_WORKER_BLUE_AUTOSTART=str(roles["blue"]).lower(),
        BATON_WORKER_GREEN_AUTOSTART=str(roles["green"]).lower(),
    )
    return env


def in_netns(host_netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", host_netns, *argv]


def start_supervisord(host: Host, hold_standby: bool = False) -> None:
    out = subprocess.run(
        in_netns(
            host.netns, [str(Path(sys.executable).with_name("supervisord")), "-c", str(SUPERVISOR_CONF)]
        ),
        env=supervisord_env(host, hold_standby),
        umask=UMASK,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise StackError(
            f"{host.name}: supervisord failed to start: {out.stderr.strip() or out.stdout.strip()}"
        )


def supervisord_running(host: Host) -> bool:
    if not host.socket.exists():
        return False
    try:
        return bool(host.supervisor("getState")["statename"] == "RUNNING")  # type: ignore[index]
    except Exception:  # no answer (a killed supervisord's socket): down
        return False


def make_host_env_sim(net: Network, home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    return node_env(net, home, VENUE, environ)


def start_sim(net: Network, home: Path, environ: Mapping[str, str]) -> None:
    """The sim in the venue's namespace, listening on the venue's address."""
    env = node_env(net, home, VENUE, environ)
    venue_home = host_home(home, VENUE)
    log_dir = venue_home / "var" / "log"
    owner_only_dir(log_dir)
    with open(log_dir / "sim.log", "ab") as log:
        # setsid --fork: the sim is nobody's child here (the cluster outlives this process),
        # and what runs it returns at once.
        out = subprocess.run(
            in_netns(net.netns(VENUE), ["setsid", "--fork", sys.executable, "-m", "sim"]),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(SUPERVISOR_CONF).parent),
            umask=UMASK,
            check=False,
        )
    if out.returncode != 0:
        raise StackError(f"the sim did not start (exit {out.returncode}): see {log_dir / 'sim.log'}")


def remove_leftover_socket(host: Host) -> None:
    """A killed supervisord leaves its socket and pid file; a new one refuses to start over a
    socket it cannot tell from a live one's."""
    for f in (host.socket, host.settings.run_dir / "supervisord.pid"):
        f.unlink(missing_ok=True)


# Stopped last, after every program of every host (Cluster.stop).
SERVERS = ("redis", "sentinel")
_UP = ("RUNNING", "STARTING", "BACKOFF")


def stop_programs(h: Host) -> list[str]:
    """Ask the host's supervisord to stop every program but Redis and Sentinel (without
    waiting); the names asked."""
    names = []
    with contextlib.suppress(Exception):
        for p in h.supervisor("getAllProcessInfo"):  # type: ignore[attr-defined]
            if p["name"] not in SERVERS and p["statename"] in _UP:
                with contextlib.suppress(Exception):
                    h.supervisor("stopProcess", p["name"], False)
                names.append(p["name"])
    return names


def programs_down(h: Host, names: list[str]) -> bool:
    try:
        info = {p["name"]: p["statename"] for p in h.supervisor("getAllProcessInfo")}  # type: ignore[attr-defined]
    except Exception:
        return True  # its supervisord is gone: so are they
    return all(info.get(n) not in (*_UP, "STOPPING") for n in names)


def read_pid(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
