"""Whether, and on what terms, a simulated meter accepts an AARQ: the ACSE side of an association.

Three associations, chosen by the client SAP: public (16, no security), reader (32, LLS
password) and management (1, HLS-GMAC with suite 0, every APDU authenticated and encrypted).
An accepted management AARQ only opens the way: the association stays pending until the client
answers the meter's challenge (simulators/association.py). A refusal carries the AARE result and
diagnostic a real meter would give, or an initiate-error in the user-information."""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass

from cosem_objects import security
from cosem_objects.acse import (
    AARE,
    AARQ,
    DEFAULT_LN_CONFORMANCE,
    AcseServiceUserDiagnostic,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    MechanismName,
)
from cosem_objects.apdu.errors import (
    ConfirmedService,
    ConfirmedServiceError,
    InitiateErrorValue,
    ServiceErrorType,
)
from cosem_objects.errors import ProtocolError
from simulators.config import (
    MANAGEMENT_CLIENT_SAP,
    PUBLIC_CLIENT_SAP,
    READER_CLIENT_SAP,
    Security,
)
from simulators.meter import SimMeter
from simulators.objects.model import AccessLevel, AssociationContext

# What the meter offers; the association gets the intersection with what the client proposes.
SERVER_CONFORMANCE = DEFAULT_LN_CONFORMANCE
CIPHERED_CONFORMANCE = SERVER_CONFORMANCE | Conformance.GENERAL_PROTECTION
DLMS_VERSION = 6
VAA_NAME_LN = 0x0007
MIN_CLIENT_PDU = 64
SC_AUTHENTICATED_ENCRYPTED = 0x30


class Kind(enum.Enum):
    PUBLIC = "public"
    READER = "reader"
    MANAGEMENT = "management"


KINDS = {
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


@dataclass(frozen=True, slots=True)
class Agreement:
    """The terms of an accepted AARQ."""

    context: AssociationContext
    conformance: Conformance
    client_title: bytes | None = None  # management: the client's system title
    ctos: bytes = b""  # management: the client's challenge
    stoc: bytes = b""  # management: the meter's challenge


def association_keys(meter: SimMeter, kind: Kind | None) -> security.SecurityKeys | None:
    """The management association's keys (None for the others); ValueError when unusable."""
    config = meter.config
    if kind is not Kind.MANAGEMENT:
        return None
    return security.SecurityKeys(config.enc_key, config.auth_key)


def negotiate(
    meter: SimMeter, kind: Kind | None, client_sap: int, max_pdu_size: int, raw: bytes
) -> tuple[bytes, Agreement | None]:
    """The AARE answering the AARQ `raw`, and the agreement when it accepts."""
    try:
        aarq = AARQ.from_bytes(raw)
    except ProtocolError:
        return _aare_refused(1, AcseServiceUserDiagnostic.NO_REASON_GIVEN), None
    try:
        return _accept(meter, kind, client_sap, max_pdu_size, aarq)
    except _Refused as refusal:
        aare = AARE(
            application_context=aarq.application_context,
            result=refusal.result,
            diagnostic_source="acse-service-user",
            diagnostic=refusal.diagnostic,
            responding_ap_title=None,
            mechanism=None,
            responding_authentication_value=None,
            user_information=refusal.user_information,
        ).to_bytes()
        return aare, None


def _accept(
    meter: SimMeter, kind: Kind | None, client_sap: int, max_pdu_size: int, aarq: AARQ
) -> tuple[bytes, Agreement]:
    if meter.faults.refuse_association:
        raise _Refused(
            AcseServiceUserDiagnostic.NO_REASON_GIVEN, AssociationResult.REJECTED_TRANSIENT
        )
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
        keys = association_keys(meter, kind)
    except ValueError as exc:  # the meter has no usable keys: nobody can authenticate
        raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE) from exc
    client_title: bytes | None = None
    ctos = b""
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
        client_title = title
        ctos = challenge
    request = _initiate_request(meter, kind, client_title, aarq.user_information, keys)
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
    context = AssociationContext(
        level=_level(kind, meter.config.security),
        client_sap=client_sap,
        server_sap=meter.config.server_logical,
        application_context=aarq.application_context,
        mechanism=int(mechanism),
        conformance=negotiated.to_bytes(),
        client_max_pdu=client_pdu,
        server_max_pdu=max_pdu_size,
        dlms_version=DLMS_VERSION,
        status=1 if kind is Kind.MANAGEMENT else 2,
        client_system_title=client_title,
    )
    initiate = InitiateResponse(
        quality_of_service=None,
        dlms_version=DLMS_VERSION,
        conformance=negotiated,
        max_pdu_size=max_pdu_size,
        vaa_name=VAA_NAME_LN,
    ).to_bytes()
    diagnostic = AcseServiceUserDiagnostic.NULL
    responding_title: bytes | None = None
    stoc: bytes | None = None
    if kind is Kind.MANAGEMENT:
        assert keys is not None
        meter.client_system_title = client_title
        initiate = security.wrap_service_specific(
            initiate,
            SC_AUTHENTICATED_ENCRYPTED,
            meter.config.system_title,
            meter.next_server_ic(),
            keys,
        )
        diagnostic = AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED
        responding_title = meter.config.system_title
        stoc = os.urandom(16)
    aare = AARE(
        application_context=aarq.application_context,
        result=AssociationResult.ACCEPTED,
        diagnostic_source="acse-service-user",
        diagnostic=diagnostic,
        responding_ap_title=responding_title,
        mechanism=None if mechanism == MechanismName.NONE else mechanism,
        responding_authentication_value=stoc,
        user_information=initiate,
    ).to_bytes()
    return aare, Agreement(context, negotiated, client_title, ctos, stoc or b"")


def _initiate_request(
    meter: SimMeter,
    kind: Kind,
    client_title: bytes | None,
    user_information: bytes | None,
    keys: security.SecurityKeys | None,
) -> InitiateRequest:
    if not user_information:
        raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
    plain = user_information
    if user_information[0] == 0x21:  # glo-initiate-request
        if kind is not Kind.MANAGEMENT or keys is None or client_title is None:
            raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        try:
            plain, ic = security.unwrap_service_specific(user_information, client_title, keys)
        except ProtocolError as exc:
            raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE) from exc
        if not meter.accept_client_ic(ic):
            raise _Refused(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE)
    try:
        return InitiateRequest.from_bytes(plain)
    except ProtocolError as exc:
        raise _Refused(AcseServiceUserDiagnostic.NO_REASON_GIVEN) from exc


def _level(kind: Kind, configured: Security) -> AccessLevel:
    if kind is Kind.MANAGEMENT:
        return AccessLevel.MANAGEMENT
    if kind is Kind.READER:
        return AccessLevel.READER
    # The public client may do everything in the lab setting "--security none".
    return AccessLevel.MANAGEMENT if configured is Security.NONE else AccessLevel.PUBLIC


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
