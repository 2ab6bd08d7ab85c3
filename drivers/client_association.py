"""The association half of the sans-IO client: AARQ/AARE, HLS-GMAC pass 2 and 4, RLRQ/RLRE,
and which APDUs go ciphered. ClientConnection (drivers/client_core.py) adds the requests.

Kept apart because it is what an association is before and after any request: the negotiated
conformance and PDU size, the meter's system title and invocation counters, the challenges.
Where the association stands moves only through the table in drivers/client_state.py."""

from __future__ import annotations

import os
from typing import TypeVar

from cosem_objects import security
from cosem_objects.acse import (
    AARE,
    AARQ,
    AARQ_TAG,
    RLRE,
    RLRQ,
    RLRQ_TAG,
    AcseServiceUserDiagnostic,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    MechanismName,
)
from cosem_objects.apdu.errors import ConfirmedServiceError
from cosem_objects.apdu.gbt import GENERAL_BLOCK_TRANSFER
from cosem_objects.data import Data
from cosem_objects.errors import DecodeError, ProtocolError, SecurityError
from drivers.client_events import Done, HlsChallenged
from drivers.client_settings import Authentication, ClientSettings
from drivers.client_state import (
    ASSOCIATION_TRANSITIONS,
    AssociationEvent,
    AssociationState,
    Machine,
)
from drivers.dlms_errors import AssociationRefused, AuthenticationFailed

SC_AUTHENTICATED_ENCRYPTED = 0x30
# Sent as they are in a ciphered association: the AARQ carries its own ciphered InitiateRequest,
# the RLRQ nothing, a GBT ack only block numbers (the blocks' content is ciphered as a whole).
_SENT_AS_IS = frozenset((AARQ_TAG, RLRQ_TAG, GENERAL_BLOCK_TRANSFER))
_AUTHENTICATION_DIAGNOSTICS = frozenset(
    (
        AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE,
        AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
        AcseServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
    )
)
_AE = AssociationEvent
_Refusal = TypeVar("_Refusal", bound=AssociationRefused)


