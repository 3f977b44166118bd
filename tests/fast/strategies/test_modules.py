"""Every module in worker/strategies/ as the kernel will take it: its declarations hold
together, it keeps no mutable state, and it passes the check `baton reload` runs."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
from pathlib import Path

import pytest

import worker.strategies
from kernel.strategy_api import INTERVALS_S, MAX_LOOKBACK_S, BookSide, Exit, Holding, Pass, SlotInput
from kernel.strategy_check import dry_evaluate, sample_inputs

NAMES = sorted(
    p.stem for p in Path(next(iter(worker.strategies.__path__))).glob("*.py") if not p.name.startswith("_")
)


def test_both_shipped_strategies_are_found():
    assert {"snipe", "momentum"} <= set(NAMES)


@pytest.fixture(params=NAMES)
def module(request):
    return importlib.import_module(f"worker.strategies.{request.param}")


def test_the_declarations_hold_together(module):
    assert getattr(module, "API", 1) in (1, 2)
    assert isinstance(getattr(module, "EXITS", False), bool)
    for interval, bars in dict(getattr(module, "CANDLES", {})).items():
        assert interval in INTERVALS_S
        assert isinstance(bars, int) and 0 < bars * INTERVALS_S[interval] <= MAX_LOOKBACK_S
    defaults, bounds = dict(getattr(module, "DEFAULTS", {})), dict(getattr(module, "PARAM_BOUNDS", {}))
    assert set(defaults) == set(bounds)
    for name, value in defaults.items():
        lo, hi = bounds[name]
        assert math.isfinite(value) and lo <= value <= hi, name
    check = getattr(module, "check_params", None)
    if check is not None:
        assert check(defaults) == ""


def test_the_module_holds_no_mutable_state(module):
    """No list, dict or set at module level (MappingProxyType for tables), no global."""
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            assert not isinstance(node.value, ast.List | ast.Dict | ast.Set), ast.dump(node)
    assert not any(isinstance(n, ast.Global) for n in ast.walk(tree))


def test_it_passes_the_reload_check(module):
    dry_evaluate(module, sample_inputs())


def test_an_exits_strategy_answers_on_inputs_with_a_position(module):
    if not getattr(module, "EXITS", False):
        pytest.skip("holds to resolution")
    for inp in sample_inputs():
        held = SlotInput(
            **{
                **{f: getattr(inp, f) for f in inp.__struct_fields__},
                "api": 2,
                "entered": True,
                "up_book": BookSide(bids=((0.9, 50.0),), asks=((0.92, 50.0),)),
                "down_book": BookSide(bids=((0.05, 50.0),), asks=((0.07, 50.0),)),
                "position": Holding(side="up", shares=10.0, cost_usd=5.0, avg_price=0.5, opened_ms=0),
            }
        )
        answer = module.evaluate(held)
        assert answer is None or isinstance(answer, Exit | Pass)
        if isinstance(answer, Exit):
            assert 0 < answer.limit_price < 1 and answer.shares >= 0
