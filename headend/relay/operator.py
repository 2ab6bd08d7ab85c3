"""Operator commands (`headend relay --meter ID disconnect|reconnect --reason TEXT [--hold]`,
`headend relay --meter ID release --reason TEXT`, `headend meters protect|unprotect`), made
from the CLI's own process: they go into the database, where a running daemon's scan finds
them within about a second. Given a `Notifier` (over the durable outbox), what they change is
announced in the same transaction: the daemon's outbox drains the table whichever process
wrote the rows."""

from __future__ import annotations

from datetime import UTC, datetime

from headend import domain
from headend.domain import ACTIONS
from headend.mqtt.notifier import Notifier
from headend.relay.decision import Superseded
from headend.relay.messages import publish_alarm, publish_command
from headend.storage import Repository
from headend.storage.protection import ProtectionChange
from headend.storage.records import CommandInfo, Release

__all__ = ["create_operator_command", "release_operator_hold", "set_protection"]


def _reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise ValueError("an operator command needs a reason")
    return reason.strip()


async def create_operator_command(
    repository: Repository,
    meter_id: str,
    action: str,
    reason: str,
    *,
    hold: bool = False,
    notifier: Notifier | None = None,
) -> str:
    """An operator override (`headend relay --meter ID disconnect|reconnect --reason TEXT`).

    Supersedes the meter's active command and queues this one, in one transaction; a running
    daemon picks it up on its next scan (about a second). Without `hold` it sets the meter's
    desired state (the next balance event may change it again); with `hold` it pins the
    relay there until `release_operator_hold`, whatever billing says meanwhile. Returns the
    command id. Raises UnknownMeter, HoldConflict (a held meter takes only --hold), or
    ValueError for an unknown action / empty reason."""
    if action not in ACTIONS:
        raise ValueError(f"action must be disconnect or reconnect, got {action!r}")
    why = f"operator: {_reason(reason)}"
    async with repository.db.transaction():
        command, _superseded = await repository.create_command(
            meter_id, action, source="operator", reason=why, hold=hold
        )
        if notifier is not None:
            publish_command(notifier, command, domain.QUEUED, datetime.now(UTC))
    return command.command_id


async def release_operator_hold(
    repository: Repository, meter_id: str, reason: str, *, notifier: Notifier | None = None
) -> Release:
    """Lift an operator's hold: the meter goes where its newest balance says (a command when
    it is not there yet, which a running daemon picks up like any other). Raises
    UnknownMeter, HoldConflict (not held), or ValueError for an empty reason."""
    why = _reason(reason)
    async with repository.db.transaction():
        release = await repository.release_hold(meter_id, why)
        if notifier is not None:
            _announce(notifier, meter_id, release.superseded, release.command, datetime.now(UTC))
    return release


async def set_protection(
    repository: Repository,
    meter_id: str,
    reason: str,
    protected: bool,
    *,
    notifier: Notifier | None = None,
) -> ProtectionChange:
    """`headend meters protect|unprotect ID --reason TEXT`: the flag, and what it means for
    the relay (relay/protection.py), with its messages, in one transaction; a running daemon
    picks up a command it created on its next scan. Raises UnknownMeter or ValueError (an
    empty reason)."""
    why = _reason(reason)
    async with repository.db.transaction():
        change = await repository.set_protected(meter_id, why, protected)
        if notifier is not None:
            now = datetime.now(UTC)
            _announce(notifier, meter_id, change.superseded, change.command, now)
            if change.alarm is not None:
                publish_alarm(notifier, change.alarm)
            if change.scheduled_at is not None:
                notifier.notification(
                    domain.DISCONNECT_SCHEDULED,
                    meter_id,
                    now,
                    extra={"scheduled_at": change.scheduled_at.isoformat()},
                )
    return change


def _announce(
    notifier: Notifier,
    meter_id: str,
    superseded: tuple[Superseded, ...],
    command: CommandInfo | None,
    now: datetime,
) -> None:
    """The commands an operator's step gave up (superseded is not a fault: its own status,
    and why) and the one it queued."""
    for old in superseded:
        notifier.command(
            command_id=old.command_id,
            meter_id=meter_id,
            action=old.action,
            status=old.status,
            attempt=0,
            ts=now,
            detail=old.reason,
        )
    if command is not None:
        publish_command(notifier, command, domain.QUEUED, now)
