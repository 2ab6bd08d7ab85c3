"""The numbers an association exchange carries and their names: application contexts,
authentication mechanisms, results, diagnostics and release reasons. The names are the ones
the test vectors' `to_json` dumps show."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

DiagnosticSource = Literal["acse-service-user", "acse-service-provider"]


class ApplicationContext(IntEnum):
    LN = 1
    SN = 2
    LN_CIPHERED = 3
    SN_CIPHERED = 4


CONTEXT_NAMES = {1: "LN", 2: "SN", 3: "LN-ciphered", 4: "SN-ciphered"}


class MechanismName(IntEnum):
    NONE = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


MECHANISM_NAMES = {
    MechanismName.NONE: "none",
    MechanismName.LLS: "LLS",
    MechanismName.HLS: "HLS",
    MechanismName.HLS_MD5: "HLS-MD5",
    MechanismName.HLS_SHA1: "HLS-SHA1",
    MechanismName.HLS_GMAC: "HLS-GMAC",
    MechanismName.HLS_SHA256: "HLS-SHA256",
    MechanismName.HLS_ECDSA: "HLS-ECDSA",
}


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseServiceUserDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProviderDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class ReleaseRequestReason(IntEnum):
    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class ReleaseResponseReason(IntEnum):
    NORMAL = 0
    NOT_FINISHED = 1
    USER_DEFINED = 30
