"""The meter inventory: the CSV of DESIGN.md into the database, and back out as connection
parameters for the driver layer.

The CSV is checked completely before anything is written (one message per bad cell, with
line and column), and imported in one transaction. Re-importing the same file changes
nothing: secrets are compared decrypted, since AES-GCM gives a new ciphertext every time."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from drivers.connect import SECURITIES, TRANSPORTS, MeterConnection
from drivers.inventory_columns import (
    CONNECTION_FIELDS,
    DEFAULT_CLIENT_SAP,
    METER_FIELDS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SECRET_FIELDS,
)
from headend.domain import is_valid_meter_id
from headend.meters.secrets import MasterKey, Secret
from headend.storage.db import Database
from headend.storage.models import Meter, meter_column
from headend.storage.records import MeterRow

__all__ = [
    "DEFAULT_CLIENT_SAP",
    "ImportResult",
    "InventoryError",
    "InventoryRow",
    "MeterRecord",
    "decrypt_meter",
    "default_line",
    "import_inventory",
    "import_rows",
    "load_meter",
    "load_meters",
    "parse_inventory",
]

DEFAULT_WRAPPER_PORT = 4059
DEFAULT_BAUD = 9600
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}")
_HEX_TITLE = re.compile(r"[0-9a-fA-F]{16}")
_MAX_ERRORS_SHOWN = 20


class InventoryError(Exception):
    """A bad inventory file; `errors` holds one message per problem ("line 3, column port:
    ...")."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        shown = errors[:_MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        plural = "s" if len(errors) != 1 else ""
        super().__init__(f"{source}: {len(errors)} problem{plural}:\n  {text}")


@dataclass(frozen=True)
class InventoryRow:
    """One validated inventory line: its meter_id and METER_FIELDS (tests/test_meter_fields.py).
    Secrets are plaintext here, hidden from repr."""

    meter_id: str
    host: str | None
    port: int | None
    transport: str
    client_sap: int
    server_logical: int
    server_physical: int | None
    security: str
    serial_port: str | None
    baud: int | None
    system_title: str | None
    line: str
    line_no: int = 0
    password: Secret[bytes] | None = field(default=None, repr=False)
    auth_key: Secret[bytes] | None = field(default=None, repr=False)
    enc_key: Secret[bytes] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ImportResult:
    added: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass(frozen=True)
class MeterRecord:
    """A meter's connection parameters with its secrets decrypted, for the driver layer: its
    meter_id and METER_FIELDS, and what was learnt from the meter (tests/test_meter_fields.py).
    Secrets are `Secret` values: repr/str print '***'."""

    meter_id: str
    host: str | None
    port: int | None
    transport: str
    client_sap: int
    server_logical: int
    server_physical: int | None
    security: str
    serial_port: str | None
    baud: int | None
    line: str
    system_title: bytes | None = None
    capabilities: Mapping[str, Any] | None = None
    control_mode: int | None = None
    password: Secret[bytes] | None = field(default=None, repr=False)
    auth_key: Secret[bytes] | None = field(default=None, repr=False)
    enc_key: Secret[bytes] | None = field(default=None, repr=False)

    def connection(self, **overrides: Any) -> MeterConnection:
        """A drivers.connect.MeterConnection for this meter (overrides: e.g. mode_e=True)."""
        params: dict[str, Any] = {name: getattr(self, name) for name in CONNECTION_FIELDS}
        for name in SECRET_FIELDS:
            secret: Secret[bytes] | None = params[name]
            params[name] = None if secret is None else secret.reveal()
        if params["port"] is None:
            params["port"] = DEFAULT_WRAPPER_PORT
        if params["baud"] is None:
            params["baud"] = DEFAULT_BAUD
        params.update(overrides)
        return MeterConnection(**params)


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def default_line(transport: str, host: str | None, port: int | None, serial: str | None) -> str:
    """What one session at a time may use: a serial line, or a socket (a terminal server's
    port can carry several meters on one RS-485 bus). Same spelling as MeterConnection.line."""
    if transport == "serial":
        return f"serial:{serial}"
    return f"tcp:{host}:{port}"


class _RowChecker:
    def __init__(self, line_no: int, cells: Mapping[str, str], errors: list[str]) -> None:
        self.line_no = line_no
        self.cells = cells
        self.errors = errors

    def error(self, column: str, message: str) -> None:
        self.errors.append(f"line {self.line_no}, column {column}: {message}")

    def text(self, column: str) -> str | None:
        value = (self.cells.get(column) or "").strip()
        return value or None

    def integer(self, column: str, lo: int, hi: int, default: int | None = None) -> int | None:
        raw = self.text(column)
        if raw is None:
            return default
        try:
            value = int(raw, 0) if raw.lower().startswith("0x") else int(raw)
        except ValueError:
            self.error(column, f"must be an integer, got {raw!r}")
            return None
        if not lo <= value <= hi:
            self.error(column, f"must be between {lo} and {hi}, got {value}")
            return None
        return value

    def choice(self, column: str, choices: tuple[str, ...]) -> str | None:
        raw = self.text(column)
        if raw is None:
            self.error(column, f"is required (one of {', '.join(choices)})")
            return None
        value = raw.lower()
        if value not in choices:
            self.error(column, f"must be one of {', '.join(choices)}, got {raw!r}")
            return None
        return value

    def key(self, column: str) -> Secret[bytes] | None:
        raw = self.text(column)
        if raw is None:
            return None
        if not _HEX_KEY.fullmatch(raw):
            # Never echo the value: it is (meant to be) a key.
            self.error(column, f"must be 32 hex digits (16 bytes), got {len(raw)} characters")
            return None
        return Secret(bytes.fromhex(raw))


def _check_row(line_no: int, cells: Mapping[str, str], errors: list[str]) -> InventoryRow | None:
    check = _RowChecker(line_no, cells, errors)
    before = len(errors)
    meter_id = check.text("meter_id")
    if meter_id is None:
        check.error("meter_id", "is required")
    elif not is_valid_meter_id(meter_id):
        check.error(
            "meter_id", f"must be 1-64 characters without spaces, '/', '+' or '#', got {meter_id!r}"
        )
    transport = check.choice("transport", TRANSPORTS)
    security = check.choice("security", SECURITIES)
    host = check.text("host")
    serial_port = check.text("serial_port")
    tcp = transport in ("wrapper", "hdlc")
    lowest_port = 0 if transport == "inbound" else 1  # an inbound meter listens nowhere
    port = check.integer(
        "port", lowest_port, 65535, DEFAULT_WRAPPER_PORT if transport == "wrapper" else None
    )
    if tcp and host is None:
        check.error("host", f"is required for transport {transport}")
    if transport == "hdlc" and check.text("port") is None:
        check.error("port", "is required for transport hdlc (the terminal server's port)")
    if transport == "serial" and serial_port is None:
        check.error("serial_port", "is required for transport serial (e.g. /dev/ttyUSB0)")
    hdlc = transport in ("hdlc", "serial")
    client_sap = check.integer(
        "client_sap", 0, 0x7F if hdlc else 0xFFFF, DEFAULT_CLIENT_SAP.get(security or "none", 16)
    )
    server_logical = check.integer("server_logical", 0, 0x3FFF if hdlc else 0xFFFF, 1)
    server_physical = check.integer("server_physical", 0, 0x3FFF)
    baud = check.integer("baud", 300, 4_000_000, DEFAULT_BAUD if transport == "serial" else None)
    raw_password = cells.get("password") or ""
    password = Secret(raw_password.encode("utf-8")) if raw_password.strip() else None
    auth_key = check.key("auth_key")
    enc_key = check.key("enc_key")
    if security == "lls" and password is None:
        check.error("password", "is required for security lls")
    if security == "hls-gmac":
        if check.text("auth_key") is None:
            check.error("auth_key", "is required for security hls-gmac")
        if check.text("enc_key") is None:
            check.error("enc_key", "is required for security hls-gmac")
    system_title = check.text("system_title")
    if system_title is not None and not _HEX_TITLE.fullmatch(system_title):
        check.error("system_title", f"must be 16 hex digits (8 bytes), got {system_title!r}")
    if len(errors) > before:
        return None
    assert meter_id and transport and security and client_sap is not None
    assert server_logical is not None
    line = check.text("line") or (
        f"inbound:{meter_id}"  # its own connection: one session at a time on it
        if transport == "inbound"
        else default_line(transport, host, port, serial_port)
    )
    return InventoryRow(
        meter_id=meter_id,
        host=host,
        port=port,
        transport=transport,
        client_sap=client_sap,
        server_logical=server_logical,
        server_physical=server_physical,
        security=security,
        serial_port=serial_port,
        baud=baud,
        system_title=None if system_title is None else system_title.lower(),
        line=line,
        line_no=line_no,
        password=password,
        auth_key=auth_key,
        enc_key=enc_key,
    )


def parse_inventory(path: Path) -> list[InventoryRow]:
    """Read and check an inventory CSV; raises InventoryError listing every problem."""
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return _parse(csv.reader(fh), source)
    except FileNotFoundError:
        raise InventoryError(source, ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise InventoryError(source, [f"not UTF-8 text: {exc.reason}"]) from None
    except csv.Error as exc:
        raise InventoryError(source, [f"bad CSV: {exc}"]) from None


def _parse(reader: Any, source: str) -> list[InventoryRow]:
    """`reader` is a csv.reader: its line_num gives the line a record ended on."""
    errors: list[str] = []
    header: list[str] | None = None
    for cells in reader:
        if any(c.strip() for c in cells):
            header = [c.strip().lower() for c in cells]
            break
    if header is None:
        raise InventoryError(source, ["empty file: expected a header row"])
    header_line = reader.line_num
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing:
        errors.append(f"line {header_line}: missing column(s) {', '.join(missing)}")
    for column in unknown:
        errors.append(f"line {header_line}, column {column or '(blank)'}: unknown column")
    for column in duplicated:
        errors.append(f"line {header_line}, column {column}: appears more than once")
    if errors:
        raise InventoryError(source, errors)
    rows: list[InventoryRow] = []
    seen: dict[str, int] = {}
    for cells in reader:
        line_no = reader.line_num
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if len(cells) != len(header):
            errors.append(f"line {line_no}: expected {len(header)} cells, got {len(cells)}")
            continue
        row = _check_row(line_no, dict(zip(header, cells, strict=True)), errors)
        if row is None:
            continue
        if row.meter_id in seen:
            errors.append(
                f"line {line_no}, column meter_id: {row.meter_id!r} already on line "
                f"{seen[row.meter_id]}"
            )
            continue
        seen[row.meter_id] = line_no
        rows.append(row)
    if errors:
        raise InventoryError(source, errors)
    return rows


# ---------------------------------------------------------------------------------------------
# Import


def _context(meter_id: str, name: str) -> str:
    return f"meter:{meter_id}:{name}"


def _open_secret(
    master_key: MasterKey, meter_id: str, name: str, token: str | None
) -> Secret[bytes] | None:
    if token is None:
        return None
    return Secret(
        master_key.decrypt(token, context=_context(meter_id, name), what=f"meter {meter_id} {name}")
    )


def _seal(
    master_key: MasterKey, meter_id: str, name: str, value: Secret[bytes] | None
) -> str | None:
    if value is None:
        return None
    return master_key.encrypt(value.reveal(), context=_context(meter_id, name))


_PLAIN_FIELDS = tuple(name for name in METER_FIELDS if name not in SECRET_FIELDS)


async def import_rows(
    db: Database, rows: Iterable[InventoryRow], master_key: MasterKey
) -> ImportResult:
    """Add or update meters (one transaction). Meters not in `rows` are left alone."""
    rows = list(rows)
    now = datetime.now(UTC)
    added = updated = unchanged = 0
    async with db.transaction() as session:
        existing = {m.meter_id: m for m in await session.scalars(select(Meter))}
        new_rows: list[dict[str, Any]] = []
        for row in rows:
            current = existing.get(row.meter_id)
            if current is None:
                values: dict[str, Any] = {f: getattr(row, f) for f in _PLAIN_FIELDS}
                values.update(
                    meter_id=row.meter_id,
                    created_at=now,
                    updated_at=now,
                    **{
                        meter_column(name): _seal(
                            master_key, row.meter_id, name, getattr(row, name)
                        )
                        for name in SECRET_FIELDS
                    },
                )
                new_rows.append(values)
                added += 1
                continue
            changed = False
            for name in _PLAIN_FIELDS:
                if getattr(current, name) != getattr(row, name):
                    setattr(current, name, getattr(row, name))
                    changed = True
            for name in SECRET_FIELDS:
                token = getattr(current, meter_column(name))
                stored = _open_secret(master_key, row.meter_id, name, token)
                wanted: Secret[bytes] | None = getattr(row, name)
                if stored != wanted:
                    setattr(
                        current, meter_column(name), _seal(master_key, row.meter_id, name, wanted)
                    )
                    changed = True
            if changed:
                current.updated_at = now
                updated += 1
            else:
                unchanged += 1
        if new_rows:
            for start in range(0, len(new_rows), 500):
                await session.execute(insert(Meter), new_rows[start : start + 500])
    return ImportResult(added=added, updated=updated, unchanged=unchanged)


async def import_inventory(db: Database, path: Path, master_key: MasterKey) -> ImportResult:
    """Check the whole CSV, then import it (idempotent: a re-import changes nothing)."""
    return await import_rows(db, parse_inventory(path), master_key)


# ---------------------------------------------------------------------------------------------
# Reading back, decrypted


# What a MeterRecord takes from the stored row as it is; system_title is stored as hex.
_RECORD_AS_STORED = tuple(
    f.name for f in fields(MeterRecord) if f.name not in SECRET_FIELDS and f.name != "system_title"
)
_SEALED_COLUMNS = tuple((name, meter_column(name)) for name in SECRET_FIELDS)


def decrypt_meter(row: MeterRow | Meter, master_key: MasterKey) -> MeterRecord:
    """Open a stored meter's secrets. A wrong master key raises SecretsError naming the
    meter (and never showing the secret or the key)."""
    meter_id = row.meter_id
    secrets: dict[str, Any] = {
        name: _open_secret(master_key, meter_id, name, getattr(row, column))
        for name, column in _SEALED_COLUMNS
    }
    return MeterRecord(
        **{name: getattr(row, name) for name in _RECORD_AS_STORED},
        system_title=None if row.system_title is None else bytes.fromhex(row.system_title),
        **secrets,
    )


async def load_meter(db: Database, meter_id: str, master_key: MasterKey) -> MeterRecord | None:
    async with db.session() as session:
        row = await session.get(Meter, meter_id)
        return None if row is None else decrypt_meter(row, master_key)


async def load_meters(db: Database, master_key: MasterKey) -> list[MeterRecord]:
    """Every meter, decrypted (the daemon at start). Fails on the first meter whose secrets
    the master key cannot open, naming it."""
    async with db.session() as session:
        rows = await session.scalars(select(Meter).order_by(Meter.meter_id))
        return [decrypt_meter(row, master_key) for row in rows]
