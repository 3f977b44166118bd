"""Entries blocked by unreadable values: the one mechanism every garbage class reports through.

A value that a limit or a decision depends on and that cannot be read (the day's PnL, cash,
an open position or intent, a slot, a candle window, a cached market...) is never read as zero
or dropped: whoever reads it names it in a `Blocker` (state/structs.py), and while any is in
force the entry path opens nothing new, for the blocker's slot, its asset's slots, or every
slot. Exits, settlement and reconciliation, which reduce risk, go on.

Blockers are kept per source (who found them: "tick" for the tick's snapshot, "markets" for
the market cache, or any other reader), each source's set replaced whole by its latest read,
so a repaired value clears by itself at the next read. The active worker writes the set to
Redis when it changes (state/blocked.py): `baton status`, `/metrics` and the error journal
(once per change, never once per tick) show it.

Use from elsewhere in the worker (a reader of stats, a script that refused to write):
`runner.blocks.found("<source>", [Blocker(key=..., field=..., problem=...)])` when the value is
bad, `runner.blocks.found("<source>", [])` once it reads again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from state.store import Store
from state.structs import Blocker

log = logging.getLogger("baton.blocking")


class EntryBlocks:
    def __init__(self) -> None:
        self._by_source: dict[str, dict[str, Blocker]] = {}
        self._merged: dict[str, Blocker] | None = {}
        # id -> scope as last written to Redis under lease epoch `_epoch`; None: not known
        # (another holder may have written since). A blocker is the value's place: its text
        # (a sample of the garbage) may change from read to read without a write.
        self._shown: dict[str, str] | None = None
        self._epoch = 0

    def found(self, source: str, blockers: Iterable[Blocker]) -> None:
        """`source`'s latest read: these blockers replace what it found before."""
        now = {b.id: b for b in blockers}
        if now or source in self._by_source:
            if now:
                self._by_source[source] = now
            else:
                del self._by_source[source]
            self._merged = None

    def any(self) -> bool:
        """Whether any blocker is in force (the entry path's per-slot check is skipped when
        none is: a thousand slots a tick)."""
        return bool(self._by_source)

    def of(self, source: str) -> list[Blocker]:
        """What `source` found last."""
        return list(self._by_source.get(source, {}).values())

    def current(self) -> dict[str, Blocker]:
        """Every blocker in force, by id (the first source's, when two name one value)."""
        if self._merged is None:
            merged: dict[str, Blocker] = {}
            for blockers in self._by_source.values():
                for i, b in blockers.items():
                    merged.setdefault(i, b)
            self._merged = merged
        return self._merged

    def blocks_all(self) -> Blocker | None:
        """A blocker of every slot (an account-wide value), or None."""
        return next((b for b in self.current().values() if not b.slot and not b.asset), None)

    def blocks(self, slot_id: str, asset: str, but_not: str = "") -> Blocker | None:
        """The first blocker of this slot (from any source but `but_not`), or None."""
        if not self._by_source:
            return None
        for source, blockers in self._by_source.items():
            if source == but_not:
                continue
            for b in blockers.values():
                if b.blocks(slot_id, asset):
                    return b
        return None

    def forget_shown(self) -> None:
        """What Redis shows is no longer known (the lease changed hands): the next publish
        writes the set whatever it is."""
        self._shown = None

    async def publish(self, store: Store, epoch: int, now_ms: int, lazy: bool = False) -> list[str]:
        """Write the set to Redis when it differs from what was last written (no round trip
        otherwise). `lazy` (inside a tick): an empty set is not written while what Redis
        shows is unknown; the work between ticks writes it (clearing a former holder's).
        Returns problems (a refusal or a Redis error: tried again next time)."""
        cur = self.current()
        shown = {i: b.scope for i, b in cur.items()}
        if epoch != self._epoch:
            self._shown, self._epoch = None, epoch
        if shown == self._shown or (lazy and not shown and self._shown is None):
            return []
        try:
            verdict = await store.sync_blocked(epoch, list(cur.values()), now_ms)
        except Exception as e:
            self._shown = None
            return [f"writing the entry blockers: {e!r}"]
        if verdict != "OK":
            self._shown = None
            return [f"writing the entry blockers: {verdict}"]
        if cur and not self._shown:
            log.error("new entries blocked by %d unreadable value(s): %s", len(cur), list(cur)[:3])
        elif not cur and self._shown:
            log.warning("new entries unblocked: every value reads again")
        self._shown = shown
        return []
