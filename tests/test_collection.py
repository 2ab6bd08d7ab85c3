"""Collection: the due-time scheduler, the per-line priority locks, and the poller against the
simulator fleet with a real database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import random

import pytest
from db_support import DIALECTS
from e2e_support import KeepingOutbox, eventually, fleet_database

from drivers.connect import open_session
from headend.collection.poller import BILLING_PROFILE, LOAD_PROFILE, Poller, PollSettings
from headend.collection.scheduler import PollJob, Scheduler, next_slot, slot_offset
from headend.collection.service import CollectionService
from headend.meters.access import MeterAccess
from headend.meters.line_locks import COMMAND, POLL, LineLocks
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.storage import Repository

# -- scheduler ---------------------------------------------------------------------------------


def test_slots_spread_over_the_interval() -> None:
    interval = 900.0
    offsets = sorted(slot_offset(f"MTR{i:06d}", interval) for i in range(10_000))
    assert 0 <= offsets[0] and offsets[-1] < interval
    # Every tenth of the interval holds roughly a tenth of the fleet: no thundering herd.
    buckets = [0] * 10
    for offset in offsets:
        buckets[int(offset / interval * 10)] += 1
    assert min(buckets) > 800 and max(buckets) < 1200


def test_next_slot_is_strictly_after_and_on_the_slot() -> None:
    for now in (0.0, 123.4, 1e9 + 0.5):
        due = next_slot("A", 60.0, now)
        assert now < due <= now + 60.0
        assert abs((due - slot_offset("A", 60.0)) % 60.0) < 1e-6 or (
            abs((due - slot_offset("A", 60.0)) % 60.0 - 60.0) < 1e-6
        )


def test_scheduler_pops_due_jobs_in_order_and_reschedules() -> None:
    sched = Scheduler(interval_s=100.0, rng=random.Random(1))
    now = 1000.0
    for i in range(50):
        sched.add(f"M{i}", now)
    assert len(sched) == 50
    assert sched.pop_due(now, limit=100) == []  # nothing due yet: all spread into the future
    first = sched.next_due()
    assert first is not None and now < first <= now + 100
    jobs = sched.pop_due(now + 100, limit=20)
    assert len(jobs) == 20  # the limit bounds concurrency
    dues = [sched.get(j.meter_id).due for j in jobs]  # type: ignore[union-attr]
    assert dues == sorted(dues)
    # The first poll of a meter also catches up profiles and checks the clock.
    assert all(j.load_profile and j.billing_profile and j.clock_check for j in jobs)
    # Running meters are not handed out twice.
    rest = sched.pop_due(now + 100, limit=100)
    assert {j.meter_id for j in rest}.isdisjoint({j.meter_id for j in jobs})
    assert len(rest) == 30
    for job in jobs + rest:
        assert not sched.finished(job, now + 100, ok=True)
    assert sched.pop_due(now + 100, limit=100) == []
    again = sched.pop_due(now + 200.001, limit=100)
    assert len(again) == 50
    # Profiles and clock wait for their own (longer) intervals.
    assert not any(j.load_profile or j.billing_profile or j.clock_check for j in again)


def test_scheduler_backs_off_and_reports_unreachable_once() -> None:
    sched = Scheduler(
        interval_s=1000.0, retry_base_s=1.0, unreachable_after=3, rng=random.Random(2)
    )
    sched.add("X", 0.0)
    now = sched.next_due() or 0.0
    became = []
    waits = []
    for _ in range(6):
        (job,) = sched.pop_due(now, limit=10)
        became.append(sched.finished(job, now, ok=False))
        nxt = sched.next_due()
        assert nxt is not None
        waits.append(nxt - now)
        now = nxt
    assert became == [False, False, True, False, False, False]
    assert waits[-1] > waits[0]  # exponential backoff
    (job,) = sched.pop_due(now, limit=10)
    assert not sched.finished(job, now, ok=True)
    assert sched.get("X").failures == 0  # type: ignore[union-attr]
    # A later outage alarms again.
    for _ in range(3):
        now = sched.next_due() or now
        (job,) = sched.pop_due(now, limit=10)
        last = sched.finished(job, now, ok=False)
    assert last


def test_scheduler_is_cheap_for_a_large_fleet() -> None:
    sched = Scheduler(interval_s=900.0)
    for i in range(100_000):
        sched.add(f"M{i}", 0.0)
    due = sched.pop_due(90.0, limit=1_000_000)
    assert 9_000 < len(due) < 11_000  # about a tenth of the fleet in a tenth of the interval


def test_removed_meter_is_not_polled() -> None:
    sched = Scheduler(interval_s=10.0)
    sched.add("A", 0.0)
    sched.add("B", 0.0)
    sched.remove("A")
    jobs = sched.pop_due(20.0, limit=10)
    assert [j.meter_id for j in jobs] == ["B"]


# -- line locks --------------------------------------------------------------------------------


async def test_commands_jump_ahead_of_waiting_polls() -> None:
    locks = LineLocks()
    order: list[str] = []
    release_first = asyncio.Event()

    async def user(name: str, priority: int, started: asyncio.Event | None = None) -> None:
        async with locks.hold("serial:/dev/ttyS0", priority):
            if started is not None:
                started.set()
                await release_first.wait()
            order.append(name)

    first_in = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(user("poll-1", POLL, first_in))
        await first_in.wait()
        tg.create_task(user("poll-2", POLL))
        tg.create_task(user("poll-3", POLL))
        await asyncio.sleep(0.01)
        tg.create_task(user("command", COMMAND))
        await asyncio.sleep(0.01)
        release_first.set()
    assert order == ["poll-1", "command", "poll-2", "poll-3"]
    assert len(locks) == 0  # idle locks are forgotten


async def test_one_session_per_line_and_cancellation_passes_the_lock_on() -> None:
    locks = LineLocks()
    inside = 0
    peak = 0

    async def user(line: str) -> None:
        nonlocal inside, peak
        async with locks.hold(line):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(20):
            tg.create_task(user("tcp:127.0.0.1:4059"))
    assert peak == 1

    hold = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("L"):
            await hold.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(user("L"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    hold.set()
    await task
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(5):
        await user("L")  # the cancelled waiter did not keep the lock
    assert len(locks) == 0


# -- poller and collection service against the simulator and a real database --------------------

TOPICS = Topics()
OBIS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "0.0.96.3.10.255")


async def test_poll_reads_registers_catches_up_profiles_and_sets_the_clock(
    sim_fleet, sim_connection, tmp_path
) -> None:
    async with sim_fleet(1) as fleet, fleet_database("sqlite", tmp_path, fleet) as (db, key):
        meter_id = fleet.config(0).meter_id
        # Put the meter's clock five minutes ahead.
        async with open_session(sim_connection(fleet, 0), timeout=5) as session:
            await session.set_clock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))

        repository = Repository(db)
        outbox = KeepingOutbox()
        settings = PollSettings(
            obis=OBIS, load_profile_backfill_s=3 * 3600, billing_backfill_s=5 * 86400
        )
        poller = Poller(repository, Notifier(outbox, TOPICS), settings)
        access = MeterAccess(db, repository, key, timeout_s=5)
        record = await access.record(meter_id)
        assert record is not None
        job = PollJob(meter_id, load_profile=True, billing_profile=True, clock_check=True)
        async with access.session(record) as session:
            report = await poller.poll(session, meter_id, job)

        assert report.problems == []
        assert report.readings == 4
        stored = await repository.latest_readings(meter_id)
        assert set(stored) == set(OBIS)
        assert stored["1.0.32.7.0.255"].unit == "V"
        (published,) = outbox.on(TOPICS.readings(meter_id))
        assert set(published["values"]) == set(OBIS)
        assert published["values"]["0.0.96.3.10.255"]["value"] is True

        # Load profile: 15-minute entries of the last three hours only (bounded backfill).
        load = await repository.profile_entries(meter_id, LOAD_PROFILE)
        assert 10 <= len(load) <= 13
        assert all(b.ts - a.ts == dt.timedelta(minutes=15) for a, b in itertools.pairwise(load))
        billing = await repository.profile_entries(meter_id, BILLING_PROFILE)
        assert 4 <= len(billing) <= 6
        assert report.profile_entries == {LOAD_PROFILE: len(load), BILLING_PROFILE: len(billing)}

        # The clock was 300 s ahead: set, and now within the limit.
        assert report.clock_drift_s is not None and 280 < report.clock_drift_s < 320
        assert report.clock_set
        async with access.session(record) as session:
            drift = (await session.read_clock() - dt.datetime.now(dt.UTC)).total_seconds()
        assert abs(drift) < 5

        # Catch-up is incremental: a second poll asks only for newer entries.
        last = await repository.last_profile_ts(meter_id, LOAD_PROFILE)
        async with access.session(record) as session:
            again = await poller.poll(session, meter_id, job)
        assert again.profile_entries[LOAD_PROFILE] <= 1  # at most one new 15-min boundary
        assert again.profile_entries[BILLING_PROFILE] <= 1
        assert not again.clock_set
        after = await repository.profile_entries(meter_id, LOAD_PROFILE)
        assert [e.ts for e in after[: len(load)]] == [e.ts for e in load]
        assert await repository.last_profile_ts(meter_id, LOAD_PROFILE) >= last  # type: ignore[operator]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_collection_polls_every_meter_and_alarms_an_unreachable_one(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with sim_fleet(4) as fleet, fleet_database(dialect, tmp_path, fleet) as (db, key):
        ids = [fleet.config(i).meter_id for i in range(4)]
        fleet.go_offline(ids[1])
        repository = Repository(db)
        outbox = KeepingOutbox()
        notifier = Notifier(outbox, TOPICS)
        access = MeterAccess(db, repository, key, timeout_s=3)
        scheduler = Scheduler(interval_s=1.5, retry_base_s=0.2, unreachable_after=2)
        service = CollectionService(
            access,
            Poller(repository, notifier, PollSettings(obis=OBIS)),
            scheduler,
            repository,
            notifier,
            concurrency=2,
        )
        task = asyncio.create_task(service.run())
        try:

            async def polled(meter_id: str) -> bool:
                return len(await repository.latest_readings(meter_id)) == len(OBIS)

            for meter_id in (ids[0], ids[2], ids[3]):
                await eventually(lambda m=meter_id: polled(m), what=f"readings of {meter_id}")

            async def unreachable_alarm() -> list:
                alarms = await repository.list_alarms(meter_id=ids[1])
                return [a for a in alarms if a.type == "meter_unreachable"]

            (alarm,) = await eventually(unreachable_alarm, what="meter_unreachable alarm")
            assert "failed in a row" in (alarm.detail or "")
            published = [p for p in outbox.on(TOPICS.alarms) if p["meter_id"] == ids[1]]
            assert [p["type"] for p in published] == ["meter_unreachable"]  # once per outage
            assert not await polled(ids[1])

            fleet.go_online(ids[1])
            await eventually(lambda: polled(ids[1]), what="readings after the meter came back")

            async def cleared() -> bool:
                return not await unreachable_alarm()

            await eventually(cleared, what="the alarm to clear")
            assert service.polls_ok >= 4 and service.polls_failed >= 2
        finally:
            service.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Stopping released every association: nothing left open at the meters.
        await eventually(lambda: fleet.status()["open_connections"] == 0, what="sessions closed")


async def test_meters_sharing_a_serial_line_are_polled_one_at_a_time(sim_fleet, tmp_path) -> None:
    async with (
        sim_fleet(3, transport="serial", meters_per_line=3) as fleet,
        fleet_database("sqlite", tmp_path, fleet) as (db, key),
    ):
        ids = [fleet.config(i).meter_id for i in range(3)]
        repository = Repository(db)
        access = MeterAccess(db, repository, key, timeout_s=5)
        await access.refresh()
        lines = {(await access.record(m)).line for m in ids}  # type: ignore[union-attr]
        assert len(lines) == 1  # one RS-485 bus
        scheduler = Scheduler(interval_s=0.5, retry_base_s=0.2)
        service = CollectionService(
            access,
            Poller(repository, None, PollSettings(obis=OBIS[:2])),
            scheduler,
            repository,
            None,
            concurrency=3,  # the line lock, not the bound, keeps them apart
        )
        task = asyncio.create_task(service.run())
        try:
            await eventually(
                lambda: service.polls_ok >= 6, within=60, what="two polls of each meter"
            )
            assert service.polls_failed == 0  # interleaved sessions would garble the line
            for meter_id in ids:
                assert len(await repository.latest_readings(meter_id)) == 2
        finally:
            service.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_inventory_refresh_decrypts_only_what_changed(sim_fleet, tmp_path) -> None:
    from headend.meters.inventory import import_inventory

    async with (
        sim_fleet(3, security="hls-gmac") as fleet,
        fleet_database("sqlite", tmp_path, fleet) as (db, key),
    ):
        access = MeterAccess(db, Repository(db), key)
        first = {r.meter_id: r for r in await access.refresh()}
        assert len(first) == 3
        record = first[fleet.config(0).meter_id]
        assert record.auth_key is not None and record.auth_key.reveal() == fleet.config(0).auth_key
        again = {r.meter_id: r for r in await access.refresh()}
        assert all(again[m] is first[m] for m in first)  # unchanged: not decrypted again

        # A re-import that moves meter 1 to another port.
        inventory = tmp_path / "inventory.csv"
        lines = inventory.read_text().splitlines()
        moved = fleet.config(1).meter_id
        lines = [
            line.replace(f",{fleet.config(1).port},", ",4999,") if line.startswith(moved) else line
            for line in lines
        ]
        inventory.write_text("\n".join(lines) + "\n")
        await import_inventory(db, inventory, key)
        third = {r.meter_id: r for r in await access.refresh()}
        assert third[moved].port == 4999 and third[moved] is not first[moved]
        assert third[fleet.config(0).meter_id] is first[fleet.config(0).meter_id]


async def test_capabilities_are_discovered_once_and_steer_the_poll(
    sim_fleet, sim_connection, tmp_path
) -> None:
    """The object list is read on the first poll only; the meter row caches it (with the relay's
    control mode), and registers the meter does not list are skipped, not asked for."""
    async with (
        sim_fleet(1, control_mode=1) as fleet,
        fleet_database("sqlite", tmp_path, fleet) as (db, key),
    ):
        meter_id = fleet.config(0).meter_id
        repository = Repository(db)
        absent = "1.0.99.99.99.255"  # no such object in the simulated meter
        notifier = Notifier(KeepingOutbox(), TOPICS)
        poller = Poller(repository, notifier, PollSettings(obis=[*OBIS, absent]))
        access = MeterAccess(db, repository, key, timeout_s=5)
        record = await access.record(meter_id)
        assert record is not None
        job = PollJob(meter_id)
        async with access.session(record) as session:
            report = await poller.poll(session, meter_id, job)
        assert report.readings == 4
        assert report.problems == [f"{absent}: not in the meter's object list"]
        assert poller.capabilities.discoveries == 1

        row = await repository.get_meter(meter_id)
        assert row is not None and row.control_mode == 1
        assert row.capabilities is not None and "0.0.96.3.10.255" in row.capabilities["objects"]

        # A new poller (say, after a restart) takes them from the database, not the meter.
        again = Poller(repository, notifier, PollSettings(obis=OBIS))
        async with access.session(record) as session:
            second = await again.poll(session, meter_id, job)
        assert second.readings == 4 and again.capabilities.discoveries == 0
