"""Stops: a halt (or pause) is never refused for its body. An emergency stop must stop: a body
that is wrong is carried out with what can be kept of its reason (`read_stop_body`,
`reason_of`), and what was wrong comes back as warnings. Both doors use it: the HTTP API
(api/app.py) and the control file (api/control_file.py); the bodies are control/commands.py's.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from control.commands import REASON_MAX, HaltBody, PauseBody

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
