"""snipe: in the last seconds of a window, buy the side whose chance beats its ask.

The chance that the window closes Up is estimated from the move since the window's open and
the recent per-second volatility (a driftless random walk: P(up) = Phi(ln(S/S0) / (sigma *
sqrt(tau)))). One fixed stake per slot-window; the kernel enforces the "at most one".
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from types import MappingProxyType

from kernel.strategy_api import Decision, SlotInput, remaining_s

# Written for version 1 of the input (the closes and the best asks), and holds to resolution.
API = 1
EXITS = False

# Read-only on purpose: strategy modules hold no mutable state.
DEFAULTS = MappingProxyType(
    {
        "edge": 0.03,  # required excess of the estimated chance over the ask
        "entry_s": 30.0,  # enter only in the last entry_s seconds of a window
        "min_price": 0.05,  # never buy a side cheaper than this (lottery tickets)
        "max_price": 0.95,  # nor dearer than this (no upside left)
        "vol_floor": 1e-5,  # per-second volatility floor, for flat data
        "min_closes": 5.0,  # candles needed to estimate volatility
    }
)
# What an operator may set them to (PATCH /slots/{id} is refused outside these).
PARAM_BOUNDS = MappingProxyType(
    {
        "edge": (0.0, 0.5),
        "entry_s": (1.0, 3600.0),
        "min_price": (0.01, 0.99),
        "max_price": (0.01, 0.99),
        "vol_floor": (0.0, 0.01),
        "min_closes": (2.0, 600.0),
    }
)


def check_params(params: dict[str, float]) -> str:
    """A problem with the parameters taken together ("" when none)."""
    if params["min_price"] >= params["max_price"]:
        return f"min_price {params['min_price']} must be below max_price {params['max_price']}"
    return ""


def param(inp: SlotInput, name: str) -> float:
    return float(inp.params.get(name, DEFAULTS[name]))


def _all_params(inp: SlotInput) -> dict[str, float]:
    # One merge per call instead of a lookup per parameter: the tick calls evaluate for
    # every slot in its entry zone, a thousand at once at the ends of windows.
    return {**DEFAULTS, **inp.params} if inp.params else DEFAULTS  # type: ignore[return-value]


def _zone_s(window_start_ms: int, window_end_ms: int, entry_s: float) -> float:
    # Short windows (tests use 15 s) get a zone of a third of the window at most.
    return min(entry_s, (window_end_ms - window_start_ms) / 3000.0)


def in_entry_zone(inp: SlotInput) -> bool:
    return _in_zone(inp, param(inp, "entry_s"))


def _in_zone(inp: SlotInput, entry_s: float) -> bool:
    left = remaining_s(inp)
    return 0.5 < left <= _zone_s(inp.window_start_ms, inp.window_end_ms, entry_s)


def quotes_from_ms(window_start_ms: int, window_end_ms: int, params: dict[str, float]) -> int:
    """When the entry zone opens (rounded down to the millisecond): the kernel does not ask
    before then."""
    entry_s = float(params.get("entry_s", DEFAULTS["entry_s"]))
    return window_end_ms - math.ceil(_zone_s(window_start_ms, window_end_ms, entry_s) * 1000)


# A pure function of its arguments, memoised: the slots of one asset share the same closes
# in a tick, so a thousand slots on 256 assets compute 256 volatilities, not a thousand.
@functools.lru_cache(maxsize=4096)
def volatility_per_s(closes: tuple[float, ...], floor: float) -> float:
    if closes and min(closes) > 0:
        # The usual case, in C loops: the log of each close over the one before.
        rets = list(map(math.log, map(operator.truediv, closes[1:], closes[:-1])))
    else:
        rets = [math.log(b / a) for a, b in itertools.pairwise(closes) if a > 0 and b > 0]
    n = len(rets)
    if n < 2:
        return floor
    # One pass for the sum and one for the squares (the deviations as a list of their own
    # were a third of the call: it runs once per asset and tick, 256 times at a burst). Per
    # second log returns are tiny and nearly centred, so the difference loses nothing that
    # the floor does not cover; rounding can make a flat series' variance a hair below 0.
    s = sum(rets)
    var = (sum(map(operator.mul, rets, rets)) - s * s / n) / (n - 1)
    return max(math.sqrt(var), floor) if var > 0 else floor


def chance_up(inp: SlotInput) -> float:
    return _chance_up(inp, param(inp, "vol_floor"))


def _chance_up(inp: SlotInput, vol_floor: float) -> float:
    sigma = volatility_per_s(inp.closes, vol_floor)
    tau = max(remaining_s(inp), 0.001)
    z = math.log(inp.last_price / inp.open_price) / (sigma * math.sqrt(tau))
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def needs_quotes(inp: SlotInput) -> bool:
    return in_entry_zone(inp) and len(inp.closes) >= param(inp, "min_closes")


def evaluate(inp: SlotInput) -> Decision | None:
    p = _all_params(inp)
    if not _in_zone(inp, float(p["entry_s"])) or len(inp.closes) < float(p["min_closes"]):
        return None
    if inp.open_price <= 0 or inp.last_price <= 0:
        return None
    p_up = _chance_up(inp, float(p["vol_floor"]))
    edge = float(p["edge"])
    lo, hi = float(p["min_price"]), float(p["max_price"])
    best: tuple[str, float, float] | None = None
    best_margin = edge
    for side, chance, ask in (("up", p_up, inp.up_ask), ("down", 1.0 - p_up, inp.down_ask)):
        if ask is None or not lo <= ask <= hi:
            continue
        if chance - ask >= best_margin:
            best_margin = chance - ask
            best = (side, chance, ask)
    if best is None:
        return None
    side, chance, ask = best
    return Decision(
        side=side,  # type: ignore[arg-type]
        limit_price=ask,
        stake_usd=inp.stake_usd,
        p_up=p_up,
        reason=f"chance {chance:.3f} beats ask {ask:.2f} by {chance - ask:.3f}",
    )
