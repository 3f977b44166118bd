"""The wake schedule: when each slot's strategy may first want quotes in its window (the
strategy's quotes_from_ms, kernel/strategy_api.py), asked once per window. Before it a slot
sleeps: the tick builds no input for it and reads no candles of its asset for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgspec

from kernel.snapshot import SlotRef


class Wake(msgspec.Struct, frozen=True):
    """A slot's wake-up time in one window, and what it was asked of: it holds while the slot's
    record and the strategy's function are the same objects (a reload or an edit of the slot
    makes new ones, and the time is asked again)."""

    slot: Any  # the slot record (state.structs.Slot) it was asked with
    hint: Any  # the strategy's quotes_from_ms that answered
    window_start_s: int
    at_ms: int
    strategy: str  # the slot's strategy name, to find its quotes_from_ms as it is now


class WakeSchedule:
    def __init__(self, resolve: Callable[[str], Any]) -> None:
        # Strategy name -> its module (kernel/tick.py resolve_strategy, or a test's own).
        self.resolve = resolve
        # slot id -> its Wake in the window the tick last asked about.
        self.by_slot: dict[str, Wake] = {}
        # The last snapshot's slot records: a slot it found disabled sleeps (no strategy runs
        # for it) until a later snapshot finds it enabled.
        self.slots: dict[str, Any] = {}
        # Wake times asked since the last publish that differ from those written to Redis
        # (keys.slot_wakes(): status says "asleep until"), and those written.
        self.changed: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.gone: set[str] = set()

    def wake_ms(self, hint: Any, ref: SlotRef, slot: Any) -> int:
        """The strategy's quotes_from_ms for this slot's window, asked once per window (and
        again when the slot's record or the function changes: a reload)."""
        got = self.by_slot.get(ref.id)
        if (
            got is not None
            and got.window_start_s == ref.window_start_s
            and got.slot is slot
            and got.hint is hint
        ):
            return got.at_ms
        at = int(hint(ref.window_start_s * 1000, ref.window_end_s * 1000, dict(slot.params)))
        self.by_slot[ref.id] = Wake(slot, hint, ref.window_start_s, at, slot.strategy)
        if self.published.get(ref.id) != at:
            self.changed[ref.id] = at
        return at

    async def publish(self, store: Any) -> None:
        """Write the wake times that changed since the last call, and remove those of slots
        now awake at every tick (one round trip; between ticks: kernel/tick.py). A failed
        write is tried again at the next call."""
        gone = {sid for sid in self.gone if sid not in self.changed}
        if not self.changed and not gone:
            return
        changed, self.changed, self.gone = self.changed, {}, set()
        try:
            await store.record_wakes(changed, gone=gone)
        except BaseException:
            self.changed = {**changed, **self.changed}
            self.gone |= gone
            raise
        self.published.update(changed)
        for sid in gone:
            self.published.pop(sid, None)

    def forget(self, slot_id: str) -> None:
        """The slot's strategy has no hint (any more): it is awake at every tick (and a wake
        time written for it is removed at the next publish)."""
        self.by_slot.pop(slot_id, None)
        if slot_id in self.published:
            self.gone.add(slot_id)

    def due_by(self, ref: SlotRef, at_ms: int) -> bool:
        """The slot's wake-up time in this window is known and has come by `at_ms`."""
        got = self.by_slot.get(ref.id)
        return got is not None and got.window_start_s == ref.window_start_s and got.at_ms <= at_ms

    def learn(self, refs: list[SlotRef]) -> None:
        """Ask the wake-up times of these windows' enabled slots ahead of the tick (between
        ticks); a strategy that fails here is asked again, and reported, by the tick."""
        hints: dict[str, Any] = {}
        for r in refs:
            slot = self.slots.get(r.id)
            if slot is None or not slot.enabled:
                continue
            hint = self.hint(slot.strategy, hints)
            if hint is not None:
                with contextlib.suppress(Exception):  # the tick asks again and reports it
                    self.wake_ms(hint, r, slot)

    def awake_assets(self, refs: list[SlotRef], now_ms: int, entered: dict[str, int]) -> set[str]:
        """Assets whose candles a tick at `now_ms` may need: those with a slot whose strategy's
        quotes_from_ms (as the last tick found it for this window) has come, or that nothing
        is known of (a new window, a strategy without the hint). The others' windows are not
        read: at a thousand slots that is most of an idle tick. A slot the last tick found
        disabled sleeps too, and so does one that `entered` its window already, unless its
        strategy declares EXITS (it may hold a position to sell, disabled or not:
        kernel/exits.py). A slot
        whose record changed since (its entry_s, enabled again) is known again one tick
        later."""
        awake: set[str] = set()
        wakes, slots = self.by_slot, self.slots
        hints: dict[str, Any] = {}  # strategy name -> its quotes_from_ms now (a reload changes it)
        exits: dict[str, bool] = {}  # strategy name -> it declares EXITS
        for r in refs:
            if r.asset in awake:
                continue
            slot = slots.get(r.id)
            if entered.get(r.id) == r.window_start_s:
                # Disabled or not: a slot that entered may still exit what it holds.
                if slot is not None and self.exits(slot.strategy, exits):
                    awake.add(r.asset)
                continue
            if slot is not None and not slot.enabled:
                continue
            got = wakes.get(r.id)
            if got is None or got.window_start_s != r.window_start_s or now_ms >= got.at_ms:
                awake.add(r.asset)
                continue
            if self.hint(got.strategy, hints) is not got.hint:
                awake.add(r.asset)
        return awake

    def exits(self, name: str, memo: dict[str, bool]) -> bool:
        """Strategy `name` declares EXITS = True (False when it cannot be loaded), memoised in
        `memo` for one pass over the slots."""
        if name not in memo:
            try:
                memo[name] = getattr(self.resolve(name), "EXITS", False) is True
            except Exception:
                memo[name] = False
        return memo[name]

    def hint(self, name: str, hints: dict[str, Any]) -> Any:
        """Strategy `name`'s quotes_from_ms as it is now (a reload replaces it in place), or None
        (no hint, or a module that cannot be loaded: the tick reports that); memoised in `hints`
        for one pass over the slots."""
        if name not in hints:
            try:
                hints[name] = getattr(self.resolve(name), "quotes_from_ms", None)
            except Exception:
                hints[name] = None
        return hints[name]
