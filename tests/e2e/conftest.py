"""Every end-to-end test: Redis refused no program of its stacks anything (ACL LOG, read as each
stack stopped), so each did its work as its own Redis user (state/acl.py). A test that provokes
refusals on purpose (tests/e2e/test_redis_access.py) resets the log once it has read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.sandbox import Stack


@pytest.fixture(autouse=True)
def redis_refused_no_program() -> Iterator[None]:
    before = len(Stack.made)
    yield
    for st in Stack.made[before:]:
        refused = [d for d in st.denials_at_stop or [] if d.get("reason") != "auth"]
        assert refused == [], f"Redis refused a program of the stack in {st.home}: {refused}"
