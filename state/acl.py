"""Who may do what in Redis: one ACL user per program, its commands and its keys, in one place.

Keys are grouped by concern (the lease and the workers, control, market data, trading, ...),
as glob patterns under the prefix, so that a new key of an existing concern needs no edit
here (tests/fast/test_redis_acl.py checks that every key state/keys.py builds falls in
exactly one concern). Each program gets read or read-write access to whole concerns, and a
few single keys more where a whole concern would give too much (the feed appends to the
error journal, and nothing else of the journal).

`render()` writes these rules as a Redis ACL file (`aclfile`, loaded by the embedded Redis at
start): passwords appear there only as `#<sha256>`. The passwords themselves are random,
generated on first start, one owner-only file per user (baton/secretfiles.py).

With Sentinel (docs/ha.md) two users more, no program's: `replica`, which a replica logs in
as to follow its primary (PSYNC), and `sentinel`, which a Sentinel logs in as to watch and
reconfigure a Redis, and to talk to the other Sentinels (SERVICE_USERS, SERVICE_RULES). The
Sentinels have their own users (`sentinel_users()`): every program is known there under its
own name and password, allowed only to ask where the primary is.

Two Redis rules shape the grants: a script's KEYS must be writable by its caller (unless it
runs as EVALSHA_RO, which we do not use), and every command a script calls
is checked against the caller's ACL as if sent directly; pub/sub channels need `&` patterns
(no channel is granted by default).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from pathlib import Path

import msgspec

from baton.secretfiles import ensure_secret, secrets_dir, write_secret
from baton.settings import REDIS_USERS
from state.keys import Keys

ADMIN = "admin"
# Users of Redis itself rather than of a program, rendered only for a replicated Redis
# (`ha=True`): nobody may PSYNC the whole data set out of a single-host Redis.
REPLICA = "replica"
SENTINEL = "sentinel"
SERVICE_USERS = (REPLICA, SENTINEL)
# The channel Sentinels announce themselves on, through every Redis they watch and to each other.
SENTINEL_CHANNEL = "__sentinel__:hello"
RQ_PATTERN = "rq:*"  # rq's own keys are not under our prefix

# Key patterns under the prefix, by concern.
CONCERNS: dict[str, tuple[str, ...]] = {
    "schema": ("schema:*",),
    # Lease, fencing epoch, handover, worker heartbeats and their wake-up lists.
    "lease": ("lease", "lease:*", "handover", "wake:*", "worker:*"),
    "deploy": ("deploys", "deploy:*", "reload"),
    # Control flags (and the halt acknowledgements), the audit stream.
    "control": ("control", "control:*", "audit"),
    # The slots: what trades (the worker follows them), and the assets the feed streams.
    "slots": ("slots", "slots:*"),
    # Candle windows and the feeds' status, counters and backfill claims (feed:claim:*).
    "market_data": ("candles:*", "feed:*"),
    "ratelimit": ("ratelimit:*",),
    "markets": ("market:*",),
    # Money and orders, and what is kept beside them: the scripts' counts over intents and
    # positions, the values that block new entries while unreadable.
    "trading": (
        *("intents", "intents:*", "positions", "positions:*", "ledger", "ledger:*"),
        *("settle:*", "decisions", "decisions:*", "counts", "blocked"),
    ),
    "journal": ("journal:*", "stats"),
    # What each running program published of its settings (each writes its own).
    "system": ("system:*",),
    # The dashboard's sign-ins (the api's alone).
    "sessions": ("session:*", "sessions"),
    # The input log (keys.input_log(): every evaluation's input and answer), appended and
    # trimmed by the worker; the settle program copies it into var/inputs/ (read only), the
    # shadow reads it.
    "inputs": ("inputs:*",),
    # A shadow deploy's counters and differences (keys.shadow(), keys.shadow_log()): the
    # shadow process's; the deploy resets them.
    "shadow": ("shadow", "shadow:*"),
}

R = "r"
RW = "rw"


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """One user's rights. `concerns`: concern -> R or RW. `write_keys`: single keys writable
    on top, each as a Keys method and its arguments (a glob is fine: `("system",
    "worker-*")`). `rq`: R or RW on rq's keys, or "". `channels`: pub/sub channel patterns
    under the prefix; `rq_channels`: rq's own (its workers listen on `rq:pubsub:<name>` for
    commands). `commands`: commands beyond the base set (see BASE_COMMANDS)."""

    concerns: Mapping[str, str]
    write_keys: tuple[tuple[str, ...], ...] = ()
    rq: str = ""
    channels: tuple[str, ...] = ()
    rq_channels: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


_READ_ALL = {c: R for c in CONCERNS if c != "sessions"}
# rq reads the server's version (INFO server) to choose how it dequeues and enqueues; the
# worker also reads the primary's replication id (INFO replication, state/primary.py).
RQ_COMMANDS = ("info",)

GRANTS: dict[str, Grant] = {
    # The trading worker: everything under the prefix but the dashboard's sessions. It
    # enqueues settlement jobs (rq), hears halts on the control channel and halts on risk
    # itself. Market data too: its tick reads candles through a script (candles_read.lua),
    # whose KEYS Redis wants writable unless run as EVALSHA_RO, which fakeredis lacks; the
    # worker's rights already exceed a candle's.
    "worker": Grant(
        concerns={**{c: RW for c in CONCERNS if c != "sessions"}, "system": R},
        write_keys=(("system", "worker-*"),),
        rq=RW,
        channels=("control:*",),
        commands=RQ_COMMANDS,
    ),
    # The feed writes candles and its own status; a bad frame goes to the error journal. It
    # reads the slots to stream their assets, and the primary's replication id (INFO
    # replication: a new primary may lack its last candles, feed/client.py).
    "feed": Grant(
        concerns={"market_data": RW, "ratelimit": RW, "schema": R, "slots": R},
        write_keys=(("journal_errors",), ("system", "feed")),
        commands=("info",),
    ),
    # The settlement jobs: positions and the ledger, rq's queues; settle_position.lua records
    # the current epoch with each ledger entry (a script's keys must be writable).
    # It also copies the input log into var/inputs/ (worker/input_files.py): a read, since
    # the worker's appends trim it.
    "settle": Grant(
        concerns={
            **{"trading": RW, "ratelimit": RW, "markets": RW, "schema": R, "lease": R, "journal": RW},
            "inputs": R,
        },
        write_keys=(("lease_epoch",),),
        rq=RW,
        rq_channels=("rq:pubsub:*",),
        commands=RQ_COMMANDS,
    ),
    # The control plane reads everything and changes only what an operator may change, and
    # its own sessions. INFO: a halt makes the ledger durable as this Redis is configured
    # (control/lifecycle.py).
    "api": Grant(
        concerns={**_READ_ALL, "control": RW, "slots": RW, "deploy": RW, "ratelimit": RW, "sessions": RW},
        write_keys=(("system", "api"),),
        rq=R,
        channels=("control:*",),
        commands=("info",),
    ),
    # The shadow deploy's evaluator (worker/shadow.py): it reads the input log and writes its
    # own keys, nothing else. No rq, no channel: nothing it does reaches an order.
    "shadow": Grant(concerns={"inputs": R, "shadow": RW}),
    # A person with `baton`: the API's rights but the sessions, and deploys, which ask for
    # the handover and clear the idle colour's heartbeat (the lease concern), and start a
    # shadow afresh (the shadow concern). `baton stop` marks the stop in stats, so
    # that the downtime it makes is not counted as missed ticks.
    "cli": Grant(
        concerns={
            **_READ_ALL,
            **{"control": RW, "slots": RW, "deploy": RW, "ratelimit": RW, "lease": RW, "shadow": RW},
        },
        write_keys=(("stats",),),
        rq=R,
        channels=("control:*",),
        commands=("info",),
    ),
}

# Every program: reads, writes and scripts on its keys, transactions, pub/sub on its channels,
# and no command that reconfigures, flushes, inspects other clients or lists every key
# (@dangerous, @admin). Scripts only through EVALSHA/EVAL and SCRIPT LOAD/EXISTS: SCRIPT
# FLUSH/KILL and FUNCTION are the admin's. tests/e2e/test_redis_access.py asks the real
# server (ACL DRYRUN) what each user may run.
BASE_COMMANDS = (
    "-@all",
    "+@connection",
    "+@read",
    "+@write",
    "+@keyspace",
    "+@transaction",
    "+@pubsub",
    "+@blocking",
    "+time",
    "+eval",
    "+evalsha",
    "+eval_ro",
    "+evalsha_ro",
    "+script|load",
    "+script|exists",
    "-@dangerous",
    "-@admin",
    # FUNCTION FLUSH, DELETE, LOAD and RESTORE are @write: taken away by name (we use no
    # functions; loading one is running code in Redis).
    "-function",
)


# What a replica needs of its primary (redis.io, "ACL": replication): the sync handshake.
# What a Sentinel needs of a Redis it watches (redis.io, "High availability with Redis
# Sentinel", ACL section): INFO, ROLE and PING to watch; SLAVEOF with CONFIG REWRITE in a
# transaction, and CLIENT KILL, to reconfigure at a failover; SCRIPT KILL for a busy one;
# the hello channel to find the other Sentinels. No key at all.
SERVICE_RULES: dict[str, tuple[str, ...]] = {
    REPLICA: ("resetkeys", "resetchannels", "-@all", "+psync", "+sync", "+replconf", "+ping"),
    SENTINEL: (
        *("resetkeys", "resetchannels", "&" + SENTINEL_CHANNEL, "-@all"),
        *("+multi", "+exec", "+slaveof", "+replicaof", "+config|rewrite", "+client|kill"),
        *("+client|setname", "+script|kill", "+ping", "+info", "+role", "+publish", "+subscribe"),
    ),
}

# On the Sentinels themselves (their config's `user` lines): what one Sentinel asks of
# another (PING, the hello it PUBLISHes, the vote at a failover), and what a program asks
# when it looks for the primary (redis-py's Sentinel: SENTINEL MASTERS/MASTER, the replicas,
# the other Sentinels, get-master-addr-by-name).
SENTINEL_PEER_RULES = (
    *("resetkeys", "resetchannels", "&" + SENTINEL_CHANNEL, "-@all", "+ping", "+publish"),
    *("+client|setname", "+sentinel|is-master-down-by-addr", "+sentinel|myid"),
)
SENTINEL_CLIENT_RULES = (
    *("resetkeys", "resetchannels", "-@all", "+ping", "+client|setname"),
    *("+sentinel|get-master-addr-by-name", "+sentinel|masters", "+sentinel|master"),
    *("+sentinel|slaves", "+sentinel|replicas", "+sentinel|sentinels"),
)


def _under(prefix: str, patterns: tuple[str, ...]) -> list[str]:
    return [prefix + p for p in patterns]


def key_rules(user: str, prefix: str) -> list[str]:
    """The `~`, `%R~` and `%W~` rules of `user` (ACL syntax), for this prefix."""
    g = GRANTS[user]
    out: list[str] = []
    for concern, access in g.concerns.items():
        mark = "~" if access == RW else "%R~"
        out += [mark + p for p in _under(prefix, CONCERNS[concern])]
    k = Keys(prefix)
    out += ["~" + getattr(k, name)(*args) for name, *args in g.write_keys]
    if g.rq:
        out.append(("~" if g.rq == RW else "%R~") + RQ_PATTERN)
    return out


def rules(user: str, prefix: str) -> list[str]:
    """Every rule of `user` but its password, in the order Redis applies them."""
    if user == ADMIN:
        return ["~*", "&*", "+@all"]
    if user in SERVICE_RULES:
        return list(SERVICE_RULES[user])
    g = GRANTS[user]
    channels = ["&" + p for p in _under(prefix, g.channels)] + ["&" + p for p in g.rq_channels]
    return [
        "resetkeys",
        "resetchannels",
        *key_rules(user, prefix),
        *channels,
        *BASE_COMMANDS,
        *("+" + c for c in g.commands),
    ]


def concern_of(key: str, prefix: str) -> list[str]:
    """The concerns whose patterns match `key` (one, for every key Keys builds)."""
    return [c for c, pats in CONCERNS.items() if any(fnmatch.fnmatchcase(key, prefix + p) for p in pats)]


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def users(*, ha: bool = False) -> tuple[str, ...]:
    """The Redis users: the programs', and with `ha` the replica's and the Sentinels'."""
    return (*REDIS_USERS, *SERVICE_USERS) if ha else REDIS_USERS


