"""The meter inventory: CSV validation, idempotent import, keys encrypted at rest (and never
shown), and the `headend meters` commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import select
from typer.testing import CliRunner

from headend.cli.app import app
from headend.meters.inventory import (
    InventoryError,
    decrypt_meter,
    import_inventory,
    load_meter,
    load_meters,
    parse_inventory,
)
from headend.meters.secrets import MasterKey, Secret, SecretsError
from headend.storage import Database, Repository
from headend.storage.models import Meter

REPO = Path(__file__).resolve().parents[1]
HEADER = (
    "meter_id,host,port,transport,client_sap,server_logical,server_physical,security,"
    "password,auth_key,enc_key"
)
AUTH_KEY = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
ENC_KEY = "000102030405060708090A0B0C0D0E0F"
PASSWORD = "pa55-w0rd,with comma"
MASTER_HEX = "42" * 32


def inventory(tmp_path: Path, *lines: str, header: str = HEADER, name: str = "fleet.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((header, *lines)) + "\n")
    return path


def sample(tmp_path: Path, host: str = "10.0.0.1", auth_key: str = AUTH_KEY) -> Path:
    return inventory(
        tmp_path,
        "M-NONE,10.0.0.9,4059,wrapper,16,1,,none,,,",
        f'M-LLS,{host},4060,wrapper,32,1,,lls,"{PASSWORD}",,',
        f"M-HLS,10.0.0.2,4061,wrapper,1,1,,hls-gmac,,{auth_key},{ENC_KEY}",
        "M-HDLC,10.0.0.3,4001,hdlc,16,1,17,none,,,",
    )


def _database_files(directory: Path) -> bytes:
    """The SQLite database with its WAL, as bytes."""
    return b"".join(p.read_bytes() for p in directory.glob("headend.db*"))


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey(bytes.fromhex(MASTER_HEX), "test")


# -- parsing ------------------------------------------------------------------------------------


def test_example_inventory_parses() -> None:
    rows = parse_inventory(REPO / "config" / "fleet.example.csv")
    by_id = {r.meter_id: r for r in rows}
    assert len(rows) == 6
    hls = by_id["SIM00000003"]
    assert hls.security == "hls-gmac" and hls.auth_key is not None and hls.enc_key is not None
    assert hls.system_title == "4d4d4d0000000003"
    serial = by_id["SIM00000005"]
    assert (serial.transport, serial.serial_port, serial.baud, serial.port) == (
        "serial",
        "/dev/ttyUSB0",
        9600,
        None,
    )
    # Two meters on one RS-485 bus share a line (one session at a time).
    assert serial.line == by_id["SIM00000006"].line == "serial:/dev/ttyUSB0"
    assert by_id["SIM00000001"].line == "tcp:127.0.0.1:4059"


def test_defaults_for_empty_optional_cells(tmp_path: Path) -> None:
    (row,) = parse_inventory(inventory(tmp_path, "M1,h,,wrapper,,,,lls,pw,,"))
    assert (row.port, row.client_sap, row.server_logical, row.server_physical) == (
        4059,
        32,
        1,
        None,
    )
    assert row.password == Secret(b"pw")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("M1,h,4059,carrier-pigeon,16,1,,none,,,", "column transport: must be one of"),
        ("M1,h,4059,wrapper,16,1,,rot13,,,", "column security: must be one of"),
        ("M1,h,99999,wrapper,16,1,,none,,,", "column port: must be between 1 and 65535"),
        ("M1,h,port,wrapper,16,1,,none,,,", "column port: must be an integer"),
        ("M1,,4059,wrapper,16,1,,none,,,", "column host: is required"),
        ("M1,h,,hdlc,16,1,17,none,,,", "column port: is required for transport hdlc"),
        ("M1,h,4059,hdlc,200,1,17,none,,,", "column client_sap: must be between 0 and 127"),
        ("M1,h,4059,wrapper,16,1,,lls,,,", "column password: is required for security lls"),
        (f"M1,h,4059,wrapper,1,1,,hls-gmac,,,{ENC_KEY}", "column auth_key: is required"),
        (f"M1,h,4059,wrapper,1,1,,hls-gmac,,ABC,{ENC_KEY}", "column auth_key: must be 32 hex"),
        (f"M1,h,4059,wrapper,1,1,,hls-gmac,,{AUTH_KEY},{'G' * 32}", "column enc_key: must be 32"),
        ("M/1,h,4059,wrapper,16,1,,none,,,", "column meter_id: must be 1-64 characters"),
        (",h,4059,wrapper,16,1,,none,,,", "column meter_id: is required"),
        ("M1,h,4059,wrapper,16,1,,none,,", "line 3: expected 11 cells, got 10"),
    ],
)
def test_bad_rows_name_line_and_column(tmp_path: Path, line: str, fragment: str) -> None:
    path = inventory(tmp_path, "OK1,h,4059,wrapper,16,1,,none,,,", line)
    with pytest.raises(InventoryError) as caught:
        parse_inventory(path)
    message = str(caught.value)
    assert f"line 3, {fragment}" in message or fragment in message
    assert "line 3" in message


def test_bad_keys_are_not_echoed(tmp_path: Path) -> None:
    almost = AUTH_KEY[:-1] + "Z"
    path = inventory(tmp_path, f"M1,h,4059,wrapper,1,1,,hls-gmac,,{almost},{ENC_KEY}")
    with pytest.raises(InventoryError) as caught:
        parse_inventory(path)
    assert almost not in str(caught.value) and "auth_key" in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        "M1,h,4059,wrapper,16,1,,none,,,",
        "M1,h,4060,wrapper,16,1,,none,,,",
        "M2,h,0,wrapper,16,1,,none,,,",
        "M3,h,1,serial,16,1,,none,,,",
    )
    with pytest.raises(InventoryError) as caught:
        parse_inventory(path)
    errors = caught.value.errors
    assert "line 3, column meter_id: 'M1' already on line 2" in errors
    assert any(e.startswith("line 4, column port") for e in errors)
    assert any(e.startswith("line 5, column serial_port: is required") for e in errors)


def test_header_problems(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="missing column"):
        parse_inventory(inventory(tmp_path, header="meter_id,host,port"))
    with pytest.raises(InventoryError, match="column colour: unknown column"):
        parse_inventory(inventory(tmp_path, header=HEADER + ",colour"))
    with pytest.raises(InventoryError, match="empty file"):
        parse_inventory(inventory(tmp_path, header=""))
    with pytest.raises(InventoryError, match="file not found"):
        parse_inventory(tmp_path / "absent.csv")


def test_secrets_are_hidden_in_reprs(tmp_path: Path) -> None:
    rows = parse_inventory(sample(tmp_path))
    text = repr(rows) + str(rows) + "".join(f"{r}" for r in rows)
    for secret in (PASSWORD, AUTH_KEY, AUTH_KEY.lower(), ENC_KEY, ENC_KEY.lower()):
        assert secret not in text
    assert repr(Secret(b"x")) == str(Secret("y")) == f"{Secret('z')}" == "***"


# -- import -------------------------------------------------------------------------------------


async def test_import_is_idempotent(db: Database, tmp_path: Path, master_key: MasterKey) -> None:
    path = sample(tmp_path)
    first = await import_inventory(db, path, master_key)
    assert (first.added, first.updated, first.unchanged) == (4, 0, 0)

    async def snapshot() -> dict[str, tuple[object, ...]]:
        async with db.session() as session:
            return {
                m.meter_id: (m.updated_at, m.password_enc, m.auth_key_enc, m.enc_key_enc, m.host)
                for m in await session.scalars(select(Meter))
            }

    before = await snapshot()
    second = await import_inventory(db, path, master_key)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 4)
    assert await snapshot() == before  # not a byte changed, not even the ciphertexts

    changed = await import_inventory(
        db, sample(tmp_path, host="10.9.9.9", auth_key=ENC_KEY), master_key
    )
    assert (changed.added, changed.updated, changed.unchanged) == (0, 2, 2)
    lls = await load_meter(db, "M-LLS", master_key)
    hls = await load_meter(db, "M-HLS", master_key)
    assert lls is not None and lls.host == "10.9.9.9"
    assert hls is not None and hls.auth_key == Secret(bytes.fromhex(ENC_KEY))


async def test_keys_are_encrypted_at_rest_and_decrypt_for_the_driver(
    db: Database, tmp_path: Path, master_key: MasterKey
) -> None:
    await import_inventory(db, sample(tmp_path), master_key)
    async with db.session() as session:
        stored = [
            (m.password_enc or "") + (m.auth_key_enc or "") + (m.enc_key_enc or "")
            for m in await session.scalars(select(Meter))
        ]
    blob = "".join(stored)
    for secret in (PASSWORD, AUTH_KEY, AUTH_KEY.lower(), ENC_KEY, ENC_KEY.lower()):
        assert secret not in blob
    if db.dialect == "sqlite":
        raw = _database_files(tmp_path)
        for secret in (PASSWORD, AUTH_KEY.lower(), ENC_KEY.lower()):
            assert secret.encode() not in raw
        assert bytes.fromhex(AUTH_KEY) not in raw

    records = {r.meter_id: r for r in await load_meters(db, master_key)}
    hls = records["M-HLS"]
    assert hls.auth_key is not None and hls.auth_key.reveal() == bytes.fromhex(AUTH_KEY)
    assert AUTH_KEY.lower() not in repr(hls) and "'***'" not in repr(hls)
    assert records["M-LLS"].password == Secret(PASSWORD.encode())


async def test_records_become_driver_connections(
    db: Database, tmp_path: Path, master_key: MasterKey
) -> None:
    pytest.importorskip(
        "drivers.connect", reason="drivers.connect not importable yet", exc_type=ImportError
    )
    await import_inventory(db, sample(tmp_path), master_key)
    records = {r.meter_id: r for r in await load_meters(db, master_key)}
    connection = records["M-HLS"].connection()
    assert connection.auth_key == bytes.fromhex(AUTH_KEY)
    assert connection.enc_key == bytes.fromhex(ENC_KEY)
    assert (connection.host, connection.port, connection.client_sap) == ("10.0.0.2", 4061, 1)
    lls = records["M-LLS"].connection()
    assert lls.password == PASSWORD.encode() and lls.security == "lls"
    hdlc = records["M-HDLC"].connection()
    assert (hdlc.transport, hdlc.server_physical, hdlc.line) == ("hdlc", 17, "tcp:10.0.0.3:4001")


async def test_wrong_master_key_is_a_clear_error_naming_the_meter(
    db: Database, tmp_path: Path, master_key: MasterKey
) -> None:
    await import_inventory(db, sample(tmp_path), master_key)
    other = MasterKey(bytes(32), "HEADEND_MASTER_KEY")
    with pytest.raises(SecretsError) as caught:
        await load_meter(db, "M-HLS", other)
    message = str(caught.value)
    assert "meter M-HLS" in message and "wrong master key" in message
    assert MASTER_HEX not in message
    with pytest.raises(SecretsError, match="meter M-LLS password"):
        await import_inventory(db, sample(tmp_path), other)
    # A ciphertext moved to another meter's row does not open.
    repo = Repository(db)
    hls = await repo.get_meter("M-HLS")
    assert hls is not None
    async with db.transaction() as session:
        meter = await session.get(Meter, "M-NONE")
        assert meter is not None
        meter.auth_key_enc = hls.auth_key_enc
    none_row = await repo.get_meter("M-NONE")
    assert none_row is not None
    with pytest.raises(SecretsError, match="meter M-NONE auth_key"):
        decrypt_meter(none_row, master_key)


# -- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "headend.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "cli.db"}"\n')
    return config, {"HEADEND_MASTER_KEY": MASTER_HEX}


def _no_secrets(text: str) -> None:
    for secret in (PASSWORD, AUTH_KEY, AUTH_KEY.lower(), ENC_KEY, ENC_KEY.lower(), MASTER_HEX):
        assert secret not in text


def test_cli_import_list_show(tmp_path: Path, cli_env: tuple[Path, dict[str, str]]) -> None:
    config, env = cli_env
    runner = CliRunner(mix_stderr=False)
    path = sample(tmp_path)
    first = runner.invoke(app, ["meters", "import", str(path), "--config", str(config)], env=env)
    assert first.exit_code == 0, first.stderr
    assert "4 added, 0 updated, 0 unchanged" in first.stdout
    again = runner.invoke(app, ["--config", str(config), "meters", "import", str(path)], env=env)
    assert again.exit_code == 0 and "0 added, 0 updated, 4 unchanged" in again.stdout

    listed = runner.invoke(app, ["meters", "list", "--json", "--config", str(config)], env=env)
    assert listed.exit_code == 0, listed.stderr
    meters = {m["meter_id"]: m for m in json.loads(listed.stdout)}
    assert set(meters) == {"M-NONE", "M-LLS", "M-HLS", "M-HDLC"}
    assert meters["M-HLS"]["auth_key"] == "set" and meters["M-HLS"]["password"] is None
    assert meters["M-LLS"]["password"] == "set"

    table = runner.invoke(app, ["meters", "list", "--config", str(config)], env=env)
    assert table.exit_code == 0 and "M-HDLC" in table.stdout and "4 meters" in table.stdout

    shown = runner.invoke(app, ["meters", "show", "M-HLS", "--json", "-c", str(config)], env=env)
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["auth_key"], data["enc_key"], data["password"]) == ("set", "set", None)
    assert data["pending_commands"] == [] and data["security"] == "hls-gmac"
    shown_table = runner.invoke(app, ["meters", "show", "M-LLS", "-c", str(config)], env=env)
    assert shown_table.exit_code == 0 and "set" in shown_table.stdout

    for result in (first, again, listed, table, shown, shown_table):
        _no_secrets(result.stdout + result.stderr)

    missing = runner.invoke(app, ["meters", "show", "NOPE", "-c", str(config)], env=env)
    assert missing.exit_code == 1 and "no meter 'NOPE'" in missing.stderr


def test_cli_reports_bad_inventory_and_bad_config(
    tmp_path: Path, cli_env: tuple[Path, dict[str, str]]
) -> None:
    config, env = cli_env
    runner = CliRunner(mix_stderr=False)
    bad = inventory(tmp_path, "M1,h,4059,wrapper,16,1,,lls,,,", name="bad.csv")
    result = runner.invoke(app, ["meters", "import", str(bad), "-c", str(config)], env=env)
    assert result.exit_code == 2
    assert "line 2, column password: is required for security lls" in result.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text("[polling]\ninterval_s = -5\n")
    result = runner.invoke(app, ["meters", "list", "-c", str(broken)], env=env)
    assert result.exit_code == 2
    assert "polling.interval_s: must be > 0, got -5" in result.stderr

    result = runner.invoke(
        app, ["meters", "list", "-c", str(config)], env={"HEADEND_POLLING_TIMEOUT_S": "x"}
    )
    assert result.exit_code == 2 and "polling.timeout_s" in result.stderr


def test_cli_generates_the_master_key_file_once(tmp_path: Path) -> None:
    config = tmp_path / "headend.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "gen.db"}"\n')
    runner = CliRunner(mix_stderr=False)
    env = {"HEADEND_MASTER_KEY": ""}  # empty: no key given
    path = sample(tmp_path)
    result = runner.invoke(app, ["meters", "import", str(path), "-c", str(config)], env=env)
    assert result.exit_code == 0, result.stderr
    key_file = tmp_path / "gen.db.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_text = key_file.read_text().strip()
    assert key_text not in result.stdout + result.stderr
    again = runner.invoke(app, ["meters", "import", str(path), "-c", str(config)], env=env)
    assert again.exit_code == 0 and "4 unchanged" in again.stdout

    async def check() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gen.db'}")
        try:
            record = await load_meter(db, "M-HLS", MasterKey(bytes.fromhex(key_text)))
            assert record is not None and record.auth_key == Secret(bytes.fromhex(AUTH_KEY))
        finally:
            await db.dispose()

    asyncio.run(check())


def test_cli_as_a_process_keeps_stdout_clean(
    tmp_path: Path, cli_env: tuple[Path, dict[str, str]]
) -> None:
    config, env = cli_env
    base = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    path = sample(tmp_path)
    imported = subprocess.run(
        [sys.executable, "-m", "headend.cli", "meters", "import", str(path), "-c", str(config)],
        capture_output=True,
        text=True,
        env=base,
        cwd=tmp_path,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "headend.cli", "meters", "list", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        env=base,
        cwd=tmp_path,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 4
    _no_secrets(imported.stdout + imported.stderr + listed.stdout + listed.stderr)
