"""Shadow deploys (`baton deploy --shadow N [--promote]`): run a new release beside the active
worker on the same inputs for N ticks, report the decisions it would have made differently,
and stop it; with `promote`, then deploy that release as `baton deploy` does.

1. staging: the code becomes a release (deploy/releases.py), as for a deploy;
2. starting: var/releases/colors/shadow is pointed at it, the shadow's counters are reset and
   supervisor starts the `shadow` program (worker/shadow.py), which dry-evaluates its
   strategies and then follows the live input log;
3. following: the deploy waits until the shadow counted N ticks of the live worker (and,
   with `min_decisions`, compared at least that many decisions: a tick where no strategy
   evaluated compares nothing);
4. the diff: the counters and differences are read (state/shadow.py) and the shadow stopped;
5. promote (optional): only on evidence: a shadow that compared 0 decisions, or answered an
   error where live did not (a refused file or socket among them), is not promoted unless
   `force` (the result says why, `promote_refused`); else orchestrate.Deployer deploys the
   same release; it hands over at the next tick boundary and reports the ticks missed (none,
   the point of a handover).

The active worker is never touched until step 5: a shadow that fails to start, a Redis
error or a timeout stops the shadow and leaves it trading, and says so.
"""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec
import redis

from baton.errors import DeployError, ReleaseError, StackError
from baton.settings import Settings, timeframe_seconds
from deploy import releases
from deploy.orchestrate import Deployer, DeployResult, deploy_lock
from deploy.supervisord import supervisor_call, supervisor_running
from kernel.clock import wall_ms
from kernel.lease import read_lease
from state import connection
from state.deploys import DeploysRepo
from state.keys import Keys
from state.shadow import Difference, ShadowRepo, ShadowStatus

PROGRAM = "shadow"
POLL_S = 0.1
DEAD_STATES = {"EXITED", "FATAL", "BACKOFF"}
READY_TIMEOUT_S = 90.0


class ShadowResult(msgspec.Struct, kw_only=True):
    """What `baton deploy --shadow N --json` prints."""

    release: str
    from_release: str  # the release the live worker ran
    shadow_ticks: int
    decisions: int  # compared: 0 shows nothing (no strategy evaluated in those ticks)
    equal: int
    differ: int
    # Decisions where the shadow answered an error and live did not; strategy calls its I/O
    # guard refused (a file, a socket, a process: worker/shadow.py).
    erred: int
    refused_io: int
    orders_posted: int  # by the shadow: always 0
    differences: list[Difference]
    promoted: bool
    # Why --promote did not deploy ("" when it did, or was not asked): the CLI exits 1.
    promote_refused: str = ""
    ready_s: float
    total_s: float
    # The deploy that followed with --promote (orchestrate.DeployResult as a dict), its missed
    # ticks at the handover also as `missed`.
    deploy: dict[str, Any] | None = None
    missed: int | None = None


