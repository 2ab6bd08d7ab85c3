"""What `headend read/relay --meter ID` needs from the database: the meter's connection
parameters (secrets decrypted under the master key) and the operator override command."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.connect import MeterConnection
from headend.cli.common import fail, load_cli_config
from headend.meters.inventory import load_meter
from headend.meters.secrets import SecretsError
from headend.relay.operator import create_operator_command
from headend.storage import Database, Repository, UnknownMeter


def connection_for_meter(meter_id: str, config_path: Path | None) -> MeterConnection:
    config = load_cli_config(config_path)

    async def lookup() -> MeterConnection | None:
        db = await Database.open(config.database.url)
        try:
            record = await load_meter(db, meter_id, config.open_master_key(generate=False))
        finally:
            await db.dispose()
        return None if record is None else record.connection()

    try:
        connection = asyncio.run(lookup())
    except SecretsError as exc:
        fail(f"secrets: {exc}", 2)
    if connection is None:
        fail(f"meter {meter_id} is not in the inventory", 1)
    return connection


def operator_override(meter_id: str, action: str, reason: str, config_path: Path | None) -> str:
    """A durable operator command: the running daemon executes it like any other, at once."""
    config = load_cli_config(config_path)

    async def create() -> str:
        db = await Database.open(config.database.url)
        try:
            return await create_operator_command(Repository(db), meter_id, action, reason)
        finally:
            await db.dispose()

    try:
        return asyncio.run(create())
    except UnknownMeter:
        fail(f"meter {meter_id} is not in the inventory", 1)
    except ValueError as exc:
        fail(str(exc), 2)
