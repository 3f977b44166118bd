"""A test-only fault: the worker SIGKILLs itself between an exit's commit and its post.

End-to-end tests (tests/e2e/test_strategies.py) prove that an exit leg is exactly-once
through a crash at the one moment a timed external kill cannot hit reliably: the intent is
committed in Redis, its order signed, and nothing has reached the venue. Set
BATON_TEST_CRASH_BEFORE_SELL to a file path in a test stack's environment (never in a real
one); when that file exists, the next SELL the worker is about to post removes it (one
thread wins: the crash happens once, and the restarted worker, with the same environment,
posts normally) and the process kills itself with SIGKILL before the order is sent. The
order id it was about to post is written to `<path>.crashed` first, for the test to check
that it never reaches the venue. Unset (always, outside tests), nothing is wrapped.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

ENV = "BATON_TEST_CRASH_BEFORE_SELL"

log = logging.getLogger("baton.worker")


def install(venue: Any, env: Mapping[str, str]) -> None:
    """Wrap `venue.post` when the test variable is set; otherwise leave the venue as it is."""
    path = env.get(ENV, "")
    if not path:
        return
    if not os.path.isabs(path):
        # A settings-like refusal would stop the worker; a test variable that is wrong only
        # leaves the fault out, loudly.
        log.error("%s=%r is not an absolute path: the test fault is not installed", ENV, path)
        return
    log.warning("%s is set: this worker kills itself before its next SELL post (tests only)", ENV)
    post = venue.post

    def post_or_crash(signed: Any, *args: Any, **kw: Any) -> Any:
        if getattr(signed, "side", "BUY") == "SELL":
            try:
                os.unlink(path)  # armed: this thread takes the one crash
            except FileNotFoundError:
                return post(signed, *args, **kw)
            with open(f"{path}.crashed", "w") as f:
                f.write(signed.order_id)
                f.flush()
                os.fsync(f.fileno())
            log.warning("test fault: SIGKILL before posting SELL %s", signed.order_id)
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return post(signed, *args, **kw)

    setattr(venue, "post", post_or_crash)  # noqa: B010 (an instance attribute on purpose)
