"""Sans-IO server side of one client connection to a simulated meter: APDU bytes in, bytes out.

The transport (wrapper or HDLC) hands every complete APDU to `ServerSession.handle_apdu` and
sends back what it returns. The session does what a meter's application layer does:

* ACSE: AARQ -> AARE (whether and on what terms: simulators/acse.py); RLRQ -> RLRE. The
  management association is pending until the client passes HLS-GMAC pass 3/4 here.
* xDLMS: GET, SET and ACTION with lists and blocks (simulators/xdlms.py), once associated.
* Ciphering in the management association: glo- (C8/C9/CB) and general-glo (DB) requests,
  answered the same way under the meter's system title with a rising invocation counter;
  replayed client counters and undecipherable requests get an exception response.

Malformed or out-of-place requests get an ExceptionResponse; nothing raises out of
handle_apdu."""

from __future__ import annotations

import enum

from cosem_objects import security
from cosem_objects.acse import RLRE
from cosem_objects.apdu.action import ActionRequestNormal, ActionResponseNormal
from cosem_objects.apdu.common import ActionResult, MethodDescriptor
from cosem_objects.apdu.errors import EXCEPTION_RESPONSE, ServiceError
from cosem_objects.axdr import decode_length
from cosem_objects.classes import AssociationLN, Obises
from cosem_objects.data import Data
from cosem_objects.decode import decode_apdu
from cosem_objects.errors import DecodeError, ProtocolError, SecurityError
from simulators.acse import (
    KINDS,
    SC_AUTHENTICATED_ENCRYPTED,
    Kind,
    association_keys,
    negotiate,
)
from simulators.meter import SimMeter
from simulators.objects.model import AssociationContext
from simulators.xdlms import NOT_ALLOWED, UNKNOWN, XdlmsServer, exception_response

DEFAULT_SERVER_MAX_PDU = 1024
CIPHERING_OVERHEAD = 32  # general-glo header (1 + 9 + 3 + 1 + 4) + GCM tag (12), rounded up

_GLO_REQUEST_TAGS = {0xC8, 0xC9, 0xCB}
_GENERAL_GLO = 0xDB


class State(enum.Enum):
    IDLE = "idle"  # no association
    PENDING = "pending"  # HLS: waiting for reply_to_HLS_authentication
    ASSOCIATED = "associated"
    RELEASED = "released"


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
        self.kind: Kind | None = KINDS.get(client_sap)
        self._client_title: bytes | None = None
        self._stoc = b""
        self._ctos = b""
        self._general_glo = False  # how the last ciphered request came: reply the same way
        self._xdlms: XdlmsServer | None = None

    @property
    def released(self) -> bool:
        return self.state is State.RELEASED

    @property
    def associated(self) -> bool:
        return self.state is State.ASSOCIATED

    @property
    def in_association(self) -> bool:
        """Accepted (or, for HLS, between AARE and pass 4): what the fleet counts as a
        session of the meter (simulators/control.py `stats`)."""
        return self.state in (State.PENDING, State.ASSOCIATED)

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
            return exception_response(NOT_ALLOWED, ServiceError.OTHER_REASON)

    def _handle(self, apdu: bytes) -> bytes | None:
        if not apdu:
            return exception_response(UNKNOWN, ServiceError.OTHER_REASON)
        tag = apdu[0]
        if tag == 0x60:
            return self._aarq(apdu)
        if tag == 0x62:
            return self._rlrq()
        if self.state not in (State.PENDING, State.ASSOCIATED):
            return exception_response(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        if self.ciphered:
            return self._ciphered(apdu)
        if tag in _GLO_REQUEST_TAGS or tag == _GENERAL_GLO:
            return exception_response(NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
        if len(apdu) > self.max_pdu_size:
            return exception_response(NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
        return self._service(apdu)

    # -- ACSE ----------------------------------------------------------------------------------
    def _aarq(self, raw: bytes) -> bytes:
        self._reset()
        aare, agreement = negotiate(self.meter, self.kind, self.client_sap, self.max_pdu_size, raw)
        if agreement is None:
            return aare
        management = self.kind is Kind.MANAGEMENT
        self.context = agreement.context
        self._client_title = agreement.client_title
        self._ctos = agreement.ctos
        self._stoc = agreement.stoc
        send_limit = min(agreement.context.client_max_pdu, self.max_pdu_size)
        if management:
            send_limit -= CIPHERING_OVERHEAD
        self._xdlms = XdlmsServer(self.meter, self.context, agreement.conformance, send_limit)
        self.state = State.PENDING if management else State.ASSOCIATED
        return aare

    def _rlrq(self) -> bytes:
        # The RLRQ may carry a (ciphered) InitiateRequest (dlms-cosem sends one); a release is
        # granted whatever it holds.
        self._reset()
        self.state = State.RELEASED
        return RLRE(reason=0, user_information=None).to_bytes()

    def _reset(self) -> None:
        self.state = State.IDLE
        self.context = None
        self._client_title = None
        self._stoc = self._ctos = b""
        self._xdlms = None

    def _keys(self) -> security.SecurityKeys | None:
        return association_keys(self.meter, self.kind)

    # -- ciphering -----------------------------------------------------------------------------
    def _ciphered(self, apdu: bytes) -> bytes | None:
        keys = self._keys()
        assert keys is not None and self._client_title is not None
        tag = apdu[0]
        if len(apdu) > self.max_pdu_size + CIPHERING_OVERHEAD:
            return exception_response(NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
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
                return exception_response(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
        except ProtocolError:
            return exception_response(NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)
        if sc & 0x30 != 0x30:  # the security policy asks for authenticated and encrypted
            return exception_response(NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)
        if not self.meter.accept_client_ic(ic):
            return exception_response(
                NOT_ALLOWED,
                ServiceError.INVOCATION_COUNTER_ERROR,
                (self.meter.client_ic_high + 1) & 0xFFFFFFFF,
            )
        if not general and security.PLAIN_TAGS.get(tag) != (plain[0] if plain else None):
            # A glo-get-request must carry a get-request, and so on.
            return exception_response(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
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
                return exception_response(NOT_ALLOWED, ServiceError.OTHER_REASON)
            return exception_response(UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)
        if self.state is State.PENDING:
            return self._pending(request)
        assert self._xdlms is not None
        return self._xdlms.handle(request)

    def _pending(self, request: object) -> bytes:
        """Before HLS pass 3 only reply_to_HLS_authentication is served."""
        if isinstance(request, ActionRequestNormal) and _is_hls_reply(request.method):
            return self._hls_reply(request)
        return exception_response(NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)

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


# -- helpers -----------------------------------------------------------------------------------
def _is_hls_reply(method: MethodDescriptor) -> bool:
    return (
        method.class_id == AssociationLN.CLASS_ID
        and method.obis == Obises.CURRENT_ASSOCIATION
        and method.method == AssociationLN.REPLY_TO_HLS_AUTHENTICATION
    )


def _service_specific_sc(apdu: bytes) -> int:
    """The security control byte of a glo- APDU: tag, A-XDR length, then SC."""
    _length, offset = decode_length(apdu, 1)
    if offset >= len(apdu):
        raise DecodeError("ciphered APDU without a security header")
    return apdu[offset]
