"""Where a slot's strategy is found (`resolve_strategy`, in STRATEGY_PACKAGE) and the readiness
check's dry evaluation of every configured slot's strategy before a worker's first tick
(`dry_run`; the rules it checks are kernel/strategy_check.py's). The tick runner
(kernel/tick.py) calls it with its own caches, which the read here warms for the first tick.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from baton.errors import NotReady
from kernel import strategy_check
from kernel.candle_cache import VOL_LOOKBACK_S, CandleCache, Lookbacks
from kernel.entries import ENTRY_CHUNKS, Entries, with_asks
from kernel.snapshot import read_snapshot, slot_refs
from kernel.strategy_api import BookSide
from kernel.wakes import WakeSchedule
from state.store import Store

log = logging.getLogger("baton.tick")

STRATEGY_PACKAGE = "worker.strategies"
# The books the readiness check gives a slot's real input besides none: an even market.
SAMPLE_BOOKS = (
    BookSide(bids=((0.48, 100.0), (0.47, 300.0)), asks=((0.5, 100.0), (0.51, 300.0))),
    BookSide(bids=((0.48, 100.0), (0.47, 300.0)), asks=((0.5, 100.0), (0.51, 300.0))),
)


def resolve_strategy(name: str) -> ModuleType:
    """The strategy module, looked up on every call so that a reload is seen at once."""
    return importlib.import_module(f"{STRATEGY_PACKAGE}.{name}")


async def dry_run(
    store: Store,
    now: int,
    configured: list[tuple[str, str, str]],
    candles: CandleCache,
    wakes: WakeSchedule,
    asset_lookbacks: Lookbacks,
    resolve: Callable[[str], Any],
    entries: Entries,
) -> int:
    """The readiness check's dry evaluation: read what a tick reads (candle windows,
    positions, intents; no lease), then run every configured slot's strategy on its real
    input where there is one and on synthetic ones besides. Nothing is committed.
    Returns the number of slots checked; raises NotReady naming the slot and the error."""
    refs = slot_refs(configured, now)
    snap = await read_snapshot(store, refs, now, None, VOL_LOOKBACK_S, candles)
    # The slots' strategies may look further back than the minute read with the slots:
    # their assets are read again as far as they declare (the first tick then reads only
    # what is new, its slots known from this read).
    wakes.slots = snap.slots
    lookbacks = asset_lookbacks.of(refs, snap.slots, snap.recent)
    if any(s > VOL_LOOKBACK_S for s in lookbacks.values()):
        snap = await read_snapshot(store, refs, now, None, lookbacks, candles)
    if snap.problems:
        log.warning("readiness: %d unreadable value(s): %s", len(snap.problems), snap.problems[:3])
    for ref in refs:
        slot = snap.slots.get(ref.id)
        if slot is None:
            continue  # removed since the list was read: nothing of it runs
        inputs = strategy_check.sample_inputs(now)
        try:
            strat = resolve(slot.strategy)
        except ModuleNotFoundError as e:
            if e.name != f"{STRATEGY_PACKAGE}.{slot.strategy}":
                raise NotReady(
                    f"slot {ref.id}: strategy {slot.strategy!r} cannot be loaded: {e!r}"
                ) from e
            # Named before it was reloaded into this release (`baton slots add`, then
            # `baton reload`): that slot trades nothing until then (its ticks say so);
            # the others must not wait for it.
            log.warning("readiness: slot %s: no strategy %r in this release yet", ref.id, slot.strategy)
            continue
        try:
            real = entries.slot_input(snap, ref, now, strat)
            if real is not None:
                inputs.insert(0, with_asks(real, None, None))
                inputs.insert(0, with_asks(real, *SAMPLE_BOOKS))
            strategy_check.dry_evaluate(strat, inputs, asset_lookbacks.cap_s)
        except Exception as e:
            raise NotReady(
                f"slot {ref.id}: strategy {slot.strategy!r} failed its dry evaluation: {e!r}"
            ) from e
    # The Redis connections an entry tick uses at once (its chunks', the decisions') are
    # opened now, not by the first entry burst (a handshake each, inside the tick).
    await asyncio.gather(*(store.r.ping() for _ in range(ENTRY_CHUNKS + 2)))
    return len(refs)
