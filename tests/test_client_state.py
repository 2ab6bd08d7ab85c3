"""The client core's two state machines as tables: every step not in a table is refused (and the
state stays where it was), and whole associations walk through exactly the expected states.
The meter's side is played here with cosem_objects alone, so only the client is under test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cosem_objects import security
from cosem_objects.acse import (
    AARE,
    AARQ,
    RLRE,
    AcseServiceUserDiagnostic,
    Conformance,
    InitiateResponse,
    MechanismName,
)
from cosem_objects.apdu.action import ActionResponseNormal
from cosem_objects.apdu.common import ActionResult, AttributeDescriptor
from cosem_objects.apdu.gbt import GeneralBlockTransfer
from cosem_objects.apdu.get import GetResponseNormal
from cosem_objects.data import Data
from cosem_objects.errors import ProtocolError
from cosem_objects.obis import Obis
from drivers.client_core import ClientConnection
from drivers.client_events import Continue, Done, HlsChallenged, KeepReading
from drivers.client_settings import Authentication, ClientSettings
from drivers.client_state import (
    ASSOCIATION_TRANSITIONS,
    REQUEST_TRANSITIONS,
    AssociationEvent,
    AssociationState,
    LocalProtocolError,
    Machine,
    Pending,
    RequestEvent,
)
from drivers.dlms_errors import AuthenticationFailed, UnexpectedResponse

ENERGY = AttributeDescriptor(3, Obis.parse("1.0.1.8.0.255"), 2)
INITIATE = InitiateResponse(
    conformance=Conformance.from_bytes(bytes.fromhex("007E1F")), max_pdu_size=500
).to_bytes()
EK = bytes(range(16))
AK = bytes(range(16, 32))
KEYS = security.SecurityKeys(EK, AK)
METER_TITLE = b"SIM\x00\x00\x00\x00\x07"
STOC = bytes(range(100, 116))


def association() -> Machine[AssociationState, AssociationEvent]:
    return Machine("association", ASSOCIATION_TRANSITIONS, AssociationState.IDLE)


# -- the tables ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "event"),
    [
        (state, event)
        for state in AssociationState
        for event in AssociationEvent
        if (state, event) not in ASSOCIATION_TRANSITIONS
    ],
)
def test_every_association_step_not_in_the_table_is_refused(
    state: AssociationState, event: AssociationEvent
) -> None:
    machine = Machine("association", ASSOCIATION_TRANSITIONS, state)
    with pytest.raises(LocalProtocolError, match=f"association is {state.value}, expected"):
        machine.go(event)
    assert machine.state is state
    with pytest.raises(LocalProtocolError):
        machine.check(event)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (state, event)
        for state in Pending
        for event in RequestEvent
        if (state, event) not in REQUEST_TRANSITIONS
    ],
)
def test_every_request_step_not_in_the_table_is_refused(
    state: Pending, event: RequestEvent
) -> None:
    machine = Machine("request", REQUEST_TRANSITIONS, state)
    with pytest.raises(LocalProtocolError, match=f"request is {state.value}"):
        machine.go(event)
    assert machine.state is state


def test_a_refusal_names_the_states_the_step_needs() -> None:
    machine = association()
    with pytest.raises(LocalProtocolError) as refused:
        machine.go(AssociationEvent.REFUSED)
    assert str(refused.value) == (
        "association is idle, expected awaiting-aare or awaiting-hls-reply for refused"
    )
    assert isinstance(refused.value, ProtocolError)  # callers catching ProtocolError still do


def test_check_does_not_move() -> None:
    machine = association()
    machine.check(AssociationEvent.SEND_AARQ)
    assert machine.state is AssociationState.IDLE
    assert machine.go(AssociationEvent.SEND_AARQ) is AssociationState.AWAITING_AARE


def test_only_a_final_reply_or_a_new_request_ends_a_request() -> None:
    sends = [event for event in RequestEvent if event.name.startswith("SEND_")]
    for send in sends:
        machine = Machine("request", REQUEST_TRANSITIONS, Pending.NONE)
        pending = machine.go(send)
        assert pending is not Pending.NONE
        for other in sends:
            with pytest.raises(LocalProtocolError):
                machine.go(other)  # a new request first abandons this one (ClientConnection)
        assert machine.go(RequestEvent.ABANDONED) is Pending.NONE
        machine.go(send)
        assert machine.go(RequestEvent.ENDED) is Pending.NONE


# -- the core walking the tables -----------------------------------------------------------
def test_plain_association_walk() -> None:
    core = ClientConnection(ClientSettings())
    seen = [core.state]
    aarq = core.associate()
    seen.append(core.state)
    assert not core.needs_protection(aarq)
    assert isinstance(core.receive_aare(AARE(user_information=INITIATE).to_bytes()), Done)
    seen.append(core.state)
    request = core.get([(ENERGY, None)])
    assert not core.needs_protection(request)  # nothing is ciphered in a plain association
    assert core.receive(GetResponseNormal(request[2], Data.long(3)).to_bytes()) == Done(
        Data.long(3)
    )
    seen.append(core.state)
    core.release()
    seen.append(core.state)
    core.receive_rlre(RLRE().to_bytes())
    seen.append(core.state)
    assert seen == [
        AssociationState.IDLE,
        AssociationState.AWAITING_AARE,
        AssociationState.ASSOCIATED,
        AssociationState.ASSOCIATED,
        AssociationState.AWAITING_RLRE,
        AssociationState.RELEASED,
    ]


def hls_settings() -> ClientSettings:
    return ClientSettings(
        client_sap=1, authentication=Authentication.HLS_GMAC, auth_key=AK, enc_key=EK
    )


def challenged(core: ClientConnection) -> bytes:
    """AARQ out, the meter's HLS challenge back; returns our CtoS."""
    aarq = core.associate(1)
    ctos = AARQ.from_bytes(aarq).calling_authentication_value
    assert ctos is not None
    aare = AARE(
        diagnostic=AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        responding_ap_title=METER_TITLE,
        mechanism=MechanismName.HLS_GMAC,
        responding_authentication_value=STOC,
        user_information=security.wrap_service_specific(INITIATE, 0x30, METER_TITLE, 5, KEYS),
    )
    assert core.receive_aare(aare.to_bytes()) == HlsChallenged()
    return ctos


