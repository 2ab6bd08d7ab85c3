"""The sans-IO client core on its own: replies crafted byte by byte, so every rule it enforces
(invoke ids, block order, refusals, exception responses, limits) is shown to fail loudly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosem_objects.acse import (
    AARE,
    AcseServiceUserDiagnostic,
    AssociationResult,
    Conformance,
    InitiateResponse,
)
from cosem_objects.apdu.common import AttributeDescriptor, DataAccessResult
from cosem_objects.apdu.errors import ExceptionResponse
from cosem_objects.apdu.get import GetResponseNormal, GetResponseWithBlock, GetResponseWithList
from cosem_objects.axdr import encode_data
from cosem_objects.data import Data
from cosem_objects.errors import ProtocolError
from cosem_objects.obis import Obis
from drivers.client_core import ClientConnection
from drivers.client_events import Continue, Done
from drivers.client_settings import ClientSettings
from drivers.dlms_errors import (
    AssociationRefused,
    AuthenticationFailed,
    DataAccessFailed,
    ServiceRejected,
    UnexpectedResponse,
)

ENERGY = AttributeDescriptor(3, Obis.parse("1.0.1.8.0.255"), 2)
ACCEPTED = AARE(
    user_information=InitiateResponse(
        conformance=Conformance.from_bytes(bytes.fromhex("007E1F")), max_pdu_size=500
    ).to_bytes()
)


def associated(**settings: object) -> ClientConnection:
    core = ClientConnection(ClientSettings(**settings))  # type: ignore[arg-type]
    core.associate()
    assert isinstance(core.receive_aare(ACCEPTED.to_bytes()), Done)
    return core


def test_accepted_association_negotiates_conformance_and_pdu_size() -> None:
    core = associated()
    assert core.server_max_pdu_size == 500
    assert core.supports_with_list  # 007E1F grants multiple references


def test_refused_association_names_the_diagnostic() -> None:
    core = ClientConnection(ClientSettings())
    core.associate()
    refusal = AARE(
        result=AssociationResult.REJECTED_PERMANENT,
        diagnostic=AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
        user_information=ACCEPTED.user_information,
    )
    with pytest.raises(AssociationRefused, match="application-context-name-not-supported"):
        core.receive_aare(refusal.to_bytes())


def test_wrong_password_is_an_authentication_failure() -> None:
    core = ClientConnection(ClientSettings(authentication="lls", password=b"secret12"))  # type: ignore[arg-type]
    aarq = core.associate()
    assert b"secret12" in aarq  # LLS sends it (that is what LLS is) ...
    assert "secret12" not in repr(core.settings)  # ... but never shows it
    refusal = AARE(
        result=AssociationResult.REJECTED_PERMANENT,
        diagnostic=AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE,
    )
    with pytest.raises(AuthenticationFailed):
        core.receive_aare(refusal.to_bytes())


def test_reply_with_another_invoke_id_is_refused() -> None:
    core = associated()
    request = core.get([(ENERGY, None)])
    wrong = GetResponseNormal((request[2] & 0xF0) | ((request[2] + 1) & 0x0F), Data.long(1))
    with pytest.raises(UnexpectedResponse, match="invoke id"):
        core.receive(wrong.to_bytes())


def test_get_value_and_refusal() -> None:
    core = associated()
    request = core.get([(ENERGY, None)])
    outcome = core.receive(GetResponseNormal(request[2], Data.double_long_unsigned(7)).to_bytes())
    assert outcome == Done(Data.double_long_unsigned(7))
    request = core.get([(ENERGY, None)])
    with pytest.raises(DataAccessFailed, match="object-undefined"):
        core.receive(GetResponseNormal(request[2], DataAccessResult.OBJECT_UNDEFINED).to_bytes())


def test_block_transfer_reassembles_in_order_and_rejects_a_gap() -> None:
    core = associated()
    value = Data.array([Data.double_long_unsigned(i) for i in range(300)])
    raw = encode_data(value)
    parts = [raw[i : i + 200] for i in range(0, len(raw), 200)]
    iip = core.get([(ENERGY, None)])[2]
    outcome: Continue | Done | None = None
    for number, part in enumerate(parts, start=1):
        reply = GetResponseWithBlock(iip, number == len(parts), number, part)
        outcome = core.receive(reply.to_bytes())
        if number < len(parts):
            assert isinstance(outcome, Continue)  # a get-request-next for this block
            assert outcome.apdu[:2] == b"\xc0\x02" and outcome.apdu[-1] == number
    assert outcome == Done(value)

    iip = core.get([(ENERGY, None)])[2]
    core.receive(GetResponseWithBlock(iip, False, 1, parts[0]).to_bytes())
    with pytest.raises(UnexpectedResponse, match="block 3 after 1"):
        core.receive(GetResponseWithBlock(iip, False, 3, parts[1]).to_bytes())


def test_block_transfer_is_bounded() -> None:
    core = associated(max_response_bytes=1000)
    iip = core.get([(ENERGY, None)])[2]
    core.receive(GetResponseWithBlock(iip, False, 1, bytes(600)).to_bytes())
    with pytest.raises(ProtocolError, match="larger than the limit"):
        core.receive(GetResponseWithBlock(iip, False, 2, bytes(600)).to_bytes())


def test_with_list_results_keep_their_order() -> None:
    core = associated()
    other = AttributeDescriptor(3, Obis.parse("1.0.1.8.0.255"), 3)
    iip = core.get([(ENERGY, None), (other, None)])[2]
    reply = GetResponseWithList(iip, (Data.long(5), DataAccessResult.READ_WRITE_DENIED))
    outcome = core.receive(reply.to_bytes())
    assert isinstance(outcome, Done)
    first, second = outcome.value
    assert first.value == Data.long(5) and second.error is DataAccessResult.READ_WRITE_DENIED
    with pytest.raises(DataAccessFailed, match="read-write-denied"):
        second.unwrap("GET")


def test_exception_response_is_a_service_rejection() -> None:
    core = associated()
    core.get([(ENERGY, None)])
    with pytest.raises(ServiceRejected):
        core.receive(ExceptionResponse(1, 2, None).to_bytes())


def test_requests_before_association_are_refused() -> None:
    core = ClientConnection(ClientSettings())
    with pytest.raises(ProtocolError, match="idle"):
        core.get([(ENERGY, None)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_reply_bytes_give_a_result_or_a_protocol_error(reply: bytes) -> None:
    core = associated()
    core.get([(ENERGY, None)])
    try:
        core.receive(reply)
    except (ProtocolError, ServiceRejected, DataAccessFailed, UnexpectedResponse):
        pass
