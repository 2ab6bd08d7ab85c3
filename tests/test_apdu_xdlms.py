"""xDLMS service APDUs (cosem_objects.apdu): the real-meter vectors, one constructed example of
every service variant, hypothesis round trips, and a cross-check with dlms-cosem 21.3.2 where
its classes are sound."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from axdr_strategies import (
    action_results,
    attribute_descriptors,
    data_access_results,
    data_values,
    date_times,
    iips,
    method_descriptors,
    optional_access,
    raw_blocks,
    u8,
    u16,
    u32,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import vector_by_id, vector_params

from cosem_objects.apdu import (
    ActionRequestNextPBlock,
    ActionRequestNormal,
    ActionRequestWithFirstPBlock,
    ActionRequestWithList,
    ActionRequestWithListAndFirstPBlock,
    ActionRequestWithPBlock,
    ActionResponseNextPBlock,
    ActionResponseNormal,
    ActionResponseWithList,
    ActionResponseWithPBlock,
    ActionResult,
    AttributeDescriptor,
    ConfirmedServiceError,
    DataAccessResult,
    DataNotification,
    EventNotificationRequest,
    ExceptionResponse,
    GbtReassembler,
    GeneralBlockTransfer,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithBlock,
    GetResponseWithList,
    MethodDescriptor,
    SelectiveAccess,
    SetRequestNormal,
    SetRequestWithBlock,
    SetRequestWithFirstBlock,
    SetRequestWithList,
    SetRequestWithListAndFirstBlock,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseLastDataBlockWithList,
    SetResponseNormal,
    SetResponseWithList,
    invoke_id_and_priority,
)
from cosem_objects.axdr import encode_data
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.decode import decode_apdu
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis

ACSE_TYPES = {"AARQ", "AARE", "RLRQ", "RLRE"}


def _is_xdlms(vector: dict[str, Any]) -> bool:
    apdu = vector["expect"].get("apdu")
    return isinstance(apdu, dict) and apdu.get("type") not in ACSE_TYPES


# -- helpers for the multi-frame vectors --------------------------------------------------------
def _hdlc_info(frame: bytes) -> tuple[bytes, bytes | None]:
    """Information field of one HDLC frame (length-delimited), split into (LLC, rest).

    Only the slicing needed to get at the GBT blocks; the HDLC layer has its own tests."""
    assert frame[0] == 0x7E and frame[-1] == 0x7E
    length = ((frame[1] & 0x07) << 8) | frame[2]
    assert length == len(frame) - 2
    position = 3
    for _ in range(2):  # destination, then source address: up to the byte with bit 0 set
        while not frame[position] & 1:
            position += 1
        position += 1
    position += 1 + 2  # control, HCS
    info = frame[position:-3]  # before FCS and the closing flag
    if info[:3] in (b"\xe6\xe6\x00", b"\xe6\xe7\x00"):
        return info[3:], info[:3]
    return info, None


def _frames(vector: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(frame) for frame in vector["hex"]]


def _reassemble(vector: dict[str, Any]) -> tuple[bytes, list[bytes | None]]:
    reassembler = GbtReassembler()
    outputs: list[bytes | None] = []
    for frame in _frames(vector):
        block = GeneralBlockTransfer.from_bytes(_hdlc_info(frame)[0])
        outputs.append(reassembler.feed(block))
    whole = outputs[-1]
    assert whole is not None
    return whole, outputs


def _apdu_bytes(vector: dict[str, Any]) -> bytes:
    expect = vector["expect"]
    if "plaintext_hex" in expect:  # ciphered: the security tests check the deciphering
        return bytes.fromhex(expect["plaintext_hex"])
    if vector["layer"] == "apdu":
        return bytes.fromhex(vector["hex"])
    if "apdu_hex" in expect:
        return bytes.fromhex(expect["apdu_hex"])
    return _reassemble(vector)[0]


# -- the vectors -------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", vector_params(predicate=_is_xdlms))
def test_vector_decodes_to_expected_json(vector: dict[str, Any]) -> None:
    raw = _apdu_bytes(vector)
    apdu = decode_apdu(raw)
    produced = apdu.to_json()
    for key, expected in vector["expect"]["apdu"].items():
        assert produced[key] == expected, key
    if "plaintext_hex" not in vector["expect"]:  # else apdu_tag is the ciphered APDU's
        assert raw[0] == vector["expect"]["apdu_tag"]
    json.dumps(produced)  # plain JSON types only


@pytest.mark.parametrize("vector", vector_params(predicate=_is_xdlms))
def test_vector_re_encodes_byte_for_byte(vector: dict[str, Any]) -> None:
    raw = _apdu_bytes(vector)
    apdu = decode_apdu(raw)
    assert apdu.to_bytes() == raw
    assert type(apdu).from_bytes(raw) == apdu


def _has_gbt(vector: dict[str, Any]) -> bool:
    return "gbt" in vector["expect"]


@pytest.mark.parametrize("vector", vector_params(predicate=_has_gbt))
def test_single_gbt_frames(vector: dict[str, Any]) -> None:
    expect = vector["expect"]["gbt"]
    body, llc = _hdlc_info(bytes.fromhex(vector["hex"]))
    assert body == bytes.fromhex(vector["expect"]["apdu_hex"])
    block = decode_apdu(body)
    assert isinstance(block, GeneralBlockTransfer)
    produced = block.to_json()
    for key, value in expect.items():
        if key == "llc":
            assert (None if llc is None else llc.hex().upper()) == value
        else:
            assert produced[key] == value, key
    assert block.to_bytes() == body


def _has_frames(vector: dict[str, Any]) -> bool:
    return "frames" in vector["expect"]


@pytest.mark.parametrize("vector", vector_params(predicate=_has_frames))
def test_gbt_frames_reassemble(vector: dict[str, Any]) -> None:
    frames = _frames(vector)
    expected_frames = vector["expect"]["frames"]
    assert len(frames) == len(expected_frames)
    for frame, expected in zip(frames, expected_frames, strict=True):
        body, llc = _hdlc_info(frame)
        block = GeneralBlockTransfer.from_bytes(body)
        assert block.to_bytes() == body
        produced = block.to_json()
        for key, value in expected["gbt"].items():
            if key == "llc":
                assert (None if llc is None else llc.hex().upper()) == value
            else:
                assert produced[key] == value, key
    whole, outputs = _reassemble(vector)
    assert whole.hex().upper() == vector["expect"]["reassembled_apdu_hex"]
    assert all(output is None for output in outputs[:-1])


def test_lg_partial_push_is_dropped_when_block_1_comes_again() -> None:
    vector = vector_by_id("v8-lg-e450-plain-gbt")
    blocks = [GeneralBlockTransfer.from_bytes(_hdlc_info(f)[0]) for f in _frames(vector)]
    assert [b.block_number for b in blocks] == [1, 2, 1, 2, 3, 4]
    reassembler = GbtReassembler()
    assert reassembler.feed(blocks[0]) is None
    assert reassembler.feed(blocks[1]) is None
    assert reassembler.in_progress and reassembler.last_block_number == 2
    # Block 1 again: the first message never completes and must not leak into the second.
    assert reassembler.feed(blocks[2]) is None
    assert reassembler.last_block_number == 1
    assert reassembler.feed(blocks[3]) is None
    assert reassembler.feed(blocks[4]) is None
    whole = reassembler.feed(blocks[5])
    assert whole is not None
    assert whole == b"".join(b.block_data for b in blocks[2:])
    assert not reassembler.in_progress
    notification = decode_apdu(whole)
    assert isinstance(notification, DataNotification)


# -- push values -------------------------------------------------------------------------------
PUSH_VECTORS = [
    "v4-aidon-push",
    "v5-kamstrup-push",
    "v6-kaifa-tirol-push",
    "v8-lg-e450-enc-message",
    "v8-lg-e450-plain-gbt",
]
CLOCK = "0.0.1.0.0.255"


def _is_obis(item: Data) -> bool:
    return item.type is DataType.OCTET_STRING and len(item.value) == 6


def _entry(obis: Data, value: Data, scaler_unit: Data | None) -> dict[str, Any]:
    return {
        "obis": str(Obis.from_bytes(obis.value)),
        "item": value,
        "scaler": None if scaler_unit is None else scaler_unit.value[0].value,
        "unit": None if scaler_unit is None else scaler_unit.value[1].value,
    }


def _push_values(body: Data) -> list[dict[str, Any]]:
    """The vendor layouts of dlms-notes 7.2, walked explicitly."""
    items = body.value
    first = items[0]
    if first.type is DataType.ARRAY and all(
        d.type is DataType.STRUCTURE and len(d.value) == 4 for d in first.value
    ):
        # L+G: body[0] is the push_object_list; body[k] is the value of capture object k.
        return [
            _entry(definition.value[1], value, None)
            for definition, value in zip(first.value[1:], items[1:], strict=True)
        ]
    found = []
    index = 0
    while index < len(items):
        item = items[index]
        if item.type is DataType.STRUCTURE and item.value and _is_obis(item.value[0]):
            # Aidon / Kaifa: {OBIS, value} or {OBIS, value, {scaler, unit}}
            scaler_unit = item.value[2] if len(item.value) == 3 else None
            found.append(_entry(item.value[0], item.value[1], scaler_unit))
            index += 1
        elif _is_obis(item) and index + 1 < len(items):
            # Kamstrup / Kaifa / L+G encrypted: flat OBIS, value pairs
            found.append(_entry(item, items[index + 1], None))
            index += 2
        else:  # list identifier, header date-time
            index += 1
    return found


def _raw_json(item: Data) -> Any:
    if item.type is DataType.OCTET_STRING:
        return item.value.hex().upper()
    return item.value


@pytest.mark.parametrize("vector_id", PUSH_VECTORS)
def test_push_vector_values(vector_id: str) -> None:
    vector = vector_by_id(vector_id)
    expect = vector["expect"]
    notification = decode_apdu(_apdu_bytes(vector))
    assert isinstance(notification, DataNotification)
    values = _push_values(notification.body)
    assert len(values) == len(expect["values"])
    for got, want in zip(values, expect["values"], strict=True):
        item: Data = got["item"]
        assert got["obis"] == want["obis"]
        assert item.type.type_name == want["type"]
        assert _raw_json(item) == want["raw"]
        assert got["scaler"] == want["scaler"]
        assert got["unit"] == want["unit"]
        if isinstance(item.value, int) and not isinstance(item.value, bool):
            scaled = item.value * 10 ** (got["scaler"] or 0)
            assert math.isclose(scaled, want["value"], rel_tol=1e-9)
        elif got["obis"] == CLOCK:
            stamp = CosemDateTime.from_bytes(item.value)
            assert stamp.local_datetime().isoformat() == want["value"]
    # The message time: the notification header when there is one, else the body's clock.
    header = notification.date_time
    if header is not None:
        wanted = expect.get("notification_datetime", expect["datetime"])
        assert header.local_datetime().isoformat() == wanted
    clocks = [v["item"] for v in values if v["obis"] == CLOCK]
    if header is None or "notification_datetime" in expect:
        assert (
            CosemDateTime.from_bytes(clocks[0].value).local_datetime().isoformat()
            == (expect["datetime"])
        )


def test_kamstrup_list_identifier() -> None:
    vector = vector_by_id("v5-kamstrup-push")
    notification = decode_apdu(_apdu_bytes(vector))
    assert isinstance(notification, DataNotification)
    assert notification.body.value[0] == Data.visible_string(vector["expect"]["list_id"])


def test_kaifa_norway_tagged_date_time_is_accepted() -> None:
    """`09 0C` + 12 bytes (an A-XDR tag in front of the octet string) decodes like `0C`."""
    standard = _apdu_bytes(vector_by_id("v5-kamstrup-push"))
    assert standard[5] == 0x0C
    quirky = standard[:5] + b"\x09" + standard[5:]
    a = DataNotification.from_bytes(standard)
    b = DataNotification.from_bytes(quirky)
    assert a == b
    assert b.to_bytes() == standard  # we always write the standard form


# -- constructed examples of every variant -----------------------------------------------------
CLOCK_TIME = AttributeDescriptor(8, Obis(0, 0, 1, 0, 0, 255), 2)
LOAD_PROFILE = AttributeDescriptor(7, Obis(1, 0, 99, 1, 0, 255), 2)
DISCONNECT = MethodDescriptor(70, Obis(0, 0, 96, 3, 10, 255), 1)
ENERGY = AttributeDescriptor(3, Obis(1, 0, 1, 8, 0, 255), 2)
RANGE_2017 = SelectiveAccess(
    1,
    Data.structure(
        [
            Data.structure(
                [
                    Data.long_unsigned(8),
                    Data.octet_string(bytes.fromhex("0000010000FF")),
                    Data.integer(2),
                    Data.long_unsigned(0),
                ]
            ),
            Data.octet_string(bytes.fromhex("07E10A010700000000FFC480")),
            Data.octet_string(bytes.fromhex("07E10A010701000000FFC480")),
            Data.array([]),
        ]
    ),
)
D_CLOCK = "00080000010000FF02"
D_ENERGY = "00030100010800FF02"
D_DISCONNECT = "0046000060030AFF01"

EXAMPLES: list[tuple[str, Any, str]] = [
    # GET
    ("get-request-normal", GetRequestNormal(0xC1, CLOCK_TIME), "C001C1" + D_CLOCK + "00"),
    (
        "get-request-normal range (pwitab test_selective_access)",
        GetRequestNormal(0xC1, LOAD_PROFILE, RANGE_2017),
        "C001C100070100630100FF020101"
        "0204020412000809060000010000FF0F02120000"
        "090C07E10A010700000000FFC480"
        "090C07E10A010701000000FFC480"
        "0100",
    ),
    (
        "get-request-normal entry (Gurux readRowsByEntry)",
        GetRequestNormal(
            0xC1,
            LOAD_PROFILE,
            SelectiveAccess(
                2,
                Data.structure(
                    [
                        Data.double_long_unsigned(1),
                        Data.double_long_unsigned(10),
                        Data.long_unsigned(1),
                        Data.long_unsigned(0),
                    ]
                ),
            ),
        ),
        "C001C100070100630100FF02010202040600000001060000000A120001120000",
    ),
    ("get-request-next", GetRequestNext(0xC1, 1), "C002C100000001"),
    (
        "get-request-with-list",
        GetRequestWithList(0xC1, ((ENERGY, None), (CLOCK_TIME, None))),
        "C003C102" + D_ENERGY + "00" + D_CLOCK + "00",
    ),
    (
        "get-response-normal data",
        GetResponseNormal(0xC1, Data.double_long_unsigned(5009)),
        "C401C1000600001391",
    ),
    (
        "get-response-normal error",
        GetResponseNormal(0xC1, DataAccessResult.HARDWARE_FAULT),
        "C401C10101",
    ),
    (
        "get-response-with-datablock raw-data",
        GetResponseWithBlock(0xC1, False, 1, bytes(range(200))),
        "C402C1000000000100" + "81C8" + bytes(range(200)).hex().upper(),
    ),
    (
        "get-response-with-datablock error",
        GetResponseWithBlock(0xC1, True, 2, DataAccessResult.LONG_GET_ABORTED),
        "C402C1" + "01" + "00000002" + "01" + "0F",
    ),
    (
        "get-response-with-list",
        GetResponseWithList(
            0xC1, (Data.double_long_unsigned(5009), DataAccessResult.OBJECT_UNDEFINED)
        ),
        "C403C10200060000139101" + "04",
    ),
    # SET
    (
        "set-request-normal",
        SetRequestNormal(0x81, CLOCK_TIME, None, Data.long(120)),
        "C10181" + D_CLOCK + "00" + "100078",
    ),
    (
        "set-request-normal with access",
        SetRequestNormal(0xC1, ENERGY, SelectiveAccess(2, Data.null()), Data.unsigned(1)),
        "C101C1" + D_ENERGY + "010200" + "1101",
    ),
    (
        "set-request-with-first-datablock",
        SetRequestWithFirstBlock(0xC1, CLOCK_TIME, None, False, 1, b"\x09\x0c\x07"),
        "C102C1" + D_CLOCK + "00" + "00" + "00000001" + "03090C07",
    ),
    (
        "set-request-with-datablock",
        SetRequestWithBlock(0xC1, True, 2, b"\xde\xad"),
        "C103C1" + "01" + "00000002" + "02DEAD",
    ),
    (
        "set-request-with-list",
        SetRequestWithList(
            0xC1, ((ENERGY, None), (CLOCK_TIME, None)), (Data.unsigned(1), Data.long(-1))
        ),
        "C104C102" + D_ENERGY + "00" + D_CLOCK + "00" + "02" + "1101" + "10FFFF",
    ),
    (
        "set-request-with-list-and-first-datablock",
        SetRequestWithListAndFirstBlock(0xC1, ((ENERGY, None),), False, 1, b"\x11"),
        "C105C101" + D_ENERGY + "00" + "00" + "00000001" + "0111",
    ),
    ("set-response-normal", SetResponseNormal(0x81, DataAccessResult.SUCCESS), "C5018100"),
    ("set-response-datablock", SetResponseDataBlock(0xC1, 1), "C502C100000001"),
    (
        "set-response-last-datablock",
        SetResponseLastDataBlock(0xC1, DataAccessResult.SUCCESS, 2),
        "C503C10000000002",
    ),
    (
        "set-response-last-datablock-with-list",
        SetResponseLastDataBlockWithList(
            0xC1, (DataAccessResult.SUCCESS, DataAccessResult.READ_WRITE_DENIED), 2
        ),
        "C504C102000300000002",
    ),
    (
        "set-response-with-list",
        SetResponseWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.TYPE_UNMATCHED)),
        "C505C102000C",
    ),
    # ACTION
    (
        "action-request-normal remote_disconnect",
        ActionRequestNormal(0xC1, DISCONNECT, Data.integer(0)),
        "C301C1" + D_DISCONNECT + "01" + "0F00",
    ),
    (
        "action-request-normal without parameters",
        ActionRequestNormal(0xC1, DISCONNECT, None),
        "C301C1" + D_DISCONNECT + "00",
    ),
    ("action-request-next-pblock", ActionRequestNextPBlock(0xC1, 1), "C302C100000001"),
    (
        "action-request-with-list",
        ActionRequestWithList(
            0xC1,
            (DISCONNECT, MethodDescriptor(70, Obis(0, 0, 96, 3, 10, 255), 2)),
            (Data.integer(0), Data.integer(0)),
        ),
        "C303C102" + D_DISCONNECT + "0046000060030AFF02" + "02" + "0F00" + "0F00",
    ),
    (
        "action-request-with-first-pblock",
        ActionRequestWithFirstPBlock(0xC1, DISCONNECT, False, 1, b"\x0f"),
        "C304C1" + D_DISCONNECT + "00" + "00000001" + "010F",
    ),
    (
        "action-request-with-list-and-first-pblock",
        ActionRequestWithListAndFirstPBlock(0xC1, (DISCONNECT,), True, 1, b"\x0f\x00"),
        "C305C101" + D_DISCONNECT + "01" + "00000001" + "020F00",
    ),
    (
        "action-request-with-pblock",
        ActionRequestWithPBlock(0xC1, True, 2, b"\x00"),
        "C306C1" + "01" + "00000002" + "0100",
    ),
    (
        "action-response-normal success",
        ActionResponseNormal(0xC0, ActionResult.SUCCESS, None),
        "C701C00000",
    ),
    (
        "action-response-normal with data (HLS f(StoC))",
        ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.octet_string(b"\x10\x00\x00\x01")),
        "C701C1000100" + "090410000001",
    ),
    (
        "action-response-normal with data-access-result",
        ActionResponseNormal(0xC0, ActionResult.SUCCESS, DataAccessResult.OTHER_REASON),
        "C701C0000101FA",
    ),
    (
        "action-response-normal refused",
        ActionResponseNormal(0xC1, ActionResult.READ_WRITE_DENIED, None),
        "C701C10300",
    ),
    (
        "action-response-with-pblock",
        ActionResponseWithPBlock(0xC1, False, 1, b"\x01\x02"),
        "C702C1" + "00" + "00000001" + "020102",
    ),
    (
        "action-response-with-list",
        ActionResponseWithList(
            0xC1,
            (
                (ActionResult.SUCCESS, None),
                (ActionResult.OBJECT_UNAVAILABLE, DataAccessResult.OBJECT_UNAVAILABLE),
                (ActionResult.SUCCESS, Data.unsigned(7)),
            ),
        ),
        "C703C103" + "0000" + "0B01010B" + "0001001107",
    ),
    ("action-response-next-pblock", ActionResponseNextPBlock(0xC1, 1), "C704C100000001"),
    # errors, notifications, GBT
    ("exception-response", ExceptionResponse(1, 2), "D80102"),
    (
        "exception-response invocation counter",
        ExceptionResponse(1, 6, 0x01020304),
        "D8010601020304",
    ),
    ("confirmed-service-error", ConfirmedServiceError(1, 6, 1), "0E010601"),
    (
        "data-notification without date-time",
        DataNotification(0x40000000, None, Data.structure([Data.unsigned(1)])),
        "0F40000000" + "00" + "02011101",
    ),
    (
        "data-notification with date-time",
        DataNotification(
            1,
            CosemDateTime.from_bytes(bytes.fromhex("07E6011801123A32FF800000")),
            Data.long_unsigned(5),
        ),
        "0F00000001" + "0C07E6011801123A32FF800000" + "120005",
    ),
    (
        "event-notification-request",
        EventNotificationRequest(
            None, AttributeDescriptor(1, Obis(0, 0, 96, 11, 0, 255), 2), Data.long_unsigned(1)
        ),
        "C200" + "00010000600B00FF02" + "120001",
    ),
    (
        "event-notification-request with time",
        EventNotificationRequest(
            CosemDateTime.from_bytes(bytes.fromhex("07E6011801123A32FF800000")),
            AttributeDescriptor(1, Obis(0, 0, 96, 11, 0, 255), 2),
            Data.long_unsigned(1),
        ),
        "C2010C07E6011801123A32FF800000" + "00010000600B00FF02" + "120001",
    ),
    (
        "general-block-transfer",
        GeneralBlockTransfer(True, True, 0, 4, 0, b"\x01\x02\x03"),
        "E0C0" + "0004" + "0000" + "03010203",
    ),
    (
        "general-block-transfer window",
        GeneralBlockTransfer(False, False, 1, 2, 1, b""),
        "E001" + "0002" + "0001" + "00",
    ),
]


@pytest.mark.parametrize(("apdu", "hex_"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_constructed_examples(apdu: Any, hex_: str) -> None:
    raw = bytes.fromhex(hex_)
    assert apdu.to_bytes().hex().upper() == raw.hex().upper()
    assert decode_apdu(raw) == apdu
    assert type(apdu).from_bytes(raw) == apdu
    produced = apdu.to_json()
    json.dumps(produced)
    assert isinstance(produced["type"], str)


def test_selective_access_json() -> None:
    produced = GetRequestNormal(0xC1, LOAD_PROFILE, RANGE_2017).to_json()
    assert produced["access_selection"]["selector"] == 1
    assert produced["access_selection"]["parameters"]["type"] == "structure"
    assert produced["obis"] == "1.0.99.1.0.255"


def test_result_names_in_json() -> None:
    assert (
        GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED).to_json()[
            "data_access_result_name"
        ]
        == "object-undefined"
    )
    assert SetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED).to_json() == {
        "type": "set-response-normal",
        "invoke_id_and_priority": 0xC1,
        "invoke_id": 1,
        "confirmed": True,
        "high_priority": True,
        "result": 3,
        "result_name": "read-write-denied",
    }
    assert (
        ActionResponseNormal(0xC1, ActionResult.LONG_ACTION_ABORTED, None).to_json()[
            "action_result_name"
        ]
        == "long-action-aborted"
    )
    exception = ExceptionResponse(1, 6, 7).to_json()
    assert exception["state_error_name"] == "service-not-allowed"
    assert exception["service_error_name"] == "invocation-counter-error"
    assert exception["invocation_counter"] == 7
    error = ConfirmedServiceError(1, 6, 1).to_json()
    assert (error["service"], error["error_class"], error["error"]) == (1, 6, 1)
    assert error["error_name"] == "dlms-version-too-low"


def test_unknown_result_codes_still_decode() -> None:
    """A meter's out-of-table code is reported, not turned into a decode failure."""
    response = decode_apdu(bytes.fromhex("C401C10107"))
    assert isinstance(response, GetResponseNormal)
    assert response.result == 7
    assert isinstance(response.result, DataAccessResult)
    assert response.to_json()["data_access_result_name"] == "unknown-7"
    assert response.to_bytes() == bytes.fromhex("C401C10107")
    action = decode_apdu(bytes.fromhex("C701C1FE00"))
    assert isinstance(action, ActionResponseNormal)
    assert int(action.result) == 254 and action.result is not ActionResult.SUCCESS


