"""The dry evaluation of a strategy module (kernel/strategy_check.py): the real snipe passes it
on the sample inputs, which reach both of its branches; a failure names the input and keeps
its cause."""

from __future__ import annotations

from types import ModuleType

import pytest

from baton.errors import StrategyCheckError
from kernel.strategy_api import Decision, SlotInput
from kernel.strategy_check import dry_evaluate, sample_inputs
from worker.strategies import snipe

NOW = 1_700_000_123_456


def test_the_real_snipe_passes_its_dry_evaluation_and_the_samples_reach_both_branches():
    dry_evaluate(snipe, sample_inputs())
    inputs = sample_inputs(NOW)
    decisions = [snipe.evaluate(i) for i in inputs]
    assert {d.side for d in decisions if d is not None} == {"up", "down"}
    assert None in decisions
    assert {snipe.needs_quotes(i) for i in inputs} == {True, False}
    assert {i.timeframe for i in inputs} == {"5m", "15m"}
    assert any(i.up_ask is None for i in inputs) and all(len(i.closes) >= 60 for i in inputs)
    assert all(i.window_start_ms <= i.now_ms < i.window_end_ms for i in inputs)


def test_dry_evaluate_names_the_input_and_keeps_the_cause():
    def evaluate(inp: SlotInput) -> Decision | None:
        if inp.asset == "xrp":
            raise KeyError("edge")
        return None

    module = ModuleType("inline")
    module.evaluate = evaluate  # type: ignore[attr-defined]
    with pytest.raises(StrategyCheckError, match=r"evaluate raised on input 3 \(xrp-5m") as info:
        dry_evaluate(module, sample_inputs(NOW))
    assert isinstance(info.value.__cause__, KeyError)
