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

import re
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


# --- stops: a halt (or pause) is never refused for its body -----------------------------------
# An emergency stop must stop. A halt or pause whose body is wrong (not JSON, not UTF-8, an
# unknown field, a reason too long, too big) is carried out with what can be kept of its
# reason, and what was wrong comes back in the answer's `warnings`. They can only make the bot
# do less; every other command (resume first) stays strict. Authentication is not relaxed.
STOP_BODIES: dict[str, type[HaltBody] | type[PauseBody]] = {"halt": HaltBody, "pause": PauseBody}
# The text of a reason salvaged from a body that is not JSON: `"reason": "..."` anywhere in it.
_REASON_IN_TEXT = re.compile(r'"reason"\s*:\s*("(?:[^"\\]|\\.)*)')
# A stop that does not parse as JSON (control.json): `"action": "halt"` in it, or a bare word.
_ACTION_IN_TEXT = re.compile(r'"action"\s*:\s*"(halt|pause)"|\A\s*(halt|pause)\b')
_LISTED = 10
# Untyped JSON decoders (msgspec's and the standard library's) recurse in C for every level of
# nesting and can overflow the C stack before Python's recursion limit stops them (a segfault
# of the api, seen with 30,000 levels): a body nested deeper than this is not decoded at all.
MAX_NESTING = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def nested_too_deep(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether JSON text opens more than `limit` arrays or objects inside each other (brackets
    inside strings do not count). Ask before handing text to an untyped JSON decoder."""
    depth = 0
    for b in _BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if b in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def stop_action_in(raw: bytes) -> str:
    """'halt' or 'pause' when a control.json that is not a valid command still says it is one
    (`"action": "halt"` in broken JSON, or the bare word), else ''."""
    m = _ACTION_IN_TEXT.search(raw.decode("utf-8", "replace"))
    return (m.group(1) or m.group(2)) if m else ""


def read_stop_body(
    raw: bytes,
    typ: type[HaltBody] | type[PauseBody],
    *,
    cut_at: int = 0,
    ignore: frozenset[str] = frozenset(),
) -> tuple[Any, list[str]]:
    """The body of a halt or pause, never refused: (the body, what was wrong with it).

    `cut_at`: the body went on past this many bytes, and only those were read. `ignore`: keys
    that belong to the door, not the body (control.json's `action`). The reason is only
    taken here; reason_of() makes it one line of at most REASON_MAX characters."""
    warnings: list[str] = []
    if cut_at:
        warnings.append(f"body is over {cut_at} bytes: only the first {cut_at} were read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        warnings.append("body is not valid UTF-8: the bytes that are not were replaced")
    default = typ().reason
    if not text.strip():
        return typ(), warnings
    try:
        if nested_too_deep(raw):
            raise msgspec.DecodeError(f"nested deeper than {MAX_NESTING} levels")
        value = msgspec.json.decode(text.encode("utf-8", "replace"))
    except (msgspec.DecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        reason = _salvaged_reason(text)
        kept = "its reason field" if reason is not None else "its first characters"
        warnings.append(f"body is not JSON ({e}): {kept} kept as the reason")
        return typ(reason=reason if reason is not None else text), warnings
    if isinstance(value, str):
        warnings.append("body is a JSON string, not an object: kept as the reason")
        return typ(reason=value), warnings
    if not isinstance(value, dict):
        warnings.append(f"body is a JSON {_json_type(value)}, not an object: its text kept as the reason")
        return typ(reason=text), warnings
    known = set(typ.__struct_fields__) | ignore
    unknown = [str(k) for k in value if k not in known]
    warnings += [f"unknown field {k[:60]!r} ignored" for k in unknown[:_LISTED]]
    if len(unknown) > _LISTED:
        warnings.append(f"{len(unknown) - _LISTED} more unknown fields ignored")
    reason = value.get("reason", default)
    if not isinstance(reason, str):
        warnings.append(f"reason is a JSON {_json_type(reason)}, not a string: its JSON text kept")
        reason = msgspec.json.encode(reason).decode()
    return typ(reason=reason), warnings


def reason_of(text: str, default: str, warnings: list[str]) -> str:
    """A stop's reason as it is kept: valid UTF-8, one line (it lands in logs, the audit
    stream and redis-cli), at most REASON_MAX characters; what had to change is appended
    to `warnings`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: bytes a shell passed that are not UTF-8 (surrogateescape), or an
        # escape in JSON that encodes no character.
        text = text.encode("utf-8", "surrogateescape" if _escaped(text) else "replace").decode(
            "utf-8", "replace"
        )
        warnings.append("reason is not valid UTF-8: the bytes that are not were replaced")
    text = " ".join(text.split())
    if len(text) > REASON_MAX:
        warnings.append(f"reason truncated to {REASON_MAX} characters (it had {len(text)})")
        text = text[:REASON_MAX].rstrip()
    return text or default


def _escaped(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _salvaged_reason(text: str) -> str | None:
    m = _REASON_IN_TEXT.search(text)
    if m is None:
        return None
    # Closed again: the body may have been cut off in the middle of the string.
    try:
        got = msgspec.json.decode((m.group(1) + '"').encode("utf-8", "replace"))
    except msgspec.DecodeError:
        return m.group(1)[1:]  # a raw control character, a bad escape: the text as written
    return got if isinstance(got, str) else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"
