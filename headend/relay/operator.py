"""Operator commands (`headend relay --meter ID disconnect|reconnect --reason TEXT`), created
from the CLI's own process: they go into the database, where a running daemon's scan finds
them within about a second."""

from __future__ import annotations

from headend.domain import ACTIONS
from headend.storage import Repository

__all__ = ["create_operator_command"]


async def create_operator_command(
    repository: Repository, meter_id: str, action: str, reason: str
) -> str:
    """An operator override (`headend relay --meter ID disconnect|reconnect --reason TEXT`).

    Sets the meter's desired state, supersedes its active command and queues this one, in
    one transaction; a running daemon picks it up on its next scan (about a second). Returns
    the command id. Raises UnknownMeter, or ValueError for an unknown action / empty reason."""
    if action not in ACTIONS:
        raise ValueError(f"action must be disconnect or reconnect, got {action!r}")
    if not reason or not reason.strip():
        raise ValueError("an operator command needs a reason")
    command, _superseded = await repository.create_command(
        meter_id, action, source="operator", reason=f"operator: {reason.strip()}"
    )
    return command.command_id
