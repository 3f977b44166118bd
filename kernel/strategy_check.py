"""The rules a strategy's answers and declarations obey, in one place: `decision_problem` (the
kernel refuses an answer it names, and the dry evaluation fails on it), `declaration_problems`
(API, EXITS, CANDLES, DEFAULTS, PARAM_BOUNDS, check_params), and `dry_evaluate`, which checks
the declarations and then calls the strategy on sample inputs (kernel/strategy_samples.py),
raising StrategyCheckError naming the input when it fails or answers something the kernel
cannot use. Readiness and hot reload (kernel/reload.py, deploy/reload.py) both gate on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import msgspec

from baton.errors import StrategyCheckError
from kernel.strategy_api import (
    GTD_MIN_AHEAD_MS,
    INTERVALS_S,
    MAX_LOOKBACK_S,
    ORDER_TYPES,
    Buy,
    Exit,
    Pass,
    SlotInput,
    remaining_s,
)
from kernel.strategy_samples import sample_inputs

__all__ = ["decision_problem", "declaration_problems", "dry_evaluate", "sample_inputs"]

# Input versions this kernel can give a strategy (strategy_api.API_VERSION is the newest).
API_VERSIONS = (1, 2)
# Shares are sold in hundredths (the kernel rounds an Exit's size down to 0.01): a strategy
# that asks for what it holds, computed in floats, is not refused for the last digits.
SHARES_SLACK = 1e-6
# Order types without an expiry: a tuple, so that `in` compares (a junk unhashable value
# must not raise where the full check would return its problem).
_UNTIMED = tuple(t for t in ORDER_TYPES if t != "GTD")


def _is_boolish(v: object) -> bool:
    # bool and int (0/1), and numpy's bool_ (a 0-d scalar with a dtype). None is refused on
    # purpose: it is what a forgotten `return` gives, and it would silently mean "never".
    return isinstance(v, bool | int) or (hasattr(v, "dtype") and getattr(v, "shape", None) == ())


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_wake(wake: Any, inp: SlotInput, wants: bool, where: str) -> None:
    """quotes_from_ms for `inp`'s window must be an int, and not later than `inp`'s time when
    needs_quotes wants quotes then (a hint that late would hide entries)."""
    try:
        at = wake(inp.window_start_ms, inp.window_end_ms, dict(inp.params))
    except Exception as e:
        raise StrategyCheckError(f"quotes_from_ms raised on {where}: {e!r}") from e
    if not isinstance(at, int) or isinstance(at, bool):
        raise StrategyCheckError(f"quotes_from_ms returned {at!r} on {where}, not an int (ms)")
    if wants and at > inp.now_ms:
        raise StrategyCheckError(
            f"quotes_from_ms says {at} on {where}, but needs_quotes wants quotes at {inp.now_ms}"
        )


def _order_problem(order_type: object, expires_ms: object, inp: SlotInput) -> str:
    if order_type not in ORDER_TYPES:
        return f"order_type {order_type!r} is not one of {', '.join(ORDER_TYPES)}"
    if not isinstance(expires_ms, int) or isinstance(expires_ms, bool):
        return f"expires_ms {expires_ms!r} is not an int (ms)"
    if order_type != "GTD":
        if expires_ms != 0:
            return f"expires_ms {expires_ms} is for GTD orders only, not {order_type}"
        return ""
    earliest = inp.now_ms + GTD_MIN_AHEAD_MS
    if expires_ms < earliest:
        return (
            f"GTD expires_ms {expires_ms} is less than {GTD_MIN_AHEAD_MS} ms after now ({inp.now_ms}): "
            "the venue wants it at least that far ahead"
        )
    if expires_ms > inp.window_end_ms:
        return f"GTD expires_ms {expires_ms} is after the window's end ({inp.window_end_ms})"
    return ""


def _price_problem(price: object) -> str:
    # msgspec does not check field types on construction: a str price must be caught here.
    if not _number(price) or not 0.0 < price < 1.0:  # type: ignore[operator]
        return f"limit_price {price!r} is not strictly between 0 and 1"
    return ""


def decision_problem(out: object, inp: SlotInput, sell_at_most_held: bool = False) -> str:
    """Why `out`, evaluate()'s answer on `inp`, cannot be acted on ("" when it can): a Buy
    with a price in (0, 1), a positive stake, a finite p_up in [0, 1]; an Exit only with a
    position, of at most the shares held; an order type the venue knows, and a GTD expiry
    at least GTD_MIN_AHEAD_MS ahead and not after the window's end (no expiry otherwise); a
    Pass with a reason; or None. What depends on the account or the slot's legs (the risk
    limits, a second entry, the exit legs left) the kernel checks when it acts.
    `sell_at_most_held`: an Exit of more than is held is not refused but sells what is held
    (the tick's way, kernel/decide.py); the dry evaluation refuses it as the bug it is."""
    if out is None:
        return ""
    if type(out) is Buy:
        # The common answer, checked with a few comparisons (a tick judges a thousand): plain
        # floats in range (a NaN or an infinity fails them), a known side, no expiry. Any
        # other Buy takes the full check below, which names its problem.
        price, stake, p_up = out.limit_price, out.stake_usd, out.p_up
        if (
            type(price) is float
            and 0.0 < price < 1.0
            and type(stake) is float
            and 0.0 < stake < math.inf
            and type(p_up) is float
            and 0.0 <= p_up <= 1.0
            and (out.side == "up" or out.side == "down")
            and type(out.reason) is str
            and type(out.expires_ms) is int
            and out.expires_ms == 0
            and out.order_type in _UNTIMED
        ):
            return ""
    if isinstance(out, Pass):
        return "" if isinstance(out.reason, str) else f"reason {out.reason!r} is not a str"
    if isinstance(out, Buy):
        if out.side not in ("up", "down"):
            return f"side {out.side!r} is not 'up' or 'down'"
        if why := _price_problem(out.limit_price):
            return why
        if not _number(out.stake_usd) or out.stake_usd <= 0:
            return f"stake_usd {out.stake_usd!r} is not a positive number"
        if not _number(out.p_up) or not 0.0 <= out.p_up <= 1.0:
            return f"p_up {out.p_up!r} is not a number in [0, 1]"
    elif isinstance(out, Exit):
        held = inp.position
        if held is None:
            return "an Exit without a position to sell (inp.position is None)"
        if why := _price_problem(out.limit_price):
            return why
        if not _number(out.shares) or out.shares < 0:
            return f"shares {out.shares!r} is not a number >= 0 (0: all held)"
        if out.shares > held.shares + SHARES_SLACK and not sell_at_most_held:
            return f"shares {out.shares} is more than the {held.shares} held"
    else:
        return "expected None or a kernel.strategy_api Buy, Exit or Pass"
    if not isinstance(out.reason, str):
        return f"reason {out.reason!r} is not a str"
    return _order_problem(out.order_type, out.expires_ms, inp)


def declaration_problems(module: Any, max_lookback_s: int = MAX_LOOKBACK_S) -> list[str]:
    """What is wrong with a strategy module's declarations (kernel/strategy_api.py), each
    naming the declaration; [] when nothing is. `max_lookback_s` is the look-back the kernel
    can serve: MAX_LOOKBACK_S, or less when the feed keeps less (BATON_CANDLE_RETENTION_S)."""
    out: list[str] = []
    api = getattr(module, "API", 1)
    if api not in API_VERSIONS or not isinstance(api, int) or isinstance(api, bool):
        out.append(
            f"API = {api!r}: this kernel gives inputs of version {' or '.join(map(str, API_VERSIONS))}"
        )
    exits = getattr(module, "EXITS", False)
    if not isinstance(exits, bool):
        out.append(f"EXITS = {exits!r} is not True or False")
    elif exits and api == 1:
        out.append("EXITS = True needs API = 2 (a version 1 input has no position to exit)")
    out += _candles_problems(getattr(module, "CANDLES", {}), max_lookback_s)
    out += _params_problems(module)
    return out


def _candles_problems(candles: object, max_lookback_s: int) -> list[str]:
    if not isinstance(candles, Mapping):
        return [f"CANDLES = {candles!r:.80} is not a mapping of interval -> bars"]
    out: list[str] = []
    for name, n in candles.items():
        iv = INTERVALS_S.get(name) if isinstance(name, str) else None
        if iv is None:
            out.append(f"CANDLES: unknown interval {name!r} (known: {', '.join(INTERVALS_S)})")
        elif not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            out.append(f"CANDLES[{name!r}] = {n!r} is not a positive whole number of bars")
        elif iv * n > max_lookback_s:
            out.append(
                f"CANDLES[{name!r}] = {n} bars is {iv * n} s of look-back, more than the "
                f"{max_lookback_s} s the kernel keeps (MAX_LOOKBACK_S, BATON_CANDLE_RETENTION_S)"
            )
    return out


def _params_problems(module: Any) -> list[str]:
    defaults = getattr(module, "DEFAULTS", {})
    bounds = getattr(module, "PARAM_BOUNDS", {})
    out: list[str] = []
    if not isinstance(defaults, Mapping):
        return [f"DEFAULTS = {defaults!r:.80} is not a mapping of name -> number"]
    if not isinstance(bounds, Mapping):
        return [f"PARAM_BOUNDS = {bounds!r:.80} is not a mapping of name -> (low, high)"]
    for name, v in defaults.items():
        if not isinstance(name, str) or not _number(v):
            out.append(f"DEFAULTS[{name!r}] = {v!r} is not a finite number")
            continue
        b = bounds.get(name)
        if b is None:
            out.append(f"DEFAULTS[{name!r}] has no PARAM_BOUNDS: a slot could set it to anything")
        elif not (isinstance(b, tuple | list) and len(b) == 2 and all(map(_number, b)) and b[0] <= b[1]):
            out.append(f"PARAM_BOUNDS[{name!r}] = {b!r} is not (low, high) with low <= high")
        elif not b[0] <= v <= b[1]:
            out.append(f"DEFAULTS[{name!r}] = {v} is outside its PARAM_BOUNDS {tuple(b)}")
    out += [f"PARAM_BOUNDS[{n!r}] has no DEFAULTS value" for n in bounds if n not in defaults]
    check = getattr(module, "check_params", None)
    if check is not None and not out:
        if not callable(check):
            return ["check_params is not callable"]
        try:
            why = check(dict(defaults))
        except Exception as e:
            return [f"check_params raised on DEFAULTS: {e!r}"]
        if not isinstance(why, str):
            out.append(f"check_params returned {why!r} on DEFAULTS, not a str")
        elif why:
            out.append(f"check_params refuses DEFAULTS: {why}")
    return out


def for_module(inp: SlotInput, candles: Mapping[str, int]) -> SlotInput:
    """A sample input as the kernel would build it for a module declaring `candles`: only the
    declared intervals, only as many bars as declared."""
    bars = {iv: inp.bars.get(iv, ())[-n:] for iv, n in candles.items()}
    return inp if bars == inp.bars else msgspec.structs.replace(inp, bars=bars)


def dry_evaluate(module: ModuleType, inputs: list[SlotInput], max_lookback_s: int = MAX_LOOKBACK_S) -> None:
    """Check a strategy's declarations, then run it on `inputs` the way the kernel would;
    raise StrategyCheckError on the first problem: a declaration (all of them named), or the
    first input where `needs_quotes`, `quotes_from_ms` or `evaluate` raises or returns
    something unusable.

    Each input is given as the kernel would build it for this module (only the bars its
    CANDLES declares), and inputs holding a position or entered already only to a strategy
    that declares EXITS (the kernel evaluates no other slot then). `evaluate` is called on
    every input, even where `needs_quotes` says no: a pure function must cope with any input
    it can be given.
    """
    problems = declaration_problems(module, max_lookback_s)
    if problems:
        raise StrategyCheckError("; ".join(problems))
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise StrategyCheckError("the module has no callable evaluate()")
    needs = getattr(module, "needs_quotes", None)
    if needs is not None and not callable(needs):
        raise StrategyCheckError("needs_quotes is not callable")
    wake = getattr(module, "quotes_from_ms", None)
    if wake is not None and not callable(wake):
        raise StrategyCheckError("quotes_from_ms is not callable")
    candles = dict(getattr(module, "CANDLES", {}))
    exits = getattr(module, "EXITS", False)
    for i, raw in enumerate(inputs):
        if not exits and (raw.position is not None or raw.entered):
            continue
        inp = for_module(raw, candles)
        where = f"input {i} ({inp.slot_id}, {remaining_s(inp):.1f}s left)"
        wants: object = True
        if needs is not None:
            try:
                wants = needs(inp)
            except Exception as e:
                raise StrategyCheckError(f"needs_quotes raised on {where}: {e!r}") from e
            if not _is_boolish(wants):
                raise StrategyCheckError(f"needs_quotes returned {wants!r} on {where}, not a bool")
        # A slot holding a position wakes whatever quotes_from_ms says: no promise to check.
        if wake is not None and inp.position is None:
            _check_wake(wake, inp, bool(wants), where)
        try:
            out = evaluate(inp)
        except Exception as e:
            raise StrategyCheckError(f"evaluate raised on {where}: {e!r}") from e
        problem = decision_problem(out, inp)
        if problem:
            raise StrategyCheckError(f"evaluate returned {out!r:.200} on {where}: {problem}")
