"""End to end: the head-end daemon with the simulator fleet, a real broker and a real database.

Broker: the embedded one (the daemon starts it: no mqtt.host) in a default run; the Mosquitto
named by HEADEND_TEST_MQTT_HOST when set (CI), with per-test topic prefixes. The broker-restart
test runs its own Mosquitto process (persistence on), since only a real broker keeps a
persistent session over a restart. Databases: SQLite, and PostgreSQL where marked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from db_support import DIALECTS
from e2e_support import database_url, eventually, import_fleet
from mqtt_support import (
    Broker,
    Collector,
    MosquittoProcess,
    forget_session,
    mosquitto_binary,
    system_mosquitto,
)

from headend.config import load_config
from headend.daemon import Daemon, DaemonTuning
from headend.meters.secrets import parse_master_key
from headend.mqtt.broker import free_port
from headend.relay.operator import create_operator_command
from headend.storage import Database, Repository

pytestmark = pytest.mark.timeout(240)


def _external_broker() -> tuple[str, int] | None:
    if not os.environ.get("HEADEND_TEST_MQTT_HOST"):
        return None
    return system_mosquitto()


def balance_payload(
    meter_id: str, balance: str, seq: int, event_id: str | None = None, **extra: Any
) -> bytes:
    body = {
        "meter_id": meter_id,
        "balance": balance,
        "currency": "CNY",
        "seq": seq,
        "event_id": event_id or f"ev-{meter_id}-{seq}-{uuid.uuid4().hex[:6]}",
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    body.update(extra)
    return json.dumps(body).encode()


@dataclass
class Headend:
    """One test's head-end world: fleet, database, broker, daemon, billing, a collector."""

    fleet: Any
    url: str
    environ: dict[str, str]
    broker: Broker
    billing_prefix: str
    headend_prefix: str
    client_id: str
    tmp_path: Path
    daemon: Daemon | None = None
    task: asyncio.Task[None] | None = None
    collector: Collector | None = None
    billing: aiomqtt.Client | None = None
    _db: Database | None = None
    repository: Repository | None = None
    ids: list[str] = field(default_factory=list)
    clock: Callable[[], datetime] | None = None  # the relay path's (quiet hours, grace)

    # -- running the daemon --------------------------------------------------------------------
    async def start(self) -> None:
        config = load_config(None, self.environ)
        self.daemon = Daemon(
            config,
            environ=self.environ,
            tuning=DaemonTuning(
                command_scan_s=0.2,
                mqtt_backoff_max_s=1.0,
                mqtt_timeout_s=5.0,
                poll_retry_base_s=0.5,
                install_signal_handlers=False,
                clock=self.clock,
                prepaid_check_s=0.5,
            ),
        )
        self.task = asyncio.create_task(self.daemon.run())
        async with asyncio.timeout(30):
            while not self.daemon.ready.is_set():
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.05)
            assert self.daemon.bridge is not None
            await self.daemon.bridge.wait_connected()

    async def stop(self) -> None:
        if self.daemon is not None and self.task is not None:
            self.daemon.request_stop()
            async with asyncio.timeout(60):
                await self.task
        self.daemon = None
        self.task = None

    # -- billing -------------------------------------------------------------------------------
    def topic(self, meter_id: str) -> str:
        return f"{self.billing_prefix}/balance/{meter_id}"

    async def send(self, meter_id: str, payload: bytes) -> None:
        assert self.billing is not None
        await self.billing.publish(self.topic(meter_id), payload, qos=1, timeout=10)

    async def balance(self, index: int, balance: str, seq: int, **kw: Any) -> str:
        meter_id = self.ids[index]
        event_id = kw.pop("event_id", None) or f"ev-{meter_id}-{seq}-{uuid.uuid4().hex[:6]}"
        await self.send(meter_id, balance_payload(meter_id, balance, seq, event_id, **kw))
        return event_id

    # -- looking ---------------------------------------------------------------------------------
    def out(self, leaf: str, index: int | None = None) -> list[dict[str, Any]]:
        assert self.collector is not None
        if index is None:
            topic = f"{self.headend_prefix}/{leaf}"
        else:
            topic = f"{self.headend_prefix}/meters/{self.ids[index]}/{leaf}"
        return [json.loads(p) for p in self.collector.payloads(topic)]

    def sim_state(self, index: int) -> str:
        return str(self.fleet.relay(index)["state"])

    def remote_ops(self, index: int) -> list[dict[str, Any]]:
        return [e for e in self.fleet.relay(index)["history"] if e["source"] == "remote"]

    async def events_recorded(self, index: int) -> int:
        assert self.repository is not None
        return len(await self.repository.balance_events(self.ids[index]))

    async def settled(self, index: int) -> bool:
        """No active command for the meter."""
        assert self.repository is not None
        return not await self.repository.pending_commands(meter_id=self.ids[index])

    async def wait_state(self, index: int, state: str, within: float = 45) -> None:
        async def there() -> bool:
            return self.sim_state(index) == state and await self.settled(index)

        await eventually(there, within=within, what=f"meter {index} {state} and settled")


