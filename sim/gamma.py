"""The sim's Gamma discovery answers (served on the CLOB port by sim.clob): `/events?slug=`.

Answers in Gamma's shape, including its habit of JSON-encoding list fields as strings
(`clobTokenIds`, `outcomes`, `outcomePrices`), so that discovery code parses the real thing.
"""

from __future__ import annotations

import json
from typing import Any

from sim.markets import MIN_ORDER_SIZE, TICK_SIZE, Window, iso


def event(w: Window, up_price: float, now_s: int) -> dict[str, Any]:
    closed = now_s >= w.end_s
    eid = str(int(w.condition_id[2:14], 16))
    market = {
        "id": str(int(w.condition_id[14:26], 16)),
        "question": w.title,
        "conditionId": w.condition_id,
        "slug": w.slug,
        "startDate": iso(w.start_s),
        "endDate": iso(w.end_s),
        "eventStartTime": iso(w.start_s),
        "outcomes": json.dumps(["Up", "Down"]),
        "outcomePrices": json.dumps([f"{up_price:g}", f"{1.0 - up_price:g}"]),
        "clobTokenIds": json.dumps([w.up_token, w.down_token]),
        "active": True,
        "closed": closed,
        "acceptingOrders": not closed,
        "enableOrderBook": True,
        "orderPriceMinTickSize": TICK_SIZE,
        "orderMinSize": MIN_ORDER_SIZE,
        "negRisk": False,
    }
    return {
        "id": eid,
        "ticker": w.slug,
        "slug": w.slug,
        "title": w.title,
        "startDate": iso(w.start_s),
        "endDate": iso(w.end_s),
        "active": True,
        "closed": closed,
        "negRisk": False,
        "markets": [market],
    }
