"""The slots a worker trades and the window each is in at a tick's time: `SlotRef`, `slot_refs`,
and `SlotRefs`, which remembers the refs while the windows last and follows the slot list as
the slots hash holds it (each tick's snapshot reads it, kernel/snapshot.py).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import cached_property

from baton.errors import SettingsError
from baton.settings import timeframe_seconds
from kernel.windows import slug, window_bounds
from state.structs import ENTRY_LEG, Slot


@dataclass(frozen=True)
class SlotRef:
    """A configured slot and the window it is in at the tick's time."""

    id: str
    asset: str
    timeframe: str
    window_start_s: int
    window_end_s: int

    # Cached: a ref lives as long as its window (SlotRefs), and these are asked for every tick.
    @cached_property
    def slug(self) -> str:
        return slug(self.asset, self.timeframe, self.window_start_s)

    @cached_property
    def entry_intent_id(self) -> str:
        return f"{self.id}:{self.window_start_s}:{ENTRY_LEG}"


def slot_refs(slot_ids: list[tuple[str, str, str]], now_ms: int) -> list[SlotRef]:
    bounds: dict[str, tuple[int, int]] = {}  # per timeframe: computed once, shared by its slots
    out = []
    for sid, asset, tf in slot_ids:
        b = bounds.get(tf)
        if b is None:
            b = bounds[tf] = window_bounds(now_ms, tf)
        out.append(SlotRef(sid, asset, tf, b[0], b[1]))
    return out


class SlotRefs:
    """`slot_refs` with memory: the refs of the last call are returned again while every
    timeframe is in the same window (a window lasts minutes, a tick seconds), so a thousand
    refs are not rebuilt every tick. The list returned is shared: callers must not change it.

    The slot list follows the slots hash (`follow`): Redis is the truth, the settings only
    seed a fresh Redis (worker/lifecycle.py), so a slot added by an operator runs from the
    tick after the one that read it, and one removed stops."""

    def __init__(self, slot_ids: list[tuple[str, str, str]]) -> None:
        self.slot_ids: list[tuple[str, str, str]] = []
        # slot id -> (asset, timeframe), to tell a changed list from the same one cheaply.
        self._by_id: dict[str, tuple[str, str]] = {}
        self._timeframes: list[str] = []
        self._bounds: tuple[tuple[int, int], ...] | None = None
        self._refs: list[SlotRef] = []
        # Whether the list was read from Redis yet (until then it is the settings' seeds).
        self.followed = False
        self._followed: dict[str, Slot] = {}  # the records it was last taken from
        self._set(slot_ids)

    def _set(self, slot_ids: list[tuple[str, str, str]]) -> None:
        self.slot_ids = slot_ids
        self._by_id = {sid: (a, tf) for sid, a, tf in slot_ids}
        self._timeframes = sorted({tf for _, _, tf in slot_ids})
        self._bounds = None

    def at(self, now_ms: int) -> list[SlotRef]:
        bounds = tuple(window_bounds(now_ms, tf) for tf in self._timeframes)
        if bounds != self._bounds:
            self._refs = slot_refs(self.slot_ids, now_ms)
            self._bounds = bounds
        return self._refs

    def follow(self, slots: dict[str, Slot]) -> tuple[bool, list[str]]:
        """Take the slot list from `slots` (the slots hash as read, decodable values only):
        (whether it changed, problems). A slot whose timeframe cannot be parsed is left out,
        named in a problem, rather than stopping every slot's tick (an operator's tools
        refuse one; a hand-written value can still hold one)."""
        self.followed = True
        prev, self._followed = self._followed, slots
        # The same records as last time (a slot that did not change is the same object: the
        # decode memo's) under the same ids: unchanged, found without a loop in Python (a
        # thousand slots every tick).
        if (
            len(prev) == len(slots)
            and all(map(operator.is_, slots.values(), prev.values()))
            and slots.keys() == prev.keys()
        ):
            return False, []
        by_id = self._by_id
        if len(slots) == len(by_id) and all(
            (got := by_id.get(sid)) is not None and got[0] == s.asset and got[1] == s.timeframe
            for sid, s in slots.items()
        ):
            return False, []
        problems: list[str] = []
        wanted: list[tuple[str, str, str]] = []
        for sid in sorted(slots):
            s = slots[sid]
            try:
                timeframe_seconds(s.timeframe)
            except SettingsError as e:
                problems.append(f"slot {sid} is not run: {e}")
                continue
            wanted.append((sid, s.asset, s.timeframe))
        if wanted == self.slot_ids:
            return False, problems
        self._set(wanted)
        return True, problems

    def keeps(self, ref: SlotRef) -> bool:
        """Whether `ref` is still one of the list's slots (with the same asset and timeframe)."""
        return self._by_id.get(ref.id) == (ref.asset, ref.timeframe)
