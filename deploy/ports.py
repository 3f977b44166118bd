"""Free TCP ports on the loopback, for the stacks that tests and benchmarks start beside each
other: each asks the kernel for a port nobody holds instead of assuming a fixed one."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago (closed again: the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
