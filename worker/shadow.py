"""The shadow: `python -m worker.shadow`, started by supervisor (program `shadow`, through
deploy/launch.py from the release var/releases/colors/shadow points at). It follows the live
worker's input log (keys.input_log()) and evaluates every recorded input with its own
release's strategies, counting the ticks and decisions it saw and writing the decisions it
made differently, with both answers, to the shadow log (state/shadow.py).

It posts nothing by construction: it builds no venue client, reads no signing key, and its
Redis user (`shadow`, state/acl.py) may write nothing but the shadow's keys. The release it
runs is not trusted yet, so each strategy call (the dry evaluation and every evaluate) runs
under the backtest's audit-hook guard in its I/O mode (kernel/backtest/guard.py): a strategy
that opens a file (var/secrets/), a socket or a process is refused, its answer an error naming
what it tried, and counted (`refused_io`). `orders_posted` counts the strategy calls that
reached for the network: refused, so nothing was posted.

Exit codes: 0 stopped, 4 its release cannot shadow (a strategy fails its dry evaluation).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from baton import settings as settings_mod
from baton.errors import StrategyIORefused
from kernel import strategy_check
from kernel.backtest import guard as guard_mod
from kernel.clock import wall_ms
from kernel.input_log import Evaluation, classify, recordable, same_decision
from kernel.input_stream import read_batches
from kernel.readiness import STRATEGY_PACKAGE, resolve_strategy
from state import connection
from state.keys import Keys
from state.shadow import Answer, Difference, ShadowRepo

log = logging.getLogger("baton.shadow")

EXIT_CANNOT_SHADOW = 4
# How long one read of the input log blocks: what a stop waits at most.
BLOCK_MS = 1000
# Batches (ticks) read at once: a shadow that fell behind catches up a hundred ticks a call.
READ_COUNT = 100
# After a Redis error, wait this long before trying again (a restart is not needed).
RETRY_S = 1.0


def answer_of(kind: str, buy: Any, sell: Any, passed: Any, error: str) -> Answer:
    """What a strategy answered, as one side of a difference."""
    if buy is not None:
        return Answer(
            kind=kind,
            side=str(buy.side),
            price=_num(buy.limit_price),
            stake_usd=_num(buy.stake_usd),
            reason=str(buy.reason)[:300],
        )
    if sell is not None:
        return Answer(
            kind=kind, price=_num(sell.limit_price), shares=_num(sell.shares), reason=str(sell.reason)[:300]
        )
    if passed is not None:
        return Answer(kind=kind, reason=str(passed.reason)[:300])
    return Answer(kind=kind, reason=error[:300])


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def answer_again(e: Evaluation, resolve: Callable[[str], Any], release: str) -> Any:
    """What this release's strategy of the same name answers `e`'s input: its answer, or the
    exception it raised (a strategy this release lacks: a LookupError naming it)."""
    try:
        answer: Any = resolve(e.strategy).evaluate(e.input)
    except ModuleNotFoundError as err:
        answer = (
            err
            if err.name != f"{STRATEGY_PACKAGE}.{e.strategy}"
            else LookupError(f"strategy {e.strategy!r} is not in release {release}")
        )
    except Exception as err:  # a strategy's bug is its answer, as in the live tick
        answer = err
    return answer


def evaluate_again(e: Evaluation, resolve: Callable[[str], Any], release: str) -> Evaluation:
    """`e`'s input evaluated with this release's strategy of the same name: the same record
    with the shadow's answer (an exception, or a strategy this release lacks, is an error)."""
    return _recorded(e, answer_again(e, resolve, release), release)


def _recorded(e: Evaluation, answer: Any, release: str) -> Evaluation:
    kind, buy, sell, passed, error = classify(answer)
    # As the live worker records it: an answer that would not read back (a price that is a
    # str) is an error naming it, the same on both sides, never an exception out of here.
    return recordable(
        Evaluation(
            slot=e.slot,
            tick=e.tick,
            at_ms=e.at_ms,
            window_start_s=e.window_start_s,
            strategy=e.strategy,
            release=release,
            input=e.input,
            kind=kind,
            buy=buy,
            sell=sell,
            passed=passed,
            error=error,
        )
    )


