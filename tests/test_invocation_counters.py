"""Invocation counters and the client system title against the simulator's HLS-GMAC meters,
which refuse every counter not above the last one they took (a replay).

A GCM nonce is (system title, invocation counter): the installation has one title of its own,
every process of it reserves counters from the one database store, and an HLS meter whose frame
counter is ahead of that store (a restored or new database, another client that went ahead) is
caught up with instead of being refused forever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from db_support import DIALECTS, temp_database
from e2e_support import database_url, eventually, fleet_database, import_fleet
from sqlalchemy import delete, insert, select

from drivers.connect import associated_session, new_system_title, open_session
from drivers.dlms_errors import AuthenticationFailed
from drivers.session import MemoryInvocationCounterStore
from headend.config import load_config
from headend.daemon import Daemon, DaemonTuning
from headend.meters.access import MeterAccess
from headend.meters.secrets import parse_master_key
from headend.mqtt.broker import free_port
from headend.relay.operator import create_operator_command
from headend.storage import Database, Repository, installation
from headend.storage.models import InvocationCounter
from simulators.meter import SimMeter

pytestmark = pytest.mark.timeout(240)

ENERGY = "1.0.1.8.0.255"
OLD_CONSTANT_TITLE = b"HES\x00\x00\x00\x00\x01"


@dataclass
class SeenCounters:
    """Every client invocation counter a simulated meter deciphered: (meter, counter, taken)."""

    entries: list[tuple[str, int, bool]] = field(default_factory=list)

    def taken(self) -> list[int]:
        return [ic for _, ic, ok in self.entries if ok]

    def refused(self) -> list[int]:
        return [ic for _, ic, ok in self.entries if not ok]

    def sent(self) -> list[int]:
        return [ic for _, ic, _ in self.entries]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> SeenCounters:
    record = SeenCounters()
    accept = SimMeter.accept_client_ic

    def recording(meter: SimMeter, ic: int) -> bool:
        taken = accept(meter, ic)
        record.entries.append((meter.meter_id, ic, taken))
        return taken

    monkeypatch.setattr(SimMeter, "accept_client_ic", recording)
    return record


# -- the installation's system title -------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_each_database_makes_its_own_title_once_and_keeps_it(
    tmp_path: Path, dialect: str
) -> None:
    async with (
        temp_database(dialect, tmp_path / "a") as a,
        temp_database(dialect, tmp_path / "b") as b,
    ):
        # Processes starting at once on a fresh database agree on one title.
        racing = [Database(a.url, schema=a.schema) for _ in range(4)]
        try:
            titles = await asyncio.gather(*(installation.system_title(db) for db in racing))
        finally:
            for db in racing:
                await db.dispose()
        assert len(set(titles)) == 1
        title_a = titles[0]
        assert len(title_a) == 8 and title_a.startswith(b"HES") and title_a != OLD_CONSTANT_TITLE
        # The same database, opened again (a restart): the same title.
        again = Database(a.url, schema=a.schema)
        try:
            assert await installation.system_title(again) == title_a
        finally:
            await again.dispose()
        # Another installation: another title.
        assert await installation.system_title(b) != title_a


def test_made_titles_differ() -> None:
    titles = {new_system_title() for _ in range(100)}
    assert len(titles) == 100 and all(len(t) == 8 for t in titles)


# -- catching up with a meter that is ahead of the store ----------------------------------------


async def _counter_rows(db: Database) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = (await session.execute(select(InvocationCounter.__table__))).mappings().all()
    return [dict(row) for row in rows]


async def _put_counter_rows(db: Database, rows: list[dict[str, Any]]) -> None:
    """The counter table as `rows` (a restored backup; [] for a wiped or new database)."""
    async with db.transaction() as session:
        await session.execute(delete(InvocationCounter.__table__))
        if rows:
            await session.execute(insert(InvocationCounter.__table__), rows)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_sessions_catch_up_after_the_counters_are_restored_or_wiped(
    sim_fleet: Any, tmp_path: Path, dialect: str, seen: SeenCounters
) -> None:
    async with (
        sim_fleet(1, security="hls-gmac") as fleet,
        fleet_database(dialect, tmp_path, fleet) as (db, key),
    ):
        meter_id = fleet.config(0).meter_id
        access = MeterAccess(db, Repository(db), key, timeout_s=5)
        record = await access.record(meter_id)
        assert record is not None
        runtime = fleet.runtime(0)

        async def read() -> int:
            """One session; the connections it took at the meter."""
            before = runtime.connections
            async with access.session(record) as session:
                assert (await session.read([ENERGY]))[ENERGY].value is not None
            return runtime.connections - before

        assert await read() == 1
        backup = await _counter_rows(db)
        for _ in range(3):
            assert await read() == 1  # no frame counter read while nothing is refused

        await _put_counter_rows(db, backup)  # a restore: the store is behind the meter
        assert await read() == 3  # refused, the frame counter read, associated above it
        assert await read() == 1  # the store was lifted for good

        await _put_counter_rows(db, [])  # a new database
        assert await read() == 3
        assert await read() == 1

        # One refused association per restore; everything the meter took, it took once.
        assert len(seen.refused()) == 2
        taken = seen.taken()
        assert taken == sorted(set(taken))
        assert fleet.meter(0).client_system_title == await access.system_title()


async def test_a_refusal_for_another_reason_is_not_retried(
    sim_fleet: Any, sim_connection: Any
) -> None:
    """A wrong key is refused however high the counter: the frame counter shows ours was
    ahead, so the refusal stands and no second association is made."""
    async with sim_fleet(1, security="hls-gmac") as fleet:
        runtime = fleet.runtime(0)
        async with associated_session(
            sim_connection(fleet, 0), timeout=5, ic_store=MemoryInvocationCounterStore(1)
        ) as session:
            await session.read([ENERGY])  # the meter's frame counter is now above 1
        wrong = sim_connection(fleet, 0, enc_key=bytes(16))
        before = runtime.connections
        with pytest.raises(AuthenticationFailed):
            async with associated_session(
                wrong, timeout=5, ic_store=MemoryInvocationCounterStore(1000)
            ):
                pass
        assert runtime.connections - before == 2  # the AARQ and the frame counter read


async def test_a_request_refused_for_its_counter_is_sent_again_above_it(
    sim_fleet: Any, sim_connection: Any, seen: SeenCounters
) -> None:
    """Two sessions of one title with counters from one store, interleaved: each time one
    goes ahead, the other's next request is refused, and sent again above it."""
    async with sim_fleet(1, security="hls-gmac") as fleet:
        connection = sim_connection(fleet, 0)
        shared = MemoryInvocationCounterStore(1)
        async with open_session(connection, timeout=5, ic_store=shared) as first:
            async with open_session(connection, timeout=5, ic_store=shared) as second:
                # The second association took a counter above the whole first batch.
                for session in (first, second, first, second):
                    assert (await session.read([ENERGY]))[ENERGY].value is not None
                await first.relay_status()
        assert len(seen.refused()) >= 2
        assert len(seen.sent()) == len(set(seen.sent()))  # nothing sent twice