@contextlib.asynccontextmanager
async def _quiet_client(host: str, port: int, identifier: str) -> AsyncIterator[aiomqtt.Client]:
    """An aiomqtt client that may outlive its broker (restarts) without asyncio complaining
    about the disconnection nobody read."""
    client = aiomqtt.Client(host, port, identifier=identifier, timeout=10)
    await client.__aenter__()
    try:
        yield client
    finally:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
        disconnected = client._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()


@contextlib.asynccontextmanager
async def headend(
    fleet: Any,
    tmp_path: Path,
    *,
    dialect: str = "sqlite",
    broker: tuple[str, int] | None = None,
    overrides: dict[str, str] | None = None,
    start: bool = True,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Headend]:
    """A head-end on `fleet`; `broker` None: the external Mosquitto if configured, else the
    embedded one (started by the daemon itself)."""
    key_hex = secrets.token_hex(32)
    tag = uuid.uuid4().hex[:10]
    external = broker or _external_broker()
    if external is not None:
        host, port = external
        environ_mqtt = {"HEADEND_MQTT_HOST": host, "HEADEND_MQTT_PORT": str(port)}
        kind = "mosquitto"
    else:
        host, port = "127.0.0.1", free_port()
        environ_mqtt = {"HEADEND_MQTT_HOST": "", "HEADEND_MQTT_PORT": str(port)}
        kind = "amqtt"
    async with database_url(dialect, tmp_path) as url:
        await import_fleet(url, tmp_path, fleet, parse_master_key(key_hex, "test"))
        environ = {
            "HEADEND_MASTER_KEY": key_hex,
            "HEADEND_DATABASE_URL": url,
            **environ_mqtt,
            "HEADEND_MQTT_CLIENT_ID": f"he-{tag}",
            "HEADEND_MQTT_BILLING_PREFIX": f"t{tag}/billing",
            "HEADEND_MQTT_HEADEND_PREFIX": f"t{tag}/headend",
            "HEADEND_POLLING_INTERVAL_S": "5",
            "HEADEND_POLLING_TIMEOUT_S": "3",
            "HEADEND_POLLING_CONCURRENCY": "8",
            "HEADEND_POLLING_RETRIES": "2",
            "HEADEND_RELAY_RETRY_BASE_S": "0.2",
            "HEADEND_RELAY_RETRY_MAX_BACKOFF_S": "1",
            "HEADEND_RELAY_OVERDUE_AFTER_S": "600",
            "HEADEND_LOGGING_LEVEL": "INFO",
            "HEADEND_LOGGING_FORMAT": "console",
            **(overrides or {}),
        }
        h = Headend(
            fleet=fleet,
            url=url,
            environ=environ,
            broker=Broker(kind, host, port, kind == "mosquitto"),
            billing_prefix=f"t{tag}/billing",
            headend_prefix=f"t{tag}/headend",
            client_id=f"he-{tag}",
            tmp_path=tmp_path,
            ids=[fleet.config(i).meter_id for i in range(len(fleet))],
            clock=clock,
        )
        db = await Database.open(url)
        h._db = db
        h.repository = Repository(db)
        try:
            if start:
                await h.start()
            async with contextlib.AsyncExitStack() as stack:
                if start:
                    h.collector = await stack.enter_async_context(
                        Collector(h.broker, f"{h.headend_prefix}/#")
                    )
                    h.billing = await stack.enter_async_context(
                        _quiet_client(host, port, f"billing-{tag}")
                    )
                yield h
        finally:
            await h.stop()
            await db.dispose()
            if kind == "mosquitto":
                retained = [f"{h.headend_prefix}/status"] + [
                    f"{h.headend_prefix}/meters/{m}/relay" for m in h.ids
                ]
                await forget_session(h.broker, h.client_id, *retained)


