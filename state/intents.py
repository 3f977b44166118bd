"""Order intents (`slot:window:leg`): committed fenced and at most once, then updated as the
venue answers, kept in the open hash until final."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from baton.errors import NotReplicated
from baton.settings import Settings
from state import replication
from state.repo import Repo
from state.structs import FINAL_INTENT_STATUSES, INTENT, Intent


class IntentsRepo(Repo):
    def commit_intents(self, epoch: int, intents: list[Intent], pipeline: Any = None) -> Any:
        """Commit every intent in one fenced call (intent_commit.lua): one verdict per intent."""
        args: list[Any] = [epoch]
        for i in intents:
            args += (i.id, INTENT.encode(i))
        return self._call(
            self.scripts.intent_commit,
            keys=[
                self.k.lease_epoch(),
                self.k.control(),
                self.k.intents(),
                self.k.intents_open(),
                self.k.counts(),
            ],
            args=args,
            pipeline=pipeline,
        )

    async def commit_intents_acked(
        self, s: Settings, epoch: int, intents: list[Intent]
    ) -> tuple[Any, int | None]:
        """commit_intents, and the WAIT for the replicas Settings wants right behind it on
        the same pipeline (one round trip, one connection: WAIT covers that connection's
        writes): (verdicts, replicas that acknowledged). Without replicas wanted it is
        commit_intents alone, not one round trip more: (verdicts, None). A primary that
        refused the write for want of replicas (min-replicas-to-write) committed nothing:
        NotReplicated."""
        if not replication.wanted(s):
            return await self.commit_intents(epoch, intents), None

        def build(pipe: Any) -> None:
            self.commit_intents(epoch, intents, pipeline=pipe)
            replication.queue_wait(s, pipe)

        try:
            verdicts, acked = await self.run_pipeline(build)
        except RedisConnectionError as e:
            # The Sentinel client's form of NOREPLICAS, once its retries are spent
            # (state/connection.py); any other connection error leaves the commit's fate unknown.
            if str(e).startswith("NOREPLICAS"):
                raise NotReplicated(f"the primary refused the commit: {e}") from None
            raise
        if isinstance(verdicts, ResponseError) and str(verdicts).startswith("NOREPLICAS"):
            raise NotReplicated(f"the primary refused the commit: {verdicts}")
        for reply in (verdicts, acked):
            if isinstance(reply, Exception):
                raise reply
        return verdicts, int(acked)

    def adopt_intents(self, epoch: int, intents: list[Intent], pipeline: Any = None) -> Any:
        """Record intents for orders the venue has and no intent knew (intent_adopt.lua:
        fenced, never over an existing intent, whatever the halt flag): one verdict each."""
        args: list[Any] = [epoch]
        for i in intents:
            args += (i.id, INTENT.encode(i), "1" if i.status in FINAL_INTENT_STATUSES else "0")
        return self._call(
            self.scripts.intent_adopt,
            keys=[self.k.lease_epoch(), self.k.intents(), self.k.intents_open(), self.k.counts()],
            args=args,
            pipeline=pipeline,
        )

    async def commit_intent(self, epoch: int, intent: Intent) -> str:
        return str((await self.commit_intents(epoch, [intent]))[0])

    def update_intent(self, epoch: int, intent: Intent, pipeline: Any = None) -> Any:
        final = intent.status in FINAL_INTENT_STATUSES
        return self._call(
            self.scripts.intent_update,
            keys=[self.k.lease_epoch(), self.k.intents(), self.k.intents_open(), self.k.counts()],
            args=[epoch, intent.id, INTENT.encode(intent), "1" if final else "0"],
            pipeline=pipeline,
        )

    async def committed(self, intent_ids: list[str]) -> list[bool]:
        """Whether each intent id was ever committed (one HMGET of the intents hash)."""
        raw = await self.r.hmget(self.k.intents(), intent_ids)
        return [v is not None for v in raw]

    async def raw_intents(self, intent_ids: list[str]) -> list[Any]:
        """Each intent's JSON as stored (None where there is none): one HMGET."""
        return list(await self.r.hmget(self.k.intents(), intent_ids)) if intent_ids else []

    async def read_intents(self, open_only: bool = False) -> list[Intent]:
        raw = await self.r.hgetall(self.k.intents_open() if open_only else self.k.intents())
        return [INTENT.decode(v) for v in raw.values()]
