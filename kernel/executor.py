"""From intents to venue orders: sign (a BUY for an entry leg, a SELL for an exit leg), commit
(fenced, one round trip), post the committed ones concurrently with each intent's order type,
and record what the venue answered: a buy's fill opens the position, a sale's is booked
against it (state/positions.py `sale`, Store.record_exits).

A venue error never raises out of here: it is recorded on the intent with the venue's
message and reported to the tick, so that one bad answer cannot stop the worker. An order
the book could not fill (a FOK killed, a FAK with nothing to match) is an outcome, counted
apart (Tally.unfilled), not a problem.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import msgspec

from baton.errors import HaltedBeforePost, LeaseDeadlinePassed, NotReplicated, UnreadableValue
from baton.settings import Settings
from kernel import lanes
from kernel.blocking import EntryBlocks
from kernel.clock import wall_ms
from kernel.lease import LeaseDeadline
from kernel.outcomes import Tally, outcome, write_outcomes
from kernel.snapshot import ENTRY_LEG, SlotRef
from kernel.strategy_api import Buy
from state import replication
from state.store import Store
from state.structs import Intent, Market, Position

log = logging.getLogger("baton.executor")


def order_size(stake_usd: float, price: float, min_size: float) -> float:
    """Shares bought for a stake at a price, rounded down to the venue's 0.01 share step."""
    shares = stake_usd / price * 100
    if not math.isfinite(shares):  # a price so small the quotient overflows: nothing to buy
        return 0.0
    size = math.floor(shares) / 100
    return size if size >= min_size else 0.0


# The last entry intent template: (epoch, now_ms) -> an Intent with those and the defaults.
_template: tuple[int, int, Intent] | None = None


def make_intent(ref: SlotRef, m: Market, d: Buy, epoch: int, now_ms: int) -> Intent:
    """The entry leg of a Buy (its GTD expiry checked already: kernel/decide.py)."""
    # A template of the tick's time and epoch, every other field replaced: msgspec's
    # replace() costs half a constructor given them all by keyword (a thousand a tick).
    global _template
    got = _template  # read once: another thread's swap cannot mix two ticks' fields
    if got is None or got[0] != epoch or got[1] != now_ms:
        got = _template = (epoch, now_ms, _entry_template(epoch, now_ms))
    return msgspec.structs.replace(
        got[2],
        id=ref.entry_intent_id,
        slot=ref.id,
        asset=ref.asset,
        window_start_s=ref.window_start_s,
        window_end_s=ref.window_end_s,
        side=d.side,
        limit_price=d.limit_price,
        size=order_size(d.stake_usd, d.limit_price, m.min_size),
        stake_usd=d.stake_usd,
        token_id=m.up_token if d.side == "up" else m.down_token,
        condition_id=m.condition_id,
        order_type=d.order_type,
        expires_s=expires_s(d.order_type, d.expires_ms) if d.order_type == "GTD" else 0,
    )


def _entry_template(epoch: int, now_ms: int) -> Intent:
    return Intent(
        id="",
        slot="",
        window_start_s=0,
        window_end_s=0,
        leg=ENTRY_LEG,
        side="up",
        limit_price=0.0,
        size=0.0,
        stake_usd=0.0,
        epoch=epoch,
        created_ms=now_ms,
        updated_ms=now_ms,
    )


