"""The faults of the failover table dealt to a three-host cluster (deploy/cluster, its Python
API in docs/ha.md), each at a seeded random phase of a tick, and what followed read back from
the cluster's Redis through the Sentinels: the tick journal (which ticks ran, under which
epoch, when they started) and the lease hash (who holds it, since when, until when).

After each fault the host or program is brought back (`up`, `heal`, supervisor's restart) and
the run waits until it has rejoined (its Redis a replica again, its worker a standby) and the
holder has run a few more ticks, so that every fault meets the same healthy cluster."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
from collections.abc import Callable
from typing import Any

import httpx

from bench.ha_numbers import CUT, HOST_KILL, PRIMARY_KILL, WORKER_KILL, Money, Sample
from bench.stack import KEYS, SETTLE_TICKS, Entry, wait_phase
from deploy.sandbox import BATON, sim_orders, wait_for
from kernel.clock import wall_ms
from kernel.lease import Lease, decode_lease
from state.keys import COLORS


def field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a status struct (or of the dict `--json` decodes to)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def host_of(holder: str) -> str:
    """The host in a holder id (`colour:host:pid:token`, kernel/lease.py)."""
    parts = holder.split(":")
    return parts[1] if len(parts) > 1 else ""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


class Reader:
    """The journal and the lease through one Redis client (a stack's or the cluster's); a
    read that meets a failover in progress answers None and the caller polls again."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self.r = client_factory()

    def _retry(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            # A connection pinned to a primary that is gone: a fresh client asks the
            # Sentinels again (redis-py retries some of this itself, not every case).
            self.reconnect()
            return None

    def reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()
        self.r = self._factory()

    def journal(self, count: int = 200) -> list[Entry] | None:
        rows = self._retry(lambda: self.r.xrevrange(KEYS.journal_ticks(), count=count))
        if rows is None:
            return None
        out = []
        for _, raw in reversed(rows):
            f = _decoded(raw)
            out.append(Entry(int(f["tick"]), int(f["epoch"]), int(f["started_ms"]), f.get("color", "")))
        return out

    def lease(self) -> Lease | None:
        raw = self._retry(lambda: self.r.hgetall(KEYS.lease()))
        return decode_lease(_decoded(raw)) if raw else None

    def lease_log(self, epoch: int) -> dict[str, str]:
        """The lease log's entry of the epoch (state/keys.py `lease_log`; {} if not there)."""
        rows = self._retry(lambda: self.r.xrevrange(KEYS.lease_log(), count=50)) or []
        for _, raw in rows:
            f = _decoded(raw)
            if f.get("epoch") == str(epoch):
                return f
        return {}

    def heartbeat(self, color: str) -> dict[str, str]:
        raw = self._retry(lambda: self.r.hgetall(KEYS.worker(color)))
        return _decoded(raw) if raw else {}

    def wait_ticks(self, epoch: int, ticks: int, timeout_s: float) -> None:
        """Until the holder with `epoch` has journaled `ticks` ticks after its latest one now."""
        start = wait_for(lambda: self._last_tick(epoch), timeout_s, f"a tick of epoch {epoch}")
        wait_for(
            lambda: (self._last_tick(epoch) or 0) >= start + ticks,
            timeout_s,
            f"epoch {epoch} to run {ticks} more ticks",
        )

    def settle(self, first_tick: int, timeout_s: float) -> tuple[int, int]:
        """Until whoever holds the lease now has journaled SETTLE_TICKS ticks after
        `first_tick` (the fault's first tick after the takeover). Returns what the stretch
        cost beyond the takeover: ticks missed in it, and how often the lease moved again."""

        def done() -> list[Entry] | None:
            lease, entries = self.lease(), self.journal(count=100)
            if lease is None or not entries:
                return None
            mine = [e for e in entries if e.epoch == lease.epoch and e.tick > first_tick]
            return entries if len(mine) >= SETTLE_TICKS else None

        entries = wait_for(done, timeout_s, f"the holder to run {SETTLE_TICKS} ticks after tick {first_tick}")
        after = [e for e in entries if e.tick >= first_tick]
        ticks = {e.tick for e in after}
        return max(ticks) - first_tick + 1 - len(ticks), len({e.epoch for e in after}) - 1

    def _last_tick(self, epoch: int) -> int | None:
        entries = self.journal(count=5) or []
        mine = [e.tick for e in entries if e.epoch == epoch]
        return max(mine) if mine else None


def measure(
    rd: Reader,
    fault: str,
    index: int,
    phase_ms: int,
    target: str,
    before: Lease,
    fault_ms: int,
    holder_moves: bool,
    tick_ms: int,
    timeout_s: float,
) -> Sample:
    """Polls the journal and the lease after a fault until the first tick that follows it:
    a new holder's (epoch above the old one's) when the fault took the holder, else any tick
    that started after the fault. The lease log's entry of the new epoch says when it was
    taken (`at_ms`) and the old holder's deadline (`prev_expires_ms`; its own fence comes
    earlier, by BATON_LEASE_MARGIN_MS); without one, the lease hash's `acquired_ms` and the
    last `expires_ms` the old epoch's lease showed."""
    deadline = [before.expires_ms]

    def first() -> tuple[list[Entry], Entry] | None:
        lease = rd.lease()
        if lease is not None and lease.epoch == before.epoch:
            deadline[0] = max(deadline[0], lease.expires_ms)
        entries = rd.journal()
        if not entries:
            return None
        after = [
            e
            for e in entries
            if e.started_ms > fault_ms and (e.epoch > before.epoch if holder_moves else True)
        ]
        return (entries, min(after, key=lambda e: e.tick)) if after else None

    entries, entry = wait_for(first, timeout_s, f"the first tick after {fault} #{index}")
    lease = wait_for(rd.lease, timeout_s, "the lease after the takeover")
    old_last = max(e.tick for e in entries if e.started_ms <= fault_ms)
    taken_ms: int | None = None
    if entry.epoch != before.epoch:
        log = rd.lease_log(entry.epoch)
        taken_ms = int(log.get("at_ms") or 0) or (lease.acquired_ms if lease.epoch == entry.epoch else None)
        prev = int(log.get("prev_expires_ms") or 0)
        if prev and log.get("prev_holder", before.holder) == before.holder:
            deadline[0] = prev
    return Sample(
        fault=fault,
        index=index,
        phase_ms=phase_ms,
        target=target,
        old_host=host_of(before.holder),
        new_host=host_of(lease.holder),
        old_epoch=before.epoch,
        new_epoch=entry.epoch,
        old_last_tick=old_last,
        new_first_tick=entry.tick,
        missed=entry.tick - old_last - 1,
        fault_ms=fault_ms,
        first_tick_ms=entry.started_ms,
        lease_taken_ms=taken_ms,
        deadline_ms=deadline[0],
        takeover_delay_ms=entry.started_ms - (old_last + 1) * tick_ms,
    )


class ClusterFaults:
    """The four cluster faults of the table against a started `deploy.cluster.Cluster`."""

    def __init__(self, cluster: Any, tick_ms: int, timeout_s: float) -> None:
        self.c = cluster
        self.tick_ms = tick_ms
        self.timeout_s = timeout_s
        self.rd = Reader(lambda: cluster.client(user="admin"))

    def status(self) -> Any:
        return self.c.status()

    def workers_on(self, host: str) -> list[str]:
        """The colours whose worker runs on `host` (the host in its heartbeat's holder id)."""
        return [c for c in COLORS if host_of(self.rd.heartbeat(c).get("holder", "")) == host]

    def deal(self, fault: str, index: int, rng: random.Random) -> Sample:
        before = wait_for(self.rd.lease, self.timeout_s, "the lease")
        old_host = host_of(before.holder)
        primary_before = self.c.primary_host()
        target = {HOST_KILL: old_host, CUT: old_host, WORKER_KILL: old_host}.get(fault, primary_before)
        workers = self.workers_on(target)
        holder_moves = fault != PRIMARY_KILL or target == old_host
        pid = 0
        if fault == WORKER_KILL:
            pid = int(self.rd.heartbeat(before.color).get("pid", 0) or 0)
            if not pid:
                raise RuntimeError(f"no pid in the heartbeat of worker-{before.color}")
        phase = wait_phase(rng, self.tick_ms)
        before = self.rd.lease() or before  # the latest renewal: the deadline only grows from it
        fault_ms = wall_ms()
        if fault == WORKER_KILL:
            os.kill(pid, signal.SIGKILL)
        elif fault == CUT:
            self.c.cut(target)
        else:
            self.c.kill_host(target)
        try:
            sample = measure(
                self.rd,
                fault,
                index,
                phase,
                target,
                before,
                fault_ms,
                holder_moves,
                self.tick_ms,
                self.timeout_s,
            )
        finally:
            restored_ms = self.restore(fault, target, workers)
        sample.primary_before = primary_before
        sample.primary_after = self.c.primary_host()
        sample.restored_ms = restored_ms
        sample.missed_after, sample.handoffs_after = self.rd.settle(sample.new_first_tick, self.timeout_s)
        return sample

    def restore(self, fault: str, target: str, workers: list[str]) -> int:
        """Brings the host back and waits until it has rejoined; returns when it had."""
        since_ms = wall_ms()
        if fault == CUT:
            self.c.heal(target)
        elif fault in (HOST_KILL, PRIMARY_KILL):
            self.c.up(target)
        # WORKER_KILL: the host's supervisor restarts the worker by itself.
        wait_for(lambda: self.rejoined(target, workers, since_ms), self.timeout_s, f"{target} to rejoin")
        return wall_ms()

    def rejoined(self, host: str, workers: list[str], since_ms: int) -> bool:
        """The host is up and linked, its Redis the primary or an online replica, and each of
        its workers has beaten as ready (a standby) or active since `since_ms`."""
        st = self.status()
        up = any(
            field(h, "name") == host and field(h, "up") and field(h, "linked", True)
            for h in field(st, "hosts", []) or []
        )
        redis = field(st, "redis")
        in_redis = field(redis, "primary") == host or any(
            field(r, "host") == host and field(r, "state") == "online"
            for r in field(redis, "replicas", []) or []
        )
        beats = [self.rd.heartbeat(c) for c in workers]
        ready = all(
            b.get("state") in ("ready", "active") and int(b.get("heartbeat_ms", 0) or 0) >= since_ms
            for b in beats
        )
        return bool(up and in_redis and ready)

    def money(self) -> Money:
        """Pause (no new entries), wait for every intent to be final, then read the money."""
        lease = wait_for(self.rd.lease, self.timeout_s, "the lease")
        host = host_of(lease.holder)
        out = self.c.exec(host, [BATON, "pause", "--reason", "bench-ha: drain before the money check"])
        if out.returncode != 0:
            raise RuntimeError(f"baton pause on {host} failed: {out.stderr}")
        clob = self.c.host(host).settings.clob_url
        return drain_and_collect(self.rd, clob, self.timeout_s)


def drain_and_collect(rd: Reader, clob_url: str, timeout_s: float) -> Money:
    """Once no intent is open (trading paused beforehand), Redis's side of the money in one
    MULTI, then every order the venue (the sim) accepted."""
    wait_for(lambda: rd.r.hlen(KEYS.intents_open()) == 0, timeout_s, "every intent to be final")
    pipe = rd.r.pipeline(transaction=True)
    pipe.hvals(KEYS.intents())
    pipe.hvals(KEYS.intents_open())
    pipe.hvals(KEYS.positions())
    pipe.xrange(KEYS.ledger())
    pipe.hgetall(KEYS.ledger_totals())
    intents, open_intents, positions, ledger, totals = pipe.execute()
    with httpx.Client(base_url=clob_url, timeout=30) as http:
        orders = sim_orders(http)
    return Money(
        venue_orders=orders,
        intents=[json.loads(v) for v in intents],
        open_intents=[json.loads(v) for v in open_intents],
        positions=[json.loads(v) for v in positions],
        ledger=[_decoded(f) for _, f in ledger],
        ledger_totals=_decoded(totals),
    )
