"""`headend meters import|list|show|reset-seq|protect|unprotect`: the meter inventory from the
command line.

Secrets are never printed: a password or key shows as 'set' or '-' (JSON: "set" or null).
Commands that change a meter only write the database, so they work beside a running daemon."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from headend.cli.common import (
    EXIT_CONFIG,
    ConfigOpt,
    JsonOpt,
    config_path,
    fail,
    load_cli_config,
)
from headend.config import Config
from headend.meters.inventory import ImportResult, InventoryError, import_inventory
from headend.meters.secrets import SecretsError
from headend.storage import Database, Repository, UnknownMeter
from headend.storage.records import AlarmInfo, CommandInfo, MeterRow
from headend.storage.types import iso_or_none

__all__ = ["meter_summary", "meters_app"]

T = TypeVar("T")

meters_app = typer.Typer(
    help="The meter inventory: import a CSV, list meters, show one, reset a balance sequence.",
    no_args_is_help=True,
)


def _with_database(config: Config, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = await Database.open(config.database.url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except SecretsError as exc:
        fail(str(exc), EXIT_CONFIG)
    except OSError as exc:
        fail(f"database {config.database.display_url}: {exc}", 1)


def _secret_flag(token: str | None) -> str | None:
    return "set" if token else None


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def meter_summary(meter: MeterRow) -> dict[str, Any]:
    """A meter as JSON-able data, secrets reduced to "set"/null."""
    return {
        "meter_id": meter.meter_id,
        "host": meter.host,
        "port": meter.port,
        "transport": meter.transport,
        "client_sap": meter.client_sap,
        "server_logical": meter.server_logical,
        "server_physical": meter.server_physical,
        "security": meter.security,
        "password": _secret_flag(meter.password_enc),
        "auth_key": _secret_flag(meter.auth_key_enc),
        "enc_key": _secret_flag(meter.enc_key_enc),
        "serial_port": meter.serial_port,
        "baud": meter.baud,
        "system_title": meter.system_title,
        "line": meter.line,
        "control_mode": meter.control_mode,
        "capabilities": meter.capabilities,
        "capabilities_at": iso_or_none(meter.capabilities_at),
        "desired_relay_state": meter.desired_relay_state,
        "confirmed_relay_state": meter.confirmed_relay_state,
        "confirmed_output_state": meter.confirmed_output_state,
        "confirmed_at": iso_or_none(meter.confirmed_at),
        "balance": _dec(meter.last_balance),
        "currency": meter.last_balance_currency,
        "balance_seq": meter.balance_seq,
        "low_balance_warning": meter.warning_active,
        "hold": meter.hold,
        "hold_reason": meter.hold_reason,
        "hold_at": iso_or_none(meter.hold_at),
        "protected": meter.protected,
        "protected_reason": meter.protected_reason,
        "protected_at": iso_or_none(meter.protected_at),
        "ready_since": iso_or_none(meter.ready_since),
        "last_reading_at": iso_or_none(meter.last_reading_at),
        "created_at": iso_or_none(meter.created_at),
        "updated_at": iso_or_none(meter.updated_at),
    }


def _command_summary(command: CommandInfo) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "action": command.action,
        "status": command.status,
        "attempt": command.attempt,
        "source": command.source,
        "event_id": command.event_id,
        "created_at": iso_or_none(command.created_at),
        "next_attempt_at": iso_or_none(command.next_attempt_at),
        "last_error": command.last_error,
    }


def _alarm_summary(alarm: AlarmInfo) -> dict[str, Any]:
    return {"type": alarm.type, "detail": alarm.detail, "ts": iso_or_none(alarm.ts)}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@meters_app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Inventory CSV (see config/fleet.example.csv).")],
    config: ConfigOpt = None,
) -> None:
    """Load an inventory CSV into the database (idempotent: re-importing changes nothing)."""
    cfg = load_cli_config(config, ctx)

    async def work(db: Database) -> ImportResult:
        master_key = cfg.open_master_key()
        return await import_inventory(db, file, master_key)

    try:
        result = _with_database(cfg, work)
    except InventoryError as exc:
        fail(str(exc), EXIT_CONFIG)
    typer.echo(
        f"imported {file}: {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )


@meters_app.command("list")
def list_command(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the meters in the inventory."""
    cfg = load_cli_config(config, ctx)
    meters = _with_database(cfg, lambda db: Repository(db).list_meters())
    if as_json:
        sys.stdout.write(json.dumps([meter_summary(m) for m in meters], indent=None) + "\n")
        return
    table = Table(
        "meter_id",
        "address",
        "transport",
        "security",
        "keys",
        "relay",
        "desired",
        "balance",
        title=f"{len(meters)} meters",
    )
    for meter in meters:
        address = (
            meter.serial_port or "-"
            if meter.transport == "serial"
            else f"{meter.host}:{meter.port}"
        )
        keys = ",".join(
            name
            for name, token in (
                ("password", meter.password_enc),
                ("auth", meter.auth_key_enc),
                ("enc", meter.enc_key_enc),
            )
            if token
        )
        table.add_row(
            meter.meter_id,
            address,
            meter.transport,
            meter.security,
            keys or "-",
            _cell(meter.confirmed_relay_state),
            _cell(meter.desired_relay_state),
            _cell(meter.last_balance),
        )
    Console().print(table)


