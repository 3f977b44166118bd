"""Blue/green deploys and rollbacks, driven from outside the workers (`baton deploy`).

1. staging: the code becomes an immutable release under var/releases/<id> (deploy/releases.py);
2. starting: the idle colour is pointed at it and started through supervisor's XML-RPC;
3. ready: the new worker passes its readiness gate (worker/lifecycle.py) and waits in standby;
   a release that fails never takes over: its worker is stopped and the reason reported;
4. handover: a request in Redis asks the active worker to hand the lease over after the
   tick it is in; it transfers the lease atomically (epoch + 1) and the new worker runs the
   next tick;
5. the old worker, which holds nothing any more, is stopped.

Every step is observable: the handover hash, the workers' heartbeats, the tick journal and
the `baton:deploys` stream, all readable with redis-cli. What a step waits on, and how, is
deploy/watch.py.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from baton.errors import DeployError, ReleaseError, StackError
from baton.settings import Settings
from deploy import releases
from deploy.supervisord import supervisor_running
from deploy.watch import WorkerWatch
from kernel import boundaries
from state import connection
from state.deploys import DeploysRepo
from state.keys import COLORS, Keys
from state.lease import LeaseRepo
from state.workers import WorkersRepo


@dataclass
class DeployResult:
    kind: str
    release: str
    color: str
    from_color: str
    from_release: str
    handover_tick: int
    epoch: int
    takeover_ms: int  # start of the new worker's first tick after its boundary
    missed: int  # ticks missed at the handover (the point: 0)
    ready_s: float
    total_s: float


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


# --- the steps a deploy on one host and a deploy across hosts share -------------------------
@contextlib.contextmanager
def deploy_lock(deploys: DeploysRepo, ttl_ms: int) -> Iterator[None]:
    """One deploy or rollback at a time, on one host or across hosts: a lock in Redis."""
    token = secrets.token_hex(8)
    if not deploys.take_lock(token, ttl_ms):
        holder = deploys.r.get(deploys.k.deploy_lock())
        raise DeployError(
            f"another deploy or rollback is in progress (lock {deploys.k.deploy_lock()} = {holder}); "
            "wait for it, or delete the key if it died"
        )
    try:
        yield
    finally:
        deploys.release_lock(token)


@dataclass
class Handover:
    tick: int  # the last tick of the old holder
    epoch_before: int
    epoch: int  # the new holder's
    takeover_ms: int  # start of the new holder's first tick after its boundary
    missed: int


def start_color(
    w: WorkerWatch,
    workers: WorkersRepo,
    home: Path,
    target: str,
    release_id: str,
    ready_timeout_s: float,
    fail: Callable[[str], DeployError],
    log: Callable[[str], None],
) -> tuple[dict[str, str], float]:
    """Point `target` (in `home`, whose supervisord `w` speaks to) at the release, (re)start its
    worker and wait until it is ready. Returns its heartbeat and the seconds it took."""
    if w.process_state(target) not in ("STOPPED", "EXITED", "FATAL"):
        log(f"starting: worker-{target} was running (a standby or an earlier attempt); stopping it")
        w.stop_worker(target)
    releases.point(home, target, release_id)
    workers.forget_worker(target)
    offset = w.log_size(target)
    log(f"starting: worker-{target} on release {release_id}")
    t_ready = time.monotonic()
    try:
        w.start_worker(target)
    except xmlrpc.client.Fault as e:
        raise fail(f"supervisor could not start worker-{target}: {e.faultString}") from None
    hb = w.wait_ready(target, release_id, offset, ready_timeout_s, fail)
    ready_s = time.monotonic() - t_ready
    log(f"ready: worker-{target} (pid {hb.get('pid')}) passed its readiness check in {ready_s:.1f} s")
    return hb, ready_s


def hand_over(
    w: WorkerWatch,
    lease: LeaseRepo,
    hb: dict[str, str],
    target: str,
    release_id: str,
    from_color: str,
    from_release: str,
    fail: Callable[[str], DeployError],
    log: Callable[[str], None],
) -> Handover:
    """Ask the lease holder to hand over to the ready worker `hb` after its tick; wait for the
    new holder's first tick and count the ticks missed in between (from the journal)."""
    holding = w.active()
    if holding is not None and holding.holder == hb["holder"]:
        # The old holder died while the new worker was getting ready, and the new one
        # took the lease by itself (failover): nothing to hand over.
        raise fail(
            f"worker-{from_color} stopped holding the lease during the deploy; worker-{target} took over"
        )
    request_id = secrets.token_hex(8)
    fields = {
        "to_holder": hb["holder"],
        "to_color": target,
        "to_release": release_id,
        "from_color": from_color,
        "from_release": from_release,
        "requested_ms": w.now_ms(),
    }
    lease.request_handover(request_id, fields)
    log(f"handover: requested; worker-{from_color} hands over after the tick it is in")
    h = w.wait_handover(request_id, hb["holder"], fail)
    tick = int(h["tick"])
    epoch = int(h["epoch"])
    log(f"handed over at tick {tick}: epoch {h.get('from_epoch')} -> {epoch}")
    first = w.wait_first_tick(tick, target)
    takeover_ms = int(first["started_ms"]) - boundaries.boundary_ms(tick + 1, w.s.tick_ms)
    missed = int(first["tick"]) - tick - 1
    log(
        f"worker-{target} ran tick {first['tick']} {takeover_ms} ms after its boundary; "
        f"ticks missed: {missed}"
    )
    return Handover(
        tick=tick,
        epoch_before=int(h.get("from_epoch") or epoch - 1),
        epoch=epoch,
        takeover_ms=takeover_ms,
        missed=missed,
    )


