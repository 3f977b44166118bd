"""The sim's Binance-format server, driven by a real websockets client and aiohttp REST calls."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiohttp
import pytest
import websockets
from aiohttp import web

from sim.binance import BinanceSim, create_app
from sim.model import PriceModel

SEED = 7
REL = 1e-9


@pytest.fixture
async def server():
    model = PriceModel(SEED)
    runner = web.AppRunner(create_app(BinanceSim(model)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"{host}:{port}", model
    await runner.cleanup()


async def _frames(ws, want, timeout_s=5.0):
    """Read frames until `want(frames)` holds, within a deadline."""
    frames = []
    async with asyncio.timeout(timeout_s):
        while not want(frames):
            frames.append(json.loads(await ws.recv()))
    return frames


def _assert_matches_model(model: PriceModel, asset: str, k: dict) -> None:
    o, h, low, c = model.candle(asset, k["t"] // 1000)
    assert float(k["o"]) == pytest.approx(o, rel=REL)
    assert float(k["h"]) == pytest.approx(h, rel=REL)
    assert float(k["l"]) == pytest.approx(low, rel=REL)
    assert float(k["c"]) == pytest.approx(c, rel=REL)


async def test_combined_stream_sends_each_1s_kline_once_closed_matching_the_model(server):
    # Binance pushes a 1s candle once a second, closed ("Update Speed: 1000ms for `1s`",
    # binance-spot-api-docs web-socket-streams.md): no update of the second still forming.
    addr, model = server
    url = f"ws://{addr}/stream?streams=btcusdt@kline_1s/ethusdt@kline_1s"
    async with websockets.connect(url) as ws:
        frames = await _frames(ws, lambda fs: len(fs) >= 4)
    for f in frames:
        assert set(f) == {"stream", "data"}
        d, k = f["data"], f["data"]["k"]
        asset = f["stream"][:3]
        assert d["e"] == "kline" and d["s"] == asset.upper() + "USDT" == k["s"]
        assert k["i"] == "1s" and k["T"] == k["t"] + 999 and k["t"] % 1000 == 0
        assert all(isinstance(k[x], str) for x in "ochlvqVQB")
        assert isinstance(k["n"], int) and k["f"] <= k["L"]
        assert k["x"] is True
        _assert_matches_model(model, asset, k)
        # Sent shortly after the candle closed, never before.
        assert k["T"] < d["E"] < k["T"] + 1 + 500
    for stream in ("btcusdt@kline_1s", "ethusdt@kline_1s"):
        opens = [f["data"]["k"]["t"] for f in frames if f["stream"] == stream]
        assert opens == list(range(opens[0], opens[0] + 1000 * len(opens), 1000))  # each once


async def test_raw_stream_sends_unwrapped_events_and_longer_intervals_update_in_progress(server):
    addr, model = server
    async with websockets.connect(f"ws://{addr}/ws/solusdt@kline_1m") as ws:
        frames = await _frames(ws, lambda fs: len(fs) >= 1, timeout_s=4)
    ev = frames[0]
    assert ev["e"] == "kline" and ev["s"] == "SOLUSDT"
    k = ev["k"]
    assert k["i"] == "1m" and k["t"] % 60_000 == 0 and k["T"] == k["t"] + 59_999
    if not k["x"]:
        assert k["t"] <= ev["E"] < k["T"]
    assert float(k["o"]) == pytest.approx(model.price("sol", k["t"] // 1000), rel=REL)


async def test_subscribe_message_adds_a_stream(server):
    addr, _ = server
    async with websockets.connect(f"ws://{addr}/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["xrpusdt@kline_1s"], "id": 1}))
        frames = await _frames(ws, lambda fs: any(f.get("e") == "kline" for f in fs))
        assert frames[0] == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        listed = await _frames(ws, lambda fs: any(f.get("id") == 2 for f in fs))
        assert {"result": ["xrpusdt@kline_1s"], "id": 2} in listed
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nope@kline_1s"], "id": 3}))
        errs = await _frames(ws, lambda fs: any("error" in f for f in fs))
        assert any("error" in f and f["error"]["code"] == 2 for f in errs)


@pytest.mark.parametrize(
    ("streams", "code"),
    [("btceur@kline_1s", -1121), ("btcusdt@trade", -1100), ("btcusdt@kline_7m", -1120)],
)
async def test_unknown_streams_are_refused_with_a_binance_error_and_the_server_keeps_serving(
    server, streams, code
):
    addr, _ = server
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"ws://{addr}/stream?streams={streams}"):
            pass
    assert info.value.response.status_code == 400
    assert json.loads(info.value.response.body)["code"] == code
    async with websockets.connect(f"ws://{addr}/stream?streams=btcusdt@kline_1s") as ws:
        await _frames(ws, lambda fs: len(fs) >= 1)


async def _get(addr: str, path: str, **params):
    async with aiohttp.ClientSession() as s, s.get(f"http://{addr}{path}", params=params) as r:
        return r.status, await r.json()


async def test_rest_klines_match_the_model_and_end_with_the_candle_still_open(server):
    # Binance's last row is the candle still open: its close is the last price so far and its
    # close time is in the future (a client must not take it for a closed one).
    addr, model = server
    before_ms = time.time_ns() // 1_000_000
    status, rows = await _get(addr, "/api/v3/klines", symbol="BTCUSDT", interval="1s", limit="5")
    after_ms = time.time_ns() // 1_000_000
    assert status == 200 and len(rows) == 5
    for prev, row in itertools.pairwise(rows):
        assert row[0] == prev[0] + 1000
    *closed, forming = rows
    assert closed[-1][6] < after_ms  # closed
    assert forming[0] <= after_ms and forming[6] >= before_ms  # open when it was served
    s = forming[0] // 1000
    assert float(forming[1]) == pytest.approx(model.price("btc", s), rel=REL)
    for row in rows:
        assert len(row) == 12 and row[6] == row[0] + 999 and row[11] == "0"
    for row in closed:
        _assert_matches_model(model, "btc", dict(zip("tohlc", row[:5], strict=True)))


async def test_rest_klines_of_1m_end_with_the_minute_so_far(server):
    addr, model = server
    before_ms = time.time_ns() // 1_000_000
    _, [m1] = await _get(addr, "/api/v3/klines", symbol="ETHUSDT", interval="1m", limit="1")
    assert m1[0] % 60_000 == 0 and m1[6] == m1[0] + 59_999 >= before_ms
    assert float(m1[1]) == pytest.approx(model.price("eth", m1[0] // 1000), rel=REL)
    assert float(m1[3]) <= float(m1[4]) <= float(m1[2])


async def test_rest_klines_of_1m_aggregate_the_1s_candles(server):
    addr, _ = server
    _, [m1, _] = await _get(addr, "/api/v3/klines", symbol="ETHUSDT", interval="1m", limit="2")
    start, end = m1[0], m1[0] + 59_999
    _, secs = await _get(
        addr, "/api/v3/klines", symbol="ETHUSDT", interval="1s", startTime=str(start),
        endTime=str(end),
    )  # fmt: skip
    assert len(secs) == 60 and secs[0][0] == start and secs[-1][0] == end - 999
    assert m1[1] == secs[0][1] and m1[4] == secs[-1][4]
    assert float(m1[2]) == max(float(r[2]) for r in secs)
    assert float(m1[3]) == min(float(r[3]) for r in secs)
    assert float(m1[5]) == pytest.approx(sum(float(r[5]) for r in secs), rel=1e-9)
    assert m1[8] == sum(r[8] for r in secs)


async def test_rest_klines_follow_the_range_and_limit_rules(server):
    addr, _ = server
    q = {"symbol": "BTCUSDT", "interval": "1s"}
    _, default = await _get(addr, "/api/v3/klines", **q)
    assert len(default) == 500
    _, capped = await _get(addr, "/api/v3/klines", **q, limit="5000")
    assert len(capped) == 1000
    base = default[0][0]
    # startTime rounds up to the next open; the window is inclusive of endTime's candle.
    _, ranged = await _get(addr, "/api/v3/klines", **q, startTime=str(base + 1), endTime=str(base + 10_000))
    assert [r[0] for r in ranged] == [base + i * 1000 for i in range(1, 11)]
    _, limited = await _get(addr, "/api/v3/klines", **q, startTime=str(base), limit="3")
    assert [r[0] for r in limited] == [base, base + 1000, base + 2000]
    _, until = await _get(addr, "/api/v3/klines", **q, endTime=str(base), limit="2")
    assert [r[0] for r in until] == [base - 1000, base]
    _, future = await _get(addr, "/api/v3/klines", **q, startTime=str(base + 10**9))
    assert future == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"interval": "1s"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "2s"}, -1120),
        ({"symbol": "BTCEUR", "interval": "1s"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "1s", "limit": "abc"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1s", "limit": "0"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1s", "startTime": "-5"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1s", "startTime": "9", "endTime": "1"}, -1023),
    ],
)
async def test_rest_klines_with_bad_params_answer_400_with_a_binance_error(server, params, code):
    addr, _ = server
    status, body = await _get(addr, "/api/v3/klines", **params)
    assert status == 400
    assert body["code"] == code and body["msg"]


async def test_ping_and_time(server):
    addr, _ = server
    assert await _get(addr, "/api/v3/ping") == (200, {})
    status, body = await _get(addr, "/api/v3/time")
    assert status == 200 and abs(body["serverTime"] - time.time() * 1000) < 5000


async def test_drop_cuts_the_streams_and_refuses_new_ones_for_a_while(server):
    addr, _ = server
    url = f"ws://{addr}/stream?streams=btcusdt@kline_1s"
    async with websockets.connect(url) as ws:
        await _frames(ws, lambda fs: len(fs) >= 1)
        drop = f"http://{addr}/_sim/binance/drop"
        async with aiohttp.ClientSession() as s, s.post(drop, params={"refuse_ms": "60000"}) as r:
            assert r.status == 200 and await r.json() == {"dropped": 1}
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url):
            pass
    assert info.value.response.status_code == 503


async def test_rest_answers_carry_the_ips_used_weight_of_the_minute(server):
    # "Every request will contain X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)"
    # (binance-spot-api-docs rest-api.md, "IP Limits"): klines weigh 2, ping 1.
    addr, _ = server
    seen = []
    async with aiohttp.ClientSession() as s:
        for path, params in (
            ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1s", "limit": "1"}),
            ("/api/v3/klines", {"symbol": "NOPE", "interval": "1s"}),  # a 400 weighs too
            ("/api/v3/ping", {}),
        ):
            async with s.get(f"http://{addr}{path}", params=params) as r:
                assert r.headers["X-MBX-USED-WEIGHT-1M"] == r.headers["X-MBX-USED-WEIGHT"]
                seen.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
    if seen[-1] < seen[0]:
        pytest.skip("a minute boundary passed between the requests")
    assert [b - a for a, b in itertools.pairwise(seen)] == [2, 1]
