"""Deploys: the lock held by the one deploy or rollback in progress, and the stream that
records each (releases, colours, handover tick, result)."""

from __future__ import annotations

from typing import Any

from state.repo import Repo

DEPLOYS_MAXLEN = 1000


class DeploysRepo(Repo):
    def take_lock(self, token: str, ttl_ms: int) -> bool:
        """True when the lock was free and is now ours (SET NX with a TTL).

        Clients retry a command whose reply was lost (state/connection.py): when the first
        SET landed, the retry finds the lock taken, by us. The token tells, so a deploy is
        not refused by its own lock until the TTL runs out.
        """
        if self.r.set(self.k.deploy_lock(), token, nx=True, px=ttl_ms):
            return True
        held = self.r.get(self.k.deploy_lock())
        return held is not None and (held.decode() if isinstance(held, bytes) else held) == token

    def release_lock(self, token: str, pipeline: Any = None) -> Any:
        """Only our own lock (deploy_unlock.lua): 1 when released, 0 when no longer ours."""
        return self._call(
            self.scripts.deploy_unlock, keys=[self.k.deploy_lock()], args=[token], pipeline=pipeline
        )

    def record(self, fields: dict[str, Any], pipeline: Any = None) -> Any:
        return (self.r if pipeline is None else pipeline).xadd(
            self.k.deploys(),
            {k: str(v) for k, v in fields.items()},
            maxlen=DEPLOYS_MAXLEN,
            approximate=True,
        )
