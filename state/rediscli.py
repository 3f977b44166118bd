"""`baton redis-cli`: the command line that runs redis-cli against this stack's Redis, as this
program's Redis user (BATON_REDIS_USER, `cli` by default; `admin` for what only it may do).

The password reaches redis-cli in its environment (REDISCLI_AUTH), never on its command
line: a command line is world-readable (`ps`, /proc/<pid>/cmdline), a process's environment
only by its own user (/proc/<pid>/environ is 0400) and root, who can read the password file
anyway. `--askpass` would read it from stdin, which `-x` and piped commands need for
themselves. Every other redis-cli flag passes through; those that choose the server or the
user are refused, since this command chooses them. With Sentinels (BATON_REDIS_SENTINELS) the
server is the primary they name now. `--sentinel` (first) talks to a Sentinel of
BATON_REDIS_SENTINELS instead, this host's own or else the first that answers:
`BATON_REDIS_USER=admin baton redis-cli --sentinel SENTINEL FAILOVER baton` moves the primary
(docs/ha.md).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError

from baton.errors import SettingsError, StackError
from baton.secretfiles import read_secret
from baton.settings import Settings
from state.acl import password_file
from state.connection import primary_address, sentinel_addresses

# The server and the user are this command's to choose; -u could carry a password on the
# command line.
CHOSEN_HERE = frozenset({"-h", "-p", "-s", "-u", "-a", "--user", "--pass", "--askpass", "-n"})
# redis-cli's options that take a value (redis-cli --help), so that a value is not read as
# the command that ends the options.
VALUE_FLAGS = frozenset(
    {
        *("-h", "-p", "-s", "-a", "-u", "-r", "-i", "-n", "-d", "-D", "-t", "--user", "--pass"),
        *("--sni", "--cacert", "--cacertdir", "--cert", "--key", "--tls-ciphers", "--tls-ciphersuites"),
        *("--show-pushes", "--pipe-timeout", "--lru-test", "--rdb", "--functions-rdb", "--eval"),
        *("--memkeys-samples", "--pattern", "--quoted-pattern", "--count", "--intrinsic-latency"),
        *("--cluster", "--cluster-replicas", "--cluster-from", "--cluster-to", "--cluster-slots"),
    }
)


def _chosen_flags(args: Sequence[str]) -> list[str]:
    """The flags among the leading options of `args` that this command sets itself."""
    found = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in CHOSEN_HERE:
            found.append(args[i])
        i += 2 if args[i] in VALUE_FLAGS else 1
    return found


def _server_args(s: Settings) -> list[str]:
    if s.redis_sentinels:
        # The primary the Sentinels name now (asked as this user, like every client).
        try:
            host, port = primary_address(s)
        except RedisConnectionError as e:
            raise StackError(f"no primary found through the Sentinels {s.redis_url_shown}: {e}") from None
        return ["-h", host, "-p", str(port), "-n", "0"]
    parts = urlsplit(s.redis_url)
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        db = query.get("db", ["0"])[0]
        return ["-s", unquote(parts.path), "-n", db]
    db = (parts.path or "/0").lstrip("/") or query.get("db", ["0"])[0]
    out = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379), "-n", db]
    return (["--tls"] if parts.scheme == "rediss" else []) + out


def _sentinel_args(
    s: Settings, reachable: Callable[[str, int], bool], local: Callable[[str, int], bool]
) -> list[str]:
    """This host's own Sentinel of BATON_REDIS_SENTINELS, else the first that answers, for
    the SENTINEL commands an operator runs (`--sentinel`)."""
    if not s.redis_sentinels:
        raise SettingsError("--sentinel: BATON_REDIS_SENTINELS names no Sentinel")
    addrs = sentinel_addresses(s)
    ordered = [a for a in addrs if local(*a)] + [a for a in addrs if not local(*a)]
    found = [a for a in ordered if reachable(*a)]
    host, port = found[0] if found else ordered[0]
    return ["-h", host, "-p", str(port)]


def _local(host: str, port: int) -> bool:
    """`host` is an address of this machine (or network namespace): the address a socket
    towards it would leave from (a UDP connect sends nothing)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port))
            return bool(sock.getsockname()[0] == host)
    except OSError:
        return False


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def command(
    s: Settings,
    args: Sequence[str],
    env: Mapping[str, str],
    reachable: Callable[[str, int], bool] = _reachable,
    local: Callable[[str, int], bool] = _local,
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of redis-cli for `args`; raises StackError or SettingsError.
    `--sentinel` first: a Sentinel instead of the Redis (same user, same password)."""
    sentinel = args[:1] == ["--sentinel"]
    args = args[1:] if sentinel else args
    chosen = _chosen_flags(args)
    if chosen:
        raise SettingsError(
            f"baton redis-cli chooses the server and the user itself; leave out {' '.join(chosen)} "
            "(another user: BATON_REDIS_USER=admin baton redis-cli ...)"
        )
    exe = shutil.which("redis-cli")
    if not exe:
        raise StackError("redis-cli not found: install the Debian/Ubuntu package 'redis-tools'")
    out_env = {k: v for k, v in env.items() if k != "REDISCLI_AUTH"}
    argv = [exe, *(_sentinel_args(s, reachable, local) if sentinel else _server_args(s))]
    path = password_file(Path(s.home), s.redis_user)
    if path.exists():
        argv += ["--user", s.redis_user]
        out_env["REDISCLI_AUTH"] = read_secret(path)
    return [*argv, *args], out_env


def exec_redis_cli(s: Settings, args: Sequence[str]) -> None:
    """Replace this process by redis-cli (its exit code is the command's)."""
    argv, env = command(s, args, os.environ)
    os.execve(argv[0], argv, env)
