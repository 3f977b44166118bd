"""History retention: what the tick no longer needs leaves Redis once it is older than
BATON_HISTORY_DAYS (default 7; 0 keeps everything).

Every traded slot-window leaves an intent, a position and ledger entries behind: about 1.7 kB
(docs/performance.md, Redis cost), 5 MB a day at 16 slots and 320 MB a day at 1,024, which
would fill any Redis in the end. The lease holder prunes them between ticks, a bounded step at
a time (an HSCAN page of each hash, one fenced script call), so that no tick waits for it and a
pass over a large hash spreads over many gaps. Only what can never be needed again goes:
settled positions and final intents of windows that ended before the cutoff, their
at-most-once refs, and ledger entries older than the retention by Redis's own clock (their
stream ids); the running totals stay, so the ledger
identity still holds. Open positions, open intents and the intents of open positions are
kept whatever their age.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernel.outcomes import position_id
from kernel.snapshot import decode_reported
from state.store import Store
from state.structs import FINAL_INTENT_STATUSES, INTENT, POSITION

DAY_MS = 86_400_000
# Hash fields looked at per step (an HSCAN page of positions and one of intents).
PAGE = 500
# After a whole pass over both hashes, the next one starts this much later.
PASS_EVERY_MS = 3_600_000


@dataclass
class Pruned:
    positions: int = 0
    intents: int = 0
    ledger: int = 0
    problems: list[str] = field(default_factory=list)


class HistoryPruner:
    """One step per call of `step`; the scan cursors are only a cache (a new worker starts a
    pass from the beginning). An unreadable record is reported and kept."""

    def __init__(self, store: Store, history_days: float) -> None:
        self.store = store
        self.retention_ms = round(history_days * DAY_MS)
        # Per hash, where the pass is (an HSCAN cursor), or None once it has gone round.
        self._cursors: dict[str, int | None] = {"positions": 0, "intents": 0}
        self._next_pass_ms = 0

    def due(self, now_ms: int) -> bool:
        return self.retention_ms > 0 and now_ms >= self._next_pass_ms

    async def step(self, epoch: int, now_ms: int) -> Pruned:
        """Look at one page of each hash not gone round yet in this pass, and prune what is
        past the retention."""
        out = Pruned()
        if not self.due(now_ms):
            return out
        cutoff_ms = now_ms - self.retention_ms
        todo = {n: c for n, c in self._cursors.items() if c is not None}
        pages = await self.store.scan_history(todo, PAGE)
        positions: list[tuple[str, str, str]] = []
        intents: list[tuple[str, str, str]] = []
        for pid, raw in pages.get("positions", (0, {}))[1].items():
            p = decode_reported(POSITION, raw, "history prune: position", out.problems, pid)
            # Settled, or closed (sold out by exits before its window ended: nothing to settle).
            if (
                p is not None
                and p.status in ("settled", "closed")
                and _ended_before(p, cutoff_ms, p.settled_ms)
            ):
                positions.append((pid, raw, p.intent_id))
        for iid, raw in pages.get("intents", (0, {}))[1].items():
            i = decode_reported(INTENT, raw, "history prune: intent", out.problems, iid)
            final = i is not None and i.status in FINAL_INTENT_STATUSES
            if final and _ended_before(i, cutoff_ms, i.updated_ms):
                intents.append((iid, raw, position_id(i)))
        res = await self.store.prune_history(epoch, self.retention_ms, positions, intents)
        if isinstance(res, str):  # STALE_EPOCH: this worker no longer holds the lease
            return out
        out.positions, out.intents, out.ledger = res
        for name, (cursor, _) in pages.items():
            self._cursors[name] = int(cursor) or None
        if all(c is None for c in self._cursors.values()):
            self._cursors = {"positions": 0, "intents": 0}
            self._next_pass_ms = now_ms + PASS_EVERY_MS
        return out


def _ended_before(rec: Any, cutoff_ms: int, last_change_ms: int) -> bool:
    return rec.window_end_s * 1000 < cutoff_ms and last_change_ms < cutoff_ms
