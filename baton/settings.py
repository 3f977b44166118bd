"""One settings object for every Baton program, read once from the environment.

Every value has an embedded default so that `make run` works on a fresh machine; every
port can be overridden so that two stacks run side by side (`make test` beside `make run`).
A bad value fails at start-up with the variable's name in the message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec

from baton.errors import CredentialsError, SecretFileError, SettingsError
from baton.secretfiles import check_owner_only, read_secret, secrets_dir

log = logging.getLogger("baton.settings")

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_ASSETS = ("btc", "eth", "sol", "xrp", "doge", "bnb", "hype", "link")
DEFAULT_TIMEFRAMES = ("5m", "15m")
# The candle interval the feed keeps and the strategy reads. 1s candles let a window of any
# length (down to the 15s windows the tests use) find its exact open price.
CANDLE_INTERVAL = "1s"
# A well-known throwaway key (the first Hardhat/Anvil dev account). It signs paper orders for
# the local sim only; live mode refuses to start without a key of the user's own.
SIM_PRIVATE_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

# Live mode's venues (BATON_MODE=live); each can still be overridden by its own variable.
LIVE_URLS = {
    "binance_ws": "wss://stream.binance.com:9443",
    "binance_rest": "https://api.binance.com",
    "clob": "https://clob.polymarket.com",
    "gamma": "https://gamma-api.polymarket.com",
}
DEFAULT_CREDENTIALS_FILE = Path("~/.config/baton/credentials").expanduser()
# Under var/secrets/: the secrets `baton run` found in its environment, moved out of it
# (deploy/supervisord.py) for the one program that uses each: the signing key for the worker,
# the API token for the api.
PRIVATE_KEY_FILE = "private-key"
API_TOKEN_FILE = "api-token"

# The Redis ACL users, one per program (state/acl.py holds what each may do); `admin` is the
# operator's and the launcher's. A program names its user in BATON_REDIS_USER (supervisor.conf
# sets it per program); a person at the shell is `cli`.
REDIS_USERS = ("admin", "worker", "feed", "settle", "api", "cli", "shadow")
DEFAULT_REDIS_USER = "cli"
DEFAULT_REDIS_PORT = 7379
# sun_path's size on Linux (108) less its terminating NUL.
MAX_SOCKET_PATH = 107

_TIMEFRAME_RE = re.compile(r"^(\d+)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def timeframe_seconds(tf: str) -> int:
    m = _TIMEFRAME_RE.match(tf)
    if not m or int(m.group(1)) <= 0:
        raise SettingsError(f"bad timeframe {tf!r}: expected a number and a unit s|m|h, e.g. 15s, 5m")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    home: str
    prefix: str
    redis_url: str
    redis_port: int
    embedded_redis: bool
    tick_ms: int
    lease_ms: int
    assets: tuple[str, ...]
    timeframes: tuple[str, ...]
    binance_port: int
    clob_port: int
    binance_ws_url: str
    binance_rest_url: str
    clob_url: str
    gamma_url: str
    sim_seed: int
    sim_vol_scale: float
    stake_usd: float
    max_stake_usd: float
    max_exposure_usd: float
    daily_loss_limit_usd: float
    paper_cash_usd: float
    stale_after_ms: int
    candle_retention_s: int
    release: str
    chain_id: int
    # "paper" (the local sim, the default) or "live" (the real venues, credentials needed).
    mode: str = "paper"
    # Orders are signed and their intents committed, but never posted (BATON_DRY_RUN=1).
    dry_run: bool = False
    # py-clob-client-v2's signature type: 0 EOA, 1 Polymarket proxy, 2 Gnosis safe.
    signature_type: int = 0
    credentials_file: str = ""
    # Multiplies every venue request budget (venues/budgets.py); 0 turns rate limiting off.
    rate_limit_scale: float = 1.0
    # The control plane (the `api` program). The token itself is never a setting: it comes
    # from BATON_API_TOKEN or the owner-only token file (api/apitoken.py).
    api_host: str = "127.0.0.1"
    api_port: int = 7390
    api_token_file: str = ""
    # Mutating API calls per minute per token (a halt is never refused by this limit).
    api_mutations_per_min: int = 60
    # Dashboard live streams (GET /events) open at once; one more is refused with 503. Each
    # reads a snapshot from Redis after every tick.
    dashboard_streams_max: int = 16
    # How long a halt waits for the active worker's acknowledgement before answering.
    halt_ack_timeout_ms: int = 2000
    # The lease deadline's margin: a worker posts nothing once its last successful renewal is
    # older than lease_ms - lease_margin_ms on its monotonic clock (kernel/lease.py
    # LeaseDeadline). It covers a post's time on the wire and the clocks of two hosts.
    lease_margin_ms: int = 1000
    # The lease heartbeat's cadence (kernel/lease_heartbeat.py): the holder renews this often,
    # whatever the tick length. Below lease_ms - lease_margin_ms, or the deadline would pass
    # between two renewals.
    lease_renew_ms: int = 250
    # Settled positions, final intents and ledger entries older than this leave Redis
    # (kernel/history.py); 0 keeps them forever.
    history_days: float = 7.0
    # The API's doors (api/hosts.py, api/sessions.py, docs/api.md). Host names (`name` or
    # `name:port`) the API answers to besides its bind address, localhost, 127.0.0.1 and [::1]:
    # any other Host header gets 421 (DNS rebinding).
    api_hosts: tuple[str, ...] = ()
    # A dashboard session lasts this long from its sign-in (fixed, not extended by use).
    api_session_ttl_s: int = 12 * 3600
    # Sign-in attempts a minute, per client address and for all addresses together.
    api_logins_per_min: int = 10
    api_logins_all_per_min: int = 60
    # GET /metrics: "loopback" (no token, loopback clients only), "token" (a bearer token:
    # the metrics token or the API token) or "open" (anyone who reaches the port).
    metrics_auth: str = "loopback"
    # Who this program is to Redis (BATON_REDIS_USER): its ACL user, whose password is read from
    # var/secrets/redis/<user> (state/connection.py).
    redis_user: str = DEFAULT_REDIS_USER
    # The embedded Redis listens on this unix socket (in an owner-only folder) unless TCP was
    # asked for with BATON_REDIS_PORT or BATON_REDIS_BIND; then on redis_bind:redis_port, with
    # authentication all the same. Both empty for an external Redis.
    redis_socket: str = ""
    redis_bind: str = ""
    # High availability (docs/ha.md). The Sentinels to ask for the primary, as `host:port`
    # (BATON_REDIS_SENTINELS); empty: one Redis at redis_url, no failover. With Sentinels no
    # Redis is embedded: each host's supervisor runs its own Redis and Sentinel.
    redis_sentinels: tuple[str, ...] = ()
    # The name the Sentinels monitor the primary under (BATON_REDIS_MASTER).
    redis_master: str = "baton"
    # Replicas that must acknowledge (WAIT) the lease and epoch writes and every intent before
    # its order is posted (BATON_REDIS_MIN_REPLICAS); 0: no WAIT (one Redis, nothing to wait on).
    redis_min_replicas: int = 0
    # How long one WAIT may take (BATON_REDIS_WAIT_MS); a write not acknowledged in time counts
    # as not made for what depends on it (no post, no lease).
    redis_wait_ms: int = 250
    # This host's name in holder ids, heartbeats and `baton cluster status` (BATON_HOST);
    # the machine's host name by default. A ':' is not allowed (holder ids are split on it).
    host: str = ""
    # Entries kept per slot in its decision log (keys.decision_log: every evaluation, about
    # 300 bytes each in Redis, measured), trimmed approximately (whole stream nodes).
    decision_log_len: int = 500
    # The input log (keys.input_log(): every evaluation's input and answer, one entry per
    # tick; docs/evaluate.md): Redis keeps this many seconds of it, trimmed as the worker
    # appends; the settle program copies it into var/inputs/<day>.jsonl.gz, kept this many
    # days (0: forever).
    input_log_redis_s: int = 6 * 3600
    input_log_days: float = 30.0
    # ... and at most about this many MB of it in Redis (trimmed as the worker appends, by
    # entries at their recent size): the one Redis that holds the ledger.
    input_log_redis_mb: int = 256

    @property
    def redis_exposed(self) -> bool:
        """The embedded Redis listens on an address other hosts may reach (not loopback)."""
        return bool(self.redis_bind) and not _loopback(self.redis_bind)

    @property
    def redis_warning(self) -> str:
        """What `baton run` and `baton status` warn of when redis_exposed, else ''."""
        if not self.redis_exposed:
            return ""
        return (
            f"the embedded Redis listens on {self.redis_bind}:{self.redis_port}, reachable from other "
            "hosts (each needs a user's password); unless they must reach it, set "
            "BATON_REDIS_BIND=127.0.0.1, or unset it and BATON_REDIS_PORT for the unix socket"
        )

    @property
    def redis_secrets_dir(self) -> Path:
        """Where the Redis users' passwords live, one owner-only file per user."""
        return secrets_dir(Path(self.home)) / "redis"

    @property
    def live(self) -> bool:
        return self.mode == "live"

    @property
    def var_dir(self) -> Path:
        return Path(self.home) / "var"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def redis_url_shown(self) -> str:
        """The Redis URL with any password masked: what messages, logs and status show; with
        Sentinels, `sentinel://<sentinels>/<master>` (the primary is wherever they say)."""
        if self.redis_sentinels:
            return f"sentinel://{','.join(self.redis_sentinels)}/{self.redis_master}"
        shown = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", self.redis_url)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", shown)

    @property
    def token_file(self) -> Path:
        return Path(self.api_token_file) if self.api_token_file else self.var_dir / "api-token"

    @property
    def metrics_token_file(self) -> Path:
        return secrets_dir(Path(self.home)) / "metrics-token"

    @property
    def status_file(self) -> Path:
        return self.var_dir / "status.json"

    @property
    def control_file(self) -> Path:
        return self.var_dir / "control.json"

    def slot_ids(self) -> list[str]:
        return [f"{a}-{tf}" for a in self.assets for tf in self.timeframes]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redis_url(env: Mapping[str, str], home: Path) -> tuple[str, int, str, str]:
    """(url, port, socket, bind) of the Redis this stack uses; see Settings.redis_socket."""
    port = _int(env, "BATON_REDIS_PORT", DEFAULT_REDIS_PORT, 1)
    external = env.get("BATON_REDIS_URL", "").strip()
    if external:
        if not external.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"BATON_REDIS_URL={external!r} must start with redis://, rediss:// or unix://"
            )
        parts = urlsplit(external)
        if (
            parts.username
            or parts.password
            or "password" in parse_qs(parts.query)
            or "username" in parse_qs(parts.query)
        ):
            # The URL lives in the environment, which other programs (and `ps e`) see; the
            # value is not echoed back, it may hold the password.
            raise SettingsError(
                "BATON_REDIS_URL must not carry a user or a password (the environment is no place for "
                "a secret): each program's user is BATON_REDIS_USER, and its password is read from "
                f"{secrets_dir(home) / 'redis'}/<user> (mode 600)"
            )
        return external, port, "", ""
    if env.get("BATON_REDIS_PORT", "").strip() or env.get("BATON_REDIS_BIND", "").strip():
        bind = _get(env, "BATON_REDIS_BIND", "127.0.0.1")
        try:
            host = str(ipaddress.ip_address(bind))
        except ValueError:
            if bind != "localhost":
                raise SettingsError(f"BATON_REDIS_BIND={bind!r} is not an IP address") from None
            host = "127.0.0.1"
        # A wildcard bind is reached over loopback from this host.
        connect = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        connect = f"[{connect}]" if ":" in connect else connect
        return f"redis://{connect}:{port}/0", port, "", bind
    sock = home / "var" / "run" / "redis" / "redis.sock"
    if len(str(sock).encode()) > MAX_SOCKET_PATH:
        raise SettingsError(
            f"BATON_HOME={home} is too long for the Redis unix socket {sock} (at most {MAX_SOCKET_PATH} "
            "bytes): use a shorter BATON_HOME, or TCP with BATON_REDIS_PORT"
        )
    return f"unix://{sock}?db=0", port, str(sock), ""


