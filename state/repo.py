"""What every repository of state/ shares: a client, the keys, the scripts, and the two ways
a write runs (now, or queued on the caller's pipeline).

A write method that is one command or one script call is a plain function returning what the
client returns: the reply for a sync client, an awaitable for an asyncio one, None when queued
on `pipeline=` (rq's habit: the caller batches several writes into one round trip). Fenced
writes return the script's verdict ('OK', 'STALE_EPOCH', 'HALTED', 'DUPLICATE', 'ALREADY',
'UNKNOWN') instead of raising: a refusal is an outcome the caller must act on. A script that
found a value it cannot use wrote nothing and answered BADVALUE (state/lua/_check.lua): that
raises `UnreadableValue`, or stands in a pipeline's results as one.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from baton.errors import UnreadableValue
from state.keys import Keys
from state.scripts import scripts_for


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


_BADVALUE = re.compile(r"BADVALUE (\S+) (\S+): (.*)", re.S)


def unreadable(e: Any) -> Any:
    """A script's BADVALUE error as the UnreadableValue it stands for; anything else as is."""
    if isinstance(e, ResponseError) and (m := _BADVALUE.match(str(e))):
        return UnreadableValue(m[1], m[2], m[3])
    return e


async def _translated(reply: Awaitable[Any]) -> Any:
    try:
        return await reply
    except ResponseError as e:
        raise unreadable(e) from None


class Repo:
    def __init__(self, redis: Any, keys: Keys) -> None:
        # Typed Any: redis-py types every reply as bytes | str, but the decoding clients of
        # state/connection.py make them str throughout.
        self.r: Any = redis
        self.k = keys
        self.scripts = scripts_for(redis)

    def _call(self, script: Any, keys: list[str], args: list[Any], pipeline: Any = None) -> Any:
        """Run a script now (returns the client's reply or awaitable) or queue it on
        `pipeline` (returns None)."""
        if pipeline is None:
            try:
                reply = script(keys=keys, args=args)
            except ResponseError as e:
                raise unreadable(e) from None
            return _translated(reply) if inspect.isawaitable(reply) else reply
        self.scripts.on(pipeline, script, keys, args)
        return None

    async def run_pipeline(self, build: Any) -> list[Any]:
        """Build and execute a pipeline in one round trip; results keep errors as values (a
        script's BADVALUE as UnreadableValue).

        After a Redis restart the script cache is empty and every EVALSHA answers NOSCRIPT
        (so none of them ran): load the scripts and run the whole pipeline once more.
        """
        for attempt in (1, 2):
            pipe = self.r.pipeline(transaction=False)
            build(pipe)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(x, NoScriptError) for x in results):
                await self.scripts.load()
                continue
            return [unreadable(x) for x in results]
        return [unreadable(x) for x in results]
