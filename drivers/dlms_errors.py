"""Errors the DLMS client session raises, each with a one-line message fit for a field engineer."""

from __future__ import annotations

from cosem_objects.errors import AuthenticationError, ProtocolError


class DlmsError(Exception):
    """Base of the errors a session raises for a meter's answer."""


class AssociationRefused(DlmsError):
    """The meter answered the AARQ with a rejection."""

    def __init__(self, result: int, diagnostic: int, detail: str) -> None:
        super().__init__(f"association refused by the meter: {detail}")
        self.result = result
        self.diagnostic = diagnostic


class AuthenticationFailed(AssociationRefused, AuthenticationError):
    """Wrong password or key: the meter refused the credentials, or its HLS reply did not verify."""


class DataAccessFailed(DlmsError):
    """A GET/SET on one attribute was answered with a data-access-result other than success."""

    def __init__(self, what: str, result: int, name: str) -> None:
        super().__init__(f"{what}: meter answered {name} ({result})")
        self.result = result
        self.result_name = name


class ActionFailed(DlmsError):
    def __init__(self, what: str, result: int, name: str) -> None:
        super().__init__(f"{what}: meter answered {name} ({result})")
        self.result = result
        self.result_name = name


class ServiceRejected(DlmsError):
    """ExceptionResponse or ConfirmedServiceError: the meter did not process the request."""


class InvocationCounterRefused(ServiceRejected):
    """The meter refused a ciphered request because its invocation counter is not above the
    last one it took (another client of the same system title went ahead, or ours was restored
    to an old value). `expected` is the lowest counter it would take, when it says."""

    def __init__(self, message: str, expected: int | None) -> None:
        super().__init__(message)
        self.expected = expected


class UnexpectedResponse(DlmsError, ProtocolError):
    """A response that does not match the request (wrong type or invoke id)."""
