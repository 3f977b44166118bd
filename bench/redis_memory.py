"""What Baton's state costs in Redis memory: every key's MEMORY USAGE grouped by what it holds
and divided by what it grows with, a day of it at the production configuration, and the bytes
of a candle window as the feed writes it."""

from __future__ import annotations

import statistics
import tempfile
from typing import Any, cast

from baton.settings import load
from bench.candles import Prices
from bench.redis_server import bare
from bench.rig import PREFIX
from feed.store import Batch, CandleStore
from state import connection
from state.keys import Keys

DAY_S = 86_400
# The production configuration the per-day figures are for (README: defaults).
PROD_ASSETS, PROD_TIMEFRAMES_S, PROD_TICK_MS = 8, (300, 900), 5000
JOURNAL_MAXLEN = 100_000  # state/journal.py: the tick journal's cap
RQ_RESULT_TTL_S = 24 * 3600  # kernel/settlement.py: a finished job is kept a day
MARKET_TTL_EXTRA_S = 3600  # kernel/markets.py: a market stays cached an hour past its window


# --- the key families ----------------------------------------------------------------------------

# The history (intents, positions, ledger) is pruned by the lease holder past BATON_HISTORY_DAYS
# (kernel/history.py); the day table says what it levels off at with the default.
HISTORY_DAYS = load({"BATON_HOME": tempfile.gettempdir()}).history_days
HISTORY_KEPT = f"BATON_HISTORY_DAYS ({HISTORY_DAYS:g} days)"
# (family, what it grows with, how long it is kept), matched on the key without the prefix.
FAMILIES: list[tuple[str, str, str, str]] = [
    # name, key match (prefix of the key after `baton:`, or `rq:`), grows with, kept
    ("slot wake times", "slots:wake", "slot", "one field per slot, overwritten"),
    ("slots", "slots", "slot", "until the slot is removed"),
    ("decisions", "decisions", "slot", "one per slot, overwritten"),
    ("candle marks", "candles:marks", "asset", "one field per asset, overwritten"),
    ("candle windows", "candles:", "asset", "BATON_CANDLE_RETENTION_S (1 h)"),
    ("feed status", "feed:", "asset", "one per asset, overwritten"),
    ("market cache", "market:", "slot-window", "its window's end + 1 h (TTL)"),
    ("intents", "intents", "slot-window", HISTORY_KEPT),
    ("positions", "positions", "slot-window", HISTORY_KEPT),
    ("ledger", "ledger", "slot-window", HISTORY_KEPT),
    ("settle claims", "settle:claim:", "slot-window", "15 min (TTL)"),
    ("rq jobs and queue", "rq:", "slot-window", "24 h after the job ran (result TTL)"),
    ("tick journal", "journal:ticks", "tick", f"the last {JOURNAL_MAXLEN:,} ticks"),
    ("the rest", "", "fixed", "control, lease, stats, schema, errors, settle stats"),
]


def family(key: str) -> str:
    rest = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    for name, match, _, _ in FAMILIES:
        if match and rest.startswith(match):
            return name
    return "the rest"


