"""`headend probe` and `headend scan`: what a meter speaks, and who answers on an RS-485 bus.
`register` adds them, and `headend decode` (headend/cli/decode.py), to the app.

The work is in headend/fieldtools/ (probe.py, scan.py); this module parses options, runs it
under one overall deadline, and prints a table (or JSON). Both exit 0 when they found something,
3 when nothing answered (the meter commands' "unreachable or timeout"), 2 for bad options, with
one line on stderr saying why."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headend.cli.decode import EXIT_USAGE, decode, one_line_error
from headend.fieldtools.probe import DEFAULT_CLIENT_SAPS, ProbeReport, ProbeTarget, probe_meter
from headend.fieldtools.scan import AddressRangeError, ScanReport, parse_addresses, ranges, scan_bus

__all__ = ["probe", "register", "scan"]

EXIT_UNREACHABLE = 3  # as every meter command (DESIGN.md): nothing answered, or a timeout

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for each answer.")]
BaudOpt = Annotated[int, typer.Option("--baud", help="Serial line speed.")]
LogicalOpt = Annotated[int, typer.Option("--logical", help="Server logical device.")]


def _finish(found: bool, why: str) -> None:
    if not found:
        raise one_line_error(why, EXIT_UNREACHABLE)


def probe(
    host: Annotated[str | None, typer.Option("--host", help="Meter or terminal server.")] = None,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 4059,
    serial_port: Annotated[
        str | None, typer.Option("--serial-port", help="Serial device (HDLC).")
    ] = None,
    baud: BaudOpt = 9600,
    logical: LogicalOpt = 1,
    physical: Annotated[
        int | None, typer.Option("--physical", help="HDLC physical address (on a bus).")
    ] = None,
    clients: Annotated[
        str, typer.Option("--clients", help="Client SAPs to try, comma separated.")
    ] = ",".join(map(str, DEFAULT_CLIENT_SAPS)),
    wait: WaitOpt = 1.5,
    as_json: JsonFlag = False,
) -> None:
    """Find what a meter speaks: framing, addresses, clients it accepts, terms, identity."""
    if (host is None) == (serial_port is None):
        raise one_line_error("give either --host or --serial-port", EXIT_USAGE)
    try:
        saps = [int(s) for s in clients.split(",") if s.strip()]
        if not saps or not all(0 <= s <= 0x7F for s in saps):
            raise ValueError
    except ValueError:
        raise one_line_error(
            f"--clients {clients!r}: client SAPs 0..127, comma separated", EXIT_USAGE
        ) from None
    target = ProbeTarget(host, port, serial_port, baud, logical, physical)
    # Every try has its own deadline; this bounds the whole, whatever the meter does.
    limit = wait * (2 * len(saps) + 6) + 30
    try:
        report = asyncio.run(
            asyncio.wait_for(probe_meter(target, client_saps=saps, wait_s=wait), limit)
        )
    except TimeoutError:
        raise one_line_error(
            f"probe of {target} took longer than {limit:g} s", EXIT_UNREACHABLE
        ) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        _print_probe(report)
    _finish(report.ok, report.errors[0] if report.errors else f"no answer from {target}")


def scan(
    serial_port: Annotated[str, typer.Option("--serial-port", help="Serial device (RS-485).")],
    baud: BaudOpt = 9600,
    addresses: Annotated[
        str, typer.Option("--addresses", help="Physical addresses: 16-127, or 17,20-25.")
    ] = "16-127",
    logical: LogicalOpt = 1,
    wait: WaitOpt = 0.3,
    as_json: JsonFlag = False,
) -> None:
    """Which HDLC physical addresses answer on a bus (SNRM/UA, then DISC), with serial numbers."""
    try:
        wanted = parse_addresses(addresses)
    except AddressRangeError as exc:
        raise one_line_error(f"--addresses: {exc}", EXIT_USAGE) from None
    limit = wait * len(wanted) * 2 + 30
    try:
        report = asyncio.run(
            asyncio.wait_for(
                scan_bus(serial_port, wanted, baud=baud, logical=logical, wait_s=wait), limit
            )
        )
    except TimeoutError:
        raise one_line_error(
            f"scan of {serial_port} took longer than {limit:g} s", EXIT_UNREACHABLE
        ) from None
    except OSError as exc:
        raise one_line_error(f"{serial_port}: {exc}", EXIT_UNREACHABLE) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        _print_scan(report)
    _finish(
        bool(report.stations),
        f"no station answered on {serial_port} at addresses {ranges(wanted)}",
    )


def register(app: typer.Typer) -> None:
    """The field tools: decode (headend/cli/decode.py), probe and scan."""
    app.command("decode")(decode)
    app.command("probe")(probe)
    app.command("scan")(scan)


# -- tables ------------------------------------------------------------------------------------
def _print_probe(report: ProbeReport) -> None:
    console = Console(highlight=False)
    data = report.to_json()
    summary = Table(title=f"probe {report.target}", show_header=False)
    summary.add_column("what", style="cyan")
    summary.add_column("found")
    physical = data["server_physical"]
    rows: list[tuple[str, Any]] = [
        ("framing", data["transport"]),
        ("server logical device", data["server_logical"]),
        (
            "server physical address",
            "any (answered a logical-only address)"
            if physical is None and data["transport"] in ("hdlc", "serial")
            else physical,
        ),
        ("HDLC parameters", _hdlc_text(data["hdlc_parameters"])),
        (
            "conformance",
            ", ".join(data["conformance"]) + f" ({data['conformance_hex']})"
            if data["conformance"]
            else None,
        ),
        ("max PDU size", data["max_pdu_size"]),
        ("DLMS version", data["dlms_version"]),
        ("logical device name", data.get("logical_device_name")),
        ("serial number", data.get("serial_number")),
        (
            "security policy / suite",
            f"{data.get('security_policy')} / {data.get('security_suite')}",
        ),
        ("server system title", data.get("server_system_title")),
        ("objects (public view)", data["object_count"]),
    ]
    for name, value in rows:
        summary.add_row(name, "-" if value is None else str(value))
    console.print(summary)
    if report.clients:
        table = Table(title="clients")
        for column in ("SAP", "name", "association without keys", "detail"):
            table.add_column(column)
        for client in report.clients:
            table.add_row(str(client.client_sap), client.name, client.outcome, client.detail)
        console.print(table)
    for problem in report.errors:
        console.print(f"[red]problem:[/red] {problem}", markup=True)


def _hdlc_text(params: dict[str, int] | None) -> str | None:
    if params is None:
        return None
    return (
        f"max info tx {params['max_info_tx']} / rx {params['max_info_rx']}, "
        f"window tx {params['window_tx']} / rx {params['window_rx']}"
    )


def _print_scan(report: ScanReport) -> None:
    console = Console(highlight=False)
    table = Table(title=f"{report.port} at {report.baud} baud: {report.tried} addresses tried")
    for column in ("physical", "logical", "serial number", "max info tx/rx", "note"):
        table.add_column(column)
    for station in report.stations:
        table.add_row(
            str(station.physical),
            str(station.logical),
            station.serial_number or "-",
            f"{station.max_info_tx}/{station.max_info_rx}",
            station.error or "",
        )
    console.print(table)
    if report.refused:
        console.print(f"answered DM (refused a link): {ranges(report.refused)}")
