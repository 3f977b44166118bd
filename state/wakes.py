"""Slots' wake times (keys.slot_wakes()): when each slot's strategy next wants quotes in its
window, written by the lease holder when they change, so that status and the dashboard can
say "asleep until"."""

from __future__ import annotations

from typing import Any

from state.repo import Repo


class WakesRepo(Repo):
    def record_wakes(self, wakes: dict[str, int], gone: set[str] | None = None, pipeline: Any = None) -> Any:
        """Set these slots' wake times (ms) and remove those of the slots `gone` (awake at
        every tick now): one HSET and one HDEL, in one round trip."""
        own = pipeline is None
        pipe = self.r.pipeline(transaction=False) if own else pipeline
        if wakes:
            pipe.hset(self.k.slot_wakes(), mapping={sid: str(ms) for sid, ms in wakes.items()})
        if gone:
            pipe.hdel(self.k.slot_wakes(), *sorted(gone))
        return pipe.execute() if own else None

    async def read_wakes(self) -> dict[str, int]:
        """Every slot's wake time as written (a value that is not an integer is left out)."""
        raw = await self.r.hgetall(self.k.slot_wakes())
        return {sid: int(v) for sid, v in raw.items() if str(v).lstrip("-").isdigit()}
