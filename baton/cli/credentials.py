"""The `baton` commands that hand out credentials: `token` (the API bearer token, or the
metrics token), `redis-acl` (the Redis users file) and `redis-cli` (a redis-cli logged in as
the stack's user). Registered in baton/cli/__init__.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api import apitoken
from baton import settings as settings_mod
from baton.cli.output import fail
from baton.errors import SecretFileError, SettingsError, StackError, TokenError
from baton.secretfiles import read_secret
from baton.settings import Settings
from state import acl, rediscli


def cmd_token(s: Settings, args: argparse.Namespace) -> int:
    if args.metrics:
        return _metrics_token(s, args)
    try:
        token = apitoken.load(s, create=False)
    except (TokenError, OSError) as e:
        return fail(str(e))
    if args.id:
        print(token.id)
        return 0
    print(
        f"baton token: this is the API bearer token (id {token.id}, from {token.source}); whoever has it "
        "can halt, resume and change slots: keep it out of logs, tickets and shell history",
        file=sys.stderr,
    )
    print(token.reveal())
    return 0


def _metrics_token(s: Settings, args: argparse.Namespace) -> int:
    path = s.metrics_token_file
    if s.metrics_auth != "token" and not path.exists():
        return fail(
            f"GET /metrics takes no token (BATON_METRICS_AUTH={s.metrics_auth}); "
            f"with BATON_METRICS_AUTH=token the api program creates one in {path}"
        )
    try:
        token = apitoken.ApiToken(read_secret(path), str(path))
    except (SecretFileError, TokenError, OSError) as e:
        return fail(f"{e} (the api program creates it on its first start with BATON_METRICS_AUTH=token)")
    if args.id:
        print(token.id)
        return 0
    print(
        f"baton token: this is the metrics token (id {token.id}, from {path}); it opens GET /metrics "
        "only (a Prometheus scrape config's credentials_file)",
        file=sys.stderr,
    )
    print(token.reveal())
    return 0


def cmd_redis_cli(args: list[str]) -> int:
    try:
        rediscli.exec_redis_cli(settings_mod.load(), args)  # returns only on failure
    except (SettingsError, StackError, SecretFileError, OSError) as e:
        return fail(f"redis-cli: {e}")
    return 1


def cmd_redis_acl(s: Settings, args: argparse.Namespace) -> int:
    # With Sentinels, the replica's and the Sentinels' users too (docs/ha.md).
    path = acl.write_acl_file(Path(s.home), s.prefix, ha=bool(s.redis_sentinels))
    print(
        f"wrote {path}: the Redis users of prefix {s.prefix} with their passwords' hashes (each "
        f"password in {s.redis_secrets_dir}/<user>); load it into your Redis with `aclfile {path}` "
        "or copy it there and ACL LOAD"
    )
    return 0
