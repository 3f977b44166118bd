"""Each colour's worker heartbeat (a hash with a TTL): readiness, holder id, release, pid."""

from __future__ import annotations

from typing import Any

from state.repo import Repo


class WorkersRepo(Repo):
    def heartbeat(self, color: str, fields: dict[str, Any], ttl_ms: int, pipeline: Any = None) -> Any:
        pipe = self.r.pipeline(transaction=False) if pipeline is None else pipeline
        pipe.hset(self.k.worker(color), mapping=fields)
        pipe.pexpire(self.k.worker(color), ttl_ms)
        return pipe.execute() if pipeline is None else None

    def forget_worker(self, color: str, pipeline: Any = None) -> Any:
        """Drop a colour's heartbeat before starting it anew, so that readiness is its own."""
        return (self.r if pipeline is None else pipeline).delete(self.k.worker(color))
