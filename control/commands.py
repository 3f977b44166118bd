"""The control plane's vocabulary: request bodies, results and errors, as msgspec structs.

One schema for every door: the HTTP API decodes its request bodies into these structs, a
command written to `var/control.json` is a `Command` (the same bodies, tagged by `action`),
and the CLI builds them too; the modules of control/ carry them out. The OpenAPI document is
generated from these types, so it cannot drift from the code.

    {"action": "halt", "reason": "venue looks wrong"}
    {"action": "patch_slot", "slot": "btc-15m", "stake_usd": 3, "params": {"edge": 0.05}}
    {"action": "add_slot", "id": "eth-1h", "asset": "eth", "timeframe": "1h", "strategy": "snipe"}
    {"action": "remove_slot", "slot": "eth-1h"}
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from baton.errors import BadRequest
from state.structs import DecisionLogEntry

REASON_MAX = 200


# --- request bodies -------------------------------------------------------------------------
class HaltBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /halt: emergency stop. No strategy code runs after it; open venue orders are
    cancelled; the flag stands, across restarts and deploys, until POST /resume."""

    reason: str = "operator halt"


class PauseBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /pause: no new entries; open positions still settle."""

    reason: str = "operator pause"


class EmptyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A call that takes no parameters (an empty body, or `{}`)."""


class SlotPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """PATCH /slots/{id}: what to change; what is left out stays. Parameters are validated
    against the strategy's declarations (DEFAULTS, PARAM_BOUNDS, check_params); given with a
    new strategy they are the new one's. Switching strategy drops the parameters the new one
    does not declare (the answer's notes name them)."""

    stake_usd: float | None = None
    params: dict[str, float] | None = None
    strategy: str | None = None
    enabled: bool | None = None


