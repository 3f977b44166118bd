"""`python -m api`, the control API's program: it creates its token, serves, stops on SIGTERM,
refuses a taken port clearly, and scrubs the token from every logger."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from api.__main__ import Scrub
from api.apitoken import ApiToken, token_id
from baton.settings import REPO_ROOT
from deploy.ports import free_port
from tests.fast.api_rig import TOKEN


# --- the program ----------------------------------------------------------------------------------
def _program_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    # No Redis listens there: the program must start (and answer /health) regardless.
    env.update(
        BATON_HOME=str(home), BATON_API_PORT=str(port), BATON_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    return env


def _wait_for_line(proc: subprocess.Popen[str], needle: str, out: list[str], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line and proc.poll() is not None:
            break
        out.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} in the output:\n{''.join(out)}")


def test_python_m_api_creates_its_token_serves_and_stops_on_sigterm(tmp_path: Path):
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=REPO_ROOT,
        env=_program_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out: list[str] = []
    try:
        _wait_for_line(proc, "listening on", out)
        token_file = tmp_path / "var" / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert json.loads(resp.read()) == {"ok": True, "redis": False}
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=15)
        out.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(out)
    assert proc.returncode == 0, text
    assert f"API token id {token_id(token)} (from {token_file})" in text and "stopping" in text
    assert token not in text


def test_python_m_api_refuses_a_taken_port_clearly(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_program_env(tmp_path, port), "BATON_API_TOKEN": TOKEN}
        res = subprocess.run(
            [sys.executable, "-m", "api"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken" in res.stdout
    assert TOKEN not in res.stdout + res.stderr


def test_the_log_scrubber_hides_the_token_from_every_logger(caplog):
    import logging

    token = ApiToken("t" * 40, "test")
    session_id = "s" * 43
    f = Scrub((token.reveal(),))
    handler = logging.StreamHandler()
    handler.addFilter(f)
    rec = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "bad header %s", ("Bearer " + "t" * 40,), None
    )
    try:
        raise ValueError(f"Cookie: baton_session={session_id}; other=1")
    except ValueError:
        import sys

        rec.exc_info = sys.exc_info()
    f.filter(rec)
    text = logging.Formatter().format(rec)
    assert "t" * 40 not in text and session_id not in text and "other=1" in text
    # The token, and the cookie in the message and in the traceback's source line.
    assert text.count("<redacted>") == 3
