"""What the Polymarket clients (CLOB and Gamma) share over HTTP: the hook that takes each
request's cost from the shared budget before it is sent, and the kinds of failure, with
whether the same call may succeed later.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from baton.errors import VenueError

# Statuses worth retrying: the venue may not have seen the request, or asks us to wait.
_RETRYABLE = frozenset({408, 425, 429})
# The venue's texts for the two final errors a trader must recognise at a glance.
INSUFFICIENT_BALANCE = "not enough balance"
VERSION_MISMATCH = "order_version_mismatch"
# The same refusal as one later report words it (py-clob-client-v2#92, docs/sim.md).
VERSION_MISMATCH_LATER = "invalid order version"

# Takes one request's cost from the shared budget (venues/budgets.py: Redis token
# buckets) before it is sent: (method, path) -> None, raising when the budget refuses.
Throttle = Callable[[str, str], None]


def classify(status: int | None, message: str) -> tuple[str, bool]:
    """(kind, retryable) of a venue error from its HTTP status and message."""
    low = message.lower()
    if VERSION_MISMATCH in low or VERSION_MISMATCH_LATER in low:
        # The signed order's version is wrong: reposting it cannot succeed. The client
        # re-reads the version, so the next order is signed right.
        return "version_mismatch", False
    if INSUFFICIENT_BALANCE in low:
        return "insufficient_balance", False
    if status is None:
        return "transport", True
    if status >= 500:
        return "server", True
    if status in _RETRYABLE:
        return "throttled", True
    if status in (401, 403):
        return "auth", status == 401  # 401: a stale API key, derived again on the next call
    return "rejected", False


def take(throttle: Throttle | None, method: str, url: str) -> None:
    """Take the cost of one request from the budget; raises VenueError (kind rate_limited,
    retryable) when it is refused, and then the request must not be sent."""
    if throttle is None:
        return
    path = httpx.URL(url).path
    try:
        throttle(method, path)
    except Exception as e:  # the budget's refusal (or Redis unreachable): never sent
        raise VenueError(f"{method} {path}: not sent: {e}", retryable=True, kind="rate_limited") from e
