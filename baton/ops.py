"""The control operations, one implementation behind every door: the HTTP API (`api`), the
CLI (`baton halt|pause|...`, which works with the api program down) and `var/control.json`.

Control flags live in Redis, so `redis-cli` reads them and every worker version obeys the
same ground truth. A flag change goes through one Lua script (state/lua/control_set.lua)
that sets the flags, bumps `seq` and publishes on the control channel in one step; every
mutating call, carried out or refused, is appended to the audit stream with who asked.

`Ops` is synchronous (redis-py): the CLI calls it directly, the API from a thread. Its Redis
client needs `decode_responses=True` and a socket timeout above the halt's wait.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from baton import commands as c
from baton import status as status_mod
from baton.errors import BadRequest, Conflict, NotFound, OpError, ReloadError, Unavailable
from baton.settings import Settings
from kernel.clock import wall_ms
from kernel.windows import window_bounds
from state.control import parse_control
from state.keys import Keys
from state.scripts import source
from state.structs import POSITION, SLOT, ControlFlags, Slot, micros_to_usd

AUDIT_MAXLEN = 10_000
WORKER_PROGRAMS = ("worker-blue", "worker-green")
_RUNNING = ("RUNNING", "STARTING", "BACKOFF")

Supervisor = Callable[..., Any]


def control_view(flags: ControlFlags) -> c.ControlView:
    return c.ControlView(
        halted=flags.halted,
        halt_reason=flags.halt_reason,
        halted_ms=flags.halted_ms,
        halted_by=flags.halted_by,
        paused=flags.paused,
        pause_reason=flags.pause_reason,
        seq=flags.seq,
        problems=list(flags.problems),
    )


def _reason(text: str, default: str) -> str:
    text = " ".join(text.split())  # one line: it lands in logs, the audit stream and redis-cli
    if len(text) > c.REASON_MAX:
        raise BadRequest(f"reason is {len(text)} characters long; at most {c.REASON_MAX}")
    return text or default


class Ops:
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
        self.r = r
        self.k = Keys(s.prefix)
        self.clock_ms = clock_ms
        self.sleep = sleep
        self._control_set = r.register_script(source("control_set"))
        if supervisor is None:
            from baton.stack import supervisor_call

            def supervisor(method: str, *args: Any) -> Any:
                return supervisor_call(s.supervisor_socket, method, *args)

        self.supervisor = supervisor

    # --- reading --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._redis_errors():
            return status_mod.collect(self.s, self.r)

    def control(self) -> c.ControlView:
        with self._redis_errors():
            return control_view(parse_control(self.r.hgetall(self.k.control())))

    def slots(self) -> c.SlotsResult:
        with self._redis_errors():
            return c.SlotsResult(slots=self._slot_views())

    def slot(self, slot_id: str) -> c.SlotView:
        with self._redis_errors():
            views = self._slot_views(only=slot_id)
        if not views:
            ids = self._slot_ids()
            if slot_id in ids:
                raise Conflict(f"slot {slot_id!r} holds an unreadable value in Redis (see baton status)")
            raise NotFound(f"no slot {slot_id!r}; slots are {', '.join(ids) or 'none'}")
        return views[0]

    def audit_tail(self, count: int = 50) -> c.AuditResult:
        with self._redis_errors():
            rows = self.r.xrevrange(self.k.audit(), count=max(1, min(count, 1000)))
        out = []
        for entry_id, f in rows:
            out.append(
                c.AuditEntry(
                    id=entry_id,
                    at_ms=_int(f.get("at_ms")),
                    source=f.get("source", ""),
                    who=f.get("who", ""),
                    token_id=f.get("token_id", ""),
                    action=f.get("action", ""),
                    target=f.get("target", ""),
                    args=f.get("args", ""),
                    result=f.get("result", ""),
                    status=_int(f.get("status")),
                    detail=f.get("detail", ""),
                )
            )
        return c.AuditResult(entries=out)

    # --- flags ----------------------------------------------------------------------------
    def halt(self, actor: c.Actor, body: c.HaltBody) -> c.HaltResult:
        return self._audited(actor, "halt", "", body, lambda: self._halt(actor, body))

    def pause(self, actor: c.Actor, body: c.PauseBody) -> c.FlagResult:
        def run() -> c.FlagResult:
            reason = _reason(body.reason, "operator pause")
            _seq, _n, _was_halted, was_paused = self._set("pause", reason, actor)
            return c.FlagResult(action="pause", changed=not was_paused, control=self.control())

        return self._audited(actor, "pause", "", body, run)

    def resume(self, actor: c.Actor) -> c.FlagResult:
        def run() -> c.FlagResult:
            flags = parse_control(self.r.hgetall(self.k.control()))
            if not flags.halted and not flags.paused:
                raise Conflict("nothing to resume: trading is neither halted nor paused")
            # The resume lifts what was looked at: if a halt (or anything) came in between,
            # it is refused rather than lifting a halt its caller never saw.
            self._set("resume", "", actor, expect_seq=flags.seq)
            return c.FlagResult(action="resume", changed=True, control=self.control())

        return self._audited(actor, "resume", "", None, run)

    def _set(
        self, action: str, reason: str, actor: c.Actor, expect_seq: int | None = None
    ) -> tuple[int, int, int, int]:
        res = self._control_set(
            keys=[self.k.control()],
            args=[
                self.k.control_events(),
                action,
                self.clock_ms(),
                reason,
                _who(actor),
                "" if expect_seq is None else expect_seq,
            ],
        )
        if int(res[0]) == -1:
            raise Conflict(
                f"the control flags changed meanwhile (seq {expect_seq} -> {res[1]}): "
                "look at them again (GET /control) before resuming"
            )
        return int(res[0]), int(res[1]), int(res[2]), int(res[3])

    def _halt(self, actor: c.Actor, body: c.HaltBody) -> c.HaltResult:
        reason = _reason(body.reason, "operator halt")
        t0 = time.monotonic()
        seq, _receivers, _was, _p = self._set("halt", reason, actor)
        lease = self.r.hgetall(self.k.lease())
        active = bool(lease.get("holder")) and _int(lease.get("expires_ms")) > self.clock_ms()
        worker = f"worker-{lease.get('color')}" if active else ""
        acknowledged, ack_ms = False, None
        cancel = "no active worker: the next worker to take the lease cancels open orders at its first tick"
        timeout_s = self.s.halt_ack_timeout_ms / 1000
        if active and timeout_s > 0:
            ack = self._holder_ack(seq, lease, t0 + timeout_s)
            if ack is not None:
                acknowledged = True
                ack_ms = round((time.monotonic() - t0) * 1000)
            else:
                cancel = (
                    f"{worker} did not acknowledge within {timeout_s:.1f} s: the flag stands and is "
                    "checked at the top of every tick and when an order is committed"
                )
        flush = self.flush_ledger()
        if acknowledged:
            deadline = time.monotonic() + timeout_s
            cancel = f"{worker} is cancelling open orders"
            while (left := deadline - time.monotonic()) > 0:
                done = self._pop_ack(seq, left)
                if done is None:
                    break
                if "cancel" in done:
                    cancel = str(done["cancel"])
                    break
        return c.HaltResult(
            halted=True,
            seq=seq,
            acknowledged=acknowledged,
            ack_ms=ack_ms,
            worker=worker,
            cancel=cancel,
            flush=flush,
            control=self.control(),
        )

    def _holder_ack(self, seq: int, lease: dict[str, str], deadline: float) -> dict[str, Any] | None:
        """The acknowledgement of the lease holder (another worker — one that handed over a
        moment ago — may answer too, and does not count), once it has no post in flight."""
        while (left := deadline - time.monotonic()) > 0:
            ack = self._pop_ack(seq, left)
            if ack is None:
                return None
            holder_ok = ack.get("holder") == lease.get("holder")
            if holder_ok and ack.get("halted") is True and not ack.get("inflight"):
                return ack
        return None

    def _pop_ack(self, seq: int, timeout_s: float) -> dict[str, Any] | None:
        got = self.r.blpop([self.k.control_ack(seq)], timeout=max(timeout_s, 0.01))
        if not got:
            return None
        try:
            value = json.loads(got[1])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def flush_ledger(self) -> str:
        """Make what the ledger holds durable, as this Redis is configured: WAIT for
        replicas, WAITAOF (Redis 7.2+) or one everysec fsync period for the AOF, a BGSAVE
        without AOF. Returns what was done; never raises (a halt must not fail here)."""
        parts = []
        try:
            repl = self.r.info("replication")
            replicas = _int(repl.get("connected_slaves"))
            if replicas:
                n = self.r.execute_command("WAIT", replicas, 1000)
                parts.append(f"WAIT: {n} of {replicas} replica(s) have the ledger")
            pers = self.r.info("persistence")
            if _int(pers.get("aof_enabled")):
                parts.append(self._aof_flush())
            else:
                try:
                    self.r.bgsave()
                    parts.append("no AOF: RDB snapshot started (BGSAVE)")
                except redis.ResponseError as e:
                    parts.append(f"no AOF: BGSAVE: {e}")
        except redis.RedisError as e:
            parts.append(f"not flushed: {type(e).__name__}: {e}")
        return "; ".join(parts)

    def _aof_flush(self) -> str:
        try:
            self.r.execute_command("WAITAOF", 1, 0, 1000)
            return "AOF: fsynced (WAITAOF)"
        except redis.ResponseError:
            pass  # Redis before 7.2
        policy = (self.r.config_get("appendfsync") or {}).get("appendfsync", "")
        if policy == "always":
            return "AOF appendfsync always: on disk already"
        if policy == "everysec":
            # Without WAITAOF the only promise is the background fsync once a second.
            self.sleep(1.1)
            return "AOF appendfsync everysec: waited one fsync period (1.1 s; WAITAOF needs Redis 7.2)"
        return f"AOF appendfsync {policy or 'unknown'}: left to the OS"

    # --- reload ---------------------------------------------------------------------------
    def reload(self, actor: c.Actor, timeout_s: float = 30.0) -> c.ReloadResult:
        def run() -> c.ReloadResult:
            from deploy import reload as hot

            if parse_control(self.r.hgetall(self.k.control())).halted:
                # A reload imports and dry-evaluates strategy code: none runs under a halt.
                raise Conflict("halted: no strategy code runs, so no reload either; resume first")
            try:
                res = hot._reload(self.r, self.k, False, hot.REPO_ROOT, timeout_s, lambda _m: None)
            except ReloadError as e:
                if "no worker holds the lease" in str(e):
                    raise Conflict(str(e)) from None
                raise Unavailable(str(e)) from None
            return c.ReloadResult(
                state=res.get("state", ""),
                color=res.get("color", ""),
                modules=res.get("modules", ""),
                error=res.get("error", ""),
                hashes=res.get("hashes", ""),
                at_ms=_int(res.get("at_ms")),
            )

        return self._audited(actor, "reload", "", None, run)

    # --- lifecycle (supervisor) ------------------------------------------------------------
    def programs(self) -> dict[str, str]:
        try:
            return {p["name"]: p["statename"] for p in self.supervisor("getAllProcessInfo")}
        except (OSError, Exception) as e:  # xmlrpc Fault, socket errors
            raise Unavailable(
                f"supervisord is not reachable at {self.s.supervisor_socket}: {e} (is the stack running?)"
            ) from None

    def start(self, actor: c.Actor) -> c.LifecycleResult:
        def run() -> c.LifecycleResult:
            progs = self.programs()
            running = [p for p in WORKER_PROGRAMS if progs.get(p) in _RUNNING]
            if running:
                raise Conflict(f"{', '.join(running)} already running; stop first")
            color = active_color(self.r, self.k)
            name = f"worker-{color}"
            try:
                self.supervisor("startProcess", name, True)
            except Exception as e:
                raise Unavailable(f"supervisor could not start {name}: {e}") from None
            return c.LifecycleResult(action="start", programs=self._worker_states())

        return self._audited(actor, "start", "", None, run)

    def stop(self, actor: c.Actor) -> c.LifecycleResult:
        def run() -> c.LifecycleResult:
            progs = self.programs()
            running = [p for p in WORKER_PROGRAMS if progs.get(p) in _RUNNING]
            if not running:
                raise Conflict("no worker is running")
            for name in running:
                try:
                    # Waits for the graceful stop: the worker finishes its tick, releases the lease.
                    self.supervisor("stopProcess", name, True)
                except Exception as e:
                    raise Unavailable(f"supervisor could not stop {name}: {e}") from None
            return c.LifecycleResult(action="stop", programs=self._worker_states())

        return self._audited(actor, "stop", "", None, run)

    def _worker_states(self) -> dict[str, str]:
        progs = self.programs()
        return {p: progs.get(p, "UNKNOWN") for p in WORKER_PROGRAMS}

    # --- slots ----------------------------------------------------------------------------
    def set_slot_enabled(self, actor: c.Actor, slot_id: str, enabled: bool) -> c.SlotResult:
        action = "enable_slot" if enabled else "disable_slot"

        def change(slot: Slot) -> Slot:
            return msgspec.structs.replace(slot, enabled=enabled)

        return self._audited(actor, action, slot_id, None, lambda: self._update_slot(slot_id, change))

    def patch_slot(self, actor: c.Actor, slot_id: str, patch: c.SlotPatch) -> c.SlotResult:
        def change(slot: Slot) -> Slot:
            return validate_patch(slot, patch, self.s.max_stake_usd)

        return self._audited(actor, "patch_slot", slot_id, patch, lambda: self._update_slot(slot_id, change))

    def _update_slot(self, slot_id: str, change: Callable[[Slot], Slot]) -> c.SlotResult:
        key = self.k.slots()
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, slot_id)
                    if raw is None:
                        raise NotFound(
                            f"no slot {slot_id!r}; slots are {', '.join(self._slot_ids()) or 'none'}"
                        )
                    try:
                        slot = SLOT.decode(raw)
                    except msgspec.DecodeError as e:
                        raise Conflict(f"slot {slot_id!r} holds an unreadable value: {e}") from None
                    new = change(slot)
                    pipe.multi()
                    pipe.hset(key, slot_id, SLOT.encode(new).decode())
                    # Open dashboards redraw at once; workers read slots every tick anyway.
                    pipe.publish(
                        self.k.control_events(), json.dumps({"action": "slot", "seq": 0, "slot": slot_id})
                    )
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue  # another writer changed the slots hash: read again
        return c.SlotResult(changed=new != slot, slot=self.slot(slot_id))

    def _slot_ids(self) -> list[str]:
        return sorted(self.r.hkeys(self.k.slots()))

    def _slot_views(self, only: str | None = None) -> list[c.SlotView]:
        now_ms = self.clock_ms()
        pipe = self.r.pipeline(transaction=False)
        if only is None:
            pipe.hgetall(self.k.slots())
        else:
            pipe.hmget(self.k.slots(), [only])
        pipe.hgetall(self.k.positions_open())
        pipe.hgetall(self.k.decisions())
        pipe.hgetall(self.k.control())
        pipe.hgetall(self.k.feed_status())
        slots_raw, open_raw, decisions_raw, control_raw, feed_raw = pipe.execute()
        if only is not None:
            slots_raw = {only: slots_raw[0]} if slots_raw and slots_raw[0] is not None else {}
        flags = parse_control(control_raw)
        md = status_mod.market_data_view(self.s, feed_raw, now_ms, [])
        positions: dict[str, Any] = {}
        for raw in open_raw.values():
            with contextlib.suppress(msgspec.DecodeError):
                p = POSITION.decode(raw)
                positions[p.id] = p
        configured = set(self.s.slot_ids())
        out = []
        for sid in sorted(slots_raw):
            try:
                slot = SLOT.decode(slots_raw[sid])
                start, end = window_bounds(now_ms, slot.timeframe)
            except (msgspec.DecodeError, ValueError):
                continue  # status reports unreadable slots; a view shows what can be read
            pos = positions.get(f"{sid}:{start}")
            decision = None
            if (d := decisions_raw.get(sid)) is not None:
                with contextlib.suppress(ValueError):
                    decision = json.loads(d)
            blocked = status_mod.entries_blocked(
                {"enabled": slot.enabled, "asset": slot.asset}, md, flags.halted, flags.paused
            )
            out.append(
                c.SlotView(
                    id=sid,
                    asset=slot.asset,
                    timeframe=slot.timeframe,
                    enabled=slot.enabled,
                    stake_usd=slot.stake_usd,
                    strategy=slot.strategy,
                    params=dict(slot.params),
                    configured=sid in configured,
                    window_start_s=start,
                    window_end_s=end,
                    remaining_s=round(max(0.0, end - now_ms / 1000), 3),
                    position=None
                    if pos is None
                    else c.PositionView(
                        id=pos.id,
                        side=pos.side,
                        shares=pos.shares_micros / 1e6,
                        cost_usd=micros_to_usd(pos.cost_micros),
                        status=pos.status,
                        pnl_usd=micros_to_usd(pos.pnl_micros),
                    ),
                    last_decision=decision if isinstance(decision, dict) else None,
                    entries_blocked="; ".join(blocked),
                )
            )
        return out

    # --- control.json and other generic callers --------------------------------------------
    def apply(self, actor: c.Actor, cmd: c.Command) -> msgspec.Struct:
        """Carry out one command (a control.json file, `baton` scripts): the same operation
        the API's endpoint of that name runs."""
        if isinstance(cmd, c.HaltCommand):
            return self.halt(actor, c.HaltBody(reason=cmd.reason))
        if isinstance(cmd, c.PauseCommand):
            return self.pause(actor, c.PauseBody(reason=cmd.reason))
        if isinstance(cmd, c.ResumeCommand):
            return self.resume(actor)
        if isinstance(cmd, c.ReloadCommand):
            return self.reload(actor)
        if isinstance(cmd, c.StartCommand):
            return self.start(actor)
        if isinstance(cmd, c.StopCommand):
            return self.stop(actor)
        if isinstance(cmd, c.EnableSlotCommand):
            return self.set_slot_enabled(actor, cmd.slot, True)
        if isinstance(cmd, c.DisableSlotCommand):
            return self.set_slot_enabled(actor, cmd.slot, False)
        if isinstance(cmd, c.PatchSlotCommand):
            return self.patch_slot(actor, cmd.slot, c.SlotPatch(stake_usd=cmd.stake_usd, params=cmd.params))
        raise BadRequest(f"unknown command {type(cmd).__name__}")

    # --- audit ----------------------------------------------------------------------------
    def _audited(self, actor: c.Actor, action: str, target: str, args: Any, fn: Callable[[], Any]) -> Any:
        try:
            with self._redis_errors():
                res = fn()
        except OpError as e:
            self.audit(actor, action, target, args, "refused", e.status, e.message)
            raise
        self.audit(actor, action, target, args, "ok", 200, _summary(res))
        return res

    def audit(
        self, actor: c.Actor, action: str, target: str, args: Any, result: str, status: int, detail: str
    ) -> None:
        fields = {
            "at_ms": self.clock_ms(),
            "source": actor.source,
            "who": actor.who,
            "token_id": actor.token_id,
            "action": action,
            "target": target,
            "args": msgspec.json.encode(args).decode() if args is not None else "",
            "result": result,
            "status": status,
            "detail": detail[:500],
        }
        # An audit line that cannot be written must not undo the call it records: the call
        # already happened. A Redis that refuses it refused the call too, and said so.
        with contextlib.suppress(redis.RedisError):
            self.r.xadd(self.k.audit(), fields, maxlen=AUDIT_MAXLEN, approximate=True)

    @contextlib.contextmanager
    def _redis_errors(self) -> Any:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise Unavailable(f"cannot reach Redis at {self.s.redis_url_shown}: {e}") from None


