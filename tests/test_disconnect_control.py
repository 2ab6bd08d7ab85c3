"""Disconnect control (class 70) of the simulated meter: every control mode, every transition,
the disconnector control log, and the relay faults.

The expected table is written out here from the Blue Book wording (dlms-notes 1.3 and 1.4)
rather than taken from cosem_objects.classes, so that the test checks the table too."""

from __future__ import annotations

import datetime as dt

import pytest

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.classes import ControlState, DisconnectControl, Obises, Transition
from cosem_objects.data import Data
from cosem_objects.dates import CosemDateTime
from cosem_objects.obis import Obis
from simulators.config import MeterConfig
from simulators.meter import SimMeter
from simulators.objects.model import AccessLevel, AssociationContext
from simulators.objects.services import get_attribute, invoke_method, set_attribute
from simulators.relay import EventCode, RelayOutcome

DIS, CON, RDY = (
    ControlState.DISCONNECTED,
    ControlState.CONNECTED,
    ControlState.READY_FOR_RECONNECTION,
)
T = Transition
DC = Obises.DISCONNECT_CONTROL
MANAGEMENT = AssociationContext(level=AccessLevel.MANAGEMENT)

# Lettered transitions of the Blue Book table: (trigger, from) -> to.
A = (T.REMOTE_RECONNECT, DIS, CON)
B = (T.REMOTE_DISCONNECT, CON, DIS)
C = (T.REMOTE_DISCONNECT, RDY, DIS)
D = (T.REMOTE_RECONNECT, DIS, RDY)
E = (T.MANUAL_RECONNECT, RDY, CON)
F = (T.MANUAL_DISCONNECT, CON, RDY)
G = (T.LOCAL_DISCONNECT, CON, RDY)
H = (T.LOCAL_RECONNECT, RDY, CON)
ALLOWED = {
    0: (),
    1: (B, C, F, G, D, E),
    2: (B, C, F, G, A, E),
    3: (B, C, G, D, E),
    4: (B, C, G, A, E),
    5: (B, C, F, G, D, E, H),
    6: (B, C, G, D, E, H),
}


def expected(mode: int, state: ControlState, transition: Transition) -> ControlState | None:
    for trigger, source, target in ALLOWED[mode]:
        if trigger is transition and source is state:
            return target
    if mode and transition is T.REMOTE_DISCONNECT and state is DIS:
        return DIS  # disconnecting a disconnected relay is a harmless no-op
    return None


class FakeClock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.t


def make_meter(mode: int = 2) -> tuple[SimMeter, FakeClock]:
    clock = FakeClock()
    return SimMeter(MeterConfig.create(11, seed=3, control_mode=mode), clock=clock), clock


def put_in(meter: SimMeter, state: ControlState) -> None:
    meter.force_state(state)
    assert meter.control_state is state


CASES = [
    (mode, state, transition)
    for mode in range(7)
    for state in ControlState
    for transition in Transition
    if not (mode == 0 and state is not CON)  # mode 0 is always connected
]


@pytest.mark.parametrize(("mode", "state", "transition"), CASES)
def test_every_transition_under_every_mode(
    mode: int, state: ControlState, transition: Transition
) -> None:
    meter, _clock = make_meter(mode)
    put_in(meter, state)
    target = expected(mode, state, transition)
    if transition in (T.REMOTE_DISCONNECT, T.REMOTE_RECONNECT):
        result, returned = invoke_method(
            meter, 70, DC, int(transition), Data.integer(0), context=MANAGEMENT
        )
        assert returned is None
        assert result is (
            ActionResult.SUCCESS if target is not None else ActionResult.READ_WRITE_DENIED
        )
    else:
        event = meter.operate(transition)
        assert event.outcome is (RelayOutcome.OK if target is not None else RelayOutcome.DENIED)
        assert event.source == ("manual" if "MANUAL" in transition.name else "local")
    after = target if target is not None else state
    assert meter.control_state is after
    assert get_attribute(meter, 70, DC, DisconnectControl.CONTROL_STATE) == Data.enum(int(after))
    assert get_attribute(meter, 70, DC, DisconnectControl.OUTPUT_STATE) == Data.boolean(
        after is CON
    )
    history = meter.relay_history[-1]
    assert (history.transition, history.before, history.after) == (transition, state, after)


@pytest.mark.parametrize("mode", range(7))
def test_prepaid_cycle_per_mode(mode: int) -> None:
    """disconnect, reconnect, and a button press where the mode needs one."""
    meter, _clock = make_meter(mode)
    meter.remote_disconnect()
    if mode == 0:
        assert meter.control_state is CON  # cannot be disconnected
        return
    assert meter.control_state is DIS and meter.output_state is False
    meter.remote_reconnect()
    if mode in (2, 4):
        assert meter.control_state is CON
    else:
        assert meter.control_state is RDY and meter.output_state is False
        meter.press_button()
        assert meter.control_state is CON
    assert meter.output_state is True


