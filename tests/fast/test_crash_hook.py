"""The test-only crash before a SELL's post (worker/crash_hook.py): armed by a file, it kills the
process once with SIGKILL before the order leaves, and never touches a BUY; unset, nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.venue import SignedOrder
from worker import crash_hook

pytestmark = pytest.mark.timeout(60)

# A process that installs the hook on a venue whose post() prints what it was given, then
# posts a BUY and a SELL.
CHILD = """
import sys
from kernel.venue import SignedOrder
from worker import crash_hook

class Venue:
    def post(self, signed, order_type, **kw):
        print("posted", signed.side, signed.order_id, order_type, flush=True)

v = Venue()
crash_hook.install(v, {"BATON_TEST_CRASH_BEFORE_SELL": sys.argv[1]})
for side in ("BUY", "SELL"):
    order = SignedOrder(order_id=f"0x{side.lower()}", token_id="1", price=0.5, size=2.0, order={}, side=side)
    v.post(order, "FOK")
"""


def _run(armed: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(armed)], capture_output=True, text=True, timeout=30, check=False
    )


def test_an_armed_hook_kills_the_worker_once_before_the_sell_leaves(tmp_path: Path) -> None:
    armed = tmp_path / "crash-before-sell"
    armed.write_text("")
    first = _run(armed)
    assert first.returncode == -signal.SIGKILL, first
    assert first.stdout.splitlines() == ["posted BUY 0xbuy FOK"]  # the SELL never left
    assert Path(f"{armed}.crashed").read_text() == "0xsell"
    assert not armed.exists()  # disarmed: the restarted process posts as usual
    again = _run(armed)
    assert again.returncode == 0, again
    assert again.stdout.splitlines() == ["posted BUY 0xbuy FOK", "posted SELL 0xsell FOK"]


def test_unset_or_relative_the_venue_is_left_as_it_is(tmp_path: Path) -> None:
    class Venue:
        def post(self, signed: SignedOrder, order_type: str) -> str:
            return order_type

    for env in ({}, {crash_hook.ENV: "relative/path"}):
        v = Venue()
        crash_hook.install(v, env)
        assert "post" not in vars(v)
