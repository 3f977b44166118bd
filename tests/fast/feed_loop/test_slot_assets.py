"""The feed streams the assets of the slots in Redis: a slot added on another asset while the
feed runs makes it reconnect with the union; with no slots, it streams its configured ones."""

from __future__ import annotations

import asyncio

from feed.assets import assets_of
from state.structs import SLOT, Slot
from tests.fast.feed_loop.fakes import ASSETS, KEYS, make_feed, running, wait_for


def _slot(sid: str, asset: str) -> bytes:
    return SLOT.encode(Slot(id=sid, asset=asset, timeframe="5m"))


def test_the_assets_of_the_slots_are_read_sorted_and_unreadable_ones_left_out():
    values = [_slot("a", "eth"), _slot("b", "btc"), _slot("c", "eth"), b"{garbage", _slot("d", "BAD!")]
    assert assets_of(values) == ("btc", "eth")


async def test_the_feed_follows_the_slots_assets_and_reconnects_when_they_change(redis, binance, rest):
    feed = make_feed(redis, binance, rest, follow_slots=True, slots_poll_s=0.05)
    async with running(feed):
        # No slots yet: the configured assets.
        await wait_for(lambda: _true(len(binance.paths) >= 1), "a connection")
        assert feed.assets == tuple(ASSETS)
        await redis.hset(KEYS.slots(), mapping={"x": _slot("x", "btc"), "y": _slot("y", "ada")})
        await wait_for(
            lambda: _true(feed.assets == ("ada", "btc") and len(binance.paths) >= 2), "a reconnect"
        )
        assert "adausdt@kline_1s" in binance.paths[-1] and "btcusdt@kline_1s" in binance.paths[-1]
        assert "ethusdt" not in binance.paths[-1]
        n = len(binance.paths)
        await redis.hset(KEYS.slots(), "z", _slot("z", "ada"))  # the same assets: no reconnect
        await redis.hset(KEYS.slots(), "z", _slot("z", "btc"))
        await asyncio.sleep(0.3)  # several polls: a reconnect would have happened by now
        assert len(binance.paths) == n
        # Garbage in a slot: its asset is unknown, so nothing streamed is dropped (btc's other
        # slots keep their candles) and the feed does not reconnect.
        await redis.hset(KEYS.slots(), mapping={"x": b"[garbage", "z": _slot("z", "ada")})
        await asyncio.sleep(0.3)
        assert feed.assets == ("ada", "btc") and len(binance.paths) == n


async def _true(v: bool) -> bool:
    return v
