"""The e2e tick check tells a tick lost to the tick before it overrunning its boundary (a
stalled machine) from a gap between ticks (a handover, a reload, a dead worker)."""

from __future__ import annotations

from tests.e2e import invariants

TICK_MS = 500


def entry(tick: int, duration_ms: int = 3, jitter_ms: int = 1, epoch: int = 1) -> dict[str, str]:
    return {
        "tick": str(tick),
        "epoch": str(epoch),
        "color": "blue",
        "release": "r1",
        "started_ms": str(tick * TICK_MS + jitter_ms),
        "duration_ms": str(duration_ms),
        "jitter_ms": str(jitter_ms),
    }


def test_a_tick_lost_to_an_overrun_is_told_from_a_gap():
    # Tick 102 ran 529 ms from 77 ms after its boundary: the boundary of 103 came meanwhile.
    # Tick 106 is missing though 105 ended in time: a gap.
    slow = entry(102, duration_ms=529, jitter_ms=77)
    entries = [entry(100), entry(101), slow, entry(104), entry(105), entry(107)]
    rep = invariants.check_ticks(entries)
    assert rep.missed == [103, 106]
    assert rep.overran == [103]
    assert rep.missed_not_overrun == [106]


def test_overruns_are_rare_at_most_one_in_a_hundred_ticks():
    slow = [entry(t, duration_ms=600) if t % 2 == 0 else None for t in range(1000, 1400)]
    rep = invariants.check_ticks([e for e in slow if e is not None])
    assert rep.missed_not_overrun == [] and len(rep.overran) == 199
    assert not rep.overruns_are_rare()
    one = invariants.check_ticks([entry(1), entry(2, duration_ms=600), entry(4)])
    assert one.overran == [3] and one.overruns_are_rare()
