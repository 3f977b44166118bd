"""The metrics read from Redis at scrape time (`RedisCollector`): one pipelined round trip,
whatever the number of slots, intents or assets; never raises (an unreadable value is
skipped and counted in `baton_metrics_problems{part="scrape"}`). Registered by api/metrics.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from baton.settings import CANDLE_INTERVAL, Settings
from state.blocked import decode_blocked
from state.control import parse_control
from state.counts import INTENT_STATUSES, counts_from, queue_counts, scan
from state.keys import Keys
from state.structs import FEED_STATUS, feed_stale

log = logging.getLogger("baton.api.metrics")

# feed:stats fields that count per asset (`candles:<asset>`, written by feed/store.py).
PER_ASSET_PREFIX = "candles:"
# stats fields `errors_<source>` (state/journal.py): sources are names in the code, a few;
# the cap keeps a hash someone filled with junk from making a series of each.
ERROR_FIELD_RE = re.compile(r"errors_[a-z0-9_]{1,32}")
MAX_ERROR_SOURCES = 32


def text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class _Problems:
    """Counts what a scrape had to skip; `number` and `typed` read values without raising."""

    def __init__(self) -> None:
        self.n = 0

    def number(self, value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):  # also an exception object from the pipeline
            self.n += 1
            return None

    def typed(self, value: Any, typ: type) -> Any:
        if isinstance(value, typ):
            return value
        self.n += 1  # WRONGTYPE: the key holds something else
        return typ()


def _gauge(name: str, help_: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_, value=value)


class RedisCollector:
    """Reads Redis at scrape time, in one pipelined round trip."""

    def __init__(
        self,
        s: Settings,
        r: redis.Redis,
        *,
        followed_problems: Callable[[], int],
        programs: Callable[[], Mapping[str, str]] | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self.s = s
        self.r = r
        self.k = Keys(s.prefix)
        self.followed_problems = followed_problems
        self.programs = programs
        self.clock_ms = clock_ms

    def _read(self) -> list[Any]:
        k = self.k
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(k.stats())
        pipe.hgetall(k.ledger_totals())
        pipe.hgetall(k.feed_stats())
        pipe.hgetall(k.feed_status())
        pipe.hgetall(k.control())
        pipe.get(k.lease_epoch())
        pipe.xrevrange(k.journal_ticks(), count=1)
        pipe.hgetall(k.blocked())
        queue_counts(pipe, k)
        # A key of the wrong type (WRONGTYPE) comes back as an exception object in its place
        # instead of failing the whole scrape.
        replies = pipe.execute(raise_on_error=False)
        # O(1) counters, not every intent ever kept; a scan (and its cost) only until a new
        # lease holder counted data written before the counts (state/counts.py).
        counts = counts_from(replies[-4:])
        if counts is None:
            try:
                counts = scan(self.r, k)
            except redis.ResponseError:  # WRONGTYPE: counted as a problem, the rest is shown
                counts = None
        return [*replies[:-4], replies[-1], counts]

    def collect(self) -> Iterator[Metric]:
        yield from self._programs()
        try:
            replies = self._read()
        except redis.RedisError as e:
            log.warning("metrics: cannot read Redis: %s", e)
            yield _gauge("baton_redis_up", "1 when this scrape could read Redis, else 0.", 0)
            yield self._problems(0)
            return
        yield _gauge("baton_redis_up", "1 when this scrape could read Redis, else 0.", 1)
        p = _Problems()
        families: list[Metric] = []
        try:
            families = list(self._families(replies, p))
        except Exception:
            # A bug here must not take /metrics down with it: say so, and count it.
            log.exception("metrics: building the Redis metrics failed")
            p.n += 1
        yield from families
        yield self._problems(p.n)

    def _problems(self, scrape: int) -> Metric:
        g = GaugeMetricFamily(
            "baton_metrics_problems",
            "Values skipped as unreadable: in this scrape (part=scrape), and journal or audit "
            "entries skipped by the follower since the api started (part=journal).",
            labels=["part"],
        )
        g.add_metric(["scrape"], scrape)
        g.add_metric(["journal"], self.followed_problems())
        return g

    def _programs(self) -> Iterator[Metric]:
        if self.programs is None:
            return
        help_ = "1 when supervisord answered this scrape, else 0."
        try:
            states = dict(self.programs())
        except Exception as e:  # supervisord down, socket gone: not the collector's failure
            log.debug("metrics: supervisor: %s", e)
            yield _gauge("baton_supervisor_up", help_, 0)
            return
        yield _gauge("baton_supervisor_up", help_, 1)
        g = GaugeMetricFamily("baton_up", "1 when the supervisor program is RUNNING.", labels=["program"])
        for name, state in sorted(states.items()):
            g.add_metric([name], 1 if state == "RUNNING" else 0)
        yield g

    def _families(self, replies: list[Any], p: _Problems) -> Iterator[Metric]:
        stats, totals, feed, feed_status, control, epoch, last, blocked, open_n, counts = replies
        stats, totals, control = p.typed(stats, dict), p.typed(totals, dict), p.typed(control, dict)
        last = p.typed(last, list)

        # --- ticks, handovers, reloads: counters the worker keeps in the stats hash --------
        for name, field, help_ in (
            ("baton_ticks_done", "ticks_done", "Ticks run and journaled."),
            ("baton_ticks_missed", "ticks_missed", "Tick boundaries skipped (overruns, lease gaps)."),
            ("baton_handovers", "handovers", "Planned lease handovers (deploys and rollbacks)."),
        ):
            if (n := p.number(stats.get(field, 0))) is not None:
                yield CounterMetricFamily(name, help_, value=n)
        reloads = CounterMetricFamily("baton_reloads", "Strategy hot reloads, by result.", labels=["result"])
        for result in ("ok", "refused"):
            if (n := p.number(stats.get(f"reloads_{result}", 0))) is not None:
                reloads.add_metric([result], n)
        yield reloads
        yield self._errors(stats, p)
        if "last_tick_ms" in stats and (ms := p.number(stats["last_tick_ms"])) is not None:
            yield _gauge(
                "baton_last_tick_timestamp_seconds", "Start of the last tick (unix time).", ms / 1000
            )
        if last:
            fields = {text(k): v for k, v in last[0][1].items()}
            for field in ("duration_ms", "jitter_ms"):
                if (n := p.number(fields.get(field))) is not None:
                    yield _gauge(f"baton_last_tick_{field}", f"{field} of the newest tick journal entry.", n)

        # --- orders, positions, money, control --------------------------------------------
        if counts is None:
            p.n += 1
        else:
            orders = GaugeMetricFamily("baton_orders", "Order intents by status.", labels=["status"])
            for st in INTENT_STATUSES:
                orders.add_metric([st], counts.intents.get(st, 0))
            p.n += counts.intents_unreadable
            yield orders
        if (n := p.number(open_n)) is not None:
            yield _gauge("baton_positions_open", "Open positions.", n)
        for name, field, help_ in (
            ("baton_pnl_realized_usd", "realized_pnl_micros", "Realised PnL from the ledger (USD)."),
            ("baton_cash_usd", "cash_micros", "Cash from the ledger (USD)."),
            ("baton_fees_usd", "fee_micros", "Fees the venue charged on fills, from the ledger (USD)."),
            ("baton_sells_usd", "sell_micros", "What exits sold for, net of fees, from the ledger (USD)."),
        ):
            if (n := p.number(totals.get(field, 0))) is not None:
                yield _gauge(name, help_, n / 1e6)
        flags = parse_control(control)  # unreadable halt/pause flags fail safe: reported as set
        p.n += len(flags.problems)
        yield _gauge("baton_halted", "1 while trading is halted.", int(flags.halted))
        yield _gauge("baton_paused", "1 while new entries are paused.", int(flags.paused))
        if epoch is not None and (n := p.number(epoch)) is not None:
            yield _gauge("baton_lease_epoch", "The lease epoch (+1 on every new holder).", n)

        yield from self._blocked(p.typed(blocked, dict))
        yield from self._feed(p.typed(feed, dict), p.typed(feed_status, dict), p)

    def _errors(self, stats: dict[str, str], p: _Problems) -> Metric:
        """Errors journaled in journal:errors, by source: the `errors_<source>` counters the
        writers keep beside each entry (bad inputs, venue errors, refused settle jobs)."""
        errors = CounterMetricFamily(
            "baton_errors",
            "Errors journaled (journal:errors), by source: bad inputs, venue errors, refused jobs.",
            labels=["source"],
        )
        sources = sorted(f for f in stats if ERROR_FIELD_RE.fullmatch(f))[:MAX_ERROR_SOURCES]
        for field in sources:
            if (n := p.number(stats[field])) is not None:
                errors.add_metric([field.removeprefix("errors_")], n)
        return errors

    def _blocked(self, blocked: dict[str, str]) -> Iterator[Metric]:
        """The unreadable values new entries wait on (kernel/blocking.py), by what they block
        (the set is capped at state/blocked.py's MAX_BLOCKERS: a few series at most)."""
        g = GaugeMetricFamily(
            "baton_entries_blocked",
            "Unreadable values that block new entries (see `baton status`), by scope: "
            "all (every slot), slot or asset.",
            labels=["scope"],
        )
        by_scope = {"all": 0, "slot": 0, "asset": 0}
        for b in decode_blocked(self.k.blocked(), blocked):
            kind = b.scope.split(" ", 1)[0]
            by_scope[kind] = by_scope.get(kind, 0) + 1
        for kind, n in by_scope.items():
            g.add_metric([kind], n)
        yield g

    def _feed(self, feed: dict[str, str], feed_status: dict[str, str], p: _Problems) -> Iterator[Metric]:
        candles = CounterMetricFamily(
            "baton_feed_candles", "Candle updates written per asset (stream and backfill).", labels=["asset"]
        )
        events = CounterMetricFamily(
            "baton_feed_events", "Feed counters (frames, bad_frames, reconnects, ...).", labels=["event"]
        )
        per_host = CounterMetricFamily(
            "baton_feed_host_events",
            "Each feed's own counters (feed:stats '<event>@<host>'), where several hosts run one.",
            labels=["host", "event"],
        )
        for field, value in sorted(feed.items()):
            if (n := p.number(value)) is None:
                continue
            event, at, host = field.partition("@")
            if at:
                per_host.add_metric([host, event], n)
            elif field.startswith(PER_ASSET_PREFIX):
                candles.add_metric([field.removeprefix(PER_ASSET_PREFIX)], n)
            else:
                events.add_metric([field], n)
        yield candles
        yield events
        yield per_host

        now_ms = self.clock_ms()
        suffix = f":{CANDLE_INTERVAL}"
        staleness = GaugeMetricFamily(
            "baton_feed_staleness_seconds",
            "Seconds since the feed last wrote the asset's candles (absent: never written).",
            labels=["asset"],
        )
        stale = GaugeMetricFamily(
            "baton_feed_stale",
            "1 when the asset's data is too old for new entries (BATON_STALE_AFTER_MS), else 0.",
            labels=["asset"],
        )
        # The configured assets, and any other the feed writes (as `baton status` shows them).
        assets = set(self.s.assets) | {f.removesuffix(suffix) for f in feed_status if f.endswith(suffix)}
        for asset in sorted(assets):
            fs = None
            if (raw := feed_status.get(asset + suffix)) is not None:
                try:
                    fs = FEED_STATUS.decode(raw)
                except msgspec.DecodeError:
                    p.n += 1
            if fs is not None:
                staleness.add_metric([asset], max(0, now_ms - fs.updated_ms) / 1000)
            stale.add_metric([asset], int(feed_stale(fs, now_ms, self.s.stale_after_ms)))
        yield staleness
        yield stale