class Deployer:
    def __init__(self, s: Settings, log: Callable[[str], None] = print) -> None:
        self.s = s
        self.log = log
        self.k = Keys(s.prefix)
        self.home = Path(s.home)
        self.r: Any = connection.client(s)
        self.deploys = DeploysRepo(self.r, self.k)
        self.lease = LeaseRepo(self.r, self.k)
        self.workers = WorkersRepo(self.r, self.k)
        self.watch = WorkerWatch(s, self.r, self.k, self.lease)

    def close(self) -> None:
        self.r.close()

    def _record(self, fields: dict[str, Any]) -> None:
        try:
            self.deploys.record(fields)
        except redis.RedisError as e:
            self.log(f"warning: could not record the deploy in {self.k.deploys()}: {e}")

    # --- the steps --------------------------------------------------------------------
    def run(self, **kw: Any) -> DeployResult:
        """One deploy at a time: a lock in Redis, held while this one runs."""
        if not supervisor_running(self.s):
            hint = (
                "; a cluster runs from this home: deploy to it with `baton cluster deploy`"
                if (self.home / "hosts").is_dir()
                else ""
            )
            raise DeployError(
                f"supervisord is not running for {self.s.home}: start the stack with `make run` first{hint}"
            )
        ttl_ms = int((kw.get("ready_timeout_s", 90.0) + max(30.0, 8 * self.s.tick_ms / 1000) + 60) * 1000)
        with deploy_lock(self.deploys, ttl_ms):
            return self._run(**kw)

    def _run(
        self,
        *,
        source: Path | None = None,
        ref: str | None = None,
        release_id: str | None = None,
        kind: str = "deploy",
        ready_timeout_s: float = 90.0,
    ) -> DeployResult:
        w = self.watch
        t_start = time.monotonic()
        lease = w.active()
        from_color = lease.color if lease is not None else ""
        from_release = lease.release if lease is not None else ""
        if from_color not in COLORS:
            from_color = ""
        target = other(from_color) if from_color else self._idle_without_lease()

        if release_id:
            rel = releases.read_manifest(self.home, release_id)
            self.log(f"staging: release {rel.id} (staged before, from {rel.source})")
        else:
            rel = releases.stage(self.home, source=source, ref=ref)
            self.log(
                f"staging: release {rel.id} from {rel.source}"
                + (" (identical code, reused)" if rel.reused else "")
            )
        releases.prune(self.home)

        record: dict[str, Any] = {
            "kind": kind,
            "release": rel.id,
            "color": target,
            "from_color": from_color,
            "from_release": from_release,
            "requested_ms": w.now_ms(),
        }

        previous_pointer = releases.pointed(self.home, target)

        def fail(reason: str) -> DeployError:
            holding = w.active()
            if holding is not None and holding.color == target:
                # It holds the lease after all (the old holder died meanwhile): stopping it
                # would leave nobody trading.
                reason += f"\n(worker-{target} holds the lease now and was left running)"
            else:
                w.stop_worker(target)
            # The idle colour goes back to what it ran, so that a rollback still finds it.
            if previous_pointer and previous_pointer != rel.id:
                releases.point(self.home, target, previous_pointer)
            record.update(result="failed", reason=reason[:2000], done_ms=w.now_ms())
            self._record(record)
            still = (
                f"worker-{from_color} keeps trading on {from_release}" if from_color else "no worker trades"
            )
            return DeployError(f"{kind} of release {rel.id} to worker-{target} failed ({still}):\n{reason}")

        hb, ready_s = start_color(w, self.workers, self.home, target, rel.id, ready_timeout_s, fail, self.log)

        if not from_color:
            return self._first_start(target, rel.id, hb, record, ready_s, t_start, fail)

        h = hand_over(w, self.lease, hb, target, rel.id, from_color, from_release, fail, self.log)
        tick, epoch, takeover_ms, missed = h.tick, h.epoch, h.takeover_ms, h.missed
        w.stop_worker(from_color)
        self.log(f"old stopped: worker-{from_color} (release {from_release})")
        result = DeployResult(
            kind=kind,
            release=rel.id,
            color=target,
            from_color=from_color,
            from_release=from_release,
            handover_tick=tick,
            epoch=epoch,
            takeover_ms=takeover_ms,
            missed=missed,
            ready_s=round(ready_s, 3),
            total_s=round(time.monotonic() - t_start, 3),
        )
        record.update({**asdict(result), "result": "ok", "done_ms": w.now_ms()})
        self._record(record)
        return result

    def _idle_without_lease(self) -> str:
        """No worker holds the lease: deploy to a colour that is not running (blue first)."""
        w = self.watch
        for color in COLORS:
            if w.process_state(color) not in ("RUNNING", "STARTING", "BACKOFF"):
                return color
        return "blue"

    def _first_start(
        self,
        target: str,
        release_id: str,
        hb: dict[str, str],
        record: dict[str, Any],
        ready_s: float,
        t_start: float,
        fail: Callable[[str], DeployError],
    ) -> DeployResult:
        """No worker held the lease: the ready worker takes it by itself; wait for its tick."""
        w = self.watch
        self.log("no worker held the lease: the new worker takes it")
        last = w.journal_since(-1)
        before = int(last[-1]["tick"]) if last else -1
        first = w.wait_first_tick(before, target)
        tick = int(first["tick"])
        result = DeployResult(
            kind=record["kind"],
            release=release_id,
            color=target,
            from_color="",
            from_release="",
            handover_tick=tick - 1,
            epoch=int(first.get("epoch", 0)),
            takeover_ms=int(first["started_ms"]) - boundaries.boundary_ms(tick, self.s.tick_ms),
            missed=int(first.get("missed_before", 0)),
            ready_s=round(ready_s, 3),
            total_s=round(time.monotonic() - t_start, 3),
        )
        self.log(f"worker-{target} ran tick {tick}")
        record.update({**asdict(result), "result": "ok", "done_ms": w.now_ms()})
        self._record(record)
        return result