def test_invoke_id_and_priority() -> None:
    assert invoke_id_and_priority(1) == 0xC1
    assert invoke_id_and_priority(1, confirmed=False) == 0x81
    assert invoke_id_and_priority(0, high_priority=False) == 0x40
    assert invoke_id_and_priority(15, False, False) == 0x0F
    with pytest.raises(ValueError):
        invoke_id_and_priority(16)


def test_data_notification_json_bits() -> None:
    produced = DataNotification(0xC0000005 | 1 << 28, None, Data.octet_string(b"ab")).to_json()
    assert produced["invoke_id"] == 5
    assert produced["confirmed"] and produced["high_priority"] and produced["self_descriptive"]
    assert not produced["break_on_error"]
    assert produced["body_type"] == "octet-string" and produced["body_length"] == 2
    assert produced["date_time_hex"] is None


def test_exception_response_needs_counter_for_counter_error() -> None:
    with pytest.raises(ValueError):
        ExceptionResponse(1, 6, None).to_bytes()


# -- GBT reassembler rules ---------------------------------------------------------------------
def _gbt(number: int, data: bytes, last: bool = False) -> GeneralBlockTransfer:
    return GeneralBlockTransfer(last, True, 0, number, 0, data)


def test_gbt_single_block_message() -> None:
    assert GbtReassembler().feed(_gbt(1, b"\x0f\x01", last=True)) == b"\x0f\x01"