# -- the daemon and the CLI --------------------------------------------------------------------


@dataclass
class Running:
    daemon: Daemon
    url: str
    environ: dict[str, str]
    db: Database
    repository: Repository

    @property
    def polls(self) -> tuple[int, int]:
        collection = self.daemon.collection
        assert collection is not None
        return collection.polls_ok, collection.polls_failed


@contextlib.asynccontextmanager
async def running_headend(fleet: Any, tmp_path: Path, dialect: str) -> AsyncIterator[Running]:
    """The daemon on `fleet` (embedded broker), polling every second."""
    key_hex = secrets.token_hex(32)
    async with database_url(dialect, tmp_path) as url:
        await import_fleet(url, tmp_path, fleet, parse_master_key(key_hex, "test"))
        environ = {
            "HEADEND_MASTER_KEY": key_hex,
            "HEADEND_DATABASE_URL": url,
            "HEADEND_MQTT_PORT": str(free_port()),
            "HEADEND_POLLING_INTERVAL_S": "1",
            "HEADEND_POLLING_TIMEOUT_S": "3",
            "HEADEND_POLLING_LOAD_PROFILE": "false",
            "HEADEND_POLLING_BILLING_PROFILE": "false",
            "HEADEND_RELAY_RETRY_BASE_S": "0.2",
            "HEADEND_RELAY_RETRY_MAX_BACKOFF_S": "1",
            "HEADEND_LOGGING_FORMAT": "console",
        }
        daemon = Daemon(
            load_config(None, environ),
            environ=environ,
            tuning=DaemonTuning(
                command_scan_s=0.2, poll_retry_base_s=0.5, install_signal_handlers=False
            ),
        )
        task = asyncio.create_task(daemon.run())
        db = await Database.open(url, run_migrations=False)
        try:
            async with asyncio.timeout(30):
                while not daemon.ready.is_set():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.05)
            yield Running(daemon, url, environ, db, Repository(db))
        finally:
            daemon.request_stop()
            async with asyncio.timeout(60):
                await task
            await db.dispose()


