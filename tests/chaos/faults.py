"""The chaos harness's fault catalogue: each fault's lane, how long its effect may last, whether
it may cost ticks, what it tests and its injector (in process_faults, venue_faults,
control_faults and feed_faults); plus the seeded schedule.

Each fault runs to completion in `inject(ctx, rnd)`: it injects, waits for the system to show
it has recovered (a tick journaled after the fault, a new lease holder, a feed reconnect...)
and returns an `Outcome`. The harness stamps the start and end wall times around it and writes
the record to its fault log, which the checker uses to attribute every missed tick
(tests/chaos/tick_checks.py) and to know when trading had to be halted (tests/chaos/halts.py).

Two lanes run side by side:
- `main`: faults that may cost ticks or change what trading may do (deploys, kills, stops,
  Redis restarts, venue latency and errors, halts, garbage in control keys). They run one at
  a time, so a missed tick is attributable to exactly one of them.
- `background`: faults that must cost no tick at all (feed kills, socket drops, garbage
  frames, garbage control requests). They overlap the main lane freely: a missed tick that
  only they could explain is unattributed, i.e. a broken invariant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.chaos.control_faults import (
    inject_garbage_api,
    inject_garbage_file,
    inject_garbage_keys,
    inject_halt,
)
from tests.chaos.feed_faults import inject_garbage_frames, inject_kill_feed, inject_socket_drop
from tests.chaos.lanes import BACKGROUND, MAIN, FaultKind
from tests.chaos.ledger_faults import inject_garbage_ledger
from tests.chaos.process_faults import (
    inject_deploy,
    inject_kill_worker,
    inject_redis_kill,
    inject_redis_restart,
    inject_rollback,
    inject_stop_worker,
)
from tests.chaos.value_faults import inject_garbage_values
from tests.chaos.venue_faults import inject_sim_errors, inject_sim_latency

# --- the catalogue -------------------------------------------------------------------------------

CATALOGUE: dict[str, FaultKind] = {
    k.name: k
    for k in [
        FaultKind(
            "deploy",
            MAIN,
            True,
            "0 (blue/green handover)",
            240,
            2.0,
            "a blue/green deploy while trading: readiness gate, handover at a tick boundary, "
            "epoch + 1; no tick missed at the handover, nothing duplicated",
            inject_deploy,
        ),
        FaultKind(
            "rollback",
            MAIN,
            True,
            "0 (blue/green handover)",
            240,
            2.0,
            "hand back to the release before the last deploy, the same way",
            inject_rollback,
        ),
        FaultKind(
            "kill-worker",
            MAIN,
            True,
            "1-3 at 1 s ticks (supervisor restart + start-up)",
            30,
            2.0,
            "SIGKILL of the active worker at a random point of its tick: supervisor restarts it, "
            "it takes the lease from the dead holder (epoch + 1) and reconciles what was in flight "
            "by order id; nothing re-sent, nothing lost",
            inject_kill_worker,
            weight=1.5,
        ),
        FaultKind(
            "stop-worker",
            MAIN,
            True,
            "about the stop's length in ticks",
            30,
            2.0,
            "SIGSTOP/SIGCONT of the active worker for 1-3.5 ticks (past its lease at times): "
            "a stalled holder must resume without duplicating a tick or an order",
            inject_stop_worker,
        ),
        FaultKind(
            "redis-restart",
            MAIN,
            True,
            "the outage's length in ticks, plus reconnects",
            60,
            3.0,
            "a clean restart of the embedded Redis (AOF on): every program reconnects; intents, "
            "positions, ledger and journal survive; nothing posted twice",
            inject_redis_restart,
        ),
        FaultKind(
            "redis-kill",
            MAIN,
            True,
            "the outage's length in ticks",
            60,
            3.0,
            "SIGKILL of redis-server, restarted by supervisor from its AOF: nothing acknowledged "
            "is lost, every program reconnects",
            inject_redis_kill,
        ),
        FaultKind(
            "sim-latency",
            MAIN,
            True,
            "0, or the overrun when a spike exceeds a tick",
            30,
            3.0,
            "venue latency spikes (orders, books, order lookups, markets, klines) up to 2.5 s: "
            "slow ticks skip boundaries and count them, never run a tick twice",
            inject_sim_latency,
        ),
        FaultKind(
            "sim-errors",
            MAIN,
            True,
            "0",
            30,
            2.0,
            "venue error answers (5xx, 429) and lost answers, before or after the venue handled "
            "the order: failed posts are reconciled by order id, booked exactly once",
            inject_sim_errors,
        ),
        FaultKind(
            "halt",
            MAIN,
            False,
            "0",
            30,
            0.0,
            "an emergency halt over HTTP (half of them racing the tick that posts entries), held "
            "1.5-4 s, then resumed: no order at the venue after the acknowledgement",
            inject_halt,
            weight=2.0,  # the safety property of the control plane: checked often
        ),
        FaultKind(
            "garbage-keys",
            MAIN,
            False,
            "0",
            30,
            0.0,
            "garbage written into baton:control (halted/paused: fail safe, trading stops until "
            "resumed; a counter: a halt must still work) or into one slot's value in baton:slots",
            inject_garbage_keys,
        ),
        FaultKind(
            "garbage-ledger",
            MAIN,
            False,
            "0",
            60,
            0.0,
            "garbage in a ledger running sum (bookings refused before any write, entries "
            "blocked, booked once after the repair), in stats.last_tick (the journal rebuilds "
            "its guard and goes on) or clean_stop_tick; no program restarts",
            inject_garbage_ledger,
        ),
        FaultKind(
            "garbage-values",
            MAIN,
            False,
            "0",
            60,  # up to a window's wait for the entry zone, the hold, and a window to clear
            0.0,
            "garbage in the values the entry checks read (the day's PnL, an open position or "
            "intent, a candle), or a candle dated in the future, held 2-4 s and "
            "repaired: entries in its scope stop and it is reported; the future candle is "
            "never read; after the repair the block clears and the ledger still balances",
            inject_garbage_values,
        ),
        FaultKind(
            "kill-feed",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "SIGKILL of the feed: supervisor restarts it and it backfills; ticks go on",
            inject_kill_feed,
        ),
        FaultKind(
            "socket-drop",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "the sim cuts every kline WebSocket (and refuses new ones for up to 4 s): the feed "
            "reconnects with backoff and backfills",
            inject_socket_drop,
        ),
        FaultKind(
            "garbage-frames",
            BACKGROUND,
            False,
            "0",
            20,
            0.0,
            "malformed WebSocket frames (not JSON, wrong shape, unknown symbol, inconsistent "
            "kline, binary, 70 kB) into the feed's stream: counted as bad, skipped, feed kept",
            inject_garbage_frames,
        ),
        FaultKind(
            "garbage-api",
            BACKGROUND,
            False,
            "0",
            20,
            0.0,
            "garbage control requests to the HTTP API (no/wrong token, bad JSON, typo fields, "
            "unknown routes and slots, out-of-bounds stakes, 70 kB bodies): all refused",
            inject_garbage_api,
        ),
        FaultKind(
            "garbage-file",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "garbage commands in the file door var/control.json: archived as refused",
            inject_garbage_file,
        ),
    ]
}

DEFAULT_KINDS = list(CATALOGUE)


# --- the schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    lane: str
    kind: str
    gap_s: float  # pause before it


def plan_lane(
    rnd: random.Random, kinds: list[str], n: int, gap_s: tuple[float, float], cover: bool = True
) -> list[Planned]:
    """`n` faults of one lane: with `cover`, the first len(kinds) are every kind once, in a
    seeded order (a rollback never before the first deploy); then kinds drawn at random,
    by their weights."""
    out: list[Planned] = []
    first = list(kinds) if cover else []
    rnd.shuffle(first)
    if "rollback" in first and "deploy" in first and first.index("rollback") < first.index("deploy"):
        i, j = first.index("rollback"), first.index("deploy")
        first[i], first[j] = first[j], first[i]
    deployed = False
    weights = [CATALOGUE[k].weight for k in kinds]
    for i in range(n):
        kind = first[i] if i < len(first) else rnd.choices(kinds, weights)[0]
        if kind == "rollback" and not deployed:
            kind = "deploy" if "deploy" in kinds else kind
        deployed = deployed or kind == "deploy"
        out.append(Planned(CATALOGUE[kind].lane, kind, round(rnd.uniform(*gap_s), 2)))
    return out


def plan(
    seed: int,
    kinds: list[str],
    main_gap_s: tuple[float, float],
    bg_gap_s: tuple[float, float],
    n: int = 400,
    cover: bool = True,
) -> dict[str, list[Planned]]:
    """The seeded schedule of both lanes (long enough for any duration: the runner stops the
    lanes when the time is up). The same seed and kinds give the same schedule."""
    main = [k for k in kinds if CATALOGUE[k].lane == MAIN]
    bg = [k for k in kinds if CATALOGUE[k].lane == BACKGROUND]
    return {
        MAIN: plan_lane(random.Random(f"{seed}:main"), main, n, main_gap_s, cover) if main else [],
        BACKGROUND: plan_lane(random.Random(f"{seed}:bg"), bg, n, bg_gap_s, cover) if bg else [],
    }
