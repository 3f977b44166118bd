"""What each program is given: supervisord starts with a scrubbed environment, the secrets given
to `baton run` in the environment are moved into owner-only files that only the code of the
program using each reads, and the programs holding a secret cannot dump core. The running-stack
proof is tests/e2e/test_program_isolation.py."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from api import apitoken
from baton.errors import CredentialsError, StackError, TokenError
from baton.secretfiles import secrets_dir
from baton.settings import SIM_PRIVATE_KEY, credentials, load
from deploy import supervisord
from deploy.supervisord import move_secrets, scrubbed_env, supervisor_env

KEY = "0x" + "ab" * 32
TOKEN = "t0ken-" + "x" * 30


def test_supervisord_inherits_no_secret_and_nothing_of_other_tools(tmp_path: Path):
    shell = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "BATON_TICK_MS": "1000",
        "BATON_PRIVATE_KEY": KEY,
        "BATON_API_TOKEN": TOKEN,
        "AWS_SECRET_ACCESS_KEY": "other-tool",
        "SSH_AUTH_SOCK": "/tmp/agent",
        "PYTHONPATH": "/tmp/evil",
    }
    env = scrubbed_env(shell)
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "BATON_TICK_MS": "1000",
    }
    s = load({"BATON_HOME": str(tmp_path)})
    full = supervisor_env(s, shell)
    assert KEY not in full.values() and TOKEN not in full.values()
    assert "AWS_SECRET_ACCESS_KEY" not in full and "PYTHONPATH" not in full
    assert full["BATON_HOME"] == s.home


def test_secrets_are_moved_into_owner_only_files_that_the_users_read(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path)})
    assert move_secrets(s, {"BATON_PRIVATE_KEY": KEY, "BATON_API_TOKEN": TOKEN}, fresh=True) == [
        "BATON_PRIVATE_KEY",
        "BATON_API_TOKEN",
    ]
    d = secrets_dir(tmp_path)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("private-key", "api-token"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    # The worker's credentials and the api's token, from an environment without them.
    creds = credentials(s, env={})
    assert creds.private_key == KEY and creds.source == str(d / "private-key")
    token = apitoken.load(s, env={}, create=False)
    assert token.matches(TOKEN) and token.source == str(d / "api-token")
    # The environment still wins where it is set (the CLI of an operator's shell).
    assert credentials(s, env={"BATON_PRIVATE_KEY": "0x" + "cd" * 32}).private_key == "0x" + "cd" * 32
    # A later start keeps them; a fresh start given none removes them: the files say what
    # this start was given, and the defaults (the sim key, the generated token) come back.
    assert move_secrets(s, {}, fresh=False) == [] and (d / "private-key").exists()
    assert move_secrets(s, {}, fresh=True) == []
    assert not (d / "private-key").exists() and not (d / "api-token").exists()
    assert credentials(s, env={}).private_key == SIM_PRIVATE_KEY
    assert apitoken.load(s, env={}).source == str(s.token_file)


def test_live_start_checks_the_key_this_start_was_given_not_an_earlier_starts(tmp_path: Path, monkeypatch):
    # An earlier `baton run` was given a key; this one, fresh, is not, and live mode has no
    # credentials file: nothing starts (as before the key moved into a file), and the stale
    # file is gone rather than handed to a worker.
    s = load(
        {"BATON_HOME": str(tmp_path), "BATON_MODE": "live", "BATON_CREDENTIALS_FILE": str(tmp_path / "none")}
    )
    move_secrets(s, {"BATON_PRIVATE_KEY": KEY}, fresh=True)
    monkeypatch.delenv("BATON_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("BATON_API_TOKEN", raising=False)
    with pytest.raises(StackError, match=r"live mode needs the private key.*Nothing was started"):
        supervisord.start(s, log=lambda _: None)
    assert not (secrets_dir(tmp_path) / "private-key").exists()
    assert not (tmp_path / "var" / "run").exists()  # nothing was prepared either


def test_a_moved_secret_others_could_read_is_refused(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path)})
    move_secrets(s, {"BATON_PRIVATE_KEY": KEY, "BATON_API_TOKEN": TOKEN}, fresh=True)
    for name in ("private-key", "api-token"):
        (secrets_dir(tmp_path) / name).chmod(0o644)
    with pytest.raises(CredentialsError, match="others can read it") as e:
        credentials(s, env={})
    assert KEY not in str(e.value)
    with pytest.raises(TokenError, match="others can read it"):
        apitoken.load(s, env={})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_a_protected_process_has_no_core_limit_and_is_not_dumpable():
    code = (
        "from baton.coredumps import dumpable, forbid_core_dumps\n"
        "assert dumpable() is True\n"
        "print(forbid_core_dumps())\n"
        "print(dumpable())\n"
        "print([l for l in open('/proc/self/limits') if l.startswith('Max core file size')][0].strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    said, dumpable, limit = out.stdout.splitlines()
    assert said == "core dumps off (RLIMIT_CORE 0, not dumpable)"
    assert dumpable == "False"
    assert limit.split()[4:6] == ["0", "0"]