def test_gbt_gap_is_an_error_and_resets() -> None:
    reassembler = GbtReassembler()
    reassembler.feed(_gbt(1, b"a"))
    with pytest.raises(DecodeError):
        reassembler.feed(_gbt(3, b"c"))
    assert not reassembler.in_progress
    with pytest.raises(DecodeError):
        reassembler.feed(_gbt(2, b"b"))  # no message in progress any more
    assert reassembler.feed(_gbt(1, b"x", last=True)) == b"x"


def test_gbt_block_without_block_1_is_an_error() -> None:
    with pytest.raises(DecodeError):
        GbtReassembler().feed(_gbt(2, b"b", last=True))
    with pytest.raises(DecodeError):
        GbtReassembler().feed(_gbt(0, b"", last=True))


def test_gbt_repeated_block_is_ignored() -> None:
    reassembler = GbtReassembler()
    reassembler.feed(_gbt(1, b"a"))
    reassembler.feed(_gbt(2, b"b"))
    assert reassembler.feed(_gbt(2, b"b")) is None
    assert reassembler.feed(_gbt(3, b"c", last=True)) == b"abc"


def test_gbt_total_size_is_bounded() -> None:
    reassembler = GbtReassembler(max_size=10)
    reassembler.feed(_gbt(1, b"x" * 6))
    with pytest.raises(DecodeError):
        reassembler.feed(_gbt(2, b"y" * 5, last=True))
    assert not reassembler.in_progress
    assert GbtReassembler().max_size == 1 << 20


