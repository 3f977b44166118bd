"""The chaos run's invariant checker: pure functions of what Redis, the sim's order list and
the harness's fault log hold at the end of a run. Nothing here talks to a process, so each
check is unit-tested on synthetic data (tests/chaos/test_checker.py).

Times are wall-clock milliseconds on the one host the stack runs on. The sim's `created_at`
is in whole seconds (as the CLOB's): an order is judged to be after a moment only when its
whole second is, and before one only when its whole second ends before it.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.e2e.invariants import overrun_allowance, ran_past

# How long after a halt flag that nobody acknowledged (or a garbage flag) an order already
# on its way may still reach the venue: the tick in progress finishes its posts.
UNACKED_GRACE_TICKS = 2
UNACKED_GRACE_MS = 1000


@dataclass
class RunData:
    tick_ms: int
    first_tick: int  # the first tick of the measured run (chaos started at its boundary)
    end_ms: int  # when the snapshot was taken
    settle_grace_ms: int  # a position whose window ended longer ago must be settled
    journal: list[dict[str, str]]
    venue_orders: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    open_intents: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    open_positions: list[dict[str, Any]]
    ledger: list[dict[str, str]]
    ledger_totals: dict[str, str]
    faults: list[dict[str, Any]]


@dataclass
class Row:
    section: str
    name: str
    value: Any
    expected: str = ""  # "" = a figure, not an invariant
    ok: bool | None = None  # None: a figure
    evidence: list[str] = field(default_factory=list)


@dataclass
class Report:
    rows: list[Row]
    figures: dict[str, Any]

    @property
    def broken(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.broken,
            "broken": [r.name for r in self.broken],
            "rows": [asdict(r) for r in self.rows],
            "figures": self.figures,
        }


def _inv(section: str, name: str, value: Any, want: Any, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, f"= {want}", value == want, (evidence or [])[:20])


def _at_most(section: str, name: str, value: int, limit: int, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, f"<= {limit}", value <= limit, (evidence or [])[:20])


def _fig(section: str, name: str, value: Any, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, "", None, (evidence or [])[:20])


def _i(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# --- ticks ---------------------------------------------------------------------------------


def _gap_evidence(prev: dict[str, str] | None, nxt: dict[str, str] | None, tick_ms: int) -> str:
    """Why the worker skipped boundaries, as far as the journal tells: the tick before the gap
    ran past the next boundary (overrun), another holder took over (takeover), or the same
    holder simply did not tick (stall: stopped, Redis down, a tick that failed)."""
    if prev is None or nxt is None:
        return "edge"
    if ran_past(prev, (_i(prev["tick"]) + 1) * tick_ms):
        return "overrun"
    if prev.get("epoch") != nxt.get("epoch"):
        return "takeover"
    return "stall"


def attribute(tick: int, tick_ms: int, faults: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The injected fault a missed tick belongs to: one that may cost ticks and whose effect
    window holds the tick's boundary. The window opens a tick before the fault (the tick in
    progress when it hit) and closes its grace after the fault was seen to be over."""
    b = tick * tick_ms
    hits = [
        f
        for f in faults
        if f.get("costs_ticks") and f["start_ms"] - tick_ms <= b <= f["end_ms"] + f.get("grace_ms", 0)
    ]
    # Where windows touch (one fault's grace, the next one's start), the latest to begin is
    # the one the tick was lost to.
    return max(hits, key=lambda f: f["start_ms"]) if hits else None