@dataclass
class Compared:
    """One tick's comparison: decisions compared, the differences, of which the shadow's was an
    error where live's was not (`erred`), and strategy calls refused by the I/O guard."""

    decisions: int = 0
    erred: int = 0
    refused_io: int = 0
    differences: list[Difference] = field(default_factory=list)


def compare(evaluations: list[Evaluation], resolve: Callable[[str], Any], release: str) -> Compared:
    """One tick's evaluations evaluated again and compared. `resolve` gives the strategy
    (the Shadow's: guarded); a StrategyIORefused answer is counted in `refused_io`."""
    out = Compared()
    out.decisions = len(evaluations)
    for e in evaluations:
        try:
            answer = answer_again(e, resolve, release)
            if isinstance(answer, StrategyIORefused):
                out.refused_io += 1
            mine = _recorded(e, answer, release)
            if mine.kind == "error" and e.kind != "error":
                out.erred += 1
            if same_decision(e, mine):
                continue
            theirs = answer_of(mine.kind, mine.buy, mine.sell, mine.passed, mine.error)
        except Exception as err:
            # Whatever a record holds, it must not stop the shadow: a crash would be restarted
            # onto the same record, again and again. It counts as a difference, named.
            theirs = Answer(kind="error", reason=f"the shadow could not compare this record: {err!r}"[:300])
            if e.kind != "error":
                out.erred += 1
        out.differences.append(
            Difference(
                tick=e.tick,
                at_ms=e.at_ms,
                slot=e.slot,
                strategy=e.strategy,
                window_start_s=e.window_start_s,
                live_release=e.release,
                live=answer_of(e.kind, e.buy, e.sell, e.passed, e.error),
                shadow=theirs,
            )
        )
    return out


def dry_check(module: Any, name: str, inputs: list[Any]) -> None:
    """strategy_check.dry_evaluate, the whole of it under the I/O guard (the declarations it
    reads are strategy code as much as evaluate); raises StrategyCheckError or
    StrategyIORefused naming what was wrong."""
    guard_mod.import_ahead(module)
    guard_mod.Guard(name, io_only=True).call(strategy_check.dry_evaluate, module, inputs)


def check_release() -> list[str]:
    """Dry-evaluate every strategy of this release on the sample inputs (as the worker's
    readiness check does), under the I/O guard: the names checked; raises
    StrategyCheckError (a refused file, socket or process among them) or ImportError."""
    package = importlib.import_module(STRATEGY_PACKAGE)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    inputs = strategy_check.sample_inputs(wall_ms())
    for name in names:
        try:
            dry_check(resolve_strategy(name), name, inputs)
        except Exception as e:
            raise strategy_check.StrategyCheckError(f"strategy {name}: {e}") from e
    return names


