"""Is a process alive? Shared by the launcher's stop and the worker's dead-holder check."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
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
