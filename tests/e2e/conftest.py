"""Every end-to-end test: Redis refused no program of its stacks anything (ACL LOG, read as each
stack stopped), so each did its work as its own Redis user (state/acl.py). A test that provokes
refusals on purpose (tests/e2e/test_redis_access.py) resets the log once it has read it.

A stack's `baton stop` (4-7 s) goes on while the next test starts (Stack.wait_for_stop): a test
that looks at what a stop left calls `st.stop(wait=True)`. A `serial` test starts once every
earlier stop has finished, and the session ends only then."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.sandbox import Stack


@pytest.fixture(scope="session", autouse=True)
def stops_in_the_background() -> Iterator[None]:
    Stack.wait_for_stop = False
    yield
    Stack.await_stops()
    Stack.wait_for_stop = True


@pytest.fixture(autouse=True)
def serial_tests_start_alone(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("serial") is not None:
        Stack.await_stops()


@pytest.fixture(autouse=True)
def redis_refused_no_program() -> Iterator[None]:
    before = len(Stack.made)
    yield
    for st in Stack.made[before:]:
        refused = [d for d in st.denials_at_stop or [] if d.get("reason") != "auth"]
        assert refused == [], f"Redis refused a program of the stack in {st.home}: {refused}"
