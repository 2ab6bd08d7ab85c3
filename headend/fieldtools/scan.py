"""`headend scan`: which HDLC physical addresses answer on an RS-485 bus, and who they are.

Every address in the range gets one SNRM (then DISC when it answers UA) with a short deadline;
then each station found is asked its serial number (0.0.96.1.0.255) over the public client, in
a session of its own. The line is held for the whole address sweep (drivers' serial line lock),
so a daemon sharing the port waits rather than colliding with the scan."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cosem_objects.classes import DataObject, Obises, plain_value
from cosem_objects.errors import ProtocolError
from drivers.connect import MeterConnection, open_session
from drivers.dlms_errors import DlmsError
from drivers.hdlc import HdlcAddress
from drivers.transports import SerialSettings, get_serial_line
from headend.fieldtools.link_check import check_link

PUBLIC_CLIENT_SAP = 16
MANAGEMENT_LOGICAL_DEVICE = 1
MAX_PHYSICAL = 0x3FFF


class AddressRangeError(ValueError):
    """An --addresses value that is not a list of addresses and ranges."""


def parse_addresses(text: str) -> list[int]:
    """`16-127`, `17,20-25`: physical addresses in the order given, each once."""
    found: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            start, end = int(low), int(high) if sep else int(low)
        except ValueError:
            raise AddressRangeError(f"{part!r} is not an address or a range like 16-127") from None
        if not 0 <= start <= end <= MAX_PHYSICAL:
            raise AddressRangeError(f"{part!r}: addresses are 0..{MAX_PHYSICAL}, low to high")
        found.extend(a for a in range(start, end + 1) if a not in found)
    if not found:
        raise AddressRangeError("no addresses given")
    return found


@dataclass(slots=True)
class Station:
    physical: int
    logical: int
    serial_number: str | None = None
    error: str | None = None
    max_info_tx: int | None = None
    max_info_rx: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "physical": self.physical,
            "logical": self.logical,
            "serial_number": self.serial_number,
            "max_info_tx": self.max_info_tx,
            "max_info_rx": self.max_info_rx,
            "error": self.error,
        }


@dataclass(slots=True)
class ScanReport:
    port: str
    baud: int
    tried: int
    stations: list[Station] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # answered DM

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "baud": self.baud,
            "addresses_tried": self.tried,
            "stations": [s.to_json() for s in self.stations],
            "refused": self.refused,
        }


async def scan_bus(
    port: str,
    addresses: Sequence[int],
    *,
    baud: int = 9600,
    logical: int = MANAGEMENT_LOGICAL_DEVICE,
    wait_s: float = 0.3,
    session_timeout: float = 3.0,
    read_serial: bool = True,
) -> ScanReport:
    """Every address that answers SNRM with UA, each with its serial number."""
    report = ScanReport(port, baud, len(addresses))
    client = HdlcAddress.client(PUBLIC_CLIENT_SAP)
    line = get_serial_line(port)
    stream = await line.acquire(SerialSettings(baud), session_timeout)
    try:
        for physical in addresses:
            server = HdlcAddress.server(logical, physical)
            answer = await check_link(stream, client, server, wait_s)
            if answer is None:
                continue
            if not answer.accepted:
                report.refused.append(physical)
                continue
            station = Station(physical, logical)
            if answer.params is not None:
                station.max_info_tx = answer.params.max_info_tx
                station.max_info_rx = answer.params.max_info_rx
            report.stations.append(station)
    finally:
        await line.release()
    if read_serial:
        for station in report.stations:
            await _read_serial(port, baud, station, session_timeout=session_timeout)
    return report


async def _read_serial(port: str, baud: int, station: Station, *, session_timeout: float) -> None:
    connection = MeterConnection(
        host=None,
        transport="serial",
        serial_port=port,
        baud=baud,
        client_sap=PUBLIC_CLIENT_SAP,
        server_logical=station.logical,
        server_physical=station.physical,
    )
    try:
        async with open_session(connection, timeout=session_timeout) as session:
            value = await session.get(DataObject.CLASS_ID, Obises.SERIAL_NUMBER, DataObject.VALUE)
        station.serial_number = str(plain_value(value))
    except (OSError, TimeoutError, ProtocolError, DlmsError, ValueError) as exc:
        station.error = (
            f"serial number not read: {' '.join(str(exc).split()) or type(exc).__name__}"
        )


def ranges(addresses: Iterable[int]) -> str:
    """`16-23, 40` for a list of addresses (for one summary line)."""
    out: list[str] = []
    ordered = sorted(set(addresses))
    start = prev = None
    for address in [*ordered, None]:
        if address is not None and prev is not None and address == prev + 1:
            prev = address
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = address
    return ", ".join(out)
