"""What one collection session with a meter does: register reads, the relay read back and
judged for drift, profile catch-up, clock.

Profiles are caught up incrementally: only entries newer than the last stored one are asked
for (a range read from that time on), in bounded spans, so a meter that was unreachable for a
week catches up over a few polls instead of in one long session. The clock is compared with
the head-end's (at the midpoint of the request) and set when it drifts beyond the limit.

The relay (Disconnect control) in the register list is read whole (output_state, control_state,
control_mode) rather than as a register: its read-back is stored as the meter's confirmed
state and judged against the state the meter should be in (relay/drift.py, applied by
storage); the retained relay message follows every read-back, and a disconnect command that
drift calls for is queued in the database, where the relay controller's scan finds it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cosem_objects.classes import DisconnectControl, Obises
from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DataAccessFailed, DlmsError
from drivers.session import DlmsSession, Reading, RelayStatus
from headend import domain
from headend.collection.capabilities import Capabilities, CapabilityCache
from headend.collection.event_logs import EventLogCatchUp, EventLogResult
from headend.collection.scheduler import PollJob
from headend.mqtt.notifier import Notifier
from headend.mqtt.payloads import publishable
from headend.observability.logs import get_logger
from headend.relay import drift
from headend.relay.messages import publish_alarm, publish_command, publish_relay
from headend.storage import ProfileRow, ReadingRow, Repository
from headend.storage.batching import ImmediateReadings, Then

__all__ = ["PollReport", "PollSettings", "Poller"]

log = get_logger(__name__)

LOAD_PROFILE = str(Obises.LOAD_PROFILE)
BILLING_PROFILE = str(Obises.BILLING_PROFILE)
RELAY = str(Obises.DISCONNECT_CONTROL)


@dataclass(frozen=True)
class PollSettings:
    obis: tuple[str, ...] = (
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "1.0.32.7.0.255",
        "0.0.96.3.10.255",
    )
    load_profile: bool = True
    billing_profile: bool = True
    clock_max_drift_s: float = 10.0
    # A meter never read: start this far back (a week: the prepaid forecast has a rate and a
    # weekday to go on from the first poll).
    load_profile_backfill_s: float = 7 * 86400.0
    billing_backfill_s: float = 62 * 86400.0
    load_profile_span_s: float = 7 * 86400.0  # at most this much profile per session
    billing_span_s: float = 62 * 86400.0
    event_logs: bool = True  # caught up with the load profile (collection/event_logs.py)
    event_log_backfill_s: float = 31 * 86400.0


@dataclass
class PollReport:
    meter_id: str
    readings: int = 0
    profile_entries: dict[str, int] = field(default_factory=dict)
    event_logs: list[EventLogResult] = field(default_factory=list)
    clock_drift_s: float | None = None
    clock_set: bool = False
    relay_state: str | None = None  # as read back (None: not read)
    drift: str | None = None  # relay/drift.py's outcome for that read-back
    problems: list[str] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _has(caps: Capabilities | None, obis: str) -> bool:
    """Unknown capabilities (the meter hides its object list): try everything."""
    return caps is None or caps.has(obis)


class ReadingsSink(Protocol):
    async def store_readings(self, rows: Iterable[ReadingRow], then: Then | None = None) -> int: ...


class Poller:
    def __init__(
        self,
        repository: Repository,
        notifier: Notifier | None,
        settings: PollSettings | None = None,
        *,
        clock: Callable[[], dt.datetime] = _now,
        readings_sink: ReadingsSink | None = None,
    ) -> None:
        self.repository = repository
        # Where register readings go: the repository, or a batcher shared by all polls.
        self.readings_sink: ReadingsSink = readings_sink or ImmediateReadings(repository)
        self.notifier = notifier
        self.settings = settings or PollSettings()
        self._clock = clock
        self.capabilities = CapabilityCache(repository)
        self.event_logs = EventLogCatchUp(
            repository, notifier, backfill_s=self.settings.event_log_backfill_s
        )

    async def poll(self, session: DlmsSession, meter_id: str, job: PollJob) -> PollReport:
        """Run the job on an open session. Transport errors propagate (the poll failed);
        an object the meter does not have is noted in the report and skipped."""
        report = PollReport(meter_id)
        caps = await self.capabilities.get(session, meter_id)
        if job.registers:
            report.readings = await self._registers(session, meter_id, report, caps)
        if caps is not None:
            wanted = {LOAD_PROFILE: job.load_profile, BILLING_PROFILE: job.billing_profile}
            for profile, asked in wanted.items():
                if asked and not caps.has(profile):
                    report.problems.append(f"{profile}: not in the meter's object list")
        if job.load_profile and self.settings.load_profile and _has(caps, LOAD_PROFILE):
            await self._profile(
                session,
                meter_id,
                LOAD_PROFILE,
                self.settings.load_profile_backfill_s,
                self.settings.load_profile_span_s,
                report,
            )
        if job.billing_profile and self.settings.billing_profile and _has(caps, BILLING_PROFILE):
            await self._profile(
                session,
                meter_id,
                BILLING_PROFILE,
                self.settings.billing_backfill_s,
                self.settings.billing_span_s,
                report,
            )
        if job.load_profile and self.settings.event_logs:
            report.event_logs = await self.event_logs.run(
                session, meter_id, caps, self._clock(), report.problems
            )
        if job.clock_check:
            await self._clock_check(session, report)
        return report

    # -- registers ---------------------------------------------------------------------------
    async def _registers(
        self,
        session: DlmsSession,
        meter_id: str,
        report: PollReport,
        caps: Capabilities | None = None,
    ) -> int:
        codes = list(self.settings.obis)
        if caps is not None:
            missing = [code for code in codes if not caps.has(code)]
            for code in missing:
                report.problems.append(f"{code}: not in the meter's object list")
            codes = [code for code in codes if caps.has(code)]
            if not codes:
                return 0
        registers = [code for code in codes if code != RELAY]
        readings: dict[str, Reading] = {}
        if registers:
            try:
                readings = await session.read(registers)
            except DataAccessFailed:
                readings = await self._one_by_one(session, registers, report)
        relay = await self._relay_status(session, report) if RELAY in codes else None
        if relay is not None:
            readings[RELAY] = Reading(
                RELAY,
                relay.output_state,
                None,
                relay.output_state,
                None,
                DisconnectControl.CLASS_ID,
            )
        read_at = self._clock()
        ts = read_at.replace(microsecond=0)
        rows = [ReadingRow(meter_id, r.obis, ts, r.value, r.unit) for r in readings.values()]
        if not rows:
            return 0
        notifier = self.notifier
        # Most read-backs find the relay where it was and where it should be: nothing to
        # record, only the retained relay message to refresh. Either way it happens in the
        # readings' (batched) transaction, not in a write transaction of its own.
        news, hold = True, False
        if relay is not None:
            report.relay_state = relay.state
            news, hold = await self.repository.readback_news(
                meter_id, relay.state, relay.output_state
            )

        async def record() -> None:  # in the (batched) transaction that stores the rows
            if notifier is not None:
                values = {r.obis: (publishable(r.value), r.unit) for r in readings.values()}
                notifier.readings(meter_id, ts, values)
            if relay is None:
                return
            if news:
                await self._relay_readback(meter_id, relay, read_at, report)
            else:
                report.drift = drift.IN_STEP
                if notifier is not None:
                    publish_relay(notifier, meter_id, relay, read_at, "poll", hold)

        await self.readings_sink.store_readings(rows, record)
        return len(rows)

    async def _relay_status(self, session: DlmsSession, report: PollReport) -> RelayStatus | None:
        """The relay's state, or None (noted) when the meter will not tell it."""
        try:
            return await session.relay_status()
        except (DataAccessFailed, ProtocolError) as exc:
            report.problems.append(f"{RELAY}: {exc}")
            return None

    async def _relay_readback(
        self, meter_id: str, status: RelayStatus, ts: dt.datetime, report: PollReport
    ) -> None:
        """Store the read-back and what it means (relay/drift.py), and say so, in the
        readings' transaction (storage/unit.py)."""
        outcome = await self.repository.record_poll_readback(
            meter_id, status.state, status.output_state, ts=ts
        )
        if self.notifier is not None:
            publish_relay(self.notifier, meter_id, status, ts, "poll", outcome.hold)
            publish_alarm(self.notifier, outcome.alarm)
            if outcome.command is not None:
                # The relay controller's scan runs it (within its scan interval).
                publish_command(self.notifier, outcome.command, domain.QUEUED, ts)
        report.drift = outcome.drift.outcome
        if outcome.alarm is not None:
            log.warning("meter %s: %s", meter_id, outcome.alarm.detail)

    async def _one_by_one(
        self, session: DlmsSession, codes: Sequence[str], report: PollReport
    ) -> dict[str, Reading]:
        readings: dict[str, Reading] = {}
        for code in codes:
            try:
                readings.update(await session.read([code]))
            except DataAccessFailed as exc:
                report.problems.append(f"{code}: {exc}")
        return readings

    # -- profiles ----------------------------------------------------------------------------
    async def _profile(
        self,
        session: DlmsSession,
        meter_id: str,
        profile: str,
        backfill_s: float,
        span_s: float,
        report: PollReport,
    ) -> None:
        last = await self.repository.last_profile_ts(meter_id, profile)
        now = self._clock()
        start = (
            last + dt.timedelta(seconds=1)
            if last is not None
            else now - dt.timedelta(seconds=backfill_s)
        )
        end = min(now, start + dt.timedelta(seconds=span_s))
        if end <= start:
            report.profile_entries[profile] = 0
            return
        try:
            data = await session.read_profile(profile, start, end)
        except (DataAccessFailed, DlmsError, ProtocolError) as exc:
            if isinstance(exc, OSError | TimeoutError):
                raise
            report.problems.append(f"{profile}: {exc}")
            return
        rows = [
            ProfileRow(meter_id, profile, row.timestamp, row.values)
            for row in data.rows
            if row.timestamp is not None and (last is None or row.timestamp > last)
        ]
        report.profile_entries[profile] = await self.repository.store_profile_entries(rows)

    # -- clock -------------------------------------------------------------------------------
    async def _clock_check(self, session: DlmsSession, report: PollReport) -> None:
        sent = time.monotonic()
        before = self._clock()
        try:
            meter_time = await session.read_clock()
        except (DataAccessFailed, ProtocolError) as exc:
            report.problems.append(f"clock: {exc}")
            return
        half_trip = dt.timedelta(seconds=(time.monotonic() - sent) / 2)
        drift = (meter_time - (before + half_trip)).total_seconds()
        report.clock_drift_s = drift
        if abs(drift) <= self.settings.clock_max_drift_s:
            return
        try:
            await session.set_clock(self._clock())
        except (DataAccessFailed, DlmsError, ProtocolError) as exc:
            report.problems.append(f"clock drift {drift:+.1f}s, set refused: {exc}")
            return
        report.clock_set = True
        log.info("meter %s clock was %+.1fs off: set", report.meter_id, drift)
