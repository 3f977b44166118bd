"""The file door and window: `var/status.json` and `var/control.json`.

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
import json
import logging
import os
import pwd
import secrets
import stat
import time
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec
import redis

from api.context import ApiContext, stop_if_cancelled
from baton.errors import BadRequest, Forbidden, OpError, Unavailable
from control import commands as c
from control.ops import Ops
from kernel.clock import wall_ms
from state.keys import Keys

log = logging.getLogger("baton.api.files")

STATUS_REFRESH_S = 3.0
CONTROL_POLL_S = 0.2
# How long a control.json that does not parse may stay unchanged before it is judged bad.
SETTLE_S = 1.0
RETRY_S = 1.0
READ_COUNT = 500
# A command being applied is first moved here (atomically, so that a new control.json written
# meanwhile is never mistaken for it); a leftover one means the api stopped while applying it.
APPLYING = ".applying-"
ACTIONS = frozenset(t.__struct_config__.tag for t in typing.get_args(c.Command))


class _Outage:
    """Logs the first failure of a run of failures and the recovery, not every retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = ""

    def fail(self, error: object) -> None:
        msg = str(error)
        if msg != self.failing:
            log.warning("%s: %s; retrying", self.what, msg)
        self.failing = msg

    def ok(self) -> None:
        if self.failing:
            log.info("%s: working again", self.what)
        self.failing = ""


