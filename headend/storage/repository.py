"""The storage API the daemon, the MQTT bridge, the collectors and the relay controller call.

One module per kind of record holds the statements (meters, readings, balances, commands,
relay_states, alarms, counters, fleet); `Repository` only composes them over one Database and
one clock, and offers their methods under the names callers use. Every method is one
transaction: what must happen together happens in one method (a balance event, the desired
state it sets and the command it creates; a confirmed command and the relay state that
confirmed it)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from headend.prepaid.quiet_hours import QuietHours
from headend.storage.alarms import Alarms
from headend.storage.awaiting import Awaiting
from headend.storage.balances import Balances
from headend.storage.commands import Commands, Confirmation
from headend.storage.core import Clock
from headend.storage.counters import IC_MAX, Counters, InvocationCounterExhausted
from headend.storage.db import Database
from headend.storage.events import MeterEvents
from headend.storage.fleet import Fleet
from headend.storage.holds import HoldConflict, Holds
from headend.storage.limits import Limits
from headend.storage.meters import Meters, UnknownMeter
from headend.storage.outbox import OutboxStore
from headend.storage.overrides import Overrides
from headend.storage.protection import Protection
from headend.storage.push_counters import PushCounters
from headend.storage.readbacks import Readbacks
from headend.storage.readings import Readings
from headend.storage.relay_states import RelayStates
from headend.storage.usage import Usage

__all__ = [
    "IC_MAX",
    "Confirmation",
    "HoldConflict",
    "InvocationCounterExhausted",
    "Repository",
    "UnknownMeter",
]


def _now() -> datetime:
    return datetime.now(UTC)


class Repository:
    """Async storage API over one Database.

    `warning_threshold` is the configured low-balance threshold (notifications section); a
    balance event may override it. `quiet_hours`: when a disconnect for arrears may run
    (grace, quiet hours; None: at once); `limit_on_arrears`: arrears limit the load
    instead ([prepaid] arrears_action = "limit"). `clock` is injectable for tests."""

    def __init__(
        self,
        db: Database,
        *,
        warning_threshold: Decimal = Decimal("20.00"),
        quiet_hours: QuietHours | None = None,
        limit_on_arrears: bool = False,
        clock: Clock = _now,
    ) -> None:
        self.db = db
        meters = Meters(db, clock)
        readings = Readings(db, clock)
        balances = Balances(db, clock, warning_threshold, quiet_hours, limit_on_arrears)
        limits = Limits(db, clock)
        protection = Protection(db, clock, quiet_hours)
        usage = Usage(db, clock)
        commands = Commands(db, clock)
        overrides = Overrides(db, clock)
        holds = Holds(db, clock)
        relay_states = RelayStates(db, clock)
        readbacks = Readbacks(db, clock)
        alarms = Alarms(db, clock)
        awaiting = Awaiting(db, clock)
        counters = Counters(db, clock)
        fleet = Fleet(db, clock)
        self.outbox = OutboxStore(db, clock)

        self.get_meter = meters.get_meter
        self.list_meters = meters.list_meters
        self.save_capabilities = meters.save_capabilities
        self.update_meter_host = meters.update_meter_host

        self.store_readings = readings.store_readings
        self.prepare_readings = readings.prepare
        self.reading_partitions = readings.partitions
        self.latest_readings = readings.latest_readings
        self.readings = readings.readings
        self.store_profile_entries = readings.store_profile_entries
        self.last_profile_ts = readings.last_profile_ts
        self.profile_entries = readings.profile_entries

        self.apply_balance_event = balances.apply_balance_event
        self.lock_meters = balances.lock_meters
        self.apply_balance_batch = balances.apply_balance_batch
        self.record_balance_event = balances.record_balance_event
        self.balance_events = balances.balance_events
        self.reset_balance_seq = balances.reset_balance_seq

        self.create_command = overrides.create_command
        self.release_hold = overrides.release_hold
        self.held_meters = holds.held_meters
        self.set_protected = protection.set_protected
        self.protected_meters = protection.protected_meters
        self.energy_samples = usage.energy_samples
        self.billing_captures = usage.billing_captures
        self.prepaid_meters = usage.prepaid_meters
        self.usage_of = usage.usage_of
        self.usages_of = usage.usages_of
        self.mark_prepaid = usage.mark_prepaid
        self.limits_due = limits.limits_due
        self.record_limit = limits.record_limit
        self.reconcile_commands = commands.reconcile_commands
        self.get_command = commands.get_command
        self.command_and_desired = commands.command_and_desired
        self.pending_commands = commands.pending_commands
        self.due_meter_ids = commands.due_meter_ids
        self.update_command = commands.update_command
        self.confirm_command = commands.confirm_command
        self.overdue_commands = commands.overdue_commands
        self.escalate_command = commands.escalate_command

        self.record_relay_state = relay_states.record_relay_state
        self.relay_history = relay_states.relay_history
        self.record_poll_readback = readbacks.record_poll_readback
        self.readback_news = readbacks.readback_news

        self.raise_alarm = alarms.raise_alarm
        self.clear_alarms = alarms.clear_alarms
        self.list_alarms = alarms.list_alarms
        self.raise_awaiting_customers = awaiting.raise_awaiting_customers

        self.reserve_invocation_counter = counters.reserve_invocation_counter

        self.fleet_summary = fleet.fleet_summary

        meter_events = MeterEvents(db, clock)
        self.store_events = meter_events.store_events
        self.meter_events = meter_events.meter_events
        self.last_event_ts = meter_events.last_event_ts
        push_counters = PushCounters(db, clock)
        self.accept_push_counter = push_counters.accept_push_counter
        self.last_push_counter = push_counters.last_push_counter