def test_gbt_window_out_of_range_is_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        GeneralBlockTransfer(False, False, 64, 1, 0, b"").to_bytes()


# -- hypothesis round trips --------------------------------------------------------------------
_bool = st.booleans()
_get_result = data_values | data_access_results
_return_data = st.none() | data_values | data_access_results


@st.composite
def _exception_responses(draw: st.DrawFn) -> ExceptionResponse:
    service = draw(u8)
    counter = draw(u32) if service == 6 else None
    return ExceptionResponse(draw(u8), service, counter)


_attr_list = st.lists(st.tuples(attribute_descriptors, optional_access), max_size=4).map(tuple)
_methods = st.lists(method_descriptors, max_size=4).map(tuple)
_values = st.lists(data_values, max_size=4).map(tuple)

STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    GetRequestNormal: st.builds(GetRequestNormal, iips, attribute_descriptors, optional_access),
    GetRequestNext: st.builds(GetRequestNext, iips, u32),
    GetRequestWithList: st.builds(GetRequestWithList, iips, _attr_list),
    GetResponseNormal: st.builds(GetResponseNormal, iips, _get_result),
    GetResponseWithBlock: st.builds(
        GetResponseWithBlock, iips, _bool, u32, raw_blocks | data_access_results
    ),
    GetResponseWithList: st.builds(
        GetResponseWithList, iips, st.lists(_get_result, max_size=4).map(tuple)
    ),
    SetRequestNormal: st.builds(
        SetRequestNormal, iips, attribute_descriptors, optional_access, data_values
    ),
    SetRequestWithFirstBlock: st.builds(
        SetRequestWithFirstBlock,
        iips,
        attribute_descriptors,
        optional_access,
        _bool,
        u32,
        raw_blocks,
    ),
    SetRequestWithBlock: st.builds(SetRequestWithBlock, iips, _bool, u32, raw_blocks),
    SetRequestWithList: st.builds(SetRequestWithList, iips, _attr_list, _values),
    SetRequestWithListAndFirstBlock: st.builds(
        SetRequestWithListAndFirstBlock, iips, _attr_list, _bool, u32, raw_blocks
    ),
    SetResponseNormal: st.builds(SetResponseNormal, iips, data_access_results),
    SetResponseDataBlock: st.builds(SetResponseDataBlock, iips, u32),
    SetResponseLastDataBlock: st.builds(SetResponseLastDataBlock, iips, data_access_results, u32),
    SetResponseLastDataBlockWithList: st.builds(
        SetResponseLastDataBlockWithList,
        iips,
        st.lists(data_access_results, max_size=5).map(tuple),
        u32,
    ),
    SetResponseWithList: st.builds(
        SetResponseWithList, iips, st.lists(data_access_results, max_size=5).map(tuple)
    ),
    ActionRequestNormal: st.builds(
        ActionRequestNormal, iips, method_descriptors, st.none() | data_values
    ),
    ActionRequestNextPBlock: st.builds(ActionRequestNextPBlock, iips, u32),
    ActionRequestWithList: st.builds(ActionRequestWithList, iips, _methods, _values),
    ActionRequestWithFirstPBlock: st.builds(
        ActionRequestWithFirstPBlock, iips, method_descriptors, _bool, u32, raw_blocks
    ),
    ActionRequestWithListAndFirstPBlock: st.builds(
        ActionRequestWithListAndFirstPBlock, iips, _methods, _bool, u32, raw_blocks
    ),
    ActionRequestWithPBlock: st.builds(ActionRequestWithPBlock, iips, _bool, u32, raw_blocks),
    ActionResponseNormal: st.builds(ActionResponseNormal, iips, action_results, _return_data),
    ActionResponseWithPBlock: st.builds(ActionResponseWithPBlock, iips, _bool, u32, raw_blocks),
    ActionResponseWithList: st.builds(
        ActionResponseWithList,
        iips,
        st.lists(st.tuples(action_results, _return_data), max_size=4).map(tuple),
    ),
    ActionResponseNextPBlock: st.builds(ActionResponseNextPBlock, iips, u32),
    ExceptionResponse: _exception_responses(),
    ConfirmedServiceError: st.builds(ConfirmedServiceError, u8, u8, u8),
    DataNotification: st.builds(DataNotification, u32, st.none() | date_times, data_values),
    EventNotificationRequest: st.builds(
        EventNotificationRequest, st.none() | date_times, attribute_descriptors, data_values
    ),
    GeneralBlockTransfer: st.builds(
        GeneralBlockTransfer, _bool, _bool, st.integers(0, 63), u16, u16, raw_blocks
    ),
}


