"""The books against a venue that charges fees and fills what its book holds: on the tick rig
(tests/fast/rig.py: the sim's CLOB over a real socket, its taker fees charged), every slot
buys, sells part of its position, then the rest or holds it to settlement, window after
window; the e2e invariants (tests/e2e/invariants.py) and the chaos checker's checks of the
positions and the ledger (tests/chaos/) then judge what Redis and the sim hold, exactly."""

from __future__ import annotations

from typing import Any

import fakeredis
import httpx
import pytest

from kernel.clock import VirtualClock
from kernel.strategy_api import Buy, Exit, Pass
from sim.clob import ClobSim, create_app
from sim.fees import Fee
from sim.model import PriceModel
from tests.chaos import ledger_checks, order_checks
from tests.chaos.context import snapshot
from tests.chaos.report import RunData
from tests.e2e import invariants
from tests.fast.rig import ASSETS, SEED, Rig
from tests.simserver import ThreadServer

# The 15m markets' taker fee (sim/fees.py DEFAULT_FEES), on the rig's 15 s windows.
FEES = {"15s": Fee(base_fee=1000, rate=0.072, exponent=1.0)}


@pytest.fixture
async def rig(store, fake_server):
    """tests/fast/conftest.py's rig, its sim charging taker fees."""
    clock = VirtualClock((1_795_000_000 // 15) * 15 * 1000 + 500)
    model = PriceModel(SEED)
    sim = ClobSim(
        model,
        seed=SEED,
        chain_id=137,
        assets=tuple(ASSETS.split(",")),
        timeframes=("15s",),
        clock_ms=clock.now_ms,
        fees=FEES,
    )
    with ThreadServer(create_app(sim)) as url:
        r = Rig(store, url, clock, model, fake_server)
        await r.start()
        yield r
        r.venue.close()


def in_and_out() -> type:
    """Buys the cheaper side at its ask; then, while it holds, sells half at the bid on its
    first exit and the rest on its second in windows that start on an even 30 s, and holds
    what is left to settlement in the others."""

    class InAndOut:
        EXITS = True

        @staticmethod
        def quotes_from_ms(start_ms: int, end_ms: int, params: Any) -> int:
            return start_ms

        @staticmethod
        def evaluate(inp: Any) -> Any:
            if inp.position is None:
                if inp.up_ask is None or inp.down_ask is None:
                    return Pass(reason="no book")
                side = "up" if inp.up_ask <= inp.down_ask else "down"
                ask = inp.up_ask if side == "up" else inp.down_ask
                return Buy(side=side, limit_price=ask, stake_usd=10.0, reason="in")
            book = inp.up_book if inp.position.side == "up" else inp.down_book
            bid = book.best_bid if book is not None else None
            sell_all = inp.window_start_ms % 30_000 == 0
            if bid is None or inp.position.exits >= (2 if sell_all else 1):
                return Pass(reason="holding")
            half = 0.0 if inp.position.exits else round(inp.position.shares / 2, 2)
            return Exit(limit_price=bid, shares=half, reason="out", order_type="FAK")

    return InAndOut


def _run_data(r: Any, orders: list[dict[str, Any]], end_ms: int) -> RunData:
    got = snapshot(r)
    fields = {f: got[f] for f in ("intents", "open_intents", "positions", "open_positions", "ledger")}
    return RunData(
        tick_ms=1000,
        first_tick=0,
        end_ms=end_ms,
        settle_grace_ms=10_000,
        journal=[],
        venue_orders=orders,
        ledger_totals=got["ledger_totals"],
        faults=[],
        **fields,
    )


async def test_sales_fees_and_settlements_at_the_sim_add_up_to_the_micro(rig, fake_server):
    rig.resolver = lambda name: in_and_out()
    await rig.store.ensure_counts(rig.clock.now_ms())  # as a lease holder does before trading
    venue_before = rig.venue.collateral_micros()
    outs = await rig.run_ticks(75)
    rig.resolver = lambda name: type("Idle", (), {"evaluate": staticmethod(lambda inp: None)})
    await rig.run_ticks(20)  # every window ends, resolves and is settled
    assert sum(o.record.exits for o in outs) > 0
    r = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    orders = httpx.get(f"{rig.settings.clob_url}/data/orders", timeout=5).json()["data"]
    rep = invariants.check_orders(r, orders)
    assert rep.exits >= 4, rep
    assert invariants.check_ledger(r) > rep.filled
    invariants.check_counts(r)
    positions = invariants.redis_positions(r)
    assert {p.status for p in positions} >= {"closed", "settled"}
    assert any(p.status == "settled" and p.sold_shares_micros for p in positions), "a partly sold one settled"
    totals = {k: int(v) for k, v in r.hgetall("baton:ledger:totals").items()}
    assert totals["fee_micros"] > 0 and totals["sell_micros"] > 0, totals
    # The venue's cash moved by exactly what the ledger says: fees, sales and payouts as charged.
    assert r.hlen("baton:positions:open") == 0 and r.hlen("baton:intents:open") == 0
    deposits = sum(int(f["amount_micros"]) for _, f in r.xrange("baton:ledger") if f["kind"] == "deposit")
    moved = rig.venue.collateral_micros() - venue_before
    assert moved == totals["cash_micros"] - deposits
    d = _run_data(r, orders, rig.clock.now_ms())
    for check in (order_checks.check_orders, order_checks.check_positions, ledger_checks.check_ledger):
        rows, _ = check(d)
        assert [(x.name, x.evidence) for x in rows if x.ok is False] == []