# -- balances drive the relay --------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_balances_drive_the_relay_confirmed_at_the_meter(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with sim_fleet(2) as fleet:
        fleet.set_control_mode(1, 1)  # remote reconnect only arms the button
        async with headend(fleet, tmp_path, dialect=dialect) as h:
            # Opening balance: the meter is already connected; read, not operated.
            await h.balance(0, "80.00", 1)
            await eventually(lambda: h.out("commands", 0), what="first command")
            await h.wait_state(0, "connected")
            assert h.remote_ops(0) == []
            assert h.out("notifications", 0) == []  # nothing changed: no SMS

            # Below zero: disconnected, confirmed by read-back, customer told.
            arrears = balance_payload(h.ids[0], "-5.00", 2, "arrears-1")
            await h.send(h.ids[0], arrears)
            await h.wait_state(0, "disconnected")
            await eventually(
                lambda: any(
                    n["type"] == "disconnected_for_arrears" for n in h.out("notifications", 0)
                ),
                what="arrears notification",
            )
            relay = await eventually(
                lambda: [r for r in h.out("relay", 0) if r["state"] == "disconnected"],
                what="relay state published",
            )
            assert relay[-1]["output_state"] is False
            statuses = [c["status"] for c in h.out("commands", 0) if c["action"] == "disconnect"]
            assert statuses[0] == "queued" and "sent" in statuses and statuses[-1] == "confirmed"
            ops_before = len(h.remote_ops(0))
            assert ops_before == 1

            # A duplicate, an out-of-order event and a zero balance change nothing.
            await h.send(h.ids[0], arrears)
            await h.balance(0, "50.00", 1)  # old seq: recorded, not executed
            await h.balance(0, "0", 3)  # exactly zero: no change

            async def recorded(n: int) -> bool:
                return await h.events_recorded(0) >= n

            await eventually(lambda: recorded(4), what="stale and zero events stored")
            assert h.repository is not None
            events = await h.repository.balance_events(h.ids[0])
            outcomes = [e["outcome"] for e in events]
            assert "stale" in outcomes and "zero_no_change" in outcomes
            await asyncio.sleep(1.0)  # give a wrong command every chance to run
            assert h.sim_state(0) == "disconnected"
            assert len(h.remote_ops(0)) == ops_before
            assert await h.settled(0)

            # Payment: reconnected at once, and the customer told.
            await h.balance(0, "30.00", 4)
            await h.wait_state(0, "connected")
            await eventually(
                lambda: any(n["type"] == "reconnected" for n in h.out("notifications", 0)),
                what="reconnected notification",
            )

            # Dropping into the warning band: one low_balance notification, relay untouched.
            # (The zero balance above, up from below zero into the band, had its own.)
            def low_balances() -> list[str]:
                notes = h.out("notifications", 0)
                return [n["balance"] for n in notes if n["type"] == "low_balance"]

            await h.balance(0, "12.00", 5)
            await eventually(lambda: "12.00" in low_balances(), what="low_balance")
            low = [n for n in h.out("notifications", 0) if n["type"] == "low_balance"]
            assert low[-1]["balance"] == "12.00" and low[-1]["warning_threshold"] == "20.00"
            await h.balance(0, "11.00", 6)
            await asyncio.sleep(0.5)
            assert low_balances() == ["0", "12.00"]
            ops = [(e["transition"], e["after"]) for e in h.remote_ops(0)]
            assert ops == [("remote_disconnect", "disconnected"), ("remote_reconnect", "connected")]

            # Control mode 1: reconnection leaves the relay ready for the customer's button.
            await h.balance(1, "-1.00", 1)
            await h.wait_state(1, "disconnected")
            await h.balance(1, "5.00", 2)
            await h.wait_state(1, "ready_for_reconnection")
            confirmed = await eventually(
                lambda: [
                    c
                    for c in h.out("commands", 1)
                    if c["action"] == "reconnect" and c["status"] == "confirmed"
                ],
                what="reconnect confirmed as far as possible",
            )
            assert confirmed[-1]["state"] == "ready_for_reconnection"
            assert "press the button" in confirmed[-1]["detail"]
            await eventually(
                lambda: any(r["state"] == "ready_for_reconnection" for r in h.out("relay", 1)),
                what="ready_for_reconnection published",
            )
            await eventually(
                lambda: any(
                    n["type"] == "ready_for_reconnection" for n in h.out("notifications", 1)
                ),
                what="ready_for_reconnection notification",
            )
            fleet.press_button(1)
            assert h.sim_state(1) == "connected"


