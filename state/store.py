"""The Redis access layer: every read and fenced write Baton makes goes through here.

Write methods accept an optional `pipe` so that a caller can batch several writes into one
round trip (rq's habit). Fenced writes return the script's verdict string ('OK',
'STALE_EPOCH', 'HALTED', 'DUPLICATE', 'ALREADY', 'UNKNOWN') instead of raising, because a
refusal is an expected outcome that the caller must act on.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from baton.errors import SchemaMismatch
from state import schema, structs
from state.control import parse_control
from state.keys import Keys
from state.scripts import scripts_for
from state.structs import (
    INTENT,
    POSITION,
    SCHEMA_READABLE_BY,
    SCHEMA_READS_FROM,
    SCHEMA_VERSION,
    SLOT,
    ControlFlags,
    Intent,
    Position,
    Slot,
    TickRecord,
)

_JSON = msgspec.json.Encoder()
JOURNAL_MAXLEN = 100_000
ERRORS_MAXLEN = 1_000


def utc_day(ms: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ms / 1000))


def settle_call(k: Keys, read_raw: str, position: Position) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of settle_position.lua, shared by the async Store and the sync rq job."""
    keys = [
        k.lease_epoch(),
        k.positions(),
        k.positions_open(),
        k.ledger(),
        k.ledger_totals(),
        k.ledger_refs(),
        k.ledger_day(utc_day(position.settled_ms)),
    ]
    args: list[Any] = [
        read_raw,
        position.id,
        POSITION.encode(position),
        position.payout_micros,
        position.pnl_micros,
        position.settled_ms,
    ]
    return keys, args


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Store:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        # Typed Any: redis-py types every reply as bytes | str, but decode_responses=True
        # (state/connection.py) makes them str throughout.
        self.r: Any = redis
        self.k = keys
        self.scripts = scripts_for(redis)

    def _call(self, script: Any, keys: list[str], args: list[Any], pipe: Any = None) -> Any:
        """Run a script now (returns an awaitable) or queue it on `pipe` (returns None)."""
        if pipe is None:
            return script(keys=keys, args=args)
        self.scripts.on(pipe, script, keys, args)
        return None

    async def run_pipeline(self, build: Any) -> list[Any]:
        """Build and execute a pipeline in one round trip; results keep errors as values.

        After a Redis restart the script cache is empty and every EVALSHA answers NOSCRIPT
        (so none of them ran): load the scripts and run the whole pipeline once more.
        """
        for attempt in (1, 2):
            pipe = self.r.pipeline(transaction=False)
            build(pipe)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(x, NoScriptError) for x in results):
                await self.scripts.load()
                continue
            return results
        return results

    # --- schema and slots -------------------------------------------------------------
    async def ensure_schema(
        self,
        version: int = SCHEMA_VERSION,
        reads_from: int = SCHEMA_READS_FROM,
        readable_by: int = SCHEMA_READABLE_BY,
    ) -> int:
        """Stamp an empty store with our schema version, or check that we may run on the one it
        has (state/schema.py); raises SchemaMismatch saying why not."""
        k_version, k_readable = self.k.schema_version(), self.k.schema_readable_by()
        if await self.r.set(k_version, version, nx=True):
            await self.r.set(k_readable, readable_by)
        raw, raw_readable = await self.r.mget([k_version, k_readable])
        try:
            found = int(raw)
            found_readable = int(raw_readable) if raw_readable is not None else found
        except (TypeError, ValueError):
            raise SchemaMismatch(
                f"{k_version} / {k_readable} hold {raw!r} / {raw_readable!r}, not version numbers"
            ) from None
        why = schema.incompatibility(found, found_readable, version, reads_from)
        if why:
            raise SchemaMismatch(why)
        return found

    async def adopt_schema(self, version: int = SCHEMA_VERSION, readable_by: int = SCHEMA_READABLE_BY) -> int:
        """Called by a new lease holder: a newer writer records its version (schema_adopt.lua)."""
        res = await self.scripts.schema_adopt(
            keys=[self.k.schema_version(), self.k.schema_readable_by()], args=[version, readable_by]
        )
        return int(res)

    async def ensure_slots(self, slots: list[Slot]) -> None:
        """Create configured slots that Redis does not know yet; operator edits survive."""
        pipe = self.r.pipeline(transaction=False)
        for slot in slots:
            pipe.hsetnx(self.k.slots(), slot.id, SLOT.encode(slot))
        await pipe.execute()

    async def read_slots(self) -> dict[str, str]:
        return await self.r.hgetall(self.k.slots())

    async def set_slot(self, slot: Slot) -> None:
        await self.r.hset(self.k.slots(), slot.id, SLOT.encode(slot))

    # --- control ----------------------------------------------------------------------
    async def read_control(self) -> ControlFlags:
        return parse_control(await self.r.hgetall(self.k.control()))

    async def control_set(self, action: str, reason: str, who: str, now_ms: int) -> int:
        """Halt, pause or resume through state/lua/control_set.lua: the flags, `seq` and the
        pub/sub announcement change together. Returns the new control seq."""
        res = await self.scripts.control_set(
            keys=[self.k.control()], args=[self.k.control_events(), action, now_ms, reason, who, ""]
        )
        return int(res[0])

    async def set_halt(self, reason: str, now_ms: int, who: str = "worker") -> int:
        return await self.control_set("halt", reason, who, now_ms)

    async def clear_halt(self, now_ms: int, who: str = "worker") -> int:
        """Resume: clears the halt and the pause together (as POST /resume does)."""
        return await self.control_set("resume", "", who, now_ms)

    async def set_paused(self, paused: bool, now_ms: int, who: str = "worker") -> int:
        return await self.control_set("pause" if paused else "resume", "operator pause", who, now_ms)

    # --- lease ------------------------------------------------------------------------
    async def acquire_lease(
        self, holder: str, color: str, release: str, now_ms: int, ttl_ms: int, dead_holder: str = ""
    ) -> tuple[bool, int, str]:
        """Take the lease if free, expired, ours, or held by `dead_holder` (found dead by the
        caller). Returns (held, epoch, current holder)."""
        res = await self.scripts.lease_acquire(
            keys=[self.k.lease(), self.k.lease_epoch()],
            args=[holder, color, release, now_ms, ttl_ms, dead_holder],
        )
        if int(res[0]) == 1:
            return True, int(res[1]), holder
        return False, int(res[1]), _s(res[2])

    def renew_lease(self, holder: str, epoch: int, now_ms: int, ttl_ms: int, pipe: Any = None) -> Any:
        return self._call(
            self.scripts.lease_renew,
            keys=[self.k.lease(), self.k.lease_epoch()],
            args=[holder, epoch, now_ms, ttl_ms],
            pipe=pipe,
        )

    async def transfer_lease(
        self,
        holder: str,
        epoch: int,
        request_id: str,
        successor: str,
        successor_color: str,
        last_tick: int,
        now_ms: int,
        ttl_ms: int,
    ) -> tuple[int, str]:
        """Carry out a handover request after `last_tick` (lease_transfer.lua).
        Returns (successor's epoch, "") or (0, reason)."""
        res = await self.scripts.lease_transfer(
            keys=[
                self.k.lease(),
                self.k.lease_epoch(),
                self.k.handover(),
                self.k.stats(),
                self.k.worker(successor_color),
                self.k.wake(successor),
            ],
            args=[holder, epoch, request_id, successor, last_tick, now_ms, ttl_ms],
        )
        if int(res[0]) == 1:
            return int(res[1]), ""
        return 0, _s(res[1])

    async def request_handover(self, request_id: str, fields: dict[str, Any]) -> None:
        """Replace any earlier request: only the latest deploy's request may be carried out."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.k.handover())
        pipe.hset(self.k.handover(), mapping={**fields, "id": request_id, "state": "requested"})
        await pipe.execute()

    async def cancel_handover(self, request_id: str, reason: str, now_ms: int) -> str:
        return _s(
            await self.scripts.handover_cancel(keys=[self.k.handover()], args=[request_id, reason, now_ms])
        )

    async def wait_wake(self, holder: str, timeout_s: float) -> bool:
        """Block until a handover to `holder` is pushed, at most timeout_s; True when woken."""
        res = await self.r.blpop([self.k.wake(holder)], timeout=timeout_s)
        return res is not None

    async def release_lease(self, holder: str, epoch: int) -> bool:
        res = await self.scripts.lease_release(keys=[self.k.lease()], args=[holder, epoch])
        return int(res) == 1

    async def read_lease(self) -> dict[str, str]:
        return await self.r.hgetall(self.k.lease())

    async def cache_market(self, market: structs.Market, ttl_s: int) -> None:
        await self.cache_markets([(market, ttl_s)])

    async def cache_markets(self, markets: list[tuple[structs.Market, int]]) -> None:
        """Cache markets with their TTLs in one command (markets_cache.lua)."""
        if not markets:
            return
        args: list[Any] = []
        for market, ttl_s in markets:
            args += (structs.MARKET.encode(market), ttl_s)
        await self.scripts.markets_cache(keys=[self.k.market(m.slug) for m, _ in markets], args=args)

    # --- intents, positions, ledger (fenced) ------------------------------------------
    def commit_intents(self, epoch: int, intents: list[Intent], pipe: Any = None) -> Any:
        """Commit every intent in one fenced call (intent_commit.lua): one verdict per intent."""
        args: list[Any] = [epoch]
        for i in intents:
            args += (i.id, INTENT.encode(i))
        return self._call(
            self.scripts.intent_commit,
            keys=[self.k.lease_epoch(), self.k.control(), self.k.intents(), self.k.intents_open()],
            args=args,
            pipe=pipe,
        )

    async def commit_intent(self, epoch: int, intent: Intent) -> str:
        return str((await self.commit_intents(epoch, [intent]))[0])

    def update_intent(self, epoch: int, intent: Intent, pipe: Any = None) -> Any:
        final = intent.status in structs.FINAL_INTENT_STATUSES
        return self._call(
            self.scripts.intent_update,
            keys=[self.k.lease_epoch(), self.k.intents(), self.k.intents_open()],
            args=[epoch, intent.id, INTENT.encode(intent), "1" if final else "0"],
            pipe=pipe,
        )

    def record_fills(self, epoch: int, fills: list[tuple[Intent, Position]], pipe: Any = None) -> Any:
        """Book fills in one fenced call (record_fill.lua): one verdict per fill."""
        args: list[Any] = [epoch]
        for intent, position in fills:
            args += (
                intent.id,
                INTENT.encode(intent),
                position.id,
                POSITION.encode(position),
                position.cost_micros,
                position.opened_ms,
            )
        return self._call(
            self.scripts.record_fill,
            keys=[
                self.k.lease_epoch(),
                self.k.intents(),
                self.k.intents_open(),
                self.k.positions(),
                self.k.positions_open(),
                self.k.ledger(),
                self.k.ledger_totals(),
                self.k.ledger_refs(),
            ],
            args=args,
            pipe=pipe,
        )

    async def record_fill(self, epoch: int, intent: Intent, position: Position) -> str:
        return str((await self.record_fills(epoch, [(intent, position)]))[0])

    def settle_position(self, read_raw: str, position: Position, pipe: Any = None) -> Any:
        """Book a settlement computed from the position JSON `read_raw` (the script's fence)."""
        keys, args = settle_call(self.k, read_raw, position)
        return self._call(self.scripts.settle_position, keys=keys, args=args, pipe=pipe)

    async def deposit(self, epoch: int, ref: str, amount_micros: int, at_ms: int) -> str:
        res = await self.scripts.ledger_deposit(
            keys=[
                self.k.lease_epoch(),
                self.k.ledger(),
                self.k.ledger_totals(),
                self.k.ledger_refs(),
                self.k.ledger_day(utc_day(at_ms)),
            ],
            args=[epoch, ref, amount_micros, at_ms],
        )
        return _s(res)

    async def prune_history(
        self,
        epoch: int,
        retention_ms: int,
        positions: list[tuple[str, str, str]],
        intents: list[tuple[str, str, str]],
    ) -> Any:
        """Remove settled positions (id, JSON as read, id of their intent) and final intents
        (id, JSON as read, id of their slot-window's position) that the caller found
        past the retention, and up to 1,000 ledger entries older than `retention_ms` by Redis's
        clock (history_prune.lua): [positions, intents, ledger entries] pruned, or 'STALE_EPOCH'."""
        args: list[Any] = [epoch, retention_ms, len(positions)]
        for pid, raw, iid in positions:
            args += (pid, raw, iid)
        for iid, raw, pid in intents:
            args += (iid, raw, pid)
        res = await self._call(
            self.scripts.history_prune,
            keys=[
                self.k.lease_epoch(),
                self.k.positions(),
                self.k.positions_open(),
                self.k.intents(),
                self.k.intents_open(),
                self.k.ledger_refs(),
                self.k.ledger(),
            ],
            args=args,
        )
        return _s(res) if isinstance(res, (str, bytes)) else [int(x) for x in res]

    async def read_intents(self, open_only: bool = False) -> list[Intent]:
        raw = await self.r.hgetall(self.k.intents_open() if open_only else self.k.intents())
        return [INTENT.decode(v) for v in raw.values()]

    async def read_positions(self, open_only: bool = False) -> list[Position]:
        raw = await self.r.hgetall(self.k.positions_open() if open_only else self.k.positions())
        return [POSITION.decode(v) for v in raw.values()]

    async def read_ledger_totals(self) -> dict[str, int]:
        raw = await self.r.hgetall(self.k.ledger_totals())
        return {k: int(v) for k, v in raw.items()}

    async def read_ledger(self) -> list[structs.LedgerEntry]:
        out = []
        for _id, f in await self.r.xrange(self.k.ledger()):
            out.append(
                structs.LedgerEntry(
                    kind=f["kind"],
                    amount_micros=int(f["amount_micros"]),
                    ref=f["ref"],
                    at_ms=int(f["at_ms"]),
                    epoch=int(f.get("epoch", 0)),
                    pnl_micros=int(f.get("pnl_micros", 0)),
                )
            )
        return out

    # --- journal, stats, errors -------------------------------------------------------
    def append_tick(self, rec: TickRecord, pipe: Any = None) -> Any:
        """Journal a tick (fenced, once per index) and count it in stats."""
        flat: list[Any] = []
        for name, value in structs.tick_record_fields(rec).items():
            flat += [name, value]
        return self._call(
            self.scripts.tick_journal,
            keys=[self.k.lease_epoch(), self.k.journal_ticks(), self.k.stats()],
            args=[rec.epoch, rec.tick, rec.missed_before, rec.started_ms, JOURNAL_MAXLEN, *flat],
            pipe=pipe,
        )

    async def read_stop_marks(self) -> tuple[int | None, int | None]:
        """(last journaled tick, tick after which the last holder stopped cleanly)."""
        last, clean = await self.r.hmget(self.k.stats(), ["last_tick", "clean_stop_tick"])
        return (int(last) if last is not None else None, int(clean) if clean is not None else None)

    async def stack_was_stopped(self) -> bool:
        """True when the whole runtime was shut down on purpose (`baton stop`) since the last
        holder's last tick: the boundaries of that downtime are not missed ticks."""
        return bool(await self.r.hexists(self.k.stats(), "stack_stopped_ms"))

    async def mark_clean_stop(self, tick: int | None) -> None:
        """A holder's clean stop after `tick`; None (a new holder starts) clears the stop marks."""
        if tick is None:
            await self.r.hdel(self.k.stats(), "clean_stop_tick", "stack_stopped_ms")
        else:
            await self.r.hset(self.k.stats(), "clean_stop_tick", tick)

    async def record_error(self, source: str, error: str, sample: str = "", now_ms: int = 0) -> None:
        await self.record_errors(source, [error], sample, now_ms)

    async def record_errors(self, source: str, errors: list[str], sample: str = "", now_ms: int = 0) -> None:
        """Journal bad inputs or venue errors with what was wrong, in one round trip; never raises."""
        if not errors:
            return
        at_ms = now_ms or int(time.time() * 1000)
        try:
            pipe = self.r.pipeline(transaction=False)
            for error in errors:
                pipe.xadd(
                    self.k.journal_errors(),
                    {"source": source, "error": error[:500], "sample": sample[:200], "at_ms": at_ms},
                    maxlen=ERRORS_MAXLEN,
                    approximate=True,
                )
            pipe.hincrby(self.k.stats(), f"errors_{source}", len(errors))
            await pipe.execute()
        except Exception:
            pass

    async def record_decisions(self, decisions: dict[str, structs.DecisionRecord]) -> None:
        """Each slot's last decision (the dashboard and `baton slots` show it)."""
        compact = {sid: _JSON.encode(d) for sid, d in decisions.items()}
        await self.r.hset(self.k.decisions(), mapping=compact)

    async def record_reload(self, color: str, release: str, res: Any) -> None:
        """The last strategy reload (a kernel.reload.ReloadResult), for status and tools."""
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.k.reload())
        pipe.hset(
            self.k.reload(),
            mapping={
                "color": color,
                "release": release,
                "state": res.state,
                "modules": " ".join(res.modules),
                "error": res.error[:1500],
                "hashes": " ".join(f"{k}={v}" for k, v in sorted(res.hashes.items())),
                "forced": int(res.forced),
                "at_ms": res.at_ms,
            },
        )
        pipe.hincrby(self.k.stats(), f"reloads_{res.state}", 1)
        await pipe.execute()

    async def heartbeat(self, color: str, fields: dict[str, Any], ttl_ms: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.k.worker(color), mapping=fields)
        pipe.pexpire(self.k.worker(color), ttl_ms)
        await pipe.execute()
