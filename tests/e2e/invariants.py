"""The invariants of a run, checked from the outside: the tick journal in Redis and the
sim venue's list of every order it accepted. No log reading; each check returns numbers
and raises AssertionError with the evidence when an invariant breaks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from state.counts import counts_from, queue_counts, scan_counts
from state.keys import Keys
from state.structs import INTENT, POSITION, Intent, Position


@dataclass
class TickReport:
    first: int
    last: int
    run: int  # journal entries
    missed: list[int]  # tick indices absent between first and last
    runs: list[tuple[str, str, int]]  # (color, release, ticks) in order: one run per holder
    epochs: list[int]
    # Of `missed`, those whose boundary came while the tick before was still running (its own
    # journaled start and duration say so): a slow tick, not a gap in the handover, reload or
    # failover the tests look at. A stalled VM makes one now and then.
    overran: list[int] = field(default_factory=list)

    @property
    def missed_not_overrun(self) -> list[int]:
        return [t for t in self.missed if t not in self.overran]

    def overruns_are_rare(self) -> bool:
        """At most one tick in a hundred (and one in any run) lost to a tick that overran."""
        return len(self.overran) <= overrun_allowance(self.run)


def overrun_allowance(ticks: int) -> int:
    """Ticks a run of `ticks` may lose to a tick before them that ran past its boundary (a
    stalled machine; no handover, reload or injected fault explains them): one in a hundred,
    and one in any run. The e2e tests and the chaos checker judge by this one rule."""
    return max(1, ticks // 100)


def ran_past(entry: dict[str, str], boundary_ms: int) -> bool:
    """Whether a journaled tick was still running at `boundary_ms` (its own start and duration
    say so): the boundaries it ran past were lost to it, not to a gap between ticks."""
    try:
        return int(entry["started_ms"]) + int(entry.get("duration_ms") or 0) > boundary_ms
    except (KeyError, TypeError, ValueError):  # an entry that cannot say: not an overrun
        return False


def journal(r: Any, prefix: str = "baton:") -> list[dict[str, str]]:
    return [f for _, f in r.xrange(f"{prefix}journal:ticks")]


def check_ticks(entries: list[dict[str, str]], since_tick: int | None = None) -> TickReport:
    """No tick index twice, epochs never going back; returns the gaps for the caller to judge."""
    if since_tick is not None:
        entries = [e for e in entries if int(e["tick"]) >= since_tick]
    assert entries, "no tick journaled"
    ticks = [int(e["tick"]) for e in entries]
    dup = [t for t, n in Counter(ticks).items() if n > 1]
    assert not dup, f"tick indices journaled twice: {dup[:10]}"
    assert ticks == sorted(ticks), "journal out of order"
    epochs = [int(e["epoch"]) for e in entries]
    assert epochs == sorted(epochs), "a tick was journaled by an older epoch after a newer one"
    present = set(ticks)
    missed = [t for t in range(ticks[0], ticks[-1] + 1) if t not in present]
    by_tick = {int(e["tick"]): e for e in entries}
    overran: list[int] = []
    for t in missed:
        prev = by_tick[max(x for x in present if x < t)]
        tick_ms = (int(prev["started_ms"]) - int(prev["jitter_ms"])) // int(
            prev["tick"]
        )  # start = boundary + jitter
        if ran_past(prev, t * tick_ms):
            overran.append(t)
    runs: list[tuple[str, str, int]] = []
    last_epoch = None
    for e in entries:
        epoch = int(e["epoch"])
        if runs and epoch == last_epoch:
            c, rel, n = runs[-1]
            runs[-1] = (c, rel, n + 1)
        else:
            runs.append((e["color"], e["release"], 1))
        last_epoch = epoch
    return TickReport(ticks[0], ticks[-1], len(ticks), missed, runs, sorted(set(epochs)), overran)


def redis_intents(r: Any, prefix: str = "baton:") -> list[Intent]:
    return [INTENT.decode(v) for v in r.hvals(f"{prefix}intents")]


def redis_positions(r: Any, prefix: str = "baton:") -> list[Position]:
    return [POSITION.decode(v) for v in r.hvals(f"{prefix}positions")]


@dataclass
class OrderReport:
    posted: int
    filled: int
    positions: int
    exits: int = 0  # sell orders the venue filled (in part or whole)


def _venue_side(intent: Intent) -> str:
    return "SELL" if intent.is_exit else "BUY"


def _position_id(intent: Intent) -> str:
    return f"{intent.slot}:{intent.window_start_s}"


def check_orders(r: Any, venue_orders: list[dict[str, Any]], prefix: str = "baton:") -> OrderReport:
    """Each intent (an entry or an exit leg) is one order at most, of its leg's side; every
    venue order is one of our intents; every filled buy has its position in Redis (none lost)
    and no position lacks its order; every filled sell is booked against its position, whose
    shares held and sold add up to the venue's fills."""
    intents = redis_intents(r, prefix)
    # Per market and side, no more orders than intents that could have made them (two slots
    # on one market have an intent each).
    allowed = Counter((i.condition_id, _venue_side(i)) for i in intents)
    per_market = Counter((o["market"], str(o.get("side", "BUY")).upper()) for o in venue_orders)
    twice = {m: n for m, n in per_market.items() if n > allowed[m]}
    assert not twice, (
        f"orders posted more than once for the same slot-window ((market, side): count): {twice}"
    )
    by_order = {i.order_id: i for i in intents if i.order_id}
    per_slot_window = Counter((i.slot, i.window_start_s, i.leg) for i in intents)
    assert max(per_slot_window.values(), default=1) == 1
    strangers = [o["id"] for o in venue_orders if o["id"] not in by_order]
    assert not strangers, f"venue orders that no intent in Redis knows: {strangers[:5]}"
    wrong_side = [
        o["id"] for o in venue_orders if "side" in o and o["side"].upper() != _venue_side(by_order[o["id"]])
    ]
    assert not wrong_side, f"orders of the other side than their intent's leg: {wrong_side[:5]}"
    positions = {p.intent_id: p for p in redis_positions(r, prefix)}
    filled = [o for o in venue_orders if float(o["size_matched"]) > 0]
    buys = [o for o in filled if not by_order[o["id"]].is_exit]
    sells = [o for o in filled if by_order[o["id"]].is_exit]
    lost = [o["id"] for o in buys if by_order[o["id"]].id not in positions]
    assert not lost, f"filled at the venue but no position in Redis: {lost[:5]}"
    for o in buys:
        p = positions[by_order[o["id"]].id]
        bought = (p.shares_micros + p.sold_shares_micros) / 1e6
        assert abs(bought - float(o["size_matched"])) < 1e-6, (p, o)
    refs = {_s(x) for x in r.smembers(Keys(prefix).ledger_refs())}
    unbooked = [o["id"] for o in sells if f"sell:{by_order[o['id']].id}" not in refs]
    assert not unbooked, f"sold at the venue but not booked: {unbooked[:5]}"
    sold: Counter[str] = Counter()
    for o in sells:
        sold[_position_id(by_order[o["id"]])] += round(float(o["size_matched"]) * 1e6)
    by_id = {p.id: p for p in positions.values()}
    off = [
        (pid, p.sold_shares_micros, sold[pid])
        for pid, p in by_id.items()
        if p.sold_shares_micros != sold[pid]
    ]
    assert not off, f"shares sold by exits (position, booked, venue): {off[:5]}"
    venue_ids = {o["id"] for o in filled}
    order_of = {i.id: i.order_id for i in intents}
    phantom = [p.id for p in positions.values() if order_of.get(p.intent_id) not in venue_ids]
    phantom += [
        x for x in refs if x.startswith("sell:") and order_of.get(x.removeprefix("sell:")) not in venue_ids
    ]
    assert not phantom, f"positions or sales in Redis with no filled order at the venue: {phantom[:5]}"
    return OrderReport(
        posted=len(venue_orders), filled=len(filled), positions=len(positions), exits=len(sells)
    )