async def test_malformed_payloads_alarm_and_execute_nothing(sim_fleet, tmp_path) -> None:
    async with sim_fleet(2) as fleet, headend(fleet, tmp_path) as h:
        m = h.ids[0]
        bad: list[tuple[str, bytes]] = [
            (m, b"this is not json"),
            (m, json.dumps({"meter_id": m, "balance": "-5.00"}).encode()),  # missing fields
            (m, balance_payload(m, "minus five", 1)),  # bad number
            (m, balance_payload(m, "NaN", 1)),
            (m, json.dumps({**json.loads(balance_payload(m, "-5", 1)), "seq": "x"}).encode()),
            ("NOSUCHMETER", balance_payload("NOSUCHMETER", "-5.00", 1)),  # unknown meter
            (m, balance_payload(m, "-5.00", 1, pad="x" * 5000)),  # oversized
            (m, balance_payload(h.ids[1], "-5.00", 1)),  # body names another meter
        ]
        for meter_id, payload in bad:
            await h.send(meter_id, payload)
        alarms = await eventually(
            lambda: (
                [a for a in h.out("alarms") if a["type"] == "bad_event"]
                if len([a for a in h.out("alarms") if a["type"] == "bad_event"]) >= len(bad)
                else None
            ),
            what="a bad_event alarm per bad payload",
        )
        assert len(alarms) == len(bad)
        reasons = " | ".join(a["detail"]["reason"] for a in alarms)
        assert "not JSON" in reasons and "missing field" in reasons
        assert "unknown meter" in reasons and "too large" in reasons
        assert h.repository is not None
        assert await h.repository.pending_commands() == []
        assert h.fleet.relay(0)["history"] == []
        # Still serving: a good event right after is executed.
        await h.balance(0, "-5.00", 7)
        await h.wait_state(0, "disconnected")
        stored = await h.repository.list_alarms(limit=50)
        assert len([a for a in stored if a.type == "bad_event"]) == len(bad)


async def test_unreachable_meter_escalates_then_completes(sim_fleet, tmp_path) -> None:
    async with (
        sim_fleet(1) as fleet,
        headend(fleet, tmp_path, overrides={"HEADEND_RELAY_OVERDUE_AFTER_S": "2"}) as h,
    ):
        fleet.go_offline(0)
        await h.balance(0, "-5.00", 1)

        def failed_attempts() -> list[dict[str, Any]]:
            return [c for c in h.out("commands", 0) if c["status"] == "failed"]

        await eventually(lambda: len(failed_attempts()) >= 2, what="retries")
        overdue = await eventually(
            lambda: [a for a in h.out("alarms") if a["type"] == "relay_command_overdue"],
            what="relay_command_overdue",
        )
        assert overdue[0]["meter_id"] == h.ids[0]
        assert any(c["status"] == "escalated" for c in h.out("commands", 0))
        assert h.repository is not None
        (active,) = await h.repository.pending_commands(meter_id=h.ids[0])
        assert active.status == "escalated" and active.attempt >= 2
        attempts = [c["attempt"] for c in failed_attempts()]
        assert attempts == sorted(attempts)
        # Backoff: the attempts are spread out, not hammered.
        assert len(attempts) < 40

        fleet.go_online(0)
        await h.wait_state(0, "disconnected")
        # Published just after the commit: wait for it rather than race it.
        done = await eventually(
            lambda: [c for c in h.out("commands", 0) if c["status"] == "confirmed"],
            what="confirmed command published",
        )
        # The attempt after the last failed one (a failure may land after the snapshot above).
        last_failed = max(c["attempt"] for c in failed_attempts())
        assert len(done) == 1 and done[0]["attempt"] == last_failed + 1
        assert len(h.remote_ops(0)) == 1
        standing = await h.repository.list_alarms(meter_id=h.ids[0])
        assert not [a for a in standing if a.type == "relay_command_overdue"]  # cleared


