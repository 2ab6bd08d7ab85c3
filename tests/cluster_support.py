"""A cluster of head-end processes for tests and benchmarks: a fresh PostgreSQL database with a
simulator fleet imported, the system Mosquitto, and members started as `headend run`
subprocesses (so SIGKILL and SIGSTOP hit real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from e2e_support import database_url, eventually, import_fleet
from mqtt_support import Broker, forget_session, system_mosquitto
from sqlalchemy import text

from headend.cluster.leases import SHARDS, lease_name
from headend.meters.secrets import parse_master_key
from headend.storage import Database


@dataclass
class Member:
    instance_id: str
    environ: dict[str, str]
    workdir: Path
    proc: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.instance_id}-{self.runs}.log"

    async def start(self) -> None:
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
        env.update(self.environ)
        env["HEADEND_CLUSTER_INSTANCE_ID"] = self.instance_id
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "headend.cli", "run", env=env, stdout=log, stderr=log
            )

    async def started(self) -> None:
        await eventually(
            lambda: "mqtt connected" in self.log.read_text() or self.died,
            within=60,
            what=f"member {self.instance_id} to start and subscribe",
        )
        assert not self.died, self.log.read_text()[-3000:]

    @property
    def died(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Cluster:
    fleet: Any
    url: str
    environ: dict[str, str]
    broker: Broker
    billing_prefix: str
    client_id: str
    workdir: Path
    db: Database
    members: list[Member] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    billing: aiomqtt.Client | None = None

    def add(self, instance_id: str) -> Member:
        member = Member(instance_id, dict(self.environ), self.workdir)
        self.members.append(member)
        return member

    async def start(self, count: int) -> list[Member]:
        new = [self.add(f"m{len(self.members)}") for _ in range(count)]
        await asyncio.gather(*(m.start() for m in new))
        await asyncio.gather(*(m.started() for m in new))
        return new

    async def balance(self, index: int, balance: str, seq: int) -> None:
        assert self.billing is not None
        meter_id = self.ids[index]
        body = {
            "meter_id": meter_id,
            "balance": balance,
            "currency": "CNY",
            "seq": seq,
            "event_id": f"ev-{meter_id}-{seq}",
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        topic = f"{self.billing_prefix}/balance/{meter_id}"
        await self.billing.publish(topic, json.dumps(body).encode(), qos=1, timeout=10)

    async def sql(self, query: str, **params: Any) -> list[Any]:
        async with self.db.session() as session:
            return list((await session.execute(text(query), params)).all())

    async def holders(self) -> dict[str, str]:
        """meter_id -> the member holding its lease now (meters whose lease is held)."""
        leases = {
            row.name: row.holder
            for row in await self.sql(
                "SELECT name, holder FROM cluster_leases WHERE expires_at > now()"
            )
        }
        meters = await self.sql("SELECT meter_id, transport, line FROM meters")
        out: dict[str, str] = {}
        for m in meters:
            holder = leases.get(lease_name(m.transport, m.line))
            if holder is not None:
                out[m.meter_id] = holder
        return out

    async def settled(self, members: int) -> bool:
        """Every lease held, each member at its fair share, and every meter held. Shards are
        claimed at random, so which member holds which meters is chance: with few meters one
        member may hold all of them (tests pick the member to stop from what it holds)."""
        rows = await self.sql(
            "SELECT holder, count(*) AS n FROM cluster_leases WHERE expires_at > now() "
            "AND holder IS NOT NULL GROUP BY holder"
        )
        fair = -(-SHARDS // members)
        counts = sorted(int(r.n) for r in rows)
        if len(counts) != members or sum(counts) != SHARDS or counts[-1] > fair:
            return False
        return len(await self.holders()) == len(self.ids)

    def holding(self, holders: dict[str, str]) -> Member:
        """The member holding the most meters (ties: the first started)."""
        held = [sum(1 for h in holders.values() if h == m.instance_id) for m in self.members]
        return self.members[held.index(max(held))]

    async def events_applied(self, seq: int) -> set[str]:
        rows = await self.sql("SELECT meter_id FROM meters WHERE balance_seq >= :seq", seq=seq)
        return {r.meter_id for r in rows}

    async def last_readings(self) -> dict[str, datetime | None]:
        rows = await self.sql("SELECT meter_id, last_reading_at FROM meters")
        return {r.meter_id: r.last_reading_at for r in rows}

    async def diagnosis(self) -> str:
        """What a failed wait prints: the active commands, and what every connection to the
        database is doing or waiting for (a lock held by a frozen member, say)."""
        commands = await self.sql(
            "SELECT meter_id, action, status, attempt, next_attempt_at, last_error FROM commands "
            "WHERE status NOT IN ('confirmed', 'superseded') ORDER BY meter_id"
        )
        activity = await self.sql(
            "SELECT pid, application_name, state, wait_event_type, wait_event, "
            "now() - state_change AS for_s, left(query, 100) AS query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state <> 'idle'"
        )
        # And where each running member's tasks wait (the daemon logs them on SIGUSR1).
        running = [m for m in self.members if m.proc is not None and not m.died]
        for member in running:
            member.signal(signal.SIGUSR1)
        await asyncio.sleep(2)
        tasks = []
        for member in running:
            text_ = member.log.read_text()
            at = text_.rfind("SIGUSR1:")
            tasks.append(f"{member.instance_id}: {text_[at : at + 6000] if at >= 0 else '-'}")
        return "\n".join(
            [
                "commands:",
                *map(str, commands),
                "database activity:",
                *map(str, activity),
                "tasks:",
                *tasks,
            ]
        )

    def state(self, meter_id: str) -> str:
        return str(self.fleet.relay(meter_id)["state"])

    def remote_ops(self, meter_id: str) -> list[dict[str, Any]]:
        return [e for e in self.fleet.relay(meter_id)["history"] if e["source"] == "remote"]


@contextlib.asynccontextmanager
async def cluster(
    fleet: Any, tmp_path: Path, *, overrides: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """A cluster world on `fleet` (members are started by the test: `await c.start(3)`)."""
    where = system_mosquitto()
    if where is None:
        pytest.skip("shared subscriptions need Mosquitto (HEADEND_TEST_MQTT_HOST)")
    host, port = where
    key_hex = secrets.token_hex(32)
    tag = uuid.uuid4().hex[:10]
    async with database_url("postgresql", tmp_path) as url:
        await import_fleet(url, tmp_path, fleet, parse_master_key(key_hex, "test"))
        environ = {
            "HEADEND_MASTER_KEY": key_hex,
            "HEADEND_DATABASE_URL": url,
            "HEADEND_MQTT_HOST": host,
            "HEADEND_MQTT_PORT": str(port),
            "HEADEND_MQTT_CLIENT_ID": f"he-{tag}",
            "HEADEND_MQTT_SHARE_GROUP": f"g{tag}",
            "HEADEND_MQTT_BILLING_PREFIX": f"t{tag}/billing",
            "HEADEND_MQTT_HEADEND_PREFIX": f"t{tag}/headend",
            "HEADEND_POLLING_INTERVAL_S": "3",
            "HEADEND_POLLING_TIMEOUT_S": "2",
            "HEADEND_POLLING_CONCURRENCY": "8",
            "HEADEND_POLLING_RETRIES": "3",
            "HEADEND_POLLING_LOAD_PROFILE": "false",
            "HEADEND_POLLING_BILLING_PROFILE": "false",
            "HEADEND_RELAY_RETRY_BASE_S": "0.2",
            "HEADEND_RELAY_RETRY_MAX_BACKOFF_S": "1",
            "HEADEND_RELAY_OVERDUE_AFTER_S": "600",
            "HEADEND_CLUSTER_ENABLED": "true",
            "HEADEND_CLUSTER_LEASE_S": "2",
            "HEADEND_LOGGING_LEVEL": "INFO",
            "HEADEND_LOGGING_FORMAT": "console",
            **(overrides or {}),
        }
        db = await Database.open(url, run_migrations=False)
        c = Cluster(
            fleet=fleet,
            url=url,
            environ=environ,
            broker=Broker("mosquitto", host, port, True),
            billing_prefix=f"t{tag}/billing",
            client_id=f"he-{tag}",
            workdir=tmp_path,
            db=db,
            ids=[fleet.config(i).meter_id for i in range(len(fleet))],
        )
        try:
            async with aiomqtt.Client(host, port, identifier=f"billing-{tag}") as billing:
                c.billing = billing
                yield c
        finally:
            await asyncio.gather(*(m.stop() for m in c.members))
            await db.dispose()
            for m in c.members:
                await forget_session(
                    c.broker, f"{c.client_id}-{m.instance_id}", f"t{tag}/headend/status"
                )


def now() -> float:
    return time.time()
