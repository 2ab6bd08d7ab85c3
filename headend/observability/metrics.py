"""Every metric the head-end exports, defined once, in one registry.

Names follow Prometheus conventions: a `headend_` prefix, base units (seconds), `_total` on
counters. No label carries a meter id: one series per meter does not scale to a fleet, and
the worst offenders are what `headend status` lists. Label values come from the project's
vocabulary (domain.py, relay/decision.py), so they are few and fixed.

The code that does the work moves these with one line (`metrics.POLLS.labels(outcome="ok")
.inc()`); the gauges that describe what is stored (meters by relay state, outbox depth, the
oldest unconfirmed command, invocation counter headroom) are read from the database when
Prometheus scrapes (fleet.py), so nothing has to keep them in step.

This module imports nothing of the head-end (only error types of the layers below), so any
layer of the head-end can import it without an import cycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DlmsError

__all__ = [
    "ACTIVE_ALARMS",
    "BALANCE_EVENTS",
    "CLUSTER_LEASES",
    "COMMAND_OLDEST_AGE",
    "DB_WRITE_SECONDS",
    "INVOCATION_HEADROOM",
    "METERS",
    "MQTT_CONNECTED",
    "MQTT_CONNECTS",
    "MQTT_CONNECT_FAILURES",
    "OUTBOX_DEPTH",
    "OUTBOX_OLDEST_AGE",
    "OUTBOX_PUBLISHED",
    "POLLS",
    "POLL_FAILURES",
    "PUSH_MESSAGES",
    "REGISTRY",
    "RELAY_COMMANDS",
    "SESSIONS_IN_FLIGHT",
    "SESSION_SECONDS",
    "count_balance_event",
    "failure_reason",
    "session_timer",
]

# A registry of our own (not prometheus_client's global one): a test or a benchmark that
# imports the head-end gets exactly these series, plus the process's own (RSS, open files,
# CPU seconds: what a week-long run is watched by).
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# -- collection ----------------------------------------------------------------------------------
POLLS = Counter(
    "headend_polls",
    "Polls finished, by outcome (ok, failed).",
    ["outcome"],
    registry=REGISTRY,
)
POLL_FAILURES = Counter(
    "headend_poll_failures",
    "Failed polls by reason (timeout, connection, protocol, dlms, error).",
    ["reason"],
    registry=REGISTRY,
)
SESSION_SECONDS = Histogram(
    "headend_session_duration_seconds",
    "Time a meter session held its line: association, the work, release.",
    ["transport", "security"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
SESSIONS_IN_FLIGHT = Gauge(
    "headend_sessions_in_flight",
    "Meter sessions open right now, by purpose (poll, command, request).",
    ["purpose"],
    registry=REGISTRY,
)

# -- relay control and balance events ------------------------------------------------------------
RELAY_COMMANDS = Counter(
    "headend_relay_commands",
    "Relay command status changes published (queued, sent, confirmed, failed, escalated, "
    "superseded), by action.",
    ["action", "status"],
    registry=REGISTRY,
)
BALANCE_EVENTS = Counter(
    "headend_balance_events",
    "Balance events handled, by the outcome stored with them in the events table (applied, "
    "zero_no_change, stale, duplicate, conflicting, dead_letter; a refused payload, stored as "
    "rejected, is bad_event).",
    ["outcome"],
    registry=REGISTRY,
)


def count_balance_event(outcome: str) -> None:
    """One balance event by its stored outcome, a refused payload (stored as "rejected": not
    JSON, out of bounds, an unknown meter) counted as "bad_event", the alarm it raises."""
    BALANCE_EVENTS.labels(outcome="bad_event" if outcome == "rejected" else outcome).inc()


PUSH_MESSAGES = Counter(
    "headend_push_messages",
    "Messages meters pushed to the listener, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)

# -- MQTT and the outbox ---------------------------------------------------------------------------
MQTT_CONNECTED = Gauge(
    "headend_mqtt_connected",
    "1 while connected and subscribed to the broker, else 0.",
    registry=REGISTRY,
)
MQTT_CONNECTS = Counter(
    "headend_mqtt_connects",
    "Connections to the broker established (each one after the first is a reconnect).",
    registry=REGISTRY,
)
MQTT_CONNECT_FAILURES = Counter(
    "headend_mqtt_connect_failures",
    "Connection attempts to the broker that failed.",
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "headend_outbox_published",
    "Outgoing messages the broker acknowledged.",
    registry=REGISTRY,
)

# -- the database --------------------------------------------------------------------------------
DB_WRITE_SECONDS = Histogram(
    "headend_db_write_duration_seconds",
    "Write transactions from their start (including the wait for SQLite's writer lock) to "
    "their commit.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)

# -- read from the database at scrape (fleet.py) -------------------------------------------------
METERS = Gauge(
    "headend_meters",
    "Meters by their confirmed relay state (unknown: never read back).",
    ["relay_state"],
    registry=REGISTRY,
)
COMMAND_OLDEST_AGE = Gauge(
    "headend_relay_command_oldest_unconfirmed_age_seconds",
    "Age of the oldest relay command not yet confirmed (from its episode's first command); "
    "0 when none is pending.",
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "headend_outbox_depth",
    "Outgoing messages stored and not yet acknowledged by the broker.",
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "headend_outbox_oldest_age_seconds",
    "Age of the oldest outgoing message still waiting; 0 when none waits.",
    registry=REGISTRY,
)
INVOCATION_HEADROOM = Gauge(
    "headend_invocation_counter_headroom",
    "Invocation counters left before the fleet's most used key runs out (2^32 - 1 minus the "
    "highest reserved counter): the lowest headroom, fleet-wide.",
    registry=REGISTRY,
)
ACTIVE_ALARMS = Gauge(
    "headend_active_alarms",
    "Alarms raised and not cleared, by type.",
    ["type"],
    registry=REGISTRY,
)

# -- clustering ---------------------------------------------------------------------------------
CLUSTER_LEASES = Gauge(
    "headend_cluster_leases_held",
    "Meter leases this member holds (clustered head-ends only).",
    ["member"],
    registry=REGISTRY,
)


def failure_reason(exc: BaseException) -> str:
    """A poll's failure as one of a few label values (the full error goes to the log)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connection"
    if isinstance(exc, DlmsError):
        return "dlms"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "error"


@asynccontextmanager
async def session_timer(transport: str, security: str, purpose: str) -> AsyncIterator[None]:
    """Counts the session in flight and observes its duration, however it ends (async, to
    sit in the same `async with` as the line lock it follows)."""
    in_flight = SESSIONS_IN_FLIGHT.labels(purpose=purpose)
    in_flight.inc()
    started = time.monotonic()
    try:
        yield
    finally:
        in_flight.dec()
        SESSION_SECONDS.labels(transport=transport, security=security).observe(
            time.monotonic() - started
        )