async def test_stuck_relay_is_caught_by_the_read_back(sim_fleet, tmp_path) -> None:
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path) as h:
        fleet.set_faults(0, relay_stuck=True)
        await h.balance(0, "-5.00", 1)
        alarm = await eventually(
            lambda: [a for a in h.out("alarms") if a["type"] == "relay_stuck"],
            what="relay_stuck alarm",
        )
        assert alarm[0]["meter_id"] == h.ids[0]
        assert "control_state=connected" in alarm[0]["detail"]
        failed = await eventually(
            lambda: [c for c in h.out("commands", 0) if c["status"] == "failed"],
            what="command failed",
        )
        assert "not effective" in failed[0]["error"]
        assert not any(c["status"] == "confirmed" for c in h.out("commands", 0))
        assert h.sim_state(0) == "connected"
        relay = await eventually(lambda: h.out("relay", 0), what="relay read back published")
        assert relay[-1]["state"] == "connected"  # what the meter really says
        # It keeps trying; once the relay works again the command completes.
        fleet.clear_faults(0)
        await h.wait_state(0, "disconnected")


async def test_operator_override_is_durable_and_picked_up(sim_fleet, tmp_path) -> None:
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path) as h:
        # From another process's point of view: only the database is shared.
        db = await Database.open(h.url)
        try:
            repo = Repository(db)
            command_id = await create_operator_command(
                repo, h.ids[0], "disconnect", "tamper investigation"
            )
            with pytest.raises(ValueError):
                await create_operator_command(repo, h.ids[0], "disconnect", "  ")
            await h.wait_state(0, "disconnected")
            info = await repo.get_command(command_id)
            assert info is not None and info.status == "confirmed"
            assert info.source == "operator" and "tamper investigation" in (info.reason or "")
        finally:
            await db.dispose()
        # An operator disconnect is not for arrears: no arrears SMS.
        await asyncio.sleep(0.3)
        assert not any(n["type"] == "disconnected_for_arrears" for n in h.out("notifications", 0))


async def test_start_up_reconciles_desired_and_confirmed_states(sim_fleet, tmp_path) -> None:
    async with sim_fleet(2) as fleet, headend(fleet, tmp_path) as h:
        await h.balance(0, "-5.00", 1)
        await h.wait_state(0, "disconnected")
        await h.stop()
        # While the head-end is down, someone reconnects the meter by hand.
        fleet.meter(0).force_state(1)
        assert h.sim_state(0) == "connected"
        # The database still says disconnected (desired) / disconnected (confirmed). Make the
        # confirmed state stale like a lost read-back would: desired differs from confirmed.
        assert h.repository is not None
        await h.repository.record_relay_state(h.ids[0], "connected", True, "connected")
        await h.start()
        await h.wait_state(0, "disconnected")


# -- broker restart ---------------------------------------------------------------------------


