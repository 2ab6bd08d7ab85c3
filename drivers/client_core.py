"""Sans-IO client side of one DLMS/COSEM association (h11 style: APDU bytes in, results out).

The session (drivers/session.py) owns the I/O and the invocation-counter store; this module owns
the request rules: invoke ids, HLS pass 3, the negotiated conformance and PDU size, GET/SET/ACTION
block transfer and general-block-transfer. Establishing, ciphering and releasing the association
is drivers/client_association.py; which request awaits its reply is the request machine of
drivers/client_state.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cosem_objects.acse import Conformance
from cosem_objects.apdu.action import (
    ActionRequestNextPBlock,
    ActionRequestNormal,
    ActionRequestWithFirstPBlock,
    ActionRequestWithPBlock,
    ActionResponseNextPBlock,
    ActionResponseNormal,
    ActionResponseWithPBlock,
)
from cosem_objects.apdu.common import (
    ActionResult,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    SelectiveAccess,
    invoke_id_and_priority,
)
from cosem_objects.apdu.errors import ConfirmedServiceError, ExceptionResponse, ServiceError
from cosem_objects.apdu.gbt import GbtReassembler, GeneralBlockTransfer
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
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
)
from cosem_objects.axdr import decode_data, decode_data_all, decode_length, encode_data
from cosem_objects.classes import AssociationLN, Obises
from cosem_objects.data import Data
from cosem_objects.decode import decode_apdu
from cosem_objects.errors import DecodeError
from drivers.client_association import ClientAssociation
from drivers.client_events import AttributeResult, Continue, Done, KeepReading, Outcome
from drivers.client_settings import ClientSettings
from drivers.client_state import (
    REQUEST_TRANSITIONS,
    AssociationEvent,
    Machine,
    Pending,
    RequestEvent,
)
from drivers.dlms_errors import (
    ActionFailed,
    DataAccessFailed,
    InvocationCounterRefused,
    ServiceRejected,
    UnexpectedResponse,
)

_RE = RequestEvent


class ClientConnection(ClientAssociation):
    """One association and its requests. Not thread-safe; one request at a time."""

    def __init__(self, settings: ClientSettings) -> None:
        super().__init__(settings)
        self._request = Machine("request", REQUEST_TRANSITIONS, Pending.NONE)
        self._invoke_id = 0
        self._pending_iip = 0
        self._pending_what = ""
        self._pending_count = 0
        self._block_number = 0
        self._blocks = bytearray()
        self._outgoing_blocks: list[bytes] = []
        self._gbt = GbtReassembler()
        self._gbt_sent = 0

    def hls_reply(self, invocation_counter: int) -> bytes:
        """HLS pass 3: reply_to_HLS_authentication with f(StoC) (plain; the session ciphers)."""
        reply = self._hls_reply_value(invocation_counter)
        request = ActionRequestNormal(
            self._next_iip(),
            MethodDescriptor(
                AssociationLN.CLASS_ID,
                Obises.CURRENT_ASSOCIATION,
                AssociationLN.REPLY_TO_HLS_AUTHENTICATION,
            ),
            reply,
        )
        self._start(_RE.SEND_HLS_REPLY, "HLS authentication")
        return request.to_bytes()

    # -- requests ------------------------------------------------------------------------
    def get(self, items: Sequence[tuple[AttributeDescriptor, SelectiveAccess | None]]) -> bytes:
        """GET one attribute (normal) or several (with-list, when the meter offers it)."""
        self._association.go(AssociationEvent.SEND_REQUEST)
        if not items:
            raise ValueError("nothing to get")
        for _descriptor, access in items:
            if (
                access is not None
                and not self.negotiated_conformance & Conformance.SELECTIVE_ACCESS
            ):
                raise ServiceRejected("the meter did not grant selective access")
        self._blocks.clear()
        self._block_number = 0
        iip = self._next_iip()
        if len(items) == 1:
            descriptor, access = items[0]
            self._start(_RE.SEND_GET, f"GET {descriptor.obis} attribute {descriptor.attribute}")
            return GetRequestNormal(iip, descriptor, access).to_bytes()
        if not self.supports_with_list:
            raise ServiceRejected("the meter did not grant multiple references (with-list)")
        self._start(_RE.SEND_GET_LIST, "GET with-list")
        self._pending_count = len(items)
        return GetRequestWithList(iip, tuple(items)).to_bytes()

    @property
    def supports_with_list(self) -> bool:
        return bool(self.negotiated_conformance & Conformance.MULTIPLE_REFERENCES)

    def set(
        self, descriptor: AttributeDescriptor, value: Data, access: SelectiveAccess | None = None
    ) -> bytes:
        self._association.go(AssociationEvent.SEND_REQUEST)
        iip = self._next_iip()
        self._start(_RE.SEND_SET, f"SET {descriptor.obis} attribute {descriptor.attribute}")
        encoded = encode_data(value)
        request = SetRequestNormal(iip, descriptor, access, value).to_bytes()
        if len(request) <= self.server_max_pdu_size:
            return request
        if not self.negotiated_conformance & Conformance.BLOCK_TRANSFER_SET:
            raise ServiceRejected("value too large for the meter's PDU size and no block transfer")
        blocks = self._split(encoded)
        return SetRequestWithFirstBlock(
            iip, descriptor, access, len(blocks) == 1, 1, blocks[0]
        ).to_bytes()

    def action(self, descriptor: MethodDescriptor, parameters: Data | None) -> bytes:
        self._association.go(AssociationEvent.SEND_REQUEST)
        iip = self._next_iip()
        self._start(_RE.SEND_ACTION, f"ACTION {descriptor.obis} method {descriptor.method}")
        request = ActionRequestNormal(iip, descriptor, parameters).to_bytes()
        if len(request) <= self.server_max_pdu_size or parameters is None:
            return request
        if not self.negotiated_conformance & Conformance.BLOCK_TRANSFER_ACTION:
            raise ServiceRejected("parameters too large for the meter's PDU size")
        blocks = self._split(encode_data(parameters))
        return ActionRequestWithFirstPBlock(
            iip, descriptor, len(blocks) == 1, 1, blocks[0]
        ).to_bytes()

    def _start(self, event: RequestEvent, what: str) -> None:
        """A new request; one still unanswered (the session gave up on it) is abandoned."""
        if self._request.state is not Pending.NONE:
            self._request.go(_RE.ABANDONED)
        self._request.go(event)
        self._pending_what = what

    def _split(self, encoded: bytes) -> list[bytes]:
        """Blocks that fit the meter's PDU size with room for the header; the first goes now."""
        chunk = max(16, self.server_max_pdu_size - 32)
        blocks = [encoded[i : i + chunk] for i in range(0, len(encoded), chunk)]
        self._outgoing_blocks = blocks[1:]
        self._block_number = 1
        return blocks

    def _next_block(self) -> tuple[bool, int, bytes]:
        """(last, number, data) of the next outgoing block of a SET or ACTION."""
        block = self._outgoing_blocks.pop(0)
        self._block_number += 1
        return not self._outgoing_blocks, self._block_number, block

    # -- responses -----------------------------------------------------------------------
    def receive(self, plain: bytes) -> Outcome:
        """Interpret the (deciphered) reply to the pending request."""
        pending = self._request.state
        if pending is Pending.NONE:
            raise UnexpectedResponse("a reply arrived with no request pending")
        apdu = decode_apdu(plain)
        if isinstance(apdu, GeneralBlockTransfer):
            return self._receive_gbt(apdu)
        if (
            isinstance(apdu, ExceptionResponse)
            and apdu.service_error == ServiceError.INVOCATION_COUNTER_ERROR
        ):
            raise self._ended(
                InvocationCounterRefused(
                    f"{self._pending_what}: meter refused our invocation counter {apdu}",
                    apdu.invocation_counter,
                )
            )
        if isinstance(apdu, ExceptionResponse):
            raise self._ended(
                ServiceRejected(f"{self._pending_what}: meter sent an exception response {apdu}")
            )
        if isinstance(apdu, ConfirmedServiceError):
            raise self._ended(
                ServiceRejected(f"{self._pending_what}: confirmed service error {apdu}")
            )
        iip = getattr(apdu, "invoke_id_and_priority", None)
        if iip is None or (iip & 0x0F) != (self._pending_iip & 0x0F):
            raise UnexpectedResponse(
                f"{self._pending_what}: reply with invoke id {iip} to request {self._pending_iip}"
            )
        if pending is Pending.GET or pending is Pending.GET_LIST:
            return self._receive_get(apdu, pending)
        if pending is Pending.SET:
            return self._receive_set(apdu)
        return self._receive_action(apdu)

    def _finish(self, value: Any) -> Done:
        self._request.go(_RE.ENDED)
        return Done(value)

    def _ended(self, error: Exception) -> Exception:
        """The exchange is over, badly; the caller raises `error`."""
        self._request.go(_RE.ENDED)
        return error

    def _unexpected(self, apdu: Any) -> Exception:
        return self._ended(
            UnexpectedResponse(f"{self._pending_what}: unexpected reply {type(apdu).__name__}")
        )

    def _receive_get(self, apdu: Any, pending: Pending) -> Outcome:
        if isinstance(apdu, GetResponseNormal) and pending is Pending.GET:
            if isinstance(apdu.result, Data):
                return self._finish(apdu.result)
            raise self._ended(
                DataAccessFailed(self._pending_what, int(apdu.result), apdu.result.text)
            )
        if isinstance(apdu, GetResponseWithList) and pending is Pending.GET_LIST:
            return self._finish(self._list_results(apdu.results))
        if isinstance(apdu, GetResponseWithBlock):
            if isinstance(apdu.raw_data, DataAccessResult):
                raise self._ended(
                    DataAccessFailed(self._pending_what, int(apdu.raw_data), apdu.raw_data.text)
                )
            if apdu.block_number != self._block_number + 1:
                raise self._ended(
                    UnexpectedResponse(
                        f"{self._pending_what}: block {apdu.block_number} after"
                        f" {self._block_number}"
                    )
                )
            self._block_number = apdu.block_number
            self._blocks += apdu.raw_data
            if len(self._blocks) > self.settings.max_response_bytes:
                raise self._ended(
                    DecodeError(f"{self._pending_what}: response larger than the limit")
                )
            if not apdu.last_block:
                return Continue(GetRequestNext(self._pending_iip, apdu.block_number).to_bytes())
            raw = bytes(self._blocks)
            self._blocks.clear()
            if pending is Pending.GET:
                return self._finish(decode_data_all(raw))
            return self._finish(self._list_results(_decode_list_results(raw)))
        raise self._unexpected(apdu)

    def _list_results(self, results: Sequence[Data | DataAccessResult]) -> list[AttributeResult]:
        if len(results) != self._pending_count:
            raise UnexpectedResponse(
                f"GET with-list: {len(results)} results for {self._pending_count} attributes"
            )
        return [
            AttributeResult(r, None) if isinstance(r, Data) else AttributeResult(None, r)
            for r in results
        ]

    def _receive_set(self, apdu: Any) -> Outcome:
        if isinstance(apdu, SetResponseDataBlock) and self._outgoing_blocks:
            last, number, block = self._next_block()
            return Continue(SetRequestWithBlock(self._pending_iip, last, number, block).to_bytes())
        if isinstance(apdu, SetResponseNormal | SetResponseLastDataBlock):
            if apdu.result != DataAccessResult.SUCCESS:
                raise self._ended(
                    DataAccessFailed(self._pending_what, int(apdu.result), apdu.result.text)
                )
            return self._finish(None)
        raise self._unexpected(apdu)

    def _receive_action(self, apdu: Any) -> Outcome:
        if isinstance(apdu, ActionResponseNextPBlock) and self._outgoing_blocks:
            last, number, block = self._next_block()
            return Continue(
                ActionRequestWithPBlock(self._pending_iip, last, number, block).to_bytes()
            )
        if isinstance(apdu, ActionResponseWithPBlock):
            self._blocks += apdu.raw_data
            if len(self._blocks) > self.settings.max_response_bytes:
                raise DecodeError(f"{self._pending_what}: response larger than the limit")
            if not apdu.last_block:
                return Continue(
                    ActionRequestNextPBlock(self._pending_iip, apdu.block_number).to_bytes()
                )
            data = decode_data_all(bytes(self._blocks))
            self._blocks.clear()
            return self._finish(data)
        if not isinstance(apdu, ActionResponseNormal):
            raise self._unexpected(apdu)
        hls = self._request.state is Pending.HLS_REPLY
        self._request.go(_RE.ENDED)
        if apdu.result != ActionResult.SUCCESS:
            if hls:
                raise self._hls_refused(f"meter refused our HLS reply ({apdu.result.text})")
            raise ActionFailed(self._pending_what, int(apdu.result), apdu.result.text)
        returned = apdu.return_data
        if isinstance(returned, DataAccessResult):
            if hls:
                raise self._hls_refused("meter refused our HLS reply")
            raise ActionFailed(self._pending_what, int(returned), returned.text)
        if hls:
            self._hls_verified(returned)
        return Done(returned)

    def _receive_gbt(self, block: GeneralBlockTransfer) -> Outcome:
        whole = self._gbt.feed(block)
        if whole is None:
            if block.streaming:
                return KeepReading()
            self._gbt_sent += 1
            ack = GeneralBlockTransfer(
                last_block=False,
                streaming=False,
                window=1,
                block_number=self._gbt_sent,
                block_number_ack=block.block_number,
                block_data=b"",
            )
            return Continue(ack.to_bytes())
        return self.receive(self.unprotect(whole))

    # -- helpers -------------------------------------------------------------------------
    def _next_iip(self) -> int:
        self._invoke_id = self._invoke_id % 15 + 1
        self._pending_iip = invoke_id_and_priority(self._invoke_id)
        return self._pending_iip


def _decode_list_results(raw: bytes) -> list[Data | DataAccessResult]:
    """A GET with-list reply reassembled from blocks: count, then (00 Data | 01 result) each."""
    count, offset = decode_length(raw, 0)
    if count > len(raw):
        raise DecodeError("with-list result count exceeds the bytes")
    results: list[Data | DataAccessResult] = []
    for _ in range(count):
        if offset >= len(raw):
            raise DecodeError("truncated with-list results")
        choice = raw[offset]
        offset += 1
        if choice == 0:
            value, offset = decode_data(raw, offset)
            results.append(value)
        elif choice == 1:
            if offset >= len(raw):
                raise DecodeError("truncated data-access-result")
            try:
                results.append(DataAccessResult(raw[offset]))
            except ValueError:
                raise DecodeError(f"unknown data-access-result {raw[offset]}") from None
            offset += 1
        else:
            raise DecodeError(f"bad with-list result choice {choice}")
    if offset != len(raw):
        raise DecodeError("trailing bytes after with-list results")
    return results


__all__ = ["ClientConnection"]
