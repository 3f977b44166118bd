"""`python -m feed`: the Binance kline feed process (see feed/client.py).

Reads settings once, runs until SIGTERM/SIGINT, closes cleanly and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from baton import settings
from baton.errors import SettingsError
from feed.client import Feed
from kernel.clock import wall_ms
from state import connection
from state.keys import Keys
from state.system import FEED_SETTINGS, SystemRepo, publish_when_reachable, published_fields

log = logging.getLogger("feed")


async def _run(s: settings.Settings) -> int:
    redis = connection.async_client(s, decoded=False)
    feed = Feed.from_settings(s, redis)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, feed.stop)
    log.info(
        "feed starting: assets=%s ws=%s rest=%s redis=%s",
        ",".join(s.assets),
        s.binance_ws_url,
        s.binance_rest_url,
        s.redis_url_shown,
    )
    fields = published_fields(s, FEED_SETTINGS, wall_ms())
    publish = asyncio.create_task(publish_when_reachable(SystemRepo(redis, Keys(s.prefix)), "feed", fields))
    try:
        await feed.run()
    finally:
        publish.cancel()
        await redis.aclose()
    return 0


def main() -> int:
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        s = settings.load()
    except SettingsError as e:
        log.error("bad settings: %s", e)
        return 2
    return asyncio.run(_run(s))


if __name__ == "__main__":
    sys.exit(main())