# --- atomic files -----------------------------------------------------------------------------
def write_json_atomic(path: Path, obj: Any, mode: int = 0o644) -> None:
    """Replace `path` with `obj` as JSON so that a reader sees the old file or the new one,
    never a part: a temp file in the same directory, fsynced, then renamed over it."""
    data = (json.dumps(obj, indent=2, default=str) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_status_atomic(path: Path, obj: dict[str, Any]) -> None:
    # Owner-only: the status names endpoints, balances and positions.
    write_json_atomic(path, obj, mode=0o600)


# --- control.json -----------------------------------------------------------------------------
def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _decode(raw: bytes) -> tuple[Any, c.Command | None, OpError | None]:
    """(the JSON value or None, the command or None, what was wrong or None)."""
    try:
        parsed = json.loads(raw)
    except ValueError:  # also bytes that are not UTF-8
        parsed = None
    try:
        return parsed, c.decode_command(raw), None
    except BadRequest as e:
        return parsed, None, e


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _action(cmd: c.Command) -> str:
    """The command's action: the tag msgspec tells it apart by (always a string here)."""
    return cast(str, type(cmd).__struct_config__.tag)


def _archive_path(archive_dir: Path, action: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    path = archive_dir / f"{stamp}-{action}.json"
    n = 1
    while path.exists():  # two commands in one millisecond
        path = archive_dir / f"{stamp}-{action}-{n}.json"
        n += 1
    return path


def _archive(archive_dir: Path, raw: bytes, parsed: Any, action: str, result: dict[str, Any]) -> Path:
    if isinstance(parsed, dict) and "result" not in parsed:
        record = {**parsed, "result": result}
    else:
        # Not a JSON object (or one that would lose a field): the text as it was written.
        record = {"command_text": raw.decode("utf-8", "replace"), "result": result}
    path = _archive_path(archive_dir, action)
    write_json_atomic(path, record, mode=0o600)
    return path


def _apply(ops: Ops, actor: c.Actor, cmd: c.Command) -> dict[str, Any]:
    try:
        res = ops.apply(actor, cmd)
    except OpError as e:
        return {"ok": False, "status": e.status, "error": e.message}
    except Exception as e:  # a bug must not stop the door: archive it as a server error
        log.exception("control.json: %s failed", _action(cmd))
        return {"ok": False, "status": 500, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "status": 200, "result": msgspec.to_builtins(res)}


def _redis_up(ops: Ops) -> bool:
    try:
        ops.r.ping()
    except redis.RedisError:
        return False
    return True


def process_control_file(
    ops: Ops, path: Path, archive_dir: Path, *, judge_unparsable: bool = True
) -> Path | None:
    """Apply the command in `path` and archive it with its result; returns the archived file.

    None when there is nothing to do yet: no file, or one that does not parse while
    `judge_unparsable` is false (an editor may still be writing it). Raises Unavailable, and
    leaves the file, when Redis is unreachable: the command waits for it.
    """
    try:
        raw = _read_regular(path)
    except FileNotFoundError:
        return None
    except (OpError, OSError) as e:
        return _refuse_unreadable(path, archive_dir, e)
    if not judge_unparsable and not _parses(raw):
        return None
    _parsed, cmd, _err = _decode(raw)
    if cmd is not None and not _redis_up(ops):
        raise Unavailable(f"cannot reach Redis at {ops.s.redis_url_shown}")
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    claimed = archive_dir / f"{APPLYING}{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    # From here on, the claimed file is the command (a new control.json may already exist).
    try:
        raw = _read_regular(claimed)
    except (OpError, OSError) as e:
        return _refuse_claimed(claimed, archive_dir, e)
    parsed, cmd, err = _decode(raw)
    st = claimed.stat()
    who = _owner(st.st_uid)
    if cmd is not None and st.st_uid not in (os.getuid(), 0):
        # The door is for the operator who runs Baton: a file another local user could
        # write (a shared var/) commands nothing.
        cmd, err = None, Forbidden(f"control.json belongs to {who}, not to the user the api runs as")
    if cmd is not None:
        action = _action(cmd)
        result = _apply(ops, c.Actor(source="file", who=who), cmd)
    else:
        assert err is not None
        got = parsed.get("action") if isinstance(parsed, dict) else None
        action = str(got) if got in ACTIONS else "invalid"
        result = {"ok": False, "status": err.status, "error": err.message}
    dest = _archive(archive_dir, raw, parsed, action, result)
    claimed.unlink()
    detail = "ok" if result["ok"] else result["error"]
    log.info("control.json from %s: %s -> %s %s (%s)", who, action, result["status"], detail, dest.name)
    return dest


MAX_COMMAND_BYTES = 64 * 1024


def _read_regular(path: Path) -> bytes:
    """The file's bytes, if it is a small regular file: never follow a symlink (to
    /dev/zero, say), never block on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Forbidden("control.json is not a regular file (a FIFO or device commands nothing)")
        if st.st_size > MAX_COMMAND_BYTES:
            raise BadRequest(f"control.json is {st.st_size} bytes; at most {MAX_COMMAND_BYTES}")
        return os.read(fd, MAX_COMMAND_BYTES + 1)
    finally:
        os.close(fd)


def _refuse_unreadable(path: Path, archive_dir: Path, e: OpError | OSError) -> Path | None:
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    claimed = archive_dir / f"{APPLYING}{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return _refuse_claimed(claimed, archive_dir, e)


def _refuse_claimed(claimed: Path, archive_dir: Path, e: OpError | OSError) -> Path:
    if isinstance(e, OpError):
        status, message = e.status, e.message
    else:  # ELOOP: a symlink
        status, message = 403, f"control.json cannot be read safely ({e.strerror}): symlinks command nothing"
    dest = _archive(archive_dir, b"", None, "invalid", {"ok": False, "status": status, "error": message})
    claimed.unlink()
    log.warning("control.json refused: %s (%s)", message, dest.name)
    return dest


def recover_interrupted(archive_dir: Path) -> list[Path]:
    """Archive commands the api was applying when it stopped. Whether they took effect is in
    the audit stream; they are not applied again (a second `resume` or `stop` is not harmless)."""
    out = []
    for claimed in sorted(archive_dir.glob(f"{APPLYING}*.json")):
        raw = claimed.read_bytes()
        parsed, cmd, _err = _decode(raw)
        action = _action(cmd) if cmd is not None else "invalid"
        result = {
            "ok": False,
            "status": 500,
            "error": "the api stopped while applying this command; the audit stream says if it took effect",
        }
        out.append(_archive(archive_dir, raw, parsed, action, result))
        claimed.unlink()
        log.warning("control.json: %s was interrupted; archived as %s", action, out[-1].name)
    return out


class ControlPoller:
    """One look at control.json per `poll`; a file that does not parse is given `settle_s`
    without changing (an editor may still be writing it) before it is judged bad."""

    def __init__(
        self,
        ops: Ops,
        path: Path,
        archive_dir: Path,
        *,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ops = ops
        self.path = path
        self.archive_dir = archive_dir
        self.settle_s = settle_s
        self.clock = clock
        self._seen: tuple[int, int, int] | None = None
        self._since = 0.0
        self._redis = _Outage("control.json waits: Redis")

    def poll(self) -> Path | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen = None
            return None
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            self._seen, self._since = seen, self.clock()
        settled = self.clock() - self._since >= self.settle_s
        try:
            done = process_control_file(self.ops, self.path, self.archive_dir, judge_unparsable=settled)
        except Unavailable as e:
            self._redis.fail(e.message)
            return None
        self._redis.ok()
        if done is not None:
            self._seen = None
        return done


def archive_dir_of(ctx: ApiContext) -> Path:
    return ctx.s.control_file.with_name("control.d")


# --- the loops --------------------------------------------------------------------------------
async def write_status(ctx: ApiContext, outage: _Outage | None = None) -> bool:
    """One snapshot into status.json; False (logged) when it could not be made."""
    outage = outage or _Outage("status.json")
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
    outage, follow = _Outage("status.json"), _Outage("status.json: following the tick journal")
    last_id: Any = None
    with contextlib.suppress(OSError):  # if it cannot be made, each write says why
        ctx.s.status_file.parent.mkdir(parents=True, exist_ok=True)
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


async def _journal_end(ctx: ApiContext, journal: str, follow: _Outage) -> Any:
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
    trouble = _Outage("control.json")
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
