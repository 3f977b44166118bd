"""The ledger: a stream of money movements, each booked once by its ref, with running totals
and per-day realised PnL kept in step by the same script (state/lua/_ledger.lua)."""

from __future__ import annotations

import time

from state.repo import Repo, text
from state.structs import LedgerEntry


def utc_day(ms: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ms / 1000))


class LedgerRepo(Repo):
    async def deposit(self, epoch: int, ref: str, amount_micros: int, at_ms: int) -> str:
        res = await self._call(
            self.scripts.ledger_deposit,
            keys=[
                self.k.lease_epoch(),
                self.k.ledger(),
                self.k.ledger_totals(),
                self.k.ledger_refs(),
                self.k.ledger_day(utc_day(at_ms)),
            ],
            args=[epoch, ref, amount_micros, at_ms],
        )
        return text(res)

    async def read_ledger_totals(self) -> dict[str, int]:
        raw = await self.r.hgetall(self.k.ledger_totals())
        return {k: int(v) for k, v in raw.items()}

    async def read_ledger(self) -> list[LedgerEntry]:
        out = []
        for _id, f in await self.r.xrange(self.k.ledger()):
            out.append(
                LedgerEntry(
                    kind=f["kind"],
                    amount_micros=int(f["amount_micros"]),
                    ref=f["ref"],
                    at_ms=int(f["at_ms"]),
                    epoch=int(f.get("epoch", 0)),
                    pnl_micros=int(f.get("pnl_micros", 0)),
                    fee_micros=int(f.get("fee_micros", 0)),
                )
            )
        return out
