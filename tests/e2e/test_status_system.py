"""`baton status` on a real stack reports the stack's settings, not the caller's shell's: a
stack ticking every second, asked from a shell that sets no BATON_TICK_MS, says 1000 ms (and
that the shell would say 5000), lists the API and dashboard URLs, and shows no secret."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from api import apitoken
from baton import settings as settings_mod
from deploy.sandbox import BATON, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

STACK = {"BATON_TICK_MS": "1000", "BATON_TIMEFRAMES": "15s", "BATON_ASSETS": "btc,eth"}
# What a shell needs to find the stack (its home and ports), and nothing of its settings.
WHERE = ("BATON_HOME", "BATON_REDIS_PORT", "BATON_SIM_BINANCE_PORT", "BATON_SIM_CLOB_PORT")


def test_status_from_another_shell_reports_the_stacks_settings_and_urls_and_no_secret():
    st = Stack(**STACK)
    s = settings_mod.load(st.env)
    other = {k: v for k, v in st.env.items() if not k.startswith("BATON_") or k in WHERE}

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [BATON, "status", *args], env=other, capture_output=True, text=True, timeout=30, check=False
        )
        assert out.returncode == 0, out.stderr
        return out

    try:
        st.start()

        def published() -> dict | None:
            x = json.loads(status("--json").stdout)
            progs = x["system"]["programs"]
            return x if {"worker-blue", "feed", "api"} <= set(progs) else None

        got = wait_for(published, 60, "the worker, the feed and the api to publish their settings")
        assert got["ticks"]["tick_ms"] == 1000
        assert got["system"]["settings"]["timeframes"] == ["15s"]
        assert got["system"]["settings"]["assets"] == ["btc", "eth"]
        assert got["system"]["published_by"]["tick_ms"] == "worker-blue"
        differs = got["system"]["differs_from_shell"]
        assert differs["tick_ms"] == {"system": 1000, "shell": 5000}
        assert differs["api_port"] == {"system": s.api_port, "shell": 7390}
        assert sorted(x["id"] for x in got["slots"] if x["configured"]) == ["btc-15s", "eth-15s"]

        # The URLs are the running api's (this shell would guess port 7390), and they answer.
        api = f"http://127.0.0.1:{s.api_port}"
        assert (got["endpoints"]["api"], got["endpoints"]["dashboard"]) == (api, f"{api}/")
        assert httpx.get(f"{api}/health", timeout=10).json()["ok"] is True
        assert httpx.get(got["endpoints"]["dashboard"], timeout=10).status_code == 200

        text = status().stdout
        assert "differs    tick_ms: the stack has 1000, this shell 5000" in text
        assert f"dashboard  {api}/" in text

        # No secret in either form: the API token, nor any file under var/secrets (the Redis
        # users' passwords among them).
        secrets = [apitoken.load(s, env=st.env, create=False).reveal()]
        secrets += [p.read_text().strip() for p in Path(s.var_dir, "secrets").rglob("*") if p.is_file()]
        for out in (json.dumps(got), text):
            assert not [x for x in secrets if x and x in out]
        # Each program published as its own Redis user, and the CLI read as its own.
        assert st.acl_denials() == []
    finally:
        st.stop()
