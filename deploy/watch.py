"""What a deploy watches and moves while it runs: a colour's worker process (through
supervisor's XML-RPC) and its log, its heartbeat, the lease, the handover hash and the tick
journal, each waited on with a deadline (`WorkerWatch`). The steps are deploy/orchestrate.py.
"""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from baton.errors import DeployError
from baton.settings import Settings
from deploy.supervisord import supervisor_call
from kernel.clock import wall_ms
from kernel.lease import Lease, read_lease
from state.keys import Keys
from state.lease import LeaseRepo

POLL_S = 0.05
# Process states in which a starting worker has given up (or is about to be retried).
DEAD_STATES = {"EXITED", "FATAL", "BACKOFF"}


def program(color: str) -> str:
    return f"worker-{color}"


class WorkerWatch:
    def __init__(self, s: Settings, r: Any, k: Keys, lease: LeaseRepo) -> None:
        self.s = s
        self.r = r
        self.k = k
        self.lease = lease

    # --- supervisor -------------------------------------------------------------------
    def sup(self, method: str, *args: Any) -> Any:
        return supervisor_call(self.s.supervisor_socket, method, *args)

    def process_state(self, color: str) -> str:
        return str(self.sup("getProcessInfo", program(color))["statename"])

    def start_worker(self, color: str) -> None:
        self.sup("startProcess", program(color), False)

    def stop_worker(self, color: str) -> None:
        """Stop a colour's worker, waiting for it to finish its tick; quiet if not running."""
        try:
            self.sup("stopProcess", program(color), True)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise

    # --- state ------------------------------------------------------------------------
    def now_ms(self) -> int:
        return wall_ms()

    def active(self) -> Lease | None:
        """The lease as Redis holds it, when it is held and not expired; else None."""
        lease = read_lease(self.r, self.k)
        return lease if lease is not None and lease.live(self.now_ms()) else None

    def heartbeat(self, color: str) -> dict[str, str]:
        return self.r.hgetall(self.k.worker(color))

    def log_tail(self, color: str, offset: int, limit: int = 4000) -> str:
        path = self.s.log_dir / f"{program(color)}.log"
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return text[-limit:].strip()

    def log_size(self, color: str) -> int:
        try:
            return (self.s.log_dir / f"{program(color)}.log").stat().st_size
        except OSError:
            return 0

    # --- waiting, each with a deadline -----------------------------------------------------
    def wait_ready(
        self, target: str, release_id: str, offset: int, timeout_s: float, fail: Callable[[str], DeployError]
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hb = self.heartbeat(target)
            if hb.get("release") == release_id:
                if hb.get("state") in ("ready", "active"):
                    return hb
                if hb.get("state") == "failed":
                    raise fail(f"readiness check refused: {hb.get('error', '')}")
            state = self.process_state(target)
            if state in DEAD_STATES:
                tail = self.log_tail(target, offset)
                raise fail(f"worker-{target} exited before it was ready ({state}); its log says:\n{tail}")
            time.sleep(POLL_S)
        raise fail(
            f"worker-{target} was not ready within {timeout_s:.0f} s; its log says:\n"
            + self.log_tail(target, offset)
        )

    def wait_handover(
        self, request_id: str, successor: str, fail: Callable[[str], DeployError]
    ) -> dict[str, str]:
        # The active worker reads the request with its next tick and hands over after it.
        timeout_s = max(10.0, 4 * self.s.tick_ms / 1000)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            h = self.r.hgetall(self.k.handover())
            if h.get("id") != request_id:
                raise fail("the handover request was replaced by another deploy")
            if h.get("state") == "done":
                return h
            if h.get("state") == "refused":
                raise fail(f"the active worker refused the handover: {h.get('reason', '')}")
            time.sleep(POLL_S)
        verdict = self.cancel(request_id, f"not carried out within {timeout_s:.0f} s")
        if verdict == "done":
            return self.r.hgetall(self.k.handover())
        raise fail(
            f"the active worker did not hand over within {timeout_s:.0f} s (is it halted in a long "
            f"tick, or gone?); the request was withdrawn"
        )

    def cancel(self, request_id: str, reason: str) -> str:
        return str(self.lease.cancel_handover(request_id, reason, self.now_ms()))

    def journal_since(self, after_tick: int) -> list[dict[str, str]]:
        entries = self.r.xrevrange(self.k.journal_ticks(), count=50)
        return sorted(
            (f for _, f in entries if int(f.get("tick", -1)) > after_tick), key=lambda f: int(f["tick"])
        )

    def wait_first_tick(self, after_tick: int, color: str) -> dict[str, str]:
        timeout_s = max(10.0, 4 * self.s.tick_ms / 1000)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            later = self.journal_since(after_tick)
            if later:
                if later[0].get("color") != color:
                    raise DeployError(
                        f"tick {later[0]['tick']} after the handover was run by "
                        f"worker-{later[0].get('color')}, "
                        f"not worker-{color}"
                    )
                return later[0]
            time.sleep(POLL_S)
        raise DeployError(f"worker-{color} took the lease but ran no tick within {timeout_s:.0f} s")
