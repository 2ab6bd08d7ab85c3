"""xDLMS GET, SET and ACTION requests of one established association, as a meter serves them.

Every request is checked against the negotiated conformance; the COSEM access itself is
simulators/objects/services.py. What makes this more than a dispatch is block transfer both
ways: a GET reply longer than the client may receive goes out in datablocks (GET next pulls the
rest), and a SET or ACTION value may arrive in blocks that are gathered here until the last one.
The association (simulators/association.py) creates one of these once the AARQ is accepted and
drops it on release, so blocks never outlive their association."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.acse import Conformance
from cosem_objects.apdu.action import (
    ActionRequestNextPBlock,
    ActionRequestNormal,
    ActionRequestWithFirstPBlock,
    ActionRequestWithList,
    ActionRequestWithPBlock,
    ActionResponseNextPBlock,
    ActionResponseNormal,
    ActionResponseWithList,
)
from cosem_objects.apdu.common import (
    ActionResult,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    SelectiveAccess,
)
from cosem_objects.apdu.errors import ExceptionResponse, ServiceError, StateError
from cosem_objects.apdu.get import (
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithBlock,
    GetResponseWithList,
)
from cosem_objects.apdu.set import (
    SetRequestNormal,
    SetRequestWithBlock,
    SetRequestWithFirstBlock,
    SetRequestWithList,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    SetResponseWithList,
)
from cosem_objects.axdr import decode_data_all, encode_data
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError
from simulators.meter import SimMeter
from simulators.objects import services
from simulators.objects.model import AssociationContext

MAX_BLOCK_TRANSFER_BYTES = 64 * 1024

NOT_ALLOWED = StateError.SERVICE_NOT_ALLOWED
UNKNOWN = StateError.SERVICE_UNKNOWN


def exception_response(
    state_error: int, service_error: int, invocation_counter: int | None = None
) -> bytes:
    return ExceptionResponse(state_error, service_error, invocation_counter).to_bytes()


@dataclass(slots=True)
class _Upload:
    """A SET or ACTION whose value arrives in blocks."""

    kind: str  # "set" | "action"
    iip: int
    descriptor: AttributeDescriptor | MethodDescriptor
    access: SelectiveAccess | None
    block_number: int
    data: bytearray


class XdlmsServer:
    """The data services of one association with `meter`, within what it negotiated.

    `send_limit` is the longest reply APDU (before ciphering) the client may receive."""

    def __init__(
        self,
        meter: SimMeter,
        context: AssociationContext,
        conformance: Conformance,
        send_limit: int,
    ) -> None:
        self.meter = meter
        self.context = context
        self._conformance = conformance
        self._send_limit = send_limit
        self._blocks: list[bytes] = []
        self._block_number = 0
        self._upload: _Upload | None = None

    def handle(self, request: object) -> bytes:
        """The reply to one decoded request."""
        if isinstance(request, GetRequestNormal | GetRequestNext | GetRequestWithList):
            return self._get(request)
        if isinstance(
            request,
            SetRequestNormal | SetRequestWithFirstBlock | SetRequestWithBlock | SetRequestWithList,
        ):
            return self._set(request)
        if isinstance(
            request,
            ActionRequestNormal
            | ActionRequestWithFirstPBlock
            | ActionRequestWithPBlock
            | ActionRequestNextPBlock
            | ActionRequestWithList,
        ):
            return self._action(request)
        return exception_response(UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)

    def _allowed(self, flag: Conformance) -> bool:
        return bool(self._conformance & flag)

    # GET ------------------------------------------------------------------------------------
    def _get(self, request: GetRequestNormal | GetRequestNext | GetRequestWithList) -> bytes:
        if not self._allowed(Conformance.GET):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        iip = request.invoke_id_and_priority
        if isinstance(request, GetRequestNext):
            return self._get_next(request)
        self._abort_blocks()
        if isinstance(request, GetRequestNormal):
            if request.access is not None and not self._allowed(Conformance.SELECTIVE_ACCESS):
                return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            result = self._read(request.attribute, request.access)
            response = GetResponseNormal(iip, result).to_bytes()
            if len(response) <= self._send_limit:
                return response
            assert isinstance(result, Data)
            return self._start_blocks(iip, encode_data(result))
        if not self._allowed(Conformance.MULTIPLE_REFERENCES):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if any(access is not None for _d, access in request.attributes) and not self._allowed(
            Conformance.SELECTIVE_ACCESS
        ):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        results = tuple(self._read(d, access) for d, access in request.attributes)
        response = GetResponseWithList(iip, results).to_bytes()
        if len(response) <= self._send_limit:
            return response
        if not self._allowed(Conformance.BLOCK_TRANSFER_GET):
            # Too long for one PDU and no blocks: every attribute is refused.
            refused = (DataAccessResult.OTHER_REASON,) * len(results)
            return GetResponseWithList(iip, refused).to_bytes()
        # The with-list body (count and results) is what travels in the blocks.
        return self._start_blocks(iip, response[3:])

    def _read(
        self, descriptor: AttributeDescriptor, access: SelectiveAccess | None
    ) -> Data | DataAccessResult:
        return services.get_attribute(
            self.meter,
            descriptor.class_id,
            descriptor.obis,
            descriptor.attribute,
            access,
            context=self.context,
        )

    def _start_blocks(self, iip: int, raw: bytes) -> bytes:
        if not self._allowed(Conformance.BLOCK_TRANSFER_GET):
            return GetResponseNormal(iip, DataAccessResult.OTHER_REASON).to_bytes()
        chunk = max(self._send_limit - 12, 16)  # C4 02 iip last block(4) choice length(3)
        self._blocks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
        self._block_number = 0
        return self._next_block(iip)

    def _next_block(self, iip: int) -> bytes:
        block = self._blocks[self._block_number]
        self._block_number += 1
        last = self._block_number == len(self._blocks)
        response = GetResponseWithBlock(iip, last, self._block_number, block).to_bytes()
        if last:
            self._blocks = []
        return response

    def _get_next(self, request: GetRequestNext) -> bytes:
        iip = request.invoke_id_and_priority
        if not self._blocks:
            return GetResponseWithBlock(
                iip, True, request.block_number, DataAccessResult.NO_LONG_GET_IN_PROGRESS
            ).to_bytes()
        if request.block_number != self._block_number:
            self._abort_blocks()
            return GetResponseWithBlock(
                iip, True, request.block_number, DataAccessResult.DATA_BLOCK_NUMBER_INVALID
            ).to_bytes()
        return self._next_block(iip)

    def _abort_blocks(self) -> None:
        self._blocks = []
        self._block_number = 0

    # SET ------------------------------------------------------------------------------------
    def _set(
        self,
        request: SetRequestNormal
        | SetRequestWithFirstBlock
        | SetRequestWithBlock
        | SetRequestWithList,
    ) -> bytes:
        if not self._allowed(Conformance.SET):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        self._abort_blocks()
        iip = request.invoke_id_and_priority
        if isinstance(request, SetRequestNormal):
            self._upload = None
            result = self._write(request.attribute, request.access, request.value)
            return SetResponseNormal(iip, result).to_bytes()
        if isinstance(request, SetRequestWithList):
            self._upload = None
            if not self._allowed(Conformance.MULTIPLE_REFERENCES) or len(request.attributes) != len(
                request.values
            ):
                return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            results = tuple(
                self._write(descriptor, access, value)
                for (descriptor, access), value in zip(
                    request.attributes, request.values, strict=True
                )
            )
            return SetResponseWithList(iip, results).to_bytes()
        if not self._allowed(Conformance.BLOCK_TRANSFER_SET):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if isinstance(request, SetRequestWithFirstBlock):
            if request.block_number != 1:
                self._upload = None
                return SetResponseLastDataBlock(
                    iip, DataAccessResult.DATA_BLOCK_NUMBER_INVALID, request.block_number
                ).to_bytes()
            self._upload = _Upload(
                "set", iip, request.attribute, request.access, 1, bytearray(request.raw_data)
            )
        else:
            upload = self._upload
            if upload is None or upload.kind != "set":
                return SetResponseLastDataBlock(
                    iip, DataAccessResult.NO_LONG_SET_IN_PROGRESS, request.block_number
                ).to_bytes()
            if request.block_number != upload.block_number + 1:
                self._upload = None
                return SetResponseLastDataBlock(
                    iip, DataAccessResult.DATA_BLOCK_NUMBER_INVALID, request.block_number
                ).to_bytes()
            upload.block_number = request.block_number
            upload.data += request.raw_data
        upload = self._upload
        assert upload is not None
        if len(upload.data) > MAX_BLOCK_TRANSFER_BYTES:
            self._upload = None
            return SetResponseLastDataBlock(
                iip, DataAccessResult.LONG_SET_ABORTED, request.block_number
            ).to_bytes()
        if not request.last_block:
            return SetResponseDataBlock(iip, upload.block_number).to_bytes()
        self._upload = None
        try:
            value = decode_data_all(bytes(upload.data))
        except DecodeError:
            result = DataAccessResult.TYPE_UNMATCHED
        else:
            assert isinstance(upload.descriptor, AttributeDescriptor)
            result = self._write(upload.descriptor, upload.access, value)
        return SetResponseLastDataBlock(iip, result, upload.block_number).to_bytes()

    def _write(
        self, descriptor: AttributeDescriptor, access: SelectiveAccess | None, value: Data
    ) -> DataAccessResult:
        return services.set_attribute(
            self.meter,
            descriptor.class_id,
            descriptor.obis,
            descriptor.attribute,
            value,
            access,
            context=self.context,
        )

    # ACTION ---------------------------------------------------------------------------------
    def _action(
        self,
        request: ActionRequestNormal
        | ActionRequestWithFirstPBlock
        | ActionRequestWithPBlock
        | ActionRequestNextPBlock
        | ActionRequestWithList,
    ) -> bytes:
        if not self._allowed(Conformance.ACTION):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        self._abort_blocks()
        iip = request.invoke_id_and_priority
        if isinstance(request, ActionRequestNormal):
            self._upload = None
            return self._invoke(iip, request.method, request.parameters)
        if isinstance(request, ActionRequestWithList):
            self._upload = None
            if not self._allowed(Conformance.MULTIPLE_REFERENCES) or len(request.methods) != len(
                request.parameters
            ):
                return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            outcomes = tuple(
                services.invoke_method(
                    self.meter, m.class_id, m.obis, m.method, p, context=self.context
                )
                for m, p in zip(request.methods, request.parameters, strict=True)
            )
            return ActionResponseWithList(iip, outcomes).to_bytes()
        if isinstance(request, ActionRequestNextPBlock):
            # The meter never answers in parameter blocks, so there is nothing to continue.
            return ActionResponseNormal(
                iip, ActionResult.NO_LONG_ACTION_IN_PROGRESS, None
            ).to_bytes()
        if not self._allowed(Conformance.BLOCK_TRANSFER_ACTION):
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if isinstance(request, ActionRequestWithFirstPBlock):
            if request.block_number != 1:
                self._upload = None
                return ActionResponseNormal(iip, ActionResult.LONG_ACTION_ABORTED, None).to_bytes()
            self._upload = _Upload(
                "action", iip, request.method, None, 1, bytearray(request.raw_data)
            )
        else:
            upload = self._upload
            if upload is None or upload.kind != "action":
                return ActionResponseNormal(
                    iip, ActionResult.NO_LONG_ACTION_IN_PROGRESS, None
                ).to_bytes()
            if request.block_number != upload.block_number + 1:
                self._upload = None
                return ActionResponseNormal(iip, ActionResult.LONG_ACTION_ABORTED, None).to_bytes()
            upload.block_number = request.block_number
            upload.data += request.raw_data
        upload = self._upload
        assert upload is not None
        if len(upload.data) > MAX_BLOCK_TRANSFER_BYTES:
            self._upload = None
            return ActionResponseNormal(iip, ActionResult.LONG_ACTION_ABORTED, None).to_bytes()
        if not request.last_block:
            return ActionResponseNextPBlock(iip, upload.block_number).to_bytes()
        self._upload = None
        try:
            parameters = decode_data_all(bytes(upload.data))
        except DecodeError:
            return ActionResponseNormal(iip, ActionResult.TYPE_UNMATCHED, None).to_bytes()
        assert isinstance(upload.descriptor, MethodDescriptor)
        return self._invoke(iip, upload.descriptor, parameters)

    def _invoke(self, iip: int, method: MethodDescriptor, parameters: Data | None) -> bytes:
        result, returned = services.invoke_method(
            self.meter,
            method.class_id,
            method.obis,
            method.method,
            parameters,
            context=self.context,
        )
        return ActionResponseNormal(iip, result, returned).to_bytes()
