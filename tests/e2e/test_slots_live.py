"""Slots managed live on a real stack: a slot added with `baton slots add` on an asset the
stack was not configured with trades from the worker's next ticks (the feed streams its asset,
the sim prices it), `baton status --json` lists it with its strategy, and `baton slots remove`
stops it and keeps it from being seeded again. A removed setting (BATON_SNIPE_EDGE) is named
in a warning, never fatal."""

from __future__ import annotations

import json

import pytest

from deploy.sandbox import TRADING, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SLOT = "ada-15s.snipe"


def _intents(st: Stack, slot: str) -> list[str]:
    return [i for i in st.redis.hkeys("baton:intents") if i.startswith(f"{slot}:")]


def test_a_slot_added_on_a_new_asset_trades_and_a_removed_one_stops():
    st = Stack(BATON_TICK_MS="1000", BATON_SNIPE_EDGE="0.2", **TRADING)
    try:
        st.start()
        out = st.baton(
            *("slots", "add", SLOT, "--asset", "ada", "--timeframe", "15s", "--strategy", "snipe"),
            *("--stake", "2", "--param", "edge=0", "--json"),
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["slot"]["strategy"] == "snipe"
        # The feed reconnects with ada among its assets, and the worker enters its windows.
        wait_for(lambda: st.redis.hexists("baton:feed:status", "ada:1s"), 60, "ada's candles")
        wait_for(lambda: _intents(st, SLOT), 90, f"an order of {SLOT}")
        slots = {s["id"]: s for s in st.status()["slots"]}
        assert slots[SLOT]["strategy"] == "snipe" and slots[SLOT]["stake_usd"] == 2.0
        assert slots[SLOT]["params"] == {"edge": 0.0} and slots["btc-15s"]["strategy"] == "snipe"

        out = st.baton("slots", "remove", SLOT, "--force")
        assert out.returncode == 0, out.stderr
        assert st.redis.sismember("baton:slots:removed", SLOT)
        seen = set(_intents(st, SLOT))
        last = int(st.redis.hget("baton:stats", "last_tick"))
        wait_for(lambda: int(st.redis.hget("baton:stats", "last_tick")) >= last + 18, 60, "a window more")
        assert set(_intents(st, SLOT)) == seen, "a removed slot traded on"
        assert any(i.startswith("btc-15s:") for i in st.redis.hkeys("baton:intents")), "the others trade"
        assert not st.redis.hexists("baton:slots", SLOT)
        logs = [f.read_text(errors="replace") for f in (st.home / "var" / "log").glob("worker-*.log")]
        assert any("BATON_SNIPE_EDGE is no longer read" in text for text in logs), st.logs()
    finally:
        st.stop()
