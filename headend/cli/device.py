"""`headend read` and `headend relay`: one meter, from the command line, for field engineers.

Connection options come from flags or, with --meter, from the inventory in the database.
Output is a readable table by default and one JSON object with --json; failures are one line
on stderr with a non-zero exit code."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cosem_objects.errors import AuthenticationError, ProtocolError
from cosem_objects.obis import Obis
from drivers.connect import (
    MeterConnection,
    associated_session,
    new_system_title,
    read_frame_counter,
)
from drivers.dlms_errors import AssociationRefused, DlmsError
from drivers.inventory_columns import DEFAULT_CLIENT_SAP
from drivers.session import DlmsSession, MemoryInvocationCounterStore, RelayStatus

T = TypeVar("T")


class RelayOperation(StrEnum):
    status = "status"
    disconnect = "disconnect"
    reconnect = "reconnect"
    release = "release"  # an operator's hold (with --meter)


_OPERATOR_SWITCHES = (RelayOperation.disconnect, RelayOperation.reconnect)

HostOpt = Annotated[str, typer.Option(help="Meter or terminal server address.")]
PortOpt = Annotated[int, typer.Option(help="TCP port (4059 for the DLMS wrapper).")]
TransportOpt = Annotated[str, typer.Option(help="wrapper | hdlc | serial")]
ClientSapOpt = Annotated[int | None, typer.Option(help="Client SAP (default by security).")]
LogicalOpt = Annotated[int, typer.Option(help="Server logical device (HDLC upper address).")]
PhysicalOpt = Annotated[int | None, typer.Option(help="Server physical (HDLC lower) address.")]
SecurityOpt = Annotated[str, typer.Option(help="none | lls | hls-gmac")]
PasswordOpt = Annotated[str | None, typer.Option(help="LLS password.", show_default=False)]
KeyOpt = Annotated[str | None, typer.Option(help="16-byte key as hex.", show_default=False)]
SerialOpt = Annotated[str | None, typer.Option(help="Serial device for HDLC over serial.")]
BaudOpt = Annotated[int, typer.Option(help="Serial baud rate.")]
MeterOpt = Annotated[str | None, typer.Option(help="Take connection options from the inventory.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="Config file (for --meter).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per request.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


class _Target(Protocol):
    """A meter to open a session with: given on the command line, or from the inventory
    (headend.cli.lookup.StoredMeter)."""

    @property
    def connection(self) -> MeterConnection: ...

    def session(self, timeout: float) -> AbstractAsyncContextManager[DlmsSession]: ...


@dataclass(frozen=True)
class _GivenMeter:
    """A meter given by its address: no database, so no stored counter and no installation
    title. A title of its own (made for this run) and counters from above the meter's frame
    counter: nothing this session sends can repeat a nonce any other client used."""

    connection: MeterConnection

    @asynccontextmanager
    async def session(self, timeout: float) -> AsyncIterator[DlmsSession]:  # noqa: ASYNC109 - per request
        store = MemoryInvocationCounterStore()
        if self.connection.security == "hls-gmac":
            frame_counter = await read_frame_counter(self.connection, timeout=timeout)
            store = MemoryInvocationCounterStore(frame_counter + 1)
        async with associated_session(self.connection, timeout=timeout, ic_store=store) as session:
            yield session


def _connection(
    host: str,
    port: int,
    transport: str,
    client_sap: int | None,
    server_logical: int,
    server_physical: int | None,
    security: str,
    password: str | None,
    auth_key: str | None,
    enc_key: str | None,
    serial_port: str | None,
    baud: int,
    meter: str | None,
    config: Path | None,
) -> _Target:
    if meter is not None:
        from headend.cli.lookup import stored_meter

        return stored_meter(meter, config)
    try:
        connection = MeterConnection(
            host=host,
            port=port,
            transport=transport,
            client_sap=(
                client_sap if client_sap is not None else DEFAULT_CLIENT_SAP.get(security, 16)
            ),
            server_logical=server_logical,
            server_physical=server_physical,
            security=security,
            password=password.encode() if password else None,
            auth_key=bytes.fromhex(auth_key) if auth_key else None,
            enc_key=bytes.fromhex(enc_key) if enc_key else None,
            serial_port=serial_port,
            baud=baud,
            client_system_title=new_system_title(),
        )
    except ValueError as exc:
        raise _fail(f"bad connection options: {exc}", 2) from None
    return _GivenMeter(connection)


def _run(target: _Target, timeout: float, work: Callable[[DlmsSession], Awaitable[T]]) -> T:
    """Run one session; turn every failure into a one-line message and an exit code."""
    connection = target.connection
    try:
        connection.settings()  # keys and password as the security asks
    except ValueError as exc:
        raise _fail(f"bad connection options: {exc}", 2) from None

    async def main() -> T:
        async with target.session(timeout) as session:
            return await work(session)

    where = (
        connection.serial_port
        if connection.transport == "serial"
        else (f"{connection.host}:{connection.port}")
    )
    try:
        return asyncio.run(main())
    except typer.Exit:
        raise
    except TimeoutError:
        raise _fail(f"timeout: no answer from the meter at {where}", 3) from None
    except AuthenticationError as exc:
        raise _fail(f"authentication failed: {exc}", 4) from None
    except AssociationRefused as exc:
        raise _fail(str(exc), 4) from None
    except ConnectionRefusedError:
        raise _fail(f"unreachable: connection refused by {where}", 3) from None
    except OSError as exc:
        raise _fail(f"unreachable: {where}: {exc.strerror or exc}", 3) from None
    except DlmsError as exc:
        raise _fail(str(exc), 5) from None
    except ProtocolError as exc:
        raise _fail(f"protocol error: {exc}", 5) from None


def read(
    obis: Annotated[list[str], typer.Argument(help="OBIS codes, e.g. 1.0.1.8.0.255")],
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 4059,
    transport: TransportOpt = "wrapper",
    client_sap: ClientSapOpt = None,
    server_logical: LogicalOpt = 1,
    server_physical: PhysicalOpt = None,
    security: SecurityOpt = "none",
    password: PasswordOpt = None,
    auth_key: KeyOpt = None,
    enc_key: KeyOpt = None,
    serial_port: SerialOpt = None,
    baud: BaudOpt = 9600,
    meter: MeterOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Read registers (scaled, with units) from one meter."""
    try:
        codes = [Obis.parse(code) for code in obis]
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    target = _connection(
        host,
        port,
        transport,
        client_sap,
        server_logical,
        server_physical,
        security,
        password,
        auth_key,
        enc_key,
        serial_port,
        baud,
        meter,
        config,
    )
    readings = _run(target, timeout, lambda session: session.read(codes))
    if as_json:
        payload = {code: {"value": r.value, "unit": r.unit} for code, r in readings.items()}
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    table = Table("OBIS", "value", "unit")
    for code, reading in readings.items():
        table.add_row(code, str(reading.value), reading.unit or "")
    Console().print(table)


