"""The rules of a strategy's answers and declarations, and the dry evaluation that applies them
(kernel/strategy_check.py): the real snipe passes it on the sample inputs, which reach both of
its branches; a failure names the input and keeps its cause; the samples are version 2 inputs
and a strategy that exits is dry-run on positions."""

from __future__ import annotations

from types import ModuleType

import msgspec
import pytest

from baton.errors import StrategyCheckError
from kernel.strategy_api import GTD_MIN_AHEAD_MS, Buy, Decision, Exit, Pass, SlotInput
from kernel.strategy_check import decision_problem, declaration_problems, dry_evaluate, sample_inputs
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


def _module(evaluate, **declared) -> ModuleType:
    module = ModuleType("inline")
    module.evaluate = evaluate  # type: ignore[attr-defined]
    for k, v in declared.items():
        setattr(module, k, v)
    return module


def test_the_samples_are_version_2_inputs_with_bars_books_and_positions():
    inputs = sample_inputs(NOW)
    assert all(i.api == 2 and i.open_ref_price == i.open_price for i in inputs)
    for i in inputs:
        assert i.bars["1m"] and all(b.open_ms <= i.now_ms for bars in i.bars.values() for b in bars)
        assert i.bars["1s"][-1].close == i.last_price and i.bars["1m"][-1].close == i.last_price
        assert [b.close for b in i.bars["1s"][-60:]] == list(i.closes)
        assert all(b.open_ms % 60_000 == 0 for b in i.bars["1m"])
        assert (i.up_book is None) == (i.up_ask is None)
        if i.up_book is not None:
            assert i.up_book.best_ask == i.up_ask and len(i.up_book.bids) == len(i.up_book.asks) == 3
    held = [i for i in inputs if i.position is not None]
    assert len(held) >= 3 and all(i.entered for i in held)
    assert any(i.position.exit_pending for i in held) and any(
        i.entered and i.position is None for i in inputs
    )
    assert {i.position.side for i in held} == {"up", "down"}
    assert any(i.exposure_room_usd == 0 for i in inputs)


def test_an_exits_strategy_is_dry_run_on_positions_and_others_are_not():
    seen: list[SlotInput] = []

    def evaluate(inp: SlotInput):
        seen.append(inp)
        if inp.position is not None and not inp.position.exit_pending:
            bid = (inp.up_book if inp.position.side == "up" else inp.down_book).best_bid  # type: ignore[union-attr]
            return Exit(limit_price=bid, shares=inp.position.shares, reason="take it")
        return Pass(reason="waiting")

    dry_evaluate(_module(evaluate, API=2, EXITS=True, CANDLES={"1m": 5, "15s": 8}), sample_inputs(NOW))
    assert any(i.position is not None for i in seen)
    assert all(
        set(i.bars) == {"1m", "15s"} and len(i.bars["1m"]) == 5 and len(i.bars["15s"]) == 8 for i in seen
    )
    seen.clear()
    dry_evaluate(_module(evaluate), sample_inputs(NOW))  # no EXITS: never given a position
    assert seen and all(i.position is None and not i.entered and i.bars == {} for i in seen)


def _inp(**kw) -> SlotInput:
    base = next(i for i in sample_inputs(NOW) if i.position is not None)
    return msgspec.structs.replace(base, **kw)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, ""),
        (Pass(reason="flat"), ""),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r"), ""),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", p_up=float("nan")), "p_up nan"),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", p_up=1.2), "p_up 1.2"),
        (Buy(side="up", limit_price=1.0, stake_usd=5.0, reason="r"), "limit_price 1.0 is not strictly"),
        (Buy(side="up", limit_price=0.5, stake_usd=-1.0, reason="r"), "stake_usd -1.0"),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", order_type="IOC"), "order_type 'IOC'"),  # type: ignore[arg-type]
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", expires_ms=5), "for GTD orders only"),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", order_type="GTC"), ""),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", order_type="GTD"), "less than 61000 ms"),
        (Buy(side="up", limit_price=0.5, stake_usd=5.0, reason=3), "reason 3"),  # type: ignore[arg-type]
        (Exit(limit_price=0.7, reason="r"), ""),
        (Exit(limit_price=0.7, reason="r", shares=9.09), ""),
        (Exit(limit_price=0.7, reason="r", shares=9.1), "more than the 9.09 held"),
        (Exit(limit_price=0.7, reason="r", shares=-1.0), "shares -1.0"),
        (Exit(limit_price=0.0, reason="r"), "limit_price 0.0"),
        (Exit(limit_price=0.7, reason="r", order_type="FOK"), ""),
        ({"side": "up"}, "expected None or a kernel.strategy_api Buy, Exit or Pass"),
    ],
)
def test_the_rules_of_an_answer(answer, why):
    got = decision_problem(answer, _inp())
    assert (why in got and got) if why else got == ""


