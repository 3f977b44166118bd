"""The units and order `make test` hands pytest-xdist (tests/scheduling.py): a fast file is a
unit, each end-to-end module one (a test each where the module shares nothing), the longest
first, a module nobody timed early rather than last; the first worker takes the fast files, the
others the stacks, and each takes the other kind once its own has run out."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import scheduling


@dataclass
class Item:
    nodeid: str


def test_a_fast_file_is_a_unit_and_so_is_an_end_to_end_module_unless_it_shares_nothing():
    assert scheduling.unit_of("tests/fast/test_keys.py::test_x") == "tests/fast/test_keys.py"
    assert scheduling.is_fast(scheduling.unit_of("tests/chaos/test_checker.py::test_y[a-b]"))
    iso = "tests/e2e/test_program_isolation.py"
    assert scheduling.unit_of(f"{iso}::test_a") == scheduling.unit_of(f"{iso}::test_b[api]") == iso
    assert not scheduling.is_fast(iso)
    adopt = "tests/e2e/test_adopt.py"
    assert scheduling.unit_of(f"{adopt}::test_a") != scheduling.unit_of(f"{adopt}::test_b")


def test_the_fast_files_come_first_then_the_longest_stacks_and_the_order_is_stable():
    items: list[Any] = [
        Item("tests/e2e/test_api_doors.py::test_a"),
        Item("tests/fast/test_keys.py::test_1"),
        Item("tests/e2e/test_garbage.py::test_g"),
        Item("tests/e2e/test_never_timed.py::test_new"),
        Item("tests/fast/test_keys.py::test_2"),
        Item("tests/e2e/test_program_isolation.py::test_a"),
        Item("tests/e2e/test_program_isolation.py::test_b"),
    ]
    scheduling.arrange(items)
    assert [i.nodeid.split("/")[-1] for i in items] == [
        "test_keys.py::test_1",
        "test_keys.py::test_2",
        "test_garbage.py::test_g",
        "test_never_timed.py::test_new",
        "test_program_isolation.py::test_a",
        "test_program_isolation.py::test_b",
        "test_api_doors.py::test_a",
    ]


class Node:
    def __init__(self, name: str) -> None:
        self.name, self.sent = name, []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.append(indexes)


def test_the_first_worker_takes_the_fast_files_the_others_the_stacks_until_their_kind_runs_out():
    ids = [
        "tests/fast/a.py::t1",
        "tests/fast/a.py::t2",
        "tests/fast/b.py::t",
        "tests/e2e/test_garbage.py::t",
        "tests/e2e/test_slots_live.py::t",
    ]
    sched: Any = scheduling.SuiteScheduling.__new__(scheduling.SuiteScheduling)
    sched.fast_node = None
    sched.assigned_work = {}
    sched.workqueue = OrderedDict((scheduling.unit_of(i), {i: False}) for i in ids)
    sched.workqueue["tests/fast/a.py"] = {ids[0]: False, ids[1]: False}
    fast, stacks = Node("gw0"), Node("gw1")
    sched.registered_collections = {fast: ids, stacks: ids}
    sched._assign_work_unit(fast)
    sched._assign_work_unit(stacks)
    sched._assign_work_unit(stacks)
    assert (fast.sent, stacks.sent) == ([[0, 1]], [[3], [4]])
    sched._assign_work_unit(stacks)  # the stacks are done: the fast files left
    assert stacks.sent[-1] == [2] and not sched.workqueue


def test_every_timed_module_exists():
    e2e = Path(__file__).resolve().parents[1] / "e2e"
    assert {p.name for p in e2e.glob("test_*.py")} >= set(scheduling.E2E_SECONDS) | scheduling.SPLIT
