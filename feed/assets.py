"""Which assets the feed streams: those of every slot in the slots hash (what the worker
trades: an operator adds a slot on a new asset while everything runs), read every few
seconds; the configured ones (BATON_ASSETS) while the hash holds none, as on a fresh Redis
before a worker seeded it. The feed reconnects with the new set when it changes.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from state.keys import Keys
from state.structs import SLOT

# How often the slots hash is read for a change of assets.
SLOTS_POLL_S = 5.0
# An asset as the settings accept one: anything else in a hand-written slot is not streamed.
_ASSET = re.compile(r"[a-z0-9]{1,16}")


def assets_of(values: list[Any]) -> tuple[str, ...]:
    """The sorted assets of the slots' JSON values (unreadable ones and bad assets left out)."""
    out = set()
    for raw in values:
        try:
            asset = SLOT.decode(raw).asset
        except msgspec.DecodeError:
            continue
        if _ASSET.fullmatch(asset):
            out.add(asset)
    return tuple(sorted(out))


def _unreadable(raw: Any) -> bool:
    try:
        SLOT.decode(raw)
    except msgspec.DecodeError:
        return True
    return False


async def slot_assets(
    redis: Any, keys: Keys, configured: tuple[str, ...], streaming: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The assets to stream now (one HVALS); raises the client's error when Redis cannot say.

    While a slot's value is unreadable its asset is unknown, so the assets `streaming` now
    stay in the set: garbage in one slot stops that slot only (the worker's rule), never the
    candles of the other slots on its asset, nor makes the feed reconnect."""
    values = await redis.hvals(keys.slots())
    assets = assets_of(values)
    if streaming and any(_unreadable(v) for v in values):
        assets = tuple(sorted({*assets, *streaming}))
    return assets or tuple(configured)
