"""Blue/green deploys across hosts (`baton cluster deploy`, `Cluster.deploy`).

Each colour's worker runs on its own host (worker-blue on h1, worker-green on h2 as the warm
standby), each host with its own home, releases and supervisord, all sharing one Redis through
the Sentinels. A deploy is the single-host deploy's steps (deploy/orchestrate.py), each aimed at
the host that runs the colour:

1. staging: the code becomes a release in the standby colour's home, and the same release (same
   id, same files) is installed in the active colour's home;
2. starting: the standby colour is pointed at it and restarted on its host; the deploy waits
   until it is ready (dry-evaluated);
3. handover: the holder hands the lease over after the tick it is in (request/transfer, epoch + 1);
   the new holder runs the next tick;
4. standby: the old colour, which holds nothing any more, is restarted on the new release on its
   own host and waits until it is ready: the warm standby, now on the new release.

Afterwards both hosts run the new release, and a standby is warm again (it is not while step 4
restarts it: a second or two). A release that fails readiness never takes over: the standby is
restarted on the release it ran, and the holder keeps trading. A rollback is a deploy of the
release the last deploy replaced. Each host's supervisord is reached from here through its unix
socket (unix sockets are not bound to a network namespace).
"""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import redis

from baton.errors import DeployError, ReleaseError, StackError
from baton.settings import Settings
from deploy import releases
from deploy.orchestrate import deploy_lock, hand_over, other, start_color
from deploy.supervisord import supervisor_call
from deploy.watch import WorkerWatch
from kernel.clock import wall_ms
from state.deploys import DeploysRepo
from state.keys import COLORS, Keys
from state.lease import LeaseRepo
from state.workers import WorkersRepo

KINDS = ("cluster-deploy", "cluster-rollback")


