"""The lease: who may trade, under which epoch, until when. The `Lease` type, decoded from
its Redis hash in one place, and the one owner of everything done with it: reading it,
taking it (over a dead holder too), renewing it inside the tick's read, handing it over,
releasing it, and naming the colour that should trade.

Liveness does not wait for the tick: the holder renews on a heartbeat of its own
(kernel/lease_heartbeat.py) and posts only before its `LeaseDeadline`. Every write that makes
an epoch or extends a lease is followed by WAIT (state/replication.py) when replicas are
configured: an epoch or a renewal the replicas did not acknowledge is not used.

The hash is written only by the Lua scripts (state/lua/lease_*.lua, run through
state/lease.py), always whole; a reader still tolerates a missing hash (None) and fields that
are missing or not numbers (empty, 0), because `redis-cli` can write anything there.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from baton.errors import LeaseDeadlinePassed, NotReplicated
from baton.settings import Settings
from kernel.clock import Clock, monotonic_ms
from state import replication
from state.keys import COLORS, Keys
from state.lease import LeaseRepo, acquired, transferred

log = logging.getLogger("baton.lease")


class Lease(msgspec.Struct, frozen=True):
    """The lease hash (state/keys.py `lease`); new fields go at the end, with defaults."""

    holder: str = ""
    color: str = ""
    release: str = ""
    epoch: int = 0
    expires_ms: int = 0
    acquired_ms: int = 0

    def live(self, now_ms: int) -> bool:
        """Held and not expired at `now_ms`: its holder trades (or is halted or paused)."""
        return bool(self.holder) and self.expires_ms > now_ms


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def decode_lease(raw: Mapping[str, str] | None) -> Lease | None:
    """The lease from its hash as HGETALL returns it (a decoding client); None for no hash.
    Readers that fetch the hash inside their own pipeline decode the reply with this."""
    if not raw:
        return None
    return Lease(
        holder=raw.get("holder") or "",
        color=raw.get("color") or "",
        release=raw.get("release") or "",
        epoch=_int(raw.get("epoch")),
        expires_ms=_int(raw.get("expires_ms")),
        acquired_ms=_int(raw.get("acquired_ms")),
    )


def read_lease(r: Any, k: Keys) -> Lease | None:
    """The lease through a synchronous client with `decode_responses=True`."""
    return decode_lease(r.hgetall(k.lease()))


async def fetch_lease(repo: LeaseRepo) -> Lease | None:
    """The lease through the worker's asyncio client."""
    return decode_lease(await repo.read_lease())


# --- holders and dead-holder detection --------------------------------------------------------
def new_holder(color: str, host: str) -> str:
    """A holder id, `color:host:pid:nonce` (host: Settings.host, never ':'); the nonce tells
    two lives of one pid apart. Hosts are named by the setting, not the machine's name:
    network namespaces (and containers) share one host name but not one process table."""
    return f"{color}:{host.replace(':', '_')}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_pid(holder: str) -> tuple[str, int] | None:
    """(host, pid) of a holder id `color:host:pid:nonce`, or None when it has another form."""
    parts = holder.split(":")
    if len(parts) != 4:
        return None
    try:
        return parts[1], int(parts[2])
    except ValueError:
        return None


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie is dead for our purposes; this
    container's PID 1 does not reap, so exited processes linger as zombies)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (2nd field) may hold spaces: the state follows its ')'.
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def dead_holder(lease: Lease | None, me: str) -> str:
    """The holder's id when it is a process of this host (the host named in `me`) that no
    longer exists (so that a restarted worker need not wait for the dead one's lease to
    expire), else ''. A holder on another host is never judged here: its lease expires."""
    holder = lease.holder if lease is not None else ""
    hp, mine = holder_pid(holder), holder_pid(me)
    if hp is None or mine is None or holder == me:
        return ""
    host, pid = hp
    if host != mine[0] or pid == os.getpid() or process_alive(pid):
        return ""
    return holder


# --- which colour trades ------------------------------------------------------------------------
def lease_color(r: Any, k: Keys) -> str:
    """The colour the lease names, live or expired ('' when there is no lease): the worker
    that trades, or traded last without a clean stop."""
    return str(r.hget(k.lease(), "color") or "")


def active_color(r: Any, k: Keys) -> str:
    """The colour that should trade: the lease's (a crashed holder's expired lease still
    names it), else the last successful deploy's or rollback's (a clean stop deletes the
    lease), else blue. Starting the other colour would run an older release."""
    color = lease_color(r, k)
    if color in COLORS:
        return color
    for _id, f in r.xrevrange(k.deploys(), count=50):
        if f.get("result") == "ok" and f.get("color") in COLORS:
            return str(f["color"])
    return "blue"