class SlotNew(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /slots: a new slot, trading from the worker's next tick. `id` is free-form
    ([a-z0-9][a-z0-9._-]{0,63}): two slots may trade one asset and timeframe with different
    strategies. `stake_usd` defaults to the stack's BATON_STAKE_USD; parameters left out take
    the strategy's declared defaults."""

    id: str
    asset: str
    timeframe: str
    strategy: str
    stake_usd: float | None = None
    params: dict[str, float] = msgspec.field(default_factory=dict)
    enabled: bool = True


class SlotRemove(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """DELETE /slots/{id}: refused while the slot holds an open position or intent in its
    current window, unless `force` (the position then settles, but no exit of it is made)."""

    force: bool = False


# --- control.json: the same bodies, tagged by `action` ---------------------------------------
class _Tagged(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="action"):
    pass


class HaltCommand(HaltBody, _Tagged, tag="halt"):
    pass


class PauseCommand(PauseBody, _Tagged, tag="pause"):
    pass


class ResumeCommand(_Tagged, tag="resume"):
    pass


class ReloadCommand(_Tagged, tag="reload"):
    pass


class StartCommand(_Tagged, tag="start"):
    pass


class StopCommand(_Tagged, tag="stop"):
    pass


class EnableSlotCommand(_Tagged, tag="enable_slot"):
    slot: str


class DisableSlotCommand(_Tagged, tag="disable_slot"):
    slot: str


class PatchSlotCommand(SlotPatch, _Tagged, tag="patch_slot"):
    slot: str


class AddSlotCommand(SlotNew, _Tagged, tag="add_slot"):
    pass


class RemoveSlotCommand(SlotRemove, _Tagged, tag="remove_slot"):
    slot: str


Command = (
    HaltCommand
    | PauseCommand
    | ResumeCommand
    | ReloadCommand
    | StartCommand
    | StopCommand
    | EnableSlotCommand
    | DisableSlotCommand
    | PatchSlotCommand
    | AddSlotCommand
    | RemoveSlotCommand
)
COMMAND_DECODER = msgspec.json.Decoder(Command)


# --- who asked ------------------------------------------------------------------------------
class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who made a call, for the audit stream: the door (api, cli, file), a name (the token
    id for the API, the unix user for the CLI and the file) and the token id when there is one."""

    source: Literal["api", "cli", "file", "worker"]
    who: str
    token_id: str = ""


# --- results --------------------------------------------------------------------------------
class ControlView(msgspec.Struct, kw_only=True):
    halted: bool
    halt_reason: str
    halted_ms: int
    halted_by: str
    paused: bool
    pause_reason: str
    # Bumped by every halt, pause and resume.
    seq: int
    # Values in the control hash that could not be read (halt and pause then fail safe: on).
    problems: list[str]


class HaltResult(msgspec.Struct, kw_only=True):
    halted: bool
    seq: int
    # The active worker said it is halted (no order can be posted any more) within the
    # timeout; false when no worker is active (the flag stands, and binds the next one).
    acknowledged: bool
    # Milliseconds from the flag being set to the worker's acknowledgement.
    ack_ms: int | None
    worker: str
    # What the worker did about open orders at the venue, and how the ledger was flushed.
    cancel: str
    flush: str
    control: ControlView
    # What was wrong with the request, which was carried out anyway (a halt is never refused
    # for its body): "reason truncated to 200 characters", "unknown field 'foo' ignored", ...
    warnings: list[str] = []


class FlagResult(msgspec.Struct, kw_only=True):
    action: str
    # False when the flags already said so (a second pause is not an error).
    changed: bool
    control: ControlView
    # As HaltResult's: what was wrong with a pause that was carried out anyway.
    warnings: list[str] = []


class ReloadResult(msgspec.Struct, kw_only=True):
    state: str
    color: str
    modules: str
    error: str
    hashes: str
    at_ms: int


class LifecycleResult(msgspec.Struct, kw_only=True):
    action: str
    # supervisor program name -> state after the call (RUNNING, STOPPED, ...).
    programs: dict[str, str]


class PositionView(msgspec.Struct, kw_only=True):
    id: str
    side: str
    shares: float  # held now (after any exits)
    cost_usd: float  # what the shares held cost, fees included
    status: str  # open, settled, or closed (sold out by exits)
    pnl_usd: float  # realised so far: its exits' PnL, and the settlement's
    sold_shares: float = 0.0  # sold by exits
    proceeds_usd: float = 0.0  # what the exits brought in, net of their fees
    exits: int = 0  # exit legs booked


class SlotView(msgspec.Struct, kw_only=True):
    id: str
    asset: str
    timeframe: str
    enabled: bool
    stake_usd: float
    strategy: str
    params: dict[str, float]
    # Whether the running settings still configure this slot (an old one stays in Redis).
    configured: bool
    window_start_s: int
    window_end_s: int
    remaining_s: float
    position: PositionView | None
    # The slot's last decision as the tick recorded it (keys.decisions()), or None.
    last_decision: dict[str, Any] | None
    # Why no entry would be made now ("" when one could): halted, paused, disabled, stale data.
    entries_blocked: str
    # The newest entry of the slot's decision log (control/decisions.py): a buy, sell or pass
    # with its reason, or None before its first evaluation.
    last_log: DecisionLogEntry | None = None
    # The strategy sleeps until then (keys.slot_wakes(): it wants no quotes earlier in this
    # window), or None when it is awake.
    asleep_until_ms: int | None = None


class SlotsResult(msgspec.Struct, kw_only=True):
    slots: list[SlotView]


class SlotResult(msgspec.Struct, kw_only=True):
    changed: bool
    slot: SlotView
    # What the change did besides (parameters dropped by a switch of strategy).
    notes: list[str] = msgspec.field(default_factory=list)


class StrategyView(msgspec.Struct, kw_only=True):
    name: str
    # Its declared parameters: name -> default, and name -> [low, high] where bounded.
    defaults: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    exits: bool
    # Why it cannot be used ("" when it can): a module that does not load.
    error: str = ""


class StrategiesResult(msgspec.Struct, kw_only=True):
    strategies: list[StrategyView]


class SlotRemoved(msgspec.Struct, kw_only=True):
    removed: str
    # What the removal left behind (an open position that now settles without its slot).
    notes: list[str] = msgspec.field(default_factory=list)


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    at_ms: int
    source: str
    who: str
    token_id: str
    action: str
    target: str
    args: str
    result: str
    status: int
    detail: str
    # What was wrong with a halt or pause that was carried out anyway.
    warnings: list[str] = []


class AuditResult(msgspec.Struct, kw_only=True):
    entries: list[AuditEntry]


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer: what was wrong, and the HTTP status."""

    error: str
    status: int


def decode_body(raw: bytes, typ: type[Any]) -> Any:
    """A request body as `typ`; an empty body is `{}`. Raises BadRequest saying what was wrong
    (msgspec's message carries the path of the bad field)."""
    try:
        return msgspec.json.decode(raw.strip() or b"{}", type=typ)
    except msgspec.ValidationError as e:
        raise BadRequest(f"bad request body: {e}") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:  # msgspec's own error for bytes that are not UTF-8
        raise BadRequest(f"request body is not valid UTF-8: {e}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


def decode_command(raw: bytes) -> Command:
    try:
        return COMMAND_DECODER.decode(raw)
    except msgspec.ValidationError as e:
        raise BadRequest(f"bad command: {e}") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"command is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise BadRequest(f"command is not valid UTF-8: {e}") from None
    except RecursionError:
        raise BadRequest("command is nested too deeply") from None
