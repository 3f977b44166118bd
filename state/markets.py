"""The markets found at the venue for each window (token ids, condition id), cached with a TTL."""

from __future__ import annotations

from typing import Any

from state.repo import Repo
from state.structs import MARKET, Market


class MarketsRepo(Repo):
    async def cache_markets(self, markets: list[tuple[Market, int]]) -> None:
        """Cache markets with their TTLs in one command (markets_cache.lua)."""
        if not markets:
            return
        args: list[Any] = []
        for market, ttl_s in markets:
            args += (MARKET.encode(market), ttl_s)
        await self._call(
            self.scripts.markets_cache, keys=[self.k.market(m.slug) for m, _ in markets], args=args
        )
