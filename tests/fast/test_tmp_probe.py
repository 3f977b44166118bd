import pytest
from feed.client import Feed
from tests.fast.test_feed_sim import test_a_stream_dropped_mid_window_reconnects_and_backfills_with_no_hole as t

async def test_probe(monkeypatch):
    async def nothing(self, *a, **k):
        return True
    monkeypatch.setattr(Feed, "_backfill", nothing)
    monkeypatch.setattr(Feed, "_fill_holes_once", nothing)
    await t()
