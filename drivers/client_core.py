"""Sans-IO client side of one DLMS/COSEM association (h11 style: APDU bytes in, results out).

The session (drivers/session.py) owns the I/O and the invocation-counter store; this module owns
the protocol rules: association (no security, LLS, HLS-GMAC with suite 0), invoke ids, the
negotiated conformance and PDU size, GET block transfer reassembly, general-block-transfer and
ciphering of every APDU in a ciphered association."""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cosem_objects import security
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
)
from cosem_objects.apdu import decode_apdu
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
from cosem_objects.apdu.set import (
    SetRequestNormal,
    SetRequestWithBlock,
    SetRequestWithFirstBlock,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
)
from cosem_objects.axdr import Data, decode_data, decode_data_all, decode_length, encode_data
from cosem_objects.classes import AssociationLN, Obises
from cosem_objects.errors import DecodeError, ProtocolError, SecurityError
from drivers.dlms_errors import (
    ActionFailed,
    AssociationRefused,
    AuthenticationFailed,
    DataAccessFailed,
    ServiceRejected,
    UnexpectedResponse,
)

DEFAULT_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_GET
    | Conformance.BLOCK_TRANSFER_SET
    | Conformance.BLOCK_TRANSFER_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
    | Conformance.GENERAL_BLOCK_TRANSFER
)
SC_AUTHENTICATED_ENCRYPTED = 0x30
HLS_SC = 0x10


class Authentication(enum.StrEnum):
    NONE = "none"
    LLS = "lls"
    HLS_GMAC = "hls-gmac"


@dataclass(frozen=True)
class ClientSettings:
    """How to associate with one meter. Secrets are kept out of repr."""

    client_sap: int = 16
    server_logical: int = 1
    server_physical: int | None = None
    authentication: Authentication = Authentication.NONE
    password: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    enc_key: bytes | None = field(default=None, repr=False)
    client_system_title: bytes = b"HES\x00\x00\x00\x00\x01"
    max_pdu_size: int = 0xFFFF
    conformance: Conformance = DEFAULT_CONFORMANCE
    deviation_sign: int = 1
    max_response_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "authentication", Authentication(self.authentication))
        if self.authentication is Authentication.LLS and not self.password:
            raise ValueError("LLS needs a password")
        if self.authentication is Authentication.HLS_GMAC:
            for name, key in (("auth_key", self.auth_key), ("enc_key", self.enc_key)):
                if key is None or len(key) != 16:
                    raise ValueError(f"HLS-GMAC needs a 16-byte {name}")
            if len(self.client_system_title) != 8:
                raise ValueError("client system title must be 8 bytes")

    @property
    def ciphered(self) -> bool:
        return self.authentication is Authentication.HLS_GMAC

    @property
    def keys(self) -> security.SecurityKeys:
        assert self.enc_key is not None and self.auth_key is not None
        return security.SecurityKeys(self.enc_key, self.auth_key)


class State(enum.Enum):
    IDLE = "idle"
    AWAITING_AARE = "awaiting-aare"
    AWAITING_HLS_REPLY = "awaiting-hls-reply"
    ASSOCIATED = "associated"
    AWAITING_RLRE = "awaiting-rlre"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Continue:
    """The exchange needs another request (next block, HLS pass 3, GBT ack): send `apdu`."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class Done:
    value: Any


@dataclass(frozen=True, slots=True)
class AttributeResult:
    """One attribute of a GET with-list: its value or the meter's refusal."""

    value: Data | None
    error: DataAccessResult | None

    def unwrap(self, what: str) -> Data:
        if self.error is not None or self.value is None:
            code = self.error if self.error is not None else DataAccessResult.OTHER_REASON
            raise DataAccessFailed(what, int(code), _result_name(code))
        return self.value


def _result_name(code: enum.IntEnum | int) -> str:
    return code.name.lower().replace("_", "-") if isinstance(code, enum.IntEnum) else str(code)


class _Pending(enum.Enum):
    NONE = 0
    GET = 1
    GET_LIST = 2
    SET = 3
    ACTION = 4
    HLS = 5


