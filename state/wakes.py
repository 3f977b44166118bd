"""Slots' wake times (keys.slot_wakes()): when each slot's strategy next wants quotes in its
window, written by the lease holder when they change, so that status and the dashboard can
say "asleep until"."""

from __future__ import annotations

from typing import Any

from state.repo import Repo


class WakesRepo(Repo):
    def record_wakes(self, wakes: dict[str, int], pipeline: Any = None) -> Any:
        """Set these slots' wake times (ms), one HSET for all of them."""
        target = pipeline if pipeline is not None else self.r
        return target.hset(self.k.slot_wakes(), mapping={sid: str(ms) for sid, ms in wakes.items()})

    async def read_wakes(self) -> dict[str, int]:
        """Every slot's wake time as written (a value that is not an integer is left out)."""
        raw = await self.r.hgetall(self.k.slot_wakes())
        return {sid: int(v) for sid, v in raw.items() if str(v).lstrip("-").isdigit()}
