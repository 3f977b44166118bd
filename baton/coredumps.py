"""No core dumps from a process that holds a secret: a core file of the worker would hold the
signing key, one of the api the API token. Called first thing in those programs.

RLIMIT_CORE 0 stops the kernel writing a core file; `prctl(PR_SET_DUMPABLE, 0)` (Linux) also
stops a core handler (systemd-coredump, apport, which ignore the limit) and keeps other
processes of the same user from attaching to it or reading its memory (/proc/<pid>/mem). Both
hold for the process's life and its threads, and end at an exec. Elsewhere only the limit is
set, and the answer says so.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import resource
import sys

log = logging.getLogger("baton.coredumps")

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_core_dumps() -> str:
    """Set RLIMIT_CORE to 0 and, on Linux, mark the process not dumpable; what was done."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        return "core dumps off (RLIMIT_CORE 0; no prctl on this platform)"
    libc = _libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE, 0) failed: errno {err}")
    return "core dumps off (RLIMIT_CORE 0, not dumpable)"


def dumpable() -> bool | None:
    """Whether this process may dump core (Linux's PR_GET_DUMPABLE); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def protect_memory() -> None:
    """`forbid_core_dumps`, logged; a failure is logged as an error, and the program goes on
    (it is no reason to stop trading, and the operator sees it)."""
    try:
        log.info(forbid_core_dumps())
    except (OSError, ValueError) as e:
        log.error("could not forbid core dumps: %s", e)
