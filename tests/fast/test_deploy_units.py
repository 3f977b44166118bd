"""Pieces of the deploy path that need no stack: checking strategy files before they are
copied into a running release, and a malformed handover request."""

from __future__ import annotations

import pytest

from baton.errors import ReloadError
from deploy.reload import sync_strategies
from tests.factories import NOW

GOOD = "def evaluate(inp):\n    return None\n"


def _tree(root, files: dict[str, str]):
    d = root / "worker" / "strategies"
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return root


def test_changed_strategies_are_checked_before_any_is_copied(tmp_path):
    release = _tree(tmp_path / "rel", {"snipe.py": GOOD, "other.py": GOOD})
    src = _tree(tmp_path / "src", {"snipe.py": GOOD + "# v2\n", "other.py": GOOD})
    assert sync_strategies(release, src) == ["snipe"]
    assert (release / "worker" / "strategies" / "snipe.py").read_text().endswith("# v2\n")
    assert sync_strategies(release, src) == []  # nothing changed since

    (src / "worker" / "strategies" / "snipe.py").write_text(GOOD + "# v3\n")
    (src / "worker" / "strategies" / "other.py").write_text("def evaluate(inp)\n    return None\n")
    with pytest.raises(ReloadError, match=r"other.py refused here, nothing copied: SyntaxError"):
        sync_strategies(release, src)
    # Not even the good one was copied: a release never holds half of a change.
    assert (release / "worker" / "strategies" / "snipe.py").read_text().endswith("# v2\n")

    (src / "worker" / "strategies" / "other.py").write_text("def evaluate(inp):\n    return {'buy': 1}\n")
    with pytest.raises(ReloadError, match=r"other\.py refused"):
        sync_strategies(release, src)


async def test_a_handover_request_without_its_target_colour_is_refused_before_any_write(store):
    await store.acquire_lease("blue:1", "blue", "r1", NOW, 1000)
    await store.heartbeat("green", {"holder": "green:2", "state": "ready"}, ttl_ms=60_000)
    await store.request_handover("h1", {"to_holder": "green:2", "to_release": "r2"})
    assert await store.transfer_lease("blue:1", 1, "h1", "green:2", "green", 5, NOW, 1000) == (
        0,
        "BAD_REQUEST",
    )
    lease = await store.read_lease()
    assert lease["holder"] == "blue:1" and lease["epoch"] == "1"
    assert await store.r.get(store.k.lease_epoch()) == "1"
