"""The default strategy, as the pure function it is."""

from __future__ import annotations

import ast
import inspect

import msgspec

from kernel.strategy_api import SlotInput
from worker.strategies import snipe

START = 1_700_000_100_000


def inp(now_s: float, last: float, up_ask=0.6, down_ask=0.5, **params) -> SlotInput:
    closes = (*(100.0 + (0.01 if i % 2 else -0.01) for i in range(30)), last)
    return SlotInput(
        slot_id="btc-5m",
        asset="btc",
        timeframe="5m",
        now_ms=START + int(now_s * 1000),
        window_start_ms=START,
        window_end_ms=START + 300_000,
        open_price=100.0,
        last_price=last,
        closes=closes,
        stake_usd=5.0,
        params=params,
        up_ask=up_ask,
        down_ask=down_ask,
    )


def test_nothing_happens_before_the_last_seconds_of_a_window():
    assert snipe.evaluate(inp(100, 101.0)) is None


def test_a_clear_up_move_late_in_the_window_buys_up_at_the_ask():
    d = snipe.evaluate(inp(290, 100.5, up_ask=0.8, down_ask=0.25))
    assert d is not None and d.side == "up" and d.limit_price == 0.8 and d.stake_usd == 5.0
    assert d.p_up > 0.83


def test_a_down_move_buys_down():
    d = snipe.evaluate(inp(290, 99.5, up_ask=0.25, down_ask=0.8))
    assert d is not None and d.side == "down"


def test_no_entry_when_the_ask_already_prices_the_move():
    assert snipe.evaluate(inp(290, 100.5, up_ask=0.99, down_ask=0.02)) is None


def test_the_edge_is_a_parameter():
    assert snipe.evaluate(inp(290, 100.5, up_ask=0.8, edge=0.5)) is None


def test_short_windows_get_a_proportionally_short_entry_zone():
    i = SlotInput(
        slot_id="btc-15s",
        asset="btc",
        timeframe="15s",
        now_ms=START + 6_000,
        window_start_ms=START,
        window_end_ms=START + 15_000,
        open_price=100,
        last_price=101,
        closes=(100.0,) * 10,
        stake_usd=5,
        params={},
    )
    assert not snipe.needs_quotes(i)  # 9 s left of 15: outside the last third


def test_the_module_holds_no_mutable_state():
    tree = ast.parse(inspect.getsource(snipe))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            assert not isinstance(value, ast.List | ast.Dict | ast.Set), ast.dump(node)


def test_the_kernel_is_told_when_the_entry_zone_opens():
    """quotes_from_ms never says later than a time needs_quotes wants quotes (the kernel would
    miss entries), and not much earlier either (it would wake slots for nothing)."""
    for length_ms, params in (
        (300_000, {}),
        (300_000, {"entry_s": 12.5}),
        (15_000, {}),
        (900_000, {"entry_s": 1}),
    ):
        end = START + length_ms
        at = snipe.quotes_from_ms(START, end, params)
        assert isinstance(at, int)
        base = msgspec.structs.replace(inp(0, 100.0), window_end_ms=end, params=params)
        wanted = [
            t for t in range(START, end, 100) if snipe.needs_quotes(msgspec.structs.replace(base, now_ms=t))
        ]
        assert wanted and at <= wanted[0] < at + 100, (length_ms, params, at, wanted[0])


def test_volatility_is_the_sample_deviation_of_log_returns():
    import itertools
    import math
    import statistics

    closes = (100.0, 100.5, 99.8, 101.2, 100.9, 101.0, 100.1)
    rets = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    assert math.isclose(snipe.volatility_per_s(closes, 0.0), statistics.stdev(rets), rel_tol=1e-9)
    assert snipe.volatility_per_s((100.0,) * 10, 1e-5) == 1e-5  # flat: the floor
    assert snipe.volatility_per_s((100.0, 101.0), 1e-5) == 1e-5  # one return: the floor


def test_volatility_matches_the_two_pass_deviation_on_minute_long_walks_and_trends():
    """One pass for the sum, one for the squares: on a minute of 1 s closes (a random walk,
    and one that drifts steadily, where the mean is large against the spread) the answer is
    the sample deviation to 1e-9, as statistics.stdev computes it."""
    import itertools
    import math
    import random
    import statistics

    rng = random.Random(5)
    walk, trend, p, q = [], [], 100.0, 100.0
    for _ in range(60):
        p *= math.exp(rng.gauss(0, 2e-4))
        q *= math.exp(5e-4 + rng.gauss(0, 1e-5))
        walk.append(p)
        trend.append(q)
    for closes in (walk, trend):
        rets = [math.log(b / a) for a, b in itertools.pairwise(closes)]
        got = snipe.volatility_per_s(tuple(closes), 0.0)
        assert math.isclose(got, statistics.stdev(rets), rel_tol=1e-9), (got, statistics.stdev(rets))


def test_parameters_given_per_slot_override_the_defaults_in_evaluate():
    late = inp(290, 100.5, up_ask=0.8, down_ask=0.25)
    assert snipe.evaluate(late) is not None
    assert snipe.evaluate(msgspec.structs.replace(late, params={"entry_s": 5.0})) is None  # 10 s left
    assert snipe.evaluate(msgspec.structs.replace(late, params={"max_price": 0.7})) is None
    assert snipe.evaluate(msgspec.structs.replace(late, params={"min_closes": 100.0})) is None
