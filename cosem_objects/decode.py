"""Any plain APDU, xDLMS or ACSE, from its tag (and CHOICE byte).

It sits beside `apdu/` and `acse/` rather than in either: it needs both, and `acse/` needs
`apdu.errors` (an AARE may carry a ConfirmedServiceError), so a dispatcher inside `apdu/` would
import `acse` while `acse` imports `apdu`."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from cosem_objects.acse import decode_acse
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
    Apdu,
    ConfirmedServiceError,
    DataNotification,
    EventNotificationRequest,
    ExceptionResponse,
    GeneralBlockTransfer,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithBlock,
    GetResponseWithList,
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
)
from cosem_objects.errors import DecodeError

__all__ = ["decode_apdu"]

Decoder = Callable[[bytes], Any]

# Service APDUs whose second byte is the CHOICE of the service variant: (tag << 8 | choice).
_BY_CHOICE: dict[int, Decoder] = {
    0xC001: GetRequestNormal.from_bytes,
    0xC002: GetRequestNext.from_bytes,
    0xC003: GetRequestWithList.from_bytes,
    0xC401: GetResponseNormal.from_bytes,
    0xC402: GetResponseWithBlock.from_bytes,
    0xC403: GetResponseWithList.from_bytes,
    0xC101: SetRequestNormal.from_bytes,
    0xC102: SetRequestWithFirstBlock.from_bytes,
    0xC103: SetRequestWithBlock.from_bytes,
    0xC104: SetRequestWithList.from_bytes,
    0xC105: SetRequestWithListAndFirstBlock.from_bytes,
    0xC501: SetResponseNormal.from_bytes,
    0xC502: SetResponseDataBlock.from_bytes,
    0xC503: SetResponseLastDataBlock.from_bytes,
    0xC504: SetResponseLastDataBlockWithList.from_bytes,
    0xC505: SetResponseWithList.from_bytes,
    0xC301: ActionRequestNormal.from_bytes,
    0xC302: ActionRequestNextPBlock.from_bytes,
    0xC303: ActionRequestWithList.from_bytes,
    0xC304: ActionRequestWithFirstPBlock.from_bytes,
    0xC305: ActionRequestWithListAndFirstPBlock.from_bytes,
    0xC306: ActionRequestWithPBlock.from_bytes,
    0xC701: ActionResponseNormal.from_bytes,
    0xC702: ActionResponseWithPBlock.from_bytes,
    0xC703: ActionResponseWithList.from_bytes,
    0xC704: ActionResponseNextPBlock.from_bytes,
}
_CHOICE_TAGS = frozenset(key >> 8 for key in _BY_CHOICE)

_BY_TAG: dict[int, Decoder] = {
    0x0F: DataNotification.from_bytes,
    0xC2: EventNotificationRequest.from_bytes,
    0xD8: ExceptionResponse.from_bytes,
    0x0E: ConfirmedServiceError.from_bytes,
    0xE0: GeneralBlockTransfer.from_bytes,
}
_ACSE_TAGS = frozenset((0x60, 0x61, 0x62, 0x63))


def decode_apdu(buf: bytes) -> Apdu:
    """Any plain APDU by its tag (and CHOICE byte); DecodeError for anything else.

    Ciphered APDUs (glo-/ded-/general-glo-ciphering) are not decoded here: unwrap them with
    cosem_objects.security first."""
    if not buf:
        raise DecodeError("empty APDU")
    tag = buf[0]
    try:
        if tag in _CHOICE_TAGS:
            if len(buf) < 2:
                raise DecodeError(f"truncated APDU: tag {tag:02X} without its CHOICE byte")
            decoder = _BY_CHOICE.get(tag << 8 | buf[1])
            if decoder is None:
                raise DecodeError(f"unknown variant {buf[1]} of APDU tag {tag:02X}")
            result: Apdu = decoder(buf)
            return result
        simple = _BY_TAG.get(tag)
        if simple is not None:
            result = simple(buf)
            return result
        if tag in _ACSE_TAGS:
            result = decode_acse(buf)
            return result
    except (IndexError, ValueError, struct.error, OverflowError) as exc:
        # Defence in depth: the decoders check every bound themselves (and the fuzz tests
        # call them directly), but a slip must still surface as a protocol error.
        raise DecodeError(f"malformed APDU {tag:02X}: {exc}") from None
    raise DecodeError(f"unknown APDU tag {tag:02X}")
