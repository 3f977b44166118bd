"""The local candle history (feed/history.py, `baton history`): day files that read back bit for
bit, corrupt rows skipped with a problem naming file:line, merges, a fetch from the sim's klines
REST across a UTC midnight (and its retries), and the import of the feed's candles from Redis."""

from __future__ import annotations

import gzip
import json
import os

import aiohttp
import fakeredis
import pytest
from aiohttp import web

from baton import cli
from deploy.ports import free_port
from feed import history, history_fetch
from sim.binance import BinanceSim, create_app
from sim.klines import Klines
from sim.model import PriceModel
from state.keys import Keys
from state.structs import CANDLE, Candle
from tests.simserver import ThreadServer

MIDNIGHT_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z
K = Keys("baton:")


def candle(open_ms: int, price: float = 100.0, closed: bool = True) -> Candle:
    return Candle(open_ms, price, price * 1.001, price * 0.999, price * 1.0005, 1.25, closed)


def walk(from_ms: int, n: int) -> list[Candle]:
    # Prices with long decimal expansions: repr must carry them exactly.
    return [candle(from_ms + i * 1000, 95_000.0 + i / 3.0) for i in range(n)]


def test_two_merges_of_one_asset_at_once_lose_no_rows(tmp_path, monkeypatch):
    """merge() reads, merges and replaces a day file: a second merge that ran between the
    first's read and its write would be written over. The asset's lock makes them take turns."""
    import threading

    first, second = walk(MIDNIGHT_MS, 5), walk(MIDNIGHT_MS + 5_000, 5)
    read = history.read_day
    other: list[threading.Thread] = []

    def read_then_let_the_other_run(*args, **kw):
        got = read(*args, **kw)
        if not other:  # the first merge, between its read and its write: the second starts
            other.append(threading.Thread(target=history.merge, args=(tmp_path, "btc", second)))
            other[0].start()
            other[0].join(timeout=0.3)  # unlocked, it would be done by now
        return got

    monkeypatch.setattr(history, "read_day", read_then_let_the_other_run)
    history.merge(tmp_path, "btc", first)
    other[0].join()
    assert history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 10_000) == first + second


def test_candles_read_back_bit_for_bit_across_days_within_the_range(tmp_path):
    cs = walk(MIDNIGHT_MS - 5_000, 10)  # 5 before midnight, 5 after
    counts = history.merge(tmp_path, "btc", cs)
    assert (counts.added, counts.replaced, counts.days) == (10, 0, ["2026-11-30", "2026-12-01"])
    assert history.day_path(tmp_path, "btc", "2026-11-30").is_file()
    assert history.load_candles(tmp_path, "btc", cs[0].open_ms, cs[-1].open_ms + 1) == cs
    # [from, to): the candle opening at `to` is not in it.
    got = history.load_candles(tmp_path, "btc", MIDNIGHT_MS - 2_000, MIDNIGHT_MS + 2_000)
    assert got == cs[3:7]
    assert history.load_candles(tmp_path, "eth", cs[0].open_ms, cs[-1].open_ms) == []
    # The format is the documented CSV.
    with gzip.open(history.day_path(tmp_path, "btc", "2026-12-01"), "rt") as f:
        lines = f.read().splitlines()
    assert lines[0] == "open_ms,open,high,low,close,volume"
    assert lines[1].split(",")[0] == str(MIDNIGHT_MS)


def test_a_merge_adds_replaces_and_refuses_and_writes_nothing_unchanged(tmp_path):
    cs = walk(MIDNIGHT_MS, 5)
    history.merge(tmp_path, "btc", cs)
    path = history.day_path(tmp_path, "btc", "2026-12-01")
    before = path.stat().st_mtime_ns
    again = history.merge(tmp_path, "btc", cs)
    assert (again.added, again.replaced, again.days) == (0, 0, [])
    assert path.stat().st_mtime_ns == before
    changed = candle(MIDNIGHT_MS + 2_000, 7.0)
    bad = Candle(MIDNIGHT_MS + 9_000, 1.0, 0.5, 2.0, 1.0, 1.0, True)  # high below low
    got = history.merge(
        tmp_path,
        "btc",
        [changed, candle(MIDNIGHT_MS + 60_000, closed=False), bad, candle(MIDNIGHT_MS + 10_500)],
    )
    assert (got.added, got.replaced, got.refused) == (0, 1, 3)
    stored = history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 86_400_000)
    assert stored == [*cs[:2], changed, *cs[3:]]


