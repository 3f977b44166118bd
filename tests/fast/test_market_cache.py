"""The markets the tick keeps in memory (kernel/markets.py), on the rig (tests/fast/rig.py)."""

from __future__ import annotations

from kernel.snapshot import SlotRef
from state.structs import Market


async def test_markets_kept_in_memory_are_pruned_in_amortised_time(rig):
    """Markets are kept in memory until their window is an hour gone. Short windows put more
    of them into an hour than the map's floor: it must not be copied on every new market (it
    was, and at 1,024 slots on 15 s windows that copying was most of the worker's CPU)."""

    runner = rig.runner
    now_s = rig.clock.now_ms() // 1000
    floor = 4 * len(runner.configured) + 64
    copies, seen = 0, runner.markets.known

    def remember(i: int, end_s: int) -> None:
        nonlocal copies, seen
        ref = SlotRef(f"s{i}", f"a{i}", "15s", end_s - 15, end_s)
        runner.markets.remember(ref, Market(slug=ref.slug, condition_id="0x1", up_token="1", down_token="2"))
        if runner.markets.known is not seen:
            copies, seen = copies + 1, runner.markets.known

    for i in range(20 * floor):  # all within the last hour: none may go
        remember(i, now_s - 60)
    assert len(runner.markets.known) == 20 * floor
    assert copies <= 6  # doubling: about log2(20) looks, not one per market
    # An hour later they all go at the next look, and the map is small again.
    await rig.clock.sleep_until_ms((now_s + 3700) * 1000)
    for i in range(20 * floor, 60 * floor):
        remember(i, now_s + 3690)
    assert all(v[1] == now_s + 3690 for v in runner.markets.known.values())
    assert len(runner.markets.known) == 40 * floor
