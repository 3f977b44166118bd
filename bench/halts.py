"""What one halt of bench/halt_latency.py recorded, where in the tick journal it landed, and the
safety check around it: a thread that polls the sim's orders, so that each order's creation is
known to lie within two polls, and the orders created while an acknowledged halt stood."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.stack import KEYS
from deploy.sandbox import Stack, sim_orders
from kernel.clock import wall_ms_precise

POLL_S = 0.02


@dataclass
class Sample:
    index: int
    kind: str
    target_offset_ms: float  # the planned moment, after the tick (or window) boundary
    sent_ms: float  # wall time the request left
    halted_ms: int  # the flag's time, as Ops set it (control.halted_ms)
    acknowledged: bool
    ack_ms: int | None
    rtt_ms: float
    worker: str
    cancel: str
    flush: str
    resume_sent_ms: float
    # From the tick journal, afterwards: the tick the flag was set in, if it was running.
    tick: int | None = None
    in_tick: bool | None = None
    tick_orders: int | None = None


class OrderWatch(threading.Thread):
    """Polls the sim's order list; for each order, the interval its creation lies in."""

    def __init__(self, clob_url: str) -> None:
        super().__init__(daemon=True, name="order-watch")
        self.http = httpx.Client(base_url=clob_url, timeout=10)
        self.stop_flag = threading.Event()
        self.lo: dict[str, float | None] = {}  # start of the last poll that did not list it
        self.hi: dict[str, float] = {}  # end of the first poll that listed it
        self.created_at: dict[str, int] = {}
        self.polls = 0
        self.errors = 0

    def run(self) -> None:
        prev_start: float | None = None  # orders listed by the first poll predate the watch
        while not self.stop_flag.is_set():
            start = wall_ms_precise()
            try:
                rows = sim_orders(self.http)
            except httpx.HTTPError:
                self.errors += 1  # a missed poll only widens the next orders' intervals
                time.sleep(POLL_S)
                continue
            end = wall_ms_precise()
            for o in rows:
                if o["id"] not in self.hi:
                    self.lo[o["id"]] = prev_start
                    self.hi[o["id"]] = end
                    self.created_at[o["id"]] = int(o["created_at"])
            prev_start = start
            self.polls += 1
            time.sleep(POLL_S)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=10)
        self.http.close()


def place_in_journal(st: Stack, samples: list[Sample], since_ms: float) -> None:
    """Which tick each halt's flag landed in, if one was running (journal: started_ms, duration_ms)."""
    ticks = [f for _, f in st.redis.xrange(KEYS.journal_ticks(), min=f"{int(since_ms) - 60_000}-0")]
    for s in samples:
        s.in_tick = False
        for f in ticks:
            start = int(f["started_ms"])
            if start <= s.halted_ms < start + int(f["duration_ms"]):
                s.in_tick, s.tick, s.tick_orders = True, int(f["tick"]), int(f.get("orders", 0))
                break


# --- safety ------------------------------------------------------------------------------------


def safety(samples: list[Sample], watch: OrderWatch) -> dict[str, Any]:
    """Orders created while an acknowledged halt stood. Each order was created within (lo, hi]
    (the polls around it); the worker acknowledged at `ack` at the latest (the API's clock):

    - lo >= ack, hi <= resume: created after the acknowledgement: a violation;
    - hi <= ack: created before it: a post in flight at the halt, which the worker waits for
      before acknowledging (allowed);
    - lo < ack < hi: undecided, within one poll of the acknowledgement.
    """
    after: list[dict[str, Any]] = []
    undecided: list[dict[str, Any]] = []
    in_flight: list[dict[str, Any]] = []
    by_created_at: list[dict[str, Any]] = []
    for s in samples:
        if not s.acknowledged or s.ack_ms is None:
            continue  # no claim was made, none is checked
        ack = s.halted_ms + s.ack_ms
        for oid, hi in watch.hi.items():
            lo = watch.lo[oid]
            if lo is None or hi <= s.halted_ms or lo >= s.resume_sent_ms:
                continue  # before the watch started, before the flag, or after the resume
            if lo >= ack and hi <= s.resume_sent_ms:
                after.append({"halt": s.index, "order": oid, "after_ack_ms": round(lo - ack, 1)})
            elif hi <= ack:
                in_flight.append({"halt": s.index, "order": oid})
            elif lo < ack:
                undecided.append({"halt": s.index, "order": oid, "lo": lo, "hi": hi, "ack": ack})
            c_ms = watch.created_at[oid] * 1000
            # Whole seconds: only a second that starts after the ack and ends before the resume counts.
            if c_ms >= math.ceil(ack / 1000) * 1000 and c_ms + 1000 <= s.resume_sent_ms:
                by_created_at.append({"halt": s.index, "order": oid, "created_at": watch.created_at[oid]})
    return {
        "orders_after_ack": len(after),
        "orders_undecided": len(undecided),
        # The latest an undecided order can have been created after its acknowledgement.
        "undecided_max_ms_after_ack": round(max((u["hi"] - u["ack"] for u in undecided), default=0.0), 1),
        "orders_after_ack_by_created_at": len(by_created_at),
        "orders_in_flight_at_halt": len(in_flight),
        "orders_seen": len(watch.hi),
        "polls": watch.polls,
        "poll_errors": watch.errors,
        "details": {"after_ack": after, "undecided": undecided, "by_created_at": by_created_at},
    }