def _user_line(user: str, password: str, user_rules: list[str] | tuple[str, ...]) -> str:
    return " ".join(["user", user, "on", "#" + password_hash(password), *user_rules])


def render(prefix: str, passwords: Mapping[str, str], *, ha: bool = False) -> str:
    """The ACL file: `default` off, then one line per user with its hashed password (with
    `ha`, the `replica` and `sentinel` users too).

    Redis allows no comment in it; it is written by `baton run` from these rules at every
    start, so an edit of the file itself lasts until then.

    `default` is off (nobody can log in as it) but keeps every permission: Redis 7.0 replays
    the AOF at start-up as `default`, and refuses each MULTI/EXEC it may not run (NOPERM,
    "ACLs rules changed between the moment the transaction was accumulated and the EXEC
    call"). Those are the pipelined transactions and the effects of every script that writes
    more than one command: with `-@all` a Redis restart dropped every fill, settlement and
    journal entry since the last rewrite (found by the chaos run's redis-restart fault)."""
    lines = ["user default off ~* &* +@all"]
    lines += [_user_line(u, passwords[u], rules(u, prefix)) for u in users(ha=ha)]
    return "\n".join(lines) + "\n"


def sentinel_users(passwords: Mapping[str, str]) -> list[str]:
    """The `user` lines of a Sentinel's config: `default` off (nobody unauthenticated),
    `admin` for an operator, `sentinel` for the other Sentinels, and each program under its
    own name and password (the file the client factory already reads), allowed only to ask
    where the primary is. Passwords appear only as hashes."""
    lines = ["user default off resetkeys resetchannels -@all"]
    lines.append(_user_line(ADMIN, passwords[ADMIN], ("~*", "&*", "+@all")))
    lines.append(_user_line(SENTINEL, passwords[SENTINEL], SENTINEL_PEER_RULES))
    lines += [_user_line(u, passwords[u], SENTINEL_CLIENT_RULES) for u in REDIS_USERS if u != ADMIN]
    return lines


def password_file(home: Path, user: str) -> Path:
    """`$BATON_HOME/var/secrets/redis/<user>`: the password of one Redis user."""
    if user not in users(ha=True):
        raise ValueError(f"no Redis user {user!r}")
    return secrets_dir(home) / "redis" / user


def acl_file(home: Path) -> Path:
    """The rendered ACL file the embedded Redis loads (beside the passwords: it holds hashes)."""
    return secrets_dir(home) / "redis" / "users.acl"


def ensure_passwords(home: Path, *, ha: bool = False) -> dict[str, str]:
    """Every user's password, generated into its owner-only file on first use."""
    return {u: ensure_secret(password_file(home, u)) for u in users(ha=ha)}


def write_acl_file(home: Path, prefix: str, *, ha: bool = False) -> Path:
    """Render the rules with every user's password (generated if new) into the ACL file;
    `ha`: with the replica and Sentinel users (a Redis Sentinel watches)."""
    path = acl_file(home)
    write_secret(path, render(prefix, ensure_passwords(home, ha=ha), ha=ha).rstrip("\n"))
    return path