def test_every_example_class_has_a_strategy() -> None:
    assert {type(e[1]) for e in EXAMPLES} == set(STRATEGIES)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    apdu = data.draw(STRATEGIES[cls])
    raw = apdu.to_bytes()
    assert cls.from_bytes(raw) == apdu  # type: ignore[attr-defined]
    assert decode_apdu(raw) == apdu
    json.dumps(apdu.to_json())
    # Every strict prefix is refused (no silent partial decode).
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_apdu(raw[:cut])
    with pytest.raises(DecodeError):
        decode_apdu(raw + b"\x00")  # trailing bytes


# -- cross-check with dlms-cosem 21.3.2 --------------------------------------------------------
def _dc_iip(value: Any) -> int:
    return int.from_bytes(value.to_bytes(), "big")


def _dc_interfaces() -> list[int]:
    from dlms_cosem import enumerations

    return sorted(int(i) for i in enumerations.CosemInterface)


def _dc_obis(obis: Obis) -> Any:
    from dlms_cosem.cosem.obis import Obis as DcObis

    return DcObis(obis.a, obis.b, obis.c, obis.d, obis.e, obis.f)


def _same_obis(theirs: Any, ours: Obis) -> bool:
    return bytes(theirs.to_bytes()) == ours.to_bytes()


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(_dc_interfaces()),
    st.builds(Obis, *(st.integers(0, 255) for _ in range(6))),
    st.integers(0, 127),
    st.integers(0, 15),
    st.booleans(),
    st.booleans(),
)
def test_get_request_normal_matches_dlms_cosem(
    class_id: int, obis: Obis, attribute: int, invoke_id: int, confirmed: bool, high: bool
) -> None:
    from dlms_cosem import cosem, enumerations
    from dlms_cosem.protocol.xdlms import get
    from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority

    iip = invoke_id_and_priority(invoke_id, confirmed, high)
    ours = GetRequestNormal(iip, AttributeDescriptor(class_id, obis, attribute))
    theirs = get.GetRequestNormal.from_bytes(ours.to_bytes())
    assert int(theirs.cosem_attribute.interface) == class_id
    assert _same_obis(theirs.cosem_attribute.instance, obis)
    assert theirs.cosem_attribute.attribute == attribute
    assert theirs.invoke_id_and_priority.invoke_id == invoke_id
    assert theirs.invoke_id_and_priority.confirmed == confirmed
    assert theirs.invoke_id_and_priority.high_priority == high
    assert theirs.access_selection is None
    built = get.GetRequestNormal(
        cosem.CosemAttribute(enumerations.CosemInterface(class_id), _dc_obis(obis), attribute),
        InvokeIdAndPriority(invoke_id, confirmed, high),
    )
    assert GetRequestNormal.from_bytes(built.to_bytes()) == ours


