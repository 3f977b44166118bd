"""The file door and window: the loops that keep `var/status.json` fresh and poll
`var/control.json` (whose commands api/control_file.py applies and archives).

The bot this product grew from was steered through control.json and watched through
status.json; both still work, with Redis as the ground truth behind them:

- status.json is what `GET /status` returns (plus `generated_ms`), rewritten atomically after
  every tick (the tick journal is followed with XREAD BLOCK) and at least every
  STATUS_REFRESH_S while no tick comes, so that a halted or stopped system still shows a fresh
  `generated_ms`. While Redis is unreachable the last snapshot stays and `generated_ms` stops
  advancing: a reader tells a stale file from a live one by it.
- control.json holds one command, the API's body tagged by `action` (control/commands.py). It
  is applied with the file owner as the actor, then moved aside to
  `control.d/<UTC time>-<action>.json` with a `result` object appended. A half-written file
  (an editor still saving) is retried for SETTLE_S before it is judged bad; a bad one is
  archived with its error, so the loop never stops on it. While Redis is unreachable the file
  waits where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, cast

import redis

from api.atomic import write_json_atomic
from api.context import ApiContext, Outage, stop_if_cancelled
from api.control_file import SETTLE_S, ControlPoller, archive_dir_of, recover_interrupted
from baton.errors import OpError
from kernel.clock import wall_ms
from state.keys import Keys

log = logging.getLogger("baton.api.files")

STATUS_REFRESH_S = 3.0
CONTROL_POLL_S = 0.2
RETRY_S = 1.0
READ_COUNT = 500


def write_status_atomic(path: Path, obj: dict[str, Any]) -> None:
    # Owner-only: the status names endpoints, balances and positions.
    write_json_atomic(path, obj, mode=0o600)


# --- the loops --------------------------------------------------------------------------------
async def write_status(ctx: ApiContext, outage: Outage | None = None) -> bool:
    """One snapshot into status.json; False (logged) when it could not be made."""
    outage = outage or Outage("status.json", log)
    try:
        st = await ctx.call(ctx.ops.status)
        st = {"generated_ms": wall_ms(), **st}
        await ctx.call(write_status_atomic, ctx.s.status_file, st)
    except OpError as e:
        outage.fail(e.message)
        return False
    except Exception as e:  # a full disk, a bug in status: the window stays, the loop goes on
        outage.fail(f"{type(e).__name__}: {e}")
        return False
    outage.ok()
    return True


async def status_loop(
    ctx: ApiContext, *, refresh_s: float = STATUS_REFRESH_S, retry_s: float = RETRY_S
) -> None:
    journal = Keys(ctx.s.prefix).journal_ticks()
    outage, follow = Outage("status.json", log), Outage("status.json: following the tick journal", log)
    last_id: Any = None
    with contextlib.suppress(OSError):  # if it cannot be made, each write says why
        ctx.s.status_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    while True:
        stop_if_cancelled()
        if last_id is None:
            # Where to follow the journal from is fixed before the snapshot is written: a tick
            # journaled in between is in the snapshot or read after it, never missed (fixed
            # after it, such a tick would wait for the next refresh).
            last_id = await _journal_end(ctx, journal, follow)
        wrote = await write_status(ctx, outage)
        due = time.monotonic() + (refresh_s if wrote and last_id is not None else retry_s)
        # Wait for the next journal entry, or until the refresh is due. However many entries
        # one read returns (a burst, a catch-up after a stall), they make one write.
        while (left := due - time.monotonic()) > 0:
            stop_if_cancelled()
            if last_id is None:  # Redis could not say where the journal ends: try again then
                await asyncio.sleep(left)
                continue
            try:
                got = cast(
                    list[tuple[str, list[tuple[str, dict[str, str]]]]],
                    await ctx.redis.xread(
                        {journal: last_id}, block=max(1, int(left * 1000)), count=READ_COUNT
                    ),
                )
            except (redis.RedisError, OSError) as e:
                stop_if_cancelled()  # a cancel that arrived as a connection error: do not retry
                follow.fail(e)
                await asyncio.sleep(min(retry_s, left))
                continue
            follow.ok()
            if got:
                last_id = got[0][1][-1][0]
                break


async def _journal_end(ctx: ApiContext, journal: str, follow: Outage) -> Any:
    """The id of the tick journal's last entry ("0-0" when empty); None (logged) when Redis
    cannot say."""
    try:
        last = await ctx.redis.xrevrange(journal, count=1)
    except (redis.RedisError, OSError) as e:
        stop_if_cancelled()
        follow.fail(e)
        return None
    stop_if_cancelled()
    follow.ok()
    return last[0][0] if last else "0-0"


async def control_loop(
    ctx: ApiContext, *, poll_s: float = CONTROL_POLL_S, settle_s: float = SETTLE_S
) -> None:
    archive_dir = archive_dir_of(ctx)
    poller = ControlPoller(ctx.ops, ctx.s.control_file, archive_dir, settle_s=settle_s)
    trouble = Outage("control.json", log)
    if archive_dir.is_dir():
        try:
            await ctx.call(recover_interrupted, archive_dir)
        except OSError as e:
            trouble.fail(f"archiving interrupted commands: {e}")
    while True:
        stop_if_cancelled()
        try:
            # On the halt threads: a halt written to control.json must not queue behind a
            # slow reload or stop in the default pool.
            await ctx.call_urgent(poller.poll)
            trouble.ok()
        except Exception as e:  # an unwritable archive dir, a bug: log, keep polling
            trouble.fail(f"{type(e).__name__}: {e}")
        await asyncio.sleep(poll_s)


async def run_files(ctx: ApiContext) -> None:
    """Both halves, until cancelled (api/__main__.py runs it beside the app)."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(status_loop(ctx), name="status-json")
        tg.create_task(control_loop(ctx), name="control-json")
