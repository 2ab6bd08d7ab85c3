"""xDLMS service APDUs (GET, SET, ACTION, notifications, errors, general-block-transfer).
`cosem_objects.decode.decode_apdu` decodes any of them, and the ACSE APDUs, by tag.

Every APDU is a frozen dataclass with to_bytes(), from_bytes() and to_json() (the shape of the
test vectors' expect["apdu"]). Decoding untrusted bytes raises only DecodeError."""

from __future__ import annotations

from cosem_objects.apdu.action import (
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
)
from cosem_objects.apdu.common import (
    ActionResult,
    Apdu,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    SelectiveAccess,
    invoke_id_and_priority,
)
from cosem_objects.apdu.errors import ConfirmedServiceError, ExceptionResponse
from cosem_objects.apdu.gbt import GbtReassembler, GeneralBlockTransfer
from cosem_objects.apdu.get import (
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithBlock,
    GetResponseWithList,
)
from cosem_objects.apdu.notifications import DataNotification, EventNotificationRequest
from cosem_objects.apdu.set import (
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

__all__ = [
    "ActionRequestNextPBlock",
    "ActionRequestNormal",
    "ActionRequestWithFirstPBlock",
    "ActionRequestWithList",
    "ActionRequestWithListAndFirstPBlock",
    "ActionRequestWithPBlock",
    "ActionResponseNextPBlock",
    "ActionResponseNormal",
    "ActionResponseWithList",
    "ActionResponseWithPBlock",
    "ActionResult",
    "Apdu",
    "AttributeDescriptor",
    "ConfirmedServiceError",
    "DataAccessResult",
    "DataNotification",
    "EventNotificationRequest",
    "ExceptionResponse",
    "GbtReassembler",
    "GeneralBlockTransfer",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithBlock",
    "GetResponseWithList",
    "MethodDescriptor",
    "SelectiveAccess",
    "SetRequestNormal",
    "SetRequestWithBlock",
    "SetRequestWithFirstBlock",
    "SetRequestWithList",
    "SetRequestWithListAndFirstBlock",
    "SetResponseDataBlock",
    "SetResponseLastDataBlock",
    "SetResponseLastDataBlockWithList",
    "SetResponseNormal",
    "SetResponseWithList",
    "invoke_id_and_priority",
]
