"""The integer keys readings are stored under: a meter's key and a register's (obis, unit) id.

Resolved once per batch of readings, in the batch's own transaction, by a lookup of the
batch's distinct meters and registers (a few hundred names for thousands of rows); missing
keys are inserted first (ON CONFLICT DO NOTHING: another writer may add the same key at the
same time). Nothing is cached across transactions: a key inserted by a transaction that then
rolls back, or a meter key removed with its meter, must never be used afterwards.

A meter that is not in the inventory gets no key: its key insert fails on the foreign key to
meters, which fails the batch as a reading for an unknown meter always has."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from headend.storage.core import METER_KEYS, REGISTERS, dialect_insert

__all__ = ["NO_UNIT", "MeterKeys", "RegisterKeys", "reading_keys"]

NO_UNIT = ""  # registers.unit of a value without one (NULL would not be unique)
_CHUNK = 500  # names per IN (...) lookup


MeterKeys = dict[str, int]
RegisterKeys = dict[tuple[str, str], int]


async def reading_keys(
    session: AsyncSession, meter_ids: Iterable[str], registers: Iterable[tuple[str, str]]
) -> tuple[MeterKeys, RegisterKeys]:
    """The key of every meter and the id of every (obis, unit) register given ("" for no
    unit), creating those that are missing. On PostgreSQL both are looked up in one round
    trip: under load a round trip costs more than the lookup itself."""
    meters = sorted(set(meter_ids))
    wanted = sorted(set(registers))
    if session.bind.dialect.name == "postgresql":
        found_meters, found_registers = await _pg_lookup(session, meters, wanted)
    else:
        found_meters = await _meter_lookup(session, meters)
        found_registers = await _register_lookup(session, wanted)
    missing_meters = [m for m in meters if m not in found_meters]
    if missing_meters:
        rows = [{"meter_id": m} for m in missing_meters]
        await _insert_missing(session, METER_KEYS, ["meter_id"], rows)
        found_meters.update(await _meter_lookup(session, missing_meters))
    missing_registers = [r for r in wanted if r not in found_registers]
    if missing_registers:
        rows = [{"obis": obis, "unit": unit} for obis, unit in missing_registers]
        await _insert_missing(session, REGISTERS, ["obis", "unit"], rows)
        found_registers.update(await _register_lookup(session, missing_registers))
    return found_meters, found_registers


_PG_LOOKUP = text(
    "SELECT 0, meter_id, '', id FROM meter_keys WHERE meter_id = ANY(CAST(:ids AS varchar[])) "
    "UNION ALL "
    "SELECT 1, obis, unit, id FROM registers WHERE obis = ANY(CAST(:obis AS varchar[]))"
)


async def _pg_lookup(
    session: AsyncSession, meters: Sequence[str], registers: Sequence[tuple[str, str]]
) -> tuple[MeterKeys, RegisterKeys]:
    rows = await session.execute(
        _PG_LOOKUP, {"ids": list(meters), "obis": sorted({obis for obis, _ in registers})}
    )
    found_meters: MeterKeys = {}
    found_registers: RegisterKeys = {}
    for kind, name, unit, key in rows:
        if kind == 0:
            found_meters[name] = key
        else:
            found_registers[(name, unit)] = key
    return found_meters, found_registers


async def _meter_lookup(session: AsyncSession, meter_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(meter_ids), _CHUNK):
        chunk = meter_ids[start : start + _CHUNK]
        rows = await session.execute(
            select(METER_KEYS.c.meter_id, METER_KEYS.c.id).where(METER_KEYS.c.meter_id.in_(chunk))
        )
        found.update({meter_id: key for meter_id, key in rows})
    return found


async def _register_lookup(
    session: AsyncSession, registers: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(registers), _CHUNK):
        chunk = registers[start : start + _CHUNK]
        rows = await session.execute(
            select(REGISTERS.c.obis, REGISTERS.c.unit, REGISTERS.c.id).where(
                tuple_(REGISTERS.c.obis, REGISTERS.c.unit).in_(chunk)
            )
        )
        found.update({(obis, unit): key for obis, unit, key in rows})
    return found


async def _insert_missing(
    session: AsyncSession, table: Table, keys: list[str], values: list[dict[str, Any]]
) -> None:
    stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=keys)
    await session.execute(stmt, values)
