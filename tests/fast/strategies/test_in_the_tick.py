"""The template and momentum in the real tick, against the sim's CLOB over a socket (the tick
rig, tests/fast/rig.py, on a virtual clock and 15 s windows): each enters and exits within one
window, and its decision log says why at every step."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from baton.cli.strategy import write_new
from kernel.tick import resolve_strategy
from state.structs import SLOT, Intent, Slot
from tests.fast.rig import Rig
from worker.strategies import momentum


def template(tmp_path: Path) -> ModuleType:
    (tmp_path / "worker" / "strategies").mkdir(parents=True)
    made = write_new(tmp_path, "tmpl")
    spec = importlib.util.spec_from_file_location("_tick_tmpl", made.module)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


async def trade(rig: Rig, slots: dict[str, tuple[Slot, Any]], ticks: int) -> None:
    """Add `slots` (slot, module) beside the rig's own and run `ticks` ticks."""
    by_name = {s.strategy: m for s, m in slots.values()}
    rig.resolver = lambda name: by_name[name] if name in by_name else resolve_strategy(name)
    for slot, _ in slots.values():
        await rig.store.r.hset(rig.store.k.slots(), slot.id, SLOT.encode(slot).decode())
    await rig.run_ticks(ticks)


def windows_entered_and_exited(intents: list[Intent], slot: str) -> set[int]:
    """The windows of `slot` in which an entry and an exit both filled."""
    filled = [i for i in intents if i.slot == slot and i.status == "filled"]
    entered = {i.window_start_s for i in filled if i.leg == "entry"}
    return {i.window_start_s for i in filled if i.is_exit and i.window_start_s in entered}


@pytest.mark.stale_maker
async def test_the_template_and_momentum_enter_and_exit_within_a_window_at_the_sim(rig, tmp_path):
    tmpl = template(tmp_path)
    slots = {
        # Enter at once, sell at 5 cents either way (the defaults) or in the window's last 5 s.
        "tmpl.btc": (
            Slot(
                "tmpl.btc",
                "btc",
                "15s",
                stake_usd=5.0,
                strategy="tmpl",
                params={"min_move_bps": 0.0, "confirm_bars": 0.0},
            ),
            tmpl,
        ),
        # Momentum on two 15 s bars, any move; 3 cents either way, or flat in the last 5 s.
        "mom.eth": (
            Slot(
                "mom.eth",
                "eth",
                "15s",
                stake_usd=5.0,
                strategy="momentum",
                params={
                    "lookback": 2.0,
                    "min_move_bps": 0.0,
                    "min_agree": 0.5,
                    "max_price": 0.95,
                    "max_spread": 1.0,
                    "take_profit": 0.03,
                    "stop_loss": 0.03,
                    "flat_s": 60.0,
                },
            ),
            momentum,
        ),
    }
    await trade(rig, slots, 45)
    intents = await rig.store.read_intents()
    for sid in slots:
        done = windows_entered_and_exited(intents, sid)
        assert done, [(i.id, i.status, i.error) for i in intents if i.slot == sid]
        page = await rig.store.read_decisions(sid, 200)
        actions = {e.action for e in page.entries}
        assert {"buy", "sell", "pass"} <= actions, [(e.action, e.reason, e.outcome) for e in page.entries]
        assert all(e.outcome != "error" for e in page.entries)
        # Its passes say why (holding, and between which prices).
        assert all(e.reason.startswith("holding") for e in page.entries if e.action == "pass")
    closed = [p for p in await rig.store.read_positions() if p.slot in slots and p.status == "closed"]
    assert closed