def test_selective_access_matches_dlms_cosem() -> None:
    from dlms_cosem.protocol.xdlms import get

    raw = GetRequestNormal(0xC1, LOAD_PROFILE, RANGE_2017).to_bytes()
    theirs = get.GetRequestNormal.from_bytes(raw)
    descriptor = theirs.access_selection
    assert type(descriptor).__name__ == "RangeDescriptor"
    restricting = descriptor.restricting_object
    assert int(restricting.cosem_attribute.interface) == 8
    assert _same_obis(restricting.cosem_attribute.instance, Obis(0, 0, 1, 0, 0, 255))
    assert restricting.cosem_attribute.attribute == 2 and restricting.data_index == 0
    assert (descriptor.from_value.year, descriptor.from_value.hour) == (2017, 0)
    assert (descriptor.to_value.day, descriptor.to_value.hour) == (1, 1)
    assert descriptor.selected_values is None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=400), st.booleans())
def test_block_transfer_matches_dlms_cosem(number: int, raw: bytes, last: bool) -> None:
    from dlms_cosem.protocol.xdlms import get

    ours = GetResponseWithBlock(0xC1, last, number, raw)
    cls = get.GetResponseLastBlock if last else get.GetResponseWithBlock
    theirs = cls.from_bytes(ours.to_bytes())
    assert (theirs.data, theirs.block_number) == (raw, number)
    assert GetResponseWithBlock.from_bytes(theirs.to_bytes()) == ours
    request = GetRequestNext(0xC1, number)
    assert get.GetRequestNext.from_bytes(request.to_bytes()).block_number == number
    assert (
        GetRequestNext.from_bytes(
            get.GetRequestNext(number, get.InvokeIdAndPriority(1, True, True)).to_bytes()
        )
        == request
    )


