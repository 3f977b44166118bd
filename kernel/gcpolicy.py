"""Garbage collection between ticks, not inside them.

CPython's cyclic collector runs whenever allocations cross a threshold: inside whatever code
runs then. At 1,024 slots a full (oldest generation) collection of the worker's heap took
20-30 ms and landed on random ticks (bench/tick_scale.py found them as idle ticks three
times slower than their neighbours). So the worker runs the collector itself, in the slack
after each tick:

- what start-up built (modules, settings, clients, the first caches) is frozen: it is never
  garbage, and is left out of every later scan (`gc.freeze`);
- automatic collection is off while ticks run; after each tick the young generations are
  collected (a millisecond or two), and every FULL_EVERY ticks the whole heap, unless the
  next boundary is too close, in which case the work waits for a tick with room.

Memory is still reclaimed: reference counting frees almost everything at once, and the
collector runs at least once per tick.
"""

from __future__ import annotations

import gc

FULL_EVERY = 60  # ticks between full collections
# A full collection is skipped when less than this is left before the next boundary.
FULL_NEEDS_MS = 100
YOUNG_NEEDS_MS = 10


class Collector:
    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self.full_every = full_every
        self._since_full = 0
        self.collections = {"young": 0, "full": 0, "skipped": 0}
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        """Collect and freeze what start-up made; from now on, only between ticks."""
        gc.collect()
        gc.freeze()
        gc.disable()

    def after_tick(self, ms_to_boundary: float) -> None:
        """Collect in the time left before the next boundary (`ms_to_boundary`)."""
        self._since_full += 1
        if self._since_full >= self.full_every and ms_to_boundary >= FULL_NEEDS_MS:
            gc.collect()
            self._since_full = 0
            self.collections["full"] += 1
        elif ms_to_boundary >= YOUNG_NEEDS_MS:
            gc.collect(1)
            self.collections["young"] += 1
        else:
            self.collections["skipped"] += 1

    def stop(self) -> None:
        """Back to automatic collection (a worker that stands down, tests)."""
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
