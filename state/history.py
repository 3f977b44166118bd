"""Pruning the trading history past its retention: settled positions, final intents and old
ledger entries, fenced so that only the lease holder prunes."""

from __future__ import annotations

from typing import Any

from state.repo import Repo, text


class HistoryRepo(Repo):
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
            ],
            args=args,
        )
        return text(res) if isinstance(res, (str, bytes)) else [int(x) for x in res]
