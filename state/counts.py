"""What the views show of the intents and positions hashes, read in O(1): the counts hash kept
by the scripts that change them (state/lua/_counts.lua), checked against the hashes' sizes.

`baton status`, /metrics and the dashboard's /pnl read these instead of every record ever
kept (the hashes grow with BATON_HISTORY_DAYS: gigabytes at 1,024 slots). Until the counts
exist (data written by a release before them) or while they disagree with the hashes' sizes
(a release that did not keep them wrote since), a view counts the hashes themselves
(`scan_counts`, the reference the counts are tested against) and says so; the next lease
holder counts again (`CountsRepo.ensure_counts`, counts_recount.lua).
"""

from __future__ import annotations

import time
import typing
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from baton.errors import CountsLost
from state.keys import Keys
from state.repo import Repo, text
from state.scripts import scripts_for
from state.structs import IntentStatus

INTENT_STATUSES: tuple[str, ...] = typing.get_args(IntentStatus)
# What a view says when it had to count the hashes themselves.
SCANNED = "counts: not kept for this data yet (a release before them wrote it); counted the hashes"


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    # Intents by status (every status of IntentStatus, zeros too).
    intents: dict[str, int]
    # Records whose JSON could not be read: not in the numbers above.
    intents_unreadable: int = 0
    positions_open: int = 0
    positions_settled: int = 0
    # Sold before resolution by exits (nothing left to settle).
    positions_closed: int = 0
    # Settled and won.
    positions_won: int = 0
    positions_unreadable: int = 0
    # HLEN of the open positions hash (what the tick reads); equal to positions_open when the
    # counts are used, and what `baton status` and /metrics call open positions.
    open_hash: int = 0
    # How they were made: "counts" (the counts hash) or "scan" (every record read).
    source: str = "counts"
    # One line per unreadable record (a scan), or one per kind (the counts).
    problems: tuple[str, ...] = ()

    @property
    def positions(self) -> int:
        """Readable positions kept (open, settled and closed): the dashboard's `trades`."""
        return self.positions_open + self.positions_settled + self.positions_closed

    def orders(self) -> dict[str, int]:
        """`baton status`'s orders: statuses seen (n > 0), and the total of those past committed."""
        seen = {st: n for st, n in self.intents.items() if n}
        return {"total": sum(n for st, n in seen.items() if st != "committed"), **seen}


def queue_counts(pipe: Any, k: Keys) -> None:
    """Queue the four O(1) reads that `counts_from` takes, in this order."""
    pipe.hgetall(k.counts())
    pipe.hlen(k.intents())
    pipe.hlen(k.positions())
    pipe.hlen(k.positions_open())


def counts_from(replies: list[Any]) -> Counts | None:
    """The counts from queue_counts' four replies; None when they are missing, unreadable or
    disagree with the hashes' sizes (then count the hashes: `scan_counts`)."""
    raw, n_intents, n_positions, n_open = replies
    if raw == {} and n_intents == n_positions == n_open == 0:
        # Nothing kept yet (a new store, before its first lease holder): nothing to count.
        return Counts(intents=dict.fromkeys(INTENT_STATUSES, 0))
    if not isinstance(raw, dict):
        return None
    try:
        v = {f.decode() if isinstance(f, bytes) else str(f): int(n) for f, n in raw.items()}
        if "counted_ms" not in v:
            return None
        if min(v.values()) < 0:
            return None
        intents = {st: v.get(f"intents:{st}", 0) for st in INTENT_STATUSES}
        c = Counts(
            intents=intents,
            intents_unreadable=v.get("intents:unreadable", 0),
            positions_open=v.get("positions:open", 0),
            positions_settled=v.get("positions:settled", 0),
            positions_won=v.get("positions:won", 0),
            positions_closed=v.get("positions:closed", 0),
            positions_unreadable=v.get("positions:unreadable", 0),
            open_hash=int(n_open),
        )
        # The same test as counts_recount.lua's: every intents:* field, every positions:* but won.
        agree = (
            sum(n for f, n in v.items() if f.startswith("intents:")) == int(n_intents)
            and sum(n for f, n in v.items() if f.startswith("positions:") and f != "positions:won")
            == int(n_positions)
            and c.positions_open == int(n_open)
        )
    except (TypeError, ValueError):
        return None
    if not agree:
        return None
    problems = []
    if c.intents_unreadable:
        problems.append(f"intents: {c.intents_unreadable} unreadable record(s) (not counted)")
    if c.positions_unreadable:
        problems.append(f"positions: {c.positions_unreadable} unreadable record(s) (not counted)")
    return msgspec.structs.replace(c, problems=tuple(problems))


class _IntentStatus(msgspec.Struct):
    """The one field of an Intent that is counted: a record is classified by it, as the
    scripts classify it (_counts.lua), whatever its other fields hold."""

    status: IntentStatus


class _PositionStatus(msgspec.Struct):
    status: Literal["open", "settled", "closed"]
    won: bool | None = None


