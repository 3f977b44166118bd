"""Handing the lease over: what the active worker does right after the tick that read a
planned handover request (a deploy's, or placement's: worker/placement.py). The successor's
side is worker/standby.py's wait and worker/takeover.py; the `Worker` (worker/lifecycle.py)
calls this between its ticks.
"""

from __future__ import annotations

import contextlib
import logging

from redis.exceptions import RedisError

from baton.errors import UnreadableValue
from baton.settings import Settings
from kernel import lease
from kernel.clock import Clock, wall_ms
from kernel.lease_heartbeat import LeaseHeartbeat
from state.store import Store

log = logging.getLogger("baton.worker")


async def hand_over(
    s: Settings,
    store: Store,
    clock: Clock,
    holder: str,
    our_epoch: int,
    heartbeat: LeaseHeartbeat | None,
    req: dict[str, str],
    tick: int,
) -> bool:
    """Carry out a planned handover right after tick `tick`; False when it was refused
    (then this worker keeps trading, and the deploy reports why)."""
    successor = req.get("to_holder", "")
    if successor == holder:
        return False
    # No renewal races the transfer (one would be refused once it is done, as if lost).
    if heartbeat is not None:
        await heartbeat.stop()
    try:
        epoch, why = await lease.transfer(store, holder, our_epoch, req, tick, clock.now_ms(), s.lease_ms, s)
    except (RedisError, OSError, TimeoutError) as e:
        # Redis failing over or cut off: the transfer may or may not have run. Renewing
        # again settles it: a transfer that ran makes the renewal refused (lost, exit 3),
        # one that did not leaves the lease ours and the request to the next tick's read.
        epoch, why = 0, f"{type(e).__name__}: {e}"
    except UnreadableValue as e:
        # Nothing was written: the lease stays ours, and the request is refused with the
        # reason, so that the deploy says why at once.
        epoch, why = 0, f"UNREADABLE {e}"
        await store.record_error("worker", f"handover refused: {e}", now_ms=wall_ms())
        with contextlib.suppress(UnreadableValue):  # the request itself may be the garbage
            await store.cancel_handover(
                req.get("id", ""), f"unreadable value: {e}", clock.now_ms(), state="refused"
            )
    if not epoch:
        log.warning("handover to %s refused: %s; still trading", successor, why)
        if heartbeat is not None:
            heartbeat.start()
        return False
    log.info("handed over to %s after tick %d (their epoch %d)", successor, tick, epoch)
    return True
