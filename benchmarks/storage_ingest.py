"""B3 storage ingest: readings/s through `Repository.store_readings` into SQLite and PostgreSQL.

Rows look like what polling produces: `--meters` meters x 4 registers per 15-minute round,
handed to the repository `--batch` rows at a time (one call = one transaction). The first
`--per-poll-rows` rows are also stored 4 at a time, one transaction per poll, as the daemon's
poller does today. The baseline, in the same run and on an identical fresh
schema, is the raw driver (stdlib sqlite3 / asyncpg) running the same INSERT ... ON CONFLICT
DO NOTHING with the same batches and transactions: what the database itself can take. For
PostgreSQL a COPY figure is added as the ceiling of what the server can ingest.

    python -m benchmarks storage-ingest --rows 200000 --json"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    OBIS_REGISTERS,
    emit,
    exit_code,
    goal,
    measure,
    parser,
    ratio,
    rounded,
)

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GOALS = {"sqlite": 20_000.0, "postgresql": 50_000.0}
BASE_TS = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_INSERT_COLUMNS = ("meter_key", "register_id", "ts", "value_num", "value_text")
Keys = tuple[dict[str, int], dict[tuple[str, str], int]]


def meter_ids(count: int) -> list[str]:
    return [f"BENCH{i:08d}" for i in range(count)]


def make_rows(meters: int, total: int) -> list[Any]:
    """`total` readings: rounds of every meter's 4 registers, 15 minutes apart."""
    from headend.storage import ReadingRow

    ids = meter_ids(meters)
    rows: list[ReadingRow] = []
    round_no = 0
    while len(rows) < total:
        ts = BASE_TS + dt.timedelta(minutes=15 * round_no)
        for index, meter in enumerate(ids):
            for position, obis in enumerate(OBIS_REGISTERS):
                value: float | int = 1000.0 + round_no * 0.25 + index + position
                if obis.startswith("0.0.96.3.10"):
                    value = 1
                rows.append(ReadingRow(meter, obis, ts, value, "Wh" if position < 2 else None))
                if len(rows) == total:
                    return rows
        round_no += 1
    return rows


async def _add_meters(db: Any, count: int) -> None:
    """The readings' foreign key needs the meters (setup, not measured)."""
    from sqlalchemy import insert

    from headend.storage.models import Meter

    now = dt.datetime.now(dt.UTC)
    values = [
        {
            "meter_id": meter,
            "host": "127.0.0.1",
            "port": 4059,
            "transport": "wrapper",
            "client_sap": 16,
            "server_logical": 1,
            "security": "none",
            "line": f"tcp:127.0.0.1:{4059 + i}",
            "created_at": now,
            "updated_at": now,
        }
        for i, meter in enumerate(meter_ids(count))
    ]
    async with db.transaction() as session:
        for start in range(0, len(values), 1000):
            await session.execute(insert(Meter), values[start : start + 1000])


async def _add_keys(db: Any, rows: Sequence[Any]) -> Keys:
    """For the raw baselines: the meter keys, registers and partitions the rows need (setup,
    not measured; the repository makes its own while it is measured)."""
    from headend.storage.partitions import ReadingPartitions
    from headend.storage.reading_keys import NO_UNIT, reading_keys

    await ReadingPartitions(db).ensure(row.ts for row in rows)
    async with db.transaction() as session:
        return await reading_keys(
            session, {row.meter_id for row in rows}, {(r.obis, r.unit or NO_UNIT) for r in rows}
        )


def _raw_values(rows: Sequence[Any], sqlite: bool, keys: Keys) -> list[tuple[Any, ...]]:
    from headend.storage.reading_keys import NO_UNIT
    from headend.storage.types import to_micros

    meters, registers = keys
    out = []
    for row in rows:
        ts = to_micros(row.ts) if sqlite else row.ts
        register = registers[(row.obis, row.unit or NO_UNIT)]
        out.append((meters[row.meter_id], register, ts, float(row.value), None))
    return out