def _sentinels(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """`host:port` items, comma-separated; a v6 address in brackets (`[::1]:26379`)."""
    out = []
    for item in _list(env, name, ()):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}: {item!r} is not `host:port` (e.g. 10.77.0.11:26379)")
        out.append(item)
    return tuple(out)


def _host_name(env: Mapping[str, str]) -> str:
    name = _get(env, "BATON_HOST", socket.gethostname())
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        if "BATON_HOST" in env and env["BATON_HOST"].strip():
            raise SettingsError(f"BATON_HOST={name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64] or "host"
    return name


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value.strip() if value.strip() else default


def _lease_margin_ms(env: Mapping[str, str], lease_ms: int) -> int:
    """BATON_LEASE_MARGIN_MS: by default a third of the lease (clock skew between hosts and a
    post's time on the wire); it must leave some of the lease to post in."""
    margin = _int(env, "BATON_LEASE_MARGIN_MS", lease_ms // 3, 0)
    if margin >= lease_ms:
        raise SettingsError(
            f"BATON_LEASE_MARGIN_MS={margin} must be below the lease length ({lease_ms} ms): "
            "with it nothing could ever be posted"
        )
    return margin


def _lease_renew_ms(env: Mapping[str, str], lease_ms: int, margin_ms: int) -> int:
    """BATON_LEASE_RENEW_MS: by default a quarter of the lease; a renewal must come before the
    deadline (lease - margin after the one before) passes, with room for a slow one."""
    renew_ms = _int(env, "BATON_LEASE_RENEW_MS", max(lease_ms // 4, 10), 10)
    if renew_ms >= lease_ms - margin_ms:
        raise SettingsError(
            f"BATON_LEASE_RENEW_MS={renew_ms} must be below the lease less its margin "
            f"({lease_ms} - {margin_ms} ms): the deadline would pass between two renewals"
        )
    return renew_ms


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "1" if default else "0").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be 1/0, true/false, yes/no or on/off")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    items = tuple(x.strip().lower() for x in raw.split(",") if x.strip())
    if not items:
        raise SettingsError(f"{name}={raw!r} holds no item")
    return items


METRICS_AUTH = ("loopback", "token", "open")
# A Host header's name: a DNS name, an IPv4 address or a bracketed IPv6 one, then maybe a port.
_HOST_RE = re.compile(r"^([a-z0-9]([a-z0-9.\-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:\d{1,5})?$")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _get(env, name, default).lower()
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    out = []
    for item in _list(env, name, ()):
        if not _HOST_RE.match(item):
            raise SettingsError(
                f"{name}: {item!r} is not a host name, `name:port`, an IP address or `[v6]:port` "
                "(no scheme, no path)"
            )
        out.append(item)
    return tuple(out)


# Variables Baton read once and reads no more, and what took their place: one given is named
# in a warning (once per process), never refused, so that an old environment still starts.
REMOVED = {
    "BATON_SNIPE_EDGE": "a strategy parameter now: baton slots set ID --param edge=X",
    "BATON_SNIPE_ENTRY_S": "a strategy parameter now: baton slots set ID --param entry_s=X",
}
_warned: set[str] = set()


def _warn_removed(env: Mapping[str, str]) -> None:
    for name, instead in REMOVED.items():
        if name in env and name not in _warned:
            _warned.add(name)
            log.warning("%s is no longer read (ignored): %s", name, instead)


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    _warn_removed(env)
    assets = _list(env, "BATON_ASSETS", DEFAULT_ASSETS)
    for a in assets:
        if not re.fullmatch(r"[a-z0-9]{1,16}", a):
            raise SettingsError(f"BATON_ASSETS: bad asset {a!r} (letters and digits only)")
    timeframes = _list(env, "BATON_TIMEFRAMES", DEFAULT_TIMEFRAMES)
    for tf in timeframes:
        try:
            timeframe_seconds(tf)
        except SettingsError as e:
            raise SettingsError(f"BATON_TIMEFRAMES: {e}") from None
    home = Path(_get(env, "BATON_HOME", str(REPO_ROOT))).resolve()
    redis_url, redis_port, redis_socket, redis_bind = _redis_url(env, home)
    sentinels = _sentinels(env, "BATON_REDIS_SENTINELS")
    redis_user = _get(env, "BATON_REDIS_USER", DEFAULT_REDIS_USER)
    if redis_user not in REDIS_USERS:
        raise SettingsError(f"BATON_REDIS_USER={redis_user!r} must be one of {', '.join(REDIS_USERS)}")
    mode = _get(env, "BATON_MODE", "paper").lower()
    if mode not in ("paper", "live"):
        raise SettingsError(f"BATON_MODE={mode!r} must be 'paper' (the local sim) or 'live'")
    live = mode == "live"
    tick_ms = _int(env, "BATON_TICK_MS", 5000, 100)
    # A second, whatever the tick: the holder renews on a heartbeat of its own, so that a
    # standby on another host takes a dead holder's lease within about a second.
    lease_ms = _int(env, "BATON_LEASE_MS", 1000, 200)
    lease_margin_ms = _lease_margin_ms(env, lease_ms)
    binance_port = _int(env, "BATON_SIM_BINANCE_PORT", 7301, 1)
    clob_port = _int(env, "BATON_SIM_CLOB_PORT", 7302, 1)
    clob_url = _get(env, "BATON_CLOB_URL", LIVE_URLS["clob"] if live else f"http://127.0.0.1:{clob_port}")
    clob_url = clob_url.rstrip("/")
    prefix = _get(env, "BATON_PREFIX", "baton:")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+:", prefix):
        raise SettingsError(f"BATON_PREFIX={prefix!r} must be letters/digits/_.- ending with ':'")
    return Settings(
        home=str(home),
        prefix=prefix,
        redis_url=redis_url,
        redis_port=redis_port,
        embedded_redis=bool(redis_socket or redis_bind) and not sentinels,
        tick_ms=tick_ms,
        lease_ms=lease_ms,
        lease_margin_ms=lease_margin_ms,
        lease_renew_ms=_lease_renew_ms(env, lease_ms, lease_margin_ms),
        assets=assets,
        timeframes=timeframes,
        binance_port=binance_port,
        clob_port=clob_port,
        binance_ws_url=_get(
            env, "BATON_BINANCE_WS_URL", LIVE_URLS["binance_ws"] if live else f"ws://127.0.0.1:{binance_port}"
        ).rstrip("/"),
        binance_rest_url=_get(
            env,
            "BATON_BINANCE_REST_URL",
            LIVE_URLS["binance_rest"] if live else f"http://127.0.0.1:{binance_port}",
        ).rstrip("/"),
        clob_url=clob_url,
        # The sim serves the Gamma discovery API on its CLOB port.
        gamma_url=_get(env, "BATON_GAMMA_URL", LIVE_URLS["gamma"] if live else clob_url).rstrip("/"),
        sim_seed=_int(env, "BATON_SIM_SEED", 42),
        sim_vol_scale=_float(env, "BATON_SIM_VOL_SCALE", 1.0, 0.0),
        stake_usd=_float(env, "BATON_STAKE_USD", 5.0, 0.01),
        max_stake_usd=_float(env, "BATON_MAX_STAKE_USD", 25.0, 0.01),
        max_exposure_usd=_float(env, "BATON_MAX_EXPOSURE_USD", 200.0, 0.0),
        daily_loss_limit_usd=_float(env, "BATON_DAILY_LOSS_LIMIT_USD", 100.0, 0.0),
        paper_cash_usd=_float(env, "BATON_PAPER_CASH_USD", 1000.0, 0.0),
        stale_after_ms=_int(env, "BATON_STALE_AFTER_MS", 10_000, 100),
        candle_retention_s=_int(env, "BATON_CANDLE_RETENTION_S", 3600, 60),
        release=_get(env, "BATON_RELEASE", "dev"),
        chain_id=_int(env, "BATON_CHAIN_ID", 137, 1),
        mode=mode,
        dry_run=_bool(env, "BATON_DRY_RUN", False),
        signature_type=_int(env, "BATON_SIGNATURE_TYPE", 0, 0),
        credentials_file=_get(env, "BATON_CREDENTIALS_FILE", str(DEFAULT_CREDENTIALS_FILE)),
        rate_limit_scale=_float(env, "BATON_RATE_LIMIT_SCALE", 1.0, 0.0),
        api_host=_get(env, "BATON_API_HOST", "127.0.0.1"),
        api_port=_int(env, "BATON_API_PORT", 7390, 1),
        api_token_file=_get(env, "BATON_API_TOKEN_FILE", ""),
        api_mutations_per_min=_int(env, "BATON_API_MUTATIONS_PER_MIN", 60, 1),
        dashboard_streams_max=_int(env, "BATON_DASHBOARD_STREAMS_MAX", 16, 1),
        halt_ack_timeout_ms=_int(env, "BATON_HALT_ACK_TIMEOUT_MS", 2000, 0),
        history_days=_float(env, "BATON_HISTORY_DAYS", 7.0, 0.0),
        api_hosts=_hosts(env, "BATON_API_HOSTS"),
        api_session_ttl_s=_int(env, "BATON_API_SESSION_TTL_S", 12 * 3600, 60),
        api_logins_per_min=_int(env, "BATON_API_LOGINS_PER_MIN", 10, 2),
        api_logins_all_per_min=_int(env, "BATON_API_LOGINS_ALL_PER_MIN", 60, 2),
        metrics_auth=_choice(env, "BATON_METRICS_AUTH", "loopback", METRICS_AUTH),
        redis_user=redis_user,
        redis_socket=redis_socket,
        redis_bind=redis_bind,
        redis_sentinels=sentinels,
        redis_master=_get(env, "BATON_REDIS_MASTER", "baton"),
        redis_min_replicas=_int(env, "BATON_REDIS_MIN_REPLICAS", 0, 0),
        redis_wait_ms=_int(env, "BATON_REDIS_WAIT_MS", 250, 1),
        host=_host_name(env),
        decision_log_len=_int(env, "BATON_DECISION_LOG_LEN", 500, 10),
        input_log_redis_s=_int(env, "BATON_INPUT_LOG_REDIS_S", 6 * 3600, 60),
        input_log_days=_float(env, "BATON_INPUT_LOG_DAYS", 30.0, 0.0),
        input_log_redis_mb=_int(env, "BATON_INPUT_LOG_REDIS_MB", 256, 1),
    )


class Credentials:
    """What signs orders. Kept out of Settings, and out of every repr, so that printing
    settings, a venue or a traceback's locals never shows the key."""

    __slots__ = ("funder", "private_key", "signature_type", "source")

    def __init__(self, private_key: str, funder: str | None, signature_type: int, source: str) -> None:
        self.private_key = private_key
        self.funder = funder
        self.signature_type = signature_type
        self.source = source

    def __repr__(self) -> str:
        return (
            f"Credentials(source={self.source!r}, funder={self.funder!r}, "
            f"signature_type={self.signature_type})"
        )


_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _read_credentials_file(path: Path) -> dict[str, str]:
    """`name=value` lines (`#` comments) from a file only its owner may read."""
    try:
        check_owner_only(path)
    except SecretFileError as e:
        raise CredentialsError(str(e)) from None
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise CredentialsError(f"{path}:{n}: expected name=value")  # no value in the message
        out[name.strip().lower()] = value.strip().strip('"').strip("'")
    return out


def credentials(s: Settings, env: Mapping[str, str] | None = None) -> Credentials:
    """The signing credentials for this mode.

    Paper: BATON_PRIVATE_KEY, or the sim's well-known throwaway key. Live: BATON_PRIVATE_KEY
    and BATON_FUNDER from the environment, or `private_key=` / `funder=` /
    `signature_type=` lines in the credentials file (BATON_CREDENTIALS_FILE, default
    ~/.config/baton/credentials, mode 600). A key given to `baton run` in the environment
    reaches the worker as the owner-only file var/secrets/private-key instead (the launcher
    moves it there: deploy/supervisord.py), read here when the environment has none. Raises
    CredentialsError naming every missing or malformed item; never the values.
    """
    env = os.environ if env is None else env
    key = env.get("BATON_PRIVATE_KEY", "").strip()
    source = "environment"
    moved = secrets_dir(Path(s.home)) / PRIVATE_KEY_FILE
    if not key and moved.exists():
        try:
            key, source = read_secret(moved), str(moved)
        except SecretFileError as e:
            raise CredentialsError(str(e)) from None
    funder = env.get("BATON_FUNDER", "").strip()
    sig = s.signature_type
    if not s.live:
        return Credentials(key or SIM_PRIVATE_KEY, funder or None, sig, source if key else "sim key")
    path = Path(s.credentials_file).expanduser()
    if not key and path.exists():
        from_file = _read_credentials_file(path)
        key = from_file.get("private_key", "")
        funder = funder or from_file.get("funder", "")
        if "signature_type" in from_file and "BATON_SIGNATURE_TYPE" not in env:
            try:
                sig = int(from_file["signature_type"])
            except ValueError:
                raise CredentialsError(f"{path}: signature_type must be 0, 1 or 2") from None
        source = str(path)
    missing = []
    if not key:
        missing.append(f"the private key (BATON_PRIVATE_KEY, or private_key= in {path})")
    elif not _KEY_RE.match(key):
        missing.append(f"a well-formed private key (from {source}: expected 64 hex digits)")
    elif key.lower().removeprefix("0x") == SIM_PRIVATE_KEY[2:]:
        missing.append("a private key of your own (the sim's public test key cannot trade live)")
    if sig not in (0, 1, 2):
        missing.append(f"a signature type of 0, 1 or 2 (BATON_SIGNATURE_TYPE; got {sig})")
    if sig in (1, 2) and not funder:
        missing.append(f"the funder address (BATON_FUNDER, or funder= in {path}) for signature type {sig}")
    if funder and not _ADDRESS_RE.match(funder):
        missing.append(f"a well-formed funder address (0x and 40 hex digits; got {funder!r})")
    if missing:
        raise CredentialsError("live mode needs " + "; ".join(missing))
    return Credentials(key, funder or None, sig, source)
