"""The control.json door: one command in a file, applied with the file owner as the actor,
then archived to `control.d/` with its result (see api/files.py for the loop that polls it).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import stat
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import redis

from api.atomic import write_json_atomic
from api.context import ApiContext, Outage
from baton.errors import BadRequest, Forbidden, OpError, Unavailable
from control import commands as c
from control import stops
from control.ops import Ops
from kernel.clock import wall_utc

log = logging.getLogger("baton.api.files")

# How long a control.json that does not parse may stay unchanged before it is judged bad.
SETTLE_S = 1.0
# A command being applied is first moved here (atomically, so that a new control.json written
# meanwhile is never mistaken for it); a leftover one means the api stopped while applying it.
APPLYING = ".applying-"
ACTIONS = frozenset(t.__struct_config__.tag for t in typing.get_args(c.Command))


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _loads(raw: bytes) -> Any:
    """The JSON value of a command file, or None when it has none (not JSON, not UTF-8, or
    nested too deeply to decode safely: control/stops.py nested_too_deep)."""
    if stops.nested_too_deep(raw):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _decode(raw: bytes) -> tuple[Any, c.Command | None, OpError | None]:
    """(the JSON value or None, the command or None, what was wrong or None)."""
    parsed = _loads(raw)
    try:
        return parsed, c.decode_command(raw), None
    except BadRequest as e:
        return parsed, None, e


class Decoded(msgspec.Struct):
    parsed: Any
    cmd: c.Command | None
    err: OpError | None
    # What was wrong with a halt or pause that is carried out anyway.
    warnings: list[str]


def _command(raw: bytes, size: int) -> Decoded:
    """The command in a control.json of `size` bytes (`raw`: its first MAX_COMMAND_BYTES).
    A halt or pause is never refused for its text (control/stops.py read_stop_body): a
    file that is too big, not JSON, with an unknown field still stops when it says
    `"action": "halt"` (or is the bare word), and the warnings say what was wrong."""
    if size > MAX_COMMAND_BYTES:
        parsed = _loads(raw)
        got: Decoded = Decoded(
            parsed, None, BadRequest(f"control.json is {size} bytes; at most {MAX_COMMAND_BYTES}"), []
        )
    else:
        got = Decoded(*_decode(raw), [])
    if got.cmd is not None:
        return got
    if isinstance(got.parsed, dict):  # JSON: its action says, and only a stop is lenient
        named = got.parsed.get("action")
        stop = named if isinstance(named, str) and named in stops.STOP_BODIES else ""
    else:  # not JSON (or cut off): `"action": "halt"` in the text, or the bare word
        stop = stops.stop_action_in(raw)
    if not stop:
        return got
    body, warnings = stops.read_stop_body(
        raw,
        stops.STOP_BODIES[stop],
        cut_at=MAX_COMMAND_BYTES if size > MAX_COMMAND_BYTES else 0,
        ignore=frozenset({"action"}),
    )
    cmd: c.Command = (
        c.HaltCommand(reason=body.reason) if stop == "halt" else c.PauseCommand(reason=body.reason)
    )
    return Decoded(got.parsed, cmd, None, warnings)


def _parses(raw: bytes) -> bool:
    return _loads(raw) is not None or raw.strip() == b"null"


def _action(cmd: c.Command) -> str:
    """The command's action: the tag msgspec tells it apart by (always a string here)."""
    return cast(str, type(cmd).__struct_config__.tag)


def _archive_path(archive_dir: Path, action: str) -> Path:
    stamp = wall_utc().strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
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


def _apply(ops: Ops, actor: c.Actor, cmd: c.Command, warnings: list[str]) -> dict[str, Any]:
    try:
        res = ops.apply(actor, cmd, warnings)
    except OpError as e:
        return {"ok": False, "status": e.status, "error": e.message}
    except Exception as e:  # a bug must not stop the door: archive it as a server error
        log.exception("control.json: %s failed", _action(cmd))
        return {"ok": False, "status": 500, "error": f"{type(e).__name__}: {e}"}
    out: dict[str, Any] = {"ok": True, "status": 200, "result": msgspec.to_builtins(res)}
    if getattr(res, "warnings", None):
        # A halt or pause carried out despite what was wrong with it: said where one looks first.
        out["warnings"] = list(res.warnings)  # type: ignore[attr-defined]
    return out


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
        raw, size = _read_regular(path)
    except FileNotFoundError:
        return None
    except (OpError, OSError) as e:
        return _refuse_unreadable(path, archive_dir, e)
    if not judge_unparsable and (size > MAX_COMMAND_BYTES or not _parses(raw)):
        return None
    cmd = _command(raw, size).cmd
    if cmd is not None and not _redis_up(ops):
        raise Unavailable(f"cannot reach Redis at {ops.s.redis_url_shown}")
    claimed = _claim(path, archive_dir)
    if claimed is None:
        return None
    # From here on, the claimed file is the command (a new control.json may already exist).
    try:
        raw, size = _read_regular(claimed)
    except (OpError, OSError) as e:
        return _refuse_claimed(claimed, archive_dir, e)
    got = _command(raw, size)
    parsed, cmd, err = got.parsed, got.cmd, got.err
    st = claimed.stat()
    who = _owner(st.st_uid)
    if cmd is not None and st.st_uid not in (os.getuid(), 0):
        # The door is for the operator who runs Baton: a file another local user could
        # write (a shared var/) commands nothing.
        cmd, err = None, Forbidden(f"control.json belongs to {who}, not to the user the api runs as")
    if cmd is not None:
        action = _action(cmd)
        result = _apply(ops, c.Actor(source="file", who=who), cmd, got.warnings)
    else:
        assert err is not None
        named = parsed.get("action") if isinstance(parsed, dict) else None
        action = named if isinstance(named, str) and named in ACTIONS else "invalid"
        result = {"ok": False, "status": err.status, "error": err.message}
    dest = _archive(archive_dir, raw, parsed, action, result)
    claimed.unlink()
    detail = "ok" if result["ok"] else result["error"]
    log.info("control.json from %s: %s -> %s %s (%s)", who, action, result["status"], detail, dest.name)
    return dest


MAX_COMMAND_BYTES = 64 * 1024


def _read_regular(path: Path) -> tuple[bytes, int]:
    """The file's first MAX_COMMAND_BYTES and its size, if it is a regular file: never
    follow a symlink (to /dev/zero, say), never block on a FIFO. A bigger file is refused
    unless it is a halt or pause (_command)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Forbidden("control.json is not a regular file (a FIFO or device commands nothing)")
        raw = os.read(fd, MAX_COMMAND_BYTES + 1)
        return raw[:MAX_COMMAND_BYTES], max(st.st_size, len(raw))
    finally:
        os.close(fd)


def _claim(path: Path, archive_dir: Path) -> Path | None:
    """Move the command aside to be applied (atomically, so that a new control.json written
    meanwhile is never mistaken for it); None when it is already gone."""
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    claimed = archive_dir / f"{APPLYING}{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def _refuse_unreadable(path: Path, archive_dir: Path, e: OpError | OSError) -> Path | None:
    claimed = _claim(path, archive_dir)
    if claimed is None:
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
        self._redis = Outage("control.json waits: Redis", log)

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
