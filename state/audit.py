"""The audit stream: one entry per mutating control call (from the API, the CLI or
control.json), carried out or refused, capped."""

from __future__ import annotations

from typing import Any

from state.repo import Repo

AUDIT_MAXLEN = 10_000


class AuditRepo(Repo):
    def append(self, fields: dict[str, Any], pipeline: Any = None) -> Any:
        return (self.r if pipeline is None else pipeline).xadd(
            self.k.audit(), fields, maxlen=AUDIT_MAXLEN, approximate=True
        )
