"""Deploys: the lock held by the one deploy or rollback in progress, and the stream that
records each (releases, colours, handover tick, result)."""

from __future__ import annotations

from typing import Any

from state.repo import Repo

DEPLOYS_MAXLEN = 1000


class DeploysRepo(Repo):
    def take_lock(self, token: str, ttl_ms: int) -> Any:
        """True when the lock was free and is now ours (SET NX with a TTL)."""
        return self.r.set(self.k.deploy_lock(), token, nx=True, px=ttl_ms)

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