async def test_broker_restart_loses_no_balance_event(sim_fleet, tmp_path) -> None:
    if mosquitto_binary() is None:
        pytest.skip(
            "needs a mosquitto binary: only a broker with persistent sessions can keep events "
            "over a restart (the embedded amqtt broker forgets them)"
        )
    (tmp_path / "mq").mkdir()
    process = MosquittoProcess(tmp_path / "mq")
    await process.start()
    try:
        async with (
            sim_fleet(4) as fleet,
            headend(fleet, tmp_path, broker=(process.host, process.port)) as h,
        ):
            await h.balance(0, "10.00", 1)
            await eventually(lambda: h.events_recorded(0), what="first event")
            events_per_meter = 6
            sent = 0

            async def publish_all(seq_from: int, seq_to: int) -> None:
                nonlocal sent
                async with aiomqtt.Client(process.host, process.port, timeout=10) as client:
                    for seq in range(seq_from, seq_to):
                        for i in range(4):
                            sign = "-" if seq % 2 else ""
                            payload = balance_payload(h.ids[i], f"{sign}{seq}.00", seq)
                            await client.publish(h.topic(h.ids[i]), payload, qos=1, timeout=10)
                            sent += 1

            await publish_all(2, 4)
            await process.stop()  # the head-end loses the broker mid-stream
            await asyncio.sleep(0.5)
            await process.start()
            # Published before the head-end is back: queued in its persistent session.
            await publish_all(4, 2 + events_per_meter)

            async def all_recorded() -> bool:
                counts = [await h.events_recorded(i) for i in range(4)]
                return sum(counts) >= sent + 1

            await eventually(all_recorded, within=60, what="every event recorded")
            assert h.daemon is not None and h.daemon.bridge is not None
            assert h.daemon.bridge.stats.connects >= 2
            # The newest seq (7, odd: negative) decides for every meter.
            for i in range(4):
                await h.wait_state(i, "disconnected")
            assert h.repository is not None
            for i in range(4):
                meter = await h.repository.get_meter(h.ids[i])
                assert meter is not None and meter.balance_seq == 1 + events_per_meter
    finally:
        await process.stop()


# -- SIGKILL in the middle of commands, then a restart ----------------------------------------


