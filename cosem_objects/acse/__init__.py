"""ACSE APDUs (AARQ, AARE, RLRQ, RLRE) in BER, and the xDLMS InitiateRequest/Response they carry.

Our own codec rather than dlms-cosem's: the decoder here is bounded (every length is checked
against the enclosing value, unknown optional fields are skipped, anything else malformed is a
DecodeError), encodes long BER lengths, and keeps the raw user-information so a ciphered
glo-initiate-request can be passed through and decrypted with cosem_objects.security.

Wire formats: dlms-notes section 16 (Green Book 9.4 / ISO 8650 as profiled by DLMS UA).

One module per part: `association` (AARQ/AARE), `release` (RLRQ/RLRE), `initiate` (the xDLMS
InitiateRequest/Response), `conformance`, `vocabulary` (contexts, mechanisms, results,
diagnostics), `ber` (TLV reading and the shared fields), `decode` (any of them by tag)."""

from __future__ import annotations

from cosem_objects.acse.association import (
    AARE,
    AARE_TAG,
    AARQ,
    AARQ_TAG,
    ACSE_REQUIREMENTS_AUTHENTICATION,
    CONFIRMED_SERVICE_ERROR_TAG,
    GLO_INITIATE_REQUEST_TAG,
    GLO_INITIATE_RESPONSE_TAG,
)
from cosem_objects.acse.conformance import DEFAULT_LN_CONFORMANCE, Conformance
from cosem_objects.acse.decode import AcseApdu, decode_acse
from cosem_objects.acse.initiate import (
    INITIATE_REQUEST_TAG,
    INITIATE_RESPONSE_TAG,
    VAA_NAME_LN,
    VAA_NAME_SN,
    InitiateRequest,
    InitiateResponse,
)
from cosem_objects.acse.release import RLRE, RLRE_TAG, RLRQ, RLRQ_TAG
from cosem_objects.acse.vocabulary import (
    AcseServiceProviderDiagnostic,
    AcseServiceUserDiagnostic,
    ApplicationContext,
    AssociationResult,
    DiagnosticSource,
    MechanismName,
    ReleaseRequestReason,
    ReleaseResponseReason,
)

__all__ = [
    "AARE",
    "AARE_TAG",
    "AARQ",
    "AARQ_TAG",
    "ACSE_REQUIREMENTS_AUTHENTICATION",
    "CONFIRMED_SERVICE_ERROR_TAG",
    "DEFAULT_LN_CONFORMANCE",
    "GLO_INITIATE_REQUEST_TAG",
    "GLO_INITIATE_RESPONSE_TAG",
    "INITIATE_REQUEST_TAG",
    "INITIATE_RESPONSE_TAG",
    "RLRE",
    "RLRE_TAG",
    "RLRQ",
    "RLRQ_TAG",
    "VAA_NAME_LN",
    "VAA_NAME_SN",
    "AcseApdu",
    "AcseServiceProviderDiagnostic",
    "AcseServiceUserDiagnostic",
    "ApplicationContext",
    "AssociationResult",
    "Conformance",
    "DiagnosticSource",
    "InitiateRequest",
    "InitiateResponse",
    "MechanismName",
    "ReleaseRequestReason",
    "ReleaseResponseReason",
    "decode_acse",
]