def test_responses_match_dlms_cosem() -> None:
    from dlms_cosem import enumerations
    from dlms_cosem.protocol.xdlms import action, get, set
    from dlms_cosem.protocol.xdlms.confirmed_service_error import ConfirmedServiceError as DcCse
    from dlms_cosem.protocol.xdlms.exception_response import ExceptionResponse as DcExc

    # GET response carrying a data-access-result
    ours_error = GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED)
    theirs_error = get.GetResponseNormalWithError.from_bytes(ours_error.to_bytes())
    assert int(theirs_error.error) == 4
    assert GetResponseNormal.from_bytes(theirs_error.to_bytes()) == ours_error
    # GET response carrying data: their parser keeps the Data bytes, which must be ours
    value = Data.structure([Data.integer(-3), Data.enum(30)])
    theirs_data = get.GetResponseNormal.from_bytes(GetResponseNormal(0xC1, value).to_bytes())
    assert theirs_data.data == encode_data(value)
    # GET with-list
    ours_list = GetResponseWithList(
        0xC1, (Data.double_long_unsigned(5009), DataAccessResult.READ_WRITE_DENIED)
    )
    theirs_list = get.GetResponseWithList.from_bytes(ours_list.to_bytes())
    assert theirs_list.result == [5009, enumerations.DataAccessResult.READ_WRITE_DENIED]
    # SET
    ours_set = SetRequestNormal(0xC1, CLOCK_TIME, None, Data.octet_string(bytes(12)))
    theirs_set = set.SetRequestNormal.from_bytes(ours_set.to_bytes())
    assert theirs_set.data == encode_data(ours_set.value)
    assert SetRequestNormal.from_bytes(theirs_set.to_bytes()) == ours_set
    ours_set_rsp = SetResponseNormal(0xC1, DataAccessResult.TEMPORARY_FAILURE)
    theirs_set_rsp = set.SetResponseNormal.from_bytes(ours_set_rsp.to_bytes())
    assert int(theirs_set_rsp.result) == 2
    assert SetResponseNormal.from_bytes(theirs_set_rsp.to_bytes()) == ours_set_rsp
    # ACTION
    ours_action = ActionRequestNormal(0xC1, DISCONNECT, Data.integer(0))
    theirs_action = action.ActionRequestNormal.from_bytes(ours_action.to_bytes())
    assert int(theirs_action.cosem_method.interface) == 70
    assert theirs_action.cosem_method.method == 1
    assert bytes(theirs_action.data) == b"\x0f\x00"
    assert ActionRequestNormal.from_bytes(theirs_action.to_bytes()) == ours_action
    for ours_rsp, their_cls in (
        (ActionResponseNormal(0xC0, ActionResult.SUCCESS, None), action.ActionResponseNormal),
        (
            ActionResponseNormal(0xC0, ActionResult.SUCCESS, Data.unsigned(3)),
            action.ActionResponseNormalWithData,
        ),
        (
            ActionResponseNormal(0xC0, ActionResult.SUCCESS, DataAccessResult.OTHER_REASON),
            action.ActionResponseNormalWithError,
        ),
    ):
        theirs_rsp = their_cls.from_bytes(ours_rsp.to_bytes())
        assert int(theirs_rsp.status) == 0
        assert ActionResponseNormal.from_bytes(theirs_rsp.to_bytes()) == ours_rsp
    # exception response and confirmed-service-error
    theirs_exc = DcExc.from_bytes(ExceptionResponse(1, 2).to_bytes())
    assert (int(theirs_exc.state_error), int(theirs_exc.service_error)) == (1, 2)
    theirs_cse = DcCse.from_bytes(ConfirmedServiceError(1, 6, 1).to_bytes())
    assert type(theirs_cse.error).__name__ == "InitiateError" and int(theirs_cse.error) == 1
    assert ConfirmedServiceError.from_bytes(theirs_cse.to_bytes()) == ConfirmedServiceError(1, 6, 1)