def test_wire_examples_from_the_notes() -> None:
    """dlms-notes 1.2: remote_disconnect takes integer(0) and answers success without data."""
    meter, _clock = make_meter(1)
    assert invoke_method(meter, 70, DC, 1, Data.integer(0), context=MANAGEMENT) == (
        ActionResult.SUCCESS,
        None,
    )
    assert invoke_method(meter, 70, DC, 2, None, context=MANAGEMENT) == (ActionResult.SUCCESS, None)
    assert meter.control_state is RDY
    assert invoke_method(meter, 70, DC, 1, Data.octet_string(b"x"), context=MANAGEMENT)[0] is (
        ActionResult.TYPE_UNMATCHED
    )
    assert invoke_method(meter, 70, DC, 3, Data.integer(0), context=MANAGEMENT)[0] is (
        ActionResult.OBJECT_UNDEFINED
    )


# -- control mode ------------------------------------------------------------------------------
def test_control_mode_is_settable() -> None:
    meter, _clock = make_meter(2)
    assert get_attribute(meter, 70, DC, DisconnectControl.CONTROL_MODE) == Data.enum(2)
    assert (
        set_attribute(meter, 70, DC, 4, Data.enum(5), context=MANAGEMENT)
        is DataAccessResult.SUCCESS
    )
    assert meter.control_mode == 5
    assert (
        set_attribute(meter, 70, DC, 4, Data.enum(7), context=MANAGEMENT)
        is DataAccessResult.OTHER_REASON
    )
    assert set_attribute(meter, 70, DC, 4, Data.unsigned(1), context=MANAGEMENT) is (
        DataAccessResult.TYPE_UNMATCHED
    )
    assert set_attribute(meter, 70, DC, 2, Data.boolean(False), context=MANAGEMENT) is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert meter.control_mode == 5


def test_mode_zero_closes_the_relay() -> None:
    meter, _clock = make_meter(1)
    meter.remote_disconnect()
    assert (
        set_attribute(meter, 70, DC, 4, Data.enum(0), context=MANAGEMENT)
        is DataAccessResult.SUCCESS
    )
    assert meter.control_state is CON and meter.output_state is True
    assert meter.disconnector_log[-1][1] == EventCode.LOCAL_RECONNECTION


def test_invalid_config_mode() -> None:
    with pytest.raises(ValueError, match="control mode"):
        SimMeter(MeterConfig.create(1, control_mode=9))
    meter, _clock = make_meter()
    with pytest.raises(ValueError, match="control mode"):
        meter.control_mode = 7


# -- disconnector control log ------------------------------------------------------------------
def test_every_operation_is_logged() -> None:
    meter, clock = make_meter(5)
    steps = [
        (meter.remote_disconnect, EventCode.REMOTE_DISCONNECTION),
        (meter.remote_reconnect, EventCode.READY_FOR_MANUAL_RECONNECTION),
        (meter.press_button, EventCode.MANUAL_CONNECTION),
        (meter.manual_disconnect, EventCode.MANUAL_DISCONNECTION),
        (meter.local_reconnect, EventCode.LOCAL_RECONNECTION),
        (meter.local_disconnect, EventCode.LOCAL_DISCONNECTION),
    ]
    for operation, _code in steps:
        clock.t += 60
        assert operation().outcome is RelayOutcome.OK
    assert [code for _t, code in meter.disconnector_log] == [code for _op, code in steps]
    rows = get_attribute(meter, 7, Obises.DISCONNECTOR_LOG, 2)
    assert isinstance(rows, Data)
    assert len(rows.value) == len(steps)
    first = rows.value[0].value
    assert (
        CosemDateTime.from_bytes(first[0].value).to_datetime().timestamp()
        == (meter.disconnector_log[0][0])
    )
    assert first[1] == Data.unsigned(EventCode.REMOTE_DISCONNECTION)
    assert get_attribute(meter, 7, Obises.DISCONNECTOR_LOG, 7) == Data.double_long_unsigned(
        len(steps)
    )
    columns = get_attribute(meter, 7, Obises.DISCONNECTOR_LOG, 3)
    assert isinstance(columns, Data)
    assert [c[1] for c in columns.to_python()] == [
        Obises.CLOCK.to_bytes(),
        bytes([0, 0, 96, 11, 2, 255]),
    ]
    # The event code object holds the latest code.
    assert get_attribute(meter, 1, Obis(0, 0, 96, 11, 2), 2) == Data.unsigned(
        EventCode.LOCAL_DISCONNECTION
    )
    assert [e.source for e in meter.relay_history] == [
        "remote",
        "remote",
        "manual",
        "manual",
        "local",
        "local",
    ]


