"""Sans-IO server side of one client connection to a simulated meter: APDU bytes in, bytes out.

The transport (wrapper or HDLC) hands every complete APDU to `ServerSession.handle_apdu` and
sends back what it returns. The session does what a meter's application layer does:

* ACSE: AARQ -> AARE for three associations, chosen by the client SAP -- public (16, no
  security), reader (32, LLS password) and management (1, HLS-GMAC with suite 0, every APDU
  authenticated and encrypted); RLRQ -> RLRE.
* xDLMS: GET normal / next / with-list, SET normal / with blocks / with-list, ACTION normal /
  with parameter blocks; datablock responses when a reply exceeds the negotiated PDU size.
* Ciphering in the management association: glo- (C8/C9/CB) and general-glo (DB) requests,
  answered the same way under the meter's system title with a rising invocation counter;
  replayed client counters and undecipherable requests get an exception response.

Refusals carry the AARE result and diagnostic a real meter would give; malformed or
out-of-place requests get an ExceptionResponse; nothing raises out of handle_apdu."""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass

from cosem_objects import security
from cosem_objects.acse import (
    AARE,
    AARQ,
    RLRE,
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
from cosem_objects.apdu.errors import (
    EXCEPTION_RESPONSE,
    ConfirmedService,
    ConfirmedServiceError,
    ExceptionResponse,
    InitiateErrorValue,
    ServiceError,
    ServiceErrorType,
    StateError,
)
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
from cosem_objects.axdr import Data, decode_data_all, decode_length, encode_data
from cosem_objects.classes import AssociationLN, Obises
from cosem_objects.errors import DecodeError, ProtocolError, SecurityError
from simulators.config import (
    MANAGEMENT_CLIENT_SAP,
    PUBLIC_CLIENT_SAP,
    READER_CLIENT_SAP,
    Security,
)
from simulators.meter import SimMeter
from simulators.objects import services
from simulators.objects.model import AccessLevel, AssociationContext

# What the meter offers; the association gets the intersection with what the client proposes.
SERVER_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_GET
    | Conformance.BLOCK_TRANSFER_SET
    | Conformance.BLOCK_TRANSFER_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
)
CIPHERED_CONFORMANCE = SERVER_CONFORMANCE | Conformance.GENERAL_PROTECTION
DLMS_VERSION = 6
VAA_NAME_LN = 0x0007
DEFAULT_SERVER_MAX_PDU = 1024
MIN_CLIENT_PDU = 64
SC_AUTHENTICATED_ENCRYPTED = 0x30
MAX_BLOCK_TRANSFER_BYTES = 64 * 1024
CIPHERING_OVERHEAD = 32  # general-glo header (1 + 9 + 3 + 1 + 4) + GCM tag (12), rounded up

NOT_ALLOWED = StateError.SERVICE_NOT_ALLOWED
UNKNOWN = StateError.SERVICE_UNKNOWN

_GLO_REQUEST_TAGS = {0xC8, 0xC9, 0xCB}
_GENERAL_GLO = 0xDB


class Kind(enum.Enum):
    PUBLIC = "public"
    READER = "reader"
    MANAGEMENT = "management"


_KINDS = {
    PUBLIC_CLIENT_SAP: Kind.PUBLIC,
    READER_CLIENT_SAP: Kind.READER,
    MANAGEMENT_CLIENT_SAP: Kind.MANAGEMENT,
}
_MECHANISMS = {
    Kind.PUBLIC: MechanismName.NONE,
    Kind.READER: MechanismName.LLS,
    Kind.MANAGEMENT: MechanismName.HLS_GMAC,
}
_CONTEXTS = {Kind.PUBLIC: 1, Kind.READER: 1, Kind.MANAGEMENT: 3}


class State(enum.Enum):
    IDLE = "idle"  # no association
    PENDING = "pending"  # HLS: waiting for reply_to_HLS_authentication
    ASSOCIATED = "associated"
    RELEASED = "released"


class _Refused(Exception):
    """An AARQ the meter refuses: the AARE to send instead."""

    def __init__(
        self,
        diagnostic: int,
        result: AssociationResult = AssociationResult.REJECTED_PERMANENT,
        user_information: bytes | None = None,
    ) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic
        self.result = result
        self.user_information = user_information


