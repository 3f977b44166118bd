"""The shadow's keys: its counters (keys.shadow(), a hash) and the decisions it made differently
from the live worker (keys.shadow_log(), a capped stream), written by the shadow process
(worker/shadow.py) and read by `baton deploy --shadow`, `baton shadow diff`, GET /shadow and
the dashboard. Each difference is one stream entry of flat fields, readable with redis-cli.
"""

from __future__ import annotations

from typing import Any

import msgspec

from state.keys import Keys

# Differences kept: enough to read every one of a shadow run of a few hundred ticks, bounded
# for a shadow left running for days against a very different release.
LOG_LEN = 2000
# The shadow's states (field `state`): `starting` (asked for by a deploy, the process not up
# yet), `checking` (dry-evaluating its release's strategies), `following` (evaluating every
# tick of the input log), `failed` (its release cannot shadow: `error` says why), `stopped`.
STATES = ("starting", "checking", "following", "failed", "stopped")


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One side of a difference: what a strategy answered (kind buy, sell, pass, none, error),
    and for an order its side, limit price, stake or shares; its reason (or the error)."""

    kind: str
    side: str = ""
    price: float = 0.0
    stake_usd: float = 0.0
    shares: float = 0.0
    reason: str = ""


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """A decision the shadow made differently from the live worker, on the same input."""

    tick: int
    at_ms: int
    slot: str
    strategy: str
    window_start_s: int
    live_release: str
    live: Answer
    shadow: Answer


class ShadowStatus(msgspec.Struct, kw_only=True):
    """The shadow as its hash says (all zero / empty when none ever ran)."""

    release: str = ""
    state: str = ""
    error: str = ""
    pid: int = 0
    started_ms: int = 0
    updated_ms: int = 0
    # Ticks of the live worker it evaluated (input log entries), evaluations compared, of
    # which different, and orders it posted (none: it holds no venue client, and its strategies'
    # reaches for the network are refused: `refused_io`).
    ticks: int = 0
    decisions: int = 0
    differ: int = 0
    # Decisions where the shadow answered an error and live did not (a promotion refuses
    # them), and strategy calls its I/O guard refused (a file, a socket, a process).
    erred: int = 0
    refused_io: int = 0
    orders_posted: int = 0
    last_tick: int = 0
    # The input log entry it evaluated last: a restarted shadow goes on after it.
    last_id: str = ""


class ShadowDiff(msgspec.Struct, kw_only=True):
    """What `baton shadow diff` and GET /shadow show: the counters and the differences,
    oldest first (the newest LOG_LEN at most)."""

    shadow: ShadowStatus
    equal: int
    differences: list[Difference]
    # Entries of the shadow log that could not be read (stream id and why): shown, not fatal.
    problems: list[str] = []


_INTS = frozenset(
    {
        "pid",
        "started_ms",
        "updated_ms",
        "ticks",
        "decisions",
        "differ",
        "erred",
        "refused_io",
        "orders_posted",
        "last_tick",
    }
)


def _flat(d: Difference) -> dict[str, str]:
    out = {
        "tick": str(d.tick),
        "at_ms": str(d.at_ms),
        "slot": d.slot,
        "strategy": d.strategy,
        "window_start_s": str(d.window_start_s),
        "live_release": d.live_release,
    }
    for who, a in (("live", d.live), ("shadow", d.shadow)):
        for name, value in msgspec.structs.asdict(a).items():
            out[f"{who}_{name}"] = repr(value) if isinstance(value, float) else str(value)
    return out


def _unflat(f: dict[str, str]) -> Difference:
    sides = {
        who: {
            n.removeprefix(who + "_"): v
            for n, v in f.items()
            if n.startswith(who + "_") and n != "live_release"
        }
        for who in ("live", "shadow")
    }
    raw: dict[str, Any] = {n: v for n, v in f.items() if not n.startswith(("live_", "shadow_"))}
    raw.update(live_release=f.get("live_release", ""), live=sides["live"], shadow=sides["shadow"])
    return msgspec.convert(raw, Difference, strict=False)


class ShadowRepo:
    def __init__(self, r: Any, k: Keys) -> None:
        self.r = r  # a decoded client (str values)
        self.k = k

    # --- the deploy's -------------------------------------------------------------------
    def reset(self, release: str, now_ms: int) -> None:
        """A new shadow run of `release`: the counters and the log of the last one go."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.k.shadow(), self.k.shadow_log())
        pipe.hset(self.k.shadow(), mapping={"release": release, "state": "starting", "started_ms": now_ms})
        pipe.execute()

    def mark(self, state: str, now_ms: int, error: str = "") -> None:
        fields: dict[str, Any] = {"state": state, "updated_ms": now_ms}
        if error:
            fields["error"] = error[:2000]
        self.r.hset(self.k.shadow(), mapping=fields)

    # --- the shadow's -------------------------------------------------------------------
    def record(self, counts: dict[str, Any], differences: list[Difference], pipeline: Any = None) -> Any:
        """The counters after a batch and its differences, in one round trip (or on `pipeline`)."""
        pipe = pipeline if pipeline is not None else self.r.pipeline(transaction=False)
        for d in differences:
            pipe.xadd(self.k.shadow_log(), _flat(d), maxlen=LOG_LEN, approximate=True)
        pipe.hset(self.k.shadow(), mapping=counts)
        return pipe.execute() if pipeline is None else pipe

    # --- everyone's ---------------------------------------------------------------------
    def status(self) -> ShadowStatus:
        h = self.r.hgetall(self.k.shadow())
        fields: dict[str, Any] = {}
        for name in ShadowStatus.__struct_fields__:
            if name not in h:
                continue
            value = h[name]
            if name in _INTS:
                try:
                    value = int(value)
                except ValueError:
                    continue  # a value nobody of ours wrote: left at its default
            fields[name] = value
        return ShadowStatus(**fields)

    def diff(self, count: int = LOG_LEN) -> ShadowDiff:
        st = self.status()
        differences: list[Difference] = []
        problems: list[str] = []
        for entry_id, fields in self.r.xrevrange(self.k.shadow_log(), count=count)[::-1]:
            try:
                differences.append(_unflat(fields))
            except (msgspec.ValidationError, TypeError) as e:
                problems.append(f"{self.k.shadow_log()} {entry_id}: {e}")
        return ShadowDiff(
            shadow=st, equal=max(0, st.decisions - st.differ), differences=differences, problems=problems
        )
