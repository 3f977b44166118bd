"""The lease's Redis side: the fenced scripts that take, renew, hand over and release it, the
handover request a deploy makes, and the wake list a standby blocks on. What a lease *is*
(its type, liveness, the dead-holder check) is kernel/lease.py's.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from baton.errors import UnreadableValue
from state.repo import Repo, text

# Entries kept in the lease log (XADD MAXLEN ~): years of deploys and takeovers, a few MB.
LEASE_LOG_MAXLEN = 10_000


def acquired(reply: Any, holder: str) -> tuple[bool, int, str]:
    """lease_acquire.lua's reply as (held, epoch, current holder)."""
    if int(reply[0]) == 1:
        return True, int(reply[1]), holder
    return False, int(reply[1]), text(reply[2])


def transferred(reply: Any) -> tuple[int, str]:
    """lease_transfer.lua's reply as (successor's epoch, '') or (0, reason)."""
    if int(reply[0]) == 1:
        return int(reply[1]), ""
    return 0, text(reply[1])


class LeaseRepo(Repo):
    def _acquire_args(
        self, holder: str, color: str, release: str, now_ms: int, ttl_ms: int, dead_holder: str
    ) -> tuple[list[str], list[Any]]:
        return (
            [self.k.lease(), self.k.lease_epoch(), self.k.lease_log()],
            [holder, color, release, now_ms, ttl_ms, dead_holder, LEASE_LOG_MAXLEN],
        )

    async def acquire_lease(
        self, holder: str, color: str, release: str, now_ms: int, ttl_ms: int, dead_holder: str = ""
    ) -> tuple[bool, int, str]:
        """Take the lease if free, expired, ours, or held by `dead_holder` (found dead by the
        caller). Returns (held, epoch, current holder)."""
        keys, args = self._acquire_args(holder, color, release, now_ms, ttl_ms, dead_holder)
        return acquired(await self._call(self.scripts.lease_acquire, keys=keys, args=args), holder)

    def queue_acquire_lease(
        self,
        pipe: Any,
        holder: str,
        color: str,
        release: str,
        now_ms: int,
        ttl_ms: int,
        dead_holder: str = "",
    ) -> None:
        """`acquire_lease` queued on `pipe` (a WAIT may follow it on the same connection); its
        reply goes to `acquired`."""
        keys, args = self._acquire_args(holder, color, release, now_ms, ttl_ms, dead_holder)
        self.scripts.on(pipe, self.scripts.lease_acquire, keys, args)

    def renew_lease(self, holder: str, epoch: int, now_ms: int, ttl_ms: int, pipeline: Any = None) -> Any:
        return self._call(
            self.scripts.lease_renew,
            keys=[self.k.lease(), self.k.lease_epoch()],
            args=[holder, epoch, now_ms, ttl_ms],
            pipeline=pipeline,
        )

    def queue_transfer_lease(
        self,
        pipe: Any,
        holder: str,
        epoch: int,
        request_id: str,
        successor: str,
        successor_color: str,
        last_tick: int,
        now_ms: int,
        ttl_ms: int,
    ) -> None:
        """Carry out a handover request after `last_tick` (lease_transfer.lua), queued on
        `pipe` (a WAIT may follow it); its reply goes to `transferred`."""
        self.scripts.on(
            pipe,
            self.scripts.lease_transfer,
            [
                self.k.lease(),
                self.k.lease_epoch(),
                self.k.handover(),
                self.k.stats(),
                self.k.worker(successor_color),
                self.k.wake(successor),
                self.k.lease_log(),
            ],
            [holder, epoch, request_id, successor, last_tick, now_ms, ttl_ms, LEASE_LOG_MAXLEN],
        )

    async def transfer_lease(
        self,
        holder: str,
        epoch: int,
        request_id: str,
        successor: str,
        successor_color: str,
        last_tick: int,
        now_ms: int,
        ttl_ms: int,
    ) -> tuple[int, str]:
        """`queue_transfer_lease` run now. Returns (successor's epoch, "") or (0, reason)."""
        args = (holder, epoch, request_id, successor, successor_color, last_tick, now_ms, ttl_ms)
        (res,) = await self.run_pipeline(lambda pipe: self.queue_transfer_lease(pipe, *args))
        if isinstance(res, Exception):
            raise res
        return transferred(res)

    def request_handover(self, request_id: str, fields: dict[str, Any], pipeline: Any = None) -> Any:
        """Replace any earlier request: only the latest deploy's request may be carried out."""
        pipe = self.r.pipeline(transaction=True) if pipeline is None else pipeline
        pipe.delete(self.k.handover())
        pipe.hset(self.k.handover(), mapping={**fields, "id": request_id, "state": "requested"})
        return pipe.execute() if pipeline is None else None

    def cancel_handover(
        self, request_id: str, reason: str, now_ms: int, pipeline: Any = None, state: str = "cancelled"
    ) -> Any:
        """Withdraw a request not carried out in time (handover_cancel.lua), or refuse it
        (`state="refused"`, the active worker): its state after, `state` or as it was ('done',
        'refused', '')."""
        return self._call(
            self.scripts.handover_cancel,
            keys=[self.k.handover()],
            args=[request_id, reason, now_ms, state],
            pipeline=pipeline,
        )

    async def wait_wake(self, holder: str, timeout_s: float) -> bool:
        """Block until a handover to `holder` is pushed, at most timeout_s; True when woken."""
        res = await self.r.blpop([self.k.wake(holder)], timeout=timeout_s)
        return res is not None

    async def release_lease(self, holder: str, epoch: int) -> bool:
        res = await self._call(self.scripts.lease_release, keys=[self.k.lease()], args=[holder, epoch])
        return int(res) == 1

    async def read_lease(self) -> dict[str, str]:
        """The lease hash; UnreadableValue when the key holds another type (the worker then
        stands by and says so, as lease_acquire.lua would refuse it: never a crash)."""
        try:
            return await self.r.hgetall(self.k.lease())
        except ResponseError as e:
            if str(e).startswith("WRONGTYPE"):
                raise UnreadableValue(self.k.lease(), "(type)", f"not a hash: {e}") from None
            raise
