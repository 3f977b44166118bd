"""The backtest and replay benchmarks at tiny sizes, so that neither can rot: a quarter of an
hour of the synthetic day, one run each; the numbers are not judged here, what they are made
of is (the same report with and without the skipping of asleep ticks; every replayed decision
equal to the recorded one)."""

from __future__ import annotations

import itertools
import shutil

import pytest

from bench import all as bench_all
from bench import backtest as bench_backtest
from bench.synthetic_day import asset_candles


def test_the_synthetic_day_is_seeded_and_moves_like_a_market():
    a = asset_candles("btc", 1_796_083_200, 600, seed=1)
    assert a == asset_candles("btc", 1_796_083_200, 600, seed=1)
    assert a != asset_candles("btc", 1_796_083_200, 600, seed=2)
    assert [c.open_ms for c in a] == list(range(1_796_083_200_000, 1_796_083_800_000, 1000))
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in a)
    assert all(b.open == x.close for x, b in itertools.pairwise(a))
    assert 0.9 < a[-1].close / a[0].open < 1.1


def test_the_backtest_bench_runs_its_alternatives_and_checks_they_agree(tmp_path):
    args = bench_backtest.parse_args(
        [
            "--hours",
            "0.25",
            "--repeats",
            "1",
            "--only",
            "snipe-16,snipe-16-every",
            "--json-out",
            str(tmp_path / "b.json"),
        ]
    )
    result = bench_backtest.measure(args)
    assert result["checks"] == {"skip_idle_same_report": True}
    by = {r["key"]: r for r in result["rows"]}
    assert by["snipe-16"]["ticks"] == by["snipe-16-every"]["ticks"] == 180
    assert by["snipe-16"]["ticks_run"] < by["snipe-16-every"]["ticks_run"] == 180
    assert by["snipe-16"]["evaluations"] > 0
    assert "the same report: yes" in bench_backtest.render(result)
    assert "snipe-16-every " in bench_all.h_backtest(result)


def test_the_replay_bench_replays_a_stored_day_with_parity(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed: `make bootstrap` installs it")
    from bench import replay as bench_replay

    args = bench_replay.parse_args(
        ["--hours", "0.25", "--repeats", "1", "--only", "snipe", "--json-out", str(tmp_path / "r.json")]
    )
    result = bench_replay.measure(args)
    rows = result["rows"]
    assert {r["store"] for r in rows} == {"default", "files", "redis"}
    for r in rows:
        assert r["decisions"] == r["evaluations"] == r["equal"] > 0 and r["problems"] == 0, r
    assert "NOT parity" not in bench_all.h_replay(result) and "snipe" in bench_all.h_replay(result)
    files = next(r for r in rows if r["store"] == "files")
    assert files["file_bytes"] > 0 and files["redis_bytes"] == 0
