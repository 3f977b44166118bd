"""The programs' logs that supervisord writes under var/log: the last lines of one, and what
is appended to it, across supervisor's rotations (`baton logs`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def tail(path: Path, n: int, block: int = 8192) -> str:
    """The last `n` lines of a file, read backwards from its end (logs grow to 20 MB)."""
    if n == 0:
        return ""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)[-n:]
    return b"".join(lines).decode(errors="replace")


def follow(
    path: Path, out: TextIO, interval_s: float = 0.25, stop: Callable[[], bool] = lambda: False
) -> None:
    """Print what is appended to `path`, like `tail -F`: supervisor rotates logs at 20 MB (the
    file is renamed and a new one created), so a changed inode or a shorter file is reopened."""
    f = path.open("rb")
    f.seek(0, os.SEEK_END)
    try:
        while not stop():
            chunk = f.read()
            if chunk:
                out.write(chunk.decode(errors="replace"))
                out.flush()
                continue
            try:
                st = path.stat()
                rotated = st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell()
            except FileNotFoundError:
                rotated = False  # between the rename and the new file: wait for it
            if rotated:
                f.close()
                f = path.open("rb")
                continue
            time.sleep(interval_s)
    finally:
        f.close()
