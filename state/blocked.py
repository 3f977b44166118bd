"""The values that block new entries (kernel/blocking.py decides, this keeps): a hash the
active worker replaces whole when the set changes, read by `baton status`, `/metrics` and
tools. Its changes are journaled once each in the error journal (state/lua/blocked_sync.lua).
"""

from __future__ import annotations

import msgspec

from state.journal import ERRORS_MAXLEN
from state.repo import Repo, text
from state.structs import BLOCKER, Blocker

# At most this many blockers are kept (and journaled) one by one; the rest are counted in one
# more. A storm of garbage must not grow the hash or flood the journal.
MAX_BLOCKERS = 64
MORE_ID = "(more)"


def blocked_line(b: Blocker) -> str:
    where = f"{b.key} {b.field}" if b.field else b.key
    return f"entries blocked ({b.scope}): {where}: {b.problem}"


def cleared_line(b: Blocker) -> str:
    where = f"{b.key} {b.field}" if b.field else b.key
    return f"entries unblocked ({b.scope}): {where} is readable again"


def capped(blockers: list[Blocker], key: str) -> list[Blocker]:
    """`blockers` as kept: at most MAX_BLOCKERS, the rest folded into one that counts them
    (it blocks every slot: what it stands for is not listed)."""
    if len(blockers) <= MAX_BLOCKERS:
        return blockers
    rest = len(blockers) - MAX_BLOCKERS + 1
    more = Blocker(key=key, field=MORE_ID, problem=f"{rest} more unreadable values (not listed)")
    return [*blockers[: MAX_BLOCKERS - 1], more]


class BlockedRepo(Repo):
    async def read_blocked(self) -> list[Blocker]:
        """The blockers the active worker last wrote; an unreadable entry is returned as a
        blocker of its own (it blocks nothing, but says so)."""
        raw = await self.r.hgetall(self.k.blocked())
        return decode_blocked(self.k.blocked(), raw)

    async def sync_blocked(self, epoch: int, blockers: list[Blocker], at_ms: int) -> str:
        """Replace the kept set with `blockers` (fenced): those already kept (the same value's
        place and scope) keep their `since_ms`; each blocker found or gone is journaled once.
        Returns the verdict."""
        key = self.k.blocked()
        before = {b.id: b for b in decode_blocked(key, await self.r.hgetall(key))}
        now: dict[str, Blocker] = {}
        lines: list[str] = []
        for b in capped(blockers, key):
            old = before.get(b.id)
            if old is not None and old.scope == b.scope:
                now[b.id] = msgspec.structs.replace(b, since_ms=old.since_ms)
            else:
                now[b.id] = msgspec.structs.replace(b, since_ms=at_ms)
                lines.append(blocked_line(b))
        lines += [cleared_line(b) for i, b in before.items() if i not in now]
        args: list[str | int | bytes] = [epoch, at_ms, ERRORS_MAXLEN, len(now), len(lines)]
        for i, b in now.items():
            args += (i, BLOCKER.encode(b))
        args += lines
        res = await self.scripts.blocked_sync(
            keys=[self.k.lease_epoch(), key, self.k.journal_errors(), self.k.stats()], args=args
        )
        return text(res)


def decode_blocked(key: str, raw: dict[str, str]) -> list[Blocker]:
    out = []
    for i, v in sorted(raw.items()):
        try:
            out.append(BLOCKER.decode(v))
        except msgspec.DecodeError as e:
            out.append(Blocker(key=key, field=i, problem=f"cannot decode {v[:80]!r}: {e}", slot="?"))
    return out