def relay(
    operation: Annotated[
        RelayOperation, typer.Argument(help="status | disconnect | reconnect | release")
    ],
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 4059,
    transport: TransportOpt = "wrapper",
    client_sap: ClientSapOpt = None,
    server_logical: LogicalOpt = 1,
    server_physical: PhysicalOpt = None,
    security: SecurityOpt = "none",
    password: PasswordOpt = None,
    auth_key: KeyOpt = None,
    enc_key: KeyOpt = None,
    serial_port: SerialOpt = None,
    baud: BaudOpt = 9600,
    meter: MeterOpt = None,
    config: ConfigOpt = None,
    reason: Annotated[
        str | None, typer.Option(help="Operator override reason (with --meter): recorded.")
    ] = None,
    hold: Annotated[
        bool,
        typer.Option(
            "--hold", help="Pin the relay against billing until `release` (with --meter)."
        ),
    ] = False,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Read or switch a meter's relay (Disconnect control 0.0.96.3.10.255), read back.

    With --meter, disconnect/reconnect are operator commands the running daemon executes
    (--hold pins the relay against billing) and release lifts a hold."""
    if hold and (meter is None or operation not in _OPERATOR_SWITCHES):
        raise _fail("--hold goes with --meter and disconnect or reconnect", 2)
    if operation is RelayOperation.release and meter is None:
        raise _fail("release lifts an operator's hold: it needs --meter", 2)
    if meter is not None and operation is not RelayOperation.status:
        from headend.cli.lookup import operator_override, operator_release

        if not reason:
            raise _fail("an operator override needs --reason", 2)
        if operation is RelayOperation.release:
            _print_payload(operator_release(meter, reason, config), as_json)
            return
        command_id = operator_override(meter, operation.value, reason, config, hold=hold)
        _print_payload(
            {
                "meter_id": meter,
                "command_id": command_id,
                "action": operation.value,
                "status": "queued",
                "reason": reason,
                "hold": hold,
            },
            as_json,
        )
        return
    target = _connection(
        host,
        port,
        transport,
        client_sap,
        server_logical,
        server_physical,
        security,
        password,
        auth_key,
        enc_key,
        serial_port,
        baud,
        meter,
        config,
    )

    async def work(session: DlmsSession) -> RelayStatus:
        if operation is RelayOperation.disconnect:
            return await session.disconnect()
        if operation is RelayOperation.reconnect:
            return await session.reconnect()
        return await session.relay_status()

    status = _run(target, timeout, work)
    payload: dict[str, Any] = {
        "state": status.state,
        "output_state": status.output_state,
        "control_mode": status.control_mode,
    }
    expected = {"disconnect": "disconnected", "reconnect": "connected"}.get(operation.value)
    confirmed = (
        expected is None
        or status.state == expected
        or (operation is RelayOperation.reconnect and status.state == "ready_for_reconnection")
    )
    if expected is not None:
        payload["confirmed"] = confirmed
    _print_payload(payload, as_json)
    if not confirmed:
        raise _fail(f"relay read back as {status.state} after {operation.value}", 6)


def _print_payload(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    table = Table("field", "value")
    for key, value in payload.items():
        table.add_row(key, str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("read")(read)
    app.command("relay")(relay)