def trades_elsewhere(lease: Lease | None, me: str, now_ms: int) -> bool:
    """Another worker holds the lease, live, and is not found dead: it trades, not `me`."""
    return lease is not None and lease.live(now_ms) and lease.holder != me and not dead_holder(lease, me)


# --- taking, renewing, handing over, releasing ----------------------------------------------------
class Acquired(msgspec.Struct, frozen=True):
    """What an attempt to take the lease found and did."""

    held: bool
    epoch: int  # ours when held, else the current holder's
    holder: str  # who holds it now (`me` when held)
    before: str  # who held it before the attempt ('' for nobody)
    dead: str  # `before`, when it was found dead on this host and taken over ('' otherwise)
    why: str = ""  # what the WAIT said when not acknowledged ('' when it was, or not wanted)
    # Not held because another holder's lease is live: when it expires (0: not known), so
    # that a standby can aim its next look at that moment.
    expires_ms: int = 0

    @property
    def acked(self) -> bool:
        """Acknowledged by enough replicas (always, without replicas to wait for): only then
        may a held lease be traded on. Held but not acknowledged: ask again (the lease is ours
        in Redis; the next attempt extends it and waits again)."""
        return not self.why


async def _with_wait(repo: LeaseRepo, s: Settings | None, queue: Callable[[Any], Any]) -> tuple[Any, Any]:
    """What `queue` puts on a pipeline, then a WAIT for `s`'s replicas on the same one (one
    round trip, one connection: WAIT covers that connection's writes): (the script's reply,
    WAIT's, None when none was wanted). The script's error is raised."""

    def build(pipe: Any) -> None:
        queue(pipe)
        if s is not None:
            replication.queue_wait(s, pipe)

    res = await repo.run_pipeline(build)
    if isinstance(res[0], Exception):
        raise res[0]
    return res[0], (res[1] if len(res) > 1 else None)


def _acked(s: Settings | None, reply: Any, what: str) -> str:
    """'' when WAIT's `reply` is enough for `s`, else why not."""
    if s is None or not replication.wanted(s):
        return ""
    if isinstance(reply, Exception):
        return f"{what}: WAIT failed: {reply}"
    try:
        replication.check(s, reply, what)
    except NotReplicated as e:
        return str(e)
    return ""


async def acquire(
    repo: LeaseRepo,
    clock: Clock,
    me: str,
    color: str,
    release: str,
    ttl_ms: int,
    s: Settings | None = None,
) -> Acquired:
    """Take the lease when it is free, expired, ours, or held by a process of this host that
    no longer exists (no need to wait for its expiry): lease_acquire.lua, epoch = INCR for a
    new holder, then WAIT for `s`'s replicas on the same connection. A live lease held
    elsewhere costs one read (a standby asks ten times a second)."""
    lease = await fetch_lease(repo)
    before = lease.holder if lease is not None else ""
    if lease is not None and trades_elsewhere(lease, me, clock.now_ms()):
        return Acquired(False, lease.epoch, lease.holder, before, "", expires_ms=lease.expires_ms)
    dead = dead_holder(lease, me)
    now_ms = clock.now_ms()
    reply, waited = await _with_wait(
        repo, s, lambda pipe: repo.queue_acquire_lease(pipe, me, color, release, now_ms, ttl_ms, dead)
    )
    held, epoch, holder = acquired(reply, me)
    why = _acked(s, waited, f"lease of epoch {epoch}") if held else ""
    return Acquired(held, epoch, holder, before, dead, why=why)


def renew(repo: LeaseRepo, me: str, epoch: int, now_ms: int, ttl_ms: int, pipeline: Any = None) -> Any:
    """Extend our lease to now_ms + ttl_ms (lease_renew.lua); queued on `pipeline` it rides in
    the tick's snapshot read, one round trip for both. Its reply goes to `renewed`."""
    return repo.renew_lease(me, epoch, now_ms, ttl_ms, pipeline=pipeline)


class Renewal(msgspec.Struct, frozen=True):
    """A heartbeat's renewal: still ours (False: lost, stand down), and acknowledged by the
    replicas (False: it does not extend the deadline; `why` says what WAIT said, or that the
    lease is lost)."""

    ours: bool
    why: str = ""

    @property
    def acked(self) -> bool:
        return self.ours and not self.why


async def renew_replicated(
    repo: LeaseRepo, s: Settings, me: str, epoch: int, now_ms: int, ttl_ms: int
) -> Renewal:
    """`renew` and WAIT in one round trip on one connection (the heartbeat's)."""
    reply, waited = await _with_wait(repo, s, lambda pipe: renew(repo, me, epoch, now_ms, ttl_ms, pipe))
    if not renewed(reply):
        return Renewal(False, f"lease of epoch {epoch} is no longer ours")
    why = _acked(s, waited, f"renewal of epoch {epoch}")
    return Renewal(True, why)


