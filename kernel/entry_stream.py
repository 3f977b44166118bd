"""A tick's entries sent in chunks while the tick goes on evaluating (`EntryStream`): each
chunk is signed, then committed, posted and booked by kernel/executor.py as a task of its own,
so that Redis's work and the worker's overlap instead of waiting on each other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from baton.settings import Settings
from kernel import executor, lanes
from kernel.blocking import EntryBlocks
from kernel.lease import LeaseDeadline
from kernel.outcomes import Tally
from state.store import Store
from state.structs import Intent, Position

log = logging.getLogger("baton.executor")


class EntryStream:
    """A tick's entries, sent in a few chunks while the tick goes on evaluating further slots.

    Each chunk is signed (the tick waits for that), then committed, posted and booked by
    submit_signed, as a task of its own: while Redis runs one chunk's commit or fill booking
    and the venue lanes post its orders, the worker evaluates the next slots, so Redis's core
    and the worker's overlap instead of waiting on each other (bench/entry_burst.py), and the
    first orders of a burst reach the venue before the last slots are evaluated. Every chunk
    is fenced and checked against the halt gate as one whole batch would be. The tick caps
    the chunks' number (kernel/entries.py: ENTRY_CHUNKS), so the round trips of a tick do not
    grow with its slots.
    """

    def __init__(
        self,
        store: Store,
        venue: Any,
        epoch: int,
        gate: Any,
        entered: set[str],
        chunks: int,
        deadline: LeaseDeadline | None = None,
        blocks: EntryBlocks | None = None,
        replicas: Settings | None = None,
        positions: dict[str, Position] | None = None,
    ) -> None:
        self.store, self.venue, self.epoch, self.gate, self.entered = store, venue, epoch, gate, entered
        self.deadline, self.blocks, self.replicas = deadline, blocks, replicas
        # The open positions exit legs sell from (by id), and what the chunks' orders came to.
        self.positions = positions
        self.tally = Tally()
        # The venue lanes (kernel/lanes.py) are shared. A chunk sent while others may follow
        # gets its share, so that chunks posting at the same time (a slow venue's) use no more
        # threads together than one whole batch would; the last chunk gets what the chunks
        # still under way leave free (all of them, when it is the only one or the others are
        # done): a large last chunk never posts on a share while the other lanes sit idle.
        self.share = max(1, lanes.LANES // chunks)
        self.tasks: list[asyncio.Future[tuple[int, list[str]]]] = []
        self._lanes: list[int] = []

    async def send(self, intents: list[Intent], last: bool = False) -> None:
        """Sign this chunk, then start its commit, posts and booking on their way; `last`: no
        more chunks follow.

        The tick waits for the signatures: the lane threads sign only when they hold the GIL,
        and a tick that went on evaluating held it, so that every chunk's signing (and with
        it every commit) waited for the end of the evaluation and Redis's part of the burst
        began late instead of overlapping it (bench/entry_burst.py). A signature costs the
        same CPU either way; the commit now reaches Redis as soon as its chunk is signed."""
        if not intents:
            return
        if last:
            busy = sum(n for n, t in zip(self._lanes, self.tasks, strict=True) if not t.done())
            n_lanes = max(self.share, lanes.LANES - busy)
        else:
            n_lanes = self.share
        ready, problems = await executor.sign_all(self.venue, intents, n_lanes)
        self._lanes.append(n_lanes)
        self.tasks.append(
            asyncio.ensure_future(
                executor.submit_signed(
                    self.store,
                    self.venue,
                    self.epoch,
                    ready,
                    problems,
                    gate=self.gate,
                    entered=self.entered,
                    n_lanes=n_lanes,
                    deadline=self.deadline,
                    blocks=self.blocks,
                    replicas=self.replicas,
                    tally=self.tally,
                    positions=self.positions,
                )
            )
        )

    async def finish(self) -> tuple[int, list[str]]:
        """Orders sent and problems of every chunk, once all are done; a chunk that raised
        raises here, after the others have finished. Shielded: a tick cancelled while it waits
        here leaves the chunks to finish (a post on its way is never abandoned, and each lane
        keeps its place in the halt gate's in-flight count until its thread is back)."""
        results = await asyncio.shield(asyncio.gather(*self.tasks, return_exceptions=True))
        self.tasks, self._lanes = [], []
        sent, problems, failed = 0, [], None
        for r in results:
            if isinstance(r, BaseException):
                failed = failed or r
            else:
                sent += r[0]
                problems += r[1]
        if failed is not None:
            # The other chunks' problems would be lost with the raise: logged here.
            for p in problems:
                log.warning("entry chunk: %s", p)
            raise failed
        return sent, problems