def check_ticks(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    entries = [e for e in d.journal if _i(e.get("tick"), -1) >= d.first_tick]
    ticks = [_i(e["tick"]) for e in entries]
    if not ticks:
        return [_inv("ticks", "ticks journaled", 0, "> 0")], {}
    last = max(ticks)
    counts = Counter(ticks)
    dup = sorted(t for t, n in counts.items() if n > 1)
    out_of_order = sum(1 for a, b in itertools.pairwise(ticks) if b < a)
    epochs = [_i(e.get("epoch")) for e in entries]
    epoch_back = sum(1 for a, b in itertools.pairwise(epochs) if b < a)
    present = set(ticks)
    expected = last - d.first_tick + 1
    missed = [t for t in range(d.first_tick, last + 1) if t not in present]

    by_tick = {_i(e["tick"]): e for e in entries}
    by_kind: Counter[str] = Counter()
    by_fault: Counter[int] = Counter()
    unattributed: list[str] = []
    overran: list[str] = []  # unattributed, but the tick before overran (see below)
    kinds_of_gap: Counter[str] = Counter()
    for t in missed:
        prev_t = max((x for x in present if x < t), default=None)
        next_t = min((x for x in present if x > t), default=None)
        prev = by_tick.get(prev_t) if prev_t is not None else None
        nxt = by_tick.get(next_t) if next_t is not None else None
        why = _gap_evidence(prev, nxt, d.tick_ms)
        kinds_of_gap[why] += 1
        f = attribute(t, d.tick_ms, d.faults)
        if (
            f is None
            and prev is not None
            and ran_past(prev, t * d.tick_ms)
            and (nxt is None or nxt.get("epoch") == prev.get("epoch"))
        ):
            # No fault explains it, but the tick before was still running at this very
            # boundary, by its own journaled start and duration (a stalled machine), and the
            # same holder ticked next: judged as the e2e tests judge it, allowed while rare.
            # Each tick on its own: the ticks of a gap after the overrun ended are a stall,
            # and a takeover no fault explains is never a slow tick's doing.
            overran.append(f"tick {t} (boundary {t * d.tick_ms}): the tick before ran past it")
        elif f is None:
            unattributed.append(f"tick {t} (boundary {t * d.tick_ms}, {why})")
        else:
            by_kind[f["kind"]] += 1
            by_fault[f["seq"]] += 1

    handover = [f for f in d.faults if f["kind"] in ("deploy", "rollback")]
    handover_missed = sum(by_kind[k] for k in ("deploy", "rollback"))
    handover_gaps = []
    for f in handover:
        det = f.get("details") or {}
        k = det.get("handover_tick")
        if det.get("ok") and k is not None and k >= d.first_tick and not (k in present and k + 1 in present):
            handover_gaps.append(f"{f['kind']} #{f['seq']}: ticks {k}/{k + 1} not both journaled")

    # A tick journals `halted` when the halt came at any point of it: one the halt reached
    # mid-way may have posted before the gate closed (the acknowledgement waits for those
    # posts). A tick that *started* after the acknowledgement and before the resume may not.
    halts = halt_windows(d.faults, d.tick_ms)
    halted_orders = [
        f"tick {e['tick']} (epoch {e.get('epoch')}) started at {e['started_ms']}, inside {label} "
        f"[{a}, {b}]: {e.get('orders')} order(s)"
        for e in entries
        for a, b, label in halts
        if a < _i(e["started_ms"]) < b and _i(e.get("orders")) > 0
    ]
    raced = [
        f"tick {e['tick']}: {e.get('orders')} order(s), halted during the tick"
        for e in entries
        if e.get("halted") == "1" and _i(e.get("orders")) > 0
    ]
    jitters = sorted(_i(e.get("jitter_ms")) for e in entries)
    late = [e for e in entries if _i(e.get("jitter_ms")) >= d.tick_ms]
    rows += [
        _fig("ticks", "expected", expected),
        _fig("ticks", "done", len(present)),
        _fig(
            "ticks",
            "missed",
            len(missed),
            [f"{k}: {n}" for k, n in sorted(by_kind.items())] + [f"gaps: {dict(kinds_of_gap)}"],
        ),
        _inv("ticks", "missed, not attributed to a fault", len(unattributed), 0, unattributed),
        _at_most(
            "ticks",
            "missed to an overrun no fault explains",
            len(overran),
            overrun_allowance(len(present)),
            overran,
        ),
        _inv("ticks", "duplicated", len(dup), 0, [f"tick {t} x{counts[t]}" for t in dup]),
        _inv("ticks", "journaled out of order", out_of_order, 0),
        _inv("ticks", "epoch going back", epoch_back, 0),
        _fig(
            "ticks",
            "run a tick or more late",
            len(late),
            [f"tick {e['tick']}: {e.get('jitter_ms')} ms after its boundary" for e in late],
        ),
        _fig("ticks", "missed in deploy/rollback windows", handover_missed),
        _inv("ticks", "gaps at a deploy/rollback handover", len(handover_gaps), 0, handover_gaps),
        _fig("ticks", "posted, then halted in the same tick", len(raced), raced),
        _inv("ticks", "ticks that posted inside a halt", len(halted_orders), 0, halted_orders),
    ]
    figures = {
        "first": d.first_tick,
        "last": last,
        "expected": expected,
        "done": len(present),
        "missed": len(missed),
        "missed_ticks": missed,
        "missed_by_kind": dict(by_kind),
        "missed_by_fault": {str(k): v for k, v in by_fault.items()},
        "gap_evidence": dict(kinds_of_gap),
        "unattributed": unattributed,
        "overran_unattributed": overran,
        "duplicated": dup,
        "handover_missed": handover_missed,
        "epochs": sorted(set(epochs)),
        "late": len(late),
        "jitter_ms_p50": jitters[len(jitters) // 2],
        "jitter_ms_p99": jitters[min(len(jitters) - 1, len(jitters) * 99 // 100)],
        "jitter_ms_max": jitters[-1],
    }
    return rows, figures


# --- orders ---------------------------------------------------------------------------------


def halt_windows(faults: list[dict[str, Any]], tick_ms: int) -> list[tuple[int, int, str]]:
    """(from_ms, until_ms, label): from when no order may reach the venue until the resume was
    sent. After an acknowledged halt that is the acknowledgement; after a flag nobody
    acknowledged (no worker listening, or garbage in the hash) the tick in progress may finish."""
    grace = UNACKED_GRACE_TICKS * tick_ms + UNACKED_GRACE_MS
    out: list[tuple[int, int, str]] = []
    for f in faults:
        det = f.get("details") or {}
        label = f"{f['kind']} #{f['seq']}"
        if f["kind"] in ("halt", "garbage-keys") and det.get("halted_ms") and det.get("resume_sent_ms"):
            if det.get("acknowledged") and det.get("ack_ms") is not None:
                start = int(det["halted_ms"]) + int(det["ack_ms"])
            else:
                start = int(det["halted_ms"]) + grace
            out.append((start, int(det["resume_sent_ms"]), label))
        elif f["kind"] == "garbage-keys" and det.get("field") == "halted" and det.get("written_ms"):
            out.append((int(det["written_ms"]) + grace, int(det["cleanup_sent_ms"]), label))
    return out


def pause_windows(faults: list[dict[str, Any]], tick_ms: int) -> list[tuple[int, int, str]]:
    grace = UNACKED_GRACE_TICKS * tick_ms + UNACKED_GRACE_MS
    out: list[tuple[int, int, str]] = []
    for f in faults:
        det = f.get("details") or {}
        if f["kind"] == "garbage-keys" and det.get("field") == "paused" and det.get("cleanup_sent_ms"):
            label = f"garbage-keys #{f['seq']}"
            out.append((int(det["written_ms"]) + grace, int(det["cleanup_sent_ms"]), label))
    return out


def _surely_inside(created_s: int, start_ms: int, end_ms: int) -> bool:
    """The whole second `created_s` lies after start_ms and ends before end_ms."""
    return created_s * 1000 > start_ms and (created_s + 1) * 1000 <= end_ms


def epoch_starts(journal: list[dict[str, str]]) -> dict[int, int]:
    """When each epoch's holder started its first journaled tick."""
    out: dict[int, int] = {}
    for e in journal:
        ep, at = _i(e.get("epoch")), _i(e.get("started_ms"))
        if ep not in out or at < out[ep]:
            out[ep] = at
    return out


def check_orders(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    orders = d.venue_orders
    per_market = Counter(o.get("market") for o in orders)
    dup_markets = {m: n for m, n in per_market.items() if n > 1}
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    per_intent_key = Counter((i["slot"], i["window_start_s"], i.get("leg", "")) for i in d.intents)
    dup_intents = [k for k, n in per_intent_key.items() if n > 1]
    strangers = [o["id"] for o in orders if o["id"] not in by_order]

    starts = epoch_starts(d.journal)
    stale: list[str] = []
    for o in orders:
        i = by_order.get(o["id"])
        if i is None:
            continue
        later = [at for ep, at in starts.items() if ep > _i(i.get("epoch"))]
        if later and _i(o.get("created_at")) * 1000 > min(later):
            stale.append(
                f"order {o['id'][:14]} of {i['id']} (epoch {i.get('epoch')}) created at "
                f"{o.get('created_at')} s, after a newer epoch started at {min(later)} ms"
            )
    stale_intents = []
    for i in d.intents:
        later = [at for ep, at in starts.items() if ep > _i(i.get("epoch"))]
        if later and _i(i.get("created_ms")) > min(later):
            stale_intents.append(f"intent {i['id']} of epoch {i.get('epoch')} made at {i.get('created_ms')}")

    halts = halt_windows(d.faults, d.tick_ms)
    after_halt = [
        f"order {o['id'][:14]} created at {o.get('created_at')} s, inside {label} [{a}, {b}] ms"
        for o in orders
        for a, b, label in halts
        if _surely_inside(_i(o.get("created_at")), a, b)
    ]
    intents_in_halt = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}]"
        for i in d.intents
        for a, b, label in halts
        if a < _i(i.get("created_ms")) < b
    ]
    pauses = pause_windows(d.faults, d.tick_ms)
    intents_in_pause = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}]"
        for i in d.intents
        for a, b, label in pauses
        if a < _i(i.get("created_ms")) < b
    ]
    rows = [
        _fig("orders", "posted", len(orders)),
        _inv(
            "orders",
            "duplicated per slot-window",
            sum(n - 1 for n in dup_markets.values()) + len(dup_intents),
            0,
            [f"market {m}: {n} orders" for m, n in dup_markets.items()]
            + [f"intent key {k}" for k in dup_intents],
        ),
        _inv("orders", "unknown to Redis (no intent)", len(strangers), 0, strangers),
        _inv("orders", "posted by a stale epoch", len(stale) + len(stale_intents), 0, stale + stale_intents),
        _inv(
            "orders",
            "posted after a halt",
            len(after_halt) + len(intents_in_halt),
            0,
            after_halt + intents_in_halt,
        ),
        _inv("orders", "entered while paused", len(intents_in_pause), 0, intents_in_pause),
        _fig("orders", "halts checked", len(halts)),
    ]
    figures = {
        "posted": len(orders),
        "duplicated": sum(n - 1 for n in dup_markets.values()),
        "strangers": len(strangers),
        "stale_epoch": len(stale) + len(stale_intents),
        "after_halt": len(after_halt) + len(intents_in_halt),
        "halt_windows": [list(h) for h in halts],
        "pause_windows": [list(p) for p in pauses],
        "intents": len(d.intents),
        "intents_by_status": dict(Counter(i.get("status") for i in d.intents)),
    }
    return rows, figures


