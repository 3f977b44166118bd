"""Counting what goes over the wire to Redis: round trips and commands of every redis-py
connection of the process, async and sync apart."""

from __future__ import annotations

from typing import Any

import redis.asyncio.connection as aconn
import redis.connection as sconn

from state.connection import HiredisPacking


class Wire:
    """Counts what every redis-py connection of this process sends: round trips (one per
    `send_packed_command`: a command, or a whole pipeline) and commands, async and sync apart.
    Installed by patching the connection classes; `uninstall` puts them back."""

    def __init__(self) -> None:
        self.n = {"async_rt": 0, "sync_rt": 0, "async_cmds": 0, "sync_cmds": 0}
        self._saved: list[tuple[Any, str, Any]] = []

    def snapshot(self) -> dict[str, int]:
        return dict(self.n)

    @staticmethod
    def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: b[k] - a[k] for k in a}

    def _patch(self, cls: Any, name: str, make: Any) -> None:
        orig = cls.__dict__[name]
        self._saved.append((cls, name, orig))
        setattr(cls, name, make(orig))

    def install(self) -> Wire:
        n = self.n

        def async_send(orig: Any) -> Any:
            async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
                n["async_rt"] += 1
                await orig(conn, command, check_health)

            return send_packed_command

        def async_pack(orig: Any) -> Any:
            def pack_command(conn: Any, *args: Any) -> Any:
                n["async_cmds"] += 1
                return orig(conn, *args)

            return pack_command

        def sync_send(orig: Any) -> Any:
            def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
                n["sync_rt"] += 1
                orig(conn, command, check_health)

            return send_packed_command

        def sync_one(orig: Any) -> Any:
            def send_command(conn: Any, *args: Any, **kw: Any) -> None:
                n["sync_cmds"] += 1
                orig(conn, *args, **kw)

            return send_command

        def sync_many(orig: Any) -> Any:
            def pack_commands(conn: Any, commands: Any) -> Any:
                commands = list(commands)
                n["sync_cmds"] += len(commands)
                return orig(conn, commands)

            return pack_commands

        self._patch(aconn.AbstractConnection, "send_packed_command", async_send)
        self._patch(aconn.AbstractConnection, "pack_command", async_pack)
        self._patch(HiredisPacking, "pack_command", async_pack)  # state.connection's own packer
        self._patch(sconn.AbstractConnection, "send_packed_command", sync_send)
        self._patch(sconn.AbstractConnection, "send_command", sync_one)
        self._patch(sconn.AbstractConnection, "pack_commands", sync_many)
        return self

    def uninstall(self) -> None:
        for cls, name, orig in reversed(self._saved):
            setattr(cls, name, orig)
        self._saved.clear()
