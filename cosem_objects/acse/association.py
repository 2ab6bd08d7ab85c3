"""A-ASSOCIATE: the AARQ and AARE.

The user-information is kept raw, so a ciphered glo-initiate-request or -response can be passed
through and deciphered with the keys of the association (cosem_objects.security)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cosem_objects.acse.ber import (
    MECHANISM_OID_PREFIX,
    apdu_fields,
    ber_int_value,
    check_context,
    decode_ap_title,
    decode_auth_value,
    decode_ber_int,
    decode_context,
    decode_mechanism,
    decode_user_information,
    encode_context,
    read_tlv,
    single,
    tlv,
)
from cosem_objects.acse.dump import hex_or_none, secret_hex
from cosem_objects.acse.initiate import (
    INITIATE_REQUEST_TAG,
    INITIATE_RESPONSE_TAG,
    InitiateRequest,
    InitiateResponse,
)
from cosem_objects.acse.vocabulary import (
    CONTEXT_NAMES,
    MECHANISM_NAMES,
    AcseServiceUserDiagnostic,
    ApplicationContext,
    AssociationResult,
    DiagnosticSource,
    MechanismName,
)
from cosem_objects.apdu.errors import CONFIRMED_SERVICE_ERROR, ConfirmedServiceError
from cosem_objects.errors import DecodeError, SecurityError
from cosem_objects.security import GloCipheredApdu, SecurityKeys, unwrap_service_specific

AARQ_TAG = 0x60
AARE_TAG = 0x61
CONFIRMED_SERVICE_ERROR_TAG = CONFIRMED_SERVICE_ERROR  # an AARE refusing the xDLMS initiate
GLO_INITIATE_REQUEST_TAG = 0x21
GLO_INITIATE_RESPONSE_TAG = 0x28
ACSE_REQUIREMENTS_AUTHENTICATION = b"\x07\x80"  # BIT STRING: 7 unused bits, bit 0 set
_AARQ_FIELDS = frozenset((0xA1, 0xA6, 0x8A, 0x8B, 0xAC, 0xBE))
_AARE_FIELDS = frozenset((0xA1, 0xA2, 0xA3, 0xA4, 0x88, 0x89, 0xAA, 0xBE))


def _glo_json(
    user_information: bytes, system_title: bytes | None, keys: SecurityKeys | None
) -> dict[str, Any]:
    ciphered = GloCipheredApdu.from_bytes(user_information)
    return ciphered.security_json(system_title, keys)


@dataclass(frozen=True, slots=True)
class AARQ:
    """A-ASSOCIATE request. `user_information` is the raw xDLMS part: an InitiateRequest (0x01)
    or a glo-initiate-request (0x21) ciphered with the client's system title (calling AP
    title). `acse_requirements` None means: 07 80 (authentication) when a mechanism is given,
    absent otherwise."""

    application_context: int = ApplicationContext.LN
    calling_ap_title: bytes | None = None
    mechanism: MechanismName | None = None
    calling_authentication_value: bytes | None = field(default=None, repr=False)
    user_information: bytes | None = None
    acse_requirements: bytes | None = None

    def __post_init__(self) -> None:
        check_context(self.application_context)
        if self.acse_requirements is None and self.mechanism is not None:
            object.__setattr__(self, "acse_requirements", ACSE_REQUIREMENTS_AUTHENTICATION)

    def to_bytes(self) -> bytes:
        body = bytearray(encode_context(self.application_context))
        if self.calling_ap_title is not None:
            body += tlv(0xA6, tlv(0x04, self.calling_ap_title))
        if self.acse_requirements is not None:
            body += tlv(0x8A, self.acse_requirements)
        if self.mechanism is not None:
            body += tlv(0x8B, MECHANISM_OID_PREFIX + bytes((self.mechanism,)))
        if self.calling_authentication_value is not None:
            body += tlv(0xAC, tlv(0x80, self.calling_authentication_value))
        if self.user_information is not None:
            body += tlv(0xBE, tlv(0x04, self.user_information))
        return tlv(AARQ_TAG, bytes(body))

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARQ:
        fields = apdu_fields(buf, AARQ_TAG, "AARQ", _AARQ_FIELDS)
        if 0xA1 not in fields:
            raise DecodeError("AARQ without application-context-name")
        context = decode_context(fields[0xA1])
        title = fields.get(0xA6)
        mechanism = fields.get(0x8B)
        auth = fields.get(0xAC)
        info = fields.get(0xBE)
        return cls(
            application_context=context,
            calling_ap_title=decode_ap_title(title, "calling-AP-title")
            if title is not None
            else None,
            mechanism=decode_mechanism(mechanism) if mechanism is not None else None,
            calling_authentication_value=(
                decode_auth_value(auth, "calling-authentication-value")
                if auth is not None
                else None
            ),
            user_information=decode_user_information(info) if info is not None else None,
            acse_requirements=fields.get(0x8A),
        )

    @property
    def initiate_request(self) -> InitiateRequest | None:
        """The plain InitiateRequest, or None when absent or ciphered (see
        decrypt_initiate_request). DecodeError when it is malformed."""
        if not self.user_information or self.user_information[0] != INITIATE_REQUEST_TAG:
            return None
        return InitiateRequest.from_bytes(self.user_information)

    def decrypt_initiate_request(self, keys: SecurityKeys) -> InitiateRequest:
        """Deciphers a glo-initiate-request with the calling AP title as sender system title."""
        if not self.user_information or self.user_information[0] != GLO_INITIATE_REQUEST_TAG:
            raise DecodeError("user-information is not a glo-initiate-request")
        if self.calling_ap_title is None:
            raise SecurityError("ciphered AARQ without calling-AP-title")
        plaintext, _ic = unwrap_service_specific(self.user_information, self.calling_ap_title, keys)
        return InitiateRequest.from_bytes(plaintext)

    def to_json(self, keys: SecurityKeys | None = None, *, redact: bool = False) -> dict[str, Any]:
        """The vectors' `expect["apdu"]` shape. A full dump: it holds the LLS password and any
        dedicated key unless `redact`, so do not log it. With `keys`, a ciphered
        glo-initiate-request is checked and decoded."""
        out: dict[str, Any] = {
            "type": "AARQ",
            "application_context": int(self.application_context),
            "calling_ap_title": hex_or_none(self.calling_ap_title),
            "acse_requirements": hex_or_none(self.acse_requirements),
            "mechanism": int(self.mechanism) if self.mechanism is not None else None,
            "calling_authentication_value": secret_hex(self.calling_authentication_value, redact),
            "user_information": hex_or_none(self.user_information),
            "application_context_name": CONTEXT_NAMES.get(self.application_context),
            "mechanism_name": MECHANISM_NAMES[self.mechanism]
            if self.mechanism is not None
            else None,
        }
        info = self.user_information
        try:
            if info and info[0] == INITIATE_REQUEST_TAG:
                out["initiate_request"] = InitiateRequest.from_bytes(info).to_json(redact=redact)
            elif info and info[0] == GLO_INITIATE_REQUEST_TAG:
                glo = _glo_json(info, self.calling_ap_title, keys)
                out["glo_initiate_request"] = glo
                if keys is not None and glo["tag_ok"] is not False:
                    request = self.decrypt_initiate_request(keys)
                    out["initiate_request"] = request.to_json(redact=redact)
        except (DecodeError, SecurityError) as exc:
            out["user_information_error"] = str(exc)
        return out


@dataclass(frozen=True, slots=True)
class AARE:
    """A-ASSOCIATE response. `user_information` is the raw xDLMS part: an InitiateResponse
    (0x08), a glo-initiate-response (0x28, ciphered with the responding AP title) or a
    confirmed-service-error (0x0E)."""

    application_context: int = ApplicationContext.LN
    result: AssociationResult = AssociationResult.ACCEPTED
    diagnostic_source: DiagnosticSource = "acse-service-user"
    diagnostic: int = AcseServiceUserDiagnostic.NULL
    responding_ap_title: bytes | None = None
    mechanism: MechanismName | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None
    acse_requirements: bytes | None = None

    def __post_init__(self) -> None:
        check_context(self.application_context)
        if self.diagnostic_source not in ("acse-service-user", "acse-service-provider"):
            raise ValueError(f"unknown diagnostic source {self.diagnostic_source!r}")
        if self.acse_requirements is None and self.mechanism is not None:
            object.__setattr__(self, "acse_requirements", ACSE_REQUIREMENTS_AUTHENTICATION)

    def to_bytes(self) -> bytes:
        body = bytearray(encode_context(self.application_context))
        body += tlv(0xA2, tlv(0x02, ber_int_value(self.result)))
        choice = 0xA1 if self.diagnostic_source == "acse-service-user" else 0xA2
        body += tlv(0xA3, tlv(choice, tlv(0x02, ber_int_value(self.diagnostic))))
        if self.responding_ap_title is not None:
            body += tlv(0xA4, tlv(0x04, self.responding_ap_title))
        if self.acse_requirements is not None:
            body += tlv(0x88, self.acse_requirements)
        if self.mechanism is not None:
            body += tlv(0x89, MECHANISM_OID_PREFIX + bytes((self.mechanism,)))
        if self.responding_authentication_value is not None:
            body += tlv(0xAA, tlv(0x80, self.responding_authentication_value))
        if self.user_information is not None:
            body += tlv(0xBE, tlv(0x04, self.user_information))
        return tlv(AARE_TAG, bytes(body))

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARE:
        fields = apdu_fields(buf, AARE_TAG, "AARE", _AARE_FIELDS)
        for tag, name in (
            (0xA1, "application-context-name"),
            (0xA2, "result"),
            (0xA3, "result-source-diagnostic"),
        ):
            if tag not in fields:
                raise DecodeError(f"AARE without {name}")
        context = decode_context(fields[0xA1])
        result_value = decode_ber_int(single(fields[0xA2], 0x02, "result"), "result")
        try:
            result = AssociationResult(result_value)
        except ValueError:
            raise DecodeError(f"unknown association result {result_value}") from None
        source_tag, start, end = read_tlv(fields[0xA3], 0, len(fields[0xA3]))
        if end != len(fields[0xA3]) or source_tag not in (0xA1, 0xA2):
            raise DecodeError("malformed result-source-diagnostic")
        source: DiagnosticSource = (
            "acse-service-user" if source_tag == 0xA1 else "acse-service-provider"
        )
        diagnostic = decode_ber_int(
            single(fields[0xA3][start:end], 0x02, "diagnostic"), "diagnostic"
        )
        title = fields.get(0xA4)
        mechanism = fields.get(0x89)
        auth = fields.get(0xAA)
        info = fields.get(0xBE)
        return cls(
            application_context=context,
            result=result,
            diagnostic_source=source,
            diagnostic=diagnostic,
            responding_ap_title=(
                decode_ap_title(title, "responding-AP-title") if title is not None else None
            ),
            mechanism=decode_mechanism(mechanism) if mechanism is not None else None,
            responding_authentication_value=(
                decode_auth_value(auth, "responding-authentication-value")
                if auth is not None
                else None
            ),
            user_information=decode_user_information(info) if info is not None else None,
            acse_requirements=fields.get(0x88),
        )

    @property
    def initiate_response(self) -> InitiateResponse | None:
        """The plain InitiateResponse, or None when absent, ciphered or an error."""
        if not self.user_information or self.user_information[0] != INITIATE_RESPONSE_TAG:
            return None
        return InitiateResponse.from_bytes(self.user_information)

    @property
    def confirmed_service_error(self) -> ConfirmedServiceError | None:
        """The confirmed-service-error (0x0E) of a refused xDLMS initiate, e.g. 0E 01 06 01:
        initiateError / initiate / dlms-version-too-low."""
        if not self.user_information or self.user_information[0] != CONFIRMED_SERVICE_ERROR_TAG:
            return None
        return ConfirmedServiceError.from_bytes(self.user_information)

    def decrypt_initiate_response(self, keys: SecurityKeys) -> InitiateResponse:
        """Deciphers a glo-initiate-response with the responding AP title as system title."""
        if not self.user_information or self.user_information[0] != GLO_INITIATE_RESPONSE_TAG:
            raise DecodeError("user-information is not a glo-initiate-response")
        if self.responding_ap_title is None:
            raise SecurityError("ciphered AARE without responding-AP-title")
        plaintext, _ic = unwrap_service_specific(
            self.user_information, self.responding_ap_title, keys
        )
        return InitiateResponse.from_bytes(plaintext)

    def to_json(self, keys: SecurityKeys | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "AARE",
            "application_context": int(self.application_context),
            "result": int(self.result),
            "diagnostic": {"source": self.diagnostic_source, "value": int(self.diagnostic)},
            "responding_ap_title": hex_or_none(self.responding_ap_title),
            "acse_requirements": hex_or_none(self.acse_requirements),
            "mechanism": int(self.mechanism) if self.mechanism is not None else None,
            "responding_authentication_value": hex_or_none(self.responding_authentication_value),
            "user_information": hex_or_none(self.user_information),
            "application_context_name": CONTEXT_NAMES.get(self.application_context),
            "mechanism_name": MECHANISM_NAMES[self.mechanism]
            if self.mechanism is not None
            else None,
        }
        info = self.user_information
        try:
            if info and info[0] == INITIATE_RESPONSE_TAG:
                out["initiate_response"] = InitiateResponse.from_bytes(info).to_json()
            elif info and info[0] == CONFIRMED_SERVICE_ERROR_TAG:
                out["confirmed_service_error"] = ConfirmedServiceError.from_bytes(info).to_json()
            elif info and info[0] == GLO_INITIATE_RESPONSE_TAG:
                glo = _glo_json(info, self.responding_ap_title, keys)
                out["glo_initiate_response"] = glo
                if keys is not None and glo["tag_ok"] is not False:
                    out["initiate_response"] = self.decrypt_initiate_response(keys).to_json()
        except (DecodeError, SecurityError) as exc:
            out["user_information_error"] = str(exc)
        return out
