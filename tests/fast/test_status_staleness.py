"""`baton status` shows, per asset, how old the candle data is and whether it is stale, and per
slot that new entries are blocked while it is (the kernel's rule: state/structs.feed_stale)."""

from __future__ import annotations

import json
import time

import fakeredis

from baton.settings import load
from control import render
from control.views import collect
from state.keys import Keys
from state.structs import FEED_STATUS, SLOT, FeedStatus, Slot

K = Keys("baton:")


def test_status_reports_data_age_staleness_and_the_slots_it_blocks():
    s = load({"BATON_ASSETS": "btc,eth,sol", "BATON_TIMEFRAMES": "5m", "BATON_STALE_AFTER_MS": "10000"})
    r = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    now_ms = int(time.time() * 1000)
    for a in ("btc", "eth", "sol"):
        r.hset(K.slots(), f"{a}-5m", SLOT.encode(Slot(f"{a}-5m", a, "5m")))
    r.hset(K.feed_status(), "btc:1s", FEED_STATUS.encode(FeedStatus(now_ms - 1000, now_ms - 2000, 95_000.0)))
    r.hset(
        K.feed_status(), "eth:1s", FEED_STATUS.encode(FeedStatus(now_ms - 60_000, now_ms - 61_000, 3_500.0))
    )
    # sol: the feed never wrote it.

    st = collect(s, r)
    json.dumps(st)  # `baton status --json` prints it as is
    md = st["market_data"]
    assert md["stale_after_ms"] == 10_000 and md["interval"] == "1s"
    btc, eth, sol = md["assets"]["btc"], md["assets"]["eth"], md["assets"]["sol"]
    assert not btc["stale"] and 1000 <= btc["age_ms"] < 10_000 and btc["last_close"] == 95_000.0
    assert eth["stale"] and eth["age_ms"] >= 60_000 and eth["updated_ms"] == now_ms - 60_000
    assert sol["stale"] and sol["age_ms"] is None
    blocked = {x["id"]: x["entries_blocked"] for x in st["slots"]}
    assert blocked["btc-5m"] == []
    assert len(blocked["eth-5m"]) == 1 and blocked["eth-5m"][0].startswith("stale data: eth updated 6")
    assert blocked["eth-5m"][0].endswith("(limit 10.0 s)")
    assert blocked["sol-5m"] == ["stale data: sol never updated (limit 10.0 s)"]

    text = render.status(st)
    data_line = next(line for line in text.splitlines() if line.startswith("data "))
    shown = dict(part.split(" ", 1) for part in data_line.removeprefix("data").strip().split(", "))
    assert shown["btc"].endswith(" s") and "STALE" not in shown["btc"]
    assert shown["eth"].startswith("6") and shown["eth"].endswith(" s STALE")
    assert "sol never STALE" in data_line and data_line.endswith("(stale after 10.0 s)")
    assert "blocked    eth-5m: no new entries: stale data: eth updated" in text
    assert "blocked    sol-5m: no new entries: stale data: sol never updated" in text
    assert "btc-5m: no new entries" not in text

    # Fresh data again: nothing blocked.
    fresh = FeedStatus(int(time.time() * 1000), now_ms, 3_501.0)
    r.hset(K.feed_status(), "eth:1s", FEED_STATUS.encode(fresh))
    r.hset(K.feed_status(), "sol:1s", FEED_STATUS.encode(fresh))
    st = collect(s, r)
    assert not any(d["stale"] for d in st["market_data"]["assets"].values())
    assert all(x["entries_blocked"] == [] for x in st["slots"])
    # Halted and paused are reasons too, shown beside the data's.
    r.hset(K.control(), mapping={"paused": "1"})
    assert all(x["entries_blocked"] == ["paused"] for x in collect(s, r)["slots"])
