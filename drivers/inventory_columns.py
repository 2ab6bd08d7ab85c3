"""The inventory file's columns (DESIGN.md, "Inventory file"), defined once for the head-end that
imports the file, the simulator that writes it and the benchmarks that generate it.

The same names are the per-meter fields of drivers.connect.MeterConnection, of the meters table
and of the head-end's inventory records; each of those declares them again with its own types,
and tests/test_meter_fields.py holds every one of them to this list. Nothing is imported here, so
the simulator can write an inventory without loading the DLMS client."""

from __future__ import annotations

__all__ = [
    "COLUMNS",
    "CONNECTION_FIELDS",
    "DEFAULT_CLIENT_SAP",
    "METER_FIELDS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SECRET_FIELDS",
]

CONNECTION_FIELDS: tuple[str, ...] = (
    "host",
    "port",
    "transport",
    "client_sap",
    "server_logical",
    "server_physical",
    "security",
    "password",
    "auth_key",
    "enc_key",
    "serial_port",
    "baud",
)
"""How to reach one meter: what an inventory keeps of a MeterConnection, in column order."""

SECRET_FIELDS: tuple[str, ...] = ("password", "auth_key", "enc_key")
"""The connection fields that are sealed at rest and never shown."""

COLUMNS: tuple[str, ...] = ("meter_id", *CONNECTION_FIELDS, "system_title")
"""An inventory file's header, as the simulator writes it. The server's system title is not
needed to connect; it tells whose ciphered push arrived."""

_HEAD_END_COLUMNS = ("line",)  # which meters share one session at a time (a bus behind one port)

METER_FIELDS: tuple[str, ...] = (*COLUMNS[1:], *_HEAD_END_COLUMNS)
"""Everything an inventory row may say about a meter besides its id: the head-end stores each
(secrets sealed) and reads each back."""

OPTIONAL_COLUMNS: tuple[str, ...] = ("serial_port", "baud", "system_title", *_HEAD_END_COLUMNS)
"""Columns a file may leave out: the head-end works out the line, and a TCP meter has no serial
port or baud rate."""

REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in ("meter_id", *METER_FIELDS) if c not in OPTIONAL_COLUMNS
)
"""Columns every inventory file must have (empty cells allowed where the meter needs none)."""

DEFAULT_CLIENT_SAP: dict[str, int] = {"none": 16, "lls": 32, "hls-gmac": 1}
"""The client SAP a meter expects by security (public client, reader, management client) when
an inventory row or a command line gives none."""
