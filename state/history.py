"""Pruning the trading history past its retention: settled positions, final intents and old
ledger entries, fenced so that only the lease holder prunes."""

from __future__ import annotations

from typing import Any

from state.repo import Repo, text


class HistoryRepo(Repo):
    async def scan_history(
        self, cursors: dict[str, int], count: int
    ) -> dict[str, tuple[int, dict[str, str]]]:
        """One HSCAN page of each hash named in `cursors` ('positions', 'intents'), from its
        cursor, in one round trip: name -> (next cursor, {id: JSON})."""
        keys = {"positions": self.k.positions(), "intents": self.k.intents()}
        pipe = self.r.pipeline(transaction=False)
        for name, cursor in cursors.items():
            pipe.hscan(keys[name], cursor, count=count)
        return dict(zip(cursors, await pipe.execute(), strict=True))

    async def prune_history(
        self,
        epoch: int,
        retention_ms: int,
        positions: list[tuple[str, str, str]],
        intents: list[tuple[str, str, str]],
    ) -> Any:
        """Remove settled positions (id, JSON as read, id of their intent) and final intents
        (id, JSON as read, id of their slot-window's position) that the caller found
        past the retention, and up to 1,000 ledger entries older than `retention_ms` by Redis's
        clock (history_prune.lua): [positions, intents, ledger entries] pruned, or 'STALE_EPOCH'."""
        args: list[Any] = [epoch, retention_ms, len(positions)]
        for pid, raw, iid in positions:
            args += (pid, raw, iid)
        for iid, raw, pid in intents:
            args += (iid, raw, pid)
        res = await self._call(
            self.scripts.history_prune,
            keys=[
                self.k.lease_epoch(),
                self.k.positions(),
                self.k.positions_open(),
                self.k.intents(),
                self.k.intents_open(),
                self.k.ledger_refs(),
                self.k.ledger(),
                self.k.counts(),
            ],
            args=args,
        )
        return text(res) if isinstance(res, (str, bytes)) else [int(x) for x in res]