# --- positions -----------------------------------------------------------------------------


def check_positions(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    order_of = {i["id"]: i.get("order_id") for i in d.intents}
    positions = {p["intent_id"]: p for p in d.positions}
    filled = [o for o in d.venue_orders if float(o.get("size_matched") or 0) > 0]
    lost, mismatched = [], []
    for o in filled:
        i = by_order.get(o["id"])
        p = positions.get(i["id"]) if i else None
        if p is None:
            lost.append(f"order {o['id'][:14]} ({o.get('market', '')[:12]}) filled {o.get('size_matched')}")
        elif abs(_i(p.get("shares_micros")) - round(float(o["size_matched"]) * 1_000_000)) > 0:
            mismatched.append(f"{p['id']}: {p.get('shares_micros')} micro-shares, venue {o['size_matched']}")
    filled_ids = {o["id"] for o in filled}
    phantom = [p["id"] for p in d.positions if order_of.get(p.get("intent_id")) not in filled_ids]

    closed_before = d.end_ms - d.settle_grace_ms
    closed = [p for p in d.positions if _i(p.get("window_end_s")) * 1000 <= closed_before]
    unsettled = [p["id"] for p in closed if p.get("status") != "settled"]
    settled = [p for p in d.positions if p.get("status") == "settled"]
    bad_settle = []
    for p in settled:
        want = _i(p.get("shares_micros")) if p.get("won") else 0
        if _i(p.get("payout_micros")) != want or _i(p.get("pnl_micros")) != want - _i(p.get("cost_micros")):
            bad_settle.append(
                f"{p['id']}: won={p.get('won')} shares={p.get('shares_micros')} cost={p.get('cost_micros')} "
                f"payout={p.get('payout_micros')} pnl={p.get('pnl_micros')}"
            )
    open_ids = {p["id"] for p in d.positions if p.get("status") == "open"}
    open_hash = {p["id"] for p in d.open_positions}
    open_mismatch = sorted(open_ids ^ open_hash)
    rows = [
        _fig("positions", "filled at the venue", len(filled)),
        _fig("positions", "recorded in Redis", len(d.positions)),
        _inv("positions", "filled at the venue, not recorded", len(lost), 0, lost),
        _inv("positions", "recorded, not filled at the venue", len(phantom), 0, phantom),
        _inv("positions", "size differs from the venue's fill", len(mismatched), 0, mismatched),
        _fig("positions", "windows closed (with a position)", len(closed)),
        _fig("positions", "settled", len(settled)),
        _inv("positions", "closed windows not settled", len(unsettled), 0, unsettled),
        _inv("positions", "settlements that do not add up", len(bad_settle), 0, bad_settle),
        _inv("positions", "open set disagrees with positions", len(open_mismatch), 0, open_mismatch),
        _inv(
            "positions",
            "intents left open after the drain",
            len(d.open_intents),
            0,
            [
                f"{i['id']} ({i.get('status')}, epoch {i.get('epoch')}): {i.get('error', '')[:80]}"
                for i in d.open_intents
            ],
        ),
    ]
    figures = {
        "filled_at_venue": len(filled),
        "recorded": len(d.positions),
        "lost": len(lost),
        "phantom": len(phantom),
        "closed": len(closed),
        "settled": len(settled),
        "unsettled": unsettled,
        "open": len(open_ids),
        "won": sum(1 for p in settled if p.get("won")),
    }
    return rows, figures


# --- ledger --------------------------------------------------------------------------------


def check_ledger(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    cash = sum(_i(e.get("amount_micros")) for e in d.ledger)
    deposits = sum(_i(e.get("amount_micros")) for e in d.ledger if e.get("kind") == "deposit")
    realized = sum(_i(e.get("pnl_micros")) for e in d.ledger)
    open_cost = sum(_i(p.get("cost_micros")) for p in d.positions if p.get("status") == "open")
    diff = cash + open_cost - (deposits + realized)
    totals_cash = _i(d.ledger_totals.get("cash_micros"))
    totals_pnl = _i(d.ledger_totals.get("realized_pnl_micros"))
    refs = Counter(e.get("ref") for e in d.ledger)
    dup_refs = [f"{r} x{n}" for r, n in refs.items() if n > 1]
    by_ref = {e.get("ref"): e for e in d.ledger}
    per_position = []
    for p in d.positions:
        buy = by_ref.get(f"buy:{p['intent_id']}")
        if buy is None or _i(buy.get("amount_micros")) != -_i(p.get("cost_micros")):
            got = buy and buy.get("amount_micros")
            per_position.append(f"{p['id']}: cost {p.get('cost_micros')}, buy entry {got}")
        if p.get("status") == "settled":
            pay = by_ref.get(f"settle:{p['id']}")
            if (
                pay is None
                or _i(pay.get("amount_micros")) != _i(p.get("payout_micros"))
                or _i(pay.get("pnl_micros")) != _i(p.get("pnl_micros"))
            ):
                per_position.append(
                    f"{p['id']}: payout {p.get('payout_micros')}/pnl {p.get('pnl_micros')}, entry "
                    f"{pay and (pay.get('amount_micros'), pay.get('pnl_micros'))}"
                )
    known = {f"buy:{p['intent_id']}" for p in d.positions} | {f"settle:{p['id']}" for p in d.positions}
    orphans = [r for r in refs if r and r not in known and not str(r).startswith("deposit:")]

    def usd(m: int) -> str:
        return f"{m / 1e6:,.6f}"

    rows = [
        _fig("ledger", "initial (deposits), USD", usd(deposits)),
        _fig("ledger", "cash, USD", usd(cash)),
        _fig("ledger", "open cost, USD", usd(open_cost)),
        _fig("ledger", "realised PnL, USD", usd(realized)),
        _inv("ledger", "cash + open cost - (initial + PnL), micros", diff, 0),
        _inv(
            "ledger",
            "totals hash vs stream, micros",
            (totals_cash - cash) + (totals_pnl - realized),
            0,
            [f"cash: totals {totals_cash} stream {cash}", f"pnl: totals {totals_pnl} stream {realized}"]
            if totals_cash != cash or totals_pnl != realized
            else [],
        ),
        _inv("ledger", "refs booked twice", len(dup_refs), 0, dup_refs),
        _inv("ledger", "positions whose entries disagree", len(per_position), 0, per_position),
        _inv("ledger", "entries with no position", len(orphans), 0, [str(r) for r in orphans]),
    ]
    figures = {
        "entries": len(d.ledger),
        "deposits_micros": deposits,
        "cash_micros": cash,
        "open_cost_micros": open_cost,
        "realized_pnl_micros": realized,
        "identity_diff_micros": diff,
    }
    return rows, figures


# --- faults --------------------------------------------------------------------------------


def check_faults(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"injected": 0, "recovered": 0, "missed": 0, "worst_missed": 0, "max_effect_ms": 0}
    )
    missed_by_fault: Counter[int] = Counter()
    present = {_i(e["tick"]) for e in d.journal if _i(e.get("tick"), -1) >= d.first_tick}
    if present:
        for t in range(d.first_tick, max(present) + 1):
            if t not in present and (f := attribute(t, d.tick_ms, d.faults)) is not None:
                missed_by_fault[f["seq"]] += 1
    not_recovered, problems, errors, notes = [], [], [], []
    for f in d.faults:
        k = kinds[f["kind"]]
        k["injected"] += 1
        k["recovered"] += bool(f.get("recovered"))
        n = missed_by_fault[f["seq"]]
        k["missed"] += n
        k["worst_missed"] = max(k["worst_missed"], n)
        k["max_effect_ms"] = max(k["max_effect_ms"], f["end_ms"] - f["start_ms"])
        label = f"{f['kind']} #{f['seq']} at {f['start_ms']}"
        if not f.get("recovered"):
            not_recovered.append(f"{label}: not back within {f.get('max_effect_s')} s")
        problems += [f"{label}: {p}" for p in f.get("problems", [])]
        if f.get("error"):
            errors.append(f"{label}: {f['error']}")
        notes += [f"{label}: {p}" for p in f.get("notes", [])]
    rows = [
        _fig(
            "faults", "injected", len(d.faults), [f"{k}: {v['injected']}" for k, v in sorted(kinds.items())]
        ),
        _inv("faults", "not recovered in time", len(not_recovered), 0, not_recovered),
        _inv("faults", "broken while injecting", len(problems), 0, problems),
        _inv("faults", "harness errors", len(errors), 0, errors),
        _fig("faults", "notes", len(notes), notes),
    ]
    return rows, {"by_kind": dict(kinds), "notes": notes}


def check(d: RunData) -> Report:
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    for name, fn in (
        ("ticks", check_ticks),
        ("orders", check_orders),
        ("positions", check_positions),
        ("ledger", check_ledger),
        ("faults", check_faults),
    ):
        r, f = fn(d)
        rows += r
        figures[name] = f
    return Report(rows, figures)


def table(rep: Report, evidence: int = 5) -> str:
    """The report as text: one line per figure or invariant, evidence under broken ones."""
    w = max(len(r.name) for r in rep.rows) + 2
    lines = []
    section = ""
    for r in rep.rows:
        if r.section != section:
            section = r.section
            lines.append(f"{section.upper()}")
        mark = "" if r.ok is None else ("ok" if r.ok else "BROKEN")
        lines.append(f"  {r.name:<{w}}{r.value!s:>14}  {r.expected:<6} {mark}")
        shown = r.evidence
        if r.ok is False or (r.ok is None and r.evidence and r.name == "missed"):
            limit = len(shown) if r.name == "missed" else evidence
            for ev in shown[:limit]:
                lines.append(f"      {ev}")
            if len(shown) > limit:
                lines.append(f"      ... {len(shown) - limit} more")
    return "\n".join(lines)


def fault_table(rep: Report) -> str:
    """One line per fault kind: how often, recovered, ticks it cost, its longest effect."""
    kinds = rep.figures.get("faults", {}).get("by_kind", {})
    head = f"  {'fault':<16}{'injected':>9}{'recovered':>10}{'ticks missed':>13}{'worst':>6}{'longest s':>10}"
    lines = [head]
    for name, k in sorted(kinds.items()):
        lines.append(
            f"  {name:<16}{k['injected']:>9}{k['recovered']:>10}{k['missed']:>13}{k['worst_missed']:>6}"
            f"{k['max_effect_ms'] / 1000:>10.1f}"
        )
    return "\n".join(lines)


def markdown(rep: Report) -> str:
    """The report as the Markdown tables of docs/reliability.md: invariants and figures, then
    one line per fault kind."""
    out = ["| section | what | value | must be | |", "|---|---|---|---|---|"]
    for r in rep.rows:
        mark = "" if r.ok is None else ("ok" if r.ok else "**BROKEN**")
        out.append(f"| {r.section} | {r.name} | {r.value} | {r.expected.lstrip('= ')} | {mark} |")
    out += [
        "",
        "| fault | injected | recovered | ticks missed | worst one | longest effect s |",
        "|---|---|---|---|---|---|",
    ]
    for name, k in sorted(rep.figures.get("faults", {}).get("by_kind", {}).items()):
        out.append(
            f"| `{name}` | {k['injected']} | {k['recovered']} | {k['missed']} | {k['worst_missed']} "
            f"| {k['max_effect_ms'] / 1000:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.chaos.checker <chaos-data.json>`: judge a saved run again (the
    harness writes its raw snapshot to $BATON_HOME/chaos-data.json)."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.chaos.checker <chaos-data.json>", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        rep = check(RunData(**json.load(f)))
    print(table(rep))
    print()
    print(fault_table(rep))
    return 1 if rep.broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