@meters_app.command("show")
def show_command(
    ctx: typer.Context,
    meter_id: Annotated[str, typer.Argument(help="The meter's id (serial number).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one meter: connection parameters (secrets as set/-), relay, balance, commands."""
    cfg = load_cli_config(config, ctx)

    async def work(db: Database) -> tuple[MeterRow | None, list[CommandInfo], list[AlarmInfo]]:
        repo = Repository(db)
        meter = await repo.get_meter(meter_id)
        if meter is None:
            return None, [], []
        return (
            meter,
            await repo.pending_commands(meter_id=meter_id),
            await repo.list_alarms(meter_id=meter_id),
        )

    meter, commands, alarms = _with_database(cfg, work)
    if meter is None:
        fail(f"no meter {meter_id!r} in the inventory", 1)
    data = meter_summary(meter)
    data["pending_commands"] = [_command_summary(c) for c in commands]
    data["alarms"] = [_alarm_summary(a) for a in alarms]
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    table = Table("field", "value", title=f"meter {meter.meter_id}", show_header=False)
    for key, value in data.items():
        if key in ("pending_commands", "alarms"):
            continue
        if key in ("protected_reason", "protected_at"):
            continue
        if key == "protected":
            value = f"yes ({meter.protected_reason})" if value else "no"
        if key == "capabilities" and value is not None:
            value = json.dumps(value, sort_keys=True)
        table.add_row(key, _cell(value))
    console = Console()
    console.print(table)
    for command in commands:
        console.print(
            f"command {command.command_id}: {command.action} {command.status} "
            f"(attempt {command.attempt})",
            highlight=False,
        )
    for alarm in alarms:
        console.print(f"alarm {alarm.type}: {alarm.detail or ''}", highlight=False)


@meters_app.command("reset-seq")
def reset_seq_command(
    ctx: typer.Context,
    meter_id: Annotated[str, typer.Argument(help="The meter's id (serial number).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the action).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept a new balance sequence for a meter (billing restored a backup or restarted its
    counter): the next balance event applies whatever its seq. Recorded with the reason;
    works beside a running daemon (it only writes the database)."""
    reason = reason.strip()
    if not reason:
        fail("reset-seq needs --reason", EXIT_CONFIG)
    cfg = load_cli_config(config, ctx)
    try:
        previous = _with_database(
            cfg, lambda db: Repository(db).reset_balance_seq(meter_id, reason)
        )
    except UnknownMeter:
        fail(f"no meter {meter_id!r} in the inventory", 1)
    if as_json:
        sys.stdout.write(json.dumps({"meter_id": meter_id, "previous_seq": previous}) + "\n")
        return
    typer.echo(
        f"meter {meter_id}: balance sequence reset (last applied seq: "
        f"{'none' if previous is None else previous}); the next balance event applies"
    )


def _protection(meter_id: str, reason: str, config: Path | None, protected: bool) -> None:
    from headend.cli.lookup import operator_protection

    if not reason.strip():
        fail(f"{'protect' if protected else 'unprotect'} needs --reason", EXIT_CONFIG)
    result = operator_protection(meter_id, reason.strip(), config, protected=protected)
    typer.echo(f"meter {meter_id}: {result['detail']}")


@meters_app.command("protect")
def protect_command(
    ctx: typer.Context,
    meter_id: Annotated[str, typer.Argument(help="The meter's id (serial number).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (life support, hospital, ...).")],
    config: ConfigOpt = None,
) -> None:
    """Protected supply: billing never disconnects this meter; a balance below zero raises
    protected_in_arrears for a person. A meter off for arrears is reconnected. Takes effect
    on a running daemon within a second."""
    _protection(meter_id, reason, config_path(config, ctx), True)


@meters_app.command("unprotect")
def unprotect_command(
    ctx: typer.Context,
    meter_id: Annotated[str, typer.Argument(help="The meter's id (serial number).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the action).")],
    config: ConfigOpt = None,
) -> None:
    """Lift protected supply: the meter goes where its newest balance says (a disconnect for
    arrears through the grace period and quiet hours like any other)."""
    _protection(meter_id, reason, config_path(config, ctx), False)
