"""What `headend read/relay --meter ID` needs from the database: the meter's connection
parameters (secrets decrypted under the master key), the installation's system title and
invocation counters, the operator override command, and the release of an operator's hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from drivers.connect import MeterConnection, associated_session
from drivers.session import DlmsSession
from headend.cli.common import fail, load_cli_config
from headend.meters.counters import invocation_counter_store
from headend.meters.inventory import load_meter
from headend.meters.secrets import SecretsError
from headend.mqtt.durable_outbox import DurableOutbox
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.prepaid.quiet_hours import QuietHours
from headend.relay.operator import create_operator_command, release_operator_hold, set_protection
from headend.storage import Database, HoldConflict, Repository, UnknownMeter, installation

T = TypeVar("T")


@dataclass(frozen=True)
class StoredMeter:
    """A meter of the inventory, reached as the daemon reaches it: under the installation's
    system title, with invocation counters reserved from the same database store. A counter
    of its own beside the daemon's, under the same title and key, would sooner or later send
    one GCM nonce twice."""

    meter_id: str
    connection: MeterConnection
    database_url: str

    @asynccontextmanager
    async def session(self, timeout: float) -> AsyncIterator[DlmsSession]:  # noqa: ASYNC109 - per request
        db = await Database.open(self.database_url, run_migrations=False)
        try:
            counters = invocation_counter_store(Repository(db), self.meter_id)
            async with associated_session(
                self.connection, timeout=timeout, ic_store=counters
            ) as session:
                yield session
        finally:
            await db.dispose()


def stored_meter(meter_id: str, config_path: Path | None) -> StoredMeter:
    config = load_cli_config(config_path)

    async def lookup() -> StoredMeter | None:
        db = await Database.open(config.database.url)
        try:
            record = await load_meter(db, meter_id, config.open_master_key(generate=False))
            if record is None:
                return None
            title = await installation.system_title(db)
        finally:
            await db.dispose()
        connection = record.connection(client_system_title=title)
        return StoredMeter(meter_id, connection, config.database.url)

    try:
        meter = asyncio.run(lookup())
    except SecretsError as exc:
        fail(f"secrets: {exc}", 2)
    if meter is None:
        fail(f"meter {meter_id} is not in the inventory", 1)
    return meter


def operator_override(
    meter_id: str, action: str, reason: str, config_path: Path | None, *, hold: bool = False
) -> str:
    """A durable operator command: the running daemon executes it like any other, at once."""
    return _with_repository(
        meter_id,
        config_path,
        lambda repo, notifier: create_operator_command(
            repo, meter_id, action, reason, hold=hold, notifier=notifier
        ),
    )


def operator_release(meter_id: str, reason: str, config_path: Path | None) -> dict[str, Any]:
    """Lift an operator's hold; what it did, as the CLI prints it."""
    release = _with_repository(
        meter_id,
        config_path,
        lambda repo, notifier: release_operator_hold(repo, meter_id, reason, notifier=notifier),
    )
    command = release.command
    return {
        "meter_id": meter_id,
        "action": "release",
        "reason": reason,
        "detail": release.detail,
        "command_id": None if command is None else command.command_id,
        "command": None if command is None else command.action,
        "status": None if command is None else command.status,
        "superseded": [old.command_id for old in release.superseded],
    }


def operator_protection(
    meter_id: str, reason: str, config_path: Path | None, *, protected: bool
) -> dict[str, Any]:
    """Set or lift protected supply; what it did, as the CLI prints it."""
    change = _with_repository(
        meter_id,
        config_path,
        lambda repo, notifier: set_protection(repo, meter_id, reason, protected, notifier=notifier),
    )
    command = change.command
    return {
        "meter_id": meter_id,
        "protected": protected,
        "reason": reason,
        "detail": change.detail,
        "command_id": None if command is None else command.command_id,
        "command": None if command is None else command.action,
        "superseded": [old.command_id for old in change.superseded],
        "alarm": None if change.alarm is None else change.alarm.type,
    }


def _with_repository(
    meter_id: str,
    config_path: Path | None,
    work: Callable[[Repository, Notifier], Awaitable[T]],
) -> T:
    """Run `work` on the database, with a Notifier whose messages go into the outbox table
    in work's transaction (the running daemon publishes them)."""
    config = load_cli_config(config_path)

    async def run() -> T:
        db = await Database.open(config.database.url)
        try:
            repository = Repository(db, quiet_hours=QuietHours.from_config(config.prepaid))
            topics = Topics(config.mqtt.billing_prefix, config.mqtt.headend_prefix)
            return await work(repository, Notifier(DurableOutbox(repository.outbox), topics))
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except UnknownMeter:
        fail(f"meter {meter_id} is not in the inventory", 1)
    except HoldConflict as exc:
        fail(str(exc), 1)
    except ValueError as exc:
        fail(str(exc), 2)