def expires_s(order_type: str, expires_ms: int) -> int:
    """A GTD order's expiry in whole seconds, rounded up (the window's end is a whole second,
    so an expiry allowed in ms is allowed in s); 0 for every other order type."""
    return -(-expires_ms // 1000) if order_type == "GTD" else 0


# Not sent: the halt gate or the lease deadline stopped it before the post.
NOT_SENT = (HaltedBeforePost, LeaseDeadlinePassed)


async def _post_all(
    venue: Any,
    signed: list[tuple[Any, str]],
    gate: Any,
    n_lanes: int = lanes.LANES,
    deadline: LeaseDeadline | None = None,
) -> list[Any]:
    """Post every signed order with its order type, (signed, "FOK"|"FAK"|"GTC"|"GTD"), on a
    few lanes (kernel/lanes.py); per order its answer, or the exception it raised, or
    HaltedBeforePost / LeaseDeadlinePassed (not sent).

    The gate (kernel/halt.py) and the lease deadline (kernel/lease.py) are checked before
    each post, at the last moment: an intent committed just before a halt, or before a stall
    that outlasted the lease, is never sent. Each lane's orders hold their places in the
    gate's in-flight count until the lane is back, so a halt is acknowledged only once the
    posts already on their way have come back.
    """

    def post(order: tuple[Any, str]) -> Any:
        s, order_type = order
        if gate is not None and gate.halted:
            raise HaltedBeforePost("halted before it was posted: never sent to the venue")
        if deadline is None:
            return venue.post(s, order_type)
        deadline.check()
        # A retry inside the venue call (a fast failure) is sent only inside the deadline too,
        # and every attempt is done or abandoned by it: a post still on its way when another
        # worker may hold the lease must never arrive (kernel/venue.py).
        return venue.post(s, order_type, timeout_s=deadline.remaining_ms() / 1000)

    async def lane(span: range) -> list[Any]:
        if gate is not None and not gate.begin_post(len(span)):
            return [HaltedBeforePost("halted before it was posted: never sent to the venue") for _ in span]
        try:
            return await asyncio.to_thread(lanes.run_span, post, signed, span)
        finally:
            if gate is not None:
                gate.end_post(len(span))

    parts = await asyncio.gather(*(lane(span) for span in lanes.shares(len(signed), n_lanes)))
    return [x for part in parts for x in part]


def _sign(venue: Any, i: Intent) -> Any:
    """The intent's order signed: a SELL for an exit leg, a BUY otherwise, a GTD one with its
    expiry. A plain buy goes through sign_buy (sign("BUY", ...) by the Venue protocol), which
    every venue has had from the start."""
    if i.is_exit or i.expires_s:
        return venue.sign("SELL" if i.is_exit else "BUY", i.token_id, i.limit_price, i.size, i.expires_s)
    return venue.sign_buy(i.token_id, i.limit_price, i.size)


async def sign_all(
    venue: Any, intents: list[Intent], n_lanes: int = lanes.LANES
) -> tuple[list[tuple[Intent, Any]], list[str]]:
    """Sign every intent's order on at most `n_lanes` threads (a SELL for an exit leg, a BUY
    otherwise; a GTD one with its expiry): (intent with the venue's order id, signed order)
    for those signed, and the problems of the others (nothing of theirs is committed).

    The order is signed before the intent is committed, so the intent carries the id the
    venue will know the order by: whoever finds the intent open after a crash looks that id
    up at the venue instead of guessing whether it was posted (kernel/reconcile.py).
    """
    problems = [
        f"{i.id}: " + ("nothing to sell" if i.is_exit else "stake buys less than the minimum size")
        for i in intents
        if i.size <= 0
    ]
    intents = [i for i in intents if i.size > 0]
    if not intents:
        return [], problems
    signed_all = await lanes.in_lanes(lambda i: _sign(venue, i), intents, n_lanes)
    ready: list[tuple[Intent, Any]] = []
    for intent, signed in zip(intents, signed_all, strict=True):
        if isinstance(signed, BaseException):
            problems.append(f"{intent.id}: signing failed, nothing committed: {signed}")
        else:
            ready.append((msgspec.structs.replace(intent, order_id=signed.order_id), signed))
    return ready, problems


async def commit_and_submit(
    store: Store,
    venue: Any,
    epoch: int,
    intents: list[Intent],
    gate: Any = None,
    entered: set[str] | None = None,
    n_lanes: int = lanes.LANES,
    deadline: LeaseDeadline | None = None,
    replicas: Settings | None = None,
    tally: Tally | None = None,
    positions: dict[str, Position] | None = None,
) -> tuple[int, list[str]]:
    """Sign, commit, post: returns (orders sent to the venue, problems). The ids of the
    intents Redis now holds (committed here, or refused as committed before) are added to
    `entered` when given. The venue calls run on at most `n_lanes` threads. `positions`
    (by id) are those exit legs sell from (read from Redis when not given)."""
    ready, problems = await sign_all(venue, intents, n_lanes)
    return await submit_signed(
        store,
        venue,
        epoch,
        ready,
        problems,
        gate,
        entered,
        n_lanes,
        deadline,
        replicas=replicas,
        tally=tally,
        positions=positions,
    )


async def submit_signed(
    store: Store,
    venue: Any,
    epoch: int,
    ready: list[tuple[Intent, Any]],
    problems: list[str],
    gate: Any = None,
    entered: set[str] | None = None,
    n_lanes: int = lanes.LANES,
    deadline: LeaseDeadline | None = None,
    blocks: EntryBlocks | None = None,
    replicas: Settings | None = None,
    tally: Tally | None = None,
    positions: dict[str, Position] | None = None,
) -> tuple[int, list[str]]:
    """Commit signed intents, post the committed ones, record the answers: (orders sent to
    the venue, `problems` and those found here); `tally` (when given) counts the exits sent
    and the orders the book could not fill. Entry and exit legs alike: intent_commit.lua
    is leg-agnostic, an exit leg's id is new as an entry's is. Whatever the count, it costs two Redis
    round trips (every commit in one fenced call, then every answer) and a few thread hops
    (kernel/lanes.py); an entry tick runs it once per chunk of its entries (kernel/entry_stream.py).

    With `replicas` (the settings, when Settings.redis_min_replicas > 0: Sentinel, docs/ha.md)
    the commit's round trip carries a WAIT for that many replicas: an intent a failover could
    lose is never posted. Too few acknowledgements: nothing is posted, each committed intent
    is marked failed (known not to be at the venue), journaled (source `replication`) and
    counted (`errors_replication`); a primary that refused the commit (min-replicas-to-write)
    committed nothing, and that is journaled the same way.

    Past the lease deadline nothing is committed (the decision is made again by a tick whose
    renewal succeeded), and a committed intent whose post finds the deadline passed is not
    sent and is marked failed (never re-sent: its slot-window stays entered, as a halted
    one's); each refusal is journaled (source `lease`) and counted (`errors_lease`)."""
    problems = list(problems)
    if not ready:
        return 0, problems
    if deadline is not None and deadline.passed():
        try:
            deadline.check()
        except LeaseDeadlinePassed as e:
            await store.record_errors(
                "lease", [f"{i.id}: not committed: {e}" for i, _ in ready], now_ms=wall_ms()
            )
            problems.append(f"{len(ready)} intent(s) not committed: {e}")
        return 0, problems
    acked: int | None = None
    try:
        if replicas is None:
            verdicts = await store.commit_intents(epoch, [i for i, _ in ready])
        else:
            verdicts, acked = await store.commit_intents_acked(replicas, epoch, [i for i, _ in ready])
    except UnreadableValue as e:
        # Nothing committed, so nothing is posted: the commit is the gate. Reported each time
        # entries try, and the tick (and its journal) goes on.
        return 0, [*problems, f"{len(ready)} intent(s) not committed, nothing sent: {e}"]
    except NotReplicated as e:
        await store.record_errors(
            "replication", [f"{i.id}: not committed: {e}" for i, _ in ready], now_ms=wall_ms()
        )
        return 0, [*problems, f"{len(ready)} intent(s) not committed, nothing sent: {e}"]
    if isinstance(verdicts, Exception) or len(verdicts) != len(ready):
        raise RuntimeError(f"committing {len(ready)} intent(s): unexpected answer {verdicts!r}")
    committed: list[tuple[Intent, Any]] = []
    for (intent, signed), v in zip(ready, verdicts, strict=True):
        if entered is not None and v in ("OK", "DUPLICATE"):
            entered.add(intent.id)
        if v == "OK":
            committed.append((intent, signed))
        elif v != "DUPLICATE":  # a duplicate is the uniqueness rule doing its job, silently
            problems.append(f"{intent.id}: commit refused: {v}")
    if not committed:
        return 0, problems
    if replicas is not None and acked is not None:
        try:
            replication.check(replicas, acked, f"{len(committed)} intent(s) committed")
        except NotReplicated as e:
            return 0, problems + await _not_replicated(store, epoch, committed, e, blocks)
    results = await _post_all(venue, [(s, i.order_type) for i, s in committed], gate, n_lanes, deadline)
    now_ms = max(i.created_ms for i, _ in committed)
    updates: list[Intent] = []
    fills: list[tuple[Intent, Position]] = []
    sells: list[Intent] = []
    refused: list[str] = []
    tally = tally if tally is not None else Tally()
    for (intent, _), res in zip(committed, results, strict=True):
        if isinstance(res, NOT_SENT):
            problems.append(f"{intent.id}: {res}")
            if isinstance(res, LeaseDeadlinePassed):
                refused.append(f"{intent.id}: {res}")
            # Known not to be at the venue: failed at once. When the lease did pass to
            # another, this fenced write is refused and the intent stays open for the new
            # holder's reconciliation (unknown at the venue: failed after its grace period).
            updates.append(msgspec.structs.replace(intent, status="failed", error=str(res)))
        elif isinstance(res, BaseException):
            # The order may or may not have reached the venue: the intent stays open,
            # with the error, for reconciliation against the venue by its order id.
            problems.append(f"{intent.id}: venue error: {res}")
            updates.append(msgspec.structs.replace(intent, error=str(res)[:300]))
        else:
            outcome(intent, res, now_ms, updates, fills, problems, sells, tally)
    if refused:
        log.error("%d post(s) refused at the lease deadline: %s", len(refused), refused[0])
        await store.record_errors("lease", refused, now_ms=wall_ms())
    problems += await write_outcomes(store, epoch, updates, fills, blocks, sells, positions)
    sent = sum(not isinstance(res, NOT_SENT) for res in results)
    tally.exits += sum(
        i.is_exit and not isinstance(res, NOT_SENT) for (i, _), res in zip(committed, results, strict=True)
    )
    return sent, problems


async def _not_replicated(
    store: Store,
    epoch: int,
    committed: list[tuple[Intent, Any]],
    e: NotReplicated,
    blocks: EntryBlocks | None,
) -> list[str]:
    """Committed, acknowledged by too few replicas, never posted: each intent failed at once
    (its slot-window stays entered, as a halted post's), journaled and counted. Should this
    write be lost in a failover too, the intent is open and unknown at the venue: the next
    holder's reconciliation fails it after its grace period."""
    refused = [f"{intent.id}: not posted: {e}" for intent, _ in committed]
    log.error("%d intent(s) not posted: %s", len(committed), e)
    await store.record_errors("replication", refused, now_ms=wall_ms())
    updates = [msgspec.structs.replace(i, status="failed", error=f"not posted: {e}") for i, _ in committed]
    return [*refused, *await write_outcomes(store, epoch, updates, [], blocks)]