def renewed(reply: Any) -> bool:
    """The renewal's verdict: False when another holder or a newer epoch exists (lost)."""
    return int(reply) == 1


async def transfer(
    repo: LeaseRepo,
    me: str,
    epoch: int,
    request: Mapping[str, str],
    last_tick: int,
    now_ms: int,
    ttl_ms: int,
    s: Settings | None = None,
) -> tuple[int, str]:
    """Carry out the handover `request` (the handover hash as read with the tick) right after
    `last_tick`: the lease goes to its successor with epoch + 1 in one step (lease_transfer.lua),
    then WAIT for `s`'s replicas. Returns (successor's epoch, '') or (0, reason): NOT_HOLDER,
    NO_REQUEST, BAD_REQUEST, NOT_READY. A transfer the replicas did not acknowledge is done
    all the same (the lease is not ours any more); the successor trades only once its own
    acquisition, which extends the lease, is acknowledged, and WAIT covers the transfer too."""
    args = (
        me,
        epoch,
        request.get("id", ""),
        request.get("to_holder", ""),
        request.get("to_color", ""),
        last_tick,
        now_ms,
        ttl_ms,
    )
    reply, waited = await _with_wait(repo, s, lambda pipe: repo.queue_transfer_lease(pipe, *args))
    new_epoch, why = transferred(reply)
    if new_epoch and (late := _acked(s, waited, f"handover to epoch {new_epoch}")):
        log.warning("%s; the successor waits for its own acknowledgement", late)
    return new_epoch, why


async def release(repo: LeaseRepo, me: str) -> bool:
    """On a clean stop, give the lease up when it is ours, so that a successor need not wait
    for the expiry (lease_release.lua; a newer epoch is left alone). True when it was ours."""
    lease = await fetch_lease(repo)
    if lease is None or lease.holder != me:
        return False
    await repo.release_lease(me, lease.epoch)
    return True


# --- the deadline: never post on a lease that may have passed ------------------------------------
class LeaseDeadline:
    """Until when this worker may post to the venue: its last successful renewal + the lease
    length - a margin, on its own monotonic clock.

    The fence (the epoch in every Lua write) stops a late worker's *writes*; a post to the
    venue is not fenced, and an intent committed just before a stall would still be posted
    after it, when the lease may belong to another worker that already reconciled it. So
    every post checks this first (kernel/executor.py). The renewal is stamped *before* it is
    sent (the lease in Redis runs from the now_ms it carries, taken after the stamp), so the
    deadline is never later than the lease's expiry as another worker on this host sees it;
    the margin covers a post's time on the wire and the clock of another host.

    Fed by the lease heartbeat (kernel/lease_heartbeat.py), and by the tick's renewal when no
    replica must acknowledge it. Passed: no post, the refusal is journaled and counted, and
    the next renewal either re-establishes the deadline (nobody took the lease) or finds the
    lease lost (stand down).
    """

    def __init__(self, lease_ms: int, margin_ms: int, mono_ms: Callable[[], float] = monotonic_ms) -> None:
        self.lease_ms = lease_ms
        self.margin_ms = margin_ms
        self._mono_ms = mono_ms
        # Monotonic ms of the last successful renewal's stamp; None: no lease held.
        self._renewed_ms: float | None = None

    def stamp(self) -> float:
        """Taken right before a renewal (or acquisition) is sent; hand it to `renewed`."""
        return self._mono_ms()

    def renewed(self, stamp_ms: float) -> None:
        """The renewal stamped `stamp_ms` succeeded."""
        self._renewed_ms = stamp_ms if self._renewed_ms is None else max(self._renewed_ms, stamp_ms)

    def lost(self) -> None:
        """The lease is lost, handed over or released: nothing may be posted any more."""
        self._renewed_ms = None

    def remaining_ms(self) -> float:
        """Milliseconds left to post in (0 or less: passed)."""
        if self._renewed_ms is None:
            return 0.0
        return self._renewed_ms + self.lease_ms - self.margin_ms - self._mono_ms()

    def passed(self) -> bool:
        return self.remaining_ms() <= 0

    def check(self) -> None:
        """Raises LeaseDeadlinePassed when nothing may be posted now."""
        left = self.remaining_ms()
        if left <= 0:
            since = (
                "no lease held"
                if self._renewed_ms is None
                else (
                    f"last renewal {self._mono_ms() - self._renewed_ms:.0f} ms ago, lease "
                    f"{self.lease_ms} ms, margin {self.margin_ms} ms"
                )
            )
            raise LeaseDeadlinePassed(f"lease deadline passed ({since}): not posted")
