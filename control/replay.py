"""Replay (`baton replay`): recorded evaluations (the input log, kernel/input_log.py) evaluated
again with other code, by default the code that made them, and compared answer by answer
(kind and answer: same_decision), per slot, with what the differing decisions would have
earned (control/replay_value.py).

The code is read from files as throwaway modules (kernel/strategy_load.py), each file once per
replay, never the live modules: a replay beside a running worker changes nothing it runs.
Strategies are pure functions of their inputs, so the code that made a decision makes it
again bit for bit: anything else is a difference worth reading (docs/evaluate.md).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from baton.errors import BadRequest
from baton.settings import REPO_ROOT
from control.replay_value import ASSUMPTIONS, Outcomes, window_value_usd
from deploy.releases import releases_dir
from kernel.input_log import Evaluation, evaluation, recordable, same_decision
from kernel.strategy_load import load_fresh, load_in_package
from kernel.strategy_store import code_id, code_path, store_dir

STRATEGIES = Path("worker") / "strategies"
PACKAGE = "worker.strategies"
# Differences listed per slot (all are counted): a changed strategy may differ thousands of times.
DIFFERENCES_MAX = 1000
# What a release id in a record may be before it names a directory (never a path of its own).
RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STRATEGY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One answer as a person compares it: kind, side, price, stake or shares, and why."""

    kind: str
    side: str = ""
    price: float | None = None
    stake_usd: float | None = None
    shares: float | None = None
    order_type: str = ""
    reason: str = ""


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    tick: int
    at_ms: int
    window_start_s: int
    strategy: str
    release: str  # the release that made the live decision
    live: Answer
    replayed: Answer
    window: str  # "up", "down" or "unknown": how the window closed


class SlotReplay(msgspec.Struct, kw_only=True):
    decisions: int = 0
    equal: int = 0
    differ: int = 0
    # Over the windows holding a difference whose result is known (ASSUMPTIONS).
    pnl_live_usd: float = 0.0
    pnl_replayed_usd: float = 0.0
    pnl_delta_usd: float = 0.0
    windows_differing: int = 0
    windows_unknown: int = 0  # windows with a difference whose result is unknown: not valued
    differences: list[Difference] = msgspec.field(default_factory=list)
    differences_left_off: int = 0


class ReplayReport(msgspec.Struct, kw_only=True):
    from_ms: int
    to_ms: int
    code: str  # what evaluated the records
    decisions: int = 0
    equal: int = 0
    differ: int = 0
    pnl_delta_usd: float = 0.0
    slots: dict[str, SlotReplay] = msgspec.field(default_factory=dict)
    # Records not replayed: of another strategy than --strategy-file's.
    skipped: int = 0
    assumptions: str = ASSUMPTIONS
    # Fallbacks and what could not be loaded, each said once.
    notes: list[str] = msgspec.field(default_factory=list)
    problems: list[str] = msgspec.field(default_factory=list)


def answer_of(e: Evaluation) -> Answer:
    if e.buy is not None:
        b = e.buy
        return Answer(
            kind="buy",
            side=b.side,
            price=b.limit_price,
            stake_usd=b.stake_usd,
            order_type=b.order_type,
            reason=b.reason,
        )
    if e.sell is not None:
        x, pos = e.sell, e.input.position
        return Answer(
            kind="sell",
            side=pos.side if pos is not None else "",
            price=x.limit_price,
            shares=x.shares or (pos.shares if pos is not None else 0.0),
            order_type=x.order_type,
            reason=x.reason,
        )
    if e.passed is not None:
        return Answer(kind="pass", reason=e.passed.reason)
    return Answer(kind=e.kind, reason=e.error)


