"""Keep the lease off the Redis primary's host while another host can trade.

A host holding both the lease and the primary is the slowest loss of all: the standby cannot
take the lease before Sentinel has promoted a replica (2.4-2.6 s against about 1 s for the lease
alone; docs/ha.md, "What each fault costs"). The cluster starts them apart (the primary on h3,
which runs no worker), but a failover may promote the replica on the holder's host. So, between
ticks, every CHECK_EVERY_MS, the holder asks the Sentinels where the primary is; when it is on
this host and a warm standby of the other colour is ready on another host, the holder asks for
a planned handover to it: the request a deploy makes (state/lease.py), carried out right after
the next tick, no tick missed. Nothing is asked while a deploy holds its lock or another
handover is pending. Without Sentinels (one host) this does nothing.
"""

from __future__ import annotations

import logging
import secrets
import socket
from typing import Any

from baton.settings import Settings
from kernel import lease
from state.store import Store

log = logging.getLogger("baton.worker")

CHECK_EVERY_MS = 5_000
# The request's `kind`: the worker that hands over stands by as `ready` afterwards (a warm
# standby like any other), not as a deploy's `handed-over` colour waiting to be stopped.
KIND = "placement"


def is_local_address(ip: str) -> bool:
    """True when `ip` is an address of this host (its network namespace): a UDP socket
    connected to it takes it as its own source address. No packet is sent."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((ip, 9))
            return bool(sock.getsockname()[0] == ip)
        except OSError:
            return False


class Placement:
    def __init__(self, s: Settings, store: Store, color: str) -> None:
        self.s = s
        self.store = store
        self.color = color
        self.next_ms = 0

    async def check(self, holder: str, now_ms: int) -> str:
        """Ask for a handover when the primary is on this host and a standby elsewhere is
        ready; the request's id, or '' (nothing asked)."""
        manager: Any = getattr(self.store.r, "sentinel_manager", None)
        if manager is None or now_ms < self.next_ms:
            return ""
        self.next_ms = now_ms + CHECK_EVERY_MS
        ip, _port = await manager.discover_master(self.s.redis_master)
        if not is_local_address(str(ip)):
            return ""
        other = "green" if self.color == "blue" else "blue"
        k = self.store.k
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hgetall(k.worker(other))
        pipe.exists(k.deploy_lock())
        pipe.hget(k.handover(), "state")
        beat, locked, pending = await pipe.execute()
        where = lease.holder_pid(beat.get("holder", ""))
        fresh = now_ms - int(beat.get("heartbeat_ms") or 0) <= 3 * self.s.tick_ms
        if locked or pending == "requested" or beat.get("state") != "ready" or not fresh:
            return ""
        if where is None or where[0] == self.s.host:
            return ""
        request_id = f"{KIND}-{secrets.token_hex(6)}"
        fields = {
            "kind": KIND,
            "to_holder": beat["holder"],
            "to_color": other,
            "to_release": beat.get("release", ""),
            "from_color": self.color,
            "from_release": self.s.release,
            "requested_ms": now_ms,
        }
        await self.store.request_handover(request_id, fields)
        log.info(
            "the Redis primary (%s) is on this host (%s): the lease goes to worker-%s on %s after "
            "the next tick, so that one host's loss costs the lease or the primary, not both",
            ip,
            self.s.host,
            other,
            where[0],
        )
        return request_id
