"""The one place that reads the wall clock: `wall_ms()` for everyone, and the injectable clock
the tick loop asks for the time and waits on, so that tests run the same loop on a virtual
clock that jumps instead of sleeping; and `monotonic_ms()`, for the lease deadline."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


def wall_ms() -> int:
    """Wall-clock time, in whole milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> float:
    """This process's monotonic clock, in milliseconds: it never jumps with the wall clock
    (NTP, a hand-set date) and goes on while the process is stopped (SIGSTOP, a frozen VM),
    which is what a deadline measured by this worker alone must count."""
    return time.monotonic_ns() / 1_000_000


def wall_ns() -> int:
    """Wall-clock time in nanoseconds, comparable with a file's st_mtime_ns."""
    return time.time_ns()


def wall_utc() -> datetime:
    """Wall-clock time as an aware UTC datetime, for the stamps in file and release names."""
    return datetime.fromtimestamp(time.time_ns() / 1e9, UTC)


def wall_ms_precise() -> float:
    """Wall-clock time in milliseconds with the sub-millisecond part kept, for measuring
    latencies of a millisecond or less."""
    return time.time_ns() / 1_000_000


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until_ms(self, t_ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return wall_ms()

    async def sleep_until_ms(self, t_ms: int) -> None:
        # Sleep short of the target and then spin on tiny sleeps: asyncio's timer alone
        # lands a millisecond or two late, and tick start jitter is something we measure.
        while True:
            left_s = (t_ms - wall_ms_precise()) / 1000
            if left_s <= 0:
                return
            await asyncio.sleep(left_s - 0.002 if left_s > 0.004 else 0.0005)


class VirtualClock:
    """Time moves only when a sleeper asks: sleeping jumps the clock to the target."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.t_ms = start_ms

    def now_ms(self) -> int:
        return self.t_ms

    def advance(self, ms: int) -> None:
        self.t_ms += ms

    async def sleep_until_ms(self, t_ms: int) -> None:
        self.t_ms = max(self.t_ms, t_ms)
        await asyncio.sleep(0)