class Shadow:
    def __init__(
        self, r: Any, k: Keys, release: str, resolve: Callable[[str], Any] = resolve_strategy
    ) -> None:
        """`r` a decoded client; `resolve` finds a strategy module by name (this release's)."""
        self.r = r
        self.resolve = resolve
        # name -> (module, its guarded stand-in), made again when `resolve` gives a new module.
        self._guarded: dict[str, tuple[Any, Any]] = {}
        self.repo = ShadowRepo(r, k)
        self.k = k
        self.release = release
        self.stopping = False
        self.ticks = self.decisions = self.differ = self.last_tick = 0
        self.erred = self.refused_io = 0
        self.last_id = "$"  # only ticks from now on, unless a restart goes on from its last

    def strategy(self, name: str) -> Any:
        """This release's strategy `name` as a stand-in whose functions run under the I/O
        guard and hand back plain answers (an exception's repr taken under it too: a
        `__repr__` is strategy code); what its module imports inside its functions is
        imported first, outside the guard. Raises what reading its declarations raised."""
        module = self.resolve(name)
        known = self._guarded.get(name)
        if known is None or known[0] is not module:
            guard_mod.import_ahead(module)
            known = self._guarded[name] = (module, guard_mod.guarded(module, name, io_only=True)[0])
        return known[1]

    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def resume(self) -> None:
        """Counters and position of an earlier run of this same release (a crash restart)."""
        st = self.repo.status()
        if st.release == self.release and st.last_id:
            self.ticks, self.decisions, self.differ = st.ticks, st.decisions, st.differ
            self.erred, self.refused_io = st.erred, st.refused_io
            self.last_tick, self.last_id = st.last_tick, st.last_id
            log.info("shadow: going on after input log entry %s (%d ticks so far)", st.last_id, st.ticks)

    def counts(self, state: str) -> dict[str, Any]:
        return {
            "release": self.release,
            "state": state,
            "pid": os.getpid(),
            "ticks": self.ticks,
            "decisions": self.decisions,
            "differ": self.differ,
            "erred": self.erred,
            "refused_io": self.refused_io,
            # Every reach for the network was refused (counted in refused_io), and the shadow
            # has no venue client: nothing can have been posted.
            "orders_posted": 0,
            "last_tick": self.last_tick,
            "last_id": self.last_id if self.last_id != "$" else "",
            "updated_ms": wall_ms(),
        }

    def step(self) -> int:
        """Read what the input log has after the last entry (waiting up to BLOCK_MS), evaluate
        it and record the counters and differences; the number of ticks read."""
        problems: list[str] = []
        batches = read_batches(self.r, self.k, self.last_id, BLOCK_MS, READ_COUNT, problems)
        for p in problems:
            log.warning("shadow: %s", p)
        if problems and not batches:
            # A corrupt last entry is read again until an entry follows it: not in a spin.
            time.sleep(BLOCK_MS / 1000)
        differences: list[Difference] = []
        for entry_id, tick, _at_ms, evaluations in batches:
            c = compare(evaluations, self.strategy, self.release)
            self.ticks += 1
            self.decisions += c.decisions
            self.differ += len(c.differences)
            self.erred += c.erred
            self.refused_io += c.refused_io
            self.last_tick = tick
            self.last_id = entry_id
            differences += c.differences
        if batches:
            self.repo.record(self.counts("following"), differences)
        return len(batches)

    def run(self) -> int:
        self.repo.mark("checking", wall_ms())
        try:
            names = check_release()
        except Exception as e:  # an import error as much as a refused dry evaluation
            log.error("shadow: release %s cannot shadow: %s", self.release, e)
            self.repo.mark("failed", wall_ms(), f"release {self.release}: {e}")
            return EXIT_CANNOT_SHADOW
        self.resume()
        self.repo.record(self.counts("following"), [])
        log.info("shadow: release %s follows the input log with %s", self.release, ", ".join(names))
        while not self.stopping:
            try:
                self.step()
            except redis.RedisError as e:
                # Redis gone for a moment (a restart, a failover): nothing of ours is lost,
                # the next read goes on after the last entry evaluated.
                log.warning("shadow: Redis error, retrying in %.0f s: %s", RETRY_S, e)
                time.sleep(RETRY_S)
        try:
            self.repo.record(self.counts("stopped"), [])
        except redis.RedisError as e:
            log.warning("shadow: could not record the stop: %s", e)
        log.info(
            "shadow: stopped after %d ticks, %d decisions, %d different",
            self.ticks,
            self.decisions,
            self.differ,
        )
        return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = settings_mod.load()
    release = os.environ.get("BATON_RELEASE", "") or "worktree"
    # Reads block up to BLOCK_MS: the socket's timeout must outlast them.
    r = connection.client(s, timeout_s=max(connection.TIMEOUT_S, 2 * BLOCK_MS / 1000 + 1))
    sh = Shadow(r, Keys(s.prefix), release)
    signal.signal(signal.SIGTERM, sh.request_stop)
    signal.signal(signal.SIGINT, sh.request_stop)
    try:
        code = sh.run()
    finally:
        r.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