def test_remote_connection_code_and_no_op_not_logged() -> None:
    meter, _clock = make_meter(2)
    meter.remote_disconnect()
    meter.remote_disconnect()  # already disconnected: allowed, changes nothing
    meter.remote_reconnect()
    assert [code for _t, code in meter.disconnector_log] == [
        EventCode.REMOTE_DISCONNECTION,
        EventCode.REMOTE_CONNECTION,
    ]
    assert len(meter.relay_history) == 3


def test_denied_operations_are_not_logged() -> None:
    meter, _clock = make_meter(3)
    assert meter.manual_disconnect().outcome is RelayOutcome.DENIED
    assert meter.disconnector_log == []
    assert meter.relay_history[-1].outcome is RelayOutcome.DENIED


def test_log_reset_and_selective_access() -> None:
    meter, clock = make_meter(2)
    for _ in range(3):
        clock.t += 3600
        meter.remote_disconnect()
        clock.t += 3600
        meter.remote_reconnect()
    by_entry = get_attribute(
        meter,
        7,
        Obises.DISCONNECTOR_LOG,
        2,
        SelectiveAccess(
            2,
            Data.structure(
                [
                    Data.double_long_unsigned(5),
                    Data.double_long_unsigned(0),
                    Data.long_unsigned(2),
                    Data.long_unsigned(2),
                ]
            ),
        ),
    )
    assert isinstance(by_entry, Data)
    assert [r.to_python() for r in by_entry.value] == [
        [EventCode.REMOTE_DISCONNECTION],
        [EventCode.REMOTE_CONNECTION],
    ]
    assert invoke_method(
        meter, 7, Obises.DISCONNECTOR_LOG, 1, Data.integer(0), context=MANAGEMENT
    ) == (
        ActionResult.SUCCESS,
        None,
    )
    assert get_attribute(meter, 7, Obises.DISCONNECTOR_LOG, 7) == Data.double_long_unsigned(0)


def test_log_keeps_the_newest_entries() -> None:
    meter, clock = make_meter(2)
    for _ in range(60):
        clock.t += 10
        meter.remote_disconnect()
        meter.remote_reconnect()
    log = meter.disconnector_log
    assert len(log) == 100
    assert log[-1][0] == clock.t


# -- faults ------------------------------------------------------------------------------------
def test_relay_stuck_claims_success_but_does_not_move() -> None:
    meter, _clock = make_meter(2)
    meter.faults.relay_stuck = True
    assert invoke_method(meter, 70, DC, 1, Data.integer(0), context=MANAGEMENT) == (
        ActionResult.SUCCESS,
        None,
    )
    assert meter.control_state is CON and meter.output_state is True
    assert meter.relay_history[-1].outcome is RelayOutcome.STUCK
    assert meter.disconnector_log == []
    meter.faults.relay_stuck = False
    assert (
        invoke_method(meter, 70, DC, 1, Data.integer(0), context=MANAGEMENT)[0]
        is ActionResult.SUCCESS
    )
    assert meter.control_state is DIS


def test_relay_failure_reports_hardware_fault() -> None:
    meter, _clock = make_meter(2)
    meter.faults.relay_failure = True
    assert invoke_method(meter, 70, DC, 1, Data.integer(0), context=MANAGEMENT) == (
        ActionResult.HARDWARE_FAULT,
        None,
    )
    assert meter.control_state is CON
    assert meter.disconnector_log[-1][1] == EventCode.DISCONNECT_RECONNECT_FAILURE
    assert meter.relay_history[-1].outcome is RelayOutcome.FAILURE
    assert meter.relay_history[-1].to_dict()["outcome"] == "failure"
    # The manual path fails the same way.
    meter.faults.relay_failure = False
    meter.remote_disconnect()
    meter.faults.relay_failure = True
    assert meter.remote_reconnect().outcome is RelayOutcome.FAILURE
    assert meter.control_state is DIS


def test_forbidden_transitions_win_over_faults() -> None:
    meter, _clock = make_meter(0)
    meter.faults.relay_failure = True
    assert invoke_method(meter, 70, DC, 1, Data.integer(0), context=MANAGEMENT)[0] is (
        ActionResult.READ_WRITE_DENIED
    )


def test_history_event_as_dict() -> None:
    meter, clock = make_meter(1)
    event = meter.remote_disconnect()
    assert event.to_dict() == {
        "time": clock.t,
        "source": "remote",
        "transition": "remote_disconnect",
        "before": "connected",
        "after": "disconnected",
        "outcome": "ok",
    }
