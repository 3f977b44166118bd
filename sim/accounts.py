"""The sim's accounts: collateral (USDC) and outcome-token positions per maker address.

Why: the live CLOB refuses an order its maker cannot pay for (`not enough balance /
allowance`), and the runtime must classify that as final. Every address starts with the same
configurable balance (`BATON_SIM_BALANCE_USD`, generous by default so that ordinary runs never
hit it). Amounts are integer micro-units (1 USDC = 1 share = 1_000_000), as on the chain.

Resting (GTC) orders reserve what they could still cost, as the live venue does. A position
in a window that has ended is redeemed automatically: the winning side pays 1 USDC a share.
(Live, redemption is an on-chain step after resolution; the sim folds it in so that a long
sim run does not drain its balance.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from baton.errors import SettingsError
from sim.markets import Window
from venues.clob_results import NOT_ENOUGH_BALANCE

MICRO = 1_000_000
DEFAULT_BALANCE_USD = 1_000_000.0
# What the live CLOB reports for an unlimited ERC-20 approval: 2**256 - 1.
MAX_ALLOWANCE = str(2**256 - 1)
# The live CLOB's words for an order its maker cannot pay for (or a SELL of shares not held).
NOT_ENOUGH = NOT_ENOUGH_BALANCE


def balance_from_env(env: Mapping[str, str]) -> int:
    """The initial balance of every address, in micro-USDC."""
    raw = env.get("BATON_SIM_BALANCE_USD", "").strip()
    if not raw:
        return int(DEFAULT_BALANCE_USD * MICRO)
    try:
        usd = float(raw)
    except ValueError:
        raise SettingsError(f"BATON_SIM_BALANCE_USD={raw!r} is not a number") from None
    if not 0.0 <= usd < 1e12:
        raise SettingsError(f"BATON_SIM_BALANCE_USD={raw!r} must be between 0 and 1e12")
    return round(usd * MICRO)


@dataclass
class Position:
    window: Window
    micro: int = 0


class Accounts:
    def __init__(self, initial_micro: int, outcome_up: Callable[[Window], bool]) -> None:
        self.initial_micro = initial_micro
        self._outcome_up = outcome_up
        self._cash: dict[str, int] = {}
        self._positions: dict[str, dict[str, Position]] = {}

    def cash(self, address: str, now_s: int) -> int:
        """Collateral of an address (before reservations), after redeeming ended windows."""
        a = address.lower()
        self._redeem(a, now_s)
        return self._cash.get(a, self.initial_micro)

    def shares(self, address: str, token_id: str, now_s: int) -> int:
        a = address.lower()
        self._redeem(a, now_s)
        p = self._positions.get(a, {}).get(token_id)
        return p.micro if p else 0

    def set_cash(self, address: str, micro: int) -> None:
        self._cash[address.lower()] = micro

    def buy(self, address: str, w: Window, token_id: str, shares: int, cost: int) -> None:
        a = address.lower()
        self._cash[a] = self._cash.get(a, self.initial_micro) - cost
        p = self._positions.setdefault(a, {}).setdefault(token_id, Position(w))
        p.micro += shares

    def sell(self, address: str, token_id: str, shares: int, proceeds: int) -> None:
        a = address.lower()
        self._cash[a] = self._cash.get(a, self.initial_micro) + proceeds
        p = self._positions[a][token_id]
        p.micro -= shares
        if p.micro <= 0:
            del self._positions[a][token_id]

    def _redeem(self, a: str, now_s: int) -> None:
        held = self._positions.get(a)
        if not held:
            return
        for token_id, p in list(held.items()):
            w = p.window
            if now_s < w.end_s:
                continue
            up_won = self._outcome_up(w)
            if (token_id == w.up_token) == up_won:
                self._cash[a] = self._cash.get(a, self.initial_micro) + p.micro
            del held[token_id]
