"""A poll's relay read-back, judged for drift (relay/drift.py) in the transaction that records
it: the meter's confirmed state, the relay_state_mismatch alarm (raised once while it stands,
cleared when a read-back is in step again) and the disconnect command it may need.

A poll's read-back enters the relay history only when it differs from the confirmed state: a
poll every few minutes would otherwise bury the changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from headend import domain
from headend.relay import decision, drift
from headend.storage.alarms import clear_standing, insert_alarm
from headend.storage.commands import insert_command
from headend.storage.core import ALARMS, COMMANDS, METERS, Store
from headend.storage.holds import HELD_ACTION
from headend.storage.meters import UnknownMeter
from headend.storage.records import AlarmInfo, CommandInfo, RelayStateInfo
from headend.storage.relay_states import check_relay_state, write_relay_state

__all__ = ["PollReadback", "Readbacks"]


@dataclass(frozen=True, slots=True)
class PollReadback:
    """What a poll's relay read-back did: whether the meter is held (for the retained relay
    message), the drift judged (relay/drift.py), the mismatch alarm it raised (None: none,
    or one already stands), the disconnect command it queued, the alarms it cleared."""

    hold: bool
    drift: drift.Drift
    alarm: AlarmInfo | None = None
    command: CommandInfo | None = None
    alarms_cleared: int = 0


def _poll_read() -> Any:
    m, c, a = METERS.c, COMMANDS.c, ALARMS.c
    pending = (
        select(c.command_id)
        .where(c.meter_id == m.meter_id, c.status.in_(tuple(domain.ACTIVE_COMMAND_STATUSES)))
        .exists()
    )
    standing = (
        select(a.id)
        .where(
            a.meter_id == m.meter_id,
            a.type == domain.RELAY_STATE_MISMATCH,
            a.cleared.is_(False),
        )
        .exists()
    )
    return select(
        m.confirmed_relay_state,
        m.confirmed_output_state,
        m.confirmed_at,
        m.awaiting_alarm_raised,
        m.desired_relay_state,
        m.desired_seq,
        m.hold,
        HELD_ACTION.label("held_action"),
        pending.label("pending"),
        standing.label("standing"),
    )


_POLL_PEEK = _poll_read()
_POLL_READ = _POLL_PEEK.with_for_update(of=METERS)


def _changed(meter: Any, state: str, output_state: bool) -> bool:
    """The read-back differs from the meter's confirmed state (a row of `_poll_read`)."""
    return bool(
        (meter.confirmed_relay_state, meter.confirmed_output_state) != (state, output_state)
    )


def _judge(meter: Any, state: str, output_state: bool) -> drift.Drift:
    """relay/drift.py's judgement of a read-back for a row of `_poll_read`."""
    return drift.judge(
        decision.target(meter.desired_relay_state, meter.held_action),
        state,
        output_state,
        held=meter.hold,
        pending=meter.pending,
    )


class Readbacks(Store):
    async def readback_news(
        self, meter_id: str, state: str, output_state: bool
    ) -> tuple[bool, bool]:
        """(Whether a poll's read-back changes anything: the confirmed state, the drift
        judgement or a standing mismatch alarm; whether the meter is held). Most polls read
        a relay where it was and where it should be; those cost one read here and no write
        transaction of their own (on SQLite the one writer is shared with balance events)."""
        async with self.db.session() as session:
            meter = (await session.execute(_POLL_PEEK.where(METERS.c.meter_id == meter_id))).first()
        if meter is None:
            return True, False  # let the recording say so (UnknownMeter)
        if _changed(meter, state, output_state):
            return True, bool(meter.hold)
        judged = _judge(meter, state, output_state)
        return judged.outcome != drift.IN_STEP or bool(meter.standing), bool(meter.hold)

    async def record_poll_readback(
        self, meter_id: str, state: str, output_state: bool, *, ts: datetime | None = None
    ) -> PollReadback:
        """A poll's relay read-back, in one transaction: the meter's confirmed state (and the
        history when it changed), and the drift it shows (relay/drift.py) with its alarm and
        its disconnect command. Raises UnknownMeter."""
        check_relay_state(state)
        now = self.now()
        readback = RelayStateInfo(meter_id, state, output_state, state, ts or now, "poll", None)
        async with self.db.transaction() as session:
            meter = (await session.execute(_POLL_READ.where(METERS.c.meter_id == meter_id))).first()
            if meter is None:
                raise UnknownMeter(meter_id)
            await write_relay_state(
                session,
                readback,
                meter.confirmed_at,
                now,
                awaiting_alarm_raised=meter.awaiting_alarm_raised,
                history=_changed(meter, state, output_state),
            )
            judged = _judge(meter, state, output_state)
            if judged.outcome == drift.IN_STEP and meter.standing:
                cleared = await clear_standing(
                    session, (domain.RELAY_STATE_MISMATCH,), meter_id, now
                )
                return PollReadback(meter.hold, judged, alarms_cleared=cleared)
            if judged.outcome != drift.MISMATCH:
                return PollReadback(meter.hold, judged)
            alarm = None
            if not meter.standing:
                alarm = await insert_alarm(
                    session, domain.RELAY_STATE_MISMATCH, meter_id, judged.detail, now
                )
            command = None
            if judged.command is not None:
                command = await insert_command(
                    session,
                    meter_id,
                    judged.command.action,
                    source="drift",
                    now=now,
                    seq=meter.desired_seq,
                    reason=judged.command.reason,
                )
            return PollReadback(meter.hold, judged, alarm, command)
