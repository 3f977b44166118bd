"""The simulated three-host deployment as one object: start it (`make cluster`), stop it
(`make cluster-stop`), ask what it does, run commands on a host, and the faults the chaos and
bench parts inject (kill a host, cut its link, pause a program).

Topology (docs/ha.md): namespaces `<name>-h1..h3` and `<name>-venue` on a bridge `<name>-br`;
h1 runs worker-blue, h2 worker-green (the warm standby), h3 the first Redis primary and a
second api, the others Redis replicas; every host runs a Sentinel, the feed and settle; the
venue runs the sim.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel

from baton.errors import StackError
from baton.secretfiles import read_secret, write_secret
from baton.settings import REPO_ROOT, load
from deploy.cluster import deploys
from deploy.cluster import hosts as hostmod
from deploy.cluster import net as netmod
from deploy.cluster import redis as ha
from deploy.cluster import status as st
from deploy.cluster.deploys import ClusterDeployResult
from deploy.cluster.hosts import COLORS, Host
from deploy.cluster.net import HOSTS, VENUE
from deploy.sandbox import SLOT_PARAMS, parse_params, set_slot_params
from deploy.supervisord import supervisor_call, wait_until
from kernel.clock import wall_ms
from kernel.lease import read_lease
from state import acl
from state.journal import JournalRepo
from state.keys import Keys

DEFAULT_NAME = "baton"
DEFAULT_NET = "10.77.0.0/24"
# The first primary is on h3, the host without a worker: one host's loss then costs the lease
# (about a second) or the primary (a Sentinel failover, 2-3 s), not both at once, which is the
# slowest takeover of all (the standby cannot take the lease before a replica is promoted).
FIRST_PRIMARY = "h3"
# Programs finish their tick (a worker) or the job in hand (settle) in this time at a stop; one
# that takes longer is killed (every write it makes is fenced and idempotent). Then Redis and
# Sentinel stop, and what remains after that is killed with its namespace.
PROGRAMS_WAIT_S = 10.0
REDIS_WAIT_S = 10.0


class Cluster:
    def __init__(self, home: Path, name: str, net: str, environ: Mapping[str, str]) -> None:
        self.home = Path(home).resolve()
        self.net = netmod.network(name, net)
        self.environ = dict(environ)
        base = load({**self.environ, "BATON_HOME": str(self.home)})
        self.prefix = base.prefix
        self.master = base.redis_master
        self.keys = Keys(self.prefix)

    @classmethod
    def from_env(
        cls,
        home: Path | None = None,
        name: str | None = None,
        net: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Cluster:
        """The cluster the environment (and `env`, laid over it) describes: BATON_HOME,
        BATON_CLUSTER_NAME, BATON_CLUSTER_NET, and every BATON_* setting its programs get."""
        environ = {**os.environ, **(env or {})}
        home = home or Path(environ.get("BATON_HOME", "").strip() or REPO_ROOT)
        name = name or environ.get("BATON_CLUSTER_NAME", "").strip() or DEFAULT_NAME
        net = net or environ.get("BATON_CLUSTER_NET", "").strip() or DEFAULT_NET
        return cls(home, name, net, environ)

    # --- hosts ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.net.name

    @property
    def secrets_dir(self) -> Path:
        return hostmod.cluster_home(self.home) / "var" / "secrets"

    def addrs(self) -> dict[str, str]:
        return {h: self.net.addr(h) for h in HOSTS}

    def host(self, name: str) -> Host:
        if name not in HOSTS:
            raise StackError(f"no host {name!r} in the cluster (hosts: {', '.join(HOSTS)})")
        return hostmod.make_host(self.net, self.home, name, self.environ)

    def _require(self, host: str) -> None:
        if self.net.netns(host) not in netmod.namespaces():
            raise StackError(
                f"cluster {self.name} is not running (no namespace {self.net.netns(host)}): make cluster"
            )

    def exists(self) -> bool:
        return bool(netmod.leftovers(self.net))

    def _primary_file(self) -> Path:
        return hostmod.cluster_home(self.home) / "var" / "primary"

    def _last_primary(self) -> str:
        """The primary when the cluster was last seen (h3 at first), for a host or a cluster
        started while no Sentinel answers: what most Sentinels' own files name (they rewrite
        them at every failover), else the primary noted at the last start or stop."""
        by_addr = {a: h for h, a in self.addrs().items()}
        named = Counter(by_addr.get(ha.monitored(self.host(n).settings), "") for n in HOSTS)
        named.pop("", None)
        if named:
            return named.most_common(1)[0][0]
        try:
            h = self._primary_file().read_text().strip()
        except OSError:
            return FIRST_PRIMARY
        return h if h in HOSTS else FIRST_PRIMARY

    def _note_primary(self, host: str) -> None:
        if host in HOSTS:
            write_secret(self._primary_file(), host)

    # --- start and stop ------------------------------------------------------------------------

    def start(self, timeout_s: float = 180.0, log: Any = print, ready: bool = True) -> None:
        """Namespaces, secrets, every host's supervisord and the sim; returns once the lease
        holder has ticked (a tick after the Redis primary answered) and, with `ready`, once
        every Sentinel knows every replica and every other Sentinel (a failover can happen)."""
        if os.geteuid() != 0:
            raise StackError("make cluster makes network namespaces: it must run as root")
        for tool in ("ip", "redis-server"):
            if not shutil.which(tool):
                raise StackError(f"{tool} not found (packages iproute2, redis-server)")
        t0 = time.monotonic()
        secrets = hostmod.make_secrets(self.home, self.prefix, self.environ)
        netmod.create(self.net)
        primary = self._current_primary() or self._last_primary()
        log(f"network {self.net.name}: bridge {self.net.bridge} {self.net.gateway}, primary {primary}")
        if not self._sim_up():
            hostmod.start_sim(self.net, self.home, self.environ)
        fresh = not any(hostmod.supervisord_running(self.host(n)) for n in HOSTS)
        for name in HOSTS:
            host = self.host(name)
            if hostmod.supervisord_running(host):
                log(f"{name}: supervisord already running")
                continue
            hostmod.remove_leftover_socket(host)
            hostmod.prepare(host, secrets, self.net.addr(primary))
            # On a fresh cluster the standby waits for worker-blue's lease: the two would
            # race for it otherwise.
            hold = fresh and COLORS.get(name, "blue") != "blue"
            hostmod.start_supervisord(host, hold_standby=hold)
            log(f"{name} ({host.addr}): supervisord started (logs in {host.settings.log_dir})")
        remaining = lambda: max(1.0, timeout_s - (time.monotonic() - t0))  # noqa: E731
        wait_until(self._sim_up, remaining(), f"the sim at {self.net.addr(VENUE)}")
        r = self.direct(primary)
        try:
            wait_until(r.ping, remaining(), f"Redis on {primary}")
            self._note_primary(primary)
            before = int(r.hget(self.keys.stats(), "ticks_done") or 0)
            log(f"redis primary on {primary}, replicas and sentinels starting; waiting for a tick")
            wait_until(
                lambda: (
                    int(r.hget(self.keys.stats(), "ticks_done") or 0) > before and read_lease(r, self.keys)
                ),
                remaining(),
                "the lease holder's first tick",
            )
            # A test cluster's strategy parameters for its seeded slots (deploy/sandbox.py).
            if params := parse_params(self.environ.get(SLOT_PARAMS, "")):
                set_slot_params(r, load({**self.environ, "BATON_HOME": str(self.home)}), params)
            # The standby held back above, or one an earlier start that timed out never started.
            for name, color in COLORS.items():
                host = self.host(name)
                with contextlib.suppress(Exception):
                    if host.supervisor("getProcessInfo", f"worker-{color}")["statename"] == "STOPPED":  # type: ignore[index]
                        host.supervisor("startProcess", f"worker-{color}", False)
                        log(f"{name}: worker-{color} started")
        finally:
            r.close()
        log(f"cluster {self.name} trading ({time.monotonic() - t0:.1f} s)")
        if ready:
            # Trading, but not yet able to lose a host: a fault injected now would find the
            # Sentinels unable to promote anyone.
            wait_until(_raising(self.failover_ready), remaining(), "the Sentinels to know every replica")
            log(f"cluster {self.name} ready for a failover ({time.monotonic() - t0:.1f} s)")

    def stop(self, log: Any = print) -> None:
        """Every host's supervisord (programs finish their tick), the sim, then namespaces,
        links and the bridge: nothing is left. Idempotent."""
        if not self.exists():
            log(f"cluster {self.name}: nothing to stop")
            return
        primary = self._current_primary()
        if primary:
            self._note_primary(primary)
            with contextlib.suppress(redis.RedisError):
                r = self.direct(primary)
                try:
                    JournalRepo(r, self.keys).mark_stack_stopped(wall_ms())
                finally:
                    r.close()
        # A program paused (SIGSTOP, `pause`) would neither stop nor die in time.
        for n in HOSTS:
            netmod.kill_all(self.net, n, sig=signal.SIGCONT)
        running = [h for h in (self.host(n) for n in HOSTS) if hostmod.supervisord_running(h)]
        pids = [
            int(p) for p in (hostmod.read_pid(h.settings.run_dir / "supervisord.pid") for h in running) if p
        ]
        # The programs of every host first, all at once, while every Redis and Sentinel still
        # runs: a program stopping writes its last words (an rq worker its death), which a
        # primary whose replicas stopped already would refuse (min-replicas-to-write).
        programs = {h.name: hostmod.stop_programs(h) for h in running}
        stopped = lambda: all(hostmod.programs_down(h, programs[h.name]) for h in running)  # noqa: E731
        with contextlib.suppress(StackError):
            wait_until(stopped, PROGRAMS_WAIT_S, "every host's programs to stop")
        for n in HOSTS:  # one still stopping by now is killed (its writes are fenced)
            netmod.kill_all(self.net, n, spare=("supervisord", "redis-server"))
        for h in running:
            with contextlib.suppress(Exception):
                h.supervisor("shutdown")
        with contextlib.suppress(StackError):
            wait_until(
                lambda: not any(netmod.alive(p) for p in pids), REDIS_WAIT_S, "every host's supervisord"
            )
        netmod.destroy(self.net)
        left = netmod.leftovers(self.net)
        if left:
            raise StackError(f"cluster {self.name}: could not remove {', '.join(left)}")
        log(f"cluster {self.name} stopped: no namespace, link or process left")

    def _sim_up(self) -> bool:
        venue = hostmod.make_host_env_sim(self.net, self.home, self.environ)
        return _port_open(self.net.addr(VENUE), int(venue["BATON_SIM_CLOB_PORT"]))

    # --- faults and repairs --------------------------------------------------------------------

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of the host (everything in its namespace, supervisord too)."""
        self.host(host)
        return netmod.kill_all(self.net, host)

    def up(self, host: str, timeout_s: float = 60.0) -> None:
        """Bring back a host whose processes are gone: its Redis a replica of the primary the
        Sentinels name now, its workers standbys. Nothing to do when its supervisord runs."""
        h = self.host(host)
        if hostmod.supervisord_running(h):
            return
        self._require(host)
        primary = self._current_primary(exclude=host) or self._last_primary()
        # What the killed supervisord left behind (its programs are killed with it).
        netmod.kill_all(self.net, host)
        hostmod.remove_leftover_socket(h)
        hostmod.prepare(h, self.secrets_dir, self.net.addr(primary))
        hostmod.start_supervisord(h)
        r = self.direct(host)
        try:
            wait_until(r.ping, timeout_s, f"Redis on {host}")
        finally:
            r.close()

    def failover_ready(self) -> str:
        """What keeps the cluster from surviving the loss of a host ("" when nothing): every
        Sentinel must know the other two and both replicas."""
        return st.failover_ready(self.addrs(), self._sentinel_auth())

    def missing(self, host: str) -> str:
        """What the host still lacks to be whole again after `up` ("" when nothing): its Redis
        replicating from the primary (or being it), its worker's heartbeat from the new process,
        ready or trading."""
        h = self.host(host)
        if not hostmod.supervisord_running(h):
            return "its supervisord"
        primary = self.primary_host()
        try:
            with self.direct(host) as r:
                role = r.info("replication")
        except redis.RedisError as e:
            return f"its Redis ({type(e).__name__})"
        if host != primary and role.get("master_link_status") != "up":
            return f"its Redis replicating from {primary or 'the primary'}"
        knows = st.sentinel_knows(self.net.addr(host), self._sentinel_auth())
        if knows != (len(HOSTS) - 1, len(HOSTS) - 1):
            return f"its Sentinel knowing the replicas and the other Sentinels ({knows})"
        color = COLORS.get(host)
        if color:
            pid = h.supervisor("getProcessInfo", f"worker-{color}")["pid"]  # type: ignore[index]
            with self.client() as r:
                beat = r.hgetall(self.keys.worker(color))
            if not pid or beat.get("pid") != str(pid) or beat.get("state") not in ("ready", "active"):
                return f"worker-{color} standing by"
        return ""

    def down(self, host: str, force: bool = False, timeout_s: float = 120.0) -> None:
        """Stop a host for maintenance: its supervisord and every program, each finishing what it
        does (a worker its tick), nothing killed; `up` brings it back. Refused while the host
        holds the lease or the Redis primary (move them first: `baton cluster handover`,
        SENTINEL FAILOVER) unless `force`."""
        h = self.host(host)
        if not hostmod.supervisord_running(h):
            return
        if not force:
            now = self.status()
            held = []
            if now.lease is not None and now.lease.host == host:
                held.append(f"the lease (worker-{now.lease.color}): `baton cluster handover` first")
            if now.redis.primary == host:
                held.append("the Redis primary: `baton redis-cli --sentinel SENTINEL FAILOVER` first")
            if held:
                raise StackError(f"{host} holds {'; and '.join(held)} (or --force)")
        pid = hostmod.read_pid(h.settings.run_dir / "supervisord.pid")
        h.supervisor("shutdown")
        if pid:
            wait_until(
                lambda: not netmod.alive(int(pid)), timeout_s, f"{host}'s supervisord (pid {pid}) to exit"
            )

    def cut(self, host: str) -> None:
        self.host(host)
        netmod.set_link(self.net, host, up=False)

    def heal(self, host: str) -> None:
        self.host(host)
        netmod.set_link(self.net, host, up=True)

    def pause(self, host: str, program: str) -> None:
        os.kill(self._pid(host, program), signal.SIGSTOP)

    def resume(self, host: str, program: str) -> None:
        os.kill(self._pid(host, program), signal.SIGCONT)

    def _pid(self, host: str, program: str) -> int:
        info = supervisor_call(self.host(host).socket, "getProcessInfo", program)
        if not info["pid"]:
            raise StackError(f"{host}: {program} is not running ({info['statename']})")
        return int(info["pid"])

    # --- commands on a host --------------------------------------------------------------------

    def exec(
        self, host: str, argv: Sequence[str], *, capture: bool = True, timeout_s: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        """`argv` inside the host's namespace with that host's environment."""
        h = self.host(host)
        self._require(host)
        return subprocess.run(
            hostmod.in_netns(h.netns, list(argv)),
            env=dict(h.env),
            capture_output=capture,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    # --- deploys (deploy/cluster/deploys.py) -----------------------------------------------------

    def deploy(
        self,
        ref: str | None = None,
        source: Path | None = None,
        log: Any = print,
        ready_timeout_s: float = 90.0,
    ) -> ClusterDeployResult:
        """The working tree (or `ref`, or `source`) to the standby colour's host, the handover at a
        tick boundary, then the old colour restarted on it as the warm standby on its own host.
        Raises DeployError (what still runs) when it does not happen."""
        with self._deploy_client() as r:
            hosts = [self.host(n) for n in HOSTS]
            return deploys.deploy(
                hosts, COLORS, r, ref=ref, source=source, log=log, ready_timeout_s=ready_timeout_s
            )

    def rollback(self, log: Any = print, ready_timeout_s: float = 90.0) -> ClusterDeployResult:
        """A deploy of the release the last cluster deploy or rollback replaced."""
        with self._deploy_client() as r:
            return deploys.rollback(
                [self.host(n) for n in HOSTS], COLORS, r, log=log, ready_timeout_s=ready_timeout_s
            )

    def handover(self, log: Any = print, ready_timeout_s: float = 90.0) -> ClusterDeployResult:
        """The lease to the other worker host, code unchanged (drain a host), the same way."""
        with self._deploy_client() as r:
            return deploys.handover(
                [self.host(n) for n in HOSTS], COLORS, r, log=log, ready_timeout_s=ready_timeout_s
            )

    @contextlib.contextmanager
    def _deploy_client(self) -> Iterator[Any]:
        """The `cli` user's client through the Sentinels; afterwards every connection it opened
        is closed, the Sentinels' too (closing the client alone leaves them to the collector)."""
        r = self.client(user="cli")
        try:
            yield r
        finally:
            pool = r.connection_pool
            pool.disconnect()
            for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", []):
                sentinel.close()

    # --- Redis ---------------------------------------------------------------------------------

    def _password(self, user: str) -> str:
        return read_secret(acl.password_file(hostmod.cluster_home(self.home), user))

    def _sentinel_auth(self) -> st.SentinelAuth:
        return st.SentinelAuth(ha.SENTINEL_PORT, self.master, acl.ADMIN, self._password(acl.ADMIN))

    def direct(self, host: str, user: str = acl.ADMIN) -> Any:
        """A client of the Redis on `host` itself (primary or not), from the root namespace."""
        return redis.Redis(
            host=self.net.addr(host),
            port=ha.REDIS_PORT,
            username=user,
            password=self._password(user),
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=st.no_retry(),
        )

    def client(self, user: str = acl.ADMIN) -> Any:
        """A client that follows the primary through the Sentinels, from the root namespace."""
        sentinel = Sentinel(
            [(a, ha.SENTINEL_PORT) for a in self.addrs().values()],
            sentinel_kwargs={
                "username": acl.ADMIN,
                "password": self._password(acl.ADMIN),
                "socket_timeout": st.PROBE_TIMEOUT_S,
                "socket_connect_timeout": st.PROBE_TIMEOUT_S,
                "retry": st.no_retry(),
            },
        )
        return sentinel.master_for(
            self.master,
            username=user,
            password=self._password(user),
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
        )

    def _current_primary(self, exclude: str = "") -> str:
        views = [v for v in st.sentinels(self.addrs(), self._sentinel_auth()) if v.host != exclude]
        return st.primary_of(views)

    def primary_host(self) -> str:
        """The host whose Redis the Sentinels name as primary now ("" when none answers)."""
        return self._current_primary()

    # --- status --------------------------------------------------------------------------------

    def status(self) -> st.ClusterStatus:
        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
            up = list(pool.map(lambda n: hostmod.supervisord_running(self.host(n)), HOSTS))
        hosts = [
            st.HostStatus(n, self.net.addr(n), u, netmod.link_up(self.net.link(n)))
            for n, u in zip(HOSTS, up, strict=True)
        ]
        return st.gather(
            self.name, self.net.net, hosts, self._sentinel_auth(), self.direct, self.keys, self.exists()
        )


def _port_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=st.PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _raising(check: Any) -> Any:
    """`check` (returning what is missing, "" for nothing) as a wait_until condition whose
    last error says what was missing."""

    def cond() -> bool:
        lacking = check()
        if lacking:
            raise StackError(lacking)
        return True

    return cond