class ClientAssociation:
    """One association's establishment, ciphering and release. Not thread-safe."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._association = Machine("association", ASSOCIATION_TRANSITIONS, AssociationState.IDLE)
        self.negotiated_conformance = Conformance(0)
        self.server_max_pdu_size = 0xFFFF
        self.server_system_title: bytes | None = None
        self._ctos = b""
        self._stoc = b""
        self._server_ic_guard = security.InvocationCounterGuard()

    @property
    def state(self) -> AssociationState:
        return self._association.state

    def associate(self, invocation_counter: int | None = None) -> bytes:
        """The AARQ. A ciphered association needs an invocation counter for its InitiateRequest."""
        self._association.check(_AE.SEND_AARQ)
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
        self._association.go(_AE.SEND_AARQ)
        return aarq.to_bytes()

    def receive_aare(self, raw: bytes) -> HlsChallenged | Done:
        """Check the AARE. HlsChallenged for HLS-GMAC: the session then sends hls_reply(ic)."""
        self._association.go(_AE.RECEIVE_AARE)
        try:
            aare = AARE.from_bytes(raw)
        except ProtocolError:
            self._association.go(_AE.REFUSED)
            raise
        diagnostic = int(aare.diagnostic)
        if aare.result != AssociationResult.ACCEPTED:
            raise self._refused(_refusal(aare))
        user_info = aare.user_information or b""
        if self.settings.ciphered:
            if aare.responding_ap_title is None or len(aare.responding_ap_title) != 8:
                raise self._refused(
                    AssociationRefused(0, diagnostic, "AARE without the meter's system title")
                )
            self.server_system_title = aare.responding_ap_title
            if user_info[:1] == b"\x28":
                try:
                    user_info, server_ic = security.unwrap_service_specific(
                        user_info, self.server_system_title, self.settings.keys
                    )
                except SecurityError as exc:
                    raise self._refused(
                        AuthenticationFailed(0, diagnostic, f"cannot decrypt AARE: {exc}")
                    ) from exc
                self._server_ic_guard.check(server_ic)
        if user_info[:1] == b"\x0e":
            self._association.go(_AE.REFUSED)
            error = ConfirmedServiceError.from_bytes(user_info)
            raise AssociationRefused(int(aare.result), diagnostic, f"initiate error {error}")
        response = InitiateResponse.from_bytes(user_info)
        self.negotiated_conformance = response.conformance & self.settings.conformance
        self.server_max_pdu_size = response.max_pdu_size or 0xFFFF
        if self.settings.authentication is Authentication.HLS_GMAC:
            if diagnostic != AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED:
                raise self._refused(
                    AuthenticationFailed(0, diagnostic, "meter did not ask for HLS pass 3")
                )
            if not aare.responding_authentication_value:
                raise self._refused(
                    AuthenticationFailed(0, diagnostic, "AARE without a challenge (StoC)")
                )
            self._stoc = aare.responding_authentication_value
            self._association.go(_AE.HLS_CHALLENGED)
            return HlsChallenged()
        self._association.go(_AE.AARE_ACCEPTED)
        return Done(response)

    def _hls_reply_value(self, invocation_counter: int) -> Data:
        """HLS pass 3: f(StoC), the parameter of reply_to_HLS_authentication."""
        self._association.go(_AE.SEND_HLS_REPLY)
        return Data.octet_string(
            security.hls_gmac_reply(
                self.settings.keys,
                self.settings.client_system_title,
                invocation_counter,
                self._stoc,
            )
        )

    def _hls_refused(self, detail: str) -> AuthenticationFailed:
        """The meter refused our HLS reply: the association is back to idle; raise the result."""
        return self._refused(AuthenticationFailed(0, 13, detail))

    def _hls_verified(self, returned: Data | None) -> None:
        """HLS pass 4: the meter's f(CtoS) must verify before the association is up."""
        if returned is None or not isinstance(returned.value, bytes):
            raise self._hls_refused("meter sent no f(CtoS)")
        assert self.server_system_title is not None
        try:
            security.verify_hls_gmac_reply(
                self.settings.keys, self.server_system_title, self._ctos, returned.value
            )
        except SecurityError as exc:
            raise self._hls_refused(f"meter's HLS reply does not verify: {exc}") from exc
        self._association.go(_AE.HLS_VERIFIED)

    def release(self) -> bytes:
        self._association.go(_AE.SEND_RLRQ)
        return RLRQ(reason=0, user_information=None).to_bytes()

    def receive_rlre(self, raw: bytes) -> None:
        self._association.go(_AE.RECEIVE_RLRE)
        RLRE.from_bytes(raw)

    def _refused(self, error: _Refusal) -> _Refusal:
        """The association is back to idle; the caller raises `error`."""
        self._association.go(_AE.REFUSED)
        return error

    # -- ciphering -----------------------------------------------------------------------
    def needs_protection(self, request: bytes) -> bool:
        """Whether `request` goes out ciphered, and so needs an invocation counter: every
        xDLMS request of a ciphered association (see _SENT_AS_IS for the rest)."""
        return self.settings.ciphered and bool(request) and request[0] not in _SENT_AS_IS

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
        """Plain APDU from a reply: as it came in a plain association; deciphered in a ciphered
        one, which refuses replies in clear and replayed counters."""
        if not self.settings.ciphered:
            return raw
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
        elif tag in (0xD8, 0x0E, GENERAL_BLOCK_TRANSFER):
            return raw  # exception responses may come in clear; GBT carries ciphered content
        else:
            raise SecurityError(f"reply in clear (tag 0x{tag:02X}) in a ciphered association")
        self._server_ic_guard.check(ic)
        return plain


def _refusal(aare: AARE) -> AssociationRefused:
    """The error a rejected AARE stands for: our credentials, or anything else."""
    diagnostic = int(aare.diagnostic)
    try:
        name = AcseServiceUserDiagnostic(diagnostic).name.lower().replace("_", "-")
    except ValueError:
        name = f"diagnostic {aare.diagnostic}"
    result = {1: "rejected-permanent", 2: "rejected-transient"}.get(int(aare.result), "rejected")
    detail = f"{result}, {aare.diagnostic_source}: {name}"
    if diagnostic in _AUTHENTICATION_DIAGNOSTICS and aare.diagnostic_source == "acse-service-user":
        return AuthenticationFailed(int(aare.result), diagnostic, detail)
    return AssociationRefused(int(aare.result), diagnostic, detail)