def test_corrupt_rows_are_skipped_with_a_problem_naming_file_and_line(tmp_path):
    cs = walk(MIDNIGHT_MS, 3)
    history.merge(tmp_path, "btc", cs)
    path = history.day_path(tmp_path, "btc", "2026-12-01")
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    lines[2:2] = [
        "garbage",
        f"{MIDNIGHT_MS + 500},1,1,1,1,1",  # not on a whole second
        f"{MIDNIGHT_MS - 1000},1,1,1,1,1",  # another day's
        f"{MIDNIGHT_MS + 50_000},1,x,1,1,1",
        f"{MIDNIGHT_MS + 51_000},1,0.5,2,1,1",  # high below low
        f"{MIDNIGHT_MS + 52_000},1,1,1,1,nan",
    ]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    problems: list[str] = []
    got = history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 86_400_000, problems)
    assert got == cs
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in range(3, 9)]
    assert (
        "expected 6" in problems[0]
        and "whole second" in problems[1]
        and "not in this file's day" in problems[2]
    )
    assert "not numbers" in problems[3] and "inconsistent" in problems[4] and "volume" in problems[5]


def test_a_file_cut_short_keeps_what_was_read_and_says_so(tmp_path):
    history.merge(tmp_path, "btc", walk(MIDNIGHT_MS, 5000))
    path = history.day_path(tmp_path, "btc", "2026-12-01")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    problems: list[str] = []
    got = history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 86_400_000, problems)
    assert 0 < len(got) < 5000 and got == walk(MIDNIGHT_MS, len(got))
    assert len(problems) == 1 and problems[0].startswith(f"{path}:") and "unreadable" in problems[0]
    # What the store holds says so too (counted from what could be read).
    found: list[str] = []
    [cov] = history.coverage(tmp_path, "btc", found)
    assert (cov.day, cov.candles, cov.first_ms) == ("2026-12-01", len(got), MIDNIGHT_MS) and found
    # Not gzip at all: a problem, no candles, no exception.
    path.write_bytes(b"open_ms,open\n1,2\n")
    problems.clear()
    assert history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 1000, problems) == []
    assert problems and str(path) in problems[0]


