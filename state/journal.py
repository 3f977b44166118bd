"""The journals: one entry per tick (fenced, once per index) with the stats it counts, the
stop marks that tell a clean stop from missed ticks, and the error journal."""

from __future__ import annotations

import re
from typing import Any

from state.repo import Repo
from state.structs import TickRecord, tick_record_fields

JOURNAL_MAXLEN = 100_000
ERRORS_MAXLEN = 1_000
_TICK = re.compile(r"\d{1,15}")


def tick_index(raw: Any) -> int | None:
    """A tick index as the journal writes one (at most 15 digits, like _check.lua's
    arguments), or None."""
    return int(raw) if isinstance(raw, str) and _TICK.fullmatch(raw) else None


class JournalRepo(Repo):
    def append_tick(self, rec: TickRecord, pipeline: Any = None) -> Any:
        """Journal a tick (fenced, once per index) and count it in stats."""
        flat: list[Any] = []
        for name, value in tick_record_fields(rec).items():
            flat += [name, value]
        return self._call(
            self.scripts.tick_journal,
            keys=[self.k.lease_epoch(), self.k.journal_ticks(), self.k.stats()],
            args=[rec.epoch, rec.tick, rec.missed_before, rec.started_ms, JOURNAL_MAXLEN, *flat],
            pipeline=pipeline,
        )

    async def read_stop_marks(self, problems: list[str] | None = None) -> tuple[int | None, int | None]:
        """(last journaled tick, tick after which the last holder stopped cleanly); None when
        absent, or when unreadable: then what is wrong is appended to `problems`. Nothing
        decides on an unreadable mark: a new holder clears the clean-stop mark, and the
        journal rebuilds its guard from the stream (state/lua/tick_journal.lua)."""
        raw = await self.r.hmget(self.k.stats(), ["last_tick", "clean_stop_tick"])
        out: list[int | None] = []
        for name, v in zip(("last_tick", "clean_stop_tick"), raw, strict=True):
            n = tick_index(v)
            if v is not None and n is None and problems is not None:
                problems.append(f"{self.k.stats()} {name}: holds {v[:40]!r}, not a tick index")
            out.append(n)
        return out[0], out[1]

    async def newest_journaled_tick(self) -> int | None:
        """The tick of the journal's newest entry (the truth stats.last_tick is a copy of)."""
        got = await self.r.xrevrange(self.k.journal_ticks(), count=1)
        return tick_index(got[0][1].get("tick")) if got else None

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

    def mark_stack_stopped(self, now_ms: int, pipeline: Any = None) -> Any:
        """The whole runtime is being shut down on purpose (`baton stop`): the downtime that
        follows is not missed ticks."""
        return (self.r if pipeline is None else pipeline).hset(self.k.stats(), "stack_stopped_ms", now_ms)

    def journal_error(
        self, source: str, error: str, sample: str = "", *, now_ms: int, pipeline: Any = None
    ) -> Any:
        """Journal one error and count it in stats (`errors_<source>`): now, or queued on
        `pipeline` (for a sync caller; asyncio callers use `record_errors`)."""
        pipe = self.r.pipeline(transaction=False) if pipeline is None else pipeline
        pipe.xadd(
            self.k.journal_errors(),
            {"source": source, "error": error[:500], "sample": sample[:200], "at_ms": now_ms},
            maxlen=ERRORS_MAXLEN,
            approximate=True,
        )
        pipe.hincrby(self.k.stats(), f"errors_{source}", 1)
        return pipe.execute() if pipeline is None else None

    async def record_error(self, source: str, error: str, sample: str = "", *, now_ms: int) -> None:
        await self.record_errors(source, [error], sample, now_ms=now_ms)

    async def record_errors(self, source: str, errors: list[str], sample: str = "", *, now_ms: int) -> None:
        """Journal bad inputs or venue errors with what was wrong, stamped `now_ms` (the caller's
        wall clock), in one round trip; never raises."""
        if not errors:
            return
        at_ms = now_ms
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
