"""The tick rig: the kernel's tick on a virtual clock, fakeredis for state, the sim's CLOB over a
real socket (through py-clob-client-v2) for the venue, candles written as the feed writes them;
and the test strategies the tick tests give its slots.

The sim and the worker share the virtual clock, so windows open, trade and resolve in
microseconds of real time, deterministically. The `rig` fixture is in tests/fast/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis
import msgspec

from baton.settings import SIM_PRIVATE_KEY, load
from kernel import settlement
from kernel.clock import VirtualClock
from kernel.settlement import Enqueuer
from kernel.strategy_api import Decision
from kernel.tick import Identity, TickRunner, resolve_strategy
from sim.model import PriceModel
from state.structs import CANDLE, FEED_STATUS, Candle, FeedStatus, usd_to_micros
from venues.polymarket import ClobVenue
from worker import settle as settle_program
from worker.lifecycle import configured_slots

SEED = 5
ASSETS = "btc,eth,sol,xrp"


class Rig:
    def __init__(self, store, url: str, clock: VirtualClock, model: PriceModel, server=None) -> None:
        self.store = store
        # rq is synchronous: the settlement queue and its worker use a sync client on the
        # same fake server as the store.
        self.sync = fakeredis.FakeRedis(server=server) if server is not None else None
        self.clock = clock
        self.model = model
        self.settings = msgspec.structs.replace(
            load(
                {
                    "BATON_TICK_MS": "1000",
                    "BATON_TIMEFRAMES": "15s",
                    "BATON_ASSETS": ASSETS,
                }
            ),
            clob_url=url,
            gamma_url=url,
        )
        self.venue = ClobVenue(url, url, SIM_PRIVATE_KEY, 137)
        self.epoch = 0
        self.runner: TickRunner | None = None
        # The strategy resolver a test chose (None: the worker's, the slot's own module).
        self.resolver: Callable[[str], Any] | None = None

    def resolve(self, name: str) -> Any:
        """The runner's strategy resolver (injected): the test's, else the worker's."""
        return (self.resolver or resolve_strategy)(name)

    async def feed(self) -> None:
        """What the feed would have written by now: closed 1s candles and a fresh status."""
        now_s = self.clock.now_ms() // 1000
        pipe = self.store.r.pipeline(transaction=False)
        for a in self.settings.assets:
            members = {}
            for sec in range(now_s - 70, now_s):
                o, h, lo, c = self.model.candle(a, sec)
                members[CANDLE.encode(Candle(sec * 1000, o, h, lo, c, 1.0, True)).decode()] = sec * 1000
            pipe.zadd(self.store.k.candles(a, "1s"), members)
            status = FeedStatus(self.clock.now_ms(), (now_s - 1) * 1000, c)
            pipe.hset(self.store.k.feed_status(), f"{a}:1s", FEED_STATUS.encode(status))
        await pipe.execute()

    async def start(self) -> None:
        await self.store.ensure_schema()
        # Edge 0: snipe enters whenever its estimate reaches the ask, so every window trades.
        await self.store.ensure_slots(configured_slots(self.settings, {"edge": 0.0}))
        _, self.epoch, _ = await self.store.acquire_lease("blue:t", "blue", "test", self.clock.now_ms(), 3000)
        await self.store.deposit(
            self.epoch, "deposit:paper-initial", usd_to_micros(1000), self.clock.now_ms()
        )
        self.settler = Enqueuer(self.sync, "baton:") if self.sync is not None else None
        settle_program.configure(self.venue, self.clock.now_ms)
        self.runner = TickRunner(
            self.settings,
            self.store,
            self.venue,
            self.clock,
            Identity("blue:t", "blue", "test", self.epoch),
            settler=self.settler,
            resolve=self.resolve,
        )

    def settle(self) -> int:
        """Run the settlement jobs enqueued so far, as the settle program would: jobs run."""
        if self.sync is None:
            return 0
        queue = settlement.settle_queue(self.sync, "baton:")
        n = queue.count
        if n:
            settle_program.settle_worker(queue, "baton:").work(burst=True)
        return n

    async def run_ticks(self, n: int) -> list:
        out = []
        first = self.clock.now_ms() // 1000 + 1
        for k in range(first, first + n):
            await self.clock.sleep_until_ms(k * 1000)
            await self.feed()
            assert self.runner is not None
            out.append(await self.runner.run(k))
            await self.runner.between_ticks((k + 1) * 1000)
            await self.runner.wait_prefetch()
            self.settle()
        return out


def last_five_seconds(asked: list[int]) -> type:
    """A strategy (a fresh class: tests change it) that wants quotes only in the last 5 s of a
    window, and never trades; `asked` gets the ms left at each needs_quotes call."""

    class LastFiveSeconds:
        @staticmethod
        def quotes_from_ms(start_ms, end_ms, params):
            return end_ms - 5000

        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.window_end_ms - inp.now_ms)
            return False

        @staticmethod
        def evaluate(inp):
            return None

    return LastFiveSeconds


def enter_at_once(asked: list[str]) -> type:
    """last_five_seconds' strategy (a fresh class), but it buys Up at the first chance; `asked`
    gets the slot id at each needs_quotes call."""

    class EnterAtOnce(last_five_seconds([])):
        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.slot_id)
            return True

        @staticmethod
        def evaluate(inp):
            if inp.up_ask is None:
                return None
            return Decision(side="up", limit_price=inp.up_ask, stake_usd=5.0, p_up=0.9, reason="test")

    return EnterAtOnce
