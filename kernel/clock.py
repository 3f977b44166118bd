"""The injectable clock: the tick loop asks it for the time and waits on it, so that tests
run the same loop on a virtual clock that jumps instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until_ms(self, t_ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until_ms(self, t_ms: int) -> None:
        # Sleep short of the target and then spin on tiny sleeps: asyncio's timer alone
        # lands a millisecond or two late, and tick start jitter is something we measure.
        while True:
            left_s = (t_ms - time.time_ns() / 1_000_000) / 1000
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