class HostLike(Protocol):
    """What a deploy needs of a host (deploy.cluster's Host is one): its name, and its settings,
    whose home holds its releases, its supervisord's socket and its logs."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> Settings: ...


class HostRelease(msgspec.Struct, frozen=True):
    host: str
    color: str
    release: str  # the release the colour points at in that host's home
    state: str  # the worker's heartbeat state (active, ready, ...), "" when it has none


class ClusterDeployResult(msgspec.Struct, frozen=True):
    kind: str  # cluster-deploy | cluster-rollback
    release: str
    color: str  # the new lease holder's colour ...
    host: str  # ... and host
    from_color: str
    from_host: str
    from_release: str
    handover_tick: int  # the old holder's last tick
    epoch_before: int
    epoch_after: int
    takeover_ms: int  # start of the new holder's first tick after its boundary
    missed: int  # ticks missed at the handover (the point: 0)
    missed_during: int  # ticks counted missed (baton:stats) while the deploy ran
    ready_s: float  # the new release's readiness on the standby's host
    standby_ready_s: float  # the old colour, restarted on the new release, ready again
    total_s: float
    hosts: list[HostRelease]  # after the deploy: every worker colour, its host and release


RUNNING = ("RUNNING", "STARTING", "BACKOFF")


def colors_on(hosts: Sequence[HostLike], topology: Mapping[str, str]) -> dict[str, HostLike]:
    """colour -> the host that runs its worker: where supervisord runs the program, else the
    host `topology` (host -> colour) gives it, if that host's supervisord answers. Every host's
    supervisor.conf has both colours' programs; which one starts is the host's."""
    found: dict[str, HostLike] = {}
    up: dict[str, HostLike] = {}
    for h in hosts:
        try:
            infos = supervisor_call(h.settings.supervisor_socket, "getAllProcessInfo")
        except (OSError, xmlrpc.client.Fault):
            continue
        up[h.name] = h
        for p in infos:
            color = str(p["name"]).removeprefix("worker-")
            if str(p["name"]).startswith("worker-") and color in COLORS and p["statename"] in RUNNING:
                found.setdefault(color, h)
    for name, color in topology.items():
        if color not in found and name in up:
            found[color] = up[name]
    return found


class ClusterDeployer:
    def __init__(
        self,
        hosts: Sequence[HostLike],
        topology: Mapping[str, str],
        r: Any,
        log: Callable[[str], None] = print,
    ) -> None:
        if not hosts:
            raise DeployError("a cluster deploy needs the cluster's hosts")
        self.hosts = list(hosts)
        self.topology = dict(topology)
        self.s = hosts[0].settings
        self.k = Keys(self.s.prefix)
        self.r = r
        self.log = log
        self.deploys = DeploysRepo(r, self.k)
        self.lease = LeaseRepo(r, self.k)
        self.workers = WorkersRepo(r, self.k)

    def watch(self, h: HostLike) -> WorkerWatch:
        return WorkerWatch(h.settings, self.r, self.k, self.lease)

    def run(
        self,
        *,
        ref: str | None = None,
        source: Path | None = None,
        release_id: str | None = None,
        kind: str = "cluster-deploy",
        ready_timeout_s: float = 90.0,
    ) -> ClusterDeployResult:
        # Two readiness waits (the new holder, then the standby) besides the handover.
        ttl_ms = int((2 * ready_timeout_s + max(30.0, 8 * self.s.tick_ms / 1000) + 60) * 1000)
        with deploy_lock(self.deploys, ttl_ms):
            return self._run(
                ref=ref, source=source, release_id=release_id, kind=kind, timeout_s=ready_timeout_s
            )

    def _run(
        self, *, ref: str | None, source: Path | None, release_id: str | None, kind: str, timeout_s: float
    ) -> ClusterDeployResult:
        t_start = time.monotonic()
        on = colors_on(self.hosts, self.topology)
        lease = self.watch(self.hosts[0]).active()
        if lease is None or lease.color not in COLORS:
            raise DeployError("no worker holds the lease: nothing to hand over from (is the cluster up?)")
        from_color, target = lease.color, other(lease.color)
        if from_color not in on or target not in on:
            missing = target if target not in on else from_color
            where = next((h for h, c in self.topology.items() if c == missing), "HOST")
            raise DeployError(
                f"no running supervisord has worker-{missing}: bring its host back with "
                f"`baton cluster up {where}` first"
            )
        src, dst = on[from_color], on[target]
        w_src, w_dst = self.watch(src), self.watch(dst)
        home_src, home_dst = Path(src.settings.home), Path(dst.settings.home)
        missed_before = self._ticks_missed()

        rel = self._release(home_dst, home_src, ref, source, release_id)
        releases.install(home_dst, rel.id, home_src)
        for home in (home_dst, home_src):
            releases.prune(home)
        self.log(f"installed: release {rel.id} in {home_src} too")

        record: dict[str, Any] = {
            "kind": kind,
            "release": rel.id,
            "color": target,
            "host": dst.name,
            "from_color": from_color,
            "from_host": src.name,
            "from_release": lease.release,
            "requested_ms": wall_ms(),
        }
        before_dst = releases.pointed(home_dst, target)
        before_src = releases.pointed(home_src, from_color)

        def fail_new(reason: str) -> DeployError:
            holding = w_dst.active()
            if holding is not None and holding.color == target:
                reason += f"\n(worker-{target} holds the lease now and was left running)"
            else:
                # The standby goes back to the release it ran, and stays warm on it.
                self._restore(w_dst, home_dst, target, before_dst, rel.id)
            return self._failed(record, reason, f"worker-{from_color} keeps trading on {lease.release}")

        self.log(f"starting: worker-{target} on {dst.name}")
        hb, ready_s = start_color(
            w_dst, self.workers, home_dst, target, rel.id, timeout_s, fail_new, self.log
        )
        h = hand_over(w_dst, self.lease, hb, target, rel.id, from_color, lease.release, fail_new, self.log)

        def fail_standby(reason: str) -> DeployError:
            self._restore(w_src, home_src, from_color, before_src, rel.id)
            return self._failed(
                record,
                reason,
                f"worker-{target} on {dst.name} trades on {rel.id}; worker-{from_color} on {src.name} "
                f"was restarted on {before_src or 'nothing'}",
            )

        self.log(f"standby: worker-{from_color} on {src.name} restarts on release {rel.id}")
        _hb, standby_s = start_color(
            w_src, self.workers, home_src, from_color, rel.id, timeout_s, fail_standby, self.log
        )
        result = ClusterDeployResult(
            kind=kind,
            release=rel.id,
            color=target,
            host=dst.name,
            from_color=from_color,
            from_host=src.name,
            from_release=lease.release,
            handover_tick=h.tick,
            epoch_before=h.epoch_before,
            epoch_after=h.epoch,
            takeover_ms=h.takeover_ms,
            missed=h.missed,
            missed_during=max(0, self._ticks_missed() - missed_before),
            ready_s=round(ready_s, 3),
            standby_ready_s=round(standby_s, 3),
            total_s=round(time.monotonic() - t_start, 3),
            hosts=self.placement(),
        )
        fields = msgspec.structs.asdict(result)
        fields["hosts"] = ",".join(f"{x.host}:{x.color}:{x.release}" for x in result.hosts)
        self._record({**fields, "result": "ok", "done_ms": wall_ms()})
        return result

    # --- pieces -----------------------------------------------------------------------------
    def _release(
        self, home: Path, other_home: Path, ref: str | None, source: Path | None, release_id: str | None
    ) -> releases.Release:
        if release_id:
            for h in (home, other_home):
                if (releases.releases_dir(h) / release_id).is_dir():
                    rel = releases.read_manifest(h, release_id)
                    if h != home:
                        rel = releases.install(h, release_id, home)
                    self.log(f"staging: release {rel.id} (staged before, from {rel.source})")
                    return rel
            raise DeployError(f"release {release_id} is in neither {home} nor {other_home} any more")
        rel = releases.stage(home, source=source, ref=ref)
        self.log(
            f"staging: release {rel.id} from {rel.source}"
            + (" (identical code, reused)" if rel.reused else "")
        )
        return rel

    def _restore(self, w: WorkerWatch, home: Path, color: str, before: str | None, new: str) -> None:
        """Put a colour back on the release it ran, and start it again: a warm standby."""
        w.stop_worker(color)
        if before and before != new:
            releases.point(home, color, before)
        if before:
            try:
                w.start_worker(color)
                self.log(f"worker-{color} restarted on release {before}")
            except xmlrpc.client.Fault as e:
                self.log(f"warning: worker-{color} could not be restarted: {e.faultString}")

    def _failed(self, record: dict[str, Any], reason: str, still: str) -> DeployError:
        record.update(result="failed", reason=reason[:2000], done_ms=wall_ms())
        self._record(record)
        return DeployError(
            f"{record['kind']} of release {record['release']} to worker-{record['color']} on "
            f"{record['host']} failed ({still}):\n{reason}"
        )

    def _record(self, fields: dict[str, Any]) -> None:
        try:
            self.deploys.record(fields)
        except redis.RedisError as e:
            self.log(f"warning: could not record the deploy in {self.k.deploys()}: {e}")

    def _ticks_missed(self) -> int:
        return int(self.r.hget(self.k.stats(), "ticks_missed") or 0)

    def placement(self) -> list[HostRelease]:
        out = []
        for color, h in sorted(colors_on(self.hosts, self.topology).items(), key=lambda x: x[1].name):
            hb = self.r.hgetall(self.k.worker(color))
            out.append(
                HostRelease(
                    host=h.name,
                    color=color,
                    release=releases.pointed(Path(h.settings.home), color) or "",
                    state=str(hb.get("state", "")),
                )
            )
        return out

    def last_replaced(self) -> str:
        """The release the last successful cluster deploy or rollback replaced."""
        for _id, f in self.r.xrevrange(self.k.deploys(), count=200):
            if f.get("kind") in KINDS and f.get("result") == "ok":
                return str(f.get("from_release", ""))
        return ""


def deploy(
    hosts: Sequence[HostLike],
    topology: Mapping[str, str],
    r: Any,
    *,
    ref: str | None = None,
    source: Path | None = None,
    log: Callable[[str], None] = print,
    ready_timeout_s: float = 90.0,
) -> ClusterDeployResult:
    """Deploy the working tree (or `ref`, or `source`) to every worker of the cluster."""
    try:
        return ClusterDeployer(hosts, topology, r, log).run(
            ref=ref, source=source, ready_timeout_s=ready_timeout_s
        )
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e


def rollback(
    hosts: Sequence[HostLike],
    topology: Mapping[str, str],
    r: Any,
    *,
    log: Callable[[str], None] = print,
    ready_timeout_s: float = 90.0,
) -> ClusterDeployResult:
    """Deploy again the release the last cluster deploy (or rollback) replaced."""
    try:
        d = ClusterDeployer(hosts, topology, r, log)
        prev = d.last_replaced()
        if not prev:
            raise DeployError(f"nothing to roll back to: {d.k.deploys()} records no cluster deploy")
        log(f"rollback: to release {prev}")
        return d.run(release_id=prev, kind="cluster-rollback", ready_timeout_s=ready_timeout_s)
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e


def handover(
    hosts: Sequence[HostLike],
    topology: Mapping[str, str],
    r: Any,
    *,
    log: Callable[[str], None] = print,
    ready_timeout_s: float = 90.0,
) -> ClusterDeployResult:
    """Move the lease to the other host without changing code: a deploy of the release the
    holder runs (to drain the holder's host for maintenance)."""
    try:
        d = ClusterDeployer(hosts, topology, r, log)
        lease = d.watch(d.hosts[0]).active()
        if lease is None or not lease.release:
            raise DeployError("no worker holds the lease: nothing to hand over")
        log(f"handover: worker-{lease.color} hands its release {lease.release} over to the other host")
        return d.run(release_id=lease.release, kind="cluster-handover", ready_timeout_s=ready_timeout_s)
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e