@pytest.mark.parametrize("vector_id", ["v5-kamstrup-push", "v6-kaifa-tirol-push"])
def test_data_notification_matches_dlms_cosem(vector_id: str) -> None:
    from dlms_cosem.protocol.xdlms.data_notification import DataNotification as DcNotification

    raw = _apdu_bytes(vector_by_id(vector_id))
    ours = DataNotification.from_bytes(raw)
    theirs = DcNotification.from_bytes(raw)
    assert theirs.long_invoke_id_and_priority.long_invoke_id == ours.invoke_id
    assert theirs.body == encode_data(ours.body)
    assert ours.date_time is not None
    assert theirs.date_time.replace(tzinfo=None) == ours.date_time.local_datetime()


# -- ACSE dispatch (decode_apdu hands 0x60-0x63 to cosem_objects.acse) -------------------------
def _is_acse(vector: dict[str, Any]) -> bool:
    apdu = vector["expect"].get("apdu")
    return isinstance(apdu, dict) and apdu.get("type") in ACSE_TYPES


@pytest.mark.parametrize("vector", vector_params(predicate=_is_acse))
def test_acse_vectors_dispatch_to_acse(vector: dict[str, Any]) -> None:
    from cosem_objects import acse

    raw = bytes.fromhex(vector["expect"].get("apdu_hex") or vector["hex"])
    apdu = decode_apdu(raw)
    assert isinstance(apdu, acse.AARQ | acse.AARE)
    assert apdu.to_json()["type"] == vector["expect"]["apdu"]["type"]
    assert apdu.to_bytes() == raw


def test_release_apdus_dispatch_to_acse() -> None:
    from cosem_objects import acse

    for release in (acse.RLRQ(), acse.RLRE(), acse.RLRQ(reason=None)):
        assert decode_apdu(release.to_bytes()) == release
    with pytest.raises(DecodeError):
        decode_apdu(b"\x62")
