"""One settings object for every Baton program, read once from the environment.

Every value has an embedded default so that `make run` works on a fresh machine; every
port can be overridden so that two stacks run side by side (`make test` beside `make run`).
A bad value fails at start-up with the variable's name in the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_ASSETS = ("btc", "eth", "sol", "xrp", "doge", "bnb", "hype", "link")
DEFAULT_TIMEFRAMES = ("5m", "15m")
# The candle interval the feed keeps and the strategy reads. 1s candles let a window of any
# length (down to the 15s windows the tests use) find its exact open price.
CANDLE_INTERVAL = "1s"
# A well-known throwaway key (the first Hardhat/Anvil dev account). It signs paper orders for
# the local sim only; live mode (issue #4) refuses to start without a key of the user's own.
SIM_PRIVATE_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

_TIMEFRAME_RE = re.compile(r"^(\d+)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


class SettingsError(ValueError):
    """A setting has a value Baton cannot use; the message names the variable."""


def timeframe_seconds(tf: str) -> int:
    m = _TIMEFRAME_RE.match(tf)
    if not m or int(m.group(1)) <= 0:
        raise SettingsError(f"bad timeframe {tf!r}: expected a number and a unit s|m|h, e.g. 15s, 5m")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    home: str
    prefix: str
    redis_url: str
    redis_port: int
    embedded_redis: bool
    tick_ms: int
    lease_ms: int
    assets: tuple[str, ...]
    timeframes: tuple[str, ...]
    binance_port: int
    clob_port: int
    binance_ws_url: str
    binance_rest_url: str
    clob_url: str
    gamma_url: str
    sim_seed: int
    sim_vol_scale: float
    stake_usd: float
    snipe_edge: float
    snipe_entry_s: int
    max_stake_usd: float
    max_exposure_usd: float
    daily_loss_limit_usd: float
    paper_cash_usd: float
    stale_after_ms: int
    candle_retention_s: int
    release: str
    chain_id: int

    @property
    def var_dir(self) -> Path:
        return Path(self.home) / "var"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    def slot_ids(self) -> list[str]:
        return [f"{a}-{tf}" for a in self.assets for tf in self.timeframes]


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value.strip() if value.strip() else default


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    items = tuple(x.strip().lower() for x in raw.split(",") if x.strip())
    if not items:
        raise SettingsError(f"{name}={raw!r} holds no item")
    return items


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    assets = _list(env, "BATON_ASSETS", DEFAULT_ASSETS)
    for a in assets:
        if not re.fullmatch(r"[a-z0-9]{1,16}", a):
            raise SettingsError(f"BATON_ASSETS: bad asset {a!r} (letters and digits only)")
    timeframes = _list(env, "BATON_TIMEFRAMES", DEFAULT_TIMEFRAMES)
    for tf in timeframes:
        try:
            timeframe_seconds(tf)
        except SettingsError as e:
            raise SettingsError(f"BATON_TIMEFRAMES: {e}") from None
    redis_port = _int(env, "BATON_REDIS_PORT", 7379, 1)
    external = env.get("BATON_REDIS_URL", "").strip()
    redis_url = external or f"redis://127.0.0.1:{redis_port}/0"
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"BATON_REDIS_URL={redis_url!r} must start with redis://, rediss:// or unix://")
    tick_ms = _int(env, "BATON_TICK_MS", 5000, 100)
    binance_port = _int(env, "BATON_SIM_BINANCE_PORT", 7301, 1)
    clob_port = _int(env, "BATON_SIM_CLOB_PORT", 7302, 1)
    clob_url = _get(env, "BATON_CLOB_URL", f"http://127.0.0.1:{clob_port}").rstrip("/")
    prefix = _get(env, "BATON_PREFIX", "baton:")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+:", prefix):
        raise SettingsError(f"BATON_PREFIX={prefix!r} must be letters/digits/_.- ending with ':'")
    return Settings(
        home=str(Path(_get(env, "BATON_HOME", str(REPO_ROOT))).resolve()),
        prefix=prefix,
        redis_url=redis_url,
        redis_port=redis_port,
        embedded_redis=not external,
        tick_ms=tick_ms,
        # Three ticks: a worker that misses two renewals in a row has lost its lease.
        lease_ms=_int(env, "BATON_LEASE_MS", max(3 * tick_ms, 1500), 200),
        assets=assets,
        timeframes=timeframes,
        binance_port=binance_port,
        clob_port=clob_port,
        binance_ws_url=_get(env, "BATON_BINANCE_WS_URL", f"ws://127.0.0.1:{binance_port}").rstrip("/"),
        binance_rest_url=_get(env, "BATON_BINANCE_REST_URL", f"http://127.0.0.1:{binance_port}").rstrip("/"),
        clob_url=clob_url,
        # The sim serves the Gamma discovery API on its CLOB port.
        gamma_url=_get(env, "BATON_GAMMA_URL", clob_url).rstrip("/"),
        sim_seed=_int(env, "BATON_SIM_SEED", 42),
        sim_vol_scale=_float(env, "BATON_SIM_VOL_SCALE", 1.0, 0.0),
        stake_usd=_float(env, "BATON_STAKE_USD", 5.0, 0.01),
        snipe_edge=_float(env, "BATON_SNIPE_EDGE", 0.03),
        snipe_entry_s=_int(env, "BATON_SNIPE_ENTRY_S", 30, 1),
        max_stake_usd=_float(env, "BATON_MAX_STAKE_USD", 25.0, 0.01),
        max_exposure_usd=_float(env, "BATON_MAX_EXPOSURE_USD", 200.0, 0.0),
        daily_loss_limit_usd=_float(env, "BATON_DAILY_LOSS_LIMIT_USD", 100.0, 0.0),
        paper_cash_usd=_float(env, "BATON_PAPER_CASH_USD", 1000.0, 0.0),
        stale_after_ms=_int(env, "BATON_STALE_AFTER_MS", 10_000, 100),
        candle_retention_s=_int(env, "BATON_CANDLE_RETENTION_S", 3600, 60),
        release=_get(env, "BATON_RELEASE", "dev"),
        chain_id=_int(env, "BATON_CHAIN_ID", 137, 1),
    )


def private_key(env: Mapping[str, str] | None = None) -> str:
    """The signing key: kept out of Settings so that printing settings never shows it."""
    env = os.environ if env is None else env
    return env.get("BATON_PRIVATE_KEY", "").strip() or SIM_PRIVATE_KEY