def key_memory(r: Any) -> dict[str, dict[str, int]]:
    """Bytes and key count per family: MEMORY USAGE ... SAMPLES 0 of every key."""
    out: dict[str, dict[str, int]] = {name: {"bytes": 0, "keys": 0} for name, *_ in FAMILIES}
    keys = [k.decode() if isinstance(k, bytes) else k for k in r.scan_iter(count=1000)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    for k, used in zip(keys, pipe.execute(), strict=True):
        f = out[family(k)]
        f["bytes"] += int(used or 0)
        f["keys"] += 1
    return out


# --- memory per slot -----------------------------------------------------------------------------


def memory_per_unit(res: dict[str, Any], cycle_s: int, timeframes_s: list[int]) -> dict[str, Any]:
    """Bytes per slot, per traded slot-window, per asset and per tick, by family."""
    units = {
        "slot": res["slots"],
        "asset": res["assets"],
        "slot-window": max(1, res["traded_slot_windows"]),
        "tick": max(1, res["journal_entries"]),
        "fixed": 1,
    }
    out = {}
    for name, _, grows, kept in FAMILIES:
        m = res["memory"][name]
        out[name] = {
            "bytes": m["bytes"],
            "keys": m["keys"],
            "grows_with": grows,
            "per_unit": m["bytes"] / units[grows],
            "kept": kept,
        }
    # The market cache holds each window's market until an hour after its end: at the end of a
    # cycle of these short windows not one has expired yet, so per window is what it costs.
    return out


def per_day(
    per_unit: dict[str, Any],
    slots: int,
    assets: int,
    timeframes_s: tuple[int, ...],
    tick_ms: int,
    retention_s: int,
    bytes_per_candle: float,
) -> dict[str, Any]:
    """What a day adds (unbounded families) and what the bounded ones level off at, for `slots`
    slots over `timeframes_s` windows with every slot trading every window (the worst case)."""
    windows_per_slot_day = statistics.fmean(DAY_S / tf for tf in timeframes_s)
    slot_windows_day = slots * windows_per_slot_day
    u = {k: v["per_unit"] for k, v in per_unit.items()}
    history_day = (u["intents"] + u["positions"] + u["ledger"]) * slot_windows_day
    rq_kept = u["rq jobs and queue"] * slot_windows_day * RQ_RESULT_TTL_S / DAY_S
    market_kept = (
        u["market cache"] * slots * statistics.fmean((tf + MARKET_TTL_EXTRA_S) / tf for tf in timeframes_s)
    )
    claims_kept = u["settle claims"] * slots * statistics.fmean(900 / tf for tf in timeframes_s)
    journal_kept = u["tick journal"] * min(JOURNAL_MAXLEN, DAY_S * 1000 / tick_ms)
    candles_kept = bytes_per_candle * retention_s * assets
    fixed = (u["slots"] + u["slot wake times"] + u["decisions"]) * slots + u["feed status"] * assets
    return {
        "slots": slots,
        "assets": assets,
        "slot_windows_per_day": slot_windows_day,
        # What a day of trading adds to the history, kept HISTORY_DAYS (then pruned).
        "unbounded_bytes_per_day": history_day,
        "bounded_bytes": {
            f"intents, positions, ledger ({HISTORY_DAYS:g} days)": history_day * HISTORY_DAYS,
            "rq jobs (24 h)": rq_kept,
            "market cache (window + 1 h)": market_kept,
            "settle claims (15 min)": claims_kept,
            "tick journal (capped)": journal_kept,
            "candle windows (retention)": candles_kept,
            "slots, decisions, feed status": fixed,
        },
    }


# --- candle windows ------------------------------------------------------------------------------


async def candle_bytes(url: str, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """One asset's window of `n` 1 s candles, written as the feed writes them; its MEMORY USAGE."""

    r = connection.async_client(bare(url), decoded=False)
    out = []
    try:
        for n in counts:
            await r.flushall()
            start_s = 1_790_000_000
            end_ms = (start_s + n) * 1000

            def clock_ms(end_ms: int = end_ms) -> int:
                return end_ms

            store = CandleStore(r, Keys(PREFIX), interval="1s", retention_s=10**8, clock_ms=clock_ms)
            prices = Prices(["btc"])
            prices.p["btc"] = 95_000.0
            for first in range(start_s, start_s + n, 600):
                batch = Batch()
                for sec in range(first, min(first + 600, start_s + n)):
                    store.accept(batch, "btc", prices.candle("btc", sec))
                await store.write(batch)
            key = f"{PREFIX}candles:btc:1s"
            used = int(cast(int, await r.memory_usage(key, samples=0)))
            members = cast(list[bytes], await r.zrange(key, -3, -1))  # a client without decoding
            enc = await r.object("encoding", key)
            out.append(
                {
                    "candles": n,
                    "bytes": used,
                    "bytes_per_candle": used / n,
                    "encoding": enc.decode() if isinstance(enc, bytes) else str(enc),
                    "member_bytes": statistics.fmean(len(m) for m in members),
                    "example": members[-1].decode() if members else "",
                }
            )
    finally:
        await r.aclose()
    return out
