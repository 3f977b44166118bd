from kernel import boundaries
from kernel.clock import VirtualClock
from kernel.windows import slug, window_bounds


def test_ticks_are_aligned_to_wall_clock_multiples():
    assert boundaries.tick_index(10_000, 5000) == 2
    assert boundaries.tick_index(14_999, 5000) == 2
    assert boundaries.boundary_ms(3, 5000) == 15_000
    assert boundaries.next_tick(15_000, 5000) == 3
    assert boundaries.next_tick(15_001, 5000) == 4


def test_a_tick_that_overruns_skips_boundaries_and_counts_them_missed():
    # tick 3 ran from 15.0 s and finished at 26.2 s: boundaries 20 s and 25 s passed
    assert boundaries.plan_next(3, 26_200, 5000) == (6, 2)
    # a tick that finished in time misses nothing
    assert boundaries.plan_next(3, 15_040, 5000) == (4, 0)


async def test_the_virtual_clock_jumps_instead_of_sleeping():
    c = VirtualClock(1_000)
    await c.sleep_until_ms(5_000)
    assert c.now_ms() == 5_000
    await c.sleep_until_ms(4_000)  # never goes back
    assert c.now_ms() == 5_000


def test_windows_align_to_their_timeframe_and_have_a_slug():
    assert window_bounds(1_700_000_123_456, "5m") == (1_700_000_100, 1_700_000_400)
    assert window_bounds(1_700_000_123_456, "15s") == (1_700_000_115, 1_700_000_130)
    assert slug("btc", "15m", 1_700_000_100) == "btc-updown-15m-1700000100"
