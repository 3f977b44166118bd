"""The units and order `make test` hands pytest-xdist (tests/scheduling.py): the fast suite one
unit drawn first, each end-to-end module one unit (a test each where the module shares
nothing), the longest first, and a module nobody timed early rather than last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import scheduling


@dataclass
class Item:
    nodeid: str


def test_everything_outside_tests_e2e_is_the_one_fast_unit():
    for nodeid in (
        "tests/fast/test_keys.py::test_x",
        "tests/chaos/test_checker.py::test_y[a-b]",
        "tests/browser/test_dashboard.py::test_z",
    ):
        assert scheduling.unit_of(nodeid) == scheduling.FAST_UNIT


def test_an_end_to_end_module_is_one_unit_unless_its_tests_share_nothing():
    iso = "tests/e2e/test_program_isolation.py"
    assert scheduling.unit_of(f"{iso}::test_a") == scheduling.unit_of(f"{iso}::test_b[api]") == iso
    adopt = "tests/e2e/test_adopt.py"
    assert scheduling.unit_of(f"{adopt}::test_a") != scheduling.unit_of(f"{adopt}::test_b")


def test_the_fast_unit_comes_first_then_the_longest_stacks_and_the_order_is_stable():
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


def test_every_timed_module_exists():
    e2e = Path(__file__).resolve().parents[1] / "e2e"
    assert {p.name for p in e2e.glob("test_*.py")} >= set(scheduling.E2E_SECONDS) | scheduling.SPLIT
