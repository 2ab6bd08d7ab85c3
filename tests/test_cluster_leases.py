"""Leases in a real PostgreSQL, two members in one process (headend/cluster/leases.py): a fair
split, no lease held twice, takeover after expiry with a new epoch, and the fence refusing a
result committed under a lease that was taken over; a frozen member's locks released (idle
limit, cluster/evict.py) and its interrupted attempts due at once for the new holder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest
from db_support import temp_database
from e2e_support import eventually
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_balance_identity import T0, add_meters

from headend.balance_event import BalanceEvent
from headend.cluster.evict import Evictor, application_name
from headend.cluster.leases import SHARDS, ClusterOwnership, lease_name
from headend.cluster.members import cluster_report
from headend.cluster.ownership import LeaseLost
from headend.storage import Database, Repository

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Rec:
    meter_id: str
    transport: str
    line: str


RECORDS = [Rec(f"M{i:03d}", "wrapper", f"tcp:10.0.0.{i}:4059") for i in range(40)]


async def _held(db: object) -> dict[str, str]:
    async with db.session() as session:  # type: ignore[attr-defined]
        rows = await session.execute(
            text("SELECT name, holder FROM cluster_leases WHERE expires_at > now()")
        )
        return {r.name: r.holder for r in rows}


async def test_two_members_split_fairly_and_take_over_with_a_new_epoch(tmp_path) -> None:
    async with temp_database("postgresql", tmp_path) as db:
        a = ClusterOwnership(db, "a", 1.5)
        b = ClusterOwnership(db, "b", 1.5)
        for member in (a, b):
            member.track(RECORDS)
        await a.tick()
        assert len(a.leases) == SHARDS  # alone: everything
        await b.tick()  # b is live now: a's fair share halves
        for _ in range(3):
            await a.tick()
            await b.tick()
        assert len(a.leases) == len(b.leases) == SHARDS // 2
        assert not set(a.leases) & set(b.leases)
        held = await _held(db)
        assert sorted(held) == sorted(a.leases + b.leases)
        # Every meter has exactly one owner.
        for rec in RECORDS:
            assert (a.owns(rec.meter_id) is None) != (b.owns(rec.meter_id) is None)

        mine = next(r.meter_id for r in RECORDS if a.owns(r.meter_id) is not None)
        token = a.enter(mine)
        assert token is not None
        await a.fence()  # held: passes

        await asyncio.sleep(1.6)  # a stops renewing (paused): its leases expire
        await b.tick()
        await b.tick()
        new = b.owns(mine)
        assert new is not None and new.name == token.name and new.epoch == token.epoch + 1
        with pytest.raises(LeaseLost):
            await a.fence()  # a's result would be refused
        async with db.session() as session:
            lease = lease_name("wrapper", next(r.line for r in RECORDS if r.meter_id == mine))
            holder = (
                await session.execute(
                    text("SELECT holder FROM cluster_leases WHERE name = :n"), {"n": lease}
                )
            ).scalar_one()
        assert holder == "b"
        await a.tick()  # a wakes: renewal finds nothing of its own
        assert a.owns(mine) is None
        report = await cluster_report(db, 1.5)
        assert {m["instance_id"] for m in report["members"]} == {"a", "b"}
        await b.leave()
        assert {m["instance_id"] for m in (await cluster_report(db, 1.5))["members"]} == {"a"}


async def test_a_serial_line_goes_to_the_member_whose_host_has_the_port(tmp_path) -> None:
    line = Rec("S1", "serial", "serial:/dev/ttyFAKE0")
    async with temp_database("postgresql", tmp_path) as db:
        without = ClusterOwnership(db, "far", 2.0, device_exists=lambda path: False)
        with_port = ClusterOwnership(db, "near", 2.0, device_exists=lambda path: True)
        for member in (without, with_port):
            member.track([line])
        await without.tick()
        assert without.owns("S1") is None  # every shard, but not the line
        await with_port.tick()
        assert with_port.owns("S1") is not None
        assert "line:serial:/dev/ttyFAKE0" in with_port.leases


async def test_a_session_is_cancelled_when_its_lease_runs_out(tmp_path) -> None:
    async with temp_database("postgresql", tmp_path) as db:
        a = ClusterOwnership(db, "a", 1.0)
        a.track(RECORDS[:1])
        await a.tick()
        with pytest.raises(LeaseLost):
            async with a.guard(RECORDS[0].meter_id):
                await asyncio.sleep(5)  # nobody renews: cancelled at the local deadline


async def test_a_poll_under_a_lost_lease_stores_its_readings_but_records_nothing(
    sim_fleet, tmp_path
) -> None:
    from datetime import UTC, datetime, timedelta

    from e2e_support import fleet_database

    from headend.cluster.fenced import FencedReadings
    from headend.storage import ReadingRow, Repository
    from headend.storage.batching import ImmediateReadings

    async with sim_fleet(1) as fleet, fleet_database("postgresql", tmp_path, fleet) as (db, _):
        meter = fleet.config(0).meter_id
        records = [Rec(meter, "wrapper", "tcp:10.9.9.9:4059")]
        a, b = ClusterOwnership(db, "a", 1.5), ClusterOwnership(db, "b", 1.5)
        a.track(records)
        b.track(records)
        await a.tick()
        sink = FencedReadings(ImmediateReadings(Repository(db)), a)
        recorded: list[int] = []

        async def record() -> None:
            recorded.append(1)

        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        # The poll's token, as its session set it. The batch that commits its results runs
        # in the writer's task, which the session's lease timeout does not cancel.
        assert a.enter(meter) is not None
        await sink.store_readings([ReadingRow(meter, "1.0.1.8.0.255", t0, 1.0)], record)
        assert recorded == [1]
        await asyncio.sleep(1.6)  # the batch is late (a paused): b takes the meter meanwhile
        await b.tick()
        await b.tick()
        assert b.owns(meter) is not None
        later = t0 + timedelta(minutes=15)
        await sink.store_readings([ReadingRow(meter, "1.0.1.8.0.255", later, 2.0)], record)
        assert recorded == [1] and sink.skipped == 1  # nothing recorded under the lost lease
        stored = await Repository(db).readings(meter)
        assert len(stored) == 2  # the readings themselves are facts: kept


async def test_a_member_frozen_in_a_transaction_does_not_hold_its_row_locks(tmp_path) -> None:
    # A member stopped (SIGSTOP) inside a transaction that updated a meter's command keeps
    # that row locked; the new holder's write to it waits only until the server ends the
    # idle transaction (half a lease), not until the frozen member wakes.
    async with temp_database("postgresql", tmp_path) as db:
        frozen = Database(db.url, schema=db.schema, idle_in_transaction_s=0.5)
        try:
            async with db.transaction() as session:
                await session.execute(text("CREATE TABLE scratch (id int PRIMARY KEY, v int)"))
                await session.execute(text("INSERT INTO scratch VALUES (1, 0)"))
            locked = asyncio.Event()

            async def freeze() -> None:
                async with frozen.transaction() as session:
                    await session.execute(text("UPDATE scratch SET v = 1 WHERE id = 1"))
                    locked.set()
                    await asyncio.sleep(30)  # frozen: never commits on its own

            frozen_task = asyncio.create_task(freeze())
            await locked.wait()
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(10):
                async with db.transaction() as session:
                    await session.execute(text("UPDATE scratch SET v = 2 WHERE id = 1"))
            assert loop.time() - started < 5
            frozen_task.cancel()
            with pytest.raises((asyncio.CancelledError, Exception)):
                await frozen_task
            async with db.session() as session:
                v = (await session.execute(text("SELECT v FROM scratch"))).scalar_one()
            assert v == 2  # the frozen member's write was rolled back with its transaction
        finally:
            await frozen.dispose()


async def test_an_attempt_the_old_holder_had_under_way_is_due_at_once_for_the_new_one(
    tmp_path,
) -> None:
    # The old holder marked its attempt 'sent', due again only after the attempt's backoff
    # (in case it died mid-attempt). It did: the member that claims the lease runs the
    # command now. A command backing off from a failure keeps its backoff.
    async with temp_database("postgresql", tmp_path) as db:
        await add_meters(db, "M1", "M2")
        repo = Repository(db, warning_threshold=Decimal("20"))
        for meter_id in ("M1", "M2"):
            event = BalanceEvent(meter_id, Decimal("-5"), "CNY", 1, f"e-{meter_id}", T0)
            assert (await repo.apply_balance_event(event)).command is not None
        async with db.transaction() as session:
            for meter_id, status in (("M1", "sent"), ("M2", "failed")):
                await session.execute(
                    text(
                        "UPDATE commands SET status = :status, attempt = 3, "
                        "next_attempt_at = now() + interval '300 seconds' "
                        "WHERE meter_id = :meter_id"
                    ),
                    {"status": status, "meter_id": meter_id},
                )
        member = ClusterOwnership(db, "new", 2.0)
        member.track([Rec(m, "wrapper", f"tcp:{m}") for m in ("M1", "M2")])
        woken: list[str] = []
        member.resumed.add(woken.append)
        await member.tick()
        assert woken == ["M1"]
        assert member.owns("M1") is not None  # owned by the time it is woken
        async with db.session() as session:
            rows = await session.execute(
                text(
                    "SELECT meter_id, next_attempt_at <= now() AS due FROM commands "
                    "ORDER BY meter_id"
                )
            )
            assert [(r.meter_id, r.due) for r in rows] == [("M1", True), ("M2", False)]
        await member.tick()  # nothing newly claimed: nothing resumed again
        assert woken == ["M1"]


async def test_a_member_frozen_in_the_middle_of_a_copy_has_its_sessions_ended(tmp_path) -> None:
    # Frozen while the server waits for the rows of a COPY (readings are copied in): the
    # transaction is not idle and no server timeout ends it. The member taking over ends the
    # sessions a member whose heartbeat is older than a lease opened while it was alive; a
    # live member's stay, and so do those of a member restarted under a stale row.
    lease_s = 1.0
    async with temp_database("postgresql", tmp_path) as db:
        frozen = Database(db.url, schema=db.schema, application_name=application_name("dead"))
        live = Database(db.url, schema=db.schema, application_name=application_name("live"))
        reborn = Database(db.url, schema=db.schema, application_name=application_name("again"))
        try:
            async with db.transaction() as session:
                await session.execute(text("CREATE TABLE scratch (id int PRIMARY KEY, v int)"))
                await session.execute(text("INSERT INTO scratch VALUES (1, 0), (2, 0)"))
                await session.execute(
                    text(
                        "INSERT INTO cluster_members (instance_id, host, pid, started_at, "
                        "heartbeat_at) VALUES ('dead', 'h', 1, now(), now()), "
                        "('live', 'h', 2, now(), now()), "
                        "('again', 'h', 3, now(), now() - interval '1 hour')"
                    )
                )
            locked = asyncio.Event()

            async def rows() -> AsyncIterator[bytes]:
                yield b"3\t3\n"
                locked.set()
                await asyncio.sleep(60)  # frozen before the rest of the data

            async def freeze() -> None:
                async with frozen.engine.connect() as conn:
                    raw = (await conn.get_raw_connection()).driver_connection
                    assert raw is not None
                    async with raw.transaction():
                        await raw.execute("UPDATE scratch SET v = 1 WHERE id = 1")
                        await raw.copy_to_table("scratch", source=rows())

            frozen_task = asyncio.create_task(freeze())
            await locked.wait()
            evictor = Evictor(db, "taker", lease_s=lease_s)
            assert await evictor.run_once() == 0  # its heartbeat is fresh: alive
            await asyncio.sleep(lease_s + 0.5)  # it stops beating: presumed dead
            async with db.transaction() as session:
                await session.execute(
                    text(
                        "UPDATE cluster_members SET heartbeat_at = now() WHERE instance_id = 'live'"
                    )
                )
            async with live.transaction() as session, reborn.transaction() as again:
                await session.execute(text("UPDATE scratch SET v = 5 WHERE id = 2"))
                await again.execute(text("SELECT 1"))  # opened after its row went stale
                assert await evictor.run_once() == 1
                async with asyncio.timeout(10):
                    async with db.transaction() as other:
                        await other.execute(text("UPDATE scratch SET v = 2 WHERE id = 1"))
                with pytest.raises(
                    (asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError, OSError)
                ):
                    async with asyncio.timeout(10):
                        await frozen_task
            async with db.session() as session:
                rows_now = (await session.execute(text("SELECT id, v FROM scratch"))).all()
            # The frozen COPY's row went with it; the live and the reborn members' stood.
            assert sorted(tuple(r) for r in rows_now) == [(1, 2), (2, 5)]

            # Nothing left to end, once the server has seen the session go.
            async def none_left() -> bool:
                return await evictor.run_once() == 0

            await eventually(none_left, within=5, what="the dead member's sessions gone")
        finally:
            for database in (frozen, live, reborn):
                await database.dispose()