async def test_fetch_from_the_sims_klines_stores_the_models_candles_across_midnight(tmp_path):
    model = PriceModel(11)
    sim = BinanceSim(model, clock_ms=lambda: MIDNIGHT_MS + 86_400_000)
    from_ms, to_ms = MIDNIGHT_MS - 1_500_000, MIDNIGHT_MS + 600_000  # 2,100 s: 3 pages
    with ThreadServer(create_app(sim)) as url:
        async with aiohttp.ClientSession() as http:
            res = await history_fetch.fetch(
                http,
                url,
                tmp_path,
                "eth",
                from_ms,
                to_ms,
                clock_ms=lambda: MIDNIGHT_MS + 86_400_000,
                pace=_no_wait,
            )
            again = await history_fetch.fetch(
                http,
                url,
                tmp_path,
                "eth",
                from_ms,
                to_ms,
                clock_ms=lambda: MIDNIGHT_MS + 86_400_000,
                pace=_no_wait,
            )
    assert (res.candles, res.missing, res.requests, res.counts.added) == (2100, 0, 3, 2100)
    assert res.counts.days == ["2026-11-30", "2026-12-01"]
    assert (again.counts.added, again.counts.replaced) == (0, 0)
    got = history.load_candles(tmp_path, "eth", from_ms, to_ms)
    k = Klines(model)
    want = [k.second("eth", s) for s in range(from_ms // 1000, to_ms // 1000)]
    assert [c.open_ms for c in got] == [w.open_ms for w in want]
    # The sim sends 8 decimals, as Binance does: what is stored is what was sent.
    assert [(c.open, c.close) for c in got] == [(float(f"{w.o:.8f}"), float(f"{w.c:.8f}")) for w in want]


async def test_fetch_stores_no_candle_still_open(tmp_path):
    # A range reaching past the present: the sim's last row is the candle still open (as
    # Binance's is), which the fetch leaves out and counts as missing.
    model = PriceModel(11)
    at_ms = MIDNIGHT_MS + 5_600
    sim = BinanceSim(model, clock_ms=lambda: at_ms)
    with ThreadServer(create_app(sim)) as url:
        async with aiohttp.ClientSession() as http:
            res = await history_fetch.fetch(
                http,
                url,
                tmp_path,
                "btc",
                MIDNIGHT_MS,
                MIDNIGHT_MS + 10_000,
                clock_ms=lambda: at_ms,
                pace=_no_wait,
            )
    assert (res.candles, res.missing) == (5, 5)
    got = history.load_candles(tmp_path, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 10_000)
    k = Klines(model)
    assert [(c.open_ms, c.close) for c in got] == [
        (s * 1000, float(f"{k.second('btc', s).c:.8f}"))
        for s in range(MIDNIGHT_MS // 1000, MIDNIGHT_MS // 1000 + 5)
    ]


async def _no_wait() -> None:
    return None


async def test_fetch_waits_out_a_429_and_stops_at_once_on_a_bad_request(tmp_path):
    calls: list[str] = []

    async def klines(request: web.Request) -> web.Response:
        calls.append(request.query["symbol"])
        if request.query["symbol"] == "NOPEUSDT":
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if len(calls) == 1:
            return web.json_response(
                {"code": -1003, "msg": "Too many requests"}, status=429, headers={"Retry-After": "7"}
            )
        t = int(request.query["startTime"])
        return web.json_response([[t, "1.0", "1.0", "1.0", "1.0", "2.0", t + 999]])

    app = web.Application()
    app.router.add_get("/api/v3/klines", klines)
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    with ThreadServer(app) as url:
        async with aiohttp.ClientSession() as http:
            res = await history_fetch.fetch(
                http,
                url,
                tmp_path,
                "btc",
                MIDNIGHT_MS,
                MIDNIGHT_MS + 5000,
                clock_ms=lambda: MIDNIGHT_MS + 10**6,
                pace=_no_wait,
                sleep=sleep,
            )
            with pytest.raises(history_fetch.BackfillError, match="HTTP 400"):
                await history_fetch.fetch(
                    http,
                    url,
                    tmp_path,
                    "nope",
                    MIDNIGHT_MS,
                    MIDNIGHT_MS + 5000,
                    clock_ms=lambda: MIDNIGHT_MS + 10**6,
                    pace=_no_wait,
                    sleep=sleep,
                )
    assert slept == [7.0]
    assert (res.requests, res.candles, res.missing) == (2, 1, 4)
    assert calls.count("NOPEUSDT") == 1


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setenv("BATON_ASSETS", "btc,eth")
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_import_stores_the_feeds_closed_candles_and_list_shows_them(env, capsys, monkeypatch):
    r = fakeredis.FakeRedis()
    monkeypatch.setattr(cli, "redis_client", lambda s: r)
    cs = walk(MIDNIGHT_MS, 30)
    r.zadd(K.candles("btc", "1s"), {CANDLE.encode(c): c.open_ms for c in cs})
    forming = candle(MIDNIGHT_MS + 30_000, closed=False)
    r.zadd(K.candles("btc", "1s"), {CANDLE.encode(forming): forming.open_ms, b"[not a candle": 1})
    code, out, err = run(capsys, "history", "import", "--json")
    assert code == 0, err
    by = {o["asset"]: o for o in json.loads(out)}
    assert (by["btc"]["added"], by["btc"]["refused"], by["eth"]["added"]) == (30, 1, 0)
    assert "candles:btc:1s member" in err
    assert history.load_candles(env, "btc", MIDNIGHT_MS, MIDNIGHT_MS + 60_000) == cs
    code, out, _ = run(capsys, "history", "list")
    assert code == 0 and "btc" in out and "2026-12-01" in out and "00:00:29" in out


def test_cli_fetch_from_the_sim_and_bad_times(env, capsys, monkeypatch):
    sim = BinanceSim(PriceModel(3))  # the wall clock: serves any second already past
    start_s = MIDNIGHT_MS // 1000
    with ThreadServer(create_app(sim)) as url:
        monkeypatch.setenv("BATON_BINANCE_REST_URL", url)
        code, out, err = run(
            capsys,
            "history",
            "fetch",
            "--asset",
            "sol",
            "--from",
            "2026-12-01T00:00:00Z",
            "--to",
            str(start_s + 90),
            "--json",
        )
        assert code == 0, err
        [o] = json.loads(out)
        assert (o["asset"], o["candles"], o["added"], o["missing"], o["days"]) == (
            "sol",
            90,
            90,
            0,
            ["2026-12-01"],
        )
        assert len(history.load_candles(env, "sol", MIDNIGHT_MS, MIDNIGHT_MS + 90_000)) == 90
        # Without --json: a table, and each day as it is stored on stderr.
        code, out, err = run(
            capsys, "history", "fetch", "--asset", "eth", "--from", str(start_s - 5), "--to", str(start_s + 5)
        )
        assert code == 0 and "eth 2026-11-30: 5 candles" in err and "eth 2026-12-01: 5 candles" in err
        assert "eth" in out and "2026-11-30, 2026-12-01" in out
    monkeypatch.setenv("BATON_BINANCE_REST_URL", f"http://127.0.0.1:{free_port()}")
    code, _, err = run(capsys, "history", "fetch", "--asset", "btc", "--from", "100", "--to", "200")
    assert code == 1 and "cannot connect" in err and "make run" in err
    code, _, err = run(capsys, "history", "fetch", "--from", "yesterday", "--to", "1")
    assert code == 2 and "not a time" in err
    code, _, err = run(capsys, "history", "fetch", "--from", "100", "--to", "50")
    assert code == 2 and "must be after" in err
