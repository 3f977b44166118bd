"""What a tick writes of its evaluations: each slot's last decision (keys.decisions(), in the
tick, while its last chunk of orders is under way) and the decision log (keys.decision_log,
one entry per evaluation: built and appended between ticks, so that a burst's thousand
entries cost its orders nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel import decision_log
from state.store import Store
from state.structs import DecisionRecord

# One evaluation as the tick keeps it for the log: [ref, strategy name, input, answer,
# outcome, intent id] (a list: an exit's outcome and intent id are filled in once its leg is
# numbered, kernel/exits.py).
Evaluation = list[Any]


class DecisionNotes:
    def __init__(self, store: Store, log_len: int) -> None:
        self.store = store
        # Entries kept per slot in the decision log (BATON_DECISION_LOG_LEN).
        self.log_len = log_len
        # Evaluations not appended to the log yet: (tick, at_ms, evaluations).
        self.unlogged: list[tuple[int, int, list[Evaluation]]] = []
        # Some of them are of an earlier tick, which no flush wrote (a tick that handed over
        # skips the work between ticks): the next tick's write takes them along.
        self.late = False

    def keep(self, tick: int, at_ms: int, evaluations: list[Evaluation]) -> None:
        self.late = any(t != tick for t, _, _ in self.unlogged)
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
        decision_log.py) and appended (Store.append_decisions) in one round trip, with `also`
        queued on the same pipeline. Returns the problems (entries a slot's stream could not
        take: the others are in)."""
        pending, self.unlogged, self.late = self.unlogged, [], False
        entries = [
            decision_log.entry(tick, r, at_ms, n, i, a, o, iid)
            for tick, at_ms, evaluations in pending
            for r, n, i, a, o, iid in evaluations
        ]
        if not entries and also is None:
            return []

        def build(pipe: Any) -> None:
            if also is not None:
                also(pipe)
            if entries:
                self.store.append_decisions(entries, self.log_len, pipeline=pipe)

        answers = await self.store.run_pipeline(build)
        appended = answers[-1] if entries else None
        if isinstance(appended, Exception):
            return [f"decision log: {len(entries)} entr(ies) not appended: {appended}"]
        if isinstance(appended, list) and len(appended) == 3 and appended[1]:
            return [f"decision log: {appended[1]} entr(ies) not appended: {appended[2]}"]
        return []
