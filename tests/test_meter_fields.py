"""One list of what is kept per meter (drivers/inventory_columns.py), and everything that declares
those fields again with its own types held to it: the driver's MeterConnection, the meters table,
the stored and decrypted records, the head-end's and the simulator's inventory rows. A field added
in one place and not the others fails here, not in production."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from db_support import temp_database

import simulators.inventory
from drivers.connect import MeterConnection
from drivers.inventory_columns import (
    COLUMNS,
    CONNECTION_FIELDS,
    METER_FIELDS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SECRET_FIELDS,
)
from headend.meters.inventory import InventoryRow, MeterRecord, import_inventory, load_meter
from headend.meters.secrets import MasterKey
from headend.storage.models import Meter, meter_column
from headend.storage.records import MeterRow


def names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def test_the_inventory_header_is_the_documented_one() -> None:
    assert ",".join(COLUMNS) == (
        "meter_id,host,port,transport,client_sap,server_logical,server_physical,security,"
        "password,auth_key,enc_key,serial_port,baud,system_title"
    )
    assert set(REQUIRED_COLUMNS).isdisjoint(OPTIONAL_COLUMNS)
    assert set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) == {"meter_id", *METER_FIELDS}
    assert set(SECRET_FIELDS) <= set(CONNECTION_FIELDS) <= set(METER_FIELDS)


def test_meter_connection_is_the_connection_fields_then_session_options() -> None:
    session_options = ["mode_e", "client_system_title", "deviation_sign"]
    assert names(MeterConnection) == [*CONNECTION_FIELDS, *session_options]
    hidden = [f.name for f in fields(MeterConnection) if not f.repr]
    assert hidden == list(SECRET_FIELDS)


def test_the_meters_table_has_a_column_for_every_field_and_no_plaintext_secret() -> None:
    columns = set(Meter.__table__.columns.keys())
    assert {"meter_id", *(meter_column(name) for name in METER_FIELDS)} <= columns
    assert columns.isdisjoint(SECRET_FIELDS)
    assert [meter_column(name) for name in SECRET_FIELDS] == [
        "password_enc",
        "auth_key_enc",
        "enc_key_enc",
    ]


def test_meter_row_is_made_of_meters_columns_and_holds_every_field() -> None:
    row_fields = names(MeterRow)
    assert set(row_fields) <= set(Meter.__table__.columns.keys())
    assert {"meter_id", *(meter_column(name) for name in METER_FIELDS)} <= set(row_fields)


def test_head_end_rows_and_records_hold_every_field() -> None:
    assert set(names(InventoryRow)) == {"meter_id", *METER_FIELDS, "line_no"}
    assert set(names(MeterRecord)) == {"meter_id", *METER_FIELDS, "capabilities", "control_mode"}
    for cls in (InventoryRow, MeterRecord):
        hidden = {f.name for f in fields(cls) if not f.repr}
        assert hidden == set(SECRET_FIELDS), cls


def test_the_simulator_row_is_the_inventory_header() -> None:
    assert names(simulators.inventory.InventoryRow) == list(COLUMNS)


@pytest.mark.parametrize("transport", ["hdlc", "serial"])
async def test_every_connection_field_survives_import_and_decryption(
    tmp_path: Path, transport: str
) -> None:
    """A cell in each column, imported, stored sealed, read back: the MeterConnection has it."""
    cells = {
        "meter_id": "M-ALL",
        "host": "10.1.2.3",
        "port": "4100",
        "transport": transport,
        "client_sap": "33",
        "server_logical": "5",
        "server_physical": "77",
        "security": "hls-gmac",
        "password": "pw",
        "auth_key": "11" * 16,
        "enc_key": "22" * 16,
        "serial_port": "/dev/ttyS7",
        "baud": "19200",
        "system_title": "4d4d4d0000000042",
    }
    assert list(cells) == list(COLUMNS)
    expected: dict[str, object] = {
        "host": "10.1.2.3",
        "port": 4100,
        "transport": transport,
        "client_sap": 33,
        "server_logical": 5,
        "server_physical": 77,
        "security": "hls-gmac",
        "password": b"pw",
        "auth_key": b"\x11" * 16,
        "enc_key": b"\x22" * 16,
        "serial_port": "/dev/ttyS7",
        "baud": 19200,
    }
    assert list(expected) == list(CONNECTION_FIELDS)
    path = tmp_path / "inventory.csv"
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(cells.values()) + "\n")
    master_key = MasterKey(b"\x42" * 32, "test")
    async with temp_database("sqlite", tmp_path) as db:
        assert (await import_inventory(db, path, master_key)).added == 1
        record = await load_meter(db, "M-ALL", master_key)
    assert record is not None
    connection = record.connection()
    assert {name: getattr(connection, name) for name in CONNECTION_FIELDS} == expected
    assert record.system_title == bytes.fromhex("4d4d4d0000000042")
    line = "serial:/dev/ttyS7" if transport == "serial" else "tcp:10.1.2.3:4100"
    assert record.line == connection.line == line
