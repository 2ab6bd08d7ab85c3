"""ACSE (AARQ/AARE/RLRQ/RLRE) and xDLMS Initiate codec: real-meter and Green Book vectors, BER
edge cases, and round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import vector_params

from cosem_objects.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    AcseServiceUserDiagnostic,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    MechanismName,
    decode_acse,
)
from cosem_objects.apdu.errors import ConfirmedServiceError
from cosem_objects.errors import DecodeError, SecurityError
from cosem_objects.security import SecurityKeys, wrap_service_specific

GB_KEYS = SecurityKeys(
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
CLIENT_ST = bytes.fromhex("4D4D4D0000000001")
SERVER_ST = bytes.fromhex("4D4D4D0000BC614E")

FAST = settings(max_examples=300, deadline=None)


def _is_acse_vector(entry: dict[str, Any]) -> bool:
    apdu = entry["expect"].get("apdu")
    return isinstance(apdu, dict) and apdu.get("type") in ("AARQ", "AARE")


def _apdu_bytes(entry: dict[str, Any]) -> bytes:
    """hdlc vectors: the APDU after the LLC header; apdu / ciphered-apdu vectors: the hex."""
    if entry["layer"] == "hdlc":
        return bytes.fromhex(entry["expect"]["apdu_hex"])
    return bytes.fromhex(entry["hex"])


def _keys(entry: dict[str, Any]) -> SecurityKeys | None:
    keys = entry["keys"]
    if not keys.get("encryption_key"):
        return None
    ak = keys.get("authentication_key")
    return SecurityKeys(bytes.fromhex(keys["encryption_key"]), bytes.fromhex(ak) if ak else None)


def _assert_subset(expected: dict[str, Any], actual: dict[str, Any], path: str = "") -> None:
    """Every key of `expected` is in `actual` with the same value (nested dicts recursively)."""
    for key, value in expected.items():
        assert key in actual, f"{path}{key} missing"
        if isinstance(value, dict) and isinstance(actual[key], dict):
            _assert_subset(value, actual[key], f"{path}{key}.")
        else:
            assert actual[key] == value, f"{path}{key}: {actual[key]!r} != {value!r}"


# -- vectors --------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", vector_params(predicate=_is_acse_vector))
def test_vector_decodes_to_expected_json(entry: dict[str, Any]) -> None:
    raw = _apdu_bytes(entry)
    expected = entry["expect"]["apdu"]
    apdu = decode_acse(raw)
    assert type(apdu).__name__ == expected["type"]
    assert isinstance(apdu, AARQ | AARE)
    _assert_subset(expected, apdu.to_json(_keys(entry)))


@pytest.mark.parametrize("entry", vector_params(predicate=_is_acse_vector))
def test_vector_round_trips_byte_for_byte(entry: dict[str, Any]) -> None:
    raw = _apdu_bytes(entry)
    apdu = decode_acse(raw)
    assert apdu.to_bytes() == raw
    assert type(apdu).from_bytes(apdu.to_bytes()) == apdu


@pytest.mark.parametrize("entry", vector_params(predicate=_is_acse_vector))
def test_vector_rebuilt_from_fields(entry: dict[str, Any]) -> None:
    """Encoding from the decoded fields alone (not the raw bytes) gives the captured bytes."""
    raw = _apdu_bytes(entry)
    apdu = decode_acse(raw)
    if isinstance(apdu, AARQ):
        request = apdu.initiate_request
        user_information = request.to_bytes() if request is not None else apdu.user_information
        rebuilt: AARQ | AARE = AARQ(
            apdu.application_context,
            apdu.calling_ap_title,
            apdu.mechanism,
            apdu.calling_authentication_value,
            user_information,
        )
    else:
        assert isinstance(apdu, AARE)
        response = apdu.initiate_response
        error = apdu.confirmed_service_error
        if response is not None:
            user_information = response.to_bytes()
        elif error is not None:
            user_information = error.to_bytes()
        else:
            user_information = apdu.user_information
        rebuilt = AARE(
            apdu.application_context,
            apdu.result,
            apdu.diagnostic_source,
            apdu.diagnostic,
            apdu.responding_ap_title,
            apdu.mechanism,
            apdu.responding_authentication_value,
            user_information,
        )
    assert rebuilt.to_bytes() == raw


@pytest.mark.parametrize(
    "entry", vector_params(predicate=lambda e: e["id"] == "gb-s2-ciphered-aarq-lls")
)
def test_ciphered_aarq_glo_initiate_request(entry: dict[str, Any]) -> None:
    raw = bytes.fromhex(entry["hex"])
    keys = _keys(entry)
    assert keys is not None
    aarq = AARQ.from_bytes(raw)
    assert aarq.application_context == 3
    assert aarq.initiate_request is None  # ciphered: needs keys
    request = aarq.decrypt_initiate_request(keys)
    plaintext = bytes.fromhex(entry["expect"]["plaintext_hex"])
    assert request.to_bytes() == plaintext
    assert request.dedicated_key == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert request.max_pdu_size == 1200
    # Re-ciphering with the same IC reproduces the user-information byte for byte.
    glo = entry["expect"]["apdu"]["glo_initiate_request"]
    again = wrap_service_specific(
        plaintext,
        glo["security_control"],
        aarq.calling_ap_title or b"",
        glo["invocation_counter"],
        keys,
    )
    assert again == aarq.user_information
    # Without keys the ciphering fields are still reported, tag unchecked.
    plain_json = aarq.to_json()
    assert plain_json["glo_initiate_request"]["tag_ok"] is None
    assert "initiate_request" not in plain_json
    # With a wrong key the tag fails, and nothing is decoded.
    wrong = SecurityKeys(bytes(16), keys.authentication_key)
    assert aarq.to_json(wrong)["glo_initiate_request"]["tag_ok"] is False
    with pytest.raises(SecurityError):
        aarq.decrypt_initiate_request(wrong)


# -- conformance ----------------------------------------------------------------------------
def test_conformance_wire_bits() -> None:
    conformance = Conformance.from_bytes(bytes.fromhex("001E1D"))
    assert set(conformance) == {
        Conformance.BLOCK_TRANSFER_GET,
        Conformance.BLOCK_TRANSFER_SET,
        Conformance.BLOCK_TRANSFER_ACTION,
        Conformance.MULTIPLE_REFERENCES,
        Conformance.GET,
        Conformance.SET,
        Conformance.SELECTIVE_ACCESS,
        Conformance.ACTION,
    }
    # dlms-notes 16.1: wire bit n counts from the most significant bit of the first byte.
    assert Conformance.GENERAL_PROTECTION.to_bytes() == bytes.fromhex("400000")
    assert Conformance.GENERAL_BLOCK_TRANSFER.to_bytes() == bytes.fromhex("200000")
    assert Conformance.ATTRIBUTE0_SET.to_bytes() == bytes.fromhex("008000")
    assert Conformance.DATA_NOTIFICATION.to_bytes() == bytes.fromhex("000080")
    assert Conformance.ACTION.to_bytes() == bytes.fromhex("000001")
    assert Conformance.from_bytes(bytes.fromhex("00501F")) == (
        Conformance.BLOCK_TRANSFER_GET
        | Conformance.PRIORITY_MGMT
        | Conformance.GET
        | Conformance.SET
        | Conformance.SELECTIVE_ACCESS
        | Conformance.EVENT_NOTIFICATION
        | Conformance.ACTION
    )


def test_conformance_keeps_reserved_bits_and_checks_size() -> None:
    assert Conformance.from_bytes(bytes.fromhex("810100")).to_bytes() == bytes.fromhex("810100")
    with pytest.raises(DecodeError):
        Conformance.from_bytes(b"\x00\x1e")


# -- InitiateRequest / InitiateResponse -----------------------------------------------------
def test_initiate_request_optional_fields() -> None:
    request = InitiateRequest(
        dedicated_key=bytes(range(16)),
        response_allowed=False,
        quality_of_service=-3,
        dlms_version=6,
        conformance=Conformance.GET | Conformance.GENERAL_PROTECTION,
        max_pdu_size=1200,
    )
    raw = request.to_bytes()
    assert raw == (
        b"\x01\x01\x10"
        + bytes(range(16))
        + b"\x01\x00\x01\xfd\x06\x5f\x1f\x04\x00"
        + bytes.fromhex("400010")
        + b"\x04\xb0"
    )
    assert InitiateRequest.from_bytes(raw) == request
    # An explicit response-allowed TRUE decodes as the default.
    explicit = bytes.fromhex("010001FF00065F1F0400001E1DFFFF")
    assert InitiateRequest.from_bytes(explicit).response_allowed is True


def test_initiate_request_repr_hides_dedicated_key() -> None:
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    request = InitiateRequest(dedicated_key=key)
    assert key.hex() not in repr(request).lower()
    assert "\\x00\\x11" not in repr(request)
    assert request.to_json(redact=True)["dedicated_key"] == "<hidden>"


def test_initiate_response_sn_vaa_name() -> None:
    response = InitiateResponse(None, 6, Conformance.READ | Conformance.WRITE, 500, 0xFA00)
    raw = response.to_bytes()
    assert raw.endswith(b"\x01\xf4\xfa\x00")
    assert InitiateResponse.from_bytes(raw) == response


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "08",
        "0100000006",  # truncated before conformance
        "01000000065F1F0300001E1DFFFF",  # wrong conformance header
        "01020000065F1F0400001E1DFFFF",  # bad usage flag
        "01000000065F1F0400001E1DFFFF00",  # trailing byte
        "0101FF",  # dedicated key longer than the buffer
        "0800065F1F0400001E1D04C800",  # InitiateResponse truncated vaa-name
    ],
)
def test_initiate_malformed(raw: str) -> None:
    buf = bytes.fromhex(raw)
    for decoder in (InitiateRequest.from_bytes, InitiateResponse.from_bytes):
        with pytest.raises(DecodeError):
            decoder(buf)


# -- AARQ / AARE construction ---------------------------------------------------------------
def test_lls_aarq_from_scratch_matches_green_book() -> None:
    aarq = AARQ(
        application_context=1,
        mechanism=MechanismName.LLS,
        calling_authentication_value=b"12345678",
        user_information=InitiateRequest(
            conformance=Conformance.from_bytes(bytes.fromhex("007E1F")), max_pdu_size=1200
        ).to_bytes(),
    )
    assert aarq.acse_requirements == b"\x07\x80"  # implied by the mechanism
    assert aarq.to_bytes().hex().upper() == (
        "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
        "BE10040E01000000065F1F0400007E1F04B0"
    )


def test_aarq_repr_hides_password() -> None:
    aarq = AARQ(mechanism=MechanismName.LLS, calling_authentication_value=b"s3cretpw")
    assert "s3cretpw" not in repr(aarq)
    assert b"s3cretpw".hex() not in repr(aarq)
    assert aarq.to_json(redact=True)["calling_authentication_value"] == "<hidden>"


def test_aare_confirmed_service_error() -> None:
    aare = AARE.from_bytes(
        bytes.fromhex("611FA109060760857405080101A203020101A305A103020101BE0604040E010601")
    )
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == AcseServiceUserDiagnostic.NO_REASON_GIVEN
    assert aare.initiate_response is None
    assert aare.confirmed_service_error == ConfirmedServiceError(
        service=1, error_type=6, error_value=1
    )


def test_aare_service_provider_diagnostic() -> None:
    aare = AARE(
        result=AssociationResult.REJECTED_TRANSIENT,
        diagnostic_source="acse-service-provider",
        diagnostic=2,
    )
    raw = aare.to_bytes()
    assert bytes.fromhex("A305A203020102") in raw
    decoded = AARE.from_bytes(raw)
    assert decoded == aare
    assert decoded.to_json()["diagnostic"] == {"source": "acse-service-provider", "value": 2}


def test_ciphered_aare_glo_initiate_response() -> None:
    response = InitiateResponse(None, 6, Conformance.from_bytes(bytes.fromhex("00501F")), 500)
    user_information = wrap_service_specific(
        response.to_bytes(), 0x30, SERVER_ST, 0x01234568, GB_KEYS
    )
    assert user_information[0] == 0x28
    aare = AARE(
        application_context=3,
        diagnostic=AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        responding_ap_title=SERVER_ST,
        mechanism=MechanismName.HLS_GMAC,
        responding_authentication_value=b"P6wRJ21F",
        user_information=user_information,
    )
    decoded = AARE.from_bytes(aare.to_bytes())
    assert decoded == aare
    assert decoded.initiate_response is None
    assert decoded.decrypt_initiate_response(GB_KEYS) == response
    json = decoded.to_json(GB_KEYS)
    assert json["glo_initiate_response"]["tag_ok"] is True
    assert json["glo_initiate_response"]["invocation_counter"] == 0x01234568
    assert json["initiate_response"]["conformance"] == "00501F"


def test_hls_gmac_aarq_with_system_title() -> None:
    aarq = AARQ(
        application_context=3,
        calling_ap_title=CLIENT_ST,
        mechanism=MechanismName.HLS_GMAC,
        calling_authentication_value=b"K56iVagY",
        user_information=wrap_service_specific(
            InitiateRequest().to_bytes(), 0x30, CLIENT_ST, 1, GB_KEYS
        ),
    )
    raw = aarq.to_bytes()
    assert bytes.fromhex("A60A0408") + CLIENT_ST in raw
    decoded = AARQ.from_bytes(raw)
    assert decoded == aarq
    assert decoded.decrypt_initiate_request(GB_KEYS) == InitiateRequest()
    with pytest.raises(DecodeError):  # no glo-initiate-request to decrypt
        AARQ().decrypt_initiate_request(GB_KEYS)


def test_ciphered_aarq_without_calling_title_is_a_security_error() -> None:
    info = wrap_service_specific(InitiateRequest().to_bytes(), 0x30, CLIENT_ST, 1, GB_KEYS)
    with pytest.raises(SecurityError):
        AARQ(application_context=3, user_information=info).decrypt_initiate_request(GB_KEYS)


# -- BER details ----------------------------------------------------------------------------
def test_long_form_lengths() -> None:
    big_info = b"\x01" + bytes(299)
    aarq = AARQ(calling_ap_title=CLIENT_ST, user_information=big_info)
    raw = aarq.to_bytes()
    assert raw[:2] == b"\x60\x82"  # outer length > 255
    assert bytes.fromhex("BE82") in raw and bytes.fromhex("0482012C") in raw
    assert AARQ.from_bytes(raw) == aarq
    medium = AARE(responding_authentication_value=bytes(150))
    raw = medium.to_bytes()
    assert raw[:2] == b"\x61\x81"
    assert bytes.fromhex("AA8199808196") in raw
    assert AARE.from_bytes(raw) == medium


def _aarq_with_extra(extra: bytes) -> bytes:
    body = (
        bytes.fromhex("A109060760857405080101")
        + extra
        + bytes.fromhex("BE10040E01000000065F1F0400001E1DFFFF")
    )
    return b"\x60" + bytes((len(body),)) + body


@pytest.mark.parametrize(
    "extra",
    [
        "80020780",  # protocol-version
        "A2060404CAFEBABE",  # called-AP-title
        "A703020101",  # calling-AE-qualifier
        "9D03414243",  # implementation-information
        "BF2103020100",  # high tag number (multi-byte tag)
        "9F8101020000",  # high tag number, two tag bytes
    ],
)
def test_unknown_optional_fields_are_skipped(extra: str) -> None:
    aarq = AARQ.from_bytes(_aarq_with_extra(bytes.fromhex(extra)))
    assert aarq == AARQ(user_information=bytes.fromhex("01000000065F1F0400001E1DFFFF"))


CTX = "A109060760857405080101"  # application-context-name LN
DIAG_OK = "A203020100A305A103020100"  # result accepted, diagnostic null


def _wrap(tag: int, body_hex: str) -> str:
    body = bytes.fromhex(body_hex)
    return (bytes((tag, len(body))) + body).hex()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "not an ACSE APDU"),
        ("60", "truncated"),
        ("6000", "without application-context-name"),
        (_wrap(0x60, CTX)[:-2], "overruns"),
        (_wrap(0x60, CTX) + "00", "trailing"),
        (_wrap(0x60, "A109060760857405080201"), "not a DLMS context"),  # mechanism OID
        (_wrap(0x60, "A1090607608574050801FF"), "not a DLMS context"),  # arc >= 0x80
        (_wrap(0x60, "A10A06076085740508010100"), "trailing bytes"),  # inside A1
        (_wrap(0x60, CTX + CTX), "duplicate"),
        (_wrap(0x60, CTX + "A680"), "length form"),  # indefinite length
        (_wrap(0x60, CTX + "8B0760857405080209"), "unknown authentication mechanism"),
        (_wrap(0x60, CTX + "8B06608574050802"), "not a DLMS mechanism"),
        (_wrap(0x60, CTX + "AC03810101"), "expected tag 0x80"),  # not a charstring
        (_wrap(0x60, CTX + "A604050200FF"), "expected tag 0x04"),  # AP title not octets
        (_wrap(0x60, CTX + "BE03020100"), "expected tag 0x04"),  # user-information
        ("6004A102", "overruns"),
        ("60069F8181818101", "tag number too long"),
        ("61", "truncated"),
        (_wrap(0x61, CTX), "without result"),
        (_wrap(0x61, CTX + "A203020101"), "without result-source-diagnostic"),
        (_wrap(0x61, CTX + "A203020105A305A103020100"), "unknown association result"),
        (_wrap(0x61, CTX + "A20402020000A305A103020100"[:-2]), "overruns"),
        (_wrap(0x61, CTX + "A203020100A305A303020100"), "result-source-diagnostic"),
        (_wrap(0x61, CTX + "A2020200A305A103020100"), "integer of 0 bytes"),
        (_wrap(0x61, CTX + "A20702050000000001A305A103020100"), "integer of 5 bytes"),
        ("62028000", "integer of 0 bytes"),  # RLRQ reason
        ("6203BE0104", "truncated"),  # user-information truncated
        ("6402800100", "not an ACSE APDU"),
    ],
)
def test_malformed_acse(raw: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_acse(bytes.fromhex(raw))


def test_other_apdus_fields_are_unknown_to_release() -> None:
    """RLRQ has no A1..A3 fields: they are skipped like any unknown optional field."""
    assert decode_acse(bytes.fromhex(_wrap(0x62, CTX + DIAG_OK + "800101"))) == RLRQ(1, None)


def test_release_apdus() -> None:
    assert RLRQ().to_bytes() == bytes.fromhex("6203800100")
    assert RLRE().to_bytes() == bytes.fromhex("6303800100")
    assert RLRQ.from_bytes(bytes.fromhex("6203800100")) == RLRQ(0, None)
    assert RLRE.from_bytes(bytes.fromhex("6300")) == RLRE(None, None)
    ciphered = RLRQ(0, bytes.fromhex("2103300000000001"))
    assert decode_acse(ciphered.to_bytes()) == ciphered
    assert RLRE(1).to_json() == {"type": "RLRE", "reason": 1, "user_information": None}


# -- hypothesis round trips -----------------------------------------------------------------
optional_bytes = st.none() | st.binary(max_size=300)
qos = st.none() | st.integers(-128, 127)
conformance = st.integers(0, 0xFFFFFF).map(Conformance)
u16 = st.integers(0, 0xFFFF)

initiate_requests = st.builds(
    InitiateRequest,
    dedicated_key=st.none() | st.binary(max_size=40),
    response_allowed=st.booleans(),
    quality_of_service=qos,
    dlms_version=st.integers(0, 255),
    conformance=conformance,
    max_pdu_size=u16,
)
initiate_responses = st.builds(
    InitiateResponse,
    quality_of_service=qos,
    dlms_version=st.integers(0, 255),
    conformance=conformance,
    max_pdu_size=u16,
    vaa_name=u16,
)
mechanisms = st.none() | st.sampled_from(MechanismName)
requirements = st.none() | st.binary(min_size=1, max_size=3)
aarqs = st.builds(
    AARQ,
    application_context=st.integers(0, 127),
    calling_ap_title=optional_bytes,
    mechanism=mechanisms,
    calling_authentication_value=optional_bytes,
    user_information=optional_bytes,
    acse_requirements=requirements,
)
aares = st.builds(
    AARE,
    application_context=st.integers(0, 127),
    result=st.sampled_from(AssociationResult),
    diagnostic_source=st.sampled_from(["acse-service-user", "acse-service-provider"]),
    diagnostic=st.integers(-(2**31), 2**31 - 1),
    responding_ap_title=optional_bytes,
    mechanism=mechanisms,
    responding_authentication_value=optional_bytes,
    user_information=optional_bytes,
    acse_requirements=requirements,
)
reasons = st.none() | st.integers(-(2**31), 2**31 - 1)


@FAST
@given(initiate_requests)
def test_initiate_request_round_trip(request: InitiateRequest) -> None:
    assert InitiateRequest.from_bytes(request.to_bytes()) == request


@FAST
@given(initiate_responses)
def test_initiate_response_round_trip(response: InitiateResponse) -> None:
    assert InitiateResponse.from_bytes(response.to_bytes()) == response


@FAST
@given(aarqs)
def test_aarq_round_trip(aarq: AARQ) -> None:
    raw = aarq.to_bytes()
    decoded = AARQ.from_bytes(raw)
    assert decoded == aarq
    assert decoded.to_bytes() == raw


@FAST
@given(aares)
def test_aare_round_trip(aare: AARE) -> None:
    raw = aare.to_bytes()
    decoded = AARE.from_bytes(raw)
    assert decoded == aare
    assert decoded.to_bytes() == raw


@FAST
@given(reasons, optional_bytes)
def test_release_round_trip(reason: int | None, info: bytes | None) -> None:
    for cls in (RLRQ, RLRE):
        apdu = cls(reason, info)
        raw = apdu.to_bytes()
        assert cls.from_bytes(raw) == apdu
        assert decode_acse(raw) == apdu


@FAST
@given(aarqs, initiate_requests)
def test_aarq_carrying_initiate_request(aarq: AARQ, request: InitiateRequest) -> None:
    carrying = AARQ(
        aarq.application_context,
        aarq.calling_ap_title,
        aarq.mechanism,
        aarq.calling_authentication_value,
        request.to_bytes(),
    )
    decoded = AARQ.from_bytes(carrying.to_bytes())
    assert decoded.initiate_request == request
    assert decoded.to_json()["initiate_request"] == request.to_json()
