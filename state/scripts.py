"""The Lua script registry: every state/lua/*.lua, found by glob, registered once per client.

A script is reached by its file's name (`scripts_for(redis).intent_commit`); adding a file
adds the script, and no list of names is kept by hand. Files starting with `_` are shared
fragments: one is prepended to every script that calls a function it defines, directly or
through another fragment (the checks made before a first write, `_check.lua`, and the ledger's
append-and-sum rule, `_ledger.lua`, are thus written once). A fragment may use only fragments
whose names sort before its own: they are prepended in that order.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).with_name("lua")
_FUNCTION = re.compile(r"^local function (\w+)\(", re.M)
_COMMENT = re.compile(r"--.*$", re.M)


@cache
def _fragments() -> dict[str, str]:
    """Each function a fragment defines -> the fragment's text."""
    out: dict[str, str] = {}
    for path in sorted(LUA_DIR.glob("_*.lua")):
        text = path.read_text()
        for fn in _FUNCTION.findall(text):
            out[fn] = text
    return out


@cache
def names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in LUA_DIR.glob("*.lua") if not p.stem.startswith("_")))


@cache
def source(name: str) -> str:
    text = (LUA_DIR / f"{name}.lua").read_text()
    fragments = _fragments()
    needed: set[str] = set()
    todo = [_COMMENT.sub("", text)]
    while todo:
        code = todo.pop()
        for fn, fragment in fragments.items():
            if fragment not in needed and re.search(rf"\b{fn}\(", code):
                needed.add(fragment)
                todo.append(_COMMENT.sub("", fragment))
    in_order = [f for f in dict.fromkeys(fragments.values()) if f in needed]
    return "".join(f + "\n" for f in in_order) + text


class Scripts:
    """Registered script objects, one attribute per state/lua file.

    Called directly they handle NOSCRIPT themselves. Inside a pipeline use `on(pipe, ...)`,
    which queues a bare EVALSHA: redis-py's own pipeline path sends SCRIPT EXISTS first,
    an extra round trip on every tick. A pipeline that meets NOSCRIPT (Redis restarted
    without its script cache) is retried by `Repo.run_pipeline` (state/repo.py) after `load()`.
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._by_name = {name: redis.register_script(source(name)) for name in names()}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_by_name"][name]
        except KeyError:
            raise AttributeError(f"no script state/lua/{name}.lua") from None

    async def load(self) -> None:
        for name in names():
            await self.redis.script_load(source(name))

    def on(self, pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)


def scripts_for(redis: Any) -> Scripts:
    """The scripts registered on this client (sync or asyncio), registered on first use.

    Kept on the client itself, so they live exactly as long as it does (a registry keyed by
    client would keep every client alive: each script holds its client)."""
    found: Scripts | None = getattr(redis, "_baton_scripts", None)
    if found is None:
        found = Scripts(redis)
        redis._baton_scripts = found
    return found
