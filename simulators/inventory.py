"""The inventory CSV `dlms-sim --inventory` writes and `headend meters import` reads (README.md).

One row per meter with the association the fleet hands the head-end: security none -> public
client 16; lls -> reader client 32 and the password as ASCII text; hls-gmac -> management
client 1 and the suite 0 keys in hex. Serial meters add their pseudo-terminal and baud rate.
The columns are drivers.inventory_columns.COLUMNS, and so are InventoryRow's fields."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from drivers.inventory_columns import COLUMNS, CONNECTION_FIELDS
from simulators.config import MeterConfig, Security

_TEXT_BYTES = ("password",)  # the LLS password is ASCII text; keys and titles are hex


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """How the head-end reaches one simulated meter. Secrets stay out of the repr."""

    meter_id: str
    host: str
    port: int
    transport: str
    client_sap: int
    server_logical: int
    server_physical: int | None
    security: str
    password: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    enc_key: bytes | None = field(default=None, repr=False)
    serial_port: str | None = None
    baud: int | None = None
    system_title: bytes | None = None

    @classmethod
    def for_meter(
        cls, config: MeterConfig, *, serial_port: str | None = None, baud: int | None = None
    ) -> InventoryRow:
        security = Security(config.security)
        serial = config.transport == "serial"
        # --inbound-only: reached only over the connection the meter opens (DESIGN.md),
        # framed as it pushes.
        push = config.push
        inbound = push is not None and push.inbound_only
        framing = config.transport
        if push is not None and push.inbound_only:
            framing = "hdlc" if push.transport == "hdlc" else "wrapper"
        return cls(
            meter_id=config.meter_id,
            host="" if serial or inbound else config.host,
            port=0 if serial or inbound else config.port,
            transport="inbound" if inbound else config.transport,
            client_sap=config.client_sap,
            server_logical=config.server_logical,
            # The wrapper addresses logical devices only; HDLC needs the physical address.
            server_physical=None if framing == "wrapper" else config.server_physical,
            security=security.value,
            password=config.password if security is Security.LLS else None,
            auth_key=config.auth_key if security is Security.HLS_GMAC else None,
            enc_key=config.enc_key if security is Security.HLS_GMAC else None,
            serial_port=serial_port if serial else None,
            baud=baud if serial else None,
            system_title=config.system_title,
        )

    def as_csv(self) -> dict[str, str]:
        cells = {name: _cell(name, getattr(self, name)) for name in COLUMNS}
        if self.transport in ("serial", "inbound"):
            cells["port"] = ""  # a serial or inbound meter has no TCP port to call
        return cells

    def connection_kwargs(self) -> dict[str, object]:
        """Keyword arguments for drivers.connect.MeterConnection (tests build clients with it)."""
        kwargs: dict[str, object] = {name: getattr(self, name) for name in CONNECTION_FIELDS}
        if self.transport == "serial":
            del kwargs["port"]
            kwargs.update(host=None, baud=self.baud or 9600)
        else:
            del kwargs["serial_port"], kwargs["baud"]
        return kwargs


def _cell(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii") if name in _TEXT_BYTES else value.hex()
    return str(value)


def render_inventory(rows: list[InventoryRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_csv())
    return buffer.getvalue()


def write_inventory(path: str | Path, rows: list[InventoryRow]) -> None:
    """Write atomically (temp file + rename) so an importer never reads half a file.

    The file holds passwords and keys, so it is created readable by its owner only."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii", newline="") as handle:
        handle.write(render_inventory(rows))
    os.replace(temporary, target)


def read_inventory(path: str | Path) -> list[dict[str, str]]:
    """The rows as text, for tests and tools that check what was written."""
    with open(path, newline="", encoding="ascii") as handle:
        return list(csv.DictReader(handle))
