"""Binance's formats, shared by the feed (which reads them) and the sim (which serves them):
symbols, kline intervals, combined-stream kline frames and REST kline rows.

Owns decoding and validation only (msgspec structs, one decoder each, built once); it turns
a raw frame into a `CandleUpdate`, a `ServerShutdown` notice, or raises `BadFrame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated

import msgspec

from baton.errors import BadFrame
from state.structs import Candle

# Prices arrive as strings; `strict=False` lets msgspec parse them as floats, and these bounds
# reject what a string can smuggle in that a price must never be (nan, inf, zero, negative).
Price = Annotated[float, msgspec.Meta(gt=0, lt=1e15)]
Volume = Annotated[float, msgspec.Meta(ge=0, lt=1e30)]
SAMPLE_CHARS = 200
# Binance's kline intervals, in seconds.
INTERVALS_S = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
}
# The intervals the feed can store, in milliseconds.
INTERVAL_MS = {"1s": 1000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000}


# The IP's REST request weight used in the current minute, on every Binance REST answer
# ("X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)", binance-spot-api-docs rest-api.md,
# "IP Limits"; spot's one weight limiter is per minute).
USED_WEIGHT_1M = "X-MBX-USED-WEIGHT-1M"


def used_weight_1m(headers: Mapping[str, str]) -> int | None:
    """The venue's own count of this IP's weight this minute, from an answer's headers; None
    when it is absent or not a count (a proxy that strips it, garbage)."""
    raw = headers.get(USED_WEIGHT_1M, "")
    return int(raw) if raw.isdigit() and len(raw) <= 9 else None


def symbol(asset: str) -> str:
    """Binance's spot symbol of an asset against USDT: btc -> BTCUSDT."""
    return f"{asset.upper()}USDT"


def asset_of_symbol(sym: str) -> str | None:
    """The asset of a USDT symbol (BTCUSDT -> btc); None for any other symbol."""
    s = sym.upper()
    return s[:-4].lower() if s.endswith("USDT") and len(s) > 4 else None


class Kline(msgspec.Struct, frozen=True):
    open_ms: int = msgspec.field(name="t")
    close_ms: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    interval: str = msgspec.field(name="i")
    open: Price = msgspec.field(name="o")
    close: Price = msgspec.field(name="c")
    high: Price = msgspec.field(name="h")
    low: Price = msgspec.field(name="l")
    volume: Volume = msgspec.field(name="v")
    closed: bool = msgspec.field(name="x")


class KlineEvent(msgspec.Struct, frozen=True, tag_field="e", tag="kline"):
    event_ms: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    k: Kline


class ServerShutdown(msgspec.Struct, frozen=True, tag_field="e", tag="serverShutdown"):
    """Binance's warning that it is about to drop the connection."""

    event_ms: int = msgspec.field(name="E", default=0)


class Frame(msgspec.Struct, frozen=True):
    stream: str = ""
    data: KlineEvent | ServerShutdown | None = None
    # A bare event (no combined-stream wrapper) carries its type at the top level.
    e: str = ""


class KlineRow(msgspec.Struct, array_like=True, frozen=True):
    """A REST kline row; the trailing fields (trades, quote volume, ...) are ignored."""

    open_ms: int
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    close_ms: int


class CandleUpdate(msgspec.Struct, frozen=True):
    asset: str
    candle: Candle


_FRAME = msgspec.json.Decoder(Frame, strict=False)
# Every frame names its symbol: a small cache saves the string work on the hot path.
_asset_of_symbol = lru_cache(maxsize=1024)(asset_of_symbol)
_ROWS = msgspec.json.Decoder(list[KlineRow], strict=False)


def stream_names(assets: tuple[str, ...] | list[str], interval: str) -> list[str]:
    return [f"{symbol(a).lower()}@kline_{interval}" for a in assets]


def stream_url(ws_url: str, assets: tuple[str, ...] | list[str], interval: str) -> str:
    return f"{ws_url.rstrip('/')}/stream?streams={'/'.join(stream_names(assets, interval))}"


def sample(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    return text[:SAMPLE_CHARS]


def parse_frame(raw: str | bytes, assets: frozenset[str], interval: str) -> CandleUpdate | ServerShutdown:
    try:
        frame = _FRAME.decode(raw)
    except msgspec.ValidationError as e:
        raise BadFrame(f"wrong shape: {e}") from None
    except msgspec.DecodeError as e:
        raise BadFrame(f"not JSON: {e}") from None
    data = frame.data
    if data is None:
        if frame.e == "serverShutdown":
            return ServerShutdown()
        raise BadFrame(f"no `data` in frame (e={frame.e!r})")
    if isinstance(data, ServerShutdown):
        return data
    k = data.k
    asset = _asset_of_symbol(data.symbol)
    if asset is None or asset not in assets:
        raise BadFrame(f"unknown symbol {data.symbol!r}")
    if k.symbol != data.symbol:
        raise BadFrame(f"kline symbol {k.symbol!r} differs from event symbol {data.symbol!r}")
    if k.interval != interval:
        raise BadFrame(f"interval {k.interval!r}, expected {interval!r}")
    if k.high < max(k.open, k.close, k.low) or k.low > min(k.open, k.close):
        raise BadFrame(f"inconsistent kline o={k.open} h={k.high} l={k.low} c={k.close}")
    return CandleUpdate(asset, Candle(k.open_ms, k.open, k.high, k.low, k.close, k.volume, k.closed))


def parse_rows(raw: bytes, now_ms: int) -> list[Candle]:
    """REST kline rows as candles; a row whose close time has not passed is still open."""
    try:
        rows = _ROWS.decode(raw)
    except msgspec.DecodeError as e:
        raise BadFrame(f"klines response: {e}") from None
    return [Candle(r.open_ms, r.open, r.high, r.low, r.close, r.volume, r.close_ms < now_ms) for r in rows]
