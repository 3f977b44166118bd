"""`baton backtest`: what a backtest runs on (the strategy module, the slots, the candle history,
the books the input log recorded, the stack's limits, fees and fill model), the run
(kernel/backtest/engine.py), and where its report and picture go
(var/backtests/<id>/report.json and equity.html; <id> is a hash of everything it ran on, so
that the same backtest writes the same place and prints the same output).

The slots, by default: the slots of the stack's slots hash that run the strategy (when Redis
answers and there are some), else one per configured asset x timeframe (BATON_ASSETS x
BATON_TIMEFRAMES) at the settings' stake. `--slots` names them instead: a comma-separated list
of `asset-timeframe` (btc-5m) or `asset:timeframe[:stake]` (btc:5m:2.5).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import redis

from baton.errors import BacktestError, BadRequest, LookAheadError, SettingsError
from baton.settings import REPO_ROOT, Settings, timeframe_seconds
from control import equity_chart, input_archive
from feed import history
from kernel.backtest import engine, guard
from kernel.backtest.fills import FillParams, RecordedBooks
from kernel.backtest.history import AssetHistory
from kernel.backtest.types import FEED_DELAY_MS, BacktestConfig, BacktestReport, FeeRate, SlotSpec
from kernel.candle_cache import VOL_LOOKBACK_S, candle_span_s
from sim.book import BookParams
from sim.fees import fees_from_env
from state import connection
from state.keys import Keys
from state.structs import SLOT, Candle

STRATEGY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
STRATEGIES_DIR = Path("worker") / "strategies"
# Where strategies are read from: this checkout (tests point it elsewhere).
ROOT = REPO_ROOT
_ITEM = re.compile(r"^([a-z0-9_]+)(?:-|:)(\d+[smh])(?::([0-9]*\.?[0-9]+))?$")


class Result(msgspec.Struct, kw_only=True):
    """The report as `baton backtest --json` prints it: the engine's report without its wall
    time (the same inputs print the same bytes), with where its picture is."""

    report: BacktestReport
    picture: str
    report_file: str
    wall_s: float
    # Where the slots came from: "--slots", "the stack's slots hash", or "BATON_ASSETS x
    # BATON_TIMEFRAMES" (with why the stack's were not used).
    slots_from: str = ""


def load_strategy(name: str, root: Path | None = None) -> ModuleType:
    """worker/strategies/NAME.py of `root` as a fresh throwaway module (never the one a running
    process imported: a backtest must not change it, nor be changed by it), its module code
    run under the look-ahead guard (kernel/backtest/guard.py load_module), its relative
    imports of its siblings (`from ._helpers import x`) from the same directory. A bad or
    unknown name is a BadRequest (the arguments' fault); a module that cannot load, a
    BacktestError."""
    if not STRATEGY_NAME.fullmatch(name):
        raise BadRequest(f"bad strategy name {name!r}: a module name of worker/strategies (e.g. snipe)")
    root = root or ROOT
    path = root / STRATEGIES_DIR / f"{name}.py"
    if not path.is_file():
        have = sorted(p.stem for p in (root / STRATEGIES_DIR).glob("*.py") if not p.stem.startswith("_"))
        raise BadRequest(
            f"no strategy {name!r} ({path} is not there); strategies are {', '.join(have) or 'none'}"
        )
    mod_name = f"_baton_backtest_{name}_{secrets.token_hex(4)}"
    try:
        module = guard.load_module(name, path.read_bytes(), str(path), mod_name, str(path.parent))
    except LookAheadError:
        raise
    except BaseException as e:  # SyntaxError, ImportError, SystemExit in module code
        raise BacktestError(f"strategy {name!r} cannot be loaded: {e!r}") from None
    if not callable(getattr(module, "evaluate", None)):
        raise BacktestError(f"strategy {name!r} has no evaluate(inp) function")
    return module


def parse_slots(text: str, default_stake_usd: float) -> tuple[SlotSpec, ...]:
    """`btc-5m,eth:15m:2.5` -> slots btc-5m (the default stake) and eth-15m ($2.5); BadRequest
    naming what is not a slot."""
    out: list[SlotSpec] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise BadRequest(
                f"--slots: {raw.strip()!r} is not a slot: give asset-timeframe (btc-5m) or "
                "asset:timeframe[:stake] (btc:5m:2.5), comma-separated"
            )
        asset, tf, stake = m.group(1), m.group(2), m.group(3)
        try:
            timeframe_seconds(tf)
        except SettingsError as e:
            raise BadRequest(f"--slots: {raw.strip()!r}: {e}") from None
        stake_usd = float(stake) if stake else default_stake_usd
        if stake_usd <= 0:
            raise BadRequest(f"--slots: {raw.strip()!r}: the stake must be positive")
        out.append(SlotSpec(id=f"{asset}-{tf}", asset=asset, timeframe=tf, stake_usd=stake_usd))
    if not out:
        raise BadRequest("--slots names no slot")
    ids = [s.id for s in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise BadRequest(f"--slots names {', '.join(dup)} twice")
    return tuple(out)


def stack_slots(r: Any, k: Keys, strategy: str) -> tuple[SlotSpec, ...]:
    """The slots of the stack's slots hash that run `strategy` (their stakes and parameters);
    () when Redis does not answer or none does."""
    if r is None:
        return ()
    try:
        raw = r.hgetall(k.slots())
    except redis.RedisError:
        return ()
    out: list[SlotSpec] = []
    for sid in sorted(raw):
        try:
            s = SLOT.decode(raw[sid])
        except (msgspec.DecodeError, ValueError):
            continue
        if s.strategy == strategy and s.enabled:
            out.append(
                SlotSpec(
                    id=s.id,
                    asset=s.asset,
                    timeframe=s.timeframe,
                    stake_usd=s.stake_usd,
                    params=dict(s.params),
                )
            )
    return tuple(out)


def default_slots(s: Settings) -> tuple[SlotSpec, ...]:
    return tuple(
        SlotSpec(id=f"{a}-{tf}", asset=a, timeframe=tf, stake_usd=s.stake_usd)
        for a in s.assets
        for tf in s.timeframes
    )


def fill_params(env: dict[str, str], lag_ms: int | None = None, spread: float | None = None) -> FillParams:
    """The model book's parameters: the sim's maker's (BATON_SIM_BOOK_LAG_MS, BATON_SIM_SPREAD,
    BATON_SIM_BOOK_LEVELS, BATON_SIM_BOOK_NOISE, BATON_SIM_BOOK_DEPTH: paper and backtest
    assume the same market), unless given. The depth is the sim's without its seeded extra
    (the least the sim's maker shows)."""
    book = BookParams.from_env(env)
    return FillParams(
        lag_ms=book.lag_ms if lag_ms is None else lag_ms,
        spread=book.spread if spread is None else spread,
        levels=book.levels,
        noise=book.noise,
        depth_shares=float(book.depth_shares),
        depth_step_shares=float(book.depth_shares // 2),
    )


def fee_rates(env: dict[str, str]) -> dict[str, FeeRate]:
    """The taker fee by timeframe, as the sim publishes it (BATON_SIM_FEES; the default is
    Polymarket's schedule: 15-minute crypto markets only)."""
    return {tf: FeeRate(f.rate, f.exponent) for tf, f in fees_from_env(env).items() if f.rate > 0}


def build_config(
    s: Settings,
    strategy: str,
    from_ms: int,
    to_ms: int,
    slots: tuple[SlotSpec, ...],
    env: dict[str, str],
    lag_ms: int | None = None,
    spread: float | None = None,
    feed_delay_ms: int | None = None,
) -> BacktestConfig:
    return BacktestConfig(
        strategy=strategy,
        from_ms=from_ms,
        to_ms=to_ms,
        slots=slots,
        tick_ms=s.tick_ms,
        cash_usd=s.paper_cash_usd,
        max_stake_usd=s.max_stake_usd,
        max_exposure_usd=s.max_exposure_usd,
        daily_loss_limit_usd=s.daily_loss_limit_usd,
        stale_after_ms=s.stale_after_ms,
        fills=fill_params(env, lag_ms, spread),
        fees=fee_rates(env),
        feed_delay_ms=FEED_DELAY_MS if feed_delay_ms is None else feed_delay_ms,
    )


def history_loader() -> Callable[[str, str, int, int, list[str]], list[Candle]]:
    """The candle history store's reader (feed/history.py; tests give their own)."""
    return history.load_candles


def load_candles(
    home: str, config: BacktestConfig, strat: Any, problems: list[str]
) -> dict[str, AssetHistory]:
    """Each slot's asset's 1 s candles from the history store, from the look-back before the
    period (the strategy's, the model maker's volatility) to the end of the longest window
    open at its end (to resolve it); each asset's made into the engine's columns as soon as
    it is read (a week of 8 assets as candle objects would be gigabytes)."""
    load = history_loader()
    # The declarations read under the guard, as plain values (a CANDLES mapping is strategy code)
    declared, _ = guard.guarded(strat, config.strategy)
    before_ms = (max(VOL_LOOKBACK_S, candle_span_s(declared), config.fills.vol_window_s) + 60) * 1000
    after_ms = (max(timeframe_seconds(sl.timeframe) for sl in config.slots) + 1) * 1000
    out: dict[str, AssetHistory] = {}
    for asset in sorted({sl.asset for sl in config.slots}):
        got = load(home, asset, config.from_ms - before_ms, config.to_ms + after_ms, problems)
        if not got:
            raise BacktestError(
                f"no candle history of {asset} from {config.from_ms} to {config.to_ms}: "
                f"fetch it first (`baton history fetch --asset {asset} --from ... --to ...`)"
            )
        out[asset] = AssetHistory(asset, got)
        del got
    return out


def recorded_books(
    r: Any, k: Keys, home: str, config: BacktestConfig, problems: list[str]
) -> RecordedBooks | None:
    """The books the input log recorded in the period (control/input_archive.py: day files, then
    Redis), by market; None when nothing was recorded."""
    wanted = {(sl.asset, sl.timeframe) for sl in config.slots}

    def records() -> Iterable[tuple[str, str, int, int, Any, Any]]:
        for e in input_archive.iter_evaluations(
            r, k, Path(home), config.from_ms, config.to_ms, problems=problems
        ):
            inp = e.input
            if (inp.asset, inp.timeframe) in wanted:
                yield inp.asset, inp.timeframe, e.window_start_s, e.at_ms, inp.up_book, inp.down_book

    try:
        books = RecordedBooks(records(), config.fills.recorded_max_age_ms)
    except redis.RedisError:
        try:
            books = RecordedBooks(
                (
                    (
                        e.input.asset,
                        e.input.timeframe,
                        e.window_start_s,
                        e.at_ms,
                        e.input.up_book,
                        e.input.down_book,
                    )
                    for e in input_archive.iter_evaluations(
                        None, k, Path(home), config.from_ms, config.to_ms, problems=problems
                    )
                    if (e.input.asset, e.input.timeframe) in wanted
                ),
                config.fills.recorded_max_age_ms,
            )
        except Exception as e:  # files only, and they fail too: the model's books
            problems.append(f"input log: {e}")
            return None
    return books if len(books) else None


def code_bytes(path: Path) -> bytes:
    """The strategy's source and that of the siblings it imports relatively (its helpers:
    a changed helper is changed code)."""
    source = path.read_bytes()
    out = [source]
    for name in guard.relative_imports(source, str(path)):
        sibling = path.parent / f"{name}.py"
        if sibling.is_file():
            out += [f"\n--- {name}\n".encode(), sibling.read_bytes()]
    return b"".join(out)


def run_id(
    config: BacktestConfig,
    source: bytes,
    candles: dict[str, AssetHistory] | None = None,
    books: RecordedBooks | None = None,
) -> str:
    """The backtest's id: a hash of everything it ran on: its configuration, the strategy's
    source, the candle history (each asset's candles, hashed whole) and the recorded books.
    The same inputs give the same id (and the same report at the same path); a rerun after
    `baton history fetch` filled a gap, or with other recorded books, gets its own."""
    h = hashlib.sha256(msgspec.json.encode(config))
    h.update(source)
    for asset in sorted(candles or {}):
        h.update(f"\ncandles {asset} {candles[asset].digest()}".encode())  # type: ignore[index]
    h.update(f"\nbooks {books.digest() if books is not None else '-'}".encode())
    return h.hexdigest()[:12]


def backtest(
    s: Settings,
    strategy: str,
    from_ms: int,
    to_ms: int,
    slots_text: str | None = None,
    lag_ms: int | None = None,
    spread: float | None = None,
    r: Any = None,
    root: Path | None = None,
    feed_delay_ms: int | None = None,
) -> tuple[Result, list[str]]:
    """Run a backtest as `baton backtest` asks: (result, problems met on the way)."""
    root = root or ROOT
    env = dict(os.environ)
    problems: list[str] = []
    module = load_strategy(strategy, root)
    k = Keys(s.prefix)
    if r is None:
        try:
            r = connection.client(s, timeout_s=2.0)
        except Exception as e:  # no password file, a bad URL: the stack's slots are not asked
            problems.append(f"Redis not asked (the stack's slots and recorded books): {e}")
    if slots_text:
        slots, slots_from = parse_slots(slots_text, s.stake_usd), "--slots"
    else:
        slots, slots_from = stack_slots(r, k, strategy), "the stack's slots hash"
        if not slots:
            slots = default_slots(s)
            why = f"no slot of the stack runs {strategy}, or Redis did not answer"
            slots_from = f"BATON_ASSETS x BATON_TIMEFRAMES ({why})"
    config = build_config(s, strategy, from_ms, to_ms, slots, env, lag_ms, spread, feed_delay_ms)
    candles = load_candles(s.home, config, module, problems)
    books = recorded_books(r, k, s.home, config, problems)
    report = engine.run(config, candles, module, books)
    rid = run_id(config, code_bytes(root / STRATEGIES_DIR / f"{strategy}.py"), candles, books)
    out_dir = Path(s.home) / "var" / "backtests" / rid
    out_dir.mkdir(parents=True, exist_ok=True)
    picture = out_dir / "equity.html"
    report_file = out_dir / "report.json"
    wall_s, report.wall_s = report.wall_s, 0.0
    report_file.write_bytes(msgspec.json.encode(report))
    write_picture(report, picture)
    res = Result(
        report=report,
        picture=str(picture),
        report_file=str(report_file),
        wall_s=wall_s,
        slots_from=slots_from,
    )
    return res, problems


def write_picture(report: BacktestReport, path: Path) -> None:
    """The equity curve as a page a person looks at (control/equity_chart.py)."""
    equity_chart.write(report, path)
