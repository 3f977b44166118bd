"""Every Redis key Baton uses, built in one place.

Nothing else in the code base spells a key: a test pins each string here, and
docs/state.md documents each with a redis-cli line. The prefix (default `baton:`) comes
from settings so that two stacks can share one Redis server.
"""

from __future__ import annotations

# The two worker colours of blue/green: a worker's keys, the lease's holder and the release
# pointers are all per colour.
COLORS = ("blue", "green")


class Keys:
    def __init__(self, prefix: str = "baton:") -> None:
        self.p = prefix

    # --- schema and lease -------------------------------------------------------------
    def schema_version(self) -> str:
        return f"{self.p}schema:version"

    def schema_readable_by(self) -> str:
        """String: the oldest schema version whose code can read what the newest writer wrote."""
        return f"{self.p}schema:readable_by"

    def lease(self) -> str:
        """Hash: holder, color, release, epoch, expires_ms, acquired_ms (kernel/lease.py's Lease)."""
        return f"{self.p}lease"

    def lease_epoch(self) -> str:
        """Counter: INCR gives every new lease holder an epoch larger than all before."""
        return f"{self.p}lease:epoch"

    def lease_log(self) -> str:
        """Stream, capped (~LEASE_LOG_MAXLEN): one entry per new epoch, written by the scripts
        that make one (epoch, holder, host, color, release, at_ms, how: acquired,
        took-over-dead or transferred, prev_holder, prev_expires_ms)."""
        return f"{self.p}lease:log"

    def handover(self) -> str:
        """Hash: the planned handover (id, to_holder, to_color, to_release, state, tick, epoch)."""
        return f"{self.p}handover"

    def wake(self, holder: str) -> str:
        """List: pushed when the lease is handed to `holder`, so its standby loop wakes at once."""
        return f"{self.p}wake:{holder}"

    def deploys(self) -> str:
        """Stream: one entry per deploy or rollback (releases, colours, handover tick, result)."""
        return f"{self.p}deploys"

    def deploy_lock(self) -> str:
        """String (TTL): held by the one deploy or rollback in progress."""
        return f"{self.p}deploy:lock"

    def reload(self) -> str:
        """Hash: the last strategy reload (state ok/refused, modules, error, hashes, at_ms)."""
        return f"{self.p}reload"

    # --- control ----------------------------------------------------------------------
    def control(self) -> str:
        """Hash: halted, halt_reason, halted_ms, halted_by, paused, pause_reason, seq (bumped by
        every change through state/lua/control_set.lua), reload_seq (bumped to force a reload),
        updated_ms."""
        return f"{self.p}control"

    def control_events(self) -> str:
        """Pub/sub channel: {"action": "halt"|"pause"|"resume", "seq": n} after every change of
        the control flags, so that the active worker hears a halt at once (not at its next tick)."""
        return f"{self.p}control:events"

    def control_ack(self, seq: int) -> str:
        """List (TTL 60 s): the active worker's answers to the halt of control seq `seq`: first
        {"halted": ...} once no order can be posted any more, then {"cancel": ...}."""
        return f"{self.p}control:ack:{seq}"

    def audit(self) -> str:
        """Stream (capped): one entry per mutating control call (at_ms, source, who, token_id,
        action, target, args, result, status, detail), from the API, the CLI or control.json."""
        return f"{self.p}audit"

    def decisions(self) -> str:
        """Hash: slot id -> its last decision (JSON: tick, at_ms, window, side, price, stake,
        reason, outcome), written by the tick that made it."""
        return f"{self.p}decisions"

    def slots(self) -> str:
        """Hash: slot id -> Slot JSON."""
        return f"{self.p}slots"

    # --- the API's dashboard sessions (state/sessions.py) -------------------------------
    def decision_log(self, slot_id: str) -> str:
        """Stream, capped (~BATON_DECISION_LOG_LEN): every evaluation of one slot (action
        buy/sell/pass, reason, outcome, the inputs' key figures: state/structs.py
        DecisionLogEntry), newest last."""
        return f"{self.p}decisions:log:{slot_id}"

    def input_log(self) -> str:
        """Stream, trimmed by age (BATON_INPUT_LOG_REDIS_S): one entry per tick of the lease
        holder, with every evaluation's input and answer (kernel/input_log.py: field `data`
        is a compressed batch; `tick`, `at_ms`, `release`, `n` say what it holds). Older
        entries roll into var/inputs/ (docs/evaluate.md)."""
        return f"{self.p}inputs:log"

    def shadow(self) -> str:
        """Hash: the shadow release evaluating beside the active worker (release, started_ms,
        ticks, decisions, differ, orders_posted, state, updated_ms): `baton shadow diff`."""
        return f"{self.p}shadow"

    def shadow_log(self) -> str:
        """Stream, capped: the shadow's decisions that differ from the live ones, with both
        answers and reasons (docs/deploys.md, shadow deploys)."""
        return f"{self.p}shadow:log"

    def slot_wakes(self) -> str:
        """Hash: slot id -> ms at which its strategy next wants quotes (a sleeping slot says
        until when), written by the lease holder when a slot's wake time changes."""
        return f"{self.p}slots:wake"

    def slots_removed(self) -> str:
        """Set: slot ids an operator removed; the configured defaults (BATON_ASSETS x
        BATON_TIMEFRAMES) never seed them again."""
        return f"{self.p}slots:removed"

    def session(self, digest: str) -> str:
        """String (TTL: the session's lifetime): Session JSON (token_id, created_ms, expires_ms,
        remote) of one dashboard sign-in, keyed by the SHA-256 (hex) of its id. The id itself,
        the cookie's value, is never stored."""
        return f"{self.p}session:{digest}"

    def sessions(self) -> str:
        """Sorted set (TTL: the newest session's lifetime): session digest -> expires_ms, the
        index by which every session is revoked at once ("sign out everywhere")."""
        return f"{self.p}sessions"

    # --- market data ------------------------------------------------------------------
    def candles(self, asset: str, interval: str) -> str:
        """Sorted set: score = candle open time (ms), member = Candle JSON (array)."""
        return f"{self.p}candles:{asset}:{interval}"

    def candle_marks(self) -> str:
        """Hash: '<asset>:<interval>' -> '<born>:<rev>:<rewrite rev>', the feed's write count of
        each candle window and the last write that was not a plain append (feed_write.lua):
        what lets a worker read only the candles it has not seen (kernel/candle_cache.py)."""
        return f"{self.p}candles:marks"

    def feed_status(self) -> str:
        """Hash: '<asset>:<interval>' -> FeedStatus JSON (last update, last candle)."""
        return f"{self.p}feed:status"

    def feed_stats(self) -> str:
        """Hash of counters: frames, candles, candles:<asset>, bad_frames, out_of_order,
        duplicates, reconnects, backfilled, backfill_errors, server_shutdowns, same, stale;
        each summed over every feed, and again per feed as '<name>@<host>'."""
        return f"{self.p}feed:stats"

    def feed_claim(self, name: str) -> str:
        """String (TTL, seconds): the host of the feed fetching one window's REST backfill
        ('<asset>:<interval>'), so that the feeds of other hosts leave it to it."""
        return f"{self.p}feed:claim:{name}"

    def ratelimit(self, bucket: str) -> str:
        """Hash (TTL: until full again): one token bucket of a venue budget (tokens, updated_ms,
        capacity, refill_per_s), shared by every process; see state/ratelimit.py."""
        return f"{self.p}ratelimit:{bucket}"

    def market(self, slug: str) -> str:
        """String: Market JSON (token ids, condition id) for one window, cached with a TTL."""
        return f"{self.p}market:{slug}"

    # --- trading state ----------------------------------------------------------------
    def intents(self) -> str:
        """Hash: intent id (slot:window:leg) -> Intent JSON."""
        return f"{self.p}intents"

    def intents_open(self) -> str:
        """Hash: intent id -> Intent JSON, for intents not yet final."""
        return f"{self.p}intents:open"

    def positions(self) -> str:
        """Hash: position id (slot:window) -> Position JSON."""
        return f"{self.p}positions"

    def positions_open(self) -> str:
        """Hash: position id -> Position JSON, for positions not yet settled."""
        return f"{self.p}positions:open"

    def counts(self) -> str:
        """Hash of counters over the intents and positions hashes, kept by the scripts that
        change them (state/lua/_counts.lua): intents:<status>, intents:unreadable,
        positions:open, positions:settled, positions:won, positions:closed (sold by exits),
        positions:unreadable, counted_ms."""
        return f"{self.p}counts"

    def ledger(self) -> str:
        """Stream: append-only ledger entries; cash and PnL derive from it."""
        return f"{self.p}ledger"

    def ledger_totals(self) -> str:
        """Hash: running sums of the ledger (cash_micros, realized_pnl_micros, ...)."""
        return f"{self.p}ledger:totals"

    def ledger_refs(self) -> str:
        """Set: refs already booked, so that every ledger entry is written at most once."""
        return f"{self.p}ledger:refs"

    def ledger_day(self, day: str) -> str:
        """Hash: realized_pnl_micros for one UTC day (YYYYMMDD), for the daily loss limit."""
        return f"{self.p}ledger:day:{day}"

    # --- settlement (the settle program, an rq worker) -------------------------------
    def settle_claim(self, position_id: str) -> str:
        """String (TTL): set when a settlement job for the position was enqueued, so that
        later ticks do not enqueue it again; when it expires with the position still open,
        the next tick enqueues again (the job id is the same, and the booking is once)."""
        return f"{self.p}settle:claim:{position_id}"

    def settle_stats(self) -> str:
        """Hash of counters: enqueued, runs, settled, already, unresolved, changed, errors."""
        return f"{self.p}settle:stats"

    # --- journal and observability ----------------------------------------------------
    def journal_ticks(self) -> str:
        """Stream: one entry per tick run (tick, color, release, epoch, started_ms, ...)."""
        return f"{self.p}journal:ticks"

    def journal_errors(self) -> str:
        """Stream: bad inputs and venue errors, each with what was wrong (capped)."""
        return f"{self.p}journal:errors"

    def blocked(self) -> str:
        """Hash: blocker id ('<key>' or '<key> <field>') -> Blocker JSON: the values a limit or
        a decision depends on that the active worker could not read; new entries wait while
        any is there (kernel/blocking.py). Written by the lease holder only
        (state/lua/blocked_sync.lua), emptied by itself when the values are repaired."""
        return f"{self.p}blocked"

    def stats(self) -> str:
        """Hash of counters and last values: ticks_done, ticks_missed, last_tick, ..."""
        return f"{self.p}stats"

    def worker(self, color: str) -> str:
        """Hash: one worker's heartbeat (color, release, pid, state, epoch, heartbeat_ms)."""
        return f"{self.p}worker:{color}"

    def system(self, program: str) -> str:
        """Hash: the settings a running program published at its start (JSON values by
        setting name, and pid, started_ms; the api its url), what `baton status` reports."""
        return f"{self.p}system:{program}"
