"""What every control operation works on: the settings, a synchronous Redis client, the keys,
a clock, and a way to call supervisord. The operations themselves are functions in halt,
slots, lifecycle, audit and views that take this context.

Synchronous (redis-py): the CLI calls the operations directly, the API from a thread. The
Redis client needs `decode_responses=True` and a socket timeout above the halt's wait.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from baton.errors import Unavailable
from baton.settings import Settings
from deploy.supervisord import supervisor_call
from kernel.clock import wall_ms
from state.keys import Keys

Supervisor = Callable[..., Any]


class Context:
    def __init__(
        self,
        s: Settings,
        r: redis.Redis,
        *,
        supervisor: Supervisor | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s = s
        # A decoded client (str in, str out): redis-py's types cannot say so, hence Any.
        self.r: Any = r
        self.k = Keys(s.prefix)
        self.clock_ms = clock_ms
        self.sleep = sleep
        if supervisor is None:

            def supervisor(method: str, *args: Any) -> Any:
                return supervisor_call(s.supervisor_socket, method, *args)

        self.supervisor = supervisor

    @contextlib.contextmanager
    def redis_errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise Unavailable(f"cannot reach Redis at {self.s.redis_url_shown}: {e}") from None


def to_int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default
