"""Every benchmark at tiny sizes, so that none can rot: the tick-scale and Redis-cost
measurements run for real (a real redis-server on a free port, a few seconds), the venue-signing
one against a sim of its own, the stack-driven ones (failover, hot reload) have their journal
reading and their numbers checked on a fake journal, and `bench.all` its headlines on what the
runs wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest

from bench import all as bench_all
from bench import (
    entry_burst,
    failover,
    hot_reload,
    redis_commands,
    redis_cost,
    redis_memory,
    stack,
    tick_scale,
    venue_sign,
)
from bench.redis_server import RedisServer
from bench.wire import Wire
from venues.stub import ASK, NO_EDGE_ASK, StubVenue

TIMEFRAMES = ("2s", "4s")  # entry zones of 0.67 s and 1.33 s: entries within seconds
TICK_MS = 200
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.fixture(scope="module")
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed: `make bootstrap` installs it")
    with RedisServer(aof=True) as server:
        yield server


@pytest.fixture
def wire():
    w = Wire().install()
    yield w
    w.uninstall()


async def test_tick_scale_measures_entries_settlements_and_idle_ticks(redis_server, wire, tmp_path):
    res = await tick_scale.measure_size(
        8, redis_server.url, TIMEFRAMES, TICK_MS, seconds=4, feed_phase_ms=20, wire=wire, warmup=1
    )
    assert res["ticks"] == 4000 // TICK_MS and res["dry_run_slots"] == 8
    kinds = {x["kind"] for x in res["samples"]}
    assert {"idle", "entry"} <= kinds, kinds
    assert "failed" not in kinds, [x["failure"] for x in res["samples"] if x["failure"]]
    entries = [x for x in res["samples"] if x["kind"] == "entry"]
    assert all(x["orders"] > 0 and x["async_rt"] > 2 for x in entries)
    idle = [x for x in res["samples"] if x["kind"] == "idle"]
    assert all(x["async_rt"] >= 1 and x["duration_ms"] > 0 for x in idle)
    summary = tick_scale.summarise_size(res)
    text = tick_scale.render([summary], TICK_MS)
    assert "| 8 | 4 × 2 |" in text and "entry" in text
    out = {"summary": [summary], "target": {"slots": 1024, "p99_ms": 50.0}}
    assert "8 slots p99" in bench_all.h_tick_scale(out)


def test_the_venue_stand_in_spreads_entries_at_an_entry_rate_below_one():
    tokens = [str(10**20 + i) for i in range(2000)]
    always = StubVenue()
    assert {b.best_ask for b in always.books(tokens).values()} == {ASK}
    spread = StubVenue(entry_rate=0.2)
    second = 1_800_000_000
    asks = [spread._ask(t, second) for t in tokens]
    assert set(asks) == {ASK, NO_EDGE_ASK}
    # Per market (two tokens) an edge with probability 0.2: per token 1 - sqrt(0.8) = 0.106.
    cheap = asks.count(ASK) / len(asks)
    assert 0.08 < cheap < 0.14, cheap
    assert asks == [spread._ask(t, second) for t in tokens], "a rerun must see the same books"
    assert asks != [spread._ask(t, second + 1) for t in tokens], "the draw changes every second"
    # On a virtual clock (bench/entry_burst.py) the books follow its second, not the wall's.
    virtual = StubVenue(entry_rate=0.2, now_s=lambda: second)
    assert [b.best_ask for b in virtual.books(tokens).values()] == asks


async def test_redis_cost_counts_commands_and_memory(redis_server, wire):
    res = await redis_commands.commands_per_tick(
        8, redis_server.url, TIMEFRAMES, TICK_MS, cycle_ticks=24, wire=wire
    )
    assert res["ticks"] == 24 and res["traded_slot_windows"] > 0
    assert all(x["executed"] > 0 and x["round_trips"] > 0 for x in res["samples"])
    summary = redis_commands.summarise_commands(res)
    assert summary["by_kind"]["idle"]["n"] and summary["by_kind"]["entry"]["n"]
    assert res["memory"]["slots"]["keys"] == 1 and res["memory"]["candle windows"]["keys"] == 4
    per_unit = redis_memory.memory_per_unit(res, 4, [2, 4])
    assert per_unit["intents"]["per_unit"] > 0
    candles = await redis_memory.candle_bytes(redis_server.url, (60,))
    assert candles[0]["candles"] == 60 and candles[0]["bytes_per_candle"] > candles[0]["member_bytes"]
    day = redis_memory.per_day(per_unit, 16, 8, (300, 900), 5000, 3600, candles[0]["bytes_per_candle"])
    assert day["unbounded_bytes_per_day"] > 0
    out = {
        "commands": [summary],
        "memory": [
            {
                "slots": 8,
                "assets": 4,
                "traded_slot_windows": res["traded_slot_windows"],
                "journal_entries": res["journal_entries"],
                "used_memory": res["used_memory"],
                "used_memory_empty": res["used_memory_empty"],
                "per_unit": per_unit,
            }
        ],
        "candles": candles,
        "candle_day": {
            "bytes_per_candle": candles[0]["bytes_per_candle"],
            "retention_s": 3600,
            "asset_day_untrimmed": 1.0,
            "asset_retained": 1.0,
            "retained_default_assets": 1.0,
        },
        "per_day": [day],
    }
    assert "candles in one window" in redis_cost.render(out)
    assert "per candle" in bench_all.h_redis_cost(out)


# --- the stack benchmarks' reading of the journal, on a fake one ---------------------------------


def _journal(r, ticks, epoch_of, tick_ms=1000):
    for t in ticks:
        r.xadd(
            "baton:journal:ticks",
            {
                "tick": t,
                "epoch": epoch_of(t),
                "color": "blue",
                "release": "r",
                "started_ms": t * tick_ms + 1,
                "duration_ms": 3,
                "missed_before": 1 if t == 105 else 0,
            },
        )


def test_hot_reload_reads_gaps_and_the_swap_from_the_journal():
    st = SimpleNamespace(redis=fakeredis.FakeRedis(decode_responses=True))
    _journal(st.redis, [100, 101, 102, 103, 105, 106, 107], lambda t: 1)
    first, missed, missed_before, prev_end = hot_reload.around(st, 101, 102_500, timeout_s=5)
    assert int(first["tick"]) == 103 and missed == 1 and missed_before == 1 and prev_end == 102_004
    samples = [
        hot_reload.Sample("edit", 0, 10, "ok", 500, 1500, 4, 0, 0, 0.0),
        hot_reload.Sample("api", 0, 10, "ok", 400, 1400, 3, 0, 0, 0.4),
        hot_reload.Sample("blue-green", 0, 10, "deployed", 3000, 3000, None, 0, 0, 3.2),
    ]
    summary = hot_reload.summarise(samples, {})
    assert summary["edit"]["swap_ms_median"] == 4 and summary["blue-green"]["swap_ms_median"] is None
    assert "sooner than a deploy" in hot_reload.render(summary, 1000)
    assert hot_reload.plan(2, 1) == ["edit", "api", "blue-green", "edit", "api"]
    assert "missed 0" in bench_all.h_hot_reload({"summary": summary})


def test_failover_numbers_and_plan():
    st = SimpleNamespace(redis=fakeredis.FakeRedis(decode_responses=True))
    _journal(st.redis, [100, 101, 103, 104], lambda t: 1 if t < 103 else 2)
    assert stack.entry_fields(st, 103)["epoch"] == "2"
    entries = stack.new_holder_entries(st, 1)
    assert entries is not None and min(e.tick for e in entries if e.epoch == 2) == 103
    assert failover.plan(3, 1) == ["sigkill", "blue-green", "sigkill", "sigkill"]
    samples = [
        failover.Sample("sigkill", 0, 10, "blue", 1, 2, 101, 103, 1, 1, 1000, 1900, 1600, 0.0),
        failover.Sample("sigkill", 1, 900, "blue", 2, 3, 110, 112, 1, 1, 1000, 2100, 1700, 0.0),
        failover.Sample("blue-green", 0, 10, "blue", 3, 4, 120, 121, 0, 0, 0, 2800, None, 3.1),
    ]
    summary = failover.summarise(samples, {})
    assert summary["sigkill"]["missed_mean"] == 1 and summary["sigkill"]["runtime_counted_agrees"]
    assert summary["sigkill"]["to_ready_ms_median"] == 1650
    assert "per kill against none per deploy" in failover.render(summary, 1000)
    assert "SIGKILL: 1.00 missed" in bench_all.h_failover({"summary": summary})


@pytest.mark.parametrize("name", ["deploy_gap", "feed_ingest", "halt_latency", "backtest", "replay"])
def test_the_summary_reads_the_existing_benchmarks_results(name):
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not there")
    line = bench_all.HEADLINES[name](json.loads(path.read_text()))
    assert line and "(no result" not in line


def test_a_burst_is_the_first_second_where_exactly_k_timeframes_are_in_their_entry_zone():
    tfs = ("15s", "30s", "1m", "2m")
    assert [entry_burst.burst_offset(tfs, k) for k in (1, 2, 3, 4)] == [10, 25, 55, 115]
    with pytest.raises(ValueError, match="each must divide the next"):
        entry_burst.burst_offset(("15s", "20s"), 2)
    with pytest.raises(ValueError, match="at least 15 s"):
        entry_burst.burst_offset(("6s", "12s"), 1)
    with pytest.raises(ValueError, match="between 1 and 4"):
        entry_burst.burst_offset(tfs, 0)


async def test_entry_burst_times_the_same_burst_cycle_after_cycle(redis_server, wire):
    # 8 slots: 2 assets x 4 timeframes; 2 timeframes in zone = 4 slots, every one enters.
    res = await entry_burst.measure_burst(
        redis_server.url, 8, tick_scale.TIMEFRAMES, 2, cycles=2, entry_rate=1.0, wire=wire, warmup=0
    )
    assert res["burst_slots"] == 4 and res["timeframes_in_zone"] == ["15s", "30s"]
    assert len(res["samples"]) == 2
    for x in res["samples"]:
        assert x["orders"] == 4 and x["evaluated"] == 4 and x["errors"] == 0, x
        assert x["wall_ms"] > 0 and x["worker_cpu_ms"] > 0 and x["redis_cpu_ms"] >= 0
        assert x["round_trips"] >= 3  # snapshot, commit, outcomes (and the journal)
    s = entry_burst.summarise(res)
    assert s["orders"]["median"] == 4
    text = entry_burst.render([s])
    assert "| 8 | 4 (15s, 30s) | 1 | 4 |" in text and text.splitlines()[2].endswith("| 0 |")
    assert "4 of 8 slots in zone" in bench_all.h_entry_burst({"summary": [s]})


def test_venue_sign_signs_and_posts_with_both_signers_against_a_sim_process():
    args = venue_sign.parse_args(["--orders", "3", "--burst", "4", "--rounds", "1"])
    res = venue_sign.run(args)
    rows = {r["backend"]: r for r in res["summary"]}
    assert set(rows) == set(venue_sign.BACKENDS)
    for r in rows.values():
        # Each order checked whole by the sim and killed unfilled (FOK below the book).
        assert r["orders"] == 3 and r["burst_errors"] == 0 and r["post_statuses"] == ["rejected"]
        assert r["sign_ms_median"] > 0 and r["burst_ms_median"] > 0
    assert "ECC_BACKEND_CLASS" not in __import__("os").environ
    assert "faster with coincurve" in bench_all.h_venue_sign(res)
    assert "| native (pure Python) | 3 |" in venue_sign.render(res["summary"], 4)


def test_reads_loads_a_history_that_the_counts_add_up_to_and_renders_its_table(redis_server):
    import redis as redis_py

    from bench import reads
    from state.counts import counts_from

    r = redis_py.Redis.from_url(redis_server.url, decode_responses=True)
    r.flushall()
    slots = [("a0000-15s", "a0000"), ("a0000-30s", "a0000")]
    n = reads.load_history(redis_server.url, slots, 1_800_000_000, 0, 0.5)
    # 12 h of 5-minute windows and of 15-minute ones, less the last hour: all ended by then.
    assert n == 131 + 43
    reads.count_once(redis_server.url)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(reads.KEYS.counts())
    pipe.hlen(reads.KEYS.intents())
    pipe.hlen(reads.KEYS.positions())
    pipe.hlen(reads.KEYS.positions_open())
    counts = counts_from(pipe.execute())
    assert counts is not None and counts.positions_settled == n and counts.intents["filled"] == n
    assert int(r.hget(reads.KEYS.ledger_totals(), "entries")) == r.xlen(reads.KEYS.ledger()) == 2 * n
    r.flushall()
    r.close()

    sample = {
        "tick": 1,
        "kind": "idle",
        "duration_ms": 2.0,
        "jitter_ms": 1.0,
        "journal_duration_ms": 2,
        "journal_jitter_ms": 1,
        "missed_before": 0,
        "evaluated": 0,
        "orders": 0,
        "settled": 0,
        "errors": 0,
        "failure": "",
        "async_rt": 2,
        "sync_rt": 0,
        "async_cmds": 3,
        "sync_cmds": 0,
    }
    seen = {
        "seconds": 10,
        "scrapes": 500,
        "scrape_errors": 0,
        "scrape_ms": {"n": 1, "median": 3.0, "p99": 9.0},
        "pnl_fetches": 2,
        "pnl_ms": {"n": 2, "median": 5.0, "p99": 6.0},
        "status_writes": 10,
        "status_bytes": 100,
        "api_cpu_s": 1.0,
        "failed": [],
    }
    seg = {"samples": [sample], "skipped_boundaries": 0, "redis_cpu_share": 0.1, "redis_used_memory": 1}
    phase = {
        "history_days": 7,
        "history": {"positions": n, "used_memory": 2**30},
        "trades_written": n,
        "load_s": 1.0,
        "count_once": {"wall_s": 0.1, "calls": 3, "longest_call_ms": 2.0},
        "conditions": {
            "alone": reads.summarise([{**seg, "readers": None}]),
            "new readers": reads.summarise([{**seg, "readers": seen}]),
        },
    }
    table = reads.render({"phases": [phase]})
    assert "| 7 d (174 positions, 1.0 GiB) | new readers | 1 | 2.00 | 2.0 | 1.00× |" in table, table
    assert "50.0 | 3.0 | 9.0 | 5.0 | 1.00 | 10 % |" in table
    assert "tick alone p99 2.0 ms, new readers 2.0 ms" in bench_all.h_reads(
        {"phases": [phase], "machine": {"slots": 2}}
    )


def test_input_log_measures_bytes_memory_and_files(redis_server):
    from bench import input_log

    row = input_log.measure(16, 20, False, redis_server.url)
    assert row["slots"] == 16 and row["batch_bytes"] > 1000
    assert row["redis_bytes_per_entry"] > row["batch_bytes"] > row["redis_bytes_per_empty_entry"] > 0
    assert 0 < row["redis_mb_6h_snipe"] < row["redis_mb_6h_every_tick"]
    assert "| 16 | snipe (API 1) |" in input_log.render([row])