class ClientConnection:
    """One association's protocol state. Not thread-safe; one request at a time."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.state = State.IDLE
        self.negotiated_conformance = Conformance(0)
        self.server_max_pdu_size = 0xFFFF
        self.server_system_title: bytes | None = None
        self._invoke_id = 0
        self._pending = _Pending.NONE
        self._pending_iip = 0
        self._pending_what = ""
        self._pending_count = 0
        self._block_number = 0
        self._blocks = bytearray()
        self._outgoing_blocks: list[bytes] = []
        self._gbt = GbtReassembler()
        self._gbt_sent = 0
        self._ctos = b""
        self._stoc = b""
        self._server_ic_guard = security.InvocationCounterGuard()

    # -- association ---------------------------------------------------------------------
    def associate(self, invocation_counter: int | None = None) -> bytes:
        """The AARQ. A ciphered association needs an invocation counter for its InitiateRequest."""
        self._require(State.IDLE)
        settings = self.settings
        initiate = InitiateRequest(
            dedicated_key=None,
            response_allowed=True,
            quality_of_service=None,
            dlms_version=6,
            conformance=settings.conformance,
            max_pdu_size=settings.max_pdu_size,
        ).to_bytes()
        mechanism: MechanismName | None = None
        auth_value: bytes | None = None
        calling_title: bytes | None = None
        context = 1
        if settings.authentication is Authentication.LLS:
            mechanism, auth_value = MechanismName.LLS, settings.password
        elif settings.authentication is Authentication.HLS_GMAC:
            if invocation_counter is None:
                raise ValueError("a ciphered association needs an invocation counter")
            context = 3
            mechanism = MechanismName.HLS_GMAC
            self._ctos = os.urandom(16)
            auth_value = self._ctos
            calling_title = settings.client_system_title
            initiate = security.wrap_service_specific(
                initiate,
                SC_AUTHENTICATED_ENCRYPTED,
                settings.client_system_title,
                invocation_counter,
                settings.keys,
            )
        aarq = AARQ(
            application_context=context,
            calling_ap_title=calling_title,
            mechanism=mechanism,
            calling_authentication_value=auth_value,
            user_information=initiate,
        )
        self.state = State.AWAITING_AARE
        return aarq.to_bytes()

    def receive_aare(self, raw: bytes) -> Continue | Done:
        """Check the AARE. For HLS-GMAC returns the pass-3 request to send (needs an IC: the
        session calls hls_reply(ic) and sends that)."""
        self._require(State.AWAITING_AARE)
        try:
            aare = AARE.from_bytes(raw)
        except ProtocolError:
            self.state = State.IDLE
            raise
        diagnostic = int(aare.diagnostic)
        if aare.result != AssociationResult.ACCEPTED:
            self.state = State.IDLE
            detail = _aare_detail(aare)
            if (
                diagnostic
                in (
                    AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE,
                    AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
                    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
                    AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
                )
                and aare.diagnostic_source == "acse-service-user"
            ):
                raise AuthenticationFailed(int(aare.result), diagnostic, detail)
            raise AssociationRefused(int(aare.result), diagnostic, detail)
        user_info = aare.user_information or b""
        if self.settings.ciphered:
            if aare.responding_ap_title is None or len(aare.responding_ap_title) != 8:
                self.state = State.IDLE
                raise AssociationRefused(0, diagnostic, "AARE without the meter's system title")
            self.server_system_title = aare.responding_ap_title
            if user_info[:1] == b"\x28":
                try:
                    user_info, server_ic = security.unwrap_service_specific(
                        user_info, self.server_system_title, self.settings.keys
                    )
                except SecurityError as exc:
                    self.state = State.IDLE
                    raise AuthenticationFailed(
                        0, diagnostic, f"cannot decrypt AARE: {exc}"
                    ) from exc
                self._server_ic_guard.check(server_ic)
        if user_info[:1] == b"\x0e":
            self.state = State.IDLE
            error = ConfirmedServiceError.from_bytes(user_info)
            raise AssociationRefused(int(aare.result), diagnostic, f"initiate error {error}")
        response = InitiateResponse.from_bytes(user_info)
        self.negotiated_conformance = response.conformance & self.settings.conformance
        self.server_max_pdu_size = response.max_pdu_size or 0xFFFF
        if self.settings.authentication is Authentication.HLS_GMAC:
            if diagnostic != AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED:
                self.state = State.IDLE
                raise AuthenticationFailed(0, diagnostic, "meter did not ask for HLS pass 3")
            if not aare.responding_authentication_value:
                self.state = State.IDLE
                raise AuthenticationFailed(0, diagnostic, "AARE without a challenge (StoC)")
            self._stoc = aare.responding_authentication_value
            self.state = State.AWAITING_HLS_REPLY
            return Continue(b"")
        self.state = State.ASSOCIATED
        return Done(response)

    def hls_reply(self, invocation_counter: int) -> bytes:
        """HLS pass 3: reply_to_HLS_authentication with f(StoC) (plain; the session ciphers)."""
        self._require(State.AWAITING_HLS_REPLY)
        reply = security.hls_gmac_reply(
            self.settings.keys, self.settings.client_system_title, invocation_counter, self._stoc
        )
        request = ActionRequestNormal(
            self._next_iip(),
            MethodDescriptor(
                AssociationLN.CLASS_ID,
                Obises.CURRENT_ASSOCIATION,
                AssociationLN.REPLY_TO_HLS_AUTHENTICATION,
            ),
            Data.octet_string(reply),
        )
        self._pending = _Pending.HLS
        self._pending_what = "HLS authentication"
        return request.to_bytes()

    def release(self) -> bytes:
        self._require(State.ASSOCIATED)
        self.state = State.AWAITING_RLRE
        return RLRQ(reason=0, user_information=None).to_bytes()

    def receive_rlre(self, raw: bytes) -> None:
        self._require(State.AWAITING_RLRE)
        self.state = State.RELEASED
        RLRE.from_bytes(raw)

    # -- ciphering -----------------------------------------------------------------------
    def protect(self, plain: bytes, invocation_counter: int) -> bytes:
        """Cipher a request in a ciphered association (glo- service-specific, SC 0x30)."""
        return security.wrap_service_specific(
            plain,
            SC_AUTHENTICATED_ENCRYPTED,
            self.settings.client_system_title,
            invocation_counter,
            self.settings.keys,
        )

    def unprotect(self, raw: bytes) -> bytes:
        """Plain APDU from a ciphered reply; refuses replies in clear and replayed counters."""
        if not raw:
            raise DecodeError("empty APDU")
        tag = raw[0]
        if tag == 0xDB:
            plain, system_title, ic = security.unwrap_general_glo(raw, self.settings.keys)
            if self.server_system_title and system_title != self.server_system_title:
                raise SecurityError("general-glo-ciphering from an unexpected system title")
        elif tag in security.GLO_TAGS.values():
            assert self.server_system_title is not None
            plain, ic = security.unwrap_service_specific(
                raw, self.server_system_title, self.settings.keys
            )
        elif tag in (0xD8, 0x0E, 0xE0):
            return raw  # exception responses may come in clear; GBT carries ciphered content
        else:
            raise SecurityError(f"reply in clear (tag 0x{tag:02X}) in a ciphered association")
        self._server_ic_guard.check(ic)
        return plain

    # -- requests ------------------------------------------------------------------------
    def get(self, items: Sequence[tuple[AttributeDescriptor, SelectiveAccess | None]]) -> bytes:
        """GET one attribute (normal) or several (with-list, when the meter offers it)."""
        self._require(State.ASSOCIATED)
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
            self._pending = _Pending.GET
            self._pending_what = f"GET {descriptor.obis} attribute {descriptor.attribute}"
            return GetRequestNormal(iip, descriptor, access).to_bytes()
        if not self.supports_with_list:
            raise ServiceRejected("the meter did not grant multiple references (with-list)")
        self._pending = _Pending.GET_LIST
        self._pending_count = len(items)
        self._pending_what = "GET with-list"
        return GetRequestWithList(iip, tuple(items)).to_bytes()

    @property
    def supports_with_list(self) -> bool:
        return bool(self.negotiated_conformance & Conformance.MULTIPLE_REFERENCES)

    def set(
        self, descriptor: AttributeDescriptor, value: Data, access: SelectiveAccess | None = None
    ) -> bytes:
        self._require(State.ASSOCIATED)
        iip = self._next_iip()
        self._pending = _Pending.SET
        self._pending_what = f"SET {descriptor.obis} attribute {descriptor.attribute}"
        encoded = encode_data(value)
        request = SetRequestNormal(iip, descriptor, access, value).to_bytes()
        if len(request) <= self.server_max_pdu_size:
            return request
        if not self.negotiated_conformance & Conformance.BLOCK_TRANSFER_SET:
            raise ServiceRejected("value too large for the meter's PDU size and no block transfer")
        chunk = max(16, self.server_max_pdu_size - 32)
        blocks = [encoded[i : i + chunk] for i in range(0, len(encoded), chunk)]
        self._outgoing_blocks = blocks[1:]
        self._block_number = 1
        return SetRequestWithFirstBlock(
            iip, descriptor, access, len(blocks) == 1, 1, blocks[0]
        ).to_bytes()

    def action(self, descriptor: MethodDescriptor, parameters: Data | None) -> bytes:
        self._require(State.ASSOCIATED)
        iip = self._next_iip()
        self._pending = _Pending.ACTION
        self._pending_what = f"ACTION {descriptor.obis} method {descriptor.method}"
        request = ActionRequestNormal(iip, descriptor, parameters).to_bytes()
        if len(request) <= self.server_max_pdu_size or parameters is None:
            return request
        if not self.negotiated_conformance & Conformance.BLOCK_TRANSFER_ACTION:
            raise ServiceRejected("parameters too large for the meter's PDU size")
        encoded = encode_data(parameters)
        chunk = max(16, self.server_max_pdu_size - 32)
        blocks = [encoded[i : i + chunk] for i in range(0, len(encoded), chunk)]
        self._outgoing_blocks = blocks[1:]
        self._block_number = 1
        return ActionRequestWithFirstPBlock(
            iip, descriptor, len(blocks) == 1, 1, blocks[0]
        ).to_bytes()

    # -- responses -----------------------------------------------------------------------
    def receive(self, plain: bytes) -> Continue | Done:
        """Interpret the (deciphered) reply to the pending request."""
        if self._pending is _Pending.NONE:
            raise UnexpectedResponse("a reply arrived with no request pending")
        apdu = decode_apdu(plain)
        if isinstance(apdu, GeneralBlockTransfer):
            return self._receive_gbt(apdu)
        if isinstance(apdu, ExceptionResponse):
            self._pending = _Pending.NONE
            raise ServiceRejected(f"{self._pending_what}: meter sent an exception response {apdu}")
        if isinstance(apdu, ConfirmedServiceError):
            self._pending = _Pending.NONE
            raise ServiceRejected(f"{self._pending_what}: confirmed service error {apdu}")
        iip = getattr(apdu, "invoke_id_and_priority", None)
        if iip is None or (iip & 0x0F) != (self._pending_iip & 0x0F):
            raise UnexpectedResponse(
                f"{self._pending_what}: reply with invoke id {iip} to request {self._pending_iip}"
            )
        pending = self._pending
        if pending is _Pending.GET or pending is _Pending.GET_LIST:
            return self._receive_get(apdu)
        if pending is _Pending.SET:
            return self._receive_set(apdu)
        return self._receive_action(apdu)

    def _finish(self, value: Any) -> Done:
        self._pending = _Pending.NONE
        return Done(value)

    def _receive_get(self, apdu: Any) -> Continue | Done:
        if isinstance(apdu, GetResponseNormal) and self._pending is _Pending.GET:
            if isinstance(apdu.result, Data):
                return self._finish(apdu.result)
            self._pending = _Pending.NONE
            raise DataAccessFailed(self._pending_what, int(apdu.result), _result_name(apdu.result))
        if isinstance(apdu, GetResponseWithList) and self._pending is _Pending.GET_LIST:
            return self._finish(self._list_results(apdu.results))
        if isinstance(apdu, GetResponseWithBlock):
            if isinstance(apdu.raw_data, DataAccessResult):
                self._pending = _Pending.NONE
                raise DataAccessFailed(
                    self._pending_what, int(apdu.raw_data), _result_name(apdu.raw_data)
                )
            if apdu.block_number != self._block_number + 1:
                self._pending = _Pending.NONE
                raise UnexpectedResponse(
                    f"{self._pending_what}: block {apdu.block_number} after {self._block_number}"
                )
            self._block_number = apdu.block_number
            self._blocks += apdu.raw_data
            if len(self._blocks) > self.settings.max_response_bytes:
                self._pending = _Pending.NONE
                raise DecodeError(f"{self._pending_what}: response larger than the limit")
            if not apdu.last_block:
                return Continue(GetRequestNext(self._pending_iip, apdu.block_number).to_bytes())
            raw = bytes(self._blocks)
            self._blocks.clear()
            if self._pending is _Pending.GET:
                return self._finish(decode_data_all(raw))
            return self._finish(self._list_results(_decode_list_results(raw)))
        self._pending = _Pending.NONE
        raise UnexpectedResponse(f"{self._pending_what}: unexpected reply {type(apdu).__name__}")

    def _list_results(self, results: Sequence[Data | DataAccessResult]) -> list[AttributeResult]:
        if len(results) != self._pending_count:
            raise UnexpectedResponse(
                f"GET with-list: {len(results)} results for {self._pending_count} attributes"
            )
        return [
            AttributeResult(r, None) if isinstance(r, Data) else AttributeResult(None, r)
            for r in results
        ]

    def _receive_set(self, apdu: Any) -> Continue | Done:
        if isinstance(apdu, SetResponseDataBlock) and self._outgoing_blocks:
            block = self._outgoing_blocks.pop(0)
            self._block_number += 1
            last = not self._outgoing_blocks
            return Continue(
                SetRequestWithBlock(self._pending_iip, last, self._block_number, block).to_bytes()
            )
        if isinstance(apdu, SetResponseNormal | SetResponseLastDataBlock):
            self._pending = _Pending.NONE
            if apdu.result != DataAccessResult.SUCCESS:
                raise DataAccessFailed(
                    self._pending_what, int(apdu.result), _result_name(apdu.result)
                )
            return Done(None)
        self._pending = _Pending.NONE
        raise UnexpectedResponse(f"{self._pending_what}: unexpected reply {type(apdu).__name__}")

    def _receive_action(self, apdu: Any) -> Continue | Done:
        if isinstance(apdu, ActionResponseNextPBlock) and self._outgoing_blocks:
            block = self._outgoing_blocks.pop(0)
            self._block_number += 1
            last = not self._outgoing_blocks
            return Continue(
                ActionRequestWithPBlock(
                    self._pending_iip, last, self._block_number, block
                ).to_bytes()
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
            self._pending = _Pending.NONE
            raise UnexpectedResponse(
                f"{self._pending_what}: unexpected reply {type(apdu).__name__}"
            )
        hls = self._pending is _Pending.HLS
        self._pending = _Pending.NONE
        if apdu.result != ActionResult.SUCCESS:
            if hls:
                self.state = State.IDLE
                raise AuthenticationFailed(
                    0, 13, f"meter refused our HLS reply ({_result_name(apdu.result)})"
                )
            raise ActionFailed(self._pending_what, int(apdu.result), _result_name(apdu.result))
        returned = apdu.return_data
        if isinstance(returned, DataAccessResult):
            if hls:
                self.state = State.IDLE
                raise AuthenticationFailed(0, 13, "meter refused our HLS reply")
            raise ActionFailed(self._pending_what, int(returned), _result_name(returned))
        if hls:
            self._check_hls_reply(returned)
            self.state = State.ASSOCIATED
        return Done(returned)

    def _check_hls_reply(self, returned: Data | None) -> None:
        if returned is None or not isinstance(returned.value, bytes):
            self.state = State.IDLE
            raise AuthenticationFailed(0, 13, "meter sent no f(CtoS)")
        assert self.server_system_title is not None
        try:
            security.verify_hls_gmac_reply(
                self.settings.keys, self.server_system_title, self._ctos, returned.value
            )
        except SecurityError as exc:
            self.state = State.IDLE
            raise AuthenticationFailed(0, 13, f"meter's HLS reply does not verify: {exc}") from exc

    def _receive_gbt(self, block: GeneralBlockTransfer) -> Continue | Done:
        whole = self._gbt.feed(block)
        if whole is None:
            if block.streaming:
                return Continue(b"")  # keep reading; nothing to send
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
        if self.settings.ciphered:
            whole = self.unprotect(whole)
        return self.receive(whole)

    # -- helpers -------------------------------------------------------------------------
    def _next_iip(self) -> int:
        self._invoke_id = self._invoke_id % 15 + 1
        self._pending_iip = invoke_id_and_priority(self._invoke_id)
        return self._pending_iip

    def _require(self, state: State) -> None:
        if self.state is not state:
            raise ProtocolError(f"association is {self.state.value}, expected {state.value}")


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


def _aare_detail(aare: AARE) -> str:
    try:
        name = AcseServiceUserDiagnostic(int(aare.diagnostic)).name.lower().replace("_", "-")
    except ValueError:
        name = f"diagnostic {aare.diagnostic}"
    result = {1: "rejected-permanent", 2: "rejected-transient"}.get(int(aare.result), "rejected")
    return f"{result}, {aare.diagnostic_source}: {name}"


__all__ = ["AttributeResult", "Authentication", "ClientConnection", "ClientSettings"]
