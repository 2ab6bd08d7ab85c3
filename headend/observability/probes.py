"""The daemon's endpoint: what /readyz asks of it (its database answers, its broker connection
is up, its collection scheduler runs) and what a scrape refreshes first (the stored-fact
gauges, the broker connection). Each failing check is one line of the 503's body, so whoever
reads the probe's output sees why (a load balancer or kubelet only looks at the code).

The daemon is taken as what it exposes (DaemonParts), not imported: daemon.py builds the
server, so importing it here would close an import cycle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import text

from headend.observability import metrics
from headend.observability.fleet import refresh_fleet_gauges
from headend.observability.http import OpsServer, Readiness
from headend.observability.systemd import SystemdNotifier
from headend.storage import Database

__all__ = [
    "DB_CHECK_TIMEOUT_S",
    "DaemonParts",
    "daemon_readiness",
    "ops_server",
    "systemd_notifier",
]

DB_CHECK_TIMEOUT_S = 2.0


class DaemonParts(Protocol):
    ready: asyncio.Event
    db: Database | None
    bridge: Any  # MqttBridge: .connected
    collection: Any  # CollectionService: .serving
    tuning: Any  # DaemonTuning: .collection
    config: Any  # Config: .metrics
    environ: Mapping[str, str] | None
    ops: OpsServer | None

    @property
    def stopping(self) -> bool: ...


async def database_reachable(db: Database | None) -> str | None:
    if db is None:
        return "database not open"
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT_S), db.session() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database unreachable: {type(exc).__name__}: {exc}"
    return None


def daemon_readiness(daemon: DaemonParts) -> Readiness:
    async def reasons() -> list[str]:
        found: list[str] = []
        if daemon.stopping:
            found.append("stopping")
        elif not daemon.ready.is_set():
            found.append("starting")
        problem = await database_reachable(daemon.db)
        if problem is not None:
            found.append(problem)
        if daemon.bridge is None or not daemon.bridge.connected:
            found.append("broker not connected")
        if daemon.tuning.collection and not (
            daemon.collection is not None and daemon.collection.serving
        ):
            found.append("scheduler not running")
        return found

    return reasons


def ops_server(daemon: DaemonParts) -> OpsServer:
    """The daemon's /metrics, /healthz, /readyz on [metrics] host and port."""

    async def refresh() -> None:
        metrics.MQTT_CONNECTED.set(
            1 if daemon.bridge is not None and daemon.bridge.connected else 0
        )
        if daemon.db is not None:
            await refresh_fleet_gauges(daemon.db)

    settings = daemon.config.metrics
    return OpsServer(
        settings.host, settings.port, readiness=daemon_readiness(daemon), refresh=refresh
    )


def systemd_notifier(daemon: DaemonParts) -> SystemdNotifier:
    """READY=1 when the daemon serves; WATCHDOG=1 while its /healthz answers (when it has
    one; else while its event loop runs); see docs/deploy/headend.service."""
    environ = os.environ if daemon.environ is None else daemon.environ
    health = None
    if daemon.ops is not None:
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
        health = (wildcard.get(daemon.ops.host, daemon.ops.host), daemon.ops.port)
    return SystemdNotifier(environ, daemon.ready, health=health)
