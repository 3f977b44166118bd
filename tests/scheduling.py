"""How `make test` spreads the suite over its pytest-xdist workers: one worker runs the fast
suite (all that is not under tests/e2e/, a file at a time) from the start, while the others take
the end-to-end modules one at a time, the longest first; a worker whose kind of work has run out
takes the other kind.

Why: a worker asks for more work only once it has at most two tests left, and the end-to-end
tests came first; so the fast suite waited until the stacks were nearly done, then ran on CPUs
the stacks had mostly left idle for minutes (a trading stack uses ~6 % of a core). Now the two
overlap. The `xdist_group` marks that were to spread the stacks did nothing: pytest 9 no longer
reads the `item._nodeid` that xdist 3.8 writes the group into, so the units are named here,
from each test's node id, by the scheduler that `pytest_xdist_make_scheduler` hands xdist
(tests/conftest.py) for `--dist loadgroup`."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

E2E_DIR = "tests/e2e/"

# Modules whose tests share nothing (a stack each): one unit per test, run side by side. Any
# other module is one unit, so that a module-scoped stack is started once.
SPLIT = frozenset({"test_adopt.py", "test_redis_access.py"})

# Seconds each end-to-end test took (setup, call and teardown, `pytest --durations=0` on the
# 2-core machine, busy; a module's longest test), only to order them, the longest first. One
# not listed counts as DEFAULT_S: a new one starts early rather than last, where a long one
# would hold the run up.
E2E_SECONDS = {
    "test_garbage.py": 112,
    "test_bad_halts.py": 97,
    "test_adopt.py": 80,
    "test_program_isolation.py": 74,  # its five tests, one stack
    "test_feed_settle_hosts.py": 72,
    "test_garbage_bookings.py": 70,
    "test_slots_live.py": 69,
    "test_lease_heartbeat.py": 55,
    "test_lease_deadline.py": 54,  # alone, serial
    "test_hot_reload.py": 53,
    "test_control.py": 53,
    "test_deploys.py": 52,
    "test_cluster.py": 50,
    "test_redis_access.py": 47,
    "test_strategies.py": 47,
    "test_cluster_feeds.py": 42,
    "test_paper_trading.py": 40,
    "test_cluster_deploy.py": 33,
    "test_status_system.py": 32,
    "test_feed_settle_failover.py": 22,
    "test_api_doors.py": 18,
    "test_sentinel_failover.py": 16,
}
DEFAULT_S = 90


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the test itself in a SPLIT module."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path.startswith(E2E_DIR) and PurePosixPath(path).name in SPLIT else path


def is_fast(unit: str) -> bool:
    return not unit.startswith(E2E_DIR)


def expected_s(nodeid: str) -> float:
    path = nodeid.split("::", 1)[0]
    if not path.startswith(E2E_DIR):
        return float("inf")  # the fast files first, in their order
    return E2E_SECONDS.get(PurePosixPath(path).name, DEFAULT_S)


def arrange(items: list[pytest.Item]) -> None:
    """The order of the units in xdist's queue (it keeps the collection's order with
    `--no-loadscope-reorder`): the fast files as they are, then the end-to-end units, longest
    first. Stable, so the same on every worker, as xdist requires."""
    items.sort(key=lambda item: -expected_s(item.nodeid))


class SuiteScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling, with the units above as its scopes, and a choice of unit
    by worker: the first worker served takes the fast files, the others the end-to-end units,
    each in the queue's order, until its kind runs out."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.fast_node: Any = None

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _assign_work_unit(self, node: Any) -> None:
        if self.fast_node is None:
            self.fast_node = node
        wanted = node is self.fast_node
        unit = next((u for u in self.workqueue if is_fast(u) == wanted), None)
        if unit is not None:
            self.workqueue.move_to_end(unit, last=False)  # the base class takes the first unit
        super()._assign_work_unit(node)