def test_gtd_expiry_must_be_a_minute_ahead_and_within_the_window():
    inp = _inp()
    ok_at = inp.now_ms + GTD_MIN_AHEAD_MS
    for at, why in (
        (ok_at, ""),
        (ok_at - 1, "less than 61000 ms"),
        (inp.window_end_ms, ""),
        (inp.window_end_ms + 1, "after the window's end"),
    ):
        for answer in (
            Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r", order_type="GTD", expires_ms=at),
            Exit(limit_price=0.7, reason="r", order_type="GTD", expires_ms=at),
        ):
            got = decision_problem(answer, inp)
            assert (why in got) if why else got == "", (at, got)
    assert "without a position" in decision_problem(Exit(limit_price=0.7, reason="r"), _inp(position=None))
    # The tick sells what is held of an Exit asking more (kernel/decide.py): not refused there.
    assert decision_problem(Exit(limit_price=0.7, reason="r", shares=1e6), inp, sell_at_most_held=True) == ""


def test_the_declarations_are_checked_and_named():
    assert declaration_problems(snipe) == []

    def problems(**declared) -> str:
        return "; ".join(declaration_problems(_module(lambda inp: None, **declared), max_lookback_s=900))

    assert problems(API=2, EXITS=True, CANDLES={"15m": 1, "1s": 900}) == ""
    assert "API = 3" in problems(API=3) and "API = True" in problems(API=True)
    assert "EXITS = True needs API = 2" in problems(EXITS=True)
    assert "EXITS = 1 is not True or False" in problems(API=2, EXITS=1)
    assert "unknown interval '1h'" in problems(CANDLES={"1h": 2})
    assert "CANDLES['1m'] = 16 bars is 960 s of look-back, more than the 900 s" in problems(
        CANDLES={"1m": 16}
    )
    assert "CANDLES['5s'] = 0" in problems(CANDLES={"5s": 0}) and "not a mapping" in problems(CANDLES=[60])
    assert "DEFAULTS['x'] has no PARAM_BOUNDS" in problems(DEFAULTS={"x": 1.0})
    assert "PARAM_BOUNDS['y'] has no DEFAULTS" in problems(DEFAULTS={}, PARAM_BOUNDS={"y": (0, 1)})
    assert "DEFAULTS['x'] = 2.0 is outside" in problems(DEFAULTS={"x": 2.0}, PARAM_BOUNDS={"x": (0.0, 1.0)})
    assert "PARAM_BOUNDS['x'] = (1.0, 0.0)" in problems(DEFAULTS={"x": 0.5}, PARAM_BOUNDS={"x": (1.0, 0.0)})
    assert "DEFAULTS['x'] = 'a'" in problems(DEFAULTS={"x": "a"}, PARAM_BOUNDS={"x": (0, 1)})
    declared = {"DEFAULTS": {"x": 0.5}, "PARAM_BOUNDS": {"x": (0.0, 1.0)}}
    assert "check_params refuses DEFAULTS: no" in problems(**declared, check_params=lambda p: "no")
    assert "check_params raised" in problems(**declared, check_params=lambda p: p["zz"])
    assert "returned None on DEFAULTS" in problems(**declared, check_params=lambda p: None)
    with pytest.raises(StrategyCheckError, match="unknown interval '1h'"):
        dry_evaluate(_module(lambda inp: None, CANDLES={"1h": 2}), sample_inputs(NOW))
    with pytest.raises(StrategyCheckError, match="more than the 600 s"):
        dry_evaluate(_module(lambda inp: None, CANDLES={"1m": 11}), sample_inputs(NOW), max_lookback_s=600)