def _batches(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


async def _repository_ingest(db: Any, rows: Sequence[Any], batch: int) -> dict[str, Any]:
    from headend.storage import Repository

    repository = Repository(db)
    stored = 0
    backend = await _backend_pid(db)
    server0 = _server_cpu_s(backend)
    with measure() as span:
        for chunk in _batches(rows, batch):
            stored += await repository.store_readings(chunk)
    server = _server_cpu_s(backend) - server0
    if await _backend_pid(db) != backend:  # not the one connection throughout: no figure
        server = float("nan")
    size = await _readings_bytes(db)
    return {
        "rows": stored,
        "wall_s": span.wall_s,
        "cpu_s": span.cpu_s,
        "server_cpu_s": server,
        "bytes": size,
    }


# The PostgreSQL server's CPU for the work (its backend process, read from /proc: the server
# runs on this machine): with the client's CPU, a cost per row that, unlike rows/s, does not
# move with what else the machine is running.
async def _backend_pid(db: Any) -> int | None:
    from sqlalchemy import text

    if db.dialect != "postgresql":
        return None
    async with db.session() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


def _server_cpu_s(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# What the readings cost on disk: their table(s) with every index, and the small lookup
# tables they refer to (registers, meter keys) where those exist.
_READING_TABLES = ("readings", "registers", "meter_keys")


async def _readings_bytes(db: Any) -> int:
    from sqlalchemy import text

    tables = ", ".join(f"'{name}'" for name in _READING_TABLES)
    if db.dialect == "sqlite":
        sql = (
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
            f"(SELECT name FROM sqlite_master WHERE tbl_name IN ({tables}))"
        )
    else:
        # A partitioned table's own size is 0: its partitions (pg_inherits) hold the rows.
        here = f"relnamespace = current_schema()::regnamespace AND relname IN ({tables})"
        sql = (
            "SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class "
            f"WHERE ({here}) OR oid IN (SELECT inhrelid FROM pg_inherits "
            f"WHERE inhparent IN (SELECT oid FROM pg_class WHERE {here}))"
        )
    async with db.session() as session:
        return int(await session.scalar(text(sql)) or 0)


def _sqlite_raw(path: Path, rows: Sequence[Any], batch: int, keys: Keys) -> dict[str, Any]:
    """The same inserts with stdlib sqlite3, same PRAGMAs, one transaction per batch."""
    sql = (
        f"INSERT INTO readings ({', '.join(_INSERT_COLUMNS)}) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (meter_key, register_id, ts) DO NOTHING"
    )
    chunks = [_raw_values(chunk, True, keys) for chunk in _batches(rows, batch)]
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        stored = 0
        with measure() as span:
            for values in chunks:
                connection.execute("BEGIN IMMEDIATE")
                cursor = connection.executemany(sql, values)
                stored += cursor.rowcount
                connection.execute("COMMIT")
    finally:
        connection.close()
    return {"rows": stored, "wall_s": span.wall_s, "cpu_s": span.cpu_s}


async def _postgres_raw(
    dsn: str, schema: str, rows: Sequence[Any], batch: int, copy: bool, keys: Keys
) -> dict[str, Any]:
    import asyncpg

    chunks = [_raw_values(chunk, False, keys) for chunk in _batches(rows, batch)]
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    sql = (
        f"INSERT INTO readings ({', '.join(_INSERT_COLUMNS)}) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (meter_key, register_id, ts) DO NOTHING"
    )
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    server0 = _server_cpu_s(backend)
    try:
        with measure() as span:
            for values in chunks:
                async with connection.transaction():
                    if copy:
                        await connection.copy_records_to_table(
                            "readings", records=values, columns=list(_INSERT_COLUMNS)
                        )
                    else:
                        await connection.executemany(sql, values)
        server = _server_cpu_s(backend) - server0
        stored = await connection.fetchval("SELECT count(*) FROM readings")
    finally:
        await connection.close()
    return {"rows": int(stored), "wall_s": span.wall_s, "cpu_s": span.cpu_s, "server_cpu_s": server}


def _figures(name: str, result: dict[str, Any], total: int) -> dict[str, Any]:
    figures = {
        f"{name}_rows_per_s": rounded(total / result["wall_s"], 0),
        f"{name}_cpu_us_per_row": rounded(result["cpu_s"] / total * 1e6, 2),
        f"{name}_rows_stored": result["rows"],
    }
    server = result.get("server_cpu_s", float("nan"))
    if server == server:  # PostgreSQL, measured (not NaN)
        figures[f"{name}_server_cpu_us_per_row"] = rounded(server / total * 1e6, 2)
        # What one client and one server process would sustain on an idle machine with
        # their CPU alone (round trips run one after the other, so the two add up).
        figures[f"{name}_cpu_bound_rows_per_s"] = rounded(total / (result["cpu_s"] + server), 0)
    return figures


def _bytes_per_row(result: dict[str, Any]) -> float | None:
    return rounded(result["bytes"] / result["rows"], 1) if result["rows"] else None


async def run_sqlite(
    rows: Sequence[Any], meters: int, batch: int, per_poll: Sequence[Any]
) -> dict[str, Any]:
    from headend.storage import Database

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as directory:
        paths = {kind: Path(directory) / f"{kind}.db" for kind in ("repo", "raw", "poll")}
        for kind, path in paths.items():
            db = await Database.open(f"sqlite+aiosqlite:///{path}")
            try:
                await _add_meters(db, meters)
                if kind == "raw":
                    keys = await _add_keys(db, rows)
            finally:
                await db.dispose()
        db = Database(f"sqlite+aiosqlite:///{paths['repo']}")
        try:
            repository = await _repository_ingest(db, rows, batch)
        finally:
            await db.dispose()
        raw = await asyncio.to_thread(_sqlite_raw, paths["raw"], rows, batch, keys)
        db = Database(f"sqlite+aiosqlite:///{paths['poll']}")
        try:
            polls = await _repository_ingest(db, per_poll, len(OBIS_REGISTERS))
        finally:
            await db.dispose()
    return _summarise("sqlite", rows, repository, raw, None, per_poll, polls)


async def run_postgres(
    rows: Sequence[Any], meters: int, batch: int, url: str, per_poll: Sequence[Any]
) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from headend.storage import Database

    kinds = ("repo", "raw", "copy", "poll")
    schemas = {kind: f"bench_{kind}_{uuid.uuid4().hex[:10]}" for kind in kinds}
    admin = create_async_engine(url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        async with admin.begin() as conn:
            for schema in schemas.values():
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        keys: dict[str, Keys] = {}
        for kind, schema in schemas.items():
            db = await Database.open(url, schema=schema)
            try:
                await _add_meters(db, meters)
                if kind in ("raw", "copy"):
                    keys[kind] = await _add_keys(db, rows)
            finally:
                await db.dispose()
        db = Database(url, schema=schemas["repo"])
        try:
            repository = await _repository_ingest(db, rows, batch)
        finally:
            await db.dispose()
        raw = await _postgres_raw(dsn, schemas["raw"], rows, batch, False, keys["raw"])
        copied = await _postgres_raw(dsn, schemas["copy"], rows, batch, True, keys["copy"])
        db = Database(url, schema=schemas["poll"])
        try:
            polls = await _repository_ingest(db, per_poll, len(OBIS_REGISTERS))
        finally:
            await db.dispose()
    finally:
        async with admin.begin() as conn:
            for schema in schemas.values():
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()
    return _summarise("postgresql", rows, repository, raw, copied, per_poll, polls)


def _summarise(
    backend: str,
    rows: Sequence[Any],
    repository: dict[str, Any],
    raw: dict[str, Any],
    copied: dict[str, Any] | None,
    per_poll: Sequence[Any],
    polls: dict[str, Any],
) -> dict[str, Any]:
    total = len(rows)
    out: dict[str, Any] = {"backend": backend}
    out.update(_figures("repository", repository, total))
    out.update(_figures("baseline_raw_insert", raw, total))
    if copied is not None:
        out.update(_figures("ceiling_copy", copied, total))
    # The daemon today stores each poll's 4 readings in a transaction of their own.
    out.update(_figures("repository_per_poll_tx", polls, len(per_poll)))
    out["bytes_per_reading"] = _bytes_per_row(repository)
    out["ratio_to_baseline"] = ratio(
        out["repository_rows_per_s"], out["baseline_raw_insert_rows_per_s"]
    )
    # Every row is new, so anything short of `total` stored is a failure.
    out["failures"] = (
        total - repository["rows"] + max(0, total - raw["rows"]) + len(per_poll) - polls["rows"]
    )
    out["goal"] = goal(
        out["repository_rows_per_s"],
        GOALS[backend],
        at_least=True,
        text=f">= {GOALS[backend]:,.0f} rows/s on {backend}",
    )
    return out


async def run(
    *,
    rows: int,
    meters: int,
    batch: int,
    backends: Sequence[str],
    postgres_url: str,
    per_poll_rows: int,
) -> dict[str, Any]:
    data = make_rows(meters, rows)
    per_poll = data[: min(per_poll_rows, rows)]
    result: dict[str, Any] = {
        "benchmark": "storage-ingest",
        "rows": rows,
        "meters": meters,
        "batch": batch,
        "per_poll_rows": len(per_poll),
        "baseline": "raw driver INSERT ... ON CONFLICT DO NOTHING, same batches",
    }
    failures = 0
    for backend in backends:
        if backend == "sqlite":
            part = await run_sqlite(data, meters, batch, per_poll)
        else:
            try:
                part = await run_postgres(data, meters, batch, postgres_url, per_poll)
            except OSError as exc:
                part = {"backend": backend, "skipped": f"PostgreSQL not reachable: {exc}"}
        failures += part.get("failures", 0)
        result[backend] = part
    result["failures"] = failures
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser("storage-ingest", __doc__ or "")
    cli.add_argument("--rows", type=int, default=200_000)
    cli.add_argument("--meters", type=int, default=1_000, help="distinct meters in the rows")
    cli.add_argument("--batch", type=int, default=4_000, help="rows per store_readings call")
    cli.add_argument(
        "--backends", default="sqlite,postgresql", help="comma list: sqlite,postgresql"
    )
    cli.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    cli.add_argument(
        "--per-poll-rows", type=int, default=4000, help="rows also stored 4 per transaction"
    )
    args = cli.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(GOALS)
    if unknown:
        cli.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    result = asyncio.run(
        run(
            rows=args.rows,
            meters=args.meters,
            batch=args.batch,
            backends=backends,
            postgres_url=args.postgres_url,
            per_poll_rows=args.per_poll_rows,
        )
    )
    emit(result, args.json)
    return exit_code(result)


if __name__ == "__main__":
    raise SystemExit(main())
