"""The settle program settles without the signing key: its venue reads market resolutions and is
built without credentials, so it starts in live mode with no key anywhere, and nothing on its
path reads one. (Its process environment holds no key: tests/e2e/test_program_isolation.py.)"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from baton import settings as settings_mod
from baton.errors import CredentialsError
from baton.settings import load
from kernel import settlement
from state.structs import POSITION
from venues import polymarket
from venues.polymarket import resolution_reader, venue_from_settings
from worker import settle as settle_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _live(url: str, tmp_path: Path) -> settings_mod.Settings:
    return load(
        {
            "BATON_MODE": "live",
            "BATON_HOME": str(tmp_path),
            "BATON_CLOB_URL": url,
            "BATON_GAMMA_URL": url,
            "BATON_CREDENTIALS_FILE": str(tmp_path / "no-such-file"),
        }
    )


def _no_credentials(*args, **kwargs):
    raise AssertionError("the settle program's path read credentials")


async def test_settle_settles_live_with_no_key_anywhere(rig, tmp_path: Path, monkeypatch):
    s = _live(rig.venue.clob_url, tmp_path)
    with pytest.raises(CredentialsError):
        venue_from_settings(s, env={})  # what the settle program used to build: refused
    monkeypatch.setattr(polymarket, "credentials", _no_credentials)
    monkeypatch.setattr(settings_mod, "credentials", _no_credentials)
    reader = resolution_reader(s)
    assert reader._client.signer is None and reader._client.creds is None
    # It reads, it cannot sign.
    with pytest.raises(Exception):  # noqa: B017 - py-clob-client's own "L1 auth unavailable"
        reader.sign_buy("1", 0.5, 10)

    # A real settlement through it, against the sim's CLOB.
    rig_settle, rig.settle = rig.settle, lambda: 0
    try:
        for _ in range(120):
            await rig.run_ticks(1)
            now_s = rig.clock.now_ms() // 1000
            closed = [p for p in await rig.store.read_positions(open_only=True) if p.window_end_s <= now_s]
            if closed:
                break
    finally:
        rig.settle = rig_settle
    assert closed
    settle_program.configure(reader, rig.clock.now_ms)
    settle_program.settle_worker(settlement.settle_queue(rig.sync, "baton:"), "baton:").work(burst=True)
    settled = {p.id for p in map(POSITION.decode, rig.sync.hvals("baton:positions")) if p.status == "settled"}
    assert {p.id for p in closed} <= settled
    reader.close()


def test_the_settle_program_names_no_credential_source():
    # Its code builds the keyless reader, and mentions neither the key nor the venue with one.
    tree = ast.parse(inspect.getsource(settle_program))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "resolution_reader" in names
    assert not names & {"credentials", "venue_from_settings", "Credentials", "SIM_PRIVATE_KEY"}