@dataclass
class DaemonProcess:
    environ: dict[str, str]
    workdir: Path
    proc: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"headend-{self.runs}.log"

    async def start(self) -> None:
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
        env.update(self.environ)
        env["PYTHONUNBUFFERED"] = "1"
        log = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "headend.cli",
            "run",
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        # Subscribed (the bridge logs it): from here on no balance event can pass it by.
        await eventually(
            lambda: "mqtt connected" in self.log.read_text() or self._died(),
            within=60,
            what="the daemon to start and subscribe",
        )
        assert self.proc.returncode is None, self.log.read_text()[-3000:]

    def _died(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(60):
            return await self.proc.wait()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_sigkill_mid_command_then_restart_completes_every_command(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(6, latency_ms=120) as fleet,
        headend(fleet, tmp_path, dialect=dialect, start=False) as h,
    ):
        daemon = DaemonProcess(dict(h.environ), tmp_path)
        await daemon.start()
        host, port = h.broker.host, h.broker.port
        try:
            async with aiomqtt.Client(host, port, timeout=10) as billing:
                for i in range(6):
                    await billing.publish(
                        h.topic(h.ids[i]), balance_payload(h.ids[i], "-5.00", 1), qos=1, timeout=10
                    )
                for i in range(3):  # these pay at once: the disconnect is superseded
                    await billing.publish(
                        h.topic(h.ids[i]), balance_payload(h.ids[i], "20.00", 2), qos=1, timeout=10
                    )

                async def all_committed() -> bool:
                    counts = [await h.events_recorded(i) for i in range(6)]
                    return counts == [2, 2, 2, 1, 1, 1]

                await eventually(all_committed, within=60, every=0.02, what="events committed")
                seen_committed = time.time()  # every balance event is in the database by now
                assert h.repository is not None

                async def in_flight() -> bool:
                    return any(c.status == "sent" for c in await h.repository.pending_commands())

                await eventually(in_flight, every=0.02, what="a command in flight")
            assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL
            unfinished = await h.repository.pending_commands()
            assert unfinished, "the kill came too late to test anything"

            await daemon.start()
            expected = ["connected"] * 3 + ["disconnected"] * 3
            for i, state in enumerate(expected):
                await h.wait_state(i, state, within=90)
            for i, state in enumerate(expected):
                ops = h.remote_ops(i)
                # Never the wrong way: once the newest balance was committed, every remote
                # operation went towards the state it asks for (before the kill, and after
                # the restart).
                wanted = "remote_reconnect" if state == "connected" else "remote_disconnect"
                late = [e for e in ops if e["time"] > seen_committed]
                assert all(e["transition"] == wanted for e in late), (i, ops)
                assert all(e["outcome"] == "ok" for e in ops)
            assert await h.repository.pending_commands() == []
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                # SIGTERM: a clean stop that releases every association.
                assert await daemon.signal(signal.SIGTERM) == 0
                assert "head-end stopped" in daemon.log.read_text()
        await eventually(
            lambda: fleet.status()["open_connections"] == 0, what="associations released"
        )


# -- the command line ---------------------------------------------------------------------------


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env.update(extra)
    return env


def test_demo_runs_to_completion_and_status_reports_it(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "headend.cli",
            "demo",
            "--duration",
            "25",
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        env=_cli_env(),
    )
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    assert "demo: OK" in out
    for needle in (
        "below zero: disconnect",
        "command disconnect confirmed",
        "notification: disconnected_for_arrears",
        "notification: low_balance",
        "notification: ready_for_reconnection",
        "customer must press the button",
        "customer presses the button",
        "command reconnect confirmed",
        "ALARM bad_event",
        "head-end online",
    ):
        assert needle in out, needle

    status = subprocess.run(
        [sys.executable, "-m", "headend.cli", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_cli_env(HEADEND_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'headend.db'}"),
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["meters"] == 6
    assert report["pending_commands"] == [] and report["active_commands"] == 0
    assert report["desired_disconnected"] == 1
    assert report["relay_states"].get("disconnected") == 1
    assert sum(1 for a in report["alarms"] if a["type"] == "bad_event") == 2
    # The feed's duplicate is an exact copy and its late event is dated earlier: neither is
    # a conflict nor a sign of a sequence reset.
    assert not [a for a in report["alarms"] if a["type"] in ("conflicting_event", "stale_event")]
    assert report["last_reading_at"] is not None

    table = subprocess.run(
        [sys.executable, "-m", "headend.cli", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_cli_env(HEADEND_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'headend.db'}"),
    )
    assert table.returncode == 0
    assert "meters 6" in table.stdout and "bad_event" in table.stdout


def test_run_refuses_a_bad_config_before_connecting(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "headend.cli", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_cli_env(
            HEADEND_POLLING_INTERVAL_S="-5",
            HEADEND_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'never.db'}",
        ),
    )
    assert run.returncode == 2
    assert "polling.interval_s" in run.stderr
    assert not (tmp_path / "never.db").exists()


async def test_run_stops_at_start_naming_a_meter_it_cannot_decrypt(sim_fleet, tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'headend.db'}"
    async with sim_fleet(1, security="hls-gmac") as fleet:
        await import_fleet(url, tmp_path, fleet, parse_master_key(secrets.token_hex(32), "a"))
        meter_id = fleet.config(0).meter_id
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headend.cli",
        "run",
        cwd=tmp_path,
        env=_cli_env(
            HEADEND_DATABASE_URL=url,
            HEADEND_MASTER_KEY=secrets.token_hex(32),  # not the key that sealed the secrets
            HEADEND_MQTT_HOST="127.0.0.1",
            HEADEND_MQTT_PORT=str(free_port()),  # nothing listens: it must not get that far
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await run.communicate()
    assert run.returncode == 2
    assert meter_id in err.decode() and "wrong master key" in err.decode()


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group, as in a terminal: the demo still
    stops the head-end, prints its summary, stops its simulator, and shows no traceback."""
    workdir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "headend.cli", "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=_cli_env(),
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "billing ->" not in seen and time.monotonic() < deadline:  # the feed is running
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    assert "billing ->" in seen, seen[-3000:]
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=90)
    out = seen + out
    assert process.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    assert "demo summary" in out
    assert "demo: stopped before the billing script finished" in out or "demo: OK" in out
    assert workdir.joinpath("simulator.log").exists()
