"""Files written whole: a reader sees the old file or the new one, never a part (status.json,
the control.json archive)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, obj: Any, mode: int = 0o600) -> None:
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