class ShadowDeploy:
    def __init__(self, s: Settings, log: Callable[[str], None] = print) -> None:
        self.s = s
        self.log = log
        self.k = Keys(s.prefix)
        self.home = Path(s.home)
        self.r: Any = connection.client(s)
        self.repo = ShadowRepo(self.r, self.k)

    def close(self) -> None:
        self.r.close()

    def sup(self, method: str, *args: Any) -> Any:
        return supervisor_call(self.s.supervisor_socket, method, *args)

    def state(self) -> str:
        return str(self.sup("getProcessInfo", PROGRAM)["statename"])

    def stop(self) -> None:
        """Stop the shadow program; quiet if it is not running."""
        try:
            self.sup("stopProcess", PROGRAM, True)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise

    def log_tail(self, offset: int, limit: int = 4000) -> str:
        try:
            with open(self.s.log_dir / f"{PROGRAM}.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return (self.s.log_dir / f"{PROGRAM}.log").stat().st_size
        except OSError:
            return 0

    # --- the steps ----------------------------------------------------------------------
    def run(
        self,
        ticks: int,
        *,
        promote: bool = False,
        source: Path | None = None,
        ref: str | None = None,
        timeout_s: float | None = None,
        min_decisions: int = 0,
        force: bool = False,
    ) -> ShadowResult:
        if ticks < 1:
            raise DeployError(f"--shadow wants a number of ticks of at least 1, not {ticks}")
        if min_decisions < 0:
            raise DeployError(f"--shadow-decisions wants a number of at least 0, not {min_decisions}")
        if not supervisor_running(self.s):
            raise DeployError(
                f"supervisord is not running for {self.s.home}: start the stack with `make run` first"
            )
        try:
            self.sup("getProcessInfo", PROGRAM)
        except xmlrpc.client.Fault:
            raise DeployError(
                "supervisord has no `shadow` program: it was started from an older supervisor.conf; "
                "restart the stack (`make stop && make run`) to shadow"
            ) from None
        t_start = time.monotonic()
        deploys = DeploysRepo(self.r, self.k)
        follow_s = self._follow_timeout_s(ticks, min_decisions, timeout_s)
        ttl_ms = int((READY_TIMEOUT_S + follow_s + 60) * 1000)
        with deploy_lock(deploys, ttl_ms):
            result = self._shadow(ticks, min_decisions, follow_s, source, ref, t_start, promote, force)
        if promote and result.promote_refused:
            self.log(f"promote: refused: {result.promote_refused}")
        elif promote:
            # The lock is taken again by the deploy itself: one deploy at a time still holds.
            self.log(f"promote: deploying release {result.release}")
            d = Deployer(self.s, self.log)
            try:
                dr: DeployResult = d.run(release_id=result.release)
            finally:
                d.close()
            result.promoted = True
            result.deploy = asdict(dr)
            result.missed = dr.missed
        result.total_s = round(time.monotonic() - t_start, 3)
        return result

    def _follow_timeout_s(self, ticks: int, min_decisions: int, timeout_s: float | None) -> float:
        # Generous: twice the ticks' time, and a minute more for a busy machine; waiting for
        # decisions, two of the longest windows more (a strategy may evaluate only near a
        # window's end).
        if timeout_s is not None:
            return timeout_s
        longest_s = max((timeframe_seconds(tf) for tf in self.s.timeframes), default=0)
        return 2 * ticks * self.s.tick_ms / 1000 + 60 + (2 * longest_s if min_decisions else 0)

    def _shadow(
        self,
        ticks: int,
        min_decisions: int,
        follow_s: float,
        source: Path | None,
        ref: str | None,
        t_start: float,
        promote: bool,
        force: bool,
    ) -> ShadowResult:
        lease = read_lease(self.r, self.k)
        if lease is None or not lease.live(wall_ms()):
            raise DeployError(
                "no worker holds the lease: a shadow has no live decisions to follow (`make run`)"
            )
        rel = releases.stage(self.home, source=source, ref=ref)
        self.log(
            f"staging: release {rel.id} from {rel.source}"
            + (" (identical code, reused)" if rel.reused else "")
        )
        releases.prune(self.home)
        record: dict[str, Any] = {
            "kind": "shadow",
            "release": rel.id,
            "color": PROGRAM,
            "from_color": lease.color,
            "from_release": lease.release,
            "requested_ms": wall_ms(),
        }

        def fail(reason: str) -> DeployError:
            try:
                self.stop()
                self.repo.mark("failed", wall_ms(), reason)
            except (OSError, xmlrpc.client.Fault, redis.RedisError) as e:
                reason += f"\n(and stopping the shadow failed: {e})"
            record.update(result="failed", reason=reason[:2000], done_ms=wall_ms())
            self._record(record)
            return DeployError(
                f"shadow of release {rel.id} failed "
                f"(worker-{lease.color} keeps trading on {lease.release}):\n{reason}"
            )

        if self.state() not in ("STOPPED", "EXITED", "FATAL"):
            self.log("starting: a shadow was running (an earlier one); stopping it")
            self.stop()
        releases.point(self.home, PROGRAM, rel.id)
        self.repo.reset(rel.id, wall_ms())
        offset = self.log_size()
        self.log(f"starting: shadow of release {rel.id} beside worker-{lease.color} ({lease.release})")
        t_ready = time.monotonic()
        try:
            self.sup("startProcess", PROGRAM, False)
        except xmlrpc.client.Fault as e:
            raise fail(f"supervisor could not start the shadow: {e.faultString}") from None
        try:
            self._wait(
                lambda st: st.state == "following",
                READY_TIMEOUT_S,
                "to follow the input log",
                offset,
                rel.id,
                fail,
            )
            ready_s = time.monotonic() - t_ready
            self.log(
                f"following: the shadow evaluates every tick of worker-{lease.color} "
                f"({ready_s:.1f} s to start)"
            )
            st = self._wait(
                lambda st: st.ticks >= ticks and st.decisions >= min_decisions,
                follow_s,
                f"to count {ticks} ticks"
                + (f" and compare {min_decisions} decisions" if min_decisions else ""),
                offset,
                rel.id,
                fail,
            )
            # Stopped first: its last counters are then the ones reported.
            self.stop()
            diff = self.repo.diff()
        except redis.RedisError as e:
            raise fail(f"Redis error: {e}") from None
        st = diff.shadow
        self.log(
            f"stopped: the shadow after {st.ticks} ticks: {st.decisions} decisions compared, "
            f"{st.differ} different, {st.erred} errors where live had none, "
            f"{st.refused_io} file/socket/process uses refused"
        )
        if st.decisions == 0:
            self.log(
                "compared 0 decisions: this shadow shows nothing (no strategy evaluated in those "
                "ticks; --shadow-decisions N follows until N are compared)"
            )
        refused = promote_refusal(st) if promote and not force else ""
        result = ShadowResult(
            release=rel.id,
            from_release=lease.release,
            shadow_ticks=st.ticks,
            decisions=st.decisions,
            equal=diff.equal,
            differ=st.differ,
            erred=st.erred,
            refused_io=st.refused_io,
            orders_posted=st.orders_posted,
            differences=diff.differences,
            promoted=False,
            promote_refused=refused,
            ready_s=round(ready_s, 3),
            total_s=round(time.monotonic() - t_start, 3),
        )
        record.update(
            result="ok",
            shadow_ticks=st.ticks,
            decisions=st.decisions,
            differ=st.differ,
            erred=st.erred,
            refused_io=st.refused_io,
            orders_posted=st.orders_posted,
            done_ms=wall_ms(),
        )
        if refused:
            record["promote"] = f"refused: {refused}"[:2000]
        self._record(record)
        return result

    def _wait(
        self,
        cond: Callable[[ShadowStatus], bool],
        timeout_s: float,
        what: str,
        offset: int,
        release: str,
        fail: Callable[[str], DeployError],
    ) -> ShadowStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.repo.status()
            if st.release == release and st.state == "failed":
                raise fail(f"the shadow refused its release: {st.error}")
            if st.release == release and cond(st):
                return st
            state = self.state()
            if state in DEAD_STATES:
                raise fail(f"the shadow exited ({state}); its log says:\n{self.log_tail(offset)}")
            if time.monotonic() > deadline:
                raise fail(
                    f"the shadow did not manage {what} within {timeout_s:.0f} s "
                    f"({st.ticks} ticks counted, {st.decisions} decisions compared); its log says:\n"
                    f"{self.log_tail(offset)}"
                )
            time.sleep(POLL_S)

    def _record(self, fields: dict[str, Any]) -> None:
        try:
            DeploysRepo(self.r, self.k).record(fields)
        except redis.RedisError as e:
            self.log(f"warning: could not record the shadow deploy in {self.k.deploys()}: {e}")


def promote_refusal(st: ShadowStatus) -> str:
    """Why a shadow with these counters is no evidence for a promotion ("" when it is)."""
    reasons = []
    if st.decisions == 0:
        reasons.append(f"the shadow compared 0 decisions in {st.ticks} ticks: it shows nothing")
    if st.erred:
        reasons.append(
            f"the shadow answered an error where live did not in {st.erred} decision(s)"
            + (f" ({st.refused_io} refused file/socket/process uses)" if st.refused_io else "")
        )
    if not reasons:
        return ""
    return (
        "; ".join(reasons)
        + ": not promoted (the active worker trades on; --shadow-decisions N waits for N decisions, "
        "--force promotes anyway)"
    )


def shadow_deploy(
    s: Settings,
    ticks: int,
    *,
    promote: bool = False,
    source: Path | None = None,
    ref: str | None = None,
    log: Callable[[str], None] = print,
    timeout_s: float | None = None,
    min_decisions: int = 0,
    force: bool = False,
) -> ShadowResult:
    d = ShadowDeploy(s, log)
    try:
        return d.run(
            ticks,
            promote=promote,
            source=source,
            ref=ref,
            timeout_s=timeout_s,
            min_decisions=min_decisions,
            force=force,
        )
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise DeployError(
            f"cannot reach Redis at {s.redis_url_shown}: {e}; no shadow runs, the active worker trades on"
        ) from e
    except (ReleaseError, StackError, redis.RedisError, OSError) as e:
        raise DeployError(str(e)) from e
    finally:
        d.close()
