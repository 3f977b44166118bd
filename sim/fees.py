"""The sim's fee schedule, per market timeframe, as the live CLOB publishes it.

Why: the runtime reads fees from the venue, never hard-codes them, so the sim must publish
them in the live shapes: `GET /fee-rate` -> `{"base_fee": <bps>}` (the legacy V1 flag: 1000 on
markets that charge taker fees, 0 elsewhere) and the V2 parameters in `GET /clob-markets/{id}`
-> `"fd": {"r": rate, "e": exponent, "to": true}`, where a taker pays
`shares * r * (p * (1 - p)) ** e` (py-clob-client-v2's fees.py).

Polymarket charges taker fees on its 15-minute crypto markets only; the default below uses
the crypto rate py-clob-client-v2's tests call production (r = 0.072, e = 1). Override with
`BATON_SIM_FEES`, a JSON object by timeframe, e.g.
`{"15m": {"base_fee": 1000, "rate": 0.072, "exponent": 1}, "5m": {"base_fee": 0}}`;
a timeframe not named is fee-free. A taker is charged the published fee in collateral when
its order matches (sim/orders.py); what rests and matches later, as the maker, pays none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from baton.errors import SettingsError
from baton.settings import timeframe_seconds


@dataclass(frozen=True)
class Fee:
    base_fee: int = 0  # bps, as GET /fee-rate answers it
    rate: float = 0.0
    exponent: float = 0.0

    def per_share(self, price: float) -> float:
        """The taker fee of one share at this price, in USDC."""
        return self.rate * (price * (1.0 - price)) ** self.exponent


NO_FEE = Fee()
DEFAULT_FEES: dict[str, Fee] = {"15m": Fee(base_fee=1000, rate=0.072, exponent=1.0)}


def _fee(tf: str, raw: Any) -> Fee:
    if not isinstance(raw, dict) or set(raw) - {"base_fee", "rate", "exponent"}:
        raise SettingsError(f'BATON_SIM_FEES: {tf!r} must be an object with "base_fee", "rate", "exponent"')
    try:
        fee = Fee(int(raw.get("base_fee", 0)), float(raw.get("rate", 0.0)), float(raw.get("exponent", 0.0)))
    except (TypeError, ValueError):
        raise SettingsError(f"BATON_SIM_FEES: {tf!r} has a value that is not a number") from None
    if fee.base_fee < 0 or not 0.0 <= fee.rate <= 1.0 or fee.exponent < 0:
        raise SettingsError(f"BATON_SIM_FEES: {tf!r} needs base_fee >= 0, 0 <= rate <= 1, exponent >= 0")
    return fee


def fees_from_env(env: Mapping[str, str]) -> dict[str, Fee]:
    raw = env.get("BATON_SIM_FEES", "").strip()
    if not raw:
        return dict(DEFAULT_FEES)
    try:
        table = json.loads(raw)
    except ValueError as e:
        raise SettingsError(f"BATON_SIM_FEES is not JSON: {e}") from None
    if not isinstance(table, dict):
        raise SettingsError('BATON_SIM_FEES must be a JSON object such as {"15m": {"base_fee": 1000}}')
    for tf in table:
        try:
            timeframe_seconds(tf)
        except SettingsError as e:
            raise SettingsError(f"BATON_SIM_FEES: {e}") from None
    return {tf: _fee(tf, v) for tf, v in table.items()}
