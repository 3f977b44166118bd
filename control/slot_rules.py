"""What a slot may be: the rules every door (CLI, API, control.json, dashboard) checks before a
slot is written, so that a bad one is refused with its reason instead of reaching the worker.

A slot's strategy is read from its file as a throwaway module (never left in sys.modules):
the caller's checkout for the CLI, which is where `baton strategy new` writes and from where
`baton reload` copies, so a strategy can be assigned before it is reloaded into the worker.
Its declarations (kernel/strategy_api.py: DEFAULTS, PARAM_BOUNDS, check_params) decide which
parameters a slot may set and to what.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from baton.errors import BadRequest, SettingsError
from baton.settings import REPO_ROOT, timeframe_seconds
from kernel.strategy_load import load_fresh

SLOT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ASSET = re.compile(r"[a-z0-9]{2,12}")
STRATEGY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# The windows the venue lists up/down markets for. A stack's own BATON_TIMEFRAMES are allowed
# too (the sim serves any; the tests use 15 s windows).
VENUE_TIMEFRAMES = ("5m", "15m", "1h", "4h")
STRATEGIES_DIR = Path("worker") / "strategies"
# Where strategies are read from: this checkout (tests point it elsewhere).
ROOT = REPO_ROOT


def check_id(slot_id: str) -> str:
    if not SLOT_ID.fullmatch(slot_id):
        raise BadRequest(
            f"bad slot id {slot_id!r}: lowercase letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, at most 64 characters (e.g. btc-15m, btc-15m.momentum)"
        )
    return slot_id


def check_asset(asset: str) -> str:
    if not ASSET.fullmatch(asset):
        raise BadRequest(f"bad asset {asset!r}: 2 to 12 lowercase letters and digits (e.g. btc)")
    return asset


def check_timeframe(timeframe: str, configured: tuple[str, ...] = ()) -> str:
    allowed = tuple(dict.fromkeys((*VENUE_TIMEFRAMES, *configured)))
    if timeframe not in allowed:
        raise BadRequest(f"bad timeframe {timeframe!r}: one of {', '.join(allowed)}")
    try:
        timeframe_seconds(timeframe)
    except SettingsError as e:
        raise BadRequest(str(e)) from None
    return timeframe


def check_stake(stake_usd: float, max_stake_usd: float) -> float:
    if not math.isfinite(stake_usd) or stake_usd <= 0:
        raise BadRequest(f"stake_usd must be a positive number, not {stake_usd}")
    if stake_usd > max_stake_usd:
        raise BadRequest(f"stake_usd {stake_usd} is above the risk limit BATON_MAX_STAKE_USD={max_stake_usd}")
    return float(stake_usd)


def strategy_names(root: Path | None = None) -> list[str]:
    """The strategies a slot may name: the modules of worker/strategies (not `_` helpers)."""
    d = (root or ROOT) / STRATEGIES_DIR
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_")) if d.is_dir() else []


class Declarations:
    """A strategy's parameter declarations, read from its module."""

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name = name
        try:
            self.defaults: dict[str, float] = dict(getattr(module, "DEFAULTS", {}) or {})
            self.bounds: dict[str, Any] = dict(getattr(module, "PARAM_BOUNDS", {}) or {})
            for pname, b in self.bounds.items():
                lo, hi = b
                if not (isinstance(lo, int | float) and isinstance(hi, int | float)):
                    raise TypeError(f"PARAM_BOUNDS[{pname!r}] is {b!r}, not (low, high) numbers")
        except (TypeError, ValueError) as e:
            # The checkout's module, not the caller's request, is wrong: say which part.
            raise BadRequest(f"strategy {name!r} declares its parameters wrongly: {e}") from None
        self._check = getattr(module, "check_params", None)
        self.exits = getattr(module, "EXITS", False) is True

    def check(self, params: Mapping[str, float]) -> dict[str, float]:
        """`params` as floats, or BadRequest naming the bad one: each a name the strategy
        declares (its DEFAULTS), finite, within its PARAM_BOUNDS, and the whole set (with the
        defaults for the rest) passing its check_params."""
        out: dict[str, float] = {}
        for name, value in params.items():
            if name not in self.defaults:
                known = ", ".join(sorted(self.defaults)) or "none"
                raise BadRequest(f"strategy {self.name!r} has no parameter {name!r}; it has {known}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadRequest(f"params.{name} must be a finite number, not {value!r}")
            lo, hi = self.bounds.get(name, (-math.inf, math.inf))
            if not lo <= value <= hi:
                raise BadRequest(f"params.{name}={value} is outside [{lo}, {hi}]")
            out[name] = float(value)
        if self._check is not None:
            try:
                problem = self._check({**self.defaults, **out})
            except Exception as e:  # a strategy's bug: the parameters cannot be vouched for
                raise BadRequest(f"params: strategy {self.name!r}'s check_params failed: {e!r}") from None
            if problem:
                raise BadRequest(f"params: {problem}")
        return out


def declarations(name: str, root: Path | None = None) -> Declarations:
    """Strategy `name`'s declarations, from worker/strategies/NAME.py under `root`, loaded as
    a throwaway module; BadRequest when there is no such strategy or it cannot be loaded."""
    if not STRATEGY_NAME.fullmatch(name):
        raise BadRequest(f"bad strategy name {name!r}: a module name of worker/strategies (e.g. snipe)")
    root = root or ROOT
    path = root / STRATEGIES_DIR / f"{name}.py"
    if not path.is_file():
        known = ", ".join(strategy_names(root)) or "none"
        raise BadRequest(f"no strategy {name!r} (no {STRATEGIES_DIR / path.name}); strategies are {known}")
    try:
        module = load_fresh(path, name=f"_baton_slot_check_{secrets.token_hex(4)}")
    except BaseException as e:  # SyntaxError, an ImportError, exit() in module code
        raise BadRequest(f"strategy {name!r} cannot be loaded: {e!r}") from None
    if not callable(getattr(module, "evaluate", None)):
        raise BadRequest(f"strategy {name!r} has no evaluate(inp) function")
    return Declarations(name, module)
