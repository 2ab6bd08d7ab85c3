"""Members of a cluster: each one's heartbeat and load in `cluster_members`, and what
`headend status` shows of them (members, the leases each holds, their load).

A member is alive while its heartbeat is younger than `lease_s`: the live count sets each
member's fair share of the shards (leases.py). A member that stops cleanly deletes its row."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage import Database
from headend.storage.types import iso_or_none

__all__ = ["cluster_report", "forget", "heartbeat", "live_members"]

_HEARTBEAT = text(
    """
    INSERT INTO cluster_members (instance_id, host, pid, started_at, heartbeat_at, load)
    VALUES (:me, :host, :pid, now(), now(), CAST(:load AS json))
    ON CONFLICT (instance_id) DO UPDATE
    SET heartbeat_at = now(), load = EXCLUDED.load, host = EXCLUDED.host, pid = EXCLUDED.pid
    """
)
_LIVE = text(
    "SELECT count(*) FROM cluster_members "
    "WHERE heartbeat_at > now() - make_interval(secs => :lease_s)"
)


async def heartbeat(session: AsyncSession, me: str, load: Mapping[str, Any]) -> None:
    await session.execute(
        _HEARTBEAT,
        {"me": me, "host": socket.gethostname(), "pid": os.getpid(), "load": json.dumps(load)},
    )


async def live_members(session: AsyncSession, lease_s: float) -> int:
    return int((await session.execute(_LIVE, {"lease_s": lease_s})).scalar_one())


async def forget(session: AsyncSession, me: str) -> None:
    await session.execute(text("DELETE FROM cluster_members WHERE instance_id = :me"), {"me": me})


async def cluster_report(db: Database, lease_s: float) -> dict[str, Any]:
    """Members (alive or not, newest heartbeat first), the leases each holds, and their load."""
    async with db.session() as session:
        members = (
            await session.execute(
                text(
                    "SELECT instance_id, host, pid, started_at, heartbeat_at, load, "
                    "heartbeat_at > now() - make_interval(secs => :lease_s) AS alive "
                    "FROM cluster_members ORDER BY instance_id"
                ),
                {"lease_s": lease_s},
            )
        ).all()
        leases = (
            await session.execute(
                text(
                    "SELECT name, holder, epoch, expires_at, expires_at > now() AS valid "
                    "FROM cluster_leases ORDER BY name"
                )
            )
        ).all()
    held: dict[str, list[str]] = {}
    unheld: list[str] = []
    for lease in leases:
        if lease.holder is not None and lease.valid:
            held.setdefault(lease.holder, []).append(lease.name)
        else:
            unheld.append(lease.name)
    return {
        "members": [
            {
                "instance_id": m.instance_id,
                "host": m.host,
                "pid": m.pid,
                "alive": bool(m.alive),
                "started_at": iso_or_none(m.started_at),
                "heartbeat_at": iso_or_none(m.heartbeat_at),
                "leases": len(held.get(m.instance_id, [])),
                "lines": [n for n in held.get(m.instance_id, []) if n.startswith("line:")],
                "load": _load(m.load),
            }
            for m in members
        ],
        "leases": len(leases),
        "unheld_leases": unheld,
    }


def _load(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = json.loads(raw)
    return dict(raw) if isinstance(raw, Mapping) else {}