@dataclass
class Code:
    """Which code evaluates each record: by default its own, the version its `code` names
    under var/strategies/ (kernel/strategy_store.py: a release's files may have been reloaded
    in place or pruned since), else the strategies of the release named in the record
    (var/releases/<release>/worker/strategies; the checkout's when that release is gone); or
    those of one release (`release`), or one file for every record of one strategy
    (`strategy_file`, of strategy `strategy` or the file's stem). Bad choices raise
    BadRequest naming them."""

    home: Path
    release: str = ""
    strategy_file: Path | None = None
    strategy: str = ""
    checkout: Path = REPO_ROOT
    notes: list[str] = field(default_factory=list)
    # (path, package dir) -> the module, or why it cannot be loaded (its records then
    # answer an error)
    _modules: dict[tuple[Path, Path | None], ModuleType | str] = field(default_factory=dict)
    _said: set[str] = field(default_factory=set)
    # (release, strategy, code) -> its code: resolved once, not per record (a day holds 100 000s)
    _code: dict[tuple[str, str, str], ModuleType | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.release and self.strategy_file is not None:
            raise BadRequest("give --strategy-file or --release, not both")
        if self.strategy and self.strategy_file is None:
            raise BadRequest("--strategy names the strategy whose records --strategy-file replays: give both")
        if self.release:
            d = self._release_dir(self.release)
            if d is None or not (d / STRATEGIES).is_dir():
                known = sorted(p.name for p in releases_dir(self.home).glob("*") if (p / STRATEGIES).is_dir())
                raise BadRequest(
                    f"no release {self.release!r} under {releases_dir(self.home)}; "
                    f"releases: {', '.join(known) or 'none'}"
                )
        if self.strategy_file is not None:
            f = self.strategy_file
            if not f.is_file():
                raise BadRequest(f"--strategy-file {f}: no such file")
            self.strategy = self.strategy or f.stem
            if not STRATEGY_NAME.fullmatch(self.strategy):
                raise BadRequest(f"bad strategy name {self.strategy!r}: a module name (e.g. snipe)")
            loaded = self.module(f)
            if isinstance(loaded, str):
                raise BadRequest(f"--strategy-file {f} cannot be used: {loaded}")

    def describe(self) -> str:
        if self.strategy_file is not None:
            return f"{self.strategy_file} for the records of strategy {self.strategy}"
        if self.release:
            return f"release {self.release}'s strategies"
        return "the code that made each decision (its version kept by content, else its release's strategies)"

    def selects(self, e: Evaluation) -> bool:
        return self.strategy_file is None or e.strategy == self.strategy

    def _release_dir(self, release: str) -> Path | None:
        if not RELEASE_NAME.fullmatch(release) or ".." in release:
            return None
        d = releases_dir(self.home) / release
        return d if d.is_dir() else None

    def _note(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.notes.append(text)

    def code_for(self, e: Evaluation) -> ModuleType | str:
        """The code that evaluates `e` (loaded), or why there is none. By default a record's
        own version (var/strategies/<code>.py) wins over its release's file: the release's
        file may have been reloaded in place since, or pruned."""
        if self.strategy_file is not None:
            return self.module(self.strategy_file)
        if not STRATEGY_NAME.fullmatch(e.strategy):
            return f"strategy name {e.strategy!r} is not a module name"
        release = self.release or e.release
        d = self._release_dir(release)
        # Its siblings (relative imports of `_` helpers): the release's, else the checkout's.
        strategies = (d or self.checkout) / STRATEGIES
        if e.code and not self.release:
            kept = code_path(self.home, e.code)
            if kept is not None and kept.is_file():
                return self.module(kept, strategies, e.strategy)
            self._note(
                f"code {e.code!r} of strategy {e.strategy} is not in {store_dir(self.home)}: "
                f"its records were replayed with release {release}'s file, else the checkout's"
            )
        if d is None:
            self._note(
                f"release {release!r} is not under {releases_dir(self.home)}: its records were "
                f"replayed with {strategies}"
            )
        path = strategies / f"{e.strategy}.py"
        if not path.is_file():
            return f"no strategy {e.strategy!r} in {strategies}"
        if e.code and not self.release and code_id(path.read_bytes()) != e.code:
            self._note(
                f"{path} is not the code {e.code} that made its records: a difference may be the code's"
            )
        return self.module(path, strategies, e.strategy)

    def module(self, path: Path, package_dir: Path | None = None, name: str = "") -> ModuleType | str:
        got = self._modules.get((path, package_dir))
        if got is None:
            try:
                if package_dir is not None:
                    # In a throwaway package over its strategies directory: a relative
                    # import gets the release's own helper (kernel/strategy_load.py).
                    got = load_in_package(path, package_dir=package_dir, module=name or path.stem)
                else:
                    # --strategy-file: named inside the strategies' package, as hot reload
                    # names its checks: a relative import of a `_` helper is the checkout's.
                    got = load_fresh(path, name=f"{PACKAGE}._baton_replay_{secrets.token_hex(4)}")
                if not callable(getattr(got, "evaluate", None)):
                    got = f"{path}: no evaluate(inp) function"
            except Exception as e:  # SyntaxError, ImportError, exit(): a strategy's bug
                got = f"{path} cannot be loaded: {e!r}"
            self._modules[(path, package_dir)] = got
            if isinstance(got, str):
                self._note(got)
        return got

    def evaluate(self, e: Evaluation) -> Evaluation:
        """`e`'s input evaluated again, recorded as the tick records it (kernel/input_log.py)."""
        key = (e.release, e.strategy, e.code)
        mod = self._code.get(key)
        if mod is None:
            mod = self._code[key] = self.code_for(e)
        if isinstance(mod, str):
            self._note(mod)
            answer: Any = LookupError(mod)
        else:
            try:
                answer = mod.evaluate(e.input)
            except Exception as err:  # as the tick does (kernel/entries.py _decide)
                answer = err
        # As the tick records it: an answer that would not read back is an error naming it.
        return recordable(
            evaluation(e.tick, e.slot, e.window_start_s, e.at_ms, e.strategy, "replay", e.input, answer)
        )


def refused_alike(live: Evaluation, again: Evaluation) -> Evaluation:
    """The replayed answer with live's refusal when the kernel would have refused it too: the
    same answer, or a Buy staking at least what live's Buy the risk checks refused staked
    (the account was the same). Valuing counts no refused Buy (replay_value.py)."""
    if not live.outcome.startswith("refused"):
        return again
    if same_decision(live, again):
        return msgspec.structs.replace(again, outcome=live.outcome)
    if (
        live.outcome.startswith("refused: risk")
        and live.buy is not None
        and again.buy is not None
        and again.buy.stake_usd >= live.buy.stake_usd
    ):
        return msgspec.structs.replace(again, outcome=live.outcome)
    return again


def replay(
    evaluations: Iterable[Evaluation],
    code: Code,
    outcomes: Outcomes,
    from_ms: int,
    to_ms: int,
    slot: str | None = None,
    differences_max: int = DIFFERENCES_MAX,
) -> ReplayReport:
    """Each record (oldest first) of `slot` (all when None) evaluated again with `code`."""
    report = ReplayReport(from_ms=from_ms, to_ms=to_ms, code=code.describe())
    # (slot, window start) -> [(live, replayed)] of the answers that can earn (buys, sells),
    # and the windows holding a difference: valued at the end.
    orders: dict[tuple[str, int], list[tuple[Evaluation, Evaluation]]] = {}
    differing: dict[tuple[str, int], Evaluation] = {}
    others: set[str] = set()  # the strategies of the records not selected
    for e in evaluations:
        if slot is not None and e.slot != slot:
            continue
        if not code.selects(e):
            report.skipped += 1
            others.add(e.strategy)
            continue
        again = refused_alike(e, code.evaluate(e))
        s = report.slots.get(e.slot)
        if s is None:
            s = report.slots[e.slot] = SlotReplay()
        s.decisions += 1
        key = (e.slot, e.window_start_s)
        if e.kind in ("buy", "sell") or again.kind in ("buy", "sell"):
            orders.setdefault(key, []).append((e, again))
        if same_decision(e, again):
            s.equal += 1
            continue
        s.differ += 1
        differing.setdefault(key, e)
        if len(s.differences) < differences_max:
            s.differences.append(
                Difference(
                    tick=e.tick,
                    at_ms=e.at_ms,
                    window_start_s=e.window_start_s,
                    strategy=e.strategy,
                    release=e.release,
                    live=answer_of(e),
                    replayed=answer_of(again),
                    window="",
                )
            )
        else:
            s.differences_left_off += 1
    _value(report, orders, differing, outcomes)
    report.decisions = sum(s.decisions for s in report.slots.values())
    report.equal = sum(s.equal for s in report.slots.values())
    report.differ = sum(s.differ for s in report.slots.values())
    report.pnl_delta_usd = round(sum(s.pnl_delta_usd for s in report.slots.values()), 6)
    report.notes = list(code.notes)
    if others and not report.slots:
        # A file named after its change (snipe_edge.py) selects no record by its name.
        report.notes.append(
            f"no record of strategy {code.strategy!r} in the range; the records are of "
            f"{', '.join(sorted(others))}: say which with --strategy NAME"
        )
    return report


def _value(
    report: ReplayReport,
    orders: dict[tuple[str, int], list[tuple[Evaluation, Evaluation]]],
    differing: dict[tuple[str, int], Evaluation],
    outcomes: Outcomes,
) -> None:
    """Each window holding a difference valued with the live and with the replayed answers."""
    result: dict[tuple[str, int], str] = {}
    for key, first in differing.items():
        s = report.slots[key[0]]
        s.windows_differing += 1
        inp = first.input
        won = outcomes.up_won(inp.asset, inp.window_start_ms, inp.window_end_ms)
        if won is None:
            s.windows_unknown += 1
            result[key] = "unknown"
            continue
        result[key] = "up" if won else "down"
        pairs = orders.get(key, [])
        if not pairs:
            continue  # the answers differ, but neither side would have traded
        rate = outcomes.fee_rate(inp.asset, inp.timeframe, first.window_start_s)
        live = window_value_usd((a for a, _ in pairs), won, rate)
        again = window_value_usd((b for _, b in pairs), won, rate)
        s.pnl_live_usd += live
        s.pnl_replayed_usd += again
    for sid, s in report.slots.items():
        s.pnl_live_usd = round(s.pnl_live_usd, 6)
        s.pnl_replayed_usd = round(s.pnl_replayed_usd, 6)
        s.pnl_delta_usd = round(s.pnl_replayed_usd - s.pnl_live_usd, 6)
        s.differences = [
            msgspec.structs.replace(d, window=result.get((sid, d.window_start_s), "unknown"))
            for d in s.differences
        ]
