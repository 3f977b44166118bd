"""Adopting what the venue listed (kernel/adopt.py says why and when): which of this account's
orders no intent knows, whose slot-window each is (`adopt_listed`; a market several slots trade
needs the intents of all of them to say), and their recording as entry intents and exit legs,
their fills and sales booked as a post's would be.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec

from kernel import lanes, outcomes
from kernel.exits import exit_intent_id
from kernel.markets import MarketCache
from kernel.snapshot import ENTRY_LEG, SlotRef
from kernel.strategy_api import MAX_EXIT_LEGS
from kernel.venue import AccountOrder, OrderResult
from state.store import Store
from state.structs import INTENT, Blocker, Intent, Market, Position, exit_leg

log = logging.getLogger("baton.adopt")

# The EntryBlocks source of the holds; the error journal's source of each adoption.
HOLD = "adopt"
ADOPTED = "adopted"
# Adoptions logged one by one (each is journaled; a thousand at once is one failover).
LOGGED = 10
# An order the venue listed, with the slot-window and market it is of.
Found = tuple[tuple[SlotRef, Market], AccountOrder]


@dataclass
class Swept:
    """What one sweep found and did."""

    done: bool  # every open slot-window was covered (no hold left)
    adopted: list[Intent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    held: list[Blocker] = field(default_factory=list)
    orders: int = 0  # this account's orders the venue listed


def previous_ref(r: SlotRef) -> SlotRef:
    """The slot's window before `r`'s: closed, but its fills are still to be settled."""
    length = r.window_end_s - r.window_start_s
    return SlotRef(r.id, r.asset, r.timeframe, r.window_start_s - length, r.window_start_s)


def adopted_intent(ref: SlotRef, m: Market, o: AccountOrder, epoch: int, now_ms: int) -> Intent | None:
    """The entry intent an adopted order stands for ("posted": its outcome is written next,
    as a post's would be); None when the order is not a buy of one of the market's tokens."""
    if o.side != "BUY" or o.token_id not in (m.up_token, m.down_token):
        return None
    size = o.original_size or o.size_matched
    price = o.price or o.avg_price
    return Intent(
        id=ref.entry_intent_id,
        slot=ref.id,
        window_start_s=ref.window_start_s,
        window_end_s=ref.window_end_s,
        leg=ENTRY_LEG,
        side="up" if o.token_id == m.up_token else "down",
        limit_price=price,
        size=size,
        stake_usd=round(size * price, 6),
        epoch=epoch,
        created_ms=o.created_s * 1000 if o.created_s else now_ms,
        status="posted",
        token_id=o.token_id,
        condition_id=m.condition_id,
        order_id=o.order_id,
        updated_ms=now_ms,
        adopted_ms=now_ms,
    )


def venue_answer(o: AccountOrder) -> OrderResult:
    """The order as a post's answer (kernel/executor.py `outcome`): an order that is no
    longer pending and bought something is a fill of what it bought, whatever became of its
    rest (a FAK's or a canceled GTC's)."""
    status = o.status
    if o.size_matched > 0 and status not in outcomes.PENDING_STATUSES:
        status = "matched"
    return OrderResult(o.order_id, status, o.size_matched, o.price, avg_price=o.avg_price)


def swept_windows(refs: list[SlotRef]) -> list[SlotRef]:
    """The windows a sweep covers: each slot's current one and the one before it."""
    return [*refs, *(previous_ref(r) for r in refs)]


def not_read(store: Store, why: str) -> Swept:
    """A sweep that could not be made: every slot waits for the next try."""
    why = f"{why}; entries wait until they are"
    return Swept(
        done=False,
        problems=[f"adoption sweep: {why}"],
        held=[Blocker(key=store.k.intents(), problem=why, source=HOLD)],
    )


async def adopt_listed(
    store: Store,
    markets: MarketCache,
    refs: list[SlotRef],
    listed: list[AccountOrder],
    epoch: int,
    now_ms: int,
) -> Swept:
    """Adopt the orders of `listed` (the venue's answer) that no intent knows, in the windows
    of `refs` and the windows just before them."""
    windows = swept_windows(refs)
    out = Swept(done=True, orders=len(listed))
    if not listed:
        return out
    cached, _ = await markets.cached(windows, out.problems)
    by_market: dict[str, list[tuple[SlotRef, Market]]] = {}
    for r in windows:
        if (m := cached.get(r.slug)) is not None:
            by_market.setdefault(m.condition_id, []).append((r, m))
    if any(o.market not in by_market for o in listed):
        await _discover(markets, [r for r in windows if r.slug not in cached], refs, by_market, out)
    found = await _attribute(store, listed, by_market, out)
    # Sales after buys: a lost entry's position is booked before a lost exit sells from it.
    sales = sorted(
        ((rm, o) for rm, o in found if o.side == "SELL" and o.token_id in (rm[1].up_token, rm[1].down_token)),
        key=lambda x: x[1].created_s,
    )
    found = [(rm, o) for rm, o in found if o.side != "SELL"]
    if found:
        await _adopt_buys(store, found, epoch, now_ms, out)
    if sales:
        await _adopt_sales(store, sales, epoch, now_ms, out)
    return out


async def _attribute(
    store: Store,
    listed: list[AccountOrder],
    by_market: dict[str, list[tuple[SlotRef, Market]]],
    out: Swept,
) -> list[Found]:
    """Each listed order with the slot-window it is of. A market one slot trades is that
    slot's. A market several slots trade (slots are free-form: two strategies on btc-15m)
    cannot say whose an order is: an order an intent of any of them knows is nobody's to
    adopt (else a takeover's sweep booked one slot's order as the entry of another that had
    not entered); an unknown BUY is the entry of the one slot whose window has none, an
    unknown SELL an exit of the one slot whose entry bought that token. With more than one
    such slot it is not adopted, and they are held (no new order) while the sweep is owed
    again each tick, until the window is past: a guess could book one slot's fill as
    another's, and an entry could be sent twice."""
    found: list[Found] = []
    shared: list[AccountOrder] = []
    for o in listed:
        pairs = by_market.get(o.market, [])
        if len(pairs) == 1:
            found.append((pairs[0], o))
        elif pairs:
            shared.append(o)
    if not shared:
        return found
    refs = list({(r.id, r.window_start_s): r for o in shared for r, _ in by_market[o.market]}.values())
    per = 1 + MAX_EXIT_LEGS
    ids = [i for r in refs for i in (r.entry_intent_id, *(exit_intent_id(r, n) for n in range(1, per)))]
    raw = await store.raw_intents(ids)
    known: set[str] = set()
    entries: dict[str, Intent | None] = {}  # entry intent id -> the intent (None: unreadable)
    for k, r in enumerate(refs):
        for n, v in enumerate(raw[k * per : (k + 1) * per]):
            if v is None:
                continue
            try:
                intent = INTENT.decode(v)
            except msgspec.DecodeError:
                intent = None
            if n == 0:
                entries[r.entry_intent_id] = intent
            if intent is not None:
                known.add(intent.order_id)
    for o in shared:
        if o.order_id in known:
            continue
        pairs = by_market[o.market]
        if o.side == "SELL":
            cands = [
                (r, m)
                for r, m in pairs
                if (e := entries.get(r.entry_intent_id)) is not None and e.token_id == o.token_id
            ]
        else:
            cands = [(r, m) for r, m in pairs if r.entry_intent_id not in entries]
        if len(cands) == 1:
            found.append((cands[0], o))
            continue
        slots = ", ".join(r.id for r, _ in pairs)
        why = (
            f"{o.side} {o.order_id} is at the venue in the market of {slots} and no intent knows it; "
            f"{len(cands) or 'none'} of those slots could have sent it: not adopted"
        )
        out.problems.append(f"adoption sweep: {why}")
        if len(cands) > 1:
            out.done = False
            out.held += [
                Blocker(key=store.k.intents(), field=r.entry_intent_id, problem=why, slot=r.id, source=HOLD)
                for r, _ in cands
            ]
    return found


async def _adopt_buys(
    store: Store,
    found: list[tuple[tuple[SlotRef, Market], AccountOrder]],
    epoch: int,
    now_ms: int,
    out: Swept,
) -> None:
    """The buys no entry intent knows, adopted as their slot-window's entry."""
    ids = list(dict.fromkeys(r.entry_intent_id for (r, _), _ in found))
    known: dict[str, Intent | None] = {}
    for intent_id, raw in zip(ids, await store.raw_intents(ids), strict=True):
        if raw is None:
            continue
        try:
            known[intent_id] = INTENT.decode(raw)
        except msgspec.DecodeError:
            known[intent_id] = None  # entered, whatever it says: never adopted over
    todo: list[tuple[Intent, OrderResult]] = []
    for (r, m), o in found:
        intent_id = r.entry_intent_id
        if intent_id in known:
            had = known[intent_id]
            if had is not None and had.order_id != o.order_id:
                out.problems.append(
                    f"adoption sweep: order {o.order_id} of {r.id} window {r.window_start_s} is at "
                    f"the venue, and the window's intent knows another ({had.order_id or 'none'}): "
                    "a second order of one slot-window, not adopted"
                )
            continue
        intent = adopted_intent(r, m, o, epoch, now_ms)
        if intent is None:
            continue
        known[intent_id] = intent  # a second unknown order of this window is not adopted too
        todo.append((intent, venue_answer(o)))
    if todo:
        await _record(store, epoch, todo, now_ms, out)


async def _adopt_sales(
    store: Store,
    sales: list[tuple[tuple[SlotRef, Market], AccountOrder]],
    epoch: int,
    now_ms: int,
    out: Swept,
) -> None:
    """The sells no exit leg knows, adopted as their slot-window's next exit legs (oldest
    first). A window with a leg that cannot be read adopts nothing: that leg may be the
    order's."""
    windows = list({r.id + ":" + str(r.window_start_s): r for (r, _), _ in sales}.values())
    ids = [exit_intent_id(r, n) for r in windows for n in range(1, MAX_EXIT_LEGS + 1)]
    raw = await store.raw_intents(ids)
    legs: dict[str, int] = {}  # slot-window -> the highest leg committed
    orders: dict[str, set[str]] = {}  # slot-window -> the order ids its legs know
    unreadable: set[str] = set()
    for k, r in enumerate(windows):
        key = f"{r.id}:{r.window_start_s}"
        orders[key] = set()
        legs[key] = 0
        for n, v in enumerate(raw[k * MAX_EXIT_LEGS : (k + 1) * MAX_EXIT_LEGS], 1):
            if v is None:
                continue
            legs[key] = n
            try:
                orders[key].add(INTENT.decode(v).order_id)
            except msgspec.DecodeError:
                unreadable.add(key)
    todo: list[tuple[Intent, OrderResult]] = []
    for (r, m), o in sales:
        key = f"{r.id}:{r.window_start_s}"
        if o.order_id in orders[key]:
            continue
        if key in unreadable or legs[key] >= MAX_EXIT_LEGS:
            why = "an exit leg of it cannot be read" if key in unreadable else "every exit leg is used"
            out.problems.append(
                f"adoption sweep: SELL {o.order_id} of {r.id} window {r.window_start_s} is at the venue "
                f"and no intent knows it, but {why}: not adopted"
            )
            continue
        legs[key] += 1
        orders[key].add(o.order_id)
        todo.append((adopted_exit(r, m, o, legs[key], epoch, now_ms), venue_answer(o)))
    if todo:
        await _record(store, epoch, todo, now_ms, out)


def adopted_exit(ref: SlotRef, m: Market, o: AccountOrder, n: int, epoch: int, now_ms: int) -> Intent:
    """Exit leg `n` that an adopted SELL stands for ("posted", as adopted_intent's)."""
    size = o.original_size or o.size_matched
    return Intent(
        id=exit_intent_id(ref, n),
        slot=ref.id,
        asset=ref.asset,
        window_start_s=ref.window_start_s,
        window_end_s=ref.window_end_s,
        leg=exit_leg(n),
        side="up" if o.token_id == m.up_token else "down",
        limit_price=o.price or o.avg_price,
        size=size,
        stake_usd=0.0,
        epoch=epoch,
        created_ms=o.created_s * 1000 if o.created_s else now_ms,
        status="posted",
        token_id=o.token_id,
        condition_id=m.condition_id,
        order_id=o.order_id,
        updated_ms=now_ms,
        adopted_ms=now_ms,
    )


async def _discover(
    markets: MarketCache,
    missing: list[SlotRef],
    current: list[SlotRef],
    by_market: dict[str, list[tuple[SlotRef, Market]]],
    out: Swept,
) -> None:
    """The markets of windows not in the cache, asked of the venue: an order in a market the
    cache lacks (its write may be what Redis lost) is then found. A current window whose
    market cannot be asked is held until a sweep can."""
    missing = [r for r in missing if r.slug not in markets.bad]
    if not missing:
        return
    now = {r.slug for r in current}
    answers = await lanes.in_lanes(lambda r: markets.venue.discover(r.slug), missing)
    fresh: list[tuple[SlotRef, Market]] = []
    for r, a in zip(missing, answers, strict=True):
        if isinstance(a, BaseException):
            if r.slug in now:
                why = f"its market could not be found at the venue ({a}), so nor its orders"
                key = markets.store.k.market(r.slug)
                out.held.append(Blocker(key=key, problem=why, slot=r.id, source=HOLD))
                out.problems.append(f"adoption sweep: {r.id}: {why}")
        elif a is not None:
            markets.remember(r, a)
            fresh.append((r, a))
            by_market.setdefault(a.condition_id, []).append((r, a))
    await markets.save(fresh)
    out.done = not out.held


async def _record(
    store: Store, epoch: int, todo: list[tuple[Intent, OrderResult]], now_ms: int, out: Swept
) -> None:
    """Write the adopted intents (intent_adopt.lua: never over an existing one), then what the
    venue said of each (its fill booked through record_fill.lua, as a post's answer is)."""
    updates: list[Intent] = []
    fills: list[tuple[Intent, Position]] = []
    sold: list[Intent] = []
    for intent, res in todo:
        outcomes.outcome(intent, res, now_ms, updates, fills, [], sold)
    # Each intent as it is adopted: its final state, except a fill's or a sale's, which
    # record_fill and record_exit make.
    filled = {i.id for i, _ in fills} | {i.id for i in sold}
    first = [i for i, _ in todo if i.id in filled] + [u for u in updates]
    verdicts = await store.adopt_intents(epoch, first)
    ok = {i.id for i, v in zip(first, verdicts, strict=True) if v == "OK"}
    refused = [f"{i.id}: adoption refused: {v}" for i, v in zip(first, verdicts, strict=True) if v != "OK"]
    fills = [(i, p) for i, p in fills if i.id in ok]
    sold = [i for i in sold if i.id in ok]
    if fills or sold:
        refused += await outcomes.write_outcomes(store, epoch, [], fills, sells=sold)
    out.problems += [f"adoption sweep: {p}" for p in refused]
    adopted = [i for i, _ in fills] + sold + [u for u in updates if u.id in ok]
    out.adopted += adopted
    if adopted:
        lines = [
            f"{i.id}: adopted order {i.order_id} that no intent knew ({i.status}, "
            f"{i.filled_size or i.size:g} shares at {i.avg_price or i.limit_price:g}): "
            + ("its sale booked" if i.is_exit else "its window counts as entered")
            for i in adopted
        ]
        for line in lines[:LOGGED]:
            log.warning("%s", line)
        if len(lines) > LOGGED:
            log.warning("... and %d more adopted (every one in the error journal)", len(lines) - LOGGED)
        await store.record_errors(ADOPTED, lines, now_ms=now_ms)
