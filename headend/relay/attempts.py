"""What a relay command attempt can end in, beside success: the controller's settings, the
meter refusing or the command being superseded on the way, the errors a meter, its line or
the protocol may cause (logged without a traceback), and how an error reads in a command's
last_error. Kept apart from relay/controller.py, which runs the attempts."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DlmsError
from drivers.session import DlmsSession, RelayStatus

__all__ = [
    "EXPECTED_ERRORS",
    "CommandSuperseded",
    "ControllerSettings",
    "Refused",
    "describe_error",
    "status_or_none",
]


@dataclass(frozen=True)
class ControllerSettings:
    overdue_after_s: float = 1800.0
    retry_base_s: float = 5.0
    retry_max_backoff_s: float = 300.0
    scan_interval_s: float = 1.0
    """How often the database is scanned for due commands (operator commands, retries)."""
    max_concurrent: int = 1000
    """Relay sessions in flight at once (separate from the poll bound: commands skip it)."""
    session_budget_s: float = 120.0
    """Upper bound on one attempt (connect, read, operate, read back, release)."""


class Refused(Exception):
    """The meter answered but did not do it (stuck relay, forbidden by its control mode)."""

    def __init__(self, alarm: str, detail: str, status: RelayStatus | None = None) -> None:
        super().__init__(detail)
        self.alarm = alarm
        self.detail = detail
        self.status = status


class CommandSuperseded(Exception):
    """The command was superseded or its meter left the inventory before the ACTION."""


# What a meter, its line or the protocol may do to an attempt: logged without a traceback.
EXPECTED_ERRORS = (OSError, TimeoutError, ProtocolError, DlmsError)


async def status_or_none(session: DlmsSession) -> RelayStatus | None:
    try:
        return await session.relay_status()
    except (OSError, TimeoutError, ProtocolError, DlmsError):
        return None


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timeout: {exc}" if str(exc) else "timeout"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