def test_hls_association_walk_and_what_goes_ciphered() -> None:
    core = ClientConnection(hls_settings())
    seen = [core.state]
    ctos = challenged(core)
    seen.append(core.state)
    request = core.hls_reply(2)
    seen.append(core.state)
    assert core.needs_protection(request)  # pass 3 travels ciphered
    f_ctos = security.hls_gmac_reply(KEYS, METER_TITLE, 6, ctos)
    answer = ActionResponseNormal(request[2], ActionResult.SUCCESS, Data.octet_string(f_ctos))
    wire = security.wrap_service_specific(answer.to_bytes(), 0x30, METER_TITLE, 7, KEYS)
    assert isinstance(core.receive(core.unprotect(wire)), Done)
    seen.append(core.state)
    ack = GeneralBlockTransfer(False, False, 1, 1, 1, b"")
    assert not core.needs_protection(ack.to_bytes())  # GBT acks only carry block numbers
    rlrq = core.release()
    seen.append(core.state)
    assert not core.needs_protection(rlrq)
    core.receive_rlre(RLRE().to_bytes())
    seen.append(core.state)
    assert seen == [
        AssociationState.IDLE,
        AssociationState.AWAITING_HLS_REPLY,
        AssociationState.AWAITING_HLS_REPLY,
        AssociationState.ASSOCIATED,
        AssociationState.AWAITING_RLRE,
        AssociationState.RELEASED,
    ]


def test_a_bad_f_ctos_sends_the_association_back_to_idle() -> None:
    core = ClientConnection(hls_settings())
    challenged(core)
    request = core.hls_reply(2)
    wrong = security.hls_gmac_reply(KEYS, METER_TITLE, 6, bytes(16))  # not over our CtoS
    answer = ActionResponseNormal(request[2], ActionResult.SUCCESS, Data.octet_string(wrong))
    wire = security.wrap_service_specific(answer.to_bytes(), 0x30, METER_TITLE, 7, KEYS)
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        core.receive(core.unprotect(wire))
    assert core.state is AssociationState.IDLE


@pytest.mark.parametrize(
    ("step", "state"),
    [
        (lambda core: core.release(), "idle"),
        (lambda core: core.receive_rlre(RLRE().to_bytes()), "idle"),
        (lambda core: core.hls_reply(1), "idle"),
        (lambda core: core.receive_aare(AARE().to_bytes()), "idle"),
    ],
)
def test_calls_out_of_turn_are_local_protocol_errors(
    step: Callable[[ClientConnection], object], state: str
) -> None:
    core = ClientConnection(ClientSettings())
    with pytest.raises(LocalProtocolError, match=f"association is {state}"):
        step(core)
    assert core.state is AssociationState.IDLE


def test_associating_twice_is_refused_and_keeps_the_challenge() -> None:
    core = ClientConnection(hls_settings())
    ctos = challenged(core)
    with pytest.raises(LocalProtocolError, match="awaiting-hls-reply, expected idle"):
        core.associate(3)
    assert core._ctos == ctos  # refused before anything was built
    assert core.state is AssociationState.AWAITING_HLS_REPLY


def test_a_request_left_unanswered_is_abandoned_by_the_next() -> None:
    core = ClientConnection(ClientSettings())
    core.associate()
    core.receive_aare(AARE(user_information=INITIATE).to_bytes())
    first = core.get([(ENERGY, None)])  # the session timed out on this one
    second = core.get([(ENERGY, None)])
    with pytest.raises(UnexpectedResponse, match="invoke id"):
        core.receive(GetResponseNormal(first[2], Data.long(1)).to_bytes())
    assert core.receive(GetResponseNormal(second[2], Data.long(2)).to_bytes()) == Done(Data.long(2))
    with pytest.raises(UnexpectedResponse, match="no request pending"):
        core.receive(GetResponseNormal(second[2], Data.long(2)).to_bytes())


def test_a_streamed_gbt_block_means_keep_reading_not_send() -> None:
    core = ClientConnection(ClientSettings())
    core.associate()
    core.receive_aare(AARE(user_information=INITIATE).to_bytes())
    request = core.get([(ENERGY, None)])
    whole = GetResponseNormal(request[2], Data.long(9)).to_bytes()
    first = GeneralBlockTransfer(False, True, 1, 1, 0, whole[:3])
    assert core.receive(first.to_bytes()) == KeepReading()
    acked = GeneralBlockTransfer(False, False, 1, 2, 0, whole[3:5])
    outcome = core.receive(acked.to_bytes())
    assert isinstance(outcome, Continue) and outcome.apdu[0] == 0xE0  # an ack to send
    last = GeneralBlockTransfer(True, False, 1, 3, 0, whole[5:])
    assert core.receive(last.to_bytes()) == Done(Data.long(9))
