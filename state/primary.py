"""Which Redis server is the primary, as a replication id: a failover promotes a replica,
which starts a replication history of its own (a new `master_replid`), and so does a Redis
that restarted. A change tells the lease holder that writes acknowledged before it may be
gone (replication is asynchronous), and that the venue must be asked what Redis may have
lost (kernel/adopt.py)."""

from __future__ import annotations

from typing import Any


def queue_primary_id(pipe: Any) -> None:
    """`INFO replication` queued on the caller's pipeline (no round trip of its own); its
    reply goes to `primary_id`."""
    pipe.execute_command("INFO", "replication")


def primary_id(reply: Any) -> str | None:
    """The replication id in an `INFO replication` reply (parsed or raw); None when the
    server cannot say (an error reply: a server without INFO, as fakeredis, or a user
    refused it)."""
    if isinstance(reply, Exception) or reply is None:
        return None
    if isinstance(reply, bytes):
        reply = reply.decode(errors="replace")
    if isinstance(reply, str):
        fields = dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)
        replid = fields.get("master_replid")
    else:
        replid = reply.get("master_replid")
    return str(replid) if replid else None


async def read_primary_id(r: Any) -> str | None:
    """The replication id of the server the asyncio client `r` writes to (one round trip)."""
    pipe = r.pipeline(transaction=False)
    queue_primary_id(pipe)
    (reply,) = await pipe.execute(raise_on_error=False)
    return primary_id(reply)