def deploy(
    s: Settings,
    *,
    source: Path | None = None,
    ref: str | None = None,
    log: Callable[[str], None] = print,
    ready_timeout_s: float = 90.0,
) -> DeployResult:
    d = Deployer(s, log)
    try:
        return d.run(source=source, ref=ref, ready_timeout_s=ready_timeout_s)
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e
    finally:
        d.close()


def rollback(
    s: Settings, *, log: Callable[[str], None] = print, ready_timeout_s: float = 90.0
) -> DeployResult:
    """Hand back to the release the idle colour still points at (the one before the last deploy)."""
    d = Deployer(s, log)
    try:
        try:
            lease = d.watch.active()
        except redis.RedisError as e:
            raise DeployError(
                f"cannot reach Redis at {s.redis_url_shown}: {e} (is the stack running?)"
            ) from e
        if lease is None or lease.color not in COLORS:
            raise DeployError("no worker holds the lease: nothing to roll back from (start with `make run`)")
        color = lease.color
        prev = releases.pointed(d.home, other(color))
        if not prev or prev == lease.release:
            raise DeployError(
                f"nothing to roll back to: worker-{other(color)} points at "
                f"{prev or 'no release'}, and worker-{color} runs {lease.release}"
            )
        log(f"rollback: from {lease.release} (worker-{color}) to {prev}")
        return d.run(release_id=prev, kind="rollback", ready_timeout_s=ready_timeout_s)
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e
    finally:
        d.close()
