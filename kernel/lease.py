"""The lease: who may trade, under which epoch, until when. The `Lease` type, decoded from
its Redis hash in one place, and the one owner of everything done with it: reading it,
finding a dead holder, and naming the colour that should trade.

The hash is written only by the Lua scripts (state/lua/lease_*.lua), always whole; a reader
still tolerates a missing hash (None) and fields that are missing or not numbers (empty, 0),
because `redis-cli` can write anything there.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any

import msgspec

from state.keys import COLORS, Keys


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


# --- holders and dead-holder detection --------------------------------------------------------
def this_host() -> str:
    # A holder id is split on ':', so a host name cannot carry one.
    return socket.gethostname().replace(":", "_")


def new_holder(color: str) -> str:
    """A holder id, `color:host:pid:nonce`: the nonce tells two lives of one pid apart."""
    return f"{color}:{this_host()}:{os.getpid()}:{secrets.token_hex(4)}"


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
    """The holder's id when it is a process of this host that no longer exists (so that a
    restarted worker need not wait for the dead one's lease to expire), else ''."""
    holder = lease.holder if lease is not None else ""
    hp = holder_pid(holder)
    if hp is None or holder == me:
        return ""
    host, pid = hp
    if host != this_host() or pid == os.getpid() or process_alive(pid):
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