def open_intents(r: Any, prefix: str = "baton:") -> list[Intent]:
    return [INTENT.decode(v) for v in r.hvals(f"{prefix}intents:open")]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def check_ledger(r: Any, prefix: str = "baton:") -> int:
    """The ledger identity: cash + cost of open positions = deposits + realised PnL, from the
    stream alone (cash = deposits - buys + sells + payouts); the running sums (cash, PnL,
    fees, each kind's) equal the stream's; no ref booked twice; every position's buy entry
    booked for what it paid (the cost it holds and the cost its sales took), its sales'
    entries adding up to its proceeds, fees, exit PnL and exits; a closed position never
    paid. Returns the number of entries."""
    k = Keys(prefix)
    entries = [{_s(key): _s(v) for key, v in f.items()} for _, f in r.xrange(k.ledger())]

    def total(field: str, kind: str | None = None) -> int:
        return sum(int(e.get(field, 0)) for e in entries if kind is None or e["kind"] == kind)

    cash, realized, deposits = total("amount_micros"), total("pnl_micros"), total("amount_micros", "deposit")
    positions = redis_positions(r, prefix)
    open_cost = sum(p.cost_micros for p in positions if p.status == "open")
    assert cash + open_cost == deposits + realized, (cash, open_cost, deposits, realized)
    totals = {_s(key): int(v) for key, v in r.hgetall(k.ledger_totals()).items()}
    want = {"cash_micros": cash, "realized_pnl_micros": realized, "fee_micros": total("fee_micros")}
    want |= {f"{kind}_micros": total("amount_micros", kind) for kind in ("deposit", "buy", "sell", "payout")}
    assert {f: totals.get(f, 0) for f in want} == want, totals
    refs = Counter(e["ref"] for e in entries)
    assert max(refs.values(), default=1) == 1, [x for x, n in refs.items() if n > 1]
    by_ref = {e["ref"]: e for e in entries}
    unbooked = [p.id for p in positions if f"buy:{p.intent_id}" not in refs]
    assert not unbooked, f"positions without their buy entry: {unbooked[:5]}"
    for p in positions:
        sales = [e for e in entries if e["kind"] == "sell" and e["ref"].startswith(f"sell:{p.id}:")]
        booked = tuple(
            sum(int(e.get(f, 0)) for e in sales) for f in ("amount_micros", "fee_micros", "pnl_micros")
        )
        assert (*booked, len(sales)) == (p.proceeds_micros, p.fees_micros, p.exit_pnl_micros, p.exits), (
            p,
            sales,
        )
        paid = p.cost_micros + p.proceeds_micros - p.exit_pnl_micros
        assert int(by_ref[f"buy:{p.intent_id}"]["amount_micros"]) == -paid, (p, by_ref[f"buy:{p.intent_id}"])
        if p.status == "closed":
            assert (p.shares_micros, p.cost_micros) == (0, 0) and f"settle:{p.id}" not in refs, p
    return len(entries)


def check_counts(r: Any, prefix: str = "baton:") -> None:
    """The counts the scripts keep (baton:counts, state/counts.py) equal a count of every
    intent and position: the numbers `baton status`, /metrics and /pnl show."""
    k = Keys(prefix)
    pipe = r.pipeline(transaction=True)
    queue_counts(pipe, k)
    pipe.hvals(k.intents())
    pipe.hvals(k.positions())
    *replies, intents, positions = pipe.execute()
    kept = counts_from(replies)
    assert kept is not None, f"the counts do not add up to the hashes' sizes: {replies}"
    scanned = scan_counts(intents, positions, open_hash=replies[3])
    fields = (
        "intents",
        "intents_unreadable",
        "positions_open",
        "positions_settled",
        "positions_won",
        "positions_closed",
    )
    assert {f: getattr(kept, f) for f in fields} == {f: getattr(scanned, f) for f in fields}
