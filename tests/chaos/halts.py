"""When, by the harness's fault log, no order may reach the venue: from a halt (or a garbage
halted/paused flag) taking hold until its resume or cleanup was sent; and when no entry may be
committed in a scope: while garbage in a value the entry checks read stood (issue #23 §2).
Both the tick and the order invariants of the chaos checker judge by these windows.
"""

from __future__ import annotations

from typing import Any

# How long after a halt flag that nobody acknowledged (or a garbage flag) an order already
# on its way may still reach the venue: the tick in progress finishes its posts.
UNACKED_GRACE_TICKS = 2
UNACKED_GRACE_MS = 1000


def halt_windows(faults: list[dict[str, Any]], tick_ms: int) -> list[tuple[int, int, str]]:
    """(from_ms, until_ms, label): from when no order may reach the venue until the resume was
    sent. After an acknowledged halt that is the acknowledgement; after a flag nobody
    acknowledged (no worker listening, or garbage in the hash) the tick in progress may finish."""
    grace = UNACKED_GRACE_TICKS * tick_ms + UNACKED_GRACE_MS
    out: list[tuple[int, int, str]] = []
    for f in faults:
        det = f.get("details") or {}
        label = f"{f['kind']} #{f['seq']}"
        if f["kind"] in ("halt", "garbage-keys") and det.get("halted_ms") and det.get("resume_sent_ms"):
            if det.get("acknowledged") and det.get("ack_ms") is not None:
                start = int(det["halted_ms"]) + int(det["ack_ms"])
            else:
                start = int(det["halted_ms"]) + grace
            out.append((start, int(det["resume_sent_ms"]), label))
        elif f["kind"] == "garbage-keys" and det.get("field") == "halted" and det.get("written_ms"):
            out.append((int(det["written_ms"]) + grace, int(det["cleanup_sent_ms"]), label))
    return out


def pause_windows(faults: list[dict[str, Any]], tick_ms: int) -> list[tuple[int, int, str]]:
    grace = UNACKED_GRACE_TICKS * tick_ms + UNACKED_GRACE_MS
    out: list[tuple[int, int, str]] = []
    for f in faults:
        det = f.get("details") or {}
        if f["kind"] == "garbage-keys" and det.get("field") == "paused" and det.get("cleanup_sent_ms"):
            label = f"garbage-keys #{f['seq']}"
            out.append((int(det["written_ms"]) + grace, int(det["cleanup_sent_ms"]), label))
    return out


def blocked_windows(faults: list[dict[str, Any]], tick_ms: int) -> list[tuple[int, int, str, str]]:
    """(from_ms, until_ms, scope, label): while garbage stood in a value the entry checks read
    (tests/chaos/value_faults.py), or in a slot's value (garbage-keys), no intent in `scope`
    ('all', 'slot <id>', 'asset <name>') may be committed until the repair: from when the worker
    showed it in baton:blocked (the tick that wrote it there made no entry in its scope), or,
    where that is not known, two ticks and a second after the write (the tick in progress may
    have read before it)."""
    grace = UNACKED_GRACE_TICKS * tick_ms + UNACKED_GRACE_MS
    out: list[tuple[int, int, str, str]] = []
    for f in faults:
        det = f.get("details") or {}
        label = f"{f['kind']} #{f['seq']}"
        if f["kind"] == "garbage-values" and det.get("repaired_ms"):
            start = det.get("shown_ms") or int(det["written_ms"]) + grace
            for b in det.get("blocked", ()):
                out.append((int(start), int(det["repaired_ms"]), b["scope"], label))
        elif f["kind"] == "garbage-keys" and det.get("variant") == "slot" and det.get("restored_ms"):
            scope = f"slot {det['field']}"
            out.append((int(det["written_ms"]) + grace, int(det["restored_ms"]), scope, label))
    return out


def in_scope(scope: str, slot_id: str) -> bool:
    kind, _, name = scope.partition(" ")
    if kind == "slot":
        return slot_id == name
    if kind == "asset":
        return slot_id.split("-", 1)[0] == name
    return kind == "all"
