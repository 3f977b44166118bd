"""Live mode: real venue URLs, credentials only from the environment or an owner-only file,
a refusal that says what is missing, discovery of a recorded Gamma event, and dry runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from baton import settings as settings_mod
from baton.errors import CredentialsError, SettingsError
from baton.settings import SIM_PRIVATE_KEY, credentials, load
from deploy.supervisord import supervisor_env
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer
from venues.gamma import parse_gamma_event
from venues.http import classify
from venues.polymarket import ClobVenue

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "gamma_event_btc_updown_15m.json"
# A throwaway key that is not the sim's (never used anywhere real).
KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
FUNDER = "0x" + "ab" * 20


def live(tmp_path: Path, **env: str) -> settings_mod.Settings:
    return load({"BATON_MODE": "live", "BATON_CREDENTIALS_FILE": str(tmp_path / "credentials"), **env})


def test_live_mode_points_every_url_at_the_real_venues_and_keeps_the_sim_off(tmp_path):
    s = live(tmp_path)
    assert s.live and s.binance_ws_url.startswith("wss://stream.binance.com")
    assert s.binance_rest_url == "https://api.binance.com"
    assert s.clob_url == "https://clob.polymarket.com"
    assert s.gamma_url == "https://gamma-api.polymarket.com"
    assert supervisor_env(s)["BATON_SIM_AUTOSTART"] == "false"
    assert supervisor_env(load({}))["BATON_SIM_AUTOSTART"] == "true"
    with pytest.raises(SettingsError, match="BATON_MODE"):
        load({"BATON_MODE": "yolo"})


def test_live_mode_without_credentials_names_what_is_missing(tmp_path):
    with pytest.raises(CredentialsError) as info:
        credentials(live(tmp_path), {})
    msg = str(info.value)
    assert "BATON_PRIVATE_KEY" in msg and str(tmp_path / "credentials") in msg
    # a proxy wallet needs its funder address
    with pytest.raises(CredentialsError, match="BATON_FUNDER"):
        credentials(live(tmp_path, BATON_SIGNATURE_TYPE="1"), {"BATON_PRIVATE_KEY": KEY})
    # the sim's public key is refused live; a malformed key is named, not shown
    with pytest.raises(CredentialsError, match="of your own"):
        credentials(live(tmp_path), {"BATON_PRIVATE_KEY": SIM_PRIVATE_KEY})
    with pytest.raises(CredentialsError) as info:
        credentials(live(tmp_path), {"BATON_PRIVATE_KEY": "0xnothex" + "1" * 57})
    assert "well-formed private key" in str(info.value) and "nothex" not in str(info.value)


def test_credentials_come_from_the_environment_or_an_owner_only_file(tmp_path):
    c = credentials(
        live(tmp_path, BATON_SIGNATURE_TYPE="2"), {"BATON_PRIVATE_KEY": KEY, "BATON_FUNDER": FUNDER}
    )
    assert (c.private_key, c.funder, c.signature_type, c.source) == (KEY, FUNDER, 2, "environment")
    f = tmp_path / "credentials"
    f.write_text(f"# baton live credentials\nprivate_key={KEY}\nfunder={FUNDER}\nsignature_type=1\n")
    f.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        credentials(live(tmp_path), {})
    f.chmod(0o600)
    c = credentials(live(tmp_path), {})
    assert (c.private_key, c.funder, c.signature_type, c.source) == (KEY, FUNDER, 1, str(f))
    # the key is in no repr: not the credentials', not the settings', not the venue's
    assert KEY[2:] not in repr(c) and KEY[2:] not in repr(live(tmp_path))
    v = ClobVenue(
        "http://127.0.0.1:9", "http://127.0.0.1:9", c.private_key, 137, funder=c.funder, signature_type=1
    )
    try:
        assert KEY[2:] not in repr(v)
    finally:
        v.close()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | env
    return subprocess.run(args, env=full, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_baton_run_in_live_mode_refuses_to_start_without_credentials(tmp_path):
    env = {
        "BATON_MODE": "live",
        "BATON_HOME": str(tmp_path),
        "BATON_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    out = _run([sys.executable, "-m", "baton.cli", "run"], env)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "live mode needs" in text and "BATON_PRIVATE_KEY" in text and "Nothing was started" in text
    assert not (tmp_path / "var" / "run" / "supervisord.pid").exists()
    # the worker refuses on its own too (exit 4: supervisor does not restart it)
    out = _run([sys.executable, "-m", "worker", "--color", "blue"], env)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "live mode needs" in out.stdout + out.stderr


def test_discovery_parses_a_recorded_gamma_event():
    events = json.loads(FIXTURE.read_text())
    slug = "btc-updown-15m-1795000500"
    m = parse_gamma_event(events, slug)
    tokens = json.loads(events[0]["markets"][0]["clobTokenIds"])
    assert m is not None and m.slug == slug
    assert m.condition_id == events[0]["markets"][0]["conditionId"]
    assert (m.up_token, m.down_token) == (tokens[0], tokens[1])
    # outcomes in the other order map by name, not by position
    flipped = json.loads(FIXTURE.read_text())
    flipped[0]["markets"][0]["outcomes"] = '["Down", "Up"]'
    m2 = parse_gamma_event(flipped, slug)
    assert m2 is not None and (m2.up_token, m2.down_token) == (tokens[1], tokens[0])
    assert parse_gamma_event([], slug) is None
    broken = json.loads(FIXTURE.read_text())
    broken[0]["markets"][0]["clobTokenIds"] = '["only-one"]'
    with pytest.raises(ValueError, match="outcomes"):
        parse_gamma_event(broken, slug)


def test_venue_errors_are_classified_retryable_or_final():
    assert classify(None, "ConnectError") == ("transport", True)
    assert classify(503, "upstream") == ("server", True)
    assert classify(429, "Too Many Requests") == ("throttled", True)
    assert classify(400, "not enough balance / allowance") == ("insufficient_balance", False)
    assert classify(400, "order_version_mismatch: expected version 2") == ("version_mismatch", False)
    later = "invalid order version, please use the latest clob-client"
    assert classify(400, later) == ("version_mismatch", False)
    assert classify(400, "invalid price (0.555)") == ("rejected", False)
    assert classify(401, "Unauthorized/Invalid api key") == ("auth", True)


def test_dry_run_signs_but_never_posts():
    clock = Clock()
    sim = ClobSim(PriceModel(3), seed=3, chain_id=137, clock_ms=clock)
    with ThreadServer(create_app(sim)) as url:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, 137, dry_run=True)
        try:
            m = venue.discover(f"btc-updown-5m-{clock.ms // 1000 // 300 * 300}")
            assert m is not None
            signed = venue.sign_buy(m.up_token, 0.5, 10)
            res = venue.post(signed)
            assert (res.status, res.order_id, res.size_matched) == ("dry_run", signed.order_id, 0.0)
            assert venue.order(signed.order_id) is None
            assert httpx.get(f"{url}/data/orders", timeout=5).json()["data"] == []
        finally:
            venue.close()