async def _polls_past(h: Running, count: int) -> None:
    target = h.polls[0] + count
    await eventually(lambda: h.polls[0] >= target, within=60, what=f"{count} more polls")


async def _switch(h: Running, fleet: Any, action: str, state: str) -> None:
    """An operator command, confirmed at the meter on its first attempt."""
    meter_id = fleet.config(0).meter_id
    command_id = await create_operator_command(h.repository, meter_id, action, "counter test")

    async def confirmed() -> bool:
        command = await h.repository.get_command(command_id)
        return command is not None and command.status == "confirmed"

    await eventually(confirmed, within=60, what=f"{action} confirmed")
    assert fleet.relay(0)["state"] == state
    command = await h.repository.get_command(command_id)
    assert command is not None and command.attempt == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_daemon_polls_and_switches_after_the_counters_are_restored(
    sim_fleet: Any, tmp_path: Path, dialect: str, seen: SeenCounters
) -> None:
    async with (
        sim_fleet(1, security="hls-gmac") as fleet,
        running_headend(fleet, tmp_path, dialect) as h,
    ):
        await _polls_past(h, 1)
        backup = await _counter_rows(h.db)
        await _polls_past(h, 2)
        await _switch(h, fleet, "disconnect", "disconnected")

        await _put_counter_rows(h.db, backup)  # restored from a backup while running
        await _switch(h, fleet, "reconnect", "connected")
        await _polls_past(h, 2)

        await _put_counter_rows(h.db, [])  # wiped
        await _polls_past(h, 2)
        await _switch(h, fleet, "disconnect", "disconnected")

        assert h.polls[1] == 0  # no poll failed
        assert 1 <= len(seen.refused()) <= 2  # one refused association per restore at most
        taken = seen.taken()
        assert taken == sorted(set(taken))


async def _cli(h: Running, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env.update(
        HEADEND_DATABASE_URL=h.environ["HEADEND_DATABASE_URL"],
        HEADEND_MASTER_KEY=h.environ["HEADEND_MASTER_KEY"],
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headend.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_cli_and_daemon_on_one_meter_never_share_a_counter(
    sim_fleet: Any, tmp_path: Path, dialect: str, seen: SeenCounters
) -> None:
    """`headend read/relay --meter` while the daemon polls and switches the same meter (slow
    answers, so the sessions overlap): every session succeeds, no counter is sent twice, and
    both use the installation's title."""
    async with (
        sim_fleet(1, security="hls-gmac", latency_ms=30) as fleet,
        running_headend(fleet, tmp_path, dialect) as h,
    ):
        meter_id = fleet.config(0).meter_id
        await _polls_past(h, 1)

        async def cli_runs(commands: list[list[str]]) -> list[tuple[int, str]]:
            return [await _cli(h, *command) for command in commands]

        reads = [["read", "--meter", meter_id, ENERGY, "--json"]] * 3
        statuses = [["relay", "--meter", meter_id, "status", "--json"]] * 3
        streams = await asyncio.gather(
            cli_runs(reads),
            cli_runs(statuses),
            _switch(h, fleet, "disconnect", "disconnected"),
        )
        results: list[tuple[int, str]] = [*streams[0], *streams[1]]
        for code, out in results:
            assert code == 0, out
        await _polls_past(h, 1)

        assert h.polls[1] == 0  # no poll failed
        sent = seen.sent()
        assert len(sent) == len(set(sent))  # no counter used twice, refused ones included
        assert fleet.meter(0).client_system_title == await installation.system_title(h.db)
