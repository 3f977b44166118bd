"""Writes that must survive a Redis failover: acknowledged by replicas before anything depends
on them.

Redis replication is asynchronous: a write the primary answered may be lost when Sentinel
promotes a replica that had not received it. The lease and epoch writes and every intent
before its order is posted are followed by `WAIT numreplicas timeout` on the same connection
(a pipeline or the client that wrote them): the epoch then never goes backwards across a
failover, and an order is never posted for an intent the new primary would not know.
Settings.redis_min_replicas = 0 (one Redis, the single-host default) asks nothing of anyone.
"""

from __future__ import annotations

from typing import Any

from baton.errors import NotReplicated
from baton.settings import Settings


def wanted(s: Settings) -> bool:
    """True when writes must be acknowledged by replicas (Sentinel deployments)."""
    return s.redis_min_replicas > 0


def queue_wait(s: Settings, pipeline: Any) -> bool:
    """Queue the WAIT on `pipeline` right after the writes it covers (one round trip for
    both); its reply goes to `check`. False (nothing queued) when no replica is wanted.

    The pipeline must not be a transaction: inside MULTI a WAIT cannot block and answers at
    once with the replicas that had already acknowledged, 0 for the writes just made (found on
    a real Redis, tests/e2e/test_sentinel_failover.py). Scripts are atomic without one."""
    if not wanted(s):
        return False
    # redis-py names it `transaction` on a sync pipeline, `is_transaction` on an asyncio one.
    if getattr(pipeline, "is_transaction", None) is True or getattr(pipeline, "transaction", None) is True:
        raise ValueError(
            "WAIT in a MULTI/EXEC transaction does not wait: queue it on a pipeline(transaction=False)"
        )
    pipeline.execute_command("WAIT", s.redis_min_replicas, s.redis_wait_ms)
    return True


def check(s: Settings, acked: Any, what: str) -> None:
    """Raise NotReplicated unless `acked` (WAIT's reply) reaches redis_min_replicas."""
    n = int(acked)
    if n < s.redis_min_replicas:
        raise NotReplicated(
            f"{what}: acknowledged by {n} replica(s) in {s.redis_wait_ms} ms, {s.redis_min_replicas} required"
        )


async def wait(s: Settings, r: Any, what: str) -> None:
    """WAIT on the asyncio client `r` after a write made through it; NotReplicated when too
    few replicas acknowledged. WAIT covers every write this *connection* made before it, so
    the caller writes and waits on one connection (a pipeline, or a client with a pool of one
    in use); through a pool, prefer `queue_wait` on the writing pipeline."""
    if wanted(s):
        check(s, await r.execute_command("WAIT", s.redis_min_replicas, s.redis_wait_ms), what)


def wait_sync(s: Settings, r: Any, what: str) -> None:
    """`wait` for a synchronous client."""
    if wanted(s):
        check(s, r.execute_command("WAIT", s.redis_min_replicas, s.redis_wait_ms), what)
