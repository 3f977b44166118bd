"""What a tick writes of its evaluations: each slot's last decision (keys.decisions(), in the
tick, while its last chunk of orders is under way), the decision log (keys.decision_log,
one entry per evaluation) and the input log (keys.input_log(), one entry per tick with every
evaluation's input and answer: kernel/input_log.py). Both logs are built and appended
between ticks, in one round trip, so that a burst's thousand entries cost its orders nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kernel import decision_log, input_log
from state.inputs import ENTRY_OVERHEAD_BYTES
from state.store import Store
from state.structs import DecisionRecord

log = logging.getLogger("baton.notes")

# Redis keeps this much of the input log when the settings do not say
# (BATON_INPUT_LOG_REDIS_S); older entries are trimmed as new ones are appended.
INPUT_LOG_S = 6 * 3600
# ... and at most about this many bytes of it (BATON_INPUT_LOG_REDIS_MB): the store that holds
# the ledger has no room for 6 h of a thousand slots (~1 GB).
INPUT_LOG_BYTES = 256 * 1024 * 1024
# How the budget's entry size follows the entries appended (an average over the last ~100).
ENTRY_SIZE_WEIGHT = 0.01
# The budget's cutting the retention short is said (a problem) at most this often.
BUDGET_NOTICE_MS = 600_000

# One evaluation as the tick keeps it for the log: [ref, strategy name, input, answer,
# outcome, intent id] (a list: an exit's outcome and intent id are filled in once its leg is
# numbered, kernel/exits.py).
Evaluation = list[Any]


class DecisionNotes:
    def __init__(
        self,
        store: Store,
        log_len: int,
        release: str = "",
        input_log_s: int = INPUT_LOG_S,
        input_log_bytes: int = INPUT_LOG_BYTES,
    ) -> None:
        self.store = store
        # Entries kept per slot in the decision log (BATON_DECISION_LOG_LEN).
        self.log_len = log_len
        # What the input log's records name as the code that decided (Identity.release).
        self.release = release
        # The input log's retention in Redis (BATON_INPUT_LOG_REDIS_S).
        self.input_log_ms = input_log_s * 1000
        # ... and its byte budget (BATON_INPUT_LOG_REDIS_MB), applied as a number of entries
        # at the recent entries' average size (0: not known yet).
        self.input_log_bytes = input_log_bytes
        self.entry_bytes = 0.0
        # Entries the budget trimmed that the age limit had kept, since it last said so.
        self.budget_cut = 0
        self.budget_said_ms = -BUDGET_NOTICE_MS
        # Ticks not in the input log yet: tick -> at_ms, oldest first. Every tick has its
        # entry, evaluations or not (TickRunner.run calls `ticked`): a follower counts ticks.
        self.ticks: dict[int, int] = {}
        # Evaluations not appended to the log yet: (tick, at_ms, evaluations).
        self.unlogged: list[tuple[int, int, list[Evaluation]]] = []
        # Strategy name -> code id of the file running (kernel/strategy_store.py), set by the
        # worker when it loads or reloads strategies (hashed then, never per tick); each
        # tick's records name the code of the map current when the tick ran.
        self.code: dict[str, str] = {}
        self.codes: dict[int, dict[str, str]] = {}
        # Some of them are of an earlier tick, which no flush wrote (a tick that handed over
        # skips the work between ticks): the next tick's write takes them along.
        self.late = False

    def ticked(self, tick: int, at_ms: int) -> None:
        """A tick ran (as the lease holder): it gets an input log entry at the next flush."""
        self.ticks.setdefault(tick, at_ms)
        self.codes.setdefault(tick, self.code)

    def keep(self, tick: int, at_ms: int, evaluations: list[Evaluation]) -> None:
        self.late = any(t != tick for t, _, _ in self.unlogged)
        self.ticks.setdefault(tick, at_ms)
        self.codes.setdefault(tick, self.code)
        if evaluations:
            self.unlogged.append((tick, at_ms, evaluations))

    async def note(self, decisions: dict[str, DecisionRecord]) -> list[str]:
        """Each slot's last decision (one HSET, with the late log entries if any): problems."""
        if not self.late:
            await self.store.record_decisions(decisions)
            return []
        return await self.flush(lambda pipe: self.store.record_decisions(decisions, pipeline=pipe))

    async def flush(self, also: Callable[[Any], Any] | None = None) -> list[str]:
        """The log entries of the evaluations kept since the last flush, built (kernel/
        decision_log.py, kernel/input_log.py) and appended (Store.append_decisions,
        Store.append_inputs: one input log entry per tick) in one round trip, with `also`
        queued on the same pipeline. Returns the problems (entries a slot's stream could not
        take: the others are in; an input log entry not appended or an evaluation not
        recordable)."""
        pending, self.unlogged, self.late = self.unlogged, [], False
        ticks, self.ticks = self.ticks, {}
        codes, self.codes = self.codes, {}
        entries = [
            decision_log.entry(tick, r, at_ms, n, i, a, o, iid)
            for tick, at_ms, evaluations in pending
            for r, n, i, a, o, iid in evaluations
        ]
        problems: list[str] = []
        try:
            batches = self._input_batches(ticks, pending, problems, codes)
        except Exception as e:  # never a tick's or the decision log's failure
            log.exception("input log: building the batches failed")
            problems.append(f"input log: {len(ticks)} tick(s) not recorded: {e!r}")
            batches = []
        if not entries and not batches and also is None:
            return problems
        now_ms = max((at for at in ticks.values()), default=0)
        min_ms = now_ms - self.input_log_ms
        max_len = self._max_len(batches)

        def build(pipe: Any) -> None:
            if also is not None:
                also(pipe)
            if entries:
                self.store.append_decisions(entries, self.log_len, pipeline=pipe)
            if batches:
                rows = [(tick, at_ms, self.release, n, data) for tick, at_ms, n, data in batches]
                self.store.append_inputs(rows, min_ms, pipeline=pipe, max_len=max_len)

        answers = await self.store.run_pipeline(build)
        added = answers[-1] if batches else None
        if isinstance(added, Exception):
            problems.append(f"input log: {len(batches)} tick(s) not appended: {added}")
        elif isinstance(added, list) and len(added) == 2:
            self._budget(int(added[1] or 0), max_len, now_ms, problems)
        appended = answers[-2 if batches else -1] if entries else None
        if isinstance(appended, Exception):
            problems.insert(0, f"decision log: {len(entries)} entr(ies) not appended: {appended}")
        elif isinstance(appended, list) and len(appended) == 3 and appended[1]:
            problems.insert(0, f"decision log: {appended[1]} entr(ies) not appended: {appended[2]}")
        return problems

    def _max_len(self, batches: list[tuple[int, int, int, bytes]]) -> int:
        """The entries the byte budget holds at the entries' recent size (at least one)."""
        for *_, data in batches:
            size = len(data) + ENTRY_OVERHEAD_BYTES
            if self.entry_bytes <= 0:
                self.entry_bytes = float(size)
            else:
                self.entry_bytes += (size - self.entry_bytes) * ENTRY_SIZE_WEIGHT
        if self.input_log_bytes <= 0 or self.entry_bytes <= 0:
            return 0
        return max(1, int(self.input_log_bytes // self.entry_bytes))

    def _budget(self, cut: int, max_len: int, now_ms: int, problems: list[str]) -> None:
        """Say, at most every BUDGET_NOTICE_MS, that the byte budget trimmed entries the age
        limit kept: Redis then holds less than BATON_INPUT_LOG_REDIS_S, and what a settle
        program had not rolled yet is gone from the files too (its roll names the gap)."""
        self.budget_cut += cut
        if self.budget_cut and now_ms - self.budget_said_ms >= BUDGET_NOTICE_MS:
            problems.append(
                f"input log: the byte budget (BATON_INPUT_LOG_REDIS_MB, {self.input_log_bytes / 2**20:g} MB) "
                f"trimmed {self.budget_cut} entr(ies) younger than BATON_INPUT_LOG_REDIS_S: Redis keeps "
                f"about {max_len} entries of {self.entry_bytes / 1024:.1f} kB; entries not rolled into "
                "var/inputs/ yet are lost"
            )
            self.budget_cut, self.budget_said_ms = 0, now_ms

    def _input_batches(
        self,
        ticks: dict[int, int],
        pending: list[tuple[int, int, list[Evaluation]]],
        problems: list[str],
        codes: dict[int, dict[str, str]],
    ) -> list[tuple[int, int, int, bytes]]:
        """(tick, at_ms, n, encoded batch) of each tick, oldest first. An evaluation without
        an input (its strategy failed to load: nothing was evaluated) is not recorded."""
        by_tick: dict[int, list[input_log.Evaluation]] = {t: [] for t in ticks}
        release = self.release
        for tick, at_ms, kept in pending:
            got = by_tick.setdefault(tick, [])
            ticks.setdefault(tick, at_ms)
            code = codes.get(tick, self.code)
            for r, n, i, a, o, iid in kept:
                if i is not None:
                    got.append(
                        input_log.evaluation(
                            tick, r.id, r.window_start_s, at_ms, n, release, i, a, o, iid, code.get(n, "")
                        )
                    )
        out = []
        for tick in sorted(by_tick):
            # An answer that would not read back (a strategy's junk in a Buy) is recorded as
            # an error naming it: the batch's other evaluations stay readable.
            records = [input_log.recordable(e) for e in by_tick[tick]]
            for e, was in zip(records, by_tick[tick], strict=True):
                if e is not was:
                    problems.append(f"input log: slot {e.slot} tick {tick}: {e.error}")
            data = input_log.encode_batch(records) if records else b""
            out.append((tick, ticks[tick], len(records), data))
        return out
