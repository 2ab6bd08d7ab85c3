"""Event codes of the IDIS / DLMS UA event logs, and the names a head-end shows for them.

A meter's event logs (Profile generic, class 7) hold entries {date-time, event code}; an
EventNotification or event push carries the same code. The code alone says nothing to a
person, so the head-end publishes it with its name from this table.

Source of the numbering and names: the IDIS companion specification's event code tables
(IDIS Package 2, "Standard event log", "Fraud detection log", "Disconnector control log",
also used by DSMR 4/5), as implemented by the open-source Connexo/EnergyICT IDIS protocol
parsers (``protocolimpl/dlms/idis/events``: StandardEventLog, FraudDetectionLog,
DisconnectorControlLog). The log OBIS numbering 0.0.99.98.x.255 (x = 0 standard,
1 fraud detection, 2 disconnector control, 4 power quality) and the power-failure log
1.0.99.97.0.255 are those of docs/dlms-notes.md section 10 (Gurux OBISCodes.txt, DSMR/IDIS).
Codes are unique across the IDIS logs, so a code found in another log than its own still gets
its name; a code in no table is named ``"unknown event <code>"`` (manufacturer codes are
>= 230 in IDIS and vary by vendor)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "DISCONNECTOR_CONTROL_LOG",
    "EVENT_CODE_OBJECTS",
    "FRAUD_DETECTION_LOG",
    "LOG_NAMES",
    "METER_COVER_REMOVED",
    "POWER_DOWN",
    "POWER_FAILURE_CODES",
    "POWER_FAILURE_LOG",
    "POWER_QUALITY_LOG",
    "POWER_UP",
    "RELAY_EVENT_STATES",
    "STANDARD_EVENT_LOG",
    "TERMINAL_COVER_REMOVED",
    "event_name",
]

# -- logs (Profile generic, class 7) and their event-code objects (Data, class 1) ------------
STANDARD_EVENT_LOG: Final = "0.0.99.98.0.255"
FRAUD_DETECTION_LOG: Final = "0.0.99.98.1.255"
DISCONNECTOR_CONTROL_LOG: Final = "0.0.99.98.2.255"
POWER_QUALITY_LOG: Final = "0.0.99.98.4.255"
POWER_FAILURE_LOG: Final = "1.0.99.97.0.255"

LOG_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        STANDARD_EVENT_LOG: "standard event log",
        FRAUD_DETECTION_LOG: "fraud detection log",
        DISCONNECTOR_CONTROL_LOG: "disconnector control log",
        POWER_QUALITY_LOG: "power quality log",
        POWER_FAILURE_LOG: "power failure log",
    }
)

EVENT_CODE_OBJECTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        STANDARD_EVENT_LOG: "0.0.96.11.0.255",
        FRAUD_DETECTION_LOG: "0.0.96.11.1.255",
        DISCONNECTOR_CONTROL_LOG: "0.0.96.11.2.255",
        POWER_QUALITY_LOG: "0.0.96.11.4.255",
    }
)
"""The Data object that holds a log's latest event code (what a push object list names)."""

# -- codes the head-end acts on ---------------------------------------------------------------
POWER_DOWN: Final = 1
POWER_UP: Final = 2
TERMINAL_COVER_REMOVED: Final = 40
METER_COVER_REMOVED: Final = 44
DISCONNECTOR_READY_FOR_MANUAL_RECONNECTION: Final = 59
MANUAL_DISCONNECTION: Final = 60
MANUAL_CONNECTION: Final = 61
REMOTE_DISCONNECTION: Final = 62
REMOTE_CONNECTION: Final = 63
LOCAL_DISCONNECTION: Final = 64
LOCAL_RECONNECTION: Final = 69

POWER_FAILURE_CODES: Final = frozenset({POWER_DOWN})
"""Codes that mean the meter lost its supply (a last-gasp push carries Power down)."""

RELAY_EVENT_STATES: Final[Mapping[int, tuple[str, bool]]] = MappingProxyType(
    {
        DISCONNECTOR_READY_FOR_MANUAL_RECONNECTION: ("ready_for_reconnection", False),
        MANUAL_DISCONNECTION: ("disconnected", False),
        MANUAL_CONNECTION: ("connected", True),
        REMOTE_DISCONNECTION: ("disconnected", False),
        REMOTE_CONNECTION: ("connected", True),
        LOCAL_DISCONNECTION: ("disconnected", False),
        LOCAL_RECONNECTION: ("connected", True),
    }
)
"""Disconnector events and the (control state, output state) the relay is in after them."""

_STANDARD: Final = {
    1: "Power down",
    2: "Power up",
    3: "Daylight saving time enabled or disabled",
    4: "Clock adjusted (old date/time)",
    5: "Clock adjusted (new date/time)",
    6: "Clock invalid",
    7: "Replace battery",
    8: "Battery voltage low",
    9: "TOU activated",
    10: "Error register cleared",
    11: "Alarm register cleared",
    12: "Program memory error",
    13: "RAM error",
    14: "NV memory error",
    15: "Watchdog error",
    16: "Measurement system error",
    17: "Firmware ready for activation",
    18: "Firmware activated",
    19: "Passive TOU programmed",
    47: "One or more parameters changed",
    48: "Global key(s) changed",
    51: "Firmware verification failed",
}
_FRAUD: Final = {
    40: "Terminal cover removed",
    41: "Terminal cover closed",
    42: "Strong DC field detected",
    43: "No strong DC field anymore",
    44: "Meter cover removed",
    45: "Meter cover closed",
    46: "Association authentication failure",
    49: "Decryption or authentication failure",
    50: "Replay attack",
}
_DISCONNECTOR: Final = {
    59: "Disconnector ready for manual reconnection",
    60: "Manual disconnection",
    61: "Manual connection",
    62: "Remote disconnection",
    63: "Remote connection",
    64: "Local disconnection",
    65: "Limiter threshold exceeded",
    66: "Limiter threshold ok",
    67: "Limiter threshold changed",
    68: "Disconnect/reconnect failure",
    69: "Local reconnection",
}

_ALL: Final = {**_STANDARD, **_FRAUD, **_DISCONNECTOR}
_BY_LOG: Final[Mapping[str, Mapping[int, str]]] = {
    STANDARD_EVENT_LOG: _STANDARD,
    FRAUD_DETECTION_LOG: _FRAUD,
    DISCONNECTOR_CONTROL_LOG: _DISCONNECTOR,
    POWER_FAILURE_LOG: {POWER_DOWN: _STANDARD[POWER_DOWN], POWER_UP: _STANDARD[POWER_UP]},
}


def event_name(code: int, log: str | None = None) -> str:
    """The IDIS name of an event code (the log's own table first, then any IDIS table)."""
    table = _BY_LOG.get(log or "", {})
    name = table.get(code) or _ALL.get(code)
    return name if name is not None else f"unknown event {code}"