@dataclass(slots=True)
class _Upload:
    """A SET or ACTION whose value arrives in blocks."""

    kind: str  # "set" | "action"
    iip: int
    descriptor: AttributeDescriptor | MethodDescriptor
    access: SelectiveAccess | None
    block_number: int
    data: bytearray


class ServerSession:
    """One client connection's application association with `meter` (sans-IO)."""

    def __init__(
        self, meter: SimMeter, client_sap: int, max_pdu_size: int = DEFAULT_SERVER_MAX_PDU
    ) -> None:
        self.meter = meter
        self.client_sap = client_sap
        self.max_pdu_size = max_pdu_size
        self.state = State.IDLE
        self.context: AssociationContext | None = None
        self.kind: Kind | None = _KINDS.get(client_sap)
        self._conformance = Conformance(0)
        self._client_title: bytes | None = None
        self._stoc = b""
        self._ctos = b""
        self._general_glo = False  # how the last ciphered request came: reply the same way
        self._blocks: list[bytes] = []
        self._block_number = 0
        self._upload: _Upload | None = None

    @property
    def released(self) -> bool:
        return self.state is State.RELEASED

    @property
    def associated(self) -> bool:
        return self.state is State.ASSOCIATED

    @property
    def ciphered(self) -> bool:
        return self.kind is Kind.MANAGEMENT and self.state in (State.PENDING, State.ASSOCIATED)

    def __repr__(self) -> str:
        return f"ServerSession({self.meter.meter_id!r}, sap={self.client_sap}, {self.state.value})"

    # -- entry point ---------------------------------------------------------------------------
    def handle_apdu(self, apdu: bytes) -> bytes | None:
        """The reply to one complete APDU from the client (None when no reply is due)."""
        try:
            return self._handle(bytes(apdu))
        except (ProtocolError, ValueError, OverflowError):
            return _exception(NOT_ALLOWED, ServiceError.OTHER_REASON)

    def _handle(self, apdu: bytes) -> bytes | None:
        if not apdu:
            return _exception(UNKNOWN, ServiceError.OTHER_REASON)
        tag = apdu[0]
        if tag == 0x60:
            return self._aarq(apdu)
        if tag == 0x62:
            return self._rlrq()
        if self.state not in (State.PENDING, State.ASSOCIATED):
            return _exception(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        if self.ciphered:
            return self._ciphered(apdu)
        if tag in _GLO_REQUEST_TAGS or tag == _GENERAL_GLO:
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if len(apdu) > self.max_pdu_size:
            return _exception(NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
        return self._service(apdu)

    # -- ACSE ----------------------------------------------------------------------------------
    def _aarq(self, raw: bytes) -> bytes:
        self._reset()
        try:
            aarq = AARQ.from_bytes(raw)
        except ProtocolError:
            return _aare_refused(1, AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        context_name = aarq.application_context
        try:
            return self._accept(aarq)
        except _Refused as refusal:
            return AARE(
                application_context=context_name,
                result=refusal.result,
                diagnostic_source="acse-service-user",
                diagnostic=refusal.diagnostic,
                responding_ap_title=None,
                mechanism=None,
                responding_authentication_value=None,
                user_information=refusal.user_information,
            ).to_bytes()

    def _accept(self, aarq: AARQ) -> bytes:
        meter = self.meter
        if meter.faults.refuse_association:
            raise _Refused(
                AcseServiceUserDiagnostic.NO_REASON_GIVEN, AssociationResult.REJECTED_TRANSIENT
            )
        kind = self.kind
        if kind is None:
            raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        if aarq.application_context != _CONTEXTS[kind]:
            raise _Refused(AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        mechanism = aarq.mechanism if aarq.mechanism is not None else MechanismName.NONE
        expected = _MECHANISMS[kind]
        if mechanism != expected:
            if mechanism == MechanismName.NONE:
                raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED)
            raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        try:
            keys = self._keys()
        except ValueError as exc:  # the meter has no usable keys: nobody can authenticate
            raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE) from exc
        if kind is Kind.READER:
            given = aarq.calling_authentication_value or b""
            password = meter.config.password
            if not password or not hmac.compare_digest(given, password):
                raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE)
        if kind is Kind.MANAGEMENT:
            title = aarq.calling_ap_title
            if title is None or len(title) != 8:
                raise _Refused(AcseServiceUserDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED)
            challenge = aarq.calling_authentication_value or b""
            if not 8 <= len(challenge) <= 64:
                raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE)
            self._client_title = title
            self._ctos = challenge
        request = self._initiate_request(aarq.user_information, keys)
        if request.dlms_version < DLMS_VERSION:
            raise _initiate_error(InitiateErrorValue.DLMS_VERSION_TOO_LOW)
        client_pdu = request.max_pdu_size or 0xFFFF
        if client_pdu < MIN_CLIENT_PDU:
            raise _initiate_error(InitiateErrorValue.PDU_SIZE_TOO_SHORT)
        offered = CIPHERED_CONFORMANCE if kind is Kind.MANAGEMENT else SERVER_CONFORMANCE
        negotiated = Conformance(request.conformance & offered)
        if not negotiated & (Conformance.GET | Conformance.SET | Conformance.ACTION):
            raise _initiate_error(InitiateErrorValue.INCOMPATIBLE_CONFORMANCE)

        # Accepted (pending HLS for management).
        self._conformance = negotiated
        level = _level(kind, meter.config.security)
        self.context = AssociationContext(
            level=level,
            client_sap=self.client_sap,
            server_sap=meter.config.server_logical,
            application_context=aarq.application_context,
            mechanism=int(mechanism),
            conformance=negotiated.to_bytes(),
            client_max_pdu=client_pdu,
            server_max_pdu=self.max_pdu_size,
            dlms_version=DLMS_VERSION,
            status=1 if kind is Kind.MANAGEMENT else 2,
            client_system_title=self._client_title,
        )
        initiate = InitiateResponse(
            quality_of_service=None,
            dlms_version=DLMS_VERSION,
            conformance=negotiated,
            max_pdu_size=self.max_pdu_size,
            vaa_name=VAA_NAME_LN,
        ).to_bytes()
        diagnostic = AcseServiceUserDiagnostic.NULL
        responding_title: bytes | None = None
        stoc: bytes | None = None
        if kind is Kind.MANAGEMENT:
            assert keys is not None
            meter.client_system_title = self._client_title
            initiate = security.wrap_service_specific(
                initiate,
                SC_AUTHENTICATED_ENCRYPTED,
                meter.config.system_title,
                meter.next_server_ic(),
                keys,
            )
            diagnostic = AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED
            responding_title = meter.config.system_title
            self._stoc = stoc = os.urandom(16)
            self.state = State.PENDING
        else:
            self.state = State.ASSOCIATED
        return AARE(
            application_context=aarq.application_context,
            result=AssociationResult.ACCEPTED,
            diagnostic_source="acse-service-user",
            diagnostic=diagnostic,
            responding_ap_title=responding_title,
            mechanism=None if mechanism == MechanismName.NONE else mechanism,
            responding_authentication_value=stoc,
            user_information=initiate,
        ).to_bytes()

    def _initiate_request(
        self, user_information: bytes | None, keys: security.SecurityKeys | None
    ) -> InitiateRequest:
        if not user_information:
            raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        plain = user_information
        if user_information[0] == 0x21:  # glo-initiate-request
            if self.kind is not Kind.MANAGEMENT or keys is None or self._client_title is None:
                raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
            try:
                plain, ic = security.unwrap_service_specific(
                    user_information, self._client_title, keys
                )
            except ProtocolError as exc:
                raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE) from exc
            if not self.meter.accept_client_ic(ic):
                raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE)
        try:
            return InitiateRequest.from_bytes(plain)
        except ProtocolError as exc:
            raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN) from exc

    def _rlrq(self) -> bytes:
        # The RLRQ may carry a (ciphered) InitiateRequest (dlms-cosem sends one); a release is
        # granted whatever it holds.
        self._reset()
        self.state = State.RELEASED
        return RLRE(reason=0, user_information=None).to_bytes()

    def _reset(self) -> None:
        self.state = State.IDLE
        self.context = None
        self._conformance = Conformance(0)
        self._client_title = None
        self._stoc = self._ctos = b""
        self._abort_blocks()
        self._upload = None

    def _keys(self) -> security.SecurityKeys | None:
        config = self.meter.config
        if self.kind is not Kind.MANAGEMENT:
            return None
        return security.SecurityKeys(config.enc_key, config.auth_key)

    # -- ciphering -----------------------------------------------------------------------------
    def _ciphered(self, apdu: bytes) -> bytes | None:
        keys = self._keys()
        assert keys is not None and self._client_title is not None
        tag = apdu[0]
        if len(apdu) > self.max_pdu_size + CIPHERING_OVERHEAD:
            return _exception(NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
        try:
            if tag in _GLO_REQUEST_TAGS:
                sc = _service_specific_sc(apdu)
                plain, ic = security.unwrap_service_specific(apdu, self._client_title, keys)
                general = False
            elif tag == _GENERAL_GLO:
                envelope = security.GeneralGloCiphering.from_bytes(apdu)
                if envelope.system_title != self._client_title:
                    raise SecurityError("general-glo-ciphering from another system title")
                sc = envelope.security_control
                plain, _title, ic = security.unwrap_general_glo(apdu, keys)
                general = True
            else:
                # Plain requests are refused once the association is ciphered.
                return _exception(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        except ProtocolError:
            return _exception(NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)
        if sc & 0x30 != 0x30:  # the security policy asks for authenticated and encrypted
            return _exception(NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)
        if not self.meter.accept_client_ic(ic):
            return _exception(
                NOT_ALLOWED,
                ServiceError.INVOCATION_COUNTER_ERROR,
                (self.meter.client_ic_high + 1) & 0xFFFFFFFF,
            )
        if not general and security.PLAIN_TAGS.get(tag) != (plain[0] if plain else None):
            # A glo-get-request must carry a get-request, and so on.
            return _exception(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        self._general_glo = general
        reply = self._service(plain)
        if reply is None or reply[0] == EXCEPTION_RESPONSE:
            return reply
        return self._protect(reply)

    def _protect(self, plain: bytes) -> bytes:
        keys = self._keys()
        assert keys is not None
        meter = self.meter
        ic = meter.next_server_ic()
        if self._general_glo:
            return security.wrap_general_glo(
                plain, SC_AUTHENTICATED_ENCRYPTED, meter.config.system_title, ic, keys
            )
        return security.wrap_service_specific(
            plain, SC_AUTHENTICATED_ENCRYPTED, meter.config.system_title, ic, keys
        )

    # -- xDLMS services ------------------------------------------------------------------------
    def _service(self, plain: bytes) -> bytes | None:
        try:
            request = decode_apdu(plain)
        except DecodeError:
            tag = plain[0] if plain else 0
            if tag in (0xC0, 0xC1, 0xC3):
                return _exception(NOT_ALLOWED, ServiceError.OTHER_REASON)
            return _exception(UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)
        if self.state is State.PENDING:
            return self._pending(request)
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
        return _exception(UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)

    def _allowed(self, flag: Conformance) -> bool:
        return bool(self._conformance & flag)

    def _pending(self, request: object) -> bytes:
        """Before HLS pass 3 only reply_to_HLS_authentication is served."""
        if isinstance(request, ActionRequestNormal) and _is_hls_reply(request.method):
            return self._hls_reply(request)
        return _exception(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)

    def _hls_reply(self, request: ActionRequestNormal) -> bytes:
        keys = self._keys()
        assert keys is not None and self._client_title is not None and self.context is not None
        iip = request.invoke_id_and_priority
        reply = request.parameters
        try:
            if reply is None or not isinstance(reply.value, bytes):
                raise SecurityError("reply_to_HLS_authentication needs an octet-string")
            security.verify_hls_gmac_reply(keys, self._client_title, self._stoc, reply.value)
        except ProtocolError:
            self.state = State.IDLE
            self.context.status = 0
            return ActionResponseNormal(iip, ActionResult.READ_WRITE_DENIED, None).to_bytes()
        self.state = State.ASSOCIATED
        self.context.status = 2
        f_ctos = security.hls_gmac_reply(
            keys, self.meter.config.system_title, self.meter.next_server_ic(), self._ctos
        )
        return ActionResponseNormal(iip, ActionResult.SUCCESS, Data.octet_string(f_ctos)).to_bytes()

    # GET ------------------------------------------------------------------------------------
    def _get(self, request: GetRequestNormal | GetRequestNext | GetRequestWithList) -> bytes:
        if not self._allowed(Conformance.GET):
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        iip = request.invoke_id_and_priority
        if isinstance(request, GetRequestNext):
            return self._get_next(request)
        self._abort_blocks()
        if isinstance(request, GetRequestNormal):
            if request.access is not None and not self._allowed(Conformance.SELECTIVE_ACCESS):
                return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            result = self._read(request.attribute, request.access)
            response = GetResponseNormal(iip, result).to_bytes()
            if len(response) <= self._send_limit():
                return response
            assert isinstance(result, Data)
            return self._start_blocks(iip, encode_data(result))
        if not self._allowed(Conformance.MULTIPLE_REFERENCES):
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if any(access is not None for _d, access in request.attributes) and not self._allowed(
            Conformance.SELECTIVE_ACCESS
        ):
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        results = tuple(self._read(d, access) for d, access in request.attributes)
        response = GetResponseWithList(iip, results).to_bytes()
        if len(response) <= self._send_limit():
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

    def _send_limit(self) -> int:
        assert self.context is not None
        limit = min(self.context.client_max_pdu, self.max_pdu_size)
        return limit - CIPHERING_OVERHEAD if self.ciphered else limit

    def _start_blocks(self, iip: int, raw: bytes) -> bytes:
        if not self._allowed(Conformance.BLOCK_TRANSFER_GET):
            return GetResponseNormal(iip, DataAccessResult.OTHER_REASON).to_bytes()
        chunk = max(self._send_limit() - 12, 16)  # C4 02 iip last block(4) choice length(3)
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
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
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
                return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
            results = tuple(
                self._write(descriptor, access, value)
                for (descriptor, access), value in zip(
                    request.attributes, request.values, strict=True
                )
            )
            return SetResponseWithList(iip, results).to_bytes()
        if not self._allowed(Conformance.BLOCK_TRANSFER_SET):
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
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
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
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
                return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
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
            return _exception(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
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


# -- helpers -----------------------------------------------------------------------------------
def _level(kind: Kind, configured: Security) -> AccessLevel:
    if kind is Kind.MANAGEMENT:
        return AccessLevel.MANAGEMENT
    if kind is Kind.READER:
        return AccessLevel.READER
    # The public client may do everything in the lab setting "--security none".
    return AccessLevel.MANAGEMENT if configured is Security.NONE else AccessLevel.PUBLIC


def _is_hls_reply(method: MethodDescriptor) -> bool:
    return (
        method.class_id == AssociationLN.CLASS_ID
        and method.obis == Obises.CURRENT_ASSOCIATION
        and method.method == AssociationLN.REPLY_TO_HLS_AUTHENTICATION
    )


def _exception(
    state_error: int, service_error: int, invocation_counter: int | None = None
) -> bytes:
    return ExceptionResponse(state_error, service_error, invocation_counter).to_bytes()


def _initiate_error(value: int) -> _Refused:
    error = ConfirmedServiceError(
        ConfirmedService.INITIATE_ERROR, ServiceErrorType.INITIATE, value
    ).to_bytes()
    return _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN, user_information=error)


def _aare_refused(application_context: int, diagnostic: int) -> bytes:
    return AARE(
        application_context=application_context,
        result=AssociationResult.REJECTED_PERMANENT,
        diagnostic_source="acse-service-user",
        diagnostic=diagnostic,
        responding_ap_title=None,
        mechanism=None,
        responding_authentication_value=None,
        user_information=None,
    ).to_bytes()


def _service_specific_sc(apdu: bytes) -> int:
    """The security control byte of a glo- APDU: tag, A-XDR length, then SC."""
    _length, offset = decode_length(apdu, 1)
    if offset >= len(apdu):
        raise DecodeError("ciphered APDU without a security header")
    return apdu[offset]