_INTENT_STATUS = msgspec.json.Decoder(_IntentStatus)
_POSITION_STATUS = msgspec.json.Decoder(_PositionStatus)


def scan_counts(intents: Iterable[Any], positions: Iterable[Any], open_hash: int = 0) -> Counts:
    """The same numbers from every record (HVALS of both hashes): what the views computed
    before the counts, and what they fall back to."""
    by_status: dict[str, int] = dict.fromkeys(INTENT_STATUSES, 0)
    problems: list[str] = []
    bad_intents = bad_positions = 0
    for raw in intents:
        try:
            by_status[_INTENT_STATUS.decode(raw).status] += 1
        except msgspec.DecodeError as e:
            bad_intents += 1
            problems.append(f"intent: {e}")
    open_n = settled = won = closed = 0
    for raw in positions:
        try:
            p = _POSITION_STATUS.decode(raw)
        except msgspec.DecodeError as e:
            bad_positions += 1
            problems.append(f"position: {e}")
            continue
        if p.status == "settled":
            settled += 1
            won += bool(p.won)
        elif p.status == "closed":
            closed += 1
        else:
            open_n += 1
    return Counts(
        intents=by_status,
        intents_unreadable=bad_intents,
        positions_open=open_n,
        positions_settled=settled,
        positions_won=won,
        positions_closed=closed,
        positions_unreadable=bad_positions,
        open_hash=open_hash,
        source="scan",
        problems=(SCANNED, *problems),
    )


def read_counts(r: Any, k: Keys) -> Counts:
    """The counts with a synchronous client: O(1), or a scan when they cannot be used."""
    pipe = r.pipeline(transaction=False)
    queue_counts(pipe, k)
    replies = pipe.execute()
    return counts_from(replies) or scan(r, k, replies[3])


def scan(r: Any, k: Keys, open_hash: Any = 0) -> Counts:
    """scan_counts over both hashes, read with a synchronous client (their whole size)."""
    pipe = r.pipeline(transaction=False)
    pipe.hvals(k.intents())
    pipe.hvals(k.positions())
    intents, positions = pipe.execute()
    return scan_counts(intents, positions, open_hash=int(open_hash))


async def read_counts_async(r: Any, k: Keys) -> Counts:
    """read_counts with an asyncio client."""
    pipe = r.pipeline(transaction=False)
    queue_counts(pipe, k)
    replies = await pipe.execute()
    c = counts_from(replies)
    if c is not None:
        return c
    pipe = r.pipeline(transaction=False)
    pipe.hvals(k.intents())
    pipe.hvals(k.positions())
    intents, positions = await pipe.execute()
    return scan_counts(intents, positions, open_hash=int(replies[3]))


# Fields per HSCAN page of the backfill: some tens of milliseconds of Redis per call.
RECOUNT_PAGE = 2000
HASHES = ("intents", "positions")


class CountsRepo(Repo):
    async def ensure_counts(self, at_ms: int, force: bool = False, page: int = RECOUNT_PAGE) -> bool:
        """Count the hashes into the counts hash if they are missing or disagree with the hashes'
        sizes (counts_recount.lua, a page per call; O(1) when they agree): True when it counted.
        Called by every new lease holder before its first tick."""
        keys = recount_keys(self.k)
        run = self.scripts.counts_recount
        if not int(await run(keys=keys, args=["begin", "1" if force else "0", at_ms])):
            return False
        for name in HASHES:
            cursor = "0"
            while True:
                cursor = text(await run(keys=keys, args=["page", name, cursor, page]))
                if cursor == "LOST":
                    raise CountsLost(f"{self.k.counts()}: another count began while this one ran")
                if cursor == "0":
                    break
        if text(await run(keys=keys, args=["finish", at_ms])) == "LOST":
            raise CountsLost(f"{self.k.counts()}: another count began while this one ran")
        return True


def recount_sync(
    r: Any,
    k: Keys,
    at_ms: int,
    force: bool = True,
    page: int = RECOUNT_PAGE,
    took_s: list[float] | None = None,
) -> bool:
    """ensure_counts with a synchronous client (tests, benchmarks); `took_s` gets each call's
    seconds."""
    keys = recount_keys(k)
    script = scripts_for(r).counts_recount

    def run(keys: list[str], args: list[Any]) -> Any:
        t = time.perf_counter()
        try:
            return script(keys=keys, args=args)
        finally:
            if took_s is not None:
                took_s.append(time.perf_counter() - t)

    if not int(run(keys=keys, args=["begin", "1" if force else "0", at_ms])):
        return False
    for name in HASHES:
        cursor = "0"
        while True:
            cursor = text(run(keys=keys, args=["page", name, cursor, page]))
            if cursor in ("0", "LOST"):
                break
    return text(run(keys=keys, args=["finish", at_ms])) != "LOST"


def recount_keys(k: Keys) -> list[str]:
    """KEYS of counts_recount.lua."""
    return [k.counts(), k.intents(), k.positions(), k.positions_open()]