def active_color(r: redis.Redis, k: Keys) -> str:
    """The colour that should trade: the lease's (a crashed holder's expired lease still
    names it), else the last successful deploy's or rollback's (a clean stop deletes the
    lease), else blue. Starting the other colour would run an older release."""
    color = r.hget(k.lease(), "color")
    if color in ("blue", "green"):
        return str(color)
    for _id, f in r.xrevrange(k.deploys(), count=50):
        if f.get("result") == "ok" and f.get("color") in ("blue", "green"):
            return str(f["color"])
    return "blue"


def validate_patch(slot: Slot, patch: c.SlotPatch, max_stake_usd: float) -> Slot:
    """The slot with the patch applied, or BadRequest naming the bad field. Parameters must
    be ones the slot's strategy reads (its DEFAULTS), finite, and within its PARAM_BOUNDS."""
    if patch.stake_usd is None and patch.params is None:
        raise BadRequest("nothing to change: give stake_usd and/or params")
    new = slot
    if patch.stake_usd is not None:
        stake = patch.stake_usd
        if not math.isfinite(stake) or stake <= 0:
            raise BadRequest(f"stake_usd must be a positive number, not {stake}")
        if stake > max_stake_usd:
            raise BadRequest(f"stake_usd {stake} is above the risk limit BATON_MAX_STAKE_USD={max_stake_usd}")
        new = msgspec.structs.replace(new, stake_usd=stake)
    if patch.params is not None:
        try:
            mod = importlib.import_module(f"worker.strategies.{slot.strategy}")
        except Exception as e:
            raise Conflict(f"strategy {slot.strategy!r} of slot {slot.id!r} cannot be loaded: {e}") from None
        known = dict(getattr(mod, "DEFAULTS", {}))
        bounds = dict(getattr(mod, "PARAM_BOUNDS", {}))
        params = dict(new.params)
        for name, value in patch.params.items():
            if name not in known:
                raise BadRequest(
                    f"strategy {slot.strategy!r} has no parameter {name!r}; it has {', '.join(sorted(known))}"
                )
            if not math.isfinite(value):
                raise BadRequest(f"params.{name} must be a finite number, not {value}")
            lo, hi = bounds.get(name, (-math.inf, math.inf))
            if not lo <= value <= hi:
                raise BadRequest(f"params.{name}={value} is outside [{lo}, {hi}]")
            params[name] = float(value)
        check = getattr(mod, "check_params", None)
        if check is not None:
            problem = check({**known, **params})
            if problem:
                raise BadRequest(f"params: {problem}")
        new = msgspec.structs.replace(new, params=params)
    return new


def _who(actor: c.Actor) -> str:
    return f"{actor.source}:{actor.who}"


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _summary(res: Any) -> str:
    if isinstance(res, c.HaltResult):
        return f"seq={res.seq} acknowledged={res.acknowledged} ack_ms={res.ack_ms} {res.worker}".strip()
    if isinstance(res, c.FlagResult):
        return f"changed={res.changed} seq={res.control.seq}"
    if isinstance(res, c.SlotResult):
        return f"changed={res.changed}"
    if isinstance(res, c.ReloadResult):
        return f"{res.state} {res.modules}".strip()
    if isinstance(res, c.LifecycleResult):
        return " ".join(f"{k}={v}" for k, v in res.programs.items())
    return ""
