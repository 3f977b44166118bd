"""Intents and positions for the fast tests: one slot-window, btc-15m at 1700000000."""

from __future__ import annotations

from state.structs import Intent, IntentStatus, Position

NOW = 1_700_000_000_000
INTENT_ID = "btc-15m:1700000000:entry"


def intent(i: str = INTENT_ID, epoch: int = 1, status: IntentStatus = "committed") -> Intent:
    return Intent(
        id=i,
        slot="btc-15m",
        window_start_s=1_700_000_000,
        window_end_s=1_700_000_900,
        leg="entry",
        side="up",
        limit_price=0.55,
        size=9.09,
        stake_usd=5.0,
        epoch=epoch,
        created_ms=NOW,
        status=status,
    )


def position(cost: int = 5_000_000, shares: int = 9_090_000) -> Position:
    return Position(
        id="btc-15m:1700000000",
        slot="btc-15m",
        asset="btc",
        window_start_s=1_700_000_000,
        window_end_s=1_700_000_900,
        side="up",
        token_id="1",
        condition_id="0xc",
        shares_micros=shares,
        cost_micros=cost,
        opened_ms=NOW,
        intent_id=INTENT_ID,
    )
