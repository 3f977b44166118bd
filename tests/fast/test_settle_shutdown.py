"""The settle program's warm shutdown does not wait on rq's pubsub thread for a minute.

rq stops that thread with redis-py 8's PubSubWorkerThread.stop(), which waits for the thread to
leave get_message(timeout=60); when the thread had already read the reply to UNSUBSCRIBE,
nothing woke it and the shutdown waited out the minute (seen in every few stops of `make
cluster-stop`). worker/settle_guard.py bounds it."""

from __future__ import annotations

import time

import fakeredis
import pytest

from kernel import settlement
from worker import settle as settle_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("reply_read_already", [False, True])
def test_a_settle_worker_leaves_its_channel_within_seconds(reply_read_already: bool) -> None:
    r = fakeredis.FakeRedis()
    w = settle_program.settle_worker(settlement.settle_queue(r, "baton:"), "baton:")
    w.subscribe()
    assert w.pubsub_thread is not None and w.pubsub is not None
    time.sleep(0.2)  # the thread waits in get_message
    if reply_read_already:
        w.pubsub.unsubscribe()
        time.sleep(0.3)  # the thread read the reply and waits again, for up to 60 s
    t0 = time.monotonic()
    w.unsubscribe()
    assert time.monotonic() - t0 < 3
