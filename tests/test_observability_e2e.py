"""The operations surface end to end: /metrics scraped while the daemon works a real scenario
(simulator fleet, real broker, SQLite), /readyz following a broker that stops and comes back,
and the Grafana dashboard checked against the schema and against what a real scrape exports.

Counters are process-wide (one registry), so every check is a difference between two scrapes
of the same run, never an absolute count."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from e2e_support import eventually
from mqtt_support import MosquittoProcess, mosquitto_binary
from ops_support import (
    DASHBOARD,
    DASHBOARD_SCHEMA,
    Scrape,
    dashboard_metric_names,
    fetch,
    scrape,
)
from test_daemon_e2e import Headend, headend

from headend.mqtt.broker import free_port
from headend.storage.counters import IC_MAX

pytestmark = pytest.mark.timeout(120)


def _metrics_url(h: Headend) -> str:
    assert h.daemon is not None and h.daemon.ops is not None
    return h.daemon.ops.url


async def test_counters_follow_a_disconnect_a_bad_event_and_an_unreachable_meter(
    sim_fleet, tmp_path
) -> None:
    port = free_port()
    async with sim_fleet(3) as fleet:
        fleet.go_offline(2)  # unreachable from the first poll on
        async with headend(fleet, tmp_path, overrides={"HEADEND_METRICS_PORT": str(port)}) as h:
            base = _metrics_url(h)
            assert base == f"http://127.0.0.1:{port}"
            assert await fetch(f"{base}/healthz") == (200, "ok\n")
            before = await scrape(base)

            await h.balance(0, "-5.00", 1)  # a disconnect, confirmed by read-back
            await h.send(h.ids[1], b"this is not json")  # a bad event
            await h.wait_state(0, "disconnected")
            await eventually(
                lambda: [c for c in h.out("commands", 0) if c["status"] == "confirmed"],
                what="confirmed command published",
            )
            await eventually(
                lambda: [a for a in h.out("alarms") if a["type"] == "meter_unreachable"],
                what="meter_unreachable",
            )
            await eventually(
                lambda: [a for a in h.out("alarms") if a["type"] == "bad_event"],
                what="bad_event",
            )

            async def polled_since() -> Scrape | None:
                """A scrape once a good poll finished after `before` (the first polls may
                all have been before it; the next round comes an interval later)."""
                now = await scrape(base)
                ok = "headend_polls_total"
                moved = now.total(ok, outcome="ok") > before.total(ok, outcome="ok")
                return now if moved else None

            after = await eventually(polled_since, within=30, what="a good poll")

            def delta(name: str, **labels: str) -> float:
                return after.total(name, **labels) - before.total(name, **labels)

            confirmed = {"action": "disconnect", "status": "confirmed"}
            assert delta("headend_relay_commands_total", **confirmed) == 1
            assert delta("headend_relay_commands_total", action="disconnect", status="queued") == 1
            assert delta("headend_relay_commands_total", action="reconnect") == 0
            assert delta("headend_balance_events_total", outcome="applied") == 1
            assert delta("headend_balance_events_total", outcome="bad_event") == 1
            assert delta("headend_polls_total", outcome="failed") >= 2  # the offline meter
            assert delta("headend_poll_failures_total") == delta(
                "headend_polls_total", outcome="failed"
            )
            assert delta("headend_polls_total", outcome="ok") >= 1
            sessions = after.total("headend_session_duration_seconds_count", transport="wrapper")
            assert (
                sessions
                - before.total("headend_session_duration_seconds_count", transport="wrapper")
                >= 2
            )  # polls and the command
            assert delta("headend_db_write_duration_seconds_count") > 0
            assert delta("headend_mqtt_connects_total") == 0  # one connection throughout

            # Read from the database at scrape: what is stored right now.
            assert after.value("headend_meters", relay_state="disconnected") == 1
            assert after.value("headend_active_alarms", type="bad_event") == 1
            assert after.value("headend_active_alarms", type="meter_unreachable") == 1
            assert after.value("headend_relay_command_oldest_unconfirmed_age_seconds") == 0
            assert after.value("headend_invocation_counter_headroom") == IC_MAX  # no HLS
            assert after.value("headend_mqtt_connected") == 1
            assert ("headend_outbox_depth", frozenset()) in after.samples
            assert after.value("process_resident_memory_bytes") > 0
            # No series per meter: no label carries a meter id.
            for (_, labels), _value in after.samples.items():
                assert not {value for _, value in labels} & set(h.ids), labels

            assert await fetch(f"{base}/readyz") == (200, "ready\n")
            status, body = await fetch(f"{base}/nothing-here")
            assert status == 404 and "/metrics" in body

            # The dashboard asks only for what the daemon exports.
            dashboard = json.loads(DASHBOARD.read_text())
            missing = dashboard_metric_names(dashboard) - after.exported_names()
            assert missing == set(), f"dashboard queries metrics nobody exports: {missing}"


async def test_readyz_follows_the_broker(sim_fleet, tmp_path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("needs a mosquitto binary to stop and start a broker of its own")
    (tmp_path / "mq").mkdir()
    broker = MosquittoProcess(tmp_path / "mq")
    await broker.start()
    try:
        async with (
            sim_fleet(1) as fleet,
            headend(
                fleet,
                tmp_path,
                broker=(broker.host, broker.port),
                overrides={"HEADEND_METRICS_PORT": str(free_port())},
            ) as h,
        ):
            base = _metrics_url(h)
            await eventually(lambda: _ready(base, True), what="ready")
            connects = (await scrape(base)).total("headend_mqtt_connects_total")

            await broker.stop()
            status, body = await eventually(lambda: _ready(base, False), what="not ready")
            assert status == 503 and "broker not connected" in body
            assert "database" not in body and "scheduler" not in body  # only what is wrong
            assert (await scrape(base)).value("headend_mqtt_connected") == 0
            assert await fetch(f"{base}/healthz") == (200, "ok\n")  # alive all the same

            await broker.start()
            await eventually(lambda: _ready(base, True), within=60, what="ready again")
            again = await scrape(base)
            assert again.value("headend_mqtt_connected") == 1
            assert again.total("headend_mqtt_connects_total") == connects + 1
    finally:
        await broker.stop()


async def _ready(base: str, wanted: bool) -> tuple[int, str] | None:
    status, body = await fetch(f"{base}/readyz")
    return (status, body) if (status == 200) == wanted else None


# -- the dashboard ---------------------------------------------------------------------------


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(DASHBOARD_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found.extend(_all_panels(panel.get("panels", [])))
    return found


def test_the_dashboard_is_valid_grafana_dashboard_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    _validator().validate(dashboard)
    panels = _all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]  # Grafana's grid is 24 wide
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("poll", "session", "relay command", "balance events", "outbox", "broker"):
        assert wanted in titles, wanted
    # Every query goes to the dashboard's datasource variable, so it imports anywhere.
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"].strip("${}") in variables


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["panels"][1].pop("gridPos"),
        lambda d: d["panels"][1]["targets"][0].pop("expr"),
        lambda d: d["panels"][1].update(type="no-such-panel"),
        lambda d: d.pop("schemaVersion"),
        lambda d: d["panels"][1]["gridPos"].update(w=30),
    ],
    ids=["no gridPos", "no expr", "unknown panel type", "no schemaVersion", "too wide"],
)
def test_the_dashboard_schema_rejects_a_broken_dashboard(damage: Any) -> None:
    dashboard = copy.deepcopy(json.loads(DASHBOARD.read_text()))
    damage(dashboard)
    assert list(_validator().iter_errors(dashboard)), "the schema let a broken dashboard pass"


def test_dashboard_metric_names_are_read_from_every_query() -> None:
    names = dashboard_metric_names(json.loads(DASHBOARD.read_text()))
    assert {"headend_polls_total", "headend_relay_commands_total"} <= names
    assert "headend_session_duration_seconds_bucket" in names
    scrape_without = Scrape("# TYPE headend_polls counter\nheadend_polls_total 1\n")
    assert "headend_relay_commands_total" not in scrape_without.exported_names()


# -- systemd: Type=notify and the watchdog on /healthz ----------------------------------------


class NotifySocket:
    """Stands where systemd's notification socket would: a unix datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def next(self, within: float = 10) -> str:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            return (await loop.sock_recv(self.sock, 4096)).decode()

    async def drain(self, for_s: float) -> list[str]:
        """Every datagram that arrives in the next `for_s` seconds."""
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(for_s):
                while True:
                    seen.append((await loop.sock_recv(self.sock, 4096)).decode())
        return seen


async def test_systemd_ready_then_watchdog_pings_while_healthz_answers(sim_fleet, tmp_path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    overrides = {
        "HEADEND_METRICS_PORT": str(free_port()),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "200000",  # WatchdogSec=0.2: a ping every 0.1 s
    }
    try:
        async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=overrides) as h:
            assert (await notify.next()).startswith("READY=1")
            pings = await notify.drain(for_s=1.0)
            assert pings.count("WATCHDOG=1") >= 3
            # /healthz stops answering (its server closed): the pings stop, so systemd
            # would restart the service after WatchdogSec.
            assert h.daemon is not None and h.daemon.ops is not None
            await h.daemon.ops.__aexit__(None, None, None)
            await notify.drain(for_s=0.3)  # a ping already on its way
            assert await notify.drain(for_s=1.0) == []
            await h.stop()
            assert "STOPPING=1" in await notify.drain(for_s=1.0)
    finally:
        notify.sock.close()
