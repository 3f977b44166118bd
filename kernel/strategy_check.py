"""The dry evaluation of a strategy module: `dry_evaluate` calls it on sample inputs
(`sample_inputs`) and raises StrategyCheckError, naming the input, when it fails or answers
something the kernel cannot use. Readiness and hot reload (kernel/reload.py) both gate on it.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from baton.errors import StrategyCheckError
from kernel.clock import wall_ms
from kernel.strategy_api import Decision, SlotInput, remaining_s


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


def _decision_problem(out: object) -> str:
    """Why `out` is not an acceptable result of evaluate(), or "" when it is."""
    if out is None:
        return ""
    if not isinstance(out, Decision):
        return "expected None or a kernel.strategy_api.Decision"
    if out.side not in ("up", "down"):
        return f"side {out.side!r} is not 'up' or 'down'"
    # msgspec does not check field types on construction: a str price must be caught here.
    if not _number(out.limit_price) or not 0.0 < out.limit_price < 1.0:
        return f"limit_price {out.limit_price!r} is not strictly between 0 and 1"
    if not _number(out.stake_usd) or out.stake_usd <= 0:
        return f"stake_usd {out.stake_usd!r} is not a positive number"
    return ""


def dry_evaluate(module: ModuleType, inputs: list[SlotInput]) -> None:
    """Run a strategy on `inputs` the way the kernel would; raise StrategyCheckError on the
    first input where `needs_quotes` or `evaluate` raises or returns something unusable.

    `evaluate` is called on every input, even where `needs_quotes` says no: a pure function
    must cope with any input it can be given.
    """
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise StrategyCheckError("the module has no callable evaluate()")
    needs = getattr(module, "needs_quotes", None)
    if needs is not None and not callable(needs):
        raise StrategyCheckError("needs_quotes is not callable")
    wake = getattr(module, "quotes_from_ms", None)
    if wake is not None and not callable(wake):
        raise StrategyCheckError("quotes_from_ms is not callable")
    for i, inp in enumerate(inputs):
        where = f"input {i} ({inp.slot_id}, {remaining_s(inp):.1f}s left)"
        wants: object = True
        if needs is not None:
            try:
                wants = needs(inp)
            except Exception as e:
                raise StrategyCheckError(f"needs_quotes raised on {where}: {e!r}") from e
            if not _is_boolish(wants):
                raise StrategyCheckError(f"needs_quotes returned {wants!r} on {where}, not a bool")
        if wake is not None:
            _check_wake(wake, inp, bool(wants), where)
        try:
            out = evaluate(inp)
        except Exception as e:
            raise StrategyCheckError(f"evaluate raised on {where}: {e!r}") from e
        problem = _decision_problem(out)
        if problem:
            raise StrategyCheckError(f"evaluate returned {out!r:.200} on {where}: {problem}")


def _path(first: float, last: float, n: int = 60) -> tuple[float, ...]:
    """n one-second closes from `first` to `last`: a steady drift with a ±0.01% zig-zag."""
    out = [first * (last / first) ** (i / (n - 1)) * (1 + 1e-4 * (-1) ** i) for i in range(n)]
    out[0], out[-1] = first, last
    return tuple(out)


def sample_inputs(now_ms: int | None = None) -> list[SlotInput]:
    """Synthetic but realistic slot inputs for dry evaluations: 5m and 15m windows (those of
    `now_ms`), early in the window, in its last seconds and in its last half second; rising,
    falling and flat price paths of 60 closes; asks present and absent. A typical late-window
    strategy both trades (up on the rise, down on the fall) and passes on them."""
    now = wall_ms() if now_ms is None else now_ms

    def one(
        asset: str,
        tf_min: int,
        at_s: float,
        open_: float,
        first: float,
        last: float,
        asks: tuple[float | None, float | None],
    ) -> SlotInput:
        tf_ms = tf_min * 60_000
        start = now - now % tf_ms
        return SlotInput(
            slot_id=f"{asset}-{tf_min}m",
            asset=asset,
            timeframe=f"{tf_min}m",
            now_ms=start + int(at_s * 1000),
            window_start_ms=start,
            window_end_ms=start + tf_ms,
            open_price=open_,
            last_price=last,
            closes=_path(first, last),
            stake_usd=5.0,
            params={},
            up_ask=asks[0],
            down_ask=asks[1],
        )

    return [
        one("btc", 5, 30, 64_000.0, 63_990.0, 64_050.0, (0.55, 0.47)),  # early, rising
        one("btc", 5, 290, 64_000.0, 64_030.0, 64_130.0, (0.82, 0.20)),  # last 10 s, risen
        one("btc", 5, 299.6, 64_000.0, 64_030.0, 64_130.0, (0.97, 0.04)),  # last half second
        one("xrp", 5, 285, 0.52, 0.52, 0.52, (0.50, 0.51)),  # last seconds, flat
        one("eth", 15, 120, 3_400.0, 3_402.0, 3_396.0, (0.45, 0.57)),  # early, falling
        one("eth", 15, 894, 3_400.0, 3_396.0, 3_390.0, (0.08, 0.90)),  # last 6 s, fallen
        one("sol", 15, 890, 150.0, 150.3, 150.1, (None, None)),  # last seconds, no book
    ]
